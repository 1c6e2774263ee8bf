"""End-to-end tests of `wsig bench` against peers nobody here wrote: Debian's python3-websockets 10.4
servers (echo, delayed echo, a Pode-style broadcaster, a server refusing the upgrade), and
`wsig serve` when the tree has it.

Each peer runs on its own asyncio loop in a background thread, on 127.0.0.1 port 0. Every wait has a
deadline; runs are short (--duration 1-2s) so the file stays well under a minute.
"""
import asyncio
import http
import json
import signal
import socket
import subprocess
import threading
import time

import pytest
import websockets
import websockets.exceptions

import rawws
from conftest import WSIG, run_wsig

DEADLINE = 10.0


class PyServer:
    """A websockets server on a background loop; .port, .url, .stop(). The handler is
    `async def handler(server, ws, path)`; `process_request` is websockets' hook."""

    def __init__(self, handler, process_request=None):
        self.loop = asyncio.new_event_loop()
        self.subscribers = set()
        self.messages = 0
        self.seen = threading.Event()  # set once 50 messages arrived
        self.ready = threading.Event()
        self.handler = handler
        self.process_request = process_request
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(DEADLINE), "python peer did not start"
        self.url = f"ws://127.0.0.1:{self.port}"

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def handle(ws, path):
            try:
                await self.handler(self, ws, path)
            except websockets.exceptions.ConnectionClosed:
                pass

        async def start():
            self.server = await websockets.serve(handle, "127.0.0.1", 0, process_request=self.process_request,
                                                 max_size=None, ping_interval=None)
            self.port = self.server.sockets[0].getsockname()[1]

        self.loop.run_until_complete(start())
        self.ready.set()
        self.loop.run_forever()

    def stop(self):
        async def close():
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self.loop).result(DEADLINE)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(DEADLINE)


async def echo_handler(server, ws, path):
    async for message in ws:
        server.messages += 1
        if server.messages >= 50:
            server.seen.set()
        await ws.send(message)


def delayed_echo(delay):
    async def handler(server, ws, path):
        async for message in ws:
            await asyncio.sleep(delay)
            await ws.send(message)
    return handler


async def broadcaster(server, ws, path):
    """Pode's routing in miniature: /sub* are subscribers of Name 'Sub'; a message on /pub is an
    envelope {"message":…,"path":Name} whose message goes to every subscriber (raw when a string)."""
    if path.startswith("/sub"):
        server.subscribers.add(ws)
        try:
            await ws.wait_closed()
        finally:
            server.subscribers.discard(ws)
        return
    async for message in ws:
        envelope = json.loads(message)
        if envelope.get("path") == "Sub":
            payload = envelope["message"]
            websockets.broadcast(server.subscribers, payload if isinstance(payload, str) else json.dumps(payload))


@pytest.fixture
def peer():
    servers = []

    def start(handler, process_request=None):
        s = PyServer(handler, process_request)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def bench(*args, timeout=30):
    return run_wsig("bench", *args, timeout=timeout)


def summary(proc):
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout)


def free_port():
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------
# echo

def test_echo_against_python_websockets(peer):
    server = peer(echo_handler)
    p = bench(f"{server.url}/echo", "-c", 4, "--duration", "1s", "--warmup", "200ms", "--output", "json")
    assert p.returncode == 0, p.stderr
    s = summary(p)
    assert s["mode"] == "echo"
    assert s["connections"] == 4 and s["connected"] == 4 and s["open_at_end"] == 4
    assert s["messages"] > 0 and s["rate"] > 0
    assert s["errors"] == 0, s
    assert 0.9 <= s["duration_s"] <= 1.1
    lat = s["latency_us"]
    for key in ("p50", "p90", "p99", "p99_9", "max"):
        assert key in lat
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p99_9"] <= lat["max"]
    assert s["latency_samples"] == s["messages"]


def test_echo_over_several_threads(peer):
    server = peer(echo_handler)
    p = bench(f"{server.url}/", "-c", 7, "--threads", 3, "--duration", "1s", "--warmup", "0", "--output", "json")
    assert p.returncode == 0, p.stderr
    s = summary(p)
    assert s["threads"] == 3 and s["connected"] == 7 and s["open_at_end"] == 7, s
    assert s["messages"] > 0 and s["errors"] == 0, s


