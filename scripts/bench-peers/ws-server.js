// A Pode-style signal server on node `ws`: what a user would write instead of `wsig serve`.
// Same surface as `wsig serve --echo /echo --route /sub=Sub --route /pub=Pub` for the benchmark:
//   - GET /echo (upgrade): echo every message back (text stays text, binary stays binary)
//   - GET /sub, /pub (upgrade): connections under Name Sub / Pub
//   - a client message is Pode's envelope {"message":…,"path"?:Name,"direct"?:true}: the message goes
//     to every connection of Name (all names when no path), raw when a string, else as JSON
//   - POST /signal with X-Pode-Signal-Name: the body is broadcast to that Name; 200 {"delivered":N}
// Usage: node ws-server.js PORT   (prints http://127.0.0.1:PORT on stdout once listening; 0 = any port)
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');

const routes = new Map([['/sub', 'Sub'], ['/pub', 'Pub']]);
const echoPaths = new Set(['/echo']);
const byName = new Map(); // Name -> Set of sockets

function broadcast(name, data) {
  const targets = name === undefined ? [...byName.values()].flatMap((s) => [...s]) : [...(byName.get(name) || [])];
  let n = 0;
  for (const ws of targets) {
    if (ws.readyState === ws.OPEN) {
      ws.send(data);
      n++;
    }
  }
  return n;
}

function field(obj, name) {
  // Pode matches envelope field names case-insensitively.
  for (const k of Object.keys(obj)) if (k.toLowerCase() === name) return obj[k];
  return undefined;
}

const wss = new WebSocketServer({ noServer: true, maxPayload: 1 << 20 });
const server = http.createServer((req, res) => {
  const path = req.url.split('?')[0];
  if (req.method === 'POST' && path === '/signal') {
    const name = req.headers['x-pode-signal-name'];
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      if (!name) {
        res.writeHead(400, { 'Content-Type': 'application/json' });
        res.end('{"error":"X-Pode-Signal-Name missing"}');
        return;
      }
      const n = broadcast(name, Buffer.concat(chunks).toString());
      const body = JSON.stringify({ delivered: n });
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
      res.end(body);
    });
    return;
  }
  if (path === '/healthz') {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': 2 });
    res.end('ok');
    return;
  }
  res.writeHead(404, { 'Content-Length': 0 });
  res.end();
});

server.on('upgrade', (req, socket, head) => {
  const path = req.url.split('?')[0];
  if (echoPaths.has(path)) {
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    });
    return;
  }
  const name = routes.get(path);
  if (name === undefined) {
    socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    if (!byName.has(name)) byName.set(name, new Set());
    byName.get(name).add(ws);
    ws.on('close', () => byName.get(name).delete(ws));
    ws.on('error', () => {});
    ws.on('message', (data) => {
      let env;
      try {
        env = JSON.parse(data.toString());
      } catch {
        return; // invalid JSON: dropped, connection kept
      }
      if (env === null || typeof env !== 'object') return;
      const message = field(env, 'message');
      if (message === undefined || message === null || message === '') return;
      const payload = typeof message === 'string' ? message : JSON.stringify(message);
      if (field(env, 'direct') === true) {
        ws.send(payload);
        return;
      }
      const target = field(env, 'path');
      broadcast(typeof target === 'string' && target !== '' ? target : undefined, payload);
    });
  });
});

const port = Number(process.argv[2] || 0);
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`http://127.0.0.1:${server.address().port}\n`);
});
for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    for (const ws of wss.clients) ws.terminate();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
