"""wsig serve, core behaviour: the 101, the registry before the 101, default routing, coalesced
frames, echo, replacement, graceful stop, size limits, the push API, in-order delivery.

Peers are raw sockets (exact bytes) and Python's websockets; every wait has a deadline.
"""
import asyncio
import base64
import hashlib
import json
import os
import re
import signal
import socket
import struct
import time

import pytest
import websockets

DEADLINE = 15.0
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
ROUTES = ("--route", "/chat=Chat", "--route", "/red=Chat,group=Red", "--route", "/other=Other")


class Closed(Exception):
    def __init__(self, code, reason):
        super().__init__(f"closed {code} {reason!r}")
        self.code, self.reason = code, reason


class Raw:
    """A minimal RFC 6455 client on a raw socket, so the tests see the exact bytes."""

    def __init__(self, port, path, headers=None, key=None):
        self.key = key or base64.b64encode(os.urandom(16)).decode()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {self.key}", "Sec-WebSocket-Version: 13"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise EOFError(f"no response: {self.buf!r}")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode().split("\r\n")
        self.status = int(status_line.split(" ")[1])
        self.headers = [tuple(h.split(": ", 1)) for h in header_lines]
        self.client_id = self.header("X-Pode-Signal-Client-Id")

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def _exact(self, n, deadline):
        while len(self.buf) < n:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise TimeoutError(f"waited for {n} bytes, have {len(self.buf)}")
            if not chunk:
                raise EOFError("connection ended without a close frame")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def frame(self, timeout=DEADLINE):
        """(fin, opcode, payload) of the next frame, raw."""
        deadline = time.monotonic() + timeout
        b0, b1 = self._exact(2, deadline)
        assert b1 & 0x80 == 0, "server frames must not be masked"
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._exact(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._exact(8, deadline))[0]
        return bool(b0 & 0x80), b0 & 0x0F, self._exact(n, deadline)

    def recv(self, timeout=DEADLINE):
        """The next data message (text as str, binary as bytes); a close frame raises Closed."""
        while True:
            fin, op, data = self.frame(timeout)
            assert fin, "wsig does not fragment its frames"
            if op == 0x8:
                code = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                try:
                    self.send_frame(0x8, data[:2])
                except OSError:
                    pass
                raise Closed(code, data[2:].decode())
            if op == 0x9:
                self.send_frame(0xA, data)
                continue
            if op == 0xA:
                continue
            return data.decode() if op == 0x1 else data

    def expect_close(self, timeout=DEADLINE):
        with pytest.raises(Closed) as e:
            while True:
                self.recv(timeout)
        return e.value.code, e.value.reason

    @staticmethod
    def encode(op, payload, fin=True):
        if isinstance(payload, str):
            payload = payload.encode()
        mask = os.urandom(4)
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | op])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", n)
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    def send_frame(self, op, payload):
        self.sock.sendall(self.encode(op, payload))

    def send(self, obj):
        self.send_frame(0x1, json.dumps(obj))

    def close(self):
        try:
            self.send_frame(0x8, struct.pack("!H", 1000))
            self.expect_close(5)
        except Exception:
            pass
        self.sock.close()


def http(port, method, path, body=b"", headers=None):
    """(status, headers dict lower-cased, body bytes) of one request on a fresh connection."""
    s = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    if isinstance(body, str):
        body = body.encode()
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close",
             f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *hl = head.decode().split("\r\n")
    hdrs = {k.lower(): v for k, v in (h.split(": ", 1) for h in hl)}
    return int(status_line.split(" ")[1]), hdrs, rest


def push(port, body, **headers):
    h = {f"X-Pode-Signal-{k.replace('_', '-').title().replace('Client-Id', 'Client-Id')}": v
         for k, v in headers.items()}
    return http(port, "POST", "/signal", body, h)


def marker(sender, receivers, text="--marker--"):
    """Broadcasts a marker to every name and checks each receiver's next message is it: everything
    the sender sent before reached them first (per-sender order), so nothing else was on the way."""
    sender.send({"message": text})
    for r in receivers:
        assert r.recv() == text


def accept_for(key):
    return base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()


