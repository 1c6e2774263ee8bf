"""Peers for the `wsig serve` end-to-end tests, written from RFC 6455 and SPEC.md, not from the server:

- RawWS: a WebSocket client on a raw (optionally TLS) socket that builds every frame itself, so a
  test can send coalesced, unmasked, fragmented or otherwise bad frames and read exact bytes back;
- Peer: a client on Debian's python3-websockets 10.4 (a peer nobody here wrote), driven from a
  background asyncio loop through blocking calls with deadlines;
- HTTP helpers (http.client) for the push and admin API, and raw_http for malformed requests.

Every wait has a deadline; waits are on events (a frame, a response, a close, a state seen through
the admin API), never a sleep.
"""
import asyncio
import base64
import hashlib
import http.client as httpclient
import json
import os
import re
import socket
import ssl as ssl_module
import struct
import subprocess
import threading
import time
import urllib.parse

import websockets
import websockets.exceptions

DEADLINE = 10.0  # seconds for any single wait
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
GUID_RE = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
SIG_RE = r"[A-Za-z0-9+/]{43}="

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


# ---------------------------------------------------------------------------------------------
# Signing (the expected values are computed with the openssl command line, independently of wsig)

def openssl_hmac_b64(secret, value):
    """base64(HMAC-SHA256(key=secret, msg=value)) by `openssl dgst -sha256 -hmac SECRET -binary | base64`."""
    dgst = subprocess.run(["openssl", "dgst", "-sha256", "-hmac", secret, "-binary"], input=value.encode(),
                          capture_output=True, check=True, timeout=DEADLINE).stdout
    b64 = subprocess.run(["base64"], input=dgst, capture_output=True, check=True, timeout=DEADLINE).stdout
    return b64.decode().strip()


def openssl_sign(value, secret, user_agent=None, ip=None):
    """Pode's Invoke-PodeValueSign; strict when user_agent or ip is given (secret;UA;IP)."""
    key = secret if user_agent is None and ip is None else f"{secret};{user_agent or ''};{ip or ''}"
    return f"s:{value}.{openssl_hmac_b64(key, value)}"


def split_signed(signed):
    """('value', 'sig') of 's:value.sig' (split at the last '.')."""
    assert signed.startswith("s:"), signed
    value, _, sig = signed[2:].rpartition(".")
    return value, sig


def tamper(signed):
    """The same signed ID with one character of the signature changed."""
    value, sig = split_signed(signed)
    c = "A" if sig[0] != "A" else "B"
    return f"s:{value}.{c}{sig[1:]}"


# ---------------------------------------------------------------------------------------------
# Frames

def accept_for(key):
    return base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()


def new_key():
    return base64.b64encode(os.urandom(16)).decode()


def frame(opcode, payload=b"", fin=True, mask=True, rsv=0, mask_key=None, length_override=None):
    """One client frame, masked unless mask=False; rsv is the 3-bit RSV field."""
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
    n = len(payload) if length_override is None else length_override
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def text_frame(text, **kw):
    return frame(OP_TEXT, text.encode() if isinstance(text, str) else text, **kw)


def close_frame(code=1000, reason="", **kw):
    return frame(OP_CLOSE, struct.pack("!H", code) + reason.encode(), **kw)


def envelope(message, **fields):
    """A Pode client envelope as compact JSON text."""
    obj = {"message": message}
    obj.update(fields)
    return json.dumps(obj, separators=(",", ":"))


class WSClosed(Exception):
    """The server closed the WebSocket: code (None when the close frame had no body) and reason."""

    def __init__(self, code, reason):
        super().__init__(f"closed {code} {reason!r}")
        self.code = code
        self.reason = reason


