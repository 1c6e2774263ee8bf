"""`wsig serve` from start to stop (SPEC.md section 3, lifecycle; section 7 and 8): the first stdout line
and the ready file hold the URL; SIGTERM/SIGINT stop accepting, close every client with 1001, drain
for at most --shutdown-timeout and exit 0; a second signal exits at once; --log-format json writes
one JSON object per stderr line; a client's close is answered with a status code."""
import json
import os
import re
import signal
import socket
import stat
import time

import pytest

from conftest import run_wsig
from helpers_serve import OP_CLOSE, Peer, RawWS, close_frame, connections, healthy, wait_for

ROUTES = ["--route", "/chat=Chat", "--route", "/news=News"]


def test_first_stdout_line_is_the_url(serve):
    s = serve(*ROUTES)
    m = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/?", s.url)
    assert m, s.url
    assert int(m.group(1)) != 0
    assert healthy(s.port)


def test_port_0_gives_each_server_its_own_port(serve):
    a, b = serve(*ROUTES), serve(*ROUTES)
    assert a.port != b.port
    assert healthy(a.port) and healthy(b.port)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_ready_file_holds_the_url(serve, tmp_path, how):
    ready = tmp_path / "ready"
    if how == "flag":
        s = serve(*ROUTES, "--ready-file", ready)
    else:
        s = serve(*ROUTES, env={"WSIG_READY_FILE": str(ready)})
    assert healthy(s.port)  # (so the fixture's SIGTERM comes after start-up; see the test below)
    text = wait_for(lambda: ready.exists() and ready.read_text(), "the ready file")
    assert text.strip() == s.url
    assert text in (s.url, s.url + "\n")


