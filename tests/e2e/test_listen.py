"""`wsig listen` through the real binary against peers nobody here wrote (Python's websockets
server, raw sockets): output bytes, JSONL events, exit codes, --send/--stdin envelopes, signals.

Every wait is on an event (a line, a file, a message at the peer, a process exit) with a deadline.
"""
import asyncio
import base64
import json
import os
import re
import signal
import stat
import subprocess
import threading
import time

import pytest

from conftest import DEADLINE, WSIG, read_line, run_wsig
from peers import (HttpPeer, PodeLikePeer, RawHttpPeer, WsPeer, accept_key, free_port, jsonl, make_cert,
                   server_tls_context)

TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
POD_HEADERS = {"X-Pode-Signal-Client-Id": "0f0e0d0c-1111-2222-3333-444455556666",
               "X-Pode-Signal-Name": "Chat", "X-Pode-Signal-Group": "admins"}


def listen(*args, input=None, timeout=DEADLINE):
    """Runs `wsig listen ...` to its end; stdout and stderr as bytes."""
    env = dict(os.environ)
    env.pop("WSIG_SECRET", None)
    return subprocess.run([WSIG, "listen", *map(str, args)], input=input, capture_output=True, env=env,
                          timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)


def popen_listen(*args, stdin=subprocess.DEVNULL, umask=-1):
    return subprocess.Popen([WSIG, "listen", *map(str, args)], stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, umask=umask)


def wait_file(path, proc=None, timeout=DEADLINE):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if os.path.exists(path):
            return open(path).read()
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"wsig exited {proc.returncode} before writing {path}: {proc.stderr.read()!r}")
        time.sleep(0.01)  # polling a file: the event itself, checked every 10 ms
    raise TimeoutError(f"{path} did not appear within {timeout}s")


def sends_then_closes(*messages, code=1000, reason=""):
    async def script(ws, peer):
        for m in messages:
            await ws.send(m)
        await ws.close(code, reason)
    return script


async def hold_open(ws, peer):
    await peer.drain(ws)


# ------------------------------------------------------------------------------------- output

def test_text_messages_each_on_a_line_and_close_1000_exits_0(peers):
    p = peers(WsPeer, sends_then_closes("hello", "world", "with\nnewline"))
    r = listen(p.url + "/ws")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"hello\nworld\nwith\nnewline\n"


def test_close_1001_going_away_exits_0(peers):
    p = peers(WsPeer, sends_then_closes("bye", code=1001))
    r = listen(p.url)
    assert (r.returncode, r.stdout) == (0, b"bye\n"), r.stderr


@pytest.mark.parametrize("code", [1002, 1007, 1009])
def test_protocol_close_codes_exit_76(peers, code):
    p = peers(WsPeer, sends_then_closes("x", code=code, reason="bad"))
    r = listen(p.url)
    assert r.returncode == 76, r.stderr
    assert r.stdout == b"x\n"
    assert str(code).encode() in r.stderr


def test_close_before_count_is_met_exits_1(peers):
    p = peers(WsPeer, sends_then_closes("one", code=1000))
    r = listen(p.url, "--count", 2)
    assert r.returncode == 1, r.stderr
    assert r.stdout == b"one\n"
    assert b"--count" in r.stderr


def test_binary_and_text_in_jsonl_events(peers):
    p = peers(WsPeer, sends_then_closes("héllo", b"\x00\xffbin", code=1000, reason="done"),
              response_headers=POD_HEADERS)
    r = listen(p.url + "/ws", "--output", "jsonl")
    assert r.returncode == 0, r.stderr
    events = jsonl(r.stdout.decode())
    assert [e["event"] for e in events] == ["open", "message", "message", "close"]
    for e in events:
        assert TS_RE.match(e["ts"]), e
        assert list(e)[:2] == ["event", "ts"]
    assert events[0] == {"event": "open", "ts": events[0]["ts"], "url": p.url + "/ws",
                         "client_id": POD_HEADERS["X-Pode-Signal-Client-Id"], "name": "Chat", "group": "admins"}
    assert events[1] == {"event": "message", "ts": events[1]["ts"], "opcode": "text", "data": "héllo",
                         "len": len("héllo".encode())}
    assert events[2] == {"event": "message", "ts": events[2]["ts"], "opcode": "binary",
                         "data_b64": base64.b64encode(b"\x00\xffbin").decode(), "len": 5}
    assert events[3]["code"] == 1000 and events[3]["reason"] == "done"


