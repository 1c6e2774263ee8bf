"""Who may connect to `wsig serve` and what a hostile client can make it log (issue 13): the cap on
local-route processes (--max-processes), same-origin exec= routes, the Host check against DNS
rebinding (--allow-host), unsigned client IDs that name a live connection (409), and a log that
cannot be flooded (per-connection rate limit, client strings cut, C1/bidi/invalid UTF-8 escaped,
commands' stderr through the logger)."""
import json
import os
import re
from urllib.parse import quote

import pytest

from helpers_serve import DEADLINE, RawWS, connections, http, new_key, push, raw_http, sync_self, wait_for

CAT = ["--route", "/cat=Cat,scope=local,exec=cat"]


def children(pid):
    """The pids whose parent is `pid` (from /proc/PID/stat)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            out.append(int(entry))
    return out


def upgrade_request(path, host="127.0.0.1", origin=None):
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {new_key()}", "Sec-WebSocket-Version: 13"]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def echoed(ws, text):
    """A line through the connection's cat and back: its process runs."""
    ws.send_text(text)
    return ws.recv() == text


# --- --max-processes ---------------------------------------------------------------------------------

def test_max_processes_refuses_with_503_and_frees_the_slot_once_the_process_is_reaped(serve):
    s = serve(*CAT, "--max-processes", "3")
    held = [RawWS.open(s.port, "/cat") for _ in range(3)]
    for i, ws in enumerate(held):
        assert echoed(ws, f"hello {i}")
    assert len(children(s.proc.pid)) == 3
    hs, body = raw_http(s.port, upgrade_request("/cat"))
    assert hs.status == 503
    assert body == b"too many local-route processes\n"
    assert hs.get("Retry-After") == "1"
    assert len(children(s.proc.pid)) == 3  # nothing was started for the refused upgrade

    held.pop().close()  # cat sees EOF and exits; the server reaps it and frees its slot

    def try_upgrade():
        ws = RawWS(s.port, "/cat")
        if ws.handshake.status == 101:
            return ws
        assert ws.handshake.status == 503, ws.handshake.raw
        ws.sock.close()
        return None

    ws = wait_for(try_upgrade, "an upgrade accepted once a process is reaped")
    assert echoed(ws, "after")
    assert all(echoed(w, "still") for w in held)
    assert s.stop() == 0
    assert "3 local-route processes are running (--max-processes)" in s.stderr_text()


def test_the_default_cap_is_64_processes(serve):
    s = serve(*CAT)
    opened, refused = [], 0
    for _ in range(70):
        ws = RawWS(s.port, "/cat")
        if ws.handshake.status == 101:
            opened.append(ws)
        else:
            assert ws.handshake.status == 503, ws.handshake.raw
            ws.sock.close()
            refused += 1
    assert (len(opened), refused) == (64, 6)
    wait_for(lambda: len(children(s.proc.pid)) == 64, "64 processes")
    assert all(echoed(ws, "x") for ws in opened)
    assert len(children(s.proc.pid)) == 64


def test_max_processes_0_means_no_limit(serve):
    s = serve(*CAT, "--max-processes", "0")
    opened = [RawWS.open(s.port, "/cat") for _ in range(66)]
    assert all(echoed(ws, "x") for ws in opened)
    assert len(children(s.proc.pid)) == 66


# --- Origin on exec= routes --------------------------------------------------------------------------

def test_an_exec_route_refuses_another_sites_origin(serve):
    s = serve(*CAT, "--route", "/chat=Chat")
    hs, body = raw_http(s.port, upgrade_request("/cat", origin="http://evil.example"))
    assert hs.status == 403
    assert b"cross-site upgrade refused" in body
    for origin in ("null", f"http://127.0.0.1:{s.port}.evil.example", f"https://127.0.0.1:{s.port}"):
        assert RawWS.attempt(s.port, "/cat", headers={"Origin": origin}).status == 403, origin
    assert children(s.proc.pid) == []
    # Its own origin (any case), no Origin at all, and a route without exec= (Pode: any origin).
    for origin in (f"http://127.0.0.1:{s.port}", f"HTTP://127.0.0.1:{s.port}"):
        assert echoed(RawWS.open(s.port, "/cat", headers={"Origin": origin}), "same-origin")
    assert echoed(RawWS.open(s.port, "/cat"), "no origin")
    RawWS.open(s.port, "/chat", headers={"Origin": "http://evil.example"}).close()
    # Default ports are the same origin: Host "localhost" and Origin "http://localhost:80".
    assert echoed(RawWS.open(s.port, "/cat", host="localhost", headers={"Origin": "http://localhost:80"}), "p")
    assert s.stop() == 0
    assert "is another site (exec= route)" in s.stderr_text()


def test_allow_origin_admits_a_cross_site_origin_on_an_exec_route(serve):
    s = serve(*CAT, "--allow-origin", "https://app.example")
    assert echoed(RawWS.open(s.port, "/cat", headers={"Origin": "https://app.example"}), "admitted")
    assert RawWS.attempt(s.port, "/cat", headers={"Origin": "https://evil.example"}).status == 403


