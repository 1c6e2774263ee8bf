"""Test peers for `wsig listen` and `wsig send` that nobody on this project wrote: a WebSocket
server from Python's `websockets` (10.4, Debian) and an HTTP server from `http.server`, both on
127.0.0.1 port 0 in a background thread. Each records what it received, with events to wait on.
"""
import asyncio
import http.server
import json
import queue
import os
import socket
import ssl
import subprocess
import threading

import websockets
import websockets.server
from websockets.exceptions import ConnectionClosed

DEADLINE = 15.0


class WsPeer:
    """A websockets server running `script(ws, peer)` for every connection.

    Records per connection: request path and headers, received messages, the close code and
    reason the client sent. `peer.wait_closed()` waits for the end of a connection.
    """

    def __init__(self, script, response_headers=None, process_request=None, max_size=2 ** 26, ssl_context=None):
        self.script = script
        self.ssl_context = ssl_context
        self.response_headers = response_headers or {}
        self.process_request = process_request
        self.max_size = max_size
        self.received = []         # every message of every connection, in order
        self.received_q = queue.Queue()
        self.requests = []         # (path, headers) per connection
        self.closes = queue.Queue()  # (code, reason) per ended connection
        self.connected = queue.Queue()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(DEADLINE):
            raise RuntimeError("websockets peer did not start")

    @property
    def url(self):
        return f"{'wss' if self.ssl_context else 'ws'}://127.0.0.1:{self.port}"

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self):
        self._stop = asyncio.Event()
        kwargs = dict(max_size=self.max_size, extra_headers=self.response_headers)
        if self.process_request:
            kwargs["process_request"] = self.process_request
        if self.ssl_context:
            kwargs["ssl"] = self.ssl_context
        async with websockets.server.serve(self._handler, "127.0.0.1", 0, **kwargs) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop.wait()

    async def _handler(self, ws, path=None):
        self.requests.append((ws.path, dict(ws.request_headers.raw_items())))
        self.connected.put(ws.path)
        try:
            await self.script(ws, self)
        except ConnectionClosed:
            pass
        finally:
            await ws.wait_closed()
            self.closes.put((ws.close_code, ws.close_reason))

    async def recv(self, ws):
        """Receives one message and records it."""
        msg = await ws.recv()
        self.received.append(msg)
        self.received_q.put(msg)
        return msg

    async def drain(self, ws):
        """Records every message until the client closes."""
        async for msg in ws:
            self.received.append(msg)
            self.received_q.put(msg)

    def wait_closed(self, timeout=DEADLINE):
        return self.closes.get(timeout=timeout)

    def next_received(self, timeout=DEADLINE):
        return self.received_q.get(timeout=timeout)

    def stop(self):
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(DEADLINE)


class HttpPeer:
    """An http.server answering every POST with (status, body) from `answer(path, headers, body)`;
    records (path, headers, body) of each request."""

    def __init__(self, answer, ssl_context=None):
        self.requests = []
        peer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                peer.requests.append((self.path, {k: v for k, v in self.headers.items()}, body))
                status, out = answer(self.path, self.headers, body)
                out = out.encode() if isinstance(out, str) else out
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if ssl_context:
            self.server.socket = ssl_context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class RawHttpPeer:
    """A TCP server that reads one request head and answers with fixed bytes, then closes:
    for upgrades answered with something other than a good 101."""

    def __init__(self, response: bytes):
        self.response = response
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}"
        self.heads = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(DEADLINE)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    self.heads.append(data)
                    resp = self.response(data) if callable(self.response) else self.response
                    conn.sendall(resp)
                except OSError:
                    pass

    def stop(self):
        self.sock.close()


def make_cert(directory):
    """A self-signed certificate for 127.0.0.1 and localhost (openssl command line); (cert, key) paths."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=DEADLINE)
    return cert, key


def server_tls_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def free_port():
    """A port with nothing listening on it (bound then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def accept_key(key: str) -> str:
    import base64
    import hashlib
    return base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()


def jsonl(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_frame(conn):
    """One client frame from a socket: (opcode, unmasked payload)."""
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = conn.recv(n - len(buf))
            if not chunk:
                raise EOFError("peer closed")
            buf += chunk
        return buf
    b0, b1 = exact(2)
    length = b1 & 0x7F
    if length == 126:
        length = int.from_bytes(exact(2), "big")
    elif length == 127:
        length = int.from_bytes(exact(8), "big")
    mask = exact(4) if b1 & 0x80 else b"\0\0\0\0"
    data = exact(length)
    return b0 & 0x0F, bytes(c ^ mask[i % 4] for i, c in enumerate(data))


class PodeLikePeer:
    """Pode's side of the wire, as pode-wire.md Appendix A describes it: a 101 with X-Pode-Signal-*
    headers; records the client's frames; answers the client's close with an EMPTY close frame (no
    status code) and drops TCP at once."""

    def __init__(self, client_id="8b1d7c6e-0000-4000-8000-000000000001", name="Msg"):
        self.client_id, self.name = client_id, name
        self.frames = queue.Queue()  # (opcode, payload) of every client frame, the close included
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.url = f"ws://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(DEADLINE)
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            key = [l.split(b":", 1)[1].strip().decode() for l in head.split(b"\r\n")
                   if l.lower().startswith(b"sec-websocket-key:")][0]
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n"
                         b"X-Pode-Signal-Client-Id: " + self.client_id.encode() + b"\r\n"
                         b"X-Pode-Signal-Name: " + self.name.encode() + b"\r\n\r\n")
            try:
                while True:
                    opcode, payload = read_frame(conn)
                    self.frames.put((opcode, payload))
                    if opcode == 0x8:
                        conn.sendall(b"\x88\x00")
                        break
            except (OSError, EOFError):
                pass

    def stop(self):
        self.sock.close()