def test_jsonl_open_without_pode_headers_has_nulls(peers):
    p = peers(WsPeer, sends_then_closes())
    r = listen(p.url, "-o", "jsonl")
    assert r.returncode == 0, r.stderr
    ev = jsonl(r.stdout.decode())[0]
    assert (ev["event"], ev["client_id"], ev["name"], ev["group"]) == ("open", None, None, None)


def test_binary_in_text_mode_is_printed_raw(peers):
    p = peers(WsPeer, sends_then_closes(b"\x01\x02\x03"))
    r = listen(p.url)
    assert (r.returncode, r.stdout) == (0, b"\x01\x02\x03\n")


def test_message_over_64_kib_arrives_whole(peers):
    big = "".join(chr(ord("a") + i % 26) for i in range(200_000))
    p = peers(WsPeer, sends_then_closes(big))
    r = listen(p.url, "--count", 1)
    assert r.returncode == 0, r.stderr
    assert r.stdout == big.encode() + b"\n"


def test_16_mib_message_in_4096_fragments_arrives_whole(peers):
    chunk = b"0123456789abcdef" * 256  # 4 KiB
    async def script(ws, peer):
        await ws.send(chunk for _ in range(4096))  # an iterable: one fragmented binary message
        await ws.close(1000)
    p = peers(WsPeer, script)
    r = listen(p.url, "--count", 1, timeout=60)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) == 16 * 1024 * 1024 + 1
    assert r.stdout == chunk * 4096 + b"\n"


def test_message_over_max_message_size_closes_1009_and_exits_76(peers):
    p = peers(WsPeer, sends_then_closes("y" * 2048))
    r = listen(p.url, "--max-message-size", "1KiB")
    assert r.returncode == 76, r.stderr
    assert p.wait_closed()[0] == 1009
    assert r.stdout == b""


# ----------------------------------------------------------------------------- ending rules

def test_count_exits_0_after_n_messages_with_a_close_1000(peers):
    async def script(ws, peer):
        for m in ("a", "b", "c"):
            await ws.send(m)
        await peer.drain(ws)
    p = peers(WsPeer, script)
    r = listen(p.url, "--count", 2)
    assert (r.returncode, r.stdout) == (0, b"a\nb\n"), r.stderr
    assert p.wait_closed()[0] == 1000


def test_until_prints_the_matching_message_and_exits_0(peers):
    async def script(ws, peer):
        for m in ("start", "progress 50%", "job done: ok", "after"):
            await ws.send(m)
        await peer.drain(ws)
    p = peers(WsPeer, script)
    r = listen(p.url, "--until", r"done: (ok|fail)$")
    assert (r.returncode, r.stdout) == (0, b"start\nprogress 50%\njob done: ok\n"), r.stderr
    assert p.wait_closed()[0] == 1000


def test_until_with_backtracking_on_a_1_mb_message_does_not_crash(peers):
    big = "a" * 1_000_000 + "END"
    async def script(ws, peer):
        await ws.send(big)
        await peer.drain(ws)
    p = peers(WsPeer, script)
    r = listen(p.url, "--until", "a.*END", timeout=30)
    assert r.returncode == 0, r.stderr[-300:]
    assert r.stdout == big.encode() + b"\n"


def test_close_before_until_matched_exits_1(peers):
    p = peers(WsPeer, sends_then_closes("nope"))
    r = listen(p.url, "--until", "^yes$")
    assert (r.returncode, r.stdout) == (1, b"nope\n")