class Frame:
    def __init__(self, fin, rsv, opcode, masked, payload):
        self.fin, self.rsv, self.opcode, self.masked, self.payload = fin, rsv, opcode, masked, payload

    def __repr__(self):
        return f"Frame(fin={self.fin}, op={self.opcode:#x}, len={len(self.payload)}, {self.payload[:60]!r})"

    def close_code(self):
        if len(self.payload) >= 2:
            return struct.unpack("!H", self.payload[:2])[0], self.payload[2:].decode(errors="replace")
        return None, ""


class Handshake:
    """A parsed HTTP response head: status, reason, headers in wire order with their exact casing."""

    def __init__(self, raw):
        self.raw = raw
        text = raw.decode("latin-1")
        lines = text.split("\r\n")
        self.status_line = lines[0]
        parts = self.status_line.split(" ", 2)
        self.version = parts[0]
        self.status = int(parts[1])
        self.reason = parts[2] if len(parts) > 2 else ""
        self.headers = []
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            self.headers.append((name, value.strip()))

    def get(self, name, default=None):
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return default

    def names(self):
        return [n for n, _ in self.headers]


def _read_head(sock, buf, deadline):
    """Reads until the end of an HTTP head; returns (head bytes, leftover)."""
    while b"\r\n\r\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete HTTP response head (so far {buf!r})")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            raise EOFError(f"connection closed before a complete HTTP response head (so far {buf!r})")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def client_tls_context(cafile=None):
    ctx = ssl_module.create_default_context(cafile=cafile)
    if cafile is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl_module.CERT_NONE
    return ctx


class TlsHandshake:
    """What `openssl s_client` reported: its exit code, the negotiated protocol and cipher (None when
    no session was established) and its whole output."""

    def __init__(self, returncode, out):
        self.returncode, self.out = returncode, out
        self.protocol = self.cipher = None
        new = re.search(r"^New, (\S+), Cipher is (\S+)", out, re.M)  # "(NONE)": no session was established
        if new and new.group(2) != "(NONE)":
            self.cipher = new.group(2)
            # The SSL-Session block names the protocol; s_client may quit before printing it (TLS 1.3
            # tickets), and then the "New," line does (the cipher's version: the protocol's from 1.2 on).
            proto = re.search(r"^\s*Protocol\s*:\s*(\S+)", out, re.M)
            self.protocol = proto.group(1) if proto else new.group(1)

    def __repr__(self):
        return f"TlsHandshake(exit {self.returncode}, {self.protocol}, {self.cipher}):\n{self.out[-1500:]}"


def s_client(port, *args, servername="localhost"):
    """One handshake by `openssl s_client -connect 127.0.0.1:PORT ARGS...` (protocol and cipher flags),
    with nothing to send: it ends when the handshake does."""
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", servername, *args],
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=DEADLINE)
    return TlsHandshake(r.returncode, r.stdout + r.stderr)