def test_the_ready_file_is_never_written_through_a_planted_symlink(serve, tmp_path):
    """A symlink planted at the old predictable temporary name (ready.tmp) and one at the ready file
    itself both point to a victim: the victim keeps its content, the ready file is a new regular file."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    ready = tmp_path / "ready"
    os.symlink(victim, tmp_path / "ready.tmp")
    os.symlink(victim, ready)
    s = serve(*ROUTES, "--ready-file", ready)
    assert healthy(s.port)  # the file is written before the URL line, which serve() has read
    assert victim.read_text() == "precious\n"
    assert not ready.is_symlink() and ready.read_text() == s.url + "\n"
    assert stat.S_IMODE(os.lstat(ready).st_mode) == 0o644 & ~current_umask()
    assert sorted(f.name for f in tmp_path.iterdir()) == ["ready", "ready.tmp", "victim"]


def test_a_ready_file_that_is_a_directory_exits_78_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "ready"
    target.mkdir()
    r = run_wsig("serve", "-p", "0", *ROUTES, "--ready-file", target)
    assert r.returncode == 78, (r.returncode, r.stderr)
    assert r.stdout == ""
    assert re.search(r"--ready-file: cannot write '.*ready': rename of '.*ready\.tmp-[0-9a-f]{16}' over it: "
                     r"Is a directory", r.stderr), r.stderr
    assert [f.name for f in tmp_path.iterdir()] == ["ready"] and list(target.iterdir()) == []


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_closes_every_client_with_1001_and_exits_0(serve, sig):
    s = serve(*ROUTES)
    peers = [Peer(f"{s.ws_url}/chat"), Peer(f"{s.ws_url}/news")]
    raws = [RawWS.open(s.port, "/chat"), RawWS.open(s.port, "/news?group=G")]
    assert len(connections(s.port)) == 4
    start = time.monotonic()
    s.proc.send_signal(sig)
    for p in peers:
        assert p.expect_close()[0] == 1001
    for w in raws:
        assert w.expect_close()[0] == 1001  # and it answers the close
        w.expect_eof()
        w.sock.close()
    assert s.proc.wait(timeout=10) == 0
    assert time.monotonic() - start < 5 + 1, "exceeded the default 5s shutdown timeout"


def test_a_signal_right_after_the_url_line_exits_0_promptly(serve):
    # the URL line says "ready": a signal that follows it at once must be a graceful stop too
    for _ in range(5):
        s = serve(*ROUTES)
        start = time.monotonic()
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(timeout=10) == 0
        assert time.monotonic() - start < 2


def test_without_clients_a_signal_exits_0_promptly(serve):
    s = serve(*ROUTES)
    assert healthy(s.port)
    start = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=10) == 0
    assert time.monotonic() - start < 2


def test_shutdown_timeout_bounds_the_wait_for_a_client_that_never_answers(serve):
    s = serve(*ROUTES, "--shutdown-timeout", "1s")
    mute = RawWS.open(s.port, "/chat")  # reads nothing, answers nothing
    start = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=10) == 0
    elapsed = time.monotonic() - start
    assert elapsed < 1 + 2, f"took {elapsed:.1f}s with --shutdown-timeout 1s"
    f = mute.recv_frame(5)  # what the server sent is still in our socket
    assert f.opcode == OP_CLOSE and f.close_code()[0] == 1001, f
    mute.sock.close()


def serves_a_new_request(port):
    """True when a new connection gets an HTTP answer (refused, reset, closed or silent: False)."""
    try:
        c = socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError:
        return False
    try:
        c.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        return c.recv(100).startswith(b"HTTP/")
    except OSError:
        return False
    finally:
        c.close()


def test_stop_accepting_then_a_second_signal_exits_at_once(serve):
    s = serve(*ROUTES, "--shutdown-timeout", "60s")
    watcher = RawWS.open(s.port, "/chat")
    s.proc.send_signal(signal.SIGTERM)
    f = watcher.recv_frame()  # the 1001 close, deliberately not answered: the server keeps draining
    assert f.opcode == OP_CLOSE and f.close_code()[0] == 1001, f
    assert not serves_a_new_request(s.port), "still accepting while draining"
    assert s.proc.poll() is None, "exited before its shutdown timeout with a client still open"
    start = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=10) == 0
    assert time.monotonic() - start < 2
    watcher.sock.close()


def test_a_client_close_is_answered_with_a_status_code(serve):
    s = serve(*ROUTES)
    a = RawWS.open(s.port, "/chat")
    a.send_raw(close_frame(1000, "bye"))
    a.closed = True
    f = a.recv_frame()
    assert f.opcode == OP_CLOSE
    assert f.close_code()[0] == 1000, f
    a.expect_eof()
    a.sock.close()
    wait_for(lambda: connections(s.port) == [], "the closed client to be forgotten")


def test_log_format_json_writes_one_object_per_stderr_line(serve):
    s = serve(*ROUTES, "--log-format", "json", "-v")
    a = RawWS.open(s.port, "/chat")
    a.send_text("{not json")  # a warning
    a.send_env("ok", direct=True)
    assert a.recv() == "ok"
    a.close()
    assert s.stop() == 0
    lines = [l for l in s.stderr_text().splitlines() if l.strip()]
    assert lines, "no log lines at all with -v"
    for line in lines:
        obj = json.loads(line)
        assert isinstance(obj, dict), line


def test_quiet_logs_nothing_for_normal_traffic(serve):
    s = serve(*ROUTES, "-q")
    a = RawWS.open(s.port, "/chat")
    a.send_env("ok", direct=True)
    assert a.recv() == "ok"
    a.close()
    assert s.stop() == 0
    assert s.stderr_text().strip() == ""


def test_env_options_are_read(serve):
    s = serve(*ROUTES, env={"WSIG_MAX_MESSAGE_SIZE": "1KiB"})
    a = RawWS.open(s.port, "/chat")
    a.send_env("x" * 2000, direct=True)
    assert a.expect_close()[0] == 1009


def test_a_signal_during_a_flood_with_many_clients_still_exits_0(serve):
    s = serve(*ROUTES)
    clients = [RawWS.open(s.port, "/news") for _ in range(100)]
    src = RawWS.open(s.port, "/chat")
    for i in range(200):
        src.send_env("x" * 1000, path="News")
    s.proc.send_signal(signal.SIGTERM)
    for w in clients + [src]:
        assert w.expect_close()[0] == 1001
        w.expect_eof()
        w.sock.close()
    assert s.proc.wait(timeout=10) == 0
