"""`wsig serve` against bad input (SPEC.md section 9, and the RFC 6455 checks of section 10): malformed
HTTP, bad upgrades, wrong methods, unknown paths, oversized messages (1009), invalid UTF-8 (1007),
protocol violations (1002), bad envelopes, slow readers under both --slow-client policies, clients that
vanish, and bad flags (exit 2 / 78). After each, the server must still serve everyone else."""
import resource
import socket
import time

import pytest

from conftest import WSIG, run_wsig
from helpers_serve import (OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS, WSClosed, connections,
                           envelope, frame, healthy, http, metric_value, push, raw_http, rss_kib,
                           sanitized_build, sync_self, text_frame, wait_connections)

ROUTES = ["--route", "/chat=Chat", "--route", "/news=News"]


# --- HTTP --------------------------------------------------------------------------------------

@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nNoColonInThisHeader\r\n\r\n",
    b"GET /healthz HTTP/9.9.9\r\nHost: x\r\n\r\n",
    b"POST /signal HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
    b"\x00\x01\x02\x03\xff\xfe\r\n\r\n",
], ids=["garbage", "header-without-colon", "bad-version", "bad-content-length", "two-content-lengths", "binary"])
def test_malformed_http_is_400_and_the_server_lives_on(serve, request_bytes):
    s = serve(*ROUTES)
    a = RawWS.open(s.port, "/chat")
    hs, _ = raw_http(s.port, request_bytes)
    assert hs.status == 400, hs.raw
    assert healthy(s.port)
    assert sync_self(a) == []
    a.close()