# --- Host (DNS rebinding) ----------------------------------------------------------------------------

def test_a_loopback_server_answers_only_loopback_names_and_ip_literals(serve):
    s = serve("--route", "/chat=Chat")
    r = http(s.port, "GET", "/signal/connections", headers={"Host": "evil.example"})
    assert r.status == 421
    assert b"answers only loopback names and IP literals" in r.body
    for host in (f"evil.example:{s.port}", "localhost.evil.example", "127.0.0.1.evil.example", "127.1"):
        assert http(s.port, "GET", "/healthz", headers={"Host": host}).status == 421, host
    for host in (f"localhost:{s.port}", f"127.0.0.1:{s.port}", f"[::1]:{s.port}", "localhost", "LOCALHOST",
                 f"app.localhost:{s.port}", "10.1.2.3", "[2001:db8::1]:80"):
        r = http(s.port, "GET", "/signal/connections", headers={"Host": host})
        assert r.status == 200, (host, r)
    assert http(s.port, "GET", "/healthz", headers={"Host": "a:b:c"}).status == 400
    # An upgrade with a rebinding Host registers nothing.
    hs, body = raw_http(s.port, upgrade_request("/chat", host=f"evil.example:{s.port}"))
    assert hs.status == 421 and b"misdirected request" in body
    assert connections(s.port) == []
    # A push through a rebinding Host reaches no one.
    a = RawWS.open(s.port, "/chat")
    assert push(s.port, "x", name="Chat", headers={"Host": "evil.example"}).status == 421
    assert sync_self(a) == []


def test_allow_host_widens_the_names_answered(serve):
    s = serve("--route", "/chat=Chat", "--allow-host", "app.test", "--allow-host", "*.example.com")
    for host in (f"app.test:{s.port}", "APP.test", "a.example.com", f"b.c.example.com:{s.port}", "localhost"):
        assert http(s.port, "GET", "/signal/connections", headers={"Host": host}).status == 200, host
    for host in ("example.com", "app.test.evil", "evil.example"):
        assert http(s.port, "GET", "/healthz", headers={"Host": host}).status == 421, host
    RawWS.open(s.port, "/chat", host=f"app.test:{s.port}").close()


def test_the_allow_host_environment_variable(serve):
    s = serve("--route", "/chat=Chat", env={"WSIG_ALLOW_HOST": "app.test"})
    assert http(s.port, "GET", "/healthz", headers={"Host": "app.test"}).status == 200
    assert http(s.port, "GET", "/healthz", headers={"Host": "other.test"}).status == 421


def test_a_server_on_all_addresses_answers_any_host_until_allow_host_is_given(serve):
    s = serve("-a", "0.0.0.0", "--route", "/chat=Chat")
    assert http(s.port, "GET", "/healthz", headers={"Host": "anything.example"}).status == 200
    t = serve("-a", "0.0.0.0", "--route", "/chat=Chat", "--allow-host", "app.test")
    assert http(t.port, "GET", "/healthz", headers={"Host": "app.test"}).status == 200
    assert http(t.port, "GET", "/healthz", headers={"Host": "127.0.0.1"}).status == 200
    assert http(t.port, "GET", "/healthz", headers={"Host": "localhost"}).status == 421
    assert http(t.port, "GET", "/healthz", headers={"Host": "anything.example"}).status == 421


# --- client IDs ------------------------------------------------------------------------------------

@pytest.fixture
def secret_file(tmp_path):
    f = tmp_path / "secret"
    f.write_text("policy-secret\n")
    return f


def test_an_unsigned_client_id_in_use_is_409_and_its_holder_keeps_receiving(serve, secret_file):
    s = serve("--route", "/chat=Chat", "--accept-client-id", "--secret-file", secret_file)
    alice = RawWS.open(s.port, "/chat?clientId=alice")
    signed = alice.client_id
    assert signed.startswith("s:alice.")
    hs, body = raw_http(s.port, upgrade_request("/chat?clientId=alice"))
    assert hs.status == 409
    assert body == b"this clientId is in use: only the holder of its signed form may replace it\n"
    assert push(s.port, "still yours", client_id=signed, name="Chat").status == 200
    assert alice.recv() == "still yours"
    assert [c["clientId"] for c in connections(s.port)] == [signed]
    # A new unsigned ID is signed and accepted.
    bob = RawWS.open(s.port, "/chat?clientId=bob")
    assert bob.client_id.startswith("s:bob.") and bob.client_id != "bob"
    # The signed ID presented again replaces the connection (Pode's rule).
    again = RawWS.open(s.port, f"/chat?clientId={quote(signed, safe='')}")
    assert again.client_id == signed
    assert alice.expect_close() == (1000, "replaced")
    assert push(s.port, "to the new one", client_id=signed, name="Chat").status == 200
    assert again.recv() == "to the new one"
    # Once alice is gone, her unsigned ID is free again.
    again.close()
    wait_for(lambda: all(c["clientId"] != signed for c in connections(s.port)), "alice gone")
    RawWS.open(s.port, "/chat?clientId=alice").close()