class RawWS:
    """A WebSocket client on a raw socket. `RawWS.open(...)` performs the upgrade and requires 101;
    `RawWS.attempt(...)` returns the Handshake whatever its status (and closes the socket)."""

    def __init__(self, port, path="/", headers=None, key=None, host=None, tls=None, rcvbuf=None,
                 omit=(), method="GET", timeout=DEADLINE, addr="127.0.0.1"):
        self.port = port
        self.key = key or new_key()
        raw = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(timeout)
        raw.connect((addr, port))
        self.sock = tls.wrap_socket(raw, server_hostname="localhost") if tls else raw
        default_host = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
        req = [f"{method} {path} HTTP/1.1", f"Host: {host or default_host}"]
        base = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": self.key,
                "Sec-WebSocket-Version": "13"}
        for k, v in base.items():
            if k not in omit:
                req.append(f"{k}: {v}")
        for k, v in (headers or {}).items():
            req.append(f"{k}: {v}")
        self.sock.sendall(("\r\n".join(req) + "\r\n\r\n").encode())
        head, self.buf = _read_head(self.sock, b"", time.monotonic() + timeout)
        self.handshake = Handshake(head)
        self.closed = False

    @classmethod
    def open(cls, port, path="/", **kw):
        ws = cls(port, path, **kw)
        hs = ws.handshake
        if hs.status != 101:
            ws.sock.close()
            raise AssertionError(f"upgrade of {path} answered {hs.status_line}\n{hs.raw!r}")
        assert hs.get("Sec-WebSocket-Accept") == accept_for(ws.key), hs.raw
        return ws

    @classmethod
    def attempt(cls, port, path="/", **kw):
        ws = cls(port, path, **kw)
        ws.sock.close()
        return ws.handshake

    @property
    def client_id(self):
        return self.handshake.get("X-Pode-Signal-Client-Id")

    @property
    def name(self):
        return self.handshake.get("X-Pode-Signal-Name")

    @property
    def group(self):
        return self.handshake.get("X-Pode-Signal-Group")

    def local_port(self):
        return self.sock.getsockname()[1]

    # -- sending
    def send_raw(self, data):
        self.sock.sendall(data)

    def send_frame(self, opcode, payload=b"", **kw):
        self.sock.sendall(frame(opcode, payload, **kw))

    def send_text(self, text):
        self.send_frame(OP_TEXT, text)

    def send_binary(self, data):
        self.send_frame(OP_BINARY, data)

    def send_env(self, message, **fields):
        self.send_text(envelope(message, **fields))

    # -- receiving
    def _fill(self, n, deadline):
        while len(self.buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"waited for {n} bytes, have {len(self.buf)}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                raise EOFError(f"server closed TCP without a close frame (buffered {self.buf[:80]!r})")
            self.buf += chunk

    def recv_frame(self, timeout=DEADLINE):
        deadline = time.monotonic() + timeout
        self._fill(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        off = 2
        if n == 126:
            self._fill(4, deadline)
            n = struct.unpack("!H", self.buf[2:4])[0]
            off = 4
        elif n == 127:
            self._fill(10, deadline)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            off = 10
        masked = bool(b1 & 0x80)
        if masked:
            off += 4
        self._fill(off + n, deadline)
        payload = self.buf[off:off + n]
        if masked:
            key = self.buf[off - 4:off]
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        self.buf = self.buf[off + n:]
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, masked, payload)

    def recv_message(self, timeout=DEADLINE):
        """(opcode, payload bytes) of the next data message; answers pings; raises WSClosed on close."""
        deadline = time.monotonic() + timeout
        parts, first_op = [], None
        while True:
            f = self.recv_frame(max(0.0, deadline - time.monotonic()))
            assert not f.masked, f"server frames must not be masked: {f}"
            if f.opcode == OP_PING:
                self.send_frame(OP_PONG, f.payload)
                continue
            if f.opcode == OP_PONG:
                continue
            if f.opcode == OP_CLOSE:
                code, reason = f.close_code()
                if not self.closed:
                    self.closed = True
                    try:
                        self.sock.sendall(close_frame(code or 1000))
                    except OSError:
                        pass
                raise WSClosed(code, reason)
            if first_op is None:
                assert f.opcode in (OP_TEXT, OP_BINARY), f"unexpected frame {f}"
                first_op = f.opcode
            else:
                assert f.opcode == OP_CONT, f"expected a continuation frame, got {f}"
            parts.append(f.payload)
            if f.fin:
                return first_op, b"".join(parts)

    def recv(self, timeout=DEADLINE):
        """The next text message as str."""
        op, data = self.recv_message(timeout)
        assert op == OP_TEXT, f"expected a text frame, got opcode {op}: {data[:80]!r}"
        return data.decode()

    def expect_close(self, timeout=DEADLINE):
        """Skips data until the close frame; returns (code, reason). Raises if TCP ends without one."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.recv_message(max(0.0, deadline - time.monotonic()))
            except WSClosed as e:
                return e.code, e.reason

    def expect_eof(self, timeout=DEADLINE):
        """After a close: waits for the server to end the TCP connection."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the server did not close TCP")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except ConnectionResetError:
                return
            if not chunk:
                return

    def close(self, code=1000, timeout=DEADLINE):
        """Clean close: sends a close frame and waits for the server's."""
        try:
            if not self.closed:
                self.closed = True
                self.sock.sendall(close_frame(code))
                deadline = time.monotonic() + timeout
                while True:
                    f = self.recv_frame(max(0.0, deadline - time.monotonic()))
                    if f.opcode == OP_CLOSE:
                        return f.close_code()
        except (OSError, EOFError, TimeoutError):
            return None
        finally:
            self.sock.close()

    def drop(self, reset=False):
        """Vanishes without a close frame: FIN, or RST with reset=True."""
        self.closed = True
        if reset:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def sync_self(ws, timeout=DEADLINE):
    """Sends a direct message to itself and returns what arrived before it (a barrier: messages
    from one sender keep their order, so anything the earlier frames caused is already here)."""
    token = f"sync-{os.urandom(6).hex()}"
    ws.send_env(token, direct=True)
    before = []
    while True:
        m = ws.recv(timeout)
        if m == token:
            return before
        before.append(m)