def test_echo_text_table_by_default(peer):
    server = peer(echo_handler)
    p = bench(f"{server.url}/", "-c", 2, "--duration", "1s", "--warmup", "0")
    assert p.returncode == 0, p.stderr
    assert "round trips" in p.stdout and "p99.9" in p.stdout, p.stdout
    assert p.stderr == "", "no progress line when stderr is not a terminal"


@pytest.mark.parametrize("size,extra", [("5", []), ("200", ["--binary"]), ("70000", []), ("64", ["--in-flight", "8"])])
def test_echo_sizes_lengths_binary_pipelining(peer, size, extra):
    """Short payloads (no room for a timestamp), 16-bit and 64-bit frame lengths, binary, pipelining."""
    server = peer(echo_handler)
    p = bench(f"{server.url}/", "-c", 2, "--size", size, "--duration", "1s", "--warmup", "0", "--output", "json",
              *extra)
    assert p.returncode == 0, p.stderr
    s = summary(p)
    assert s["messages"] > 0 and s["errors"] == 0, s


def test_echo_fragmented_replies_and_pings(peer):
    """The server answers each message in fragments and pings: the client reassembles and pongs."""
    async def handler(server, ws, path):
        async for message in ws:
            await ws.ping()
            half = len(message) // 2
            await ws.send([message[:half], message[half:]])  # a fragmented message (continuation frame)

    server = peer(handler)
    p = bench(f"{server.url}/", "-c", 2, "--size", "100", "--duration", "1s", "--warmup", "0", "--output", "json")
    assert p.returncode == 0, p.stderr
    s = summary(p)
    assert s["messages"] > 0 and s["errors"] == 0, s


def test_percentiles_against_a_known_delay(peer):
    """Every echo is delayed by 20 ms: the round-trip percentiles must say so."""
    server = peer(delayed_echo(0.020))
    p = bench(f"{server.url}/", "-c", 4, "--duration", "2s", "--warmup", "200ms", "--output", "json")
    assert p.returncode == 0, p.stderr
    s = summary(p)
    lat = s["latency_us"]
    assert 20_000 <= lat["p50"] <= 40_000, lat
    assert 20_000 <= lat["min"], lat
    assert lat["p90"] <= 60_000, lat
    # 4 connections, 1 in flight, ~20 ms each: about 200 round trips/s.
    assert 100 <= s["rate"] <= 200, s


# ---------------------------------------------------------------------------------------------
# thresholds

def test_threshold_pass_exits_0(peer):
    server = peer(delayed_echo(0.020))
    p = bench(f"{server.url}/", "-c", 2, "--duration", "1s", "--warmup", "0", "--threshold", "p50<500ms",
              "--threshold", "p(99)<=2s", "--threshold", "rate>10", "--threshold", "errors==0", "--output", "json")
    assert p.returncode == 0, p.stderr
    checks = summary(p)["thresholds"]
    assert [c["ok"] for c in checks] == [True, True, True, True], checks


def test_threshold_fail_exits_99(peer):
    server = peer(delayed_echo(0.020))
    p = bench(f"{server.url}/", "-c", 2, "--duration", "1s", "--warmup", "0", "--threshold", "p50<5ms",
              "--threshold", "rate>10")
    assert p.returncode == 99, (p.returncode, p.stderr)
    assert "FAILED" in p.stdout and "p50<5ms" in p.stderr, (p.stdout, p.stderr)


# ---------------------------------------------------------------------------------------------
# failures and usage

def test_refused_port_exits_69():
    p = bench(f"ws://127.0.0.1:{free_port()}/", "--duration", "1s")
    assert p.returncode == 69, (p.returncode, p.stderr)
    assert "refused" in p.stderr, p.stderr
    assert p.stdout == ""


def test_upgrade_not_101_exits_76(peer):
    async def refuse(path, headers):
        return http.HTTPStatus.NOT_FOUND, [("Content-Type", "text/plain")], b"no such route\n"

    server = peer(echo_handler, process_request=refuse)
    p = bench(f"{server.url}/nope", "-c", 3, "--duration", "1s")
    assert p.returncode == 76, (p.returncode, p.stderr)
    assert "404" in p.stderr and "101" in p.stderr, p.stderr