# --- logs ------------------------------------------------------------------------------------------

def warning_count(log, needle):
    return sum(1 for line in log.splitlines() if needle in line)


def test_2000_bad_envelopes_make_a_bounded_log(serve):
    name = "/" + "N" * 15000  # --auto-upgrade: the Name is the path, repeated in every warning before
    s = serve("--auto-upgrade")
    a = RawWS.open(s.port, name)
    healthy = RawWS.open(s.port, "/other")
    for _ in range(2000):
        a.send_text("x")
    assert sync_self(a) == []  # every bad envelope was read (messages of one sender keep their order)
    healthy.send_env("still here", direct=True)
    assert healthy.recv() == "still here"
    a.close()
    assert s.stop() == 0
    log = s.stderr_text()
    assert len(log) < 64 * 1024, len(log)  # before: 30 MB
    written = warning_count(log, "dropped a message from")
    suppressed = sum(int(n) for n in re.findall(r": (\d+) more lines? suppressed", log))
    assert written + suppressed == 2000, (written, suppressed)
    assert 10 <= written < 2000
    assert "... (15001 bytes)" in log


def test_bidi_and_c1_controls_in_a_name_are_escaped(serve):
    s = serve("--route", "/chat=Chat", "--broadcast-level", "group")  # a refused broadcast logs its Name
    a = RawWS.open(s.port, "/chat")
    a.send_env("x", path="Chat\u202eevil\u0085next\u2066\u200f")
    assert sync_self(a) == []
    a.close()
    assert s.stop() == 0
    log = s.stderr_text()
    assert "Chat\\u202eevil\\u0085next\\u2066\\u200f" in log
    for ch in ("\u202e", "\u0085", "\u2066", "\u200f"):
        assert ch not in log


def test_the_json_log_escapes_bidi_and_c1_controls(serve):
    s = serve("--route", "/chat=Chat", "--broadcast-level", "group", "--log-format", "json")
    a = RawWS.open(s.port, "/chat")
    a.send_env("x", path="Chat\u202eevil\u0085")
    assert sync_self(a) == []
    a.close()
    assert s.stop() == 0
    raw = s.proc.stderr.read()
    assert "\u202e".encode() not in raw and "\u0085".encode() not in raw
    lines = [json.loads(line) for line in raw.decode().splitlines()]
    assert any("Chat\u202eevil\u0085" in line["msg"] for line in lines)  # the same string, escaped in JSON
    assert b"Chat\\u202eevil\\u0085" in raw


def test_invalid_utf8_and_c0_from_a_command_are_escaped(serve, tmp_path):
    script = tmp_path / "noisy.sh"
    script.write_bytes(b"#!/bin/sh\nprintf 'hook \\033[31mred\\342\\200\\256rev\\302\\205c1\\377end\\n' >&2\n"
                       b"printf 'hook stdout\\033]0;title\\007\\n'\n")
    script.chmod(0o755)
    local = tmp_path / "local.sh"
    local.write_bytes(b"#!/bin/sh\nprintf 'local \\033[2J\\342\\200\\256\\n' >&2\nexec cat\n")
    local.chmod(0o755)
    s = serve("--route", f"/cat=Cat,scope=local,exec={local}", "--route", "/chat=Chat", "--on-connect", str(script))
    a = RawWS.open(s.port, "/chat")
    b = RawWS.open(s.port, "/cat")
    assert echoed(b, "up")
    a.close()
    b.close()
    assert s.stop() == 0
    raw = s.proc.stderr.read()
    assert b"\xff" not in raw
    text = raw.decode()
    assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text and "\u0085" not in text
    assert f"hook '{script}': hook \\x1b[31mred\\u202erev\\u0085c1\\xffend" in text
    assert f"hook '{script}': hook stdout\\x1b]0;title\\x07" in text
    assert f"local route '{local}': local \\x1b[2J\\u202e" in text


def test_a_local_route_that_copies_its_client_to_stderr_cannot_flood_the_log(serve):
    s = serve("--route", "/echo2=E,scope=local,exec=while read -r l; do echo \"$l\" >&2; echo \"$l\"; done")
    a = RawWS.open(s.port, "/echo2")
    for i in range(500):
        a.send_text(f"line {i}")
    for i in range(500):
        assert a.recv() == f"line {i}"  # every line went through the command (and its stderr)
    a.close()
    assert s.stop() == 0
    log = s.stderr_text()
    written = warning_count(log, ": line ")
    suppressed = sum(int(n) for n in re.findall(r": (\d+) more lines? suppressed", log))
    assert written + suppressed == 500, (written, suppressed)
    assert written < 500
