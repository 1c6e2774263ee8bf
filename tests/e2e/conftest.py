"""Shared fixtures of the end-to-end tests: the real wsig binary, started on 127.0.0.1 port 0.

Every wait here is on an event (a line on stdout, a file appearing, a process ending) with a
deadline; nothing sleeps and hopes.
"""
import os
import pathlib
import select
import signal
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
WSIG = os.environ.get("WSIG_BIN", str(ROOT / "build" / "debug" / "wsig"))
DEADLINE = 15.0  # seconds for any single wait; generous for the sanitizer build


def run_wsig(*args, input=None, env=None, timeout=DEADLINE, cwd=None):
    """Runs wsig to completion; returns CompletedProcess with text stdout/stderr."""
    full_env = dict(os.environ)
    full_env.pop("WSIG_SECRET", None)
    if env:
        full_env.update(env)
    return subprocess.run([WSIG, *map(str, args)], input=input, capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd)


def read_line(proc, timeout=DEADLINE):
    """One line of proc.stdout within the deadline (the process was started with text=True, bufsize=1)."""
    end = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    buf = b""
    while True:
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no line from wsig within {timeout}s (so far: {buf!r})")
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 1)
        if not chunk:
            raise EOFError(f"wsig closed stdout (so far: {buf!r}); exit={proc.poll()}")
        if chunk == b"\n":
            return buf.decode()
        buf += chunk


class Server:
    """A running `wsig serve -p 0 ...`; .url is the first stdout line (http://127.0.0.1:PORT)."""

    def __init__(self, *args, env=None, tmp_path=None):
        full_env = dict(os.environ)
        full_env.pop("WSIG_SECRET", None)
        if env:
            full_env.update(env)
        self.args = ["serve", "-p", "0", *map(str, args)]
        self.proc = subprocess.Popen([WSIG, *self.args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=full_env)
        try:
            self.url = read_line(self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"wsig serve did not start: {self.stderr_text()}")
        assert self.url.startswith(("http://", "https://")), self.url
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])
        self.ws_url = self.url.replace("http", "ws", 1)

    def stderr_text(self):
        if self.proc.poll() is None:
            return "(still running)"
        return self.proc.stderr.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout=DEADLINE):
        """Signals the server and returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture
def serve(tmp_path):
    """serve(*args) starts a server; every server is stopped at the end of the test, and a server
    that crashed or failed to stop (sanitizer report, non-zero exit) fails the test."""
    servers = []

    def start(*args, env=None):
        s = Server(*args, env=env, tmp_path=tmp_path)
        servers.append(s)
        return s

    yield start
    for s in servers:
        was_running = s.proc.poll() is None
        code = s.stop()
        if was_running:
            assert code == 0, f"wsig serve exited {code} on SIGTERM: {s.stderr_text()}"


@pytest.fixture
def peers():
    """peers(cls, *args) starts a test peer (tests/e2e/peers.py); every one is stopped after the test."""
    made = []

    def make(cls, *args, **kwargs):
        p = cls(*args, **kwargs)
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()