def test_a_huge_request_head_is_refused_with_a_4xx(serve):
    s = serve(*ROUTES)
    hs, _ = raw_http(s.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n")
    assert 400 <= hs.status < 500, hs.raw
    assert healthy(s.port)


def test_upgrade_without_sec_websocket_key_is_400(serve):
    s = serve(*ROUTES)
    hs = RawWS.attempt(s.port, "/chat", omit=("Sec-WebSocket-Key",))
    assert hs.status == 400, hs.raw
    assert connections(s.port) == []
    assert healthy(s.port)


@pytest.mark.parametrize("method,path", [
    ("POST", "/chat"), ("PUT", "/chat"), ("GET", "/signal"), ("PUT", "/signal"),
    ("PUT", "/signal/connections"), ("POST", "/healthz"), ("POST", "/metrics"),
])
def test_wrong_method_on_a_route_is_405(serve, method, path):
    s = serve(*ROUTES)
    r = http(s.port, method, path, body="" if method in ("POST", "PUT") else None)
    assert r.status == 405, r


def test_upgrade_with_post_is_405(serve):
    s = serve(*ROUTES)
    hs = RawWS.attempt(s.port, "/chat", method="POST")
    assert hs.status == 405, hs.raw


@pytest.mark.parametrize("path", ["/nope", "/chat/extra", "/signal/nope", "/healthz/x"])
def test_unknown_path_is_404(serve, path):
    s = serve(*ROUTES)
    assert http(s.port, "GET", path).status == 404


def test_head_answers_have_no_body_so_the_next_response_on_the_connection_is_intact(serve):
    s = serve(*ROUTES)
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
        c.sendall(b"HEAD /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"HEAD /signal HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    # Read as a client must: a response to HEAD ends with its header block, whatever its Content-Length.
    got = []
    for has_body in (False, False, False, True):
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, (got, data)
        lines = head.split(b"\r\n")
        length = next(int(v) for k, _, v in (l.partition(b": ") for l in lines[1:]) if k.lower() == b"content-length")
        body, data = (data[:length], data[length:]) if has_body else (b"", data)
        got.append((lines[0], length, body))
    assert got == [(b"HTTP/1.1 404 Not Found", 10, b""),  # the length of "not found\n", as a GET would give
                   (b"HTTP/1.1 200 OK", 2, b""),
                   (b"HTTP/1.1 405 Method Not Allowed", len(b"method not allowed\n"), b""),
                   (b"HTTP/1.1 200 OK", 2, b"ok")]
    assert data == b""  # nothing stray after the last response


def test_a_target_in_absolute_form_is_the_same_as_its_path(serve):
    s = serve(*ROUTES)
    hs, body = raw_http(s.port, f"GET http://127.0.0.1:{s.port}/healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                f"Connection: close\r\n\r\n".encode())
    assert (hs.status, body) == (200, b"ok"), hs.raw
    hs, _ = raw_http(s.port, b"GET HTTP://127.0.0.1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    assert hs.status == 404, hs.raw  # its empty path is "/", which ROUTES do not serve


@pytest.mark.parametrize("target", ["?x", "*", "chat"])
def test_auto_upgrade_refuses_a_target_that_is_not_a_path(serve, target):
    s = serve("--auto-upgrade")
    hs, _ = raw_http(s.port, f"GET {target} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    assert hs.status == 404, hs.raw
    assert connections(s.port) == []


def test_upgrade_on_an_unknown_path_is_404_without_auto_upgrade(serve):
    s = serve(*ROUTES)
    hs = RawWS.attempt(s.port, "/nope")
    assert hs.status == 404, hs.raw
    assert connections(s.port) == []


# --- message size --------------------------------------------------------------------------

def padded_envelope(total):
    """A direct envelope of exactly `total` bytes."""
    base = len(envelope("", direct=True))
    text = envelope("x" * (total - base), direct=True)
    assert len(text) == total
    return text


def test_a_message_at_the_limit_passes_one_over_closes_1009(serve):
    s = serve(*ROUTES, "--max-message-size", "1KiB")
    a = RawWS.open(s.port, "/chat")
    b = RawWS.open(s.port, "/chat")
    a.send_text(padded_envelope(1024))
    assert a.recv() == "x" * (1024 - len(envelope("", direct=True)))
    a.send_text(padded_envelope(1025))
    assert a.expect_close()[0] == 1009
    a.close()  # as a client does when the server's end of stream follows its close frame
    assert sync_self(b) == []  # the others are untouched
    wait_connections(s.port, 1)
    b.close()


def test_an_oversized_fragmented_message_closes_1009(serve):
    s = serve(*ROUTES, "--max-message-size", "1KiB")
    a = RawWS.open(s.port, "/chat")
    a.send_raw(frame(OP_TEXT, b"x" * 500, fin=False) + frame(OP_CONT, b"x" * 500, fin=False)
               + frame(OP_CONT, b"x" * 500, fin=True))
    assert a.expect_close()[0] == 1009


def test_an_announced_huge_length_closes_1009_at_once(serve):
    s = serve(*ROUTES, "--max-message-size", "1KiB")
    a = RawWS.open(s.port, "/chat")
    a.send_raw(frame(OP_TEXT, b"", length_override=1 << 40))  # header only; the payload never comes
    assert a.expect_close()[0] == 1009
    assert healthy(s.port)


def test_the_default_limit_is_1mib(serve):
    s = serve(*ROUTES)
    a = RawWS.open(s.port, "/chat")
    a.send_text(padded_envelope(1 << 20))
    assert len(a.recv()) == (1 << 20) - len(envelope("", direct=True))
    a.send_text(padded_envelope((1 << 20) + 1))
    assert a.expect_close()[0] == 1009


# --- frame validation -----------------------------------------------------------------------

@pytest.mark.parametrize("payload", [
    b'{"message":"\xff"}',
    b'{"message":"\xc0\xaf"}',                 # overlong encoding of '/'
    b'{"message":"\xed\xa0\x80"}',             # a UTF-16 surrogate
    b'{"message":"\xe2\x82"}',                 # truncated sequence
], ids=["ff", "overlong", "surrogate", "truncated"])
def test_invalid_utf8_in_a_text_frame_closes_1007(serve, payload):
    s = serve(*ROUTES)
    a = RawWS.open(s.port, "/chat")
    a.send_frame(OP_TEXT, payload)
    assert a.expect_close()[0] == 1007
    assert healthy(s.port)


def test_invalid_utf8_split_over_fragments_closes_1007(serve):
    s = serve(*ROUTES)
    a = RawWS.open(s.port, "/chat")
    a.send_raw(frame(OP_TEXT, b'{"message":"\xe2', fin=False) + frame(OP_CONT, b'\x28\xa1"}', fin=True))
    assert a.expect_close()[0] == 1007


def test_valid_utf8_split_over_fragments_passes(serve):
    s = serve(*ROUTES)
    a = RawWS.open(s.port, "/chat")
    data = '{"message":"\u2713","direct":true}'.encode("utf-8")  # the check mark as raw UTF-8
    cut = data.index(b"\xe2") + 1  # in the middle of it
    a.send_raw(frame(OP_TEXT, data[:cut], fin=False) + frame(OP_CONT, data[cut:], fin=True))
    assert a.recv() == "\u2713"
    a.close()


def test_invalid_utf8_in_a_binary_frame_is_a_bad_envelope_not_a_protocol_error(serve):
    s = serve(*ROUTES)
    a = RawWS.open(s.port, "/chat")
    a.send_binary(b"\xff\xfe\xfd")
    assert sync_self(a) == []
    a.close()


@pytest.mark.parametrize("bad", [
    frame(OP_TEXT, envelope("unmasked", direct=True), mask=False),
    frame(0x3, b"reserved data opcode"),
    frame(0x7, b"reserved data opcode"),
    frame(0xB, b"reserved control opcode"),
    frame(0xF, b""),
    frame(OP_TEXT, envelope("rsv1", direct=True), rsv=4),
    frame(OP_TEXT, envelope("rsv3", direct=True), rsv=1),
    frame(OP_PING, b"fragmented ping", fin=False),
    frame(OP_PING, b"p" * 126),
    frame(OP_CONT, b"continuation with nothing to continue"),
    frame(OP_TEXT, b'{"message":', fin=False) + frame(OP_TEXT, b'"new text mid-message"}'),
    frame(OP_CLOSE, b"\x03"),                 # a one-byte close body
    frame(OP_CLOSE, b"\x03\xe7"),             # close code 999
    frame(OP_CLOSE, b"\x03\xed"),             # close code 1005 must not be sent
], ids=["unmasked", "op3", "op7", "opB", "opF", "rsv1", "rsv3", "fragmented-ping", "long-ping",
        "orphan-continuation", "text-inside-fragmented", "close-1-byte", "close-999", "close-1005"])
def test_protocol_violations_close_1002(serve, bad):
    s = serve(*ROUTES)
    other = RawWS.open(s.port, "/chat")
    a = RawWS.open(s.port, "/chat")
    a.send_raw(bad)
    assert a.expect_close()[0] == 1002
    assert sync_self(other) == []
    assert healthy(s.port)
    other.close()


def test_ping_is_answered_with_a_pong_echoing_its_payload(serve):
    s = serve(*ROUTES)
    a = RawWS.open(s.port, "/chat")
    a.send_frame(OP_PING, b"are you there?")
    f = a.recv_frame()
    assert (f.opcode, f.fin, f.payload) == (OP_PONG, True, b"are you there?")
    a.close()


# --- envelopes ---------------------------------------------------------------------------

def test_invalid_json_envelope_is_dropped_logged_and_the_connection_kept(serve):
    s = serve(*ROUTES)
    a = RawWS.open(s.port, "/chat")
    b = RawWS.open(s.port, "/chat")
    a.send_text("{this is not json")
    a.send_text('{"nomessage": 1}')
    assert sync_self(a) == []
    a.send_env("after", path="Chat", clientId=b.client_id)
    assert b.recv() == "after"
    a.close()
    b.close()
    assert s.stop() == 0
    assert "warn" in s.stderr_text().lower(), s.stderr_text()


# --- slow readers ------------------------------------------------------------------------

N_FLOOD = 600
CHUNK = 16 * 1024


def flood(src, fast, n=N_FLOOD):
    """Broadcasts n messages of 16 KiB to Flood, in lockstep with the fast reader (each is read before
    the next is sent), so only a reader that does not read can fill its queue."""
    for i in range(n):
        src.send_env(f"{i:06d}:" + "f" * CHUNK, path="Flood")
        assert fast.recv().startswith(f"{i:06d}:")


def seq(messages):
    return [int(m.split(":", 1)[0]) for m in messages]


def start_flood_net(serve, policy):
    s = serve("--route", "/flood=Flood", "--route", "/src=Src", "--send-queue", "64KiB", "--slow-client", policy)
    slow = RawWS.open(s.port, "/flood", rcvbuf=4096)  # never reads during the flood
    fast = RawWS.open(s.port, "/flood")
    src = RawWS.open(s.port, "/src")
    return s, slow, fast, src


def test_slow_reader_is_closed_1008_and_the_others_get_every_message(serve):
    s, slow, fast, src = start_flood_net(serve, "close")
    flood(src, fast)  # the fast one got every message, in order
    # the slow one: some complete messages in order, then a close 1008
    got = []
    with pytest.raises(WSClosed) as closed:
        while True:
            got.append(slow.recv(20))
    assert closed.value.code == 1008, (closed.value.code, closed.value.reason)
    assert closed.value.reason == "too slow"
    slow.expect_eof()
    slow.sock.close()
    assert len(got) < N_FLOOD
    assert seq(got) == list(range(len(got)))
    assert [c["clientId"] for c in wait_connections(s.port, 1, name="Flood")] == [fast.client_id]
    assert sync_self(src) == []
    assert metric_value(http(s.port, "GET", "/metrics").text, "wsig_closes_total", {"code": "1008"}) == 1
    fast.close()
    src.close()


def test_slow_reader_loses_messages_under_drop_but_stays_connected(serve):
    s, slow, fast, src = start_flood_net(serve, "drop")
    flood(src, fast)  # the fast one got every message, in order
    # now the slow one reads: what it got is in order and whole, some are missing, and it is still
    # connected: a marker sent after its queue drained reaches it
    got = []
    deadline = time.monotonic() + 30
    while True:
        assert time.monotonic() < deadline, f"slow reader never got the end marker ({len(got)} messages)"
        src.send_env("end", path="Flood", clientId=slow.client_id)
        try:
            while True:
                m = slow.recv(0.5)
                if m == "end":
                    break
                got.append(m)
            break
        except TimeoutError:
            continue
    numbers = seq(got)
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert len(numbers) < N_FLOOD, "nothing was dropped: the flood did not overflow the send queue"
    assert all(len(m) == 7 + CHUNK for m in got)
    assert slow.client_id in [c["clientId"] for c in connections(s.port, name="Flood")]
    metrics = http(s.port, "GET", "/metrics").text
    assert metric_value(metrics, "wsig_messages_dropped_total") > 0
    for w in (slow, fast, src):
        w.close()


# --- clients that go away ------------------------------------------------------------------

@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_a_client_that_vanishes_without_a_close_is_removed(serve, reset):
    s = serve(*ROUTES)
    a = RawWS.open(s.port, "/chat")
    b = RawWS.open(s.port, "/chat")
    wait_connections(s.port, 2)
    a.drop(reset=reset)
    assert [c["clientId"] for c in wait_connections(s.port, 1)] == [b.client_id]
    assert sync_self(b) == []
    b.close()


def test_a_peer_that_stops_answering_pings_is_closed(serve):
    s = serve(*ROUTES, "--ping-interval", "400ms")
    mute = RawWS.open(s.port, "/chat")  # never reads, so never answers a ping
    live = RawWS.open(s.port, "/chat")
    pings = 0
    while pings < 4:  # the live one answers four pings; meanwhile the mute one must be dropped
        f = live.recv_frame(5)
        if f.opcode == OP_PING:
            live.send_frame(OP_PONG, f.payload)
            pings += 1
    assert [c["clientId"] for c in wait_connections(s.port, 1)] == [live.client_id]
    live.close()
    mute.sock.close()


def test_a_half_sent_frame_then_vanishing_is_harmless(serve):
    s = serve(*ROUTES)
    a = RawWS.open(s.port, "/chat")
    a.send_raw(text_frame(envelope("never finished", direct=True))[:8])
    a.drop()
    wait_connections(s.port, 0)
    assert healthy(s.port)


def test_ten_thousand_idle_connections_and_one_broadcast(serve):
    n = 10_000  # SPEC section 9
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = n + 500  # this process holds the client sockets; the server (started after) inherits the limit
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"the file limit ({hard}) is below {need}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    s = serve(*ROUTES)
    socks = []
    try:
        for _ in range(n):
            socks.append(RawWS.open(s.port, "/chat"))
        r = push(s.port, "to all", name="Chat")
        assert r.json() == {"delivered": n}
        for w in socks:
            assert w.recv() == "to all"
        assert healthy(s.port)
    finally:
        for w in socks:
            w.sock.close()
    wait_connections(s.port, 0, timeout=60)


# --- bad flags -------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["--shutdown-timeout", "5parsecs"], ["--ping-interval", "soon"], ["--max-message-size", "lots"],
    ["--send-queue", "1XB"], ["--slow-client", "maybe"], ["--log-format", "xml"], ["--default-scope", "nowhere"],
    ["--broadcast-level", "loud"], ["--broadcast-level", "Chat=loud"], ["--route", "no-equals-sign"],
    ["--threads", "many"], ["--max-connections", "lots"], ["--bogus-flag"],
], ids=lambda a: " ".join(a))
def test_bad_flags_exit_2_before_listening(args):
    r = run_wsig("serve", "-p", "0", *args, timeout=10)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    assert r.stderr.strip() != ""


@pytest.mark.parametrize("flag", ["--secret-file", "--api-key-file"])
def test_unreadable_secret_or_key_file_exits_78(tmp_path, flag):
    r = run_wsig("serve", "-p", "0", "--route", "/chat=Chat", flag, tmp_path / "missing", timeout=10)
    assert r.returncode == 78, (r.returncode, r.stderr)
    assert r.stdout == ""
    assert r.stderr.strip() != ""
    r = run_wsig("serve", "-p", "0", "--route", "/chat=Chat", flag, tmp_path, timeout=10)  # a directory
    assert r.returncode == 78, (r.returncode, r.stderr)


def test_port_in_use_exits_78():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        r = run_wsig("serve", "-p", port, timeout=10)
        assert r.returncode == 78, (r.returncode, r.stderr)
        assert r.stdout == ""
        assert str(port) in r.stderr or "in use" in r.stderr.lower(), r.stderr
    finally:
        holder.close()


@pytest.mark.parametrize("policy", ["drop", "close"])
def test_memory_stays_bounded_with_many_slow_readers(serve, policy):
    if sanitized_build(WSIG):
        pytest.skip("RSS says nothing under a sanitizer: freed memory stays in its quarantine")
    # 20 readers that never read and a 12.5 MiB flood: with bounded queues (and one shared buffer per
    # broadcast) the server holds a small part of it, never the whole flood
    s = serve("--route", "/flood=Flood", "--route", "/src=Src", "--send-queue", "256KiB", "--slow-client", policy)
    slows = [RawWS.open(s.port, "/flood", rcvbuf=4096) for _ in range(20)]
    fast = RawWS.open(s.port, "/flood")
    src = RawWS.open(s.port, "/src")
    before = rss_kib(s.proc.pid)
    flood(src, fast, n=800)
    growth_mib = (rss_kib(s.proc.pid) - before) / 1024
    assert growth_mib < 6, f"RSS grew by {growth_mib:.1f} MiB during a 12.5 MiB flood"
    for w in slows:
        w.drop(reset=True)
    fast.close()
    src.close()