def test_timeout_exits_124_with_a_close_frame(peers):
    p = peers(WsPeer, hold_open)
    t0 = time.monotonic()
    r = listen(p.url, "--timeout", "700ms", "--count", 1)
    assert r.returncode == 124, r.stderr
    assert time.monotonic() - t0 >= 0.7
    assert p.wait_closed()[0] == 1000


def test_idle_timeout_counts_from_the_last_message(peers):
    async def script(ws, peer):
        await ws.send("only")
        await peer.drain(ws)
    p = peers(WsPeer, script)
    r = listen(p.url, "--idle-timeout", "500ms")
    assert (r.returncode, r.stdout) == (124, b"only\n"), r.stderr
    assert b"idle" in r.stderr


def test_timeout_in_jsonl_ends_with_an_error_event(peers):
    p = peers(WsPeer, hold_open)
    r = listen(p.url, "--timeout", "300ms", "-o", "jsonl")
    assert r.returncode == 124
    events = jsonl(r.stdout.decode())
    assert [e["event"] for e in events] == ["open", "error", "close"]
    assert events[1]["exit_code"] == 124 and "timeout" in events[1]["message"]
    assert events[2]["code"] == 1000


# ----------------------------------------------------------------------- handshake and IDs

def test_id_file_holds_the_client_id_and_stderr_the_pode_headers(peers, tmp_path):
    p = peers(WsPeer, hold_open, response_headers=POD_HEADERS)
    id_file = tmp_path / "id"
    proc = popen_listen(p.url + "/ws", "--id-file", id_file, "--count", 1)
    try:
        assert wait_file(id_file, proc) == POD_HEADERS["X-Pode-Signal-Client-Id"] + "\n"
        assert not list(tmp_path.glob("id.tmp*"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(DEADLINE)
    err = proc.stderr.read().decode()
    for k, v in POD_HEADERS.items():
        assert f"{k}: {v}" in err


def test_id_file_is_mode_0600_and_never_written_through_a_planted_symlink(peers, tmp_path):
    """The id file is a bearer credential: owner-only even under umask 022, and the old predictable
    temporary names (id.tmp.PID, id.tmp), planted as symlinks to a victim, are never followed."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    id_file = tmp_path / "id"
    launched = threading.Event()
    pid = {}

    async def plant(path, headers):
        # The upgrade request has arrived, the id file is not written yet, and the PID is known.
        await asyncio.get_running_loop().run_in_executor(None, launched.wait, DEADLINE)
        for name in (f"id.tmp.{pid['listen']}", "id.tmp"):
            os.symlink(victim, tmp_path / name)
        return None

    p = peers(WsPeer, hold_open, response_headers=POD_HEADERS, process_request=plant)
    proc = popen_listen(p.url + "/ws", "--id-file", id_file, umask=0o022)
    pid["listen"] = proc.pid
    launched.set()
    try:
        assert wait_file(id_file, proc) == POD_HEADERS["X-Pode-Signal-Client-Id"] + "\n"
        assert victim.read_text() == "precious\n"
        st = os.lstat(id_file)
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
        assert sorted(f.name for f in tmp_path.iterdir()) == sorted(["id", "id.tmp", f"id.tmp.{proc.pid}", "victim"])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(DEADLINE)


def test_an_id_file_that_is_a_directory_exits_78_and_leaves_nothing_behind(peers, tmp_path):
    p = peers(WsPeer, hold_open, response_headers=POD_HEADERS)
    target = tmp_path / "ids"
    target.mkdir()
    r = listen(p.url + "/ws", "--id-file", target)
    assert r.returncode == 78, (r.returncode, r.stderr)
    err = r.stderr.decode()
    assert re.search(r"--id-file: cannot write '.*ids': rename of '.*ids\.tmp-[0-9a-f]{16}' over it: Is a directory",
                     err), err
    assert [f.name for f in tmp_path.iterdir()] == ["ids"] and list(target.iterdir()) == []


def test_legacy_pode_client_id_header_is_read(peers, tmp_path):
    p = peers(WsPeer, sends_then_closes(), response_headers={"X-Pode-ClientId": "legacy-1"})
    r = listen(p.url, "--id-file", tmp_path / "id")
    assert r.returncode == 0
    assert (tmp_path / "id").read_text() == "legacy-1\n"


def test_headers_origin_and_path_reach_the_server(peers):
    p = peers(WsPeer, sends_then_closes())
    r = listen(p.url + "/ws/chat?group=g1", "-H", "X-Test: one", "-H", "Authorization: Bearer k3y",
               "--origin", "https://app.example", "-H", "User-Agent: custom/1")
    assert r.returncode == 0, r.stderr
    path, headers = p.requests[0]
    assert path == "/ws/chat?group=g1"
    assert headers["X-Test"] == "one"
    assert headers["Authorization"] == "Bearer k3y"
    assert headers["Origin"] == "https://app.example"
    assert headers["User-Agent"] == "custom/1"
    assert not any(k.lower().startswith("x-pode-signal") for k in headers)


def test_connection_refused_exits_69():
    r = listen(f"ws://127.0.0.1:{free_port()}/ws")
    assert r.returncode == 69
    assert b"connect" in r.stderr


def test_connection_refused_in_jsonl_is_an_error_event():
    r = listen(f"ws://127.0.0.1:{free_port()}/ws", "-o", "jsonl")
    assert r.returncode == 69
    (ev,) = jsonl(r.stdout.decode())
    assert ev["event"] == "error" and ev["exit_code"] == 69 and TS_RE.match(ev["ts"])


def test_upgrade_answered_200_exits_76(peers):
    p = peers(RawHttpPeer, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
    r = listen(p.url + "/ws")
    assert r.returncode == 76, r.stderr
    assert b"200" in r.stderr


def test_bad_accept_key_exits_76(peers):
    resp = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n")
    p = peers(RawHttpPeer, resp)
    r = listen(p.url)
    assert r.returncode == 76, r.stderr


@pytest.mark.parametrize("status,code", [(403, 77), (401, 77), (503, 69), (500, 69), (404, 76)])
def test_upgrade_refused_status_maps_to_exit_code(peers, status, code):
    async def refuse(path, headers):
        from http import HTTPStatus
        return HTTPStatus(status), [("Content-Type", "text/plain")], b"no entry\n"
    p = peers(WsPeer, hold_open, process_request=refuse)
    r = listen(p.url + "/ws")
    assert r.returncode == code, r.stderr
    assert str(status).encode() in r.stderr and b"no entry" in r.stderr


# ------------------------------------------------------------------------------ sending

def test_send_builds_pode_envelopes_exactly(peers):
    async def script(ws, peer):
        await peer.recv(ws)
        await peer.recv(ws)
        await ws.close(1000)
    p = peers(WsPeer, script)
    r = listen(p.url, "--send", "hello", "--send", 'say "hi"', "--path", "Chat", "--group", "g1",
               "--to", "id-1", "--direct")
    assert r.returncode == 0, r.stderr
    assert p.received == ['{"message":"hello","path":"Chat","clientId":"id-1","group":"g1","direct":true}',
                          '{"message":"say \\"hi\\"","path":"Chat","clientId":"id-1","group":"g1","direct":true}']


def test_send_with_several_targets_and_json(peers):
    async def script(ws, peer):
        await peer.recv(ws)
        await ws.close(1000)
    p = peers(WsPeer, script)
    r = listen(p.url, "--send", '{"a": [1, 2], "b": null}', "--json", "--to", "x", "--to", "y",
               "--group", "g1", "--group", "g2")
    assert r.returncode == 0, r.stderr
    assert p.received == ['{"message":{"a":[1,2],"b":null},"clientId":["x","y"],"group":["g1","g2"]}']


def test_send_invalid_json_exits_65_before_connecting(peers):
    p = peers(WsPeer, hold_open)
    r = listen(p.url, "--send", "{nope", "--json")
    assert r.returncode == 65
    assert p.requests == []


def test_send_raw_goes_out_verbatim(peers):
    async def script(ws, peer):
        await peer.recv(ws)
        await ws.close(1000)
    p = peers(WsPeer, script)
    r = listen(p.url, "--send", "plain text", "--raw")
    assert r.returncode == 0
    assert p.received == ["plain text"]


def test_stdin_lines_are_envelopes_and_eof_does_not_end_listening(peers):
    async def script(ws, peer):
        await peer.recv(ws)
        await peer.recv(ws)
        # stdin has hit EOF by now (both lines were read and sent): the listener must still listen
        await ws.send("after eof")
        await ws.close(1000)
    p = peers(WsPeer, script)
    r = listen(p.url, "--stdin", "--path", "Chat", input=b"one\r\ntwo\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"after eof\n"
    assert p.received == ['{"message":"one","path":"Chat"}', '{"message":"two","path":"Chat"}']


def test_stdin_from_dev_null_keeps_listening(peers):
    async def script(ws, peer):
        await ws.send("first")
        await peer.recv(ws)  # the --send that follows the open: the listener is up and has read EOF long ago
        await ws.send("second")
        await ws.close(1000)
    p = peers(WsPeer, script)
    with open(os.devnull, "rb") as devnull:
        proc = subprocess.run([WSIG, "listen", p.url, "--stdin", "--send", "ping", "--raw"], stdin=devnull,
                              capture_output=True, timeout=DEADLINE)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"first\nsecond\n"


def test_exit_on_eof_sends_everything_then_closes_1000(peers):
    p = peers(WsPeer, hold_open)
    r = listen(p.url, "--stdin", "--exit-on-eof", "--raw", input=b"l1\nl2\nl3")
    assert r.returncode == 0, r.stderr
    assert p.wait_closed()[0] == 1000
    assert p.received == ["l1", "l2", "l3"]


def test_echo_sends_every_frame_back_with_its_opcode(peers):
    async def script(ws, peer):
        await ws.send("text one")
        await ws.send(b"\x00binary\xff")
        await peer.recv(ws)
        await peer.recv(ws)
        await ws.close(1000)
    p = peers(WsPeer, script)
    r = listen(p.url, "--echo")
    assert r.returncode == 0, r.stderr
    assert p.received == ["text one", b"\x00binary\xff"]


# ------------------------------------------------------------------------- signals, pipes

@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_sends_close_1000_then_exits(peers, tmp_path, sig, code):
    p = peers(WsPeer, hold_open)
    id_file = tmp_path / "id"
    proc = popen_listen(p.url, "--id-file", id_file)
    try:
        wait_file(id_file, proc)
        proc.send_signal(sig)
        assert proc.wait(DEADLINE) == code
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert p.wait_closed()[0] == 1000


def test_closed_stdout_pipe_ends_quietly_with_0(peers):
    async def script(ws, peer):
        i = 0
        while True:
            await ws.send(f"line {i}")
            i += 1
    p = peers(WsPeer, script)
    r = subprocess.run(["bash", "-c", f'"{WSIG}" listen {p.url} | head -1; echo "status ${{PIPESTATUS[0]}}"'],
                       capture_output=True, timeout=DEADLINE, stdin=subprocess.DEVNULL)
    assert r.stdout == b"line 0\nstatus 0\n", r.stderr
    assert b"error" not in r.stderr


# ------------------------------------------------------------------------------ reconnect

def test_reconnect_after_going_away(peers):
    async def script(ws, peer):
        if len(peer.requests) == 1:
            await ws.close(1001, "restart")
        else:
            await ws.send("second connection")
            await peer.drain(ws)
    p = peers(WsPeer, script)
    r = listen(p.url, "--reconnect=3", "--count", 1)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"second connection\n"
    assert len(p.requests) == 2
    assert b"reconnecting" in r.stderr


def test_reconnect_gives_up_after_n_attempts():
    t0 = time.monotonic()
    r = listen(f"ws://127.0.0.1:{free_port()}/", "--reconnect=2")
    assert r.returncode == 69
    assert r.stderr.count(b"reconnecting") == 2
    assert time.monotonic() - t0 >= 0.25 + 0.5


# --------------------------------------------------------------------------------- usage

@pytest.mark.parametrize("args", [["http://127.0.0.1:1/"], ["ws://127.0.0.1:1/", "--timeout", "soon"],
                                  ["ws://127.0.0.1:1/", "--until", "("], ["ws://127.0.0.1:1/", "-H", "nocolon"],
                                  ["ws://127.0.0.1:1/", "--output", "xml"], [],
                                  ["ws://127.0.0.1:1/", "--max-message-size", "lots"]])
def test_usage_errors_exit_2(args):
    r = listen(*args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() != b""


def test_bad_cacert_exits_78():
    r = listen("wss://127.0.0.1:1/", "--cacert", "/nonexistent/ca.pem")
    assert r.returncode == 78


# ---------------------------------------------------------------------------------------- TLS

@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_cert(str(tmp_path_factory.mktemp("tls")))


def test_wss_with_cacert_verifies_and_receives(peers, cert):
    p = peers(WsPeer, sends_then_closes("secure hello"), ssl_context=server_tls_context(*cert))
    r = listen(p.url + "/ws", "--cacert", cert[0])
    assert (r.returncode, r.stdout) == (0, b"secure hello\n"), r.stderr
    port = p.url.rsplit(":", 1)[1]
    r = listen(f"wss://localhost:{port}/ws", "--cacert", cert[0])
    assert (r.returncode, r.stdout) == (0, b"secure hello\n"), r.stderr


def test_wss_untrusted_certificate_exits_76(peers, cert):
    p = peers(WsPeer, sends_then_closes("never"), ssl_context=server_tls_context(*cert))
    r = listen(p.url)
    assert r.returncode == 76, r.stderr
    assert b"TLS" in r.stderr and r.stdout == b""


def test_wss_insecure_accepts_any_certificate(peers, cert):
    p = peers(WsPeer, sends_then_closes("ok"), ssl_context=server_tls_context(*cert))
    r = listen(p.url, "--insecure")
    assert (r.returncode, r.stdout) == (0, b"ok\n"), r.stderr


def test_wss_to_a_plain_server_is_a_tls_failure_76(peers):
    p = peers(WsPeer, sends_then_closes("x"))
    r = listen(p.url.replace("ws://", "wss://"), "--insecure")
    assert r.returncode == 76, r.stderr


def test_server_ping_is_answered_with_its_payload(peers):
    async def script(ws, peer):
        pong = await ws.ping(b"are you there")
        await asyncio.wait_for(pong, DEADLINE)  # resolves only on a pong carrying the same payload
        await ws.send("pong seen")
        await peer.drain(ws)
    p = peers(WsPeer, script)
    r = listen(p.url, "--count", 1)
    assert (r.returncode, r.stdout) == (0, b"pong seen\n"), r.stderr


def test_bare_reconnect_before_the_url_has_no_limit(peers):
    async def script(ws, peer):
        if len(peer.requests) < 3:
            await ws.close(1012, "restarting")
        else:
            await ws.send("third connection")
            await peer.drain(ws)
    p = peers(WsPeer, script)
    r = listen("--reconnect", p.url, "--count", 1)
    assert (r.returncode, r.stdout) == (0, b"third connection\n"), r.stderr
    assert len(p.requests) == 3


def test_reconnect_with_a_bad_count_is_a_usage_error():
    r = listen("ws://127.0.0.1:1/", "--reconnect=many")
    assert r.returncode == 2


def pode_like_101(head: bytes, frames: bytes) -> bytes:
    """Pode's wire: a 101 with X-Pode-Signal-* headers, unmasked frames, then an empty close frame
    (no status code: 1005) and the TCP connection dropped at once (pode-wire.md, Appendix A)."""
    key = re.search(rb"(?im)^sec-websocket-key:\s*(\S+)", head).group(1).decode()
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n"
            b"X-Pode-Signal-Client-Id: 8b1d7c6e-0000-4000-8000-000000000001\r\nX-Pode-Signal-Name: Msg\r\n\r\n"
            + frames + b"\x88\x00")


def test_pode_style_empty_close_frame_ends_with_0(peers, tmp_path):
    p = peers(RawHttpPeer, lambda head: pode_like_101(head, b"\x81\x05hello\x81\x03bye"))
    r = listen(p.url + "/msg", "--id-file", tmp_path / "id")
    assert (r.returncode, r.stdout) == (0, b"hello\nbye\n"), r.stderr
    assert (tmp_path / "id").read_text() == "8b1d7c6e-0000-4000-8000-000000000001\n"
    assert b"X-Pode-Signal-Name: Msg" in r.stderr


def test_pode_style_close_before_count_exits_1(peers):
    p = peers(RawHttpPeer, lambda head: pode_like_101(head, b"\x81\x05hello"))
    r = listen(p.url + "/msg", "--count", 2, "-o", "jsonl")
    assert r.returncode == 1, r.stderr
    events = jsonl(r.stdout.decode())
    assert [e["event"] for e in events] == ["open", "message", "close", "error"]
    assert events[2]["code"] == 1005 and events[3]["exit_code"] == 1


def test_each_message_is_flushed_while_the_connection_stays_open(peers):
    async def script(ws, peer):
        await ws.send("first")
        await peer.drain(ws)
    p = peers(WsPeer, script)
    proc = subprocess.Popen([WSIG, "listen", p.url], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        assert read_line(proc) == "first"
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert p.wait_closed()[0] == 1000


def test_our_close_answered_pode_style_exits_0(peers):
    p = peers(PodeLikePeer)
    r = listen(p.url + "/msg", "--stdin", "--exit-on-eof", "--raw", input=b"one\n")
    assert r.returncode == 0, r.stderr
    assert p.frames.get(timeout=DEADLINE) == (0x1, b"one")
    assert p.frames.get(timeout=DEADLINE)[0] == 0x8


def test_echo_to_a_peer_that_never_reads_stays_bounded_and_interruptible(peers):
    """With --echo, a peer that floods 200 MiB and never reads makes wsig stop reading (backpressure)
    rather than queue it all; SIGTERM still ends it with 143."""
    async def script(ws, peer):
        ws.transport.pause_reading()  # never read what wsig echoes
        for _ in range(3200):
            await ws.send(b"z" * 65536)
        peer.flooded = True
        await asyncio.sleep(60)

    p = peers(WsPeer, script)
    p.flooded = False
    proc = subprocess.Popen([WSIG, "listen", p.url, "--echo", "--max-message-size", "1MiB"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + 5
        peak = 0
        while time.monotonic() < end and proc.poll() is None and not p.flooded:
            with open(f"/proc/{proc.pid}/status") as f:
                peak = max(peak, int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)))
            time.sleep(0.05)  # sampling memory while the flood is pushed at wsig (a 5 s window)
        with open(f"/proc/{proc.pid}/maps") as f:
            maps = f.read()
        # ASan's allocator keeps freed memory and TSan adds shadow memory: RSS says nothing there.
        sanitized = "libasan" in maps or "libtsan" in maps
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(DEADLINE) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not p.flooded, "the peer pushed all 200 MiB: wsig kept reading without writing"
    assert sanitized or peak < 120 * 1024, f"RSS peaked at {peak} KiB"
