#!/usr/bin/python3
"""Holds COUNT idle WebSocket connections for scripts/bench's file-limit scenario, and counts what they receive.

usage: hold.py ws://HOST:PORT/PATH COUNT [--source ADDR] [--match TOKEN] [--concurrency N] [--timeout S]

Opens COUNT connections from the source address ADDR (e.g. 127.0.0.3: loopback accepts any 127/8
address, and every source address has its own ephemeral ports), at most N handshakes at a time,
each a plain HTTP/1.1 upgrade that must be answered 101. Then, on stdout, one line per event:

  ready OPEN FAILED SECONDS     every connection was answered 101 (OPEN) or failed (FAILED), after SECONDS
  got OPEN ARRIVED READ         every open connection has received a data frame containing TOKEN; ARRIVED
                                is the kernel's receive timestamp of the last one (SO_TIMESTAMPNS, so not
                                this process's own delay in reading it), READ when it was read; both
                                CLOCK_REALTIME (time.time()), one clock for every process
  final GOT FRAMES CLOSED ARRIVED READ
                                on "stop" or EOF on stdin: connections that got TOKEN, data frames with
                                TOKEN, connections the server closed, the last arrival and read (0: none)

Pings are answered. The connections are closed when the process exits (after "final").
"""
import argparse
import base64
import errno
import os
import select
import socket
import struct
import sys
import time
from urllib.parse import urlsplit

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # the cmsg type is the same number
CMSG_TS = socket.CMSG_SPACE(16)
CONNECTING, UPGRADING, OPEN, CLOSED = range(4)


class Conn:
    __slots__ = ("sock", "state", "buf", "got")

    def __init__(self, sock):
        self.sock = sock
        self.state = CONNECTING
        self.buf = bytearray()
        self.got = False