def test_bad_accept_key_exits_76():
    """A server that answers 101 with a wrong Sec-WebSocket-Accept."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    port = srv.getsockname()[1]

    def serve_once():
        srv.settimeout(DEADLINE)
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(DEADLINE)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n")
            try:
                conn.recv(4096)
            except OSError:
                pass

    t = threading.Thread(target=serve_once, daemon=True)
    t.start()
    try:
        p = bench(f"ws://127.0.0.1:{port}/", "-c", 1, "--duration", "1s")
    finally:
        srv.close()
        t.join(DEADLINE)
    assert p.returncode == 76, (p.returncode, p.stderr)
    assert "Sec-WebSocket-Accept" in p.stderr, p.stderr


@pytest.mark.parametrize("args", [
    ["--mode", "nope"],
    ["--duration", "10"],
    ["--size", "12XB"],
    ["--threshold", "p99<<5ms"],
    ["--threshold", "bogus<5"],
    ["--threshold", "rate>5ms"],
    ["-c", "0"],
    ["--threads", "0"],
    ["--unknown-flag"],
    ["--name", "Sub"],  # fan-out only
    ["--mode", "fanout", "--via", "push"],  # push needs --name
    ["--mode", "fanout", "--size", "8"],
    ["-H", "no colon"],
])
def test_bad_flags_exit_2(args):
    p = bench("ws://127.0.0.1:9/", *args)
    assert p.returncode == 2, (args, p.returncode, p.stderr)
    assert p.stderr.strip(), args


def test_wss_is_refused_clearly():
    p = bench("wss://127.0.0.1:9/")
    assert p.returncode == 2, p.stderr
    assert "wss://" in p.stderr and "not supported" in p.stderr, p.stderr


def test_help_lists_examples():
    p = run_wsig("bench", "--help")
    assert p.returncode == 0
    assert "Examples:" in p.stdout and "--threshold" in p.stdout and "--mode" in p.stdout


# ---------------------------------------------------------------------------------------------
# fan-out, connect, idle

@pytest.mark.parametrize("threads", [1, 3])
def test_fanout_against_a_python_broadcaster(peer, threads):
    server = peer(broadcaster)
    p = bench(server.url, "--mode", "fanout", "--sub-path", "/sub", "--pub-path", "/pub", "--name", "Sub",
              "-c", 20, "--in-flight", 4, "--duration", "1s", "--warmup", "200ms", "--output", "json",
              "--threads", threads)
    assert p.returncode == 0, p.stderr
    s = summary(p)
    assert s["mode"] == "fanout" and s["connected"] == 20 and s["threads"] == threads, s
    assert s["broadcasts"] > 0 and s["lost"] == 0 and s["errors"] == 0, s
    # Every broadcast counted reached all 20 subscribers (up to the ones straddling the window edges).
    assert abs(s["messages"] - 20 * s["broadcasts"]) <= 20 * 8, s
    assert s["latency_samples"] == s["broadcasts"]
    assert s["latency_us"]["p50"] > 0


def test_fanout_latency_is_publish_to_last_receipt(peer):
    """The broadcaster delays each broadcast by 20 ms: publish -> last receipt is at least that."""
    async def slow_broadcaster(server, ws, path):
        if path.startswith("/sub"):
            await broadcaster(server, ws, path)
            return
        async for message in ws:
            await asyncio.sleep(0.020)
            websockets.broadcast(server.subscribers, json.loads(message)["message"])

    server = peer(slow_broadcaster)
    p = bench(server.url, "--mode", "fanout", "--sub-path", "/sub", "--pub-path", "/pub", "--name", "Sub",
              "-c", 5, "--in-flight", 1, "--duration", "1s", "--warmup", "0", "--output", "json")
    assert p.returncode == 0, p.stderr
    lat = summary(p)["latency_us"]
    assert 20_000 <= lat["p50"] <= 40_000, lat


def test_connect_mode(peer):
    server = peer(echo_handler)
    p = bench(f"{server.url}/", "--mode", "connect", "-c", 2, "--duration", "1s", "--warmup", "0",
              "--output", "json")
    assert p.returncode == 0, p.stderr
    s = summary(p)
    assert s["mode"] == "connect" and s["messages"] > 5 and s["rate"] > 5, s
    assert s["latency_samples"] == s["messages"] and s["latency_us"]["p50"] > 0, s


def test_idle_mode_holds_connections(peer):
    server = peer(echo_handler)
    p = bench(f"{server.url}/", "--mode", "idle", "-c", 200, "--duration", "1s", "--output", "json",
              "--threshold", "open>=200")
    assert p.returncode == 0, p.stderr
    s = summary(p)
    assert s["connected"] == 200 and s["open_at_end"] == 200 and s["errors"] == 0, s


# ---------------------------------------------------------------------------------------------
# against wsig serve (when the tree has it)

class HugeChunkPushServer:
    """A loopback server for `--via push`: it upgrades every GET (the subscribers) and answers every
    POST (the pushes) 200 with Transfer-Encoding: chunked and the chunk size `chunk_size`, followed by
    a few bytes of chunk data; then it holds each connection open until the client closes it."""

    def __init__(self, chunk_size):
        self.chunk_size = chunk_size
        self.pushes = 0
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.port = self.lsock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                sock, _ = self.lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        with sock:
            try:
                status, headers, _ = rawws._read_head(sock, time.monotonic() + DEADLINE)
                if status.startswith("GET "):
                    key = headers["sec-websocket-key"].encode()
                    sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                 b"Sec-WebSocket-Accept: " + rawws.accept_key(key) + b"\r\n\r\n")
                else:
                    self.pushes += 1
                    sock.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
                                 self.chunk_size.encode() + b"\r\n" + b"0" * 64 + b"\r\n")
                sock.settimeout(DEADLINE * 3)
                while sock.recv(65536):
                    pass
            except (OSError, rawws.ConnectionEnded, TimeoutError):
                pass

    def stop(self):
        self.lsock.close()


# Before the bound, ffffffffffffffec (2^64 - 20) took the parser back to the start of its own line: it
# spun for ever on one core and bench never ended; ffffffffffffffff waited for ever for the chunk, the
# push connection was lost in silence and bench exited 0 after the run.
@pytest.mark.parametrize("chunk_size", ["ffffffffffffffff", "ffffffffffffffec", "10000000000000000"])
def test_a_push_answer_with_a_chunk_size_near_2_64_exits_76_within_the_deadline(chunk_size):
    server = HugeChunkPushServer(chunk_size)
    start = time.monotonic()
    try:
        p = bench(f"ws://127.0.0.1:{server.port}/sub", "--mode", "fanout", "--via", "push", "--name", "Sub",
                  "-c", 1, "--in-flight", 1, "--duration", "2s", "--warmup", "0", timeout=DEADLINE)
    finally:
        server.stop()
    elapsed = time.monotonic() - start
    assert p.returncode == 76, (p.returncode, p.stderr)
    assert "the push response has a bad chunked body" in p.stderr, p.stderr
    assert server.pushes >= 1
    assert elapsed < 2 + 3, f"bench took {elapsed:.1f}s for a 2s run"


def serve_available():
    p = run_wsig("serve", "--help")
    return p.returncode == 0 and "--route" in p.stdout


@pytest.mark.skipif(not serve_available(), reason="wsig serve is not built in this tree yet")
def test_echo_and_fanout_against_wsig_serve(serve):
    server = serve("--route", "/sub=Sub", "--route", "/pub=Pub", "--echo", "/echo")
    p = bench(f"{server.ws_url}/echo", "-c", 4, "--duration", "1s", "--warmup", "0", "--output", "json")
    assert p.returncode == 0, p.stderr
    assert summary(p)["messages"] > 0
    p = bench(server.ws_url, "--mode", "fanout", "--sub-path", "/sub", "--pub-path", "/pub", "--name", "Sub",
              "-c", 50, "--in-flight", 4, "--duration", "1s", "--warmup", "0", "--output", "json")
    assert p.returncode == 0, p.stderr
    s = summary(p)
    assert s["broadcasts"] > 0 and s["lost"] == 0 and s["errors"] == 0, s
    p = bench(f"{server.ws_url}/sub", "--mode", "fanout", "--via", "push", "--name", "Sub",
              "-c", 50, "--in-flight", 4, "--duration", "1s", "--warmup", "0", "--output", "json")
    assert p.returncode == 0, p.stderr
    s = summary(p)
    assert s["broadcasts"] > 0 and s["lost"] == 0 and s["errors"] == 0, s


def test_sigint_prints_the_summary_and_exits_130(peer):
    server = peer(echo_handler)
    proc = subprocess.Popen([WSIG, "bench", f"{server.url}/", "-c", "2", "--duration", "30s", "--warmup", "0",
                             "--output", "json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.seen.wait(DEADLINE), "no traffic reached the server"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (proc.returncode, err)
    s = json.loads(out)
    assert s["interrupted"] is True and s["messages"] > 0, s
