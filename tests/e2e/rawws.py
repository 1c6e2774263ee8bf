"""A raw RFC 6455 peer for the conformance tests (test_rfc6455_server.py, test_rfc6455_client.py).

Written from RFC 6455 alone, not from wsig: every frame is built byte by byte so a test can send
what a well-behaved library refuses to (reserved bits, reserved opcodes, oversized or fragmented
control frames, unmasked client frames, masked server frames, bad UTF-8, bad close codes), and
every frame read back is returned as it was on the wire (fin, rsv, opcode, payload, masked, key).

- RawClient: connects to a server, sends the upgrade, checks the 101 and Sec-WebSocket-Accept;
  its frames are masked with a fresh random key unless told otherwise.
- RawServer: listens on 127.0.0.1 port 0; accept() answers one upgrade with a correct 101; its
  frames are unmasked unless told otherwise.

Every read has a deadline; a TCP close is reported as ConnectionEnded, never as a hang.
"""
import base64
import collections
import hashlib
import os
import select
import socket
import struct
import time

DEADLINE = 10.0  # seconds for any single wait
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 0x4, 0x2, 0x1  # as the 3-bit value returned in Frame.rsv

Frame = collections.namedtuple("Frame", "fin rsv opcode payload masked mask_key")


class ConnectionEnded(Exception):
    """The peer closed (or reset) the TCP connection; .data holds bytes that were still unparsed."""

    def __init__(self, msg, data=b""):
        super().__init__(msg)
        self.data = data


# ------------------------------------------------------------------------------------ frames

def apply_mask(data: bytes, key: bytes) -> bytes:
    """data XOR the repeated 4-byte key (RFC 6455 5.3); linear time, fast for many MiB."""
    n = len(data)
    if n == 0:
        return b""
    reps = key * (n // 4 + 1)
    return (int.from_bytes(data, "little") ^ int.from_bytes(reps[:n], "little")).to_bytes(n, "little")


def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, mask_key=None, length_override=None):
    """One frame on the wire. rsv is the 3-bit RSV1..RSV3 value; mask=True masks with a random key
    (or mask_key); length_override writes a different length than the payload has."""
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | ((rsv & 0x7) << 4) | (opcode & 0xF)
    n = len(payload) if length_override is None else length_override
    m = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, m | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if not mask:
        return head + payload
    key = mask_key if mask_key is not None else os.urandom(4)
    return head + key + apply_mask(payload, key)


def close_payload(code=None, reason=b""):
    """The body of a close frame: nothing, or a 2-byte code and the reason bytes."""
    if code is None:
        return b""
    if isinstance(reason, str):
        reason = reason.encode()
    return struct.pack("!H", code) + reason


def parse_close(payload):
    """(code, reason bytes) of a close frame body; (None, b'') when it is empty."""
    if len(payload) == 0:
        return None, b""
    assert len(payload) >= 2, f"close frame body of {len(payload)} byte(s): {payload!r}"
    return struct.unpack("!H", payload[:2])[0], payload[2:]


def fragments(opcode, payload, size):
    """A message cut into frames of `size` bytes (at least one frame), without masking decided:
    a list of (opcode, chunk, fin)."""
    chunks = [payload[i:i + size] for i in range(0, len(payload), size)] or [b""]
    out = []
    for i, c in enumerate(chunks):
        out.append((opcode if i == 0 else OP_CONT, c, i == len(chunks) - 1))
    return out


# ------------------------------------------------------------------------------- connections