def main():
    ap = argparse.ArgumentParser(description="hold idle WebSocket connections (scripts/bench)")
    ap.add_argument("url")
    ap.add_argument("count", type=int)
    ap.add_argument("--source", default="", help="source address to bind, e.g. 127.0.0.2 (default: the kernel's)")
    ap.add_argument("--match", default="", help="count data frames containing this text")
    ap.add_argument("--concurrency", type=int, default=256, help="handshakes in progress at most (default 256)")
    ap.add_argument("--timeout", type=float, default=60, help="seconds for all the handshakes (default 60)")
    a = ap.parse_args()
    u = urlsplit(a.url)
    if u.scheme != "ws" or not u.hostname:
        sys.exit("hold.py: the URL must be ws://HOST:PORT/PATH")
    dest = (u.hostname, u.port or 80)
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    head = f"GET {target} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    match = a.match.encode()

    ep = select.epoll()
    conns = {}  # fd -> Conn
    st = {"pending": 0, "started": 0, "opened": 0, "failed": 0, "got": 0, "frames": 0, "closed": 0,
          "closed_early": 0, "arrived": 0.0, "read": 0.0}
    t0 = time.monotonic()
    deadline = t0 + a.timeout

    def fail(c):
        fd = c.sock.fileno()
        ep.unregister(fd)
        del conns[fd]
        c.sock.close()
        st["pending"] -= 1
        st["failed"] += 1

    def start_one():
        st["started"] += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            if a.source:
                # The port is chosen at connect(), per destination, not at bind() from one shared range.
                s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((a.source, 0))
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.setblocking(False)
            err = s.connect_ex(dest)
        except OSError:
            err = -1
        if err not in (0, errno.EINPROGRESS):
            s.close()
            st["failed"] += 1
            return
        conns[s.fileno()] = Conn(s)
        ep.register(s.fileno(), select.EPOLLOUT)
        st["pending"] += 1

    def frames(c, arrived, now):
        """Parses the server's (unmasked) frames in c.buf; answers pings, counts data frames with the token."""
        b = c.buf
        i = 0
        while len(b) - i >= 2:
            op, n = b[i] & 0x0F, b[i + 1] & 0x7F
            h = 2
            if n == 126:
                if len(b) - i < 4:
                    break
                n, h = int.from_bytes(b[i + 2:i + 4], "big"), 4
            elif n == 127:
                if len(b) - i < 10:
                    break
                n, h = int.from_bytes(b[i + 2:i + 10], "big"), 10
            if len(b) - i < h + n:
                break
            payload = bytes(b[i + h:i + h + n])
            i += h + n
            if op in (0, 1, 2):
                if match and match in payload:
                    st["frames"] += 1
                    st["arrived"], st["read"] = max(st["arrived"], arrived), now
                    if not c.got:
                        c.got = True
                        st["got"] += 1
            elif op == 9 and len(payload) <= 125:  # ping -> pong, masked (as a client's frames are)
                mask = os.urandom(4)
                try:
                    c.sock.send(bytes([0x8A, 0x80 | len(payload)]) + mask +
                                bytes(x ^ mask[k % 4] for k, x in enumerate(payload)))
                except OSError:
                    pass
        del b[:i]

    def say(line):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    ready = got_reported = False
    while True:
        while not ready and st["pending"] < a.concurrency and st["started"] < a.count:
            start_one()
        if not ready and st["started"] >= a.count and st["pending"] == 0:
            ready = True
            say(f"ready {st['opened']} {st['failed']} {time.monotonic() - t0:.3f}")
            ep.register(sys.stdin.fileno(), select.EPOLLIN)
        if (ready and not got_reported and st["opened"] > 0
                and st["got"] == st["opened"] - st["closed_early"]):
            got_reported = True
            say(f"got {st['got']} {st['arrived']:.6f} {st['read']:.6f}")
        timeout = 1.0 if ready else max(0.0, min(1.0, deadline - time.monotonic()))
        events = ep.poll(timeout, 4096)
        now = time.time()
        for fd, _ in events:
            c = conns.get(fd)
            if c is None:  # stdin
                line = sys.stdin.readline()
                if not line or line.strip() == "stop":
                    say(f"final {st['got']} {st['frames']} {st['closed']} {st['arrived']:.6f} {st['read']:.6f}")
                    os._exit(0)
                continue
            if c.state == CONNECTING:
                if c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) != 0:
                    fail(c)
                    continue
                key = base64.b64encode(os.urandom(16)).decode()
                try:  # ~200 bytes into an empty socket buffer: all of it
                    c.sock.send(f"{head}Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
                except OSError:
                    fail(c)
                    continue
                c.state = UPGRADING
                ep.modify(fd, select.EPOLLIN)
                continue
            try:
                data, anc, _, _ = c.sock.recvmsg(65536, CMSG_TS)
            except BlockingIOError:
                continue
            except OSError:
                data, anc = b"", []
            if not data:
                if c.state == UPGRADING:
                    fail(c)
                else:
                    ep.unregister(fd)
                    c.state = CLOSED
                    st["closed"] += 1
                    st["closed_early"] += not c.got
                continue
            arrived = now
            for level, kind, raw in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= 16:
                    sec, nsec = struct.unpack("qq", raw[:16])
                    arrived = sec + nsec / 1e9
            c.buf += data
            if c.state == UPGRADING:
                end = c.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(c.buf) > 16384:
                        fail(c)
                    continue
                if not (c.buf.startswith(b"HTTP/1.1 101") or c.buf.startswith(b"HTTP/1.0 101")):
                    fail(c)
                    continue
                del c.buf[:end + 4]
                c.state = OPEN
                st["pending"] -= 1
                st["opened"] += 1
            frames(c, arrived, now)
        if not ready and time.monotonic() > deadline:  # the rest failed
            for c in [c for c in conns.values() if c.state in (CONNECTING, UPGRADING)]:
                fail(c)
            st["started"] = a.count


if __name__ == "__main__":
    main()