# --- the 101 ---------------------------------------------------------------------------------

def test_101_carries_pode_headers_in_pode_order(serve):
    s = serve(*ROUTES)
    ws = Raw(s.port, "/red")
    assert ws.status == 101
    names = [k for k, _ in ws.headers]
    assert names[:6] == ["Upgrade", "Connection", "Sec-WebSocket-Accept", "X-Pode-Signal-Client-Id",
                         "X-Pode-Signal-Name", "X-Pode-Signal-Group"], ws.headers
    assert ws.header("Sec-WebSocket-Accept") == accept_for(ws.key)
    assert GUID.match(ws.client_id), ws.client_id
    assert ws.header("X-Pode-Signal-Name") == "Chat"
    assert ws.header("X-Pode-Signal-Group") == "Red"
    assert ws.header("Sec-WebSocket-Protocol") is None and ws.header("Sec-WebSocket-Extensions") is None
    ws.close()


def test_101_without_group_has_no_group_header_and_query_group_is_taken(serve):
    s = serve(*ROUTES)
    plain = Raw(s.port, "/chat")
    assert plain.header("X-Pode-Signal-Group") is None
    grouped = Raw(s.port, "/chat?group=Blue")
    assert grouped.header("X-Pode-Signal-Group") == "Blue"
    # a route's own group wins over ?group=
    fixed = Raw(s.port, "/red?group=Blue")
    assert fixed.header("X-Pode-Signal-Group") == "Red"
    for w in (plain, grouped, fixed):
        w.close()


def test_registry_holds_the_connection_before_the_101(serve):
    s = serve(*ROUTES)
    for _ in range(5):
        ws = Raw(s.port, "/chat")
        status, _, body = push(s.port, "right after", name="Chat", client_id=ws.client_id)
        assert status == 200 and json.loads(body) == {"delivered": 1}
        assert ws.frame() == (True, 0x1, b"right after")
        ws.close()


def test_upgrade_errors_404_405_400(serve):
    s = serve(*ROUTES)
    assert Raw(s.port, "/nowhere").status == 404
    status, hdrs, _ = http(s.port, "POST", "/chat", headers={"Upgrade": "websocket", "Sec-WebSocket-Key": "x" * 24})
    assert status == 405
    status, _, _ = http(s.port, "GET", "/chat", headers={"Upgrade": "websocket", "Connection": "Upgrade",
                                                         "Sec-WebSocket-Version": "13"})
    assert status == 400


# --- default routing -------------------------------------------------------------------------

@pytest.fixture
def net(serve):
    s = serve(*ROUTES)
    a = Raw(s.port, "/chat")
    b = Raw(s.port, "/red")
    c = Raw(s.port, "/chat?group=Green")
    d = Raw(s.port, "/other")
    yield s, a, b, c, d
    for w in (a, b, c, d):
        w.close()


def test_direct_goes_back_to_the_sender_only(net):
    s, a, b, c, d = net
    a.send({"message": "to me", "direct": True, "path": "Other"})
    assert a.recv() == "to me"
    marker(a, [a, b, c, d])


def test_path_names_the_target(net):
    s, a, b, c, d = net
    a.send({"message": "others", "path": "Other"})
    assert d.recv() == "others"
    marker(a, [a, b, c, d])


def test_no_path_goes_to_every_name_including_the_sender(net):
    s, a, b, c, d = net
    a.send({"message": "everyone"})
    for w in (a, b, c, d):
        assert w.recv() == "everyone"


def test_group_filter_is_case_insensitive(net):
    s, a, b, c, d = net
    a.send({"message": "reds", "path": "Chat", "group": "RED"})
    assert b.recv() == "reds"
    a.send({"message": "reds and greens", "group": ["red", "green"]})
    assert b.recv() == "reds and greens"
    assert c.recv() == "reds and greens"
    marker(a, [a, b, c, d])


def test_client_id_filter(net):
    s, a, b, c, d = net
    a.send({"message": "just d", "clientId": d.client_id})
    assert d.recv() == "just d"
    a.send({"message": "b and c", "path": "Chat", "clientId": [b.client_id, c.client_id]})
    assert b.recv() == "b and c"
    assert c.recv() == "b and c"
    marker(a, [a, b, c, d])