def sync_to(sender, receiver, timeout=DEADLINE):
    """Sends a marker from `sender` to `receiver` only (its Name and ClientId) and returns what
    `receiver` got before it."""
    token = f"sync-{os.urandom(6).hex()}"
    sender.send_env(token, path=receiver.name, clientId=receiver.client_id)
    before = []
    while True:
        m = receiver.recv(timeout)
        if m == token:
            return before
        before.append(m)


# ---------------------------------------------------------------------------------------------
# A peer on python3-websockets 10.4, with blocking calls

class _Loop:
    loop = None

    @classmethod
    def get(cls):
        if cls.loop is None:
            cls.loop = asyncio.new_event_loop()
            threading.Thread(target=cls.loop.run_forever, daemon=True, name="ws-peers").start()
        return cls.loop


def run_async(coro, timeout=DEADLINE):
    return asyncio.run_coroutine_threadsafe(coro, _Loop.get()).result(timeout)


class Peer:
    """A python3-websockets client. recv() returns str (text) or bytes (binary); raises WSClosed."""

    def __init__(self, url, headers=None, ssl=None, origin=None, user_agent=None, timeout=DEADLINE):
        kw = dict(extra_headers=headers or {}, open_timeout=timeout, ping_interval=None, compression=None,
                  max_size=2 ** 26, close_timeout=timeout)
        if ssl is not None:
            kw["ssl"] = ssl
        if origin is not None:
            kw["origin"] = origin
        if user_agent is not None:
            kw["user_agent_header"] = user_agent

        async def connect():
            return await websockets.connect(url, **kw)

        self.ws = run_async(connect(), timeout + 1)
        self.headers = self.ws.response_headers

    @property
    def client_id(self):
        return self.headers.get("X-Pode-Signal-Client-Id")

    @property
    def name(self):
        return self.headers.get("X-Pode-Signal-Name")

    @property
    def group(self):
        return self.headers.get("X-Pode-Signal-Group")

    def send(self, data):
        run_async(self.ws.send(data))

    def send_env(self, message, **fields):
        self.send(envelope(message, **fields))

    def recv(self, timeout=DEADLINE):
        try:
            return run_async(asyncio.wait_for(self.ws.recv(), timeout), timeout + 1)
        except asyncio.TimeoutError:
            raise TimeoutError(f"no message within {timeout}s")
        except websockets.exceptions.ConnectionClosed as e:
            raise WSClosed(e.rcvd.code if e.rcvd else None, e.rcvd.reason if e.rcvd else "")

    def expect_close(self, timeout=DEADLINE):
        """Skips messages until the server closes; returns (code, reason) of its close frame."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.recv(max(0.01, deadline - time.monotonic()))
            except WSClosed as e:
                return e.code, e.reason

    def close(self, code=1000):
        try:
            run_async(self.ws.close(code))
        except Exception:
            pass


# ---------------------------------------------------------------------------------------------
# HTTP

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    def json(self):
        return json.loads(self.body)

    @property
    def text(self):
        return self.body.decode()

    def __repr__(self):
        return f"Response({self.status}, {self.body[:200]!r})"


def http(port, method, path, body=None, headers=None, tls=None, timeout=DEADLINE):
    if tls is not None:
        conn = httpclient.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=tls)
    else:
        conn = httpclient.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if isinstance(body, str):
            body = body.encode()
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return Response(r.status, r.getheaders(), r.read())
    finally:
        conn.close()


def push(port, body, client_id=None, name=None, group=None, headers=None, tls=None):
    """POST /signal with the X-Pode-Signal-* headers (the request-header mechanism)."""
    h = dict(headers or {})
    if client_id is not None:
        h["X-Pode-Signal-Client-Id"] = client_id
    if name is not None:
        h["X-Pode-Signal-Name"] = name
    if group is not None:
        h["X-Pode-Signal-Group"] = group
    h.setdefault("Content-Type", "text/plain")
    return http(port, "POST", "/signal", body=body, headers=h, tls=tls)


def connections(port, headers=None, **filters):
    q = urllib.parse.urlencode({k: v for k, v in filters.items() if v is not None})
    r = http(port, "GET", "/signal/connections" + (f"?{q}" if q else ""), headers=headers)
    assert r.status == 200, r
    return r.json()["connections"]


def wait_for(predicate, what, timeout=DEADLINE, interval=0.02):
    """Polls predicate() until it returns a truthy value (returned) or the deadline passes."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def wait_connections(port, n, timeout=DEADLINE, **filters):
    """Waits until /signal/connections (with filters) lists exactly n connections; returns them."""
    holder = {}

    def check():
        holder["c"] = connections(port, **filters)
        return len(holder["c"]) == n

    wait_for(check, f"{n} connections {filters}", timeout)
    return holder["c"]