class Conn:
    """One WebSocket connection on a raw socket; `masking` says whether frames we send are masked."""

    def __init__(self, sock, buf, masking):
        self.sock = sock
        self.buf = bytearray(buf)
        self.masking = masking
        self.eof = False

    # ----- sending
    def send(self, data: bytes):
        self.sock.sendall(data)

    def send_frame(self, opcode, payload=b"", fin=True, rsv=0, mask=None, **kw):
        self.send(frame(opcode, payload, fin=fin, rsv=rsv, mask=self.masking if mask is None else mask, **kw))

    def frame(self, opcode, payload=b"", fin=True, rsv=0, mask=None, **kw):
        """The bytes of a frame in this connection's masking, to gather several into one send."""
        return frame(opcode, payload, fin=fin, rsv=rsv, mask=self.masking if mask is None else mask, **kw)

    def send_close(self, code=None, reason=b""):
        self.send_frame(OP_CLOSE, close_payload(code, reason))

    def send_slowly(self, data: bytes, step=1):
        """Sends data `step` bytes per TCP segment (TCP_NODELAY), as Autobahn's chopped cases do."""
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(data), step):
            self.sock.sendall(data[i:i + step])

    # ----- receiving
    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"nothing more from the peer in time (buffered {len(self.buf)} bytes)")
        ready, _, _ = select.select([self.sock], [], [], remaining)
        if not ready:
            raise TimeoutError(f"nothing more from the peer in time (buffered {len(self.buf)} bytes)")
        try:
            chunk = self.sock.recv(1 << 20)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            raise ConnectionEnded("TCP connection closed by the peer", bytes(self.buf))
        self.buf += chunk

    def _need(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)

    def recv_frame(self, timeout=DEADLINE):
        """The next frame as Frame(fin, rsv, opcode, payload unmasked, masked, mask_key or b'')."""
        deadline = time.monotonic() + timeout
        self._need(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        pos = 2
        if n == 126:
            self._need(4, deadline)
            n = struct.unpack("!H", self.buf[2:4])[0]
            pos = 4
        elif n == 127:
            self._need(10, deadline)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            pos = 10
        masked = bool(b1 & 0x80)
        key = b""
        if masked:
            self._need(pos + 4, deadline)
            key = bytes(self.buf[pos:pos + 4])
            pos += 4
        self._need(pos + n, deadline)
        payload = bytes(self.buf[pos:pos + n])
        del self.buf[:pos + n]
        if masked:
            payload = apply_mask(payload, key)
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 0x7, b0 & 0xF, payload, masked, key)

    def recv_message(self, timeout=DEADLINE):
        """(opcode, payload) of the next data message, its fragments joined; control frames on
        the way are returned too as (opcode, payload) before it, in a list: [(op, payload), ...]."""
        deadline = time.monotonic() + timeout
        out, parts, first = [], [], None
        while True:
            f = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if f.opcode >= 0x8:
                out.append((f.opcode, f.payload))
                if f.opcode == OP_CLOSE:
                    return out
                continue
            if first is None:
                first = f.opcode
            parts.append(f.payload)
            if f.fin:
                out.append((first, b"".join(parts)))
                return out

    def expect_close(self, timeout=DEADLINE):
        """Reads until a close frame: (code, reason, frames before it). Raises ConnectionEnded if
        the TCP connection ends without one."""
        deadline = time.monotonic() + timeout
        before = []
        while True:
            f = self.recv_frame(max(0.01, deadline - time.monotonic()))
            if f.opcode == OP_CLOSE:
                code, reason = parse_close(f.payload)
                return code, reason, before
            before.append(f)

    def wait_eof(self, timeout=DEADLINE):
        """Waits for the peer to close TCP; returns the frames that arrived before (usually none)."""
        deadline = time.monotonic() + timeout
        got = []
        while True:
            try:
                got.append(self.recv_frame(max(0.01, deadline - time.monotonic())))
            except ConnectionEnded:
                return got

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


def _read_head(sock, deadline):
    buf = b""
    while b"\r\n\r\n" not in buf:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete HTTP head in time: {buf[:300]!r}")
        ready, _, _ = select.select([sock], [], [], remaining)
        if not ready:
            continue
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionEnded(f"connection closed during the HTTP head: {buf[:300]!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return lines[0], headers, rest


class RawClient(Conn):
    """A client connection to ws://127.0.0.1:port/path after a checked upgrade; masks by default."""

    def __init__(self, port, path="/echo", timeout=DEADLINE):
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        key = base64.b64encode(os.urandom(16))
        sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\n"
                     b"Host: 127.0.0.1:" + str(port).encode() + b"\r\n"
                     b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        status, headers, rest = _read_head(sock, time.monotonic() + timeout)
        assert status.startswith("HTTP/1.1 101"), status
        assert headers.get("sec-websocket-accept", "").encode() == accept_key(key), headers
        assert "sec-websocket-extensions" not in headers, headers  # no extension: RSV bits stay reserved
        self.response_headers = headers
        super().__init__(sock, rest, masking=True)


class RawServer:
    """A listening socket on 127.0.0.1:0; accept() upgrades one connection (unmasked frames)."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.conns = []
        self.request = None

    def url(self, path="/conformance"):
        return f"ws://127.0.0.1:{self.port}{path}"

    def accept(self, timeout=DEADLINE):
        ready, _, _ = select.select([self.lsock], [], [], timeout)
        if not ready:
            raise TimeoutError(f"no client connected within {timeout}s")
        sock, _ = self.lsock.accept()
        status, headers, rest = _read_head(sock, time.monotonic() + timeout)
        self.request = (status, headers)
        assert status.startswith("GET ") and status.endswith(" HTTP/1.1"), status
        assert headers.get("upgrade", "").lower() == "websocket", headers
        assert headers.get("sec-websocket-version") == "13", headers
        key = headers["sec-websocket-key"].encode()
        assert len(base64.b64decode(key)) == 16, key
        sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n")
        c = Conn(sock, rest, masking=False)
        self.conns.append(c)
        return c

    def close(self):
        for c in self.conns:
            c.close()
        self.lsock.close()