def test_only_the_message_value_is_resent_raw_or_compact(net):
    s, a, b, c, d = net
    a.send({"message": "plain", "direct": True})
    assert a.frame() == (True, 0x1, b"plain")
    a.send({"message": {"k": [1, 2]}, "direct": True})
    assert json.loads(a.recv()) == {"k": [1, 2]}
    a.send({"MESSAGE": 42, "Direct": True})
    assert a.recv() == "42"


def test_bad_envelopes_are_dropped_and_the_connection_stays(net):
    s, a, b, c, d = net
    a.send_frame(0x1, "{not json")
    a.send({"nomessage": 1})
    a.send({"message": ""})
    a.send_frame(0x2, json.dumps({"message": "binary envelope", "direct": True}))
    assert a.recv() == "binary envelope"


def test_broadcast_level_refusal_drops_the_message(serve):
    s = serve(*ROUTES, "--broadcast-level", "Other=clientid")
    a, d = Raw(s.port, "/chat"), Raw(s.port, "/other")
    a.send({"message": "refused", "path": "Other"})
    a.send({"message": "allowed", "path": "Other", "clientId": d.client_id})
    assert d.recv() == "allowed"
    a.close()
    d.close()


def test_frames_coalesced_in_one_tcp_write_are_all_processed(serve):
    s = serve(*ROUTES)
    a = Raw(s.port, "/chat")
    batch = b"".join(Raw.encode(0x1, json.dumps({"message": f"m{i}", "direct": True})) for i in range(20))
    a.sock.sendall(batch)
    assert [a.recv() for _ in range(20)] == [f"m{i}" for i in range(20)]
    a.close()


def test_messages_from_one_sender_arrive_in_order(serve):
    s = serve(*ROUTES)
    a, b = Raw(s.port, "/chat"), Raw(s.port, "/other")
    n = 500
    a.sock.sendall(b"".join(Raw.encode(0x1, json.dumps({"message": str(i), "path": "Other"})) for i in range(n)))
    assert [b.recv() for _ in range(n)] == [str(i) for i in range(n)]
    a.close()
    b.close()


# --- echo, auto-upgrade, replacement ------------------------------------------------------------

def test_echo_route_echoes_text_as_text_and_binary_as_binary(serve):
    s = serve("--echo", "/echo")

    async def run():
        async with websockets.connect(f"{s.ws_url}/echo") as ws:
            assert "X-Pode-Signal-Client-Id" not in ws.response_headers
            await ws.send("héllo")
            assert await asyncio.wait_for(ws.recv(), DEADLINE) == "héllo"
            await ws.send(b"\x00\xff\x10")
            assert await asyncio.wait_for(ws.recv(), DEADLINE) == b"\x00\xff\x10"
            big = os.urandom(200_000)
            await ws.send(big)
            assert await asyncio.wait_for(ws.recv(), DEADLINE) == big

    asyncio.run(run())


def test_auto_upgrade_names_the_connection_by_its_path(serve):
    s = serve("--auto-upgrade")
    ws = Raw(s.port, "/some/where?x=1")
    assert ws.status == 101
    assert ws.header("X-Pode-Signal-Name") == "/some/where"
    status, _, body = push(s.port, "hi", name="/some/where")
    assert status == 200 and json.loads(body) == {"delivered": 1}
    assert ws.recv() == "hi"
    ws.close()


def test_a_duplicate_client_id_replaces_the_old_connection_with_1000_replaced(serve):
    s = serve(*ROUTES, "--accept-client-id")
    old = Raw(s.port, "/chat?clientId=abc")
    assert old.client_id == "abc"
    new = Raw(s.port, "/chat?clientId=abc")
    assert new.client_id == "abc"
    assert old.expect_close() == (1000, "replaced")
    status, _, body = push(s.port, "to the new one", name="Chat", client_id="abc")
    assert status == 200
    assert new.recv() == "to the new one"
    new.close()