def raw_http(port, data, timeout=DEADLINE, tls=None):
    """Sends raw bytes; returns the Handshake (status + headers) of the response and its body
    (by Content-Length, else up to EOF)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if tls:
        s = tls.wrap_socket(s, server_hostname="localhost")
    try:
        try:
            s.sendall(data)
        except OSError:
            pass  # the server may answer and close before reading everything; read its answer
        deadline = time.monotonic() + timeout
        head, rest = _read_head(s, b"", deadline)
        hs = Handshake(head)
        n = hs.get("Content-Length")
        if n is not None:
            while len(rest) < int(n) and time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = s.recv(65536)
                if not chunk:
                    break
                rest += chunk
        return hs, rest
    finally:
        s.close()


def sanitized_build(binary):
    """True when the wsig binary is linked against a sanitizer runtime (RSS and timing differ there)."""
    try:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, timeout=DEADLINE).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return any(lib in out for lib in ("libasan", "libtsan", "libubsan", "liblsan"))


def read_response(sock, timeout=DEADLINE):
    """One whole HTTP response (head + Content-Length body) from a socket: (Handshake, body)."""
    deadline = time.monotonic() + timeout
    head, rest = _read_head(sock, b"", deadline)
    hs = Handshake(head)
    n = int(hs.get("Content-Length", "0"))
    while len(rest) < n:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    assert len(rest) == n, f"unexpected bytes after the response: {rest!r}"
    return hs, rest


def healthy(port, tls=None):
    r = http(port, "GET", "/healthz", tls=tls)
    return r.status == 200 and r.body.strip() == b"ok"


def rss_kib(pid):
    """The resident set of process `pid`, in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def metric_value(text, name, labels=None):
    """The value of the Prometheus sample `name` with exactly these labels (any labels when None), or None."""
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([^}]*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if labels is None or got == labels:
            return float(m.group(4))
    return None