def test_signed_client_ids_with_accept_client_id(serve, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t\n")
    s = serve(*ROUTES, "--accept-client-id", "--secret-file", secret)
    ws = Raw(s.port, "/chat?clientId=abc")
    assert ws.client_id.startswith("s:abc.")
    again = Raw(s.port, f"/chat?clientId={ws.client_id.replace('+', '%2B').replace('/', '%2F').replace('=', '%3D')}")
    assert again.status == 101 and again.client_id == ws.client_id
    assert ws.expect_close() == (1000, "replaced")
    forged = Raw(s.port, "/chat?clientId=s:abc.AAAA")
    assert forged.status == 400
    status, _, _ = push(s.port, "x", name="Chat", client_id="s:abc.AAAA")
    assert status == 400
    status, _, _ = push(s.port, "x", name="Chat", client_id=again.client_id)
    assert status == 200
    assert again.recv() == "x"
    again.close()


# --- push API ---------------------------------------------------------------------------------

def test_push_api_statuses(serve):
    s = serve(*ROUTES, "--broadcast-level", "Other=group")
    a, b = Raw(s.port, "/chat"), Raw(s.port, "/red")
    assert push(s.port, "x", client_id=a.client_id)[0] == 400
    assert push(s.port, "x")[0] == 400
    assert push(s.port, "x", name="Chat", client_id="nope")[0] == 404
    assert push(s.port, "x", name="Chat", client_id=a.client_id, group="Red")[0] == 404
    status, _, body = push(s.port, "all chat", name="Chat")
    assert status == 200 and json.loads(body) == {"delivered": 2}
    assert a.recv() == "all chat" and b.recv() == "all chat"
    status, _, body = push(s.port, "reds", name="Chat", group="Blue,Red")
    assert status == 200 and json.loads(body) == {"delivered": 1}
    assert b.recv() == "reds"
    assert push(s.port, "refused", name="Other")[0] == 403
    assert http(s.port, "GET", "/signal")[0] == 405
    a.close()
    b.close()


def test_push_body_over_the_limit_is_413(serve):
    s = serve(*ROUTES, "--max-message-size", "1KiB")
    status, _, _ = push(s.port, "x" * 2048, name="Chat")
    assert status == 413


def test_api_key_guards_push_and_admin(serve, tmp_path):
    key = tmp_path / "key"
    key.write_text("k3y\n")
    s = serve(*ROUTES, "--api-key-file", key)
    assert push(s.port, "x", name="Chat")[0] == 401
    assert http(s.port, "GET", "/signal/connections")[0] == 401
    assert http(s.port, "GET", "/signal/connections", headers={"Authorization": "Bearer nope"})[0] == 401
    status, _, body = http(s.port, "GET", "/signal/connections", headers={"Authorization": "Bearer k3y"})
    assert status == 200 and json.loads(body) == {"connections": []}
    assert http(s.port, "GET", "/healthz")[0] == 200


def test_connections_listing_and_delete(serve):
    s = serve(*ROUTES)
    a, b = Raw(s.port, "/chat"), Raw(s.port, "/red")
    status, _, body = http(s.port, "GET", "/signal/connections?group=red")
    conns = json.loads(body)["connections"]
    assert status == 200 and [c["clientId"] for c in conns] == [b.client_id]
    assert set(conns[0]) == {"name", "group", "clientId", "scope", "remote", "since"}
    assert conns[0]["name"] == "Chat" and conns[0]["group"] == "Red" and conns[0]["scope"] == "global"
    status, _, body = http(s.port, "DELETE", f"/signal/connections?name=Chat&clientId={a.client_id}")
    assert status == 200 and json.loads(body) == {"closed": 1}
    assert a.expect_close()[0] == 1000
    status, _, body = http(s.port, "GET", "/signal/connections")
    assert [c["clientId"] for c in json.loads(body)["connections"]] == [b.client_id]
    b.close()


def test_healthz_and_metrics(serve):
    s = serve(*ROUTES)
    a = Raw(s.port, "/chat")
    a.send({"message": "m", "direct": True})
    assert a.recv() == "m"
    assert http(s.port, "GET", "/healthz")[::2] == (200, b"ok")
    status, hdrs, body = http(s.port, "GET", "/metrics")
    text = body.decode()
    assert status == 200 and hdrs["content-type"].startswith("text/plain")
    assert 'wsig_connections{name="Chat"} 1' in text
    assert re.search(r"^wsig_messages_received_total 1$", text, re.M)
    for name in ("wsig_messages_sent_total", "wsig_bytes_received_total", "wsig_bytes_sent_total",
                 "wsig_messages_dropped_total", "wsig_closes_total", "wsig_push_requests_total"):
        assert name in text
    a.close()


# --- limits and lifecycle -------------------------------------------------------------------------

def test_a_message_over_max_message_size_closes_with_1009(serve):
    s = serve(*ROUTES, "--max-message-size", "1KiB")
    a = Raw(s.port, "/chat")
    a.send({"message": "small", "direct": True})
    assert a.recv() == "small"
    a.send_frame(0x1, json.dumps({"message": "x" * 2000}))
    assert a.expect_close()[0] == 1009


def test_max_connections_answers_503(serve):
    s = serve(*ROUTES, "--max-connections", "1")
    a = Raw(s.port, "/chat")
    assert Raw(s.port, "/chat").status == 503
    a.close()


def test_sigterm_closes_every_client_with_1001_and_exits_0(serve):
    s = serve(*ROUTES)
    clients = [Raw(s.port, "/chat") for _ in range(3)]
    s.proc.send_signal(signal.SIGTERM)
    for c in clients:
        assert c.expect_close()[0] == 1001
    assert s.proc.wait(DEADLINE) == 0


def test_sigterm_with_a_silent_client_exits_after_the_shutdown_timeout(serve):
    s = serve(*ROUTES, "--shutdown-timeout", "300ms")
    silent = Raw(s.port, "/chat")  # never answers the close
    start = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(DEADLINE) == 0
    assert time.monotonic() - start < 5
    silent.sock.close()


def test_bad_values_exit_2_before_starting(tmp_path):
    from conftest import run_wsig
    for args in (["--max-message-size", "lots"], ["--ping-interval", "soon"], ["--route", "chat=Chat"],
                 ["--route", "/chat=Chat,colour=red"], ["--broadcast-level", "sometimes"]):
        r = run_wsig("serve", "-p", "0", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stdout == ""
    r = run_wsig("serve", "-p", "0", "--secret-file", tmp_path / "missing")
    assert r.returncode == 78, r.stderr


def test_port_in_use_exits_78(serve):
    from conftest import run_wsig
    s = serve(*ROUTES)
    r = run_wsig("serve", "-p", s.port, *ROUTES)
    assert r.returncode == 78, r.stderr
    assert "in use" in r.stderr


def test_ready_file_and_env_options(serve, tmp_path):
    ready = tmp_path / "ready"
    s = serve(env={"WSIG_ROUTE": "/envroute=Env", "WSIG_READY_FILE": str(ready)})
    assert ready.read_text().strip() == s.url
    ws = Raw(s.port, "/envroute")
    assert ws.header("X-Pode-Signal-Name") == "Env"
    ws.close()


def test_demo_date_goes_to_every_msg_client(serve):
    s = serve()
    a, b = Raw(s.port, "/msg"), Raw(s.port, "/msg")
    a.send({"message": "[date]"})
    da, db = a.recv(), b.recv()
    assert da == db and re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", da)
    a.send({"message": "hello all"})
    assert a.recv() == "hello all" and b.recv() == "hello all"
    status, hdrs, body = http(s.port, "GET", "/")
    assert status == 200 and hdrs["content-type"].startswith("text/html")
    for ident in (b'id="message"', b'id="send"', b'id="messages"'):
        assert ident in body
    assert b"http://" not in body and b"https://" not in body  # nothing external
    a.close()
    b.close()


# --- the write gate: Beast's control frames and raw data frames share one socket -------------------

def test_pongs_never_land_inside_data_frames_under_a_flood(serve):
    # Pongs are written by Beast, data frames by the raw gathered write: the gate keeps them whole.
    s = serve(*ROUTES, "--threads", "2")
    a, b = Raw(s.port, "/chat"), Raw(s.port, "/other")
    n = 300
    batch = b""
    for i in range(n):
        batch += Raw.encode(0x1, json.dumps({"message": f"{i:04d}" + "x" * 3000, "path": "Other"}))
        batch += Raw.encode(0x9, f"p{i}")  # b gets a's messages, a gets its pongs
    a.sock.sendall(batch)
    b.sock.sendall(b"".join(Raw.encode(0x9, f"q{i}") for i in range(n)))
    got, pongs_a, pongs_b = [], [], []
    while len(got) < n or len(pongs_b) < n:
        fin, op, data = b.frame()
        assert fin
        if op == 0xA:
            pongs_b.append(data.decode())
        else:
            assert op == 0x1, op
            got.append(data.decode()[:4])
    while len(pongs_a) < n:
        fin, op, data = a.frame()
        assert fin and op == 0xA, op
        pongs_a.append(data.decode())
    assert got == [f"{i:04d}" for i in range(n)]
    assert pongs_b == [f"q{i}" for i in range(n)]  # pongs echo the ping payload, in order
    assert pongs_a == [f"p{i}" for i in range(n)]
    a.close()
    b.close()


def test_data_queued_before_a_close_goes_out_before_it(serve):
    s = serve(*ROUTES, "--accept-client-id")
    old = Raw(s.port, "/chat?clientId=dup")
    src = Raw(s.port, "/other")
    # many messages to `old`, then the replacement that closes it: all of them come before the close
    src.sock.sendall(b"".join(Raw.encode(0x1, json.dumps({"message": str(i), "path": "Chat"})) for i in range(200)))
    assert old.recv() == "0"
    new = Raw(s.port, "/chat?clientId=dup")
    got = ["0"]
    with pytest.raises(Closed) as closed:
        while True:
            got.append(old.recv())
    assert closed.value.code == 1000 and closed.value.reason == "replaced"
    assert got == [str(i) for i in range(len(got))]
    for w in (src, new):
        w.close()


def test_a_peer_that_never_answers_pings_is_dropped_and_one_that_does_stays(serve):
    s = serve(*ROUTES, "--ping-interval", "200ms")
    mute = Raw(s.port, "/chat")
    live = Raw(s.port, "/other")
    # `mute` reads nothing: its socket ends within a few intervals (no close handshake for the dead)
    deadline = time.monotonic() + DEADLINE
    ended = False
    while time.monotonic() < deadline and not ended:
        try:
            mute.sock.settimeout(0.2)
            if mute.sock.recv(65536) == b"":
                ended = True
        except socket.timeout:
            pass
        except ConnectionResetError:
            ended = True
        try:
            live.recv(0.05)  # answers the server's pings
        except TimeoutError:
            pass
    assert ended
    # `live` answers pings (Raw.recv pongs them) and still gets messages after many intervals
    end = time.monotonic() + 1.5
    while time.monotonic() < end:
        try:
            live.recv(0.1)
        except TimeoutError:
            pass
    status, _, _ = push(s.port, "still here", name="Other", client_id=live.client_id)
    assert status == 200
    assert live.recv() == "still here"
    live.close()


@pytest.mark.parametrize("threads", ["1", "4"])
def test_routing_and_order_with_one_and_several_io_threads(serve, threads):
    s = serve(*ROUTES, "--threads", threads)
    senders = [Raw(s.port, "/chat") for _ in range(3)]
    sink = Raw(s.port, "/other")
    n = 200
    for k, w in enumerate(senders):
        w.sock.sendall(b"".join(Raw.encode(0x1, json.dumps({"message": f"{k}:{i}", "path": "Other"}))
                                for i in range(n)))
    got = [sink.recv() for _ in range(3 * n)]
    for k in range(3):  # each sender's messages arrive in its order, whatever the interleaving
        assert [m for m in got if m.startswith(f"{k}:")] == [f"{k}:{i}" for i in range(n)]
    status, _, body = push(s.port, "all", name="Chat")
    assert status == 200 and json.loads(body) == {"delivered": 3}
    for w in senders:
        assert w.recv() == "all"
    for w in (*senders, sink):
        w.close()
