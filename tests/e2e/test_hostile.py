"""Hostile clients (issue 13): each attack on a running `wsig serve`, and after it the server is still
up, a healthy client on the same Name has every message in order, and memory stayed bounded.

The attacks of other parts of the server have their tests beside the features they attack (static
files, TLS, Host and Origin checks, logs); these are the ones on the message path.
"""
import json
import time

import pytest

from conftest import WSIG, run_wsig
from helpers_serve import (OP_TEXT, RawWS, WSClosed, envelope, frame, healthy, http, metric_value, rss_kib,
                           sanitized_build, sync_self, sync_to, text_frame, wait_for)

SANITIZED = sanitized_build(WSIG)


def nested(depth, inner=""):
    return "[" * depth + inner + "]" * depth


def metrics(port):
    return http(port, "GET", "/metrics").text


def how_it_ends(ws, timeout, messages=None):
    """Reads until the server closes (its (code, reason)) or `timeout` passes with nothing ("open");
    the messages read on the way are appended to `messages`."""
    try:
        while True:
            m = ws.recv(timeout)
            if messages is not None:
                messages.append(m)
    except WSClosed as e:
        return (e.code, e.reason)
    except TimeoutError:
        return "open"


# --- one message, nested deep ----------------------------------------------------------------

@pytest.mark.parametrize("depth", [100_000, 500_000])
def test_a_message_nested_deeper_than_the_limit_is_dropped_and_the_server_stays_up(serve, depth):
    # The demo as a user starts it (no flags, no key): before, 100,000 levels (200 KB) ended the
    # process with SIGSEGV, the recursive copy of the parsed value overflowing the stack. 500,000
    # levels is what the 1 MiB default message limit allows.
    s = serve()
    watcher = RawWS.open(s.port, "/msg")
    attacker = RawWS.open(s.port, "/msg")
    before = rss_kib(s.proc.pid)
    attacker.send_env("before")
    attacker.send_text(envelope(None).replace("null", nested(depth)))
    attacker.send_env(nested(63 - 1))  # a string: sent raw
    attacker.send_text('{"message":' + nested(63) + "}")  # the envelope is level 1: 64 in all, allowed
    attacker.send_env("after")
    for ws in (watcher, attacker):
        assert ws.recv() == "before"
        assert ws.recv() == nested(62)
        assert ws.recv() == nested(63)
        assert ws.recv() == "after"  # the deep one was dropped, and only it
    assert healthy(s.port)
    if not SANITIZED:
        growth_mib = (rss_kib(s.proc.pid) - before) / 1024
        assert growth_mib < 32, f"RSS grew by {growth_mib:.1f} MiB for one {depth}-deep message"
    watcher.close()
    attacker.close()
    assert s.stop() == 0
    assert "envelope: JSON nested deeper than 64 levels" in s.stderr_text()


def test_max_json_depth_sets_the_limit(serve):
    s = serve("--route", "/chat=Chat", "--max-json-depth", "4")
    a = RawWS.open(s.port, "/chat")
    a.send_text('{"message":[[["x"]]],"direct":true}')  # 4 levels
    a.send_text('{"message":[[[["x"]]]],"direct":true}')  # 5
    a.send_env("after", direct=True)
    assert a.recv() == '[[["x"]]]'
    assert a.recv() == "after"
    a.close()


@pytest.mark.parametrize("value", ["0", "x"])
def test_max_json_depth_must_be_a_positive_number(value):
    r = run_wsig("serve", "-p", "0", "--max-json-depth", value)
    assert r.returncode == 2, r.stderr


# --- envelopes wide ----------------------------------------------------------------------------

def test_an_envelope_with_200000_groups_is_dropped_and_256_still_work(serve):
    # Before: 200 listeners and an envelope naming 200,000 groups took about 0.9 s of loop time per
    # message, comparing every connection with every group under the registry lock.
    s = serve("--route", "/chat=Chat", "--max-message-size", "8MiB")  # room for 200,000 entries
    listeners = [RawWS.open(s.port, f"/chat?group=g{i}") for i in range(20)]
    sender = RawWS.open(s.port, "/chat?group=src")
    huge = [f"g{i}" for i in range(200_000)]
    ids = [f"id{i}" for i in range(200_000)]
    sender.send_env("too many groups", path="Chat", group=huge)
    sender.send_env("too many ids", path="Chat", clientId=ids)
    # 256 groups, among them every listener's in another case: each listener gets it once
    some = [f"G{i}" for i in range(256)]
    sender.send_env("to 256 groups", path="Chat", group=some)
    for ws in listeners:
        assert ws.recv() == "to 256 groups"
        assert sync_to(sender, ws) == []  # nothing else reached it, nothing twice
    for ws in listeners:
        ws.close()
    sender.close()
    assert s.stop() == 0
    err = s.stderr_text()
    assert "envelope: 'group' holds 200000 entries, more than 256" in err
    assert "envelope: 'clientId' holds 200000 entries, more than 256" in err


# --- bursts for a client that reads ------------------------------------------------------------

@pytest.mark.parametrize("policy", ["close", "drop"])
@pytest.mark.parametrize("send_queue", ["64KiB", "16KiB"])
@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_burst_for_a_client_that_reads_is_never_held_against_it(serve, policy, send_queue, threads):
    # Before: 64 envelopes of 1 KiB sent back to back were all queued for the subscriber in one loop
    # round before any write, so a --send-queue of 64 KiB was crossed by a client that reads
    # everything: under drop it lost messages, under close it was closed with 1008 "too slow".
    s = serve("--route", "/chat=Chat", "--send-queue", send_queue, "--slow-client", policy, "--threads", threads)
    sub = RawWS.open(s.port, "/chat")
    pub = RawWS.open(s.port, "/chat")
    n = 64
    pub.send_raw(b"".join(
        text_frame(envelope(f"{i:04d}:" + "x" * 1019, path="Chat", clientId=sub.client_id)) for i in range(n)))
    got = [sub.recv() for _ in range(n)]
    assert [int(m[:4]) for m in got] == list(range(n))
    assert all(len(m) == 1024 for m in got)
    assert sync_to(pub, sub) == []
    m = metrics(s.port)
    assert metric_value(m, "wsig_messages_dropped_total") == 0
    assert metric_value(m, "wsig_closes_total", {"code": "1008"}) is None
    sub.close()
    pub.close()


# --- the memory budget -------------------------------------------------------------------------

CHUNK = 16 * 1024


def test_past_the_memory_budget_the_clients_furthest_behind_go_first(serve):
    # Three readers that never read could each hold a 4 MiB send queue: 12 MiB against a budget of
    # 6 MiB. The ones furthest behind are closed; the reader that keeps up gets every message.
    s = serve("--route", "/flood=Flood", "--route", "/src=Src", "--send-queue", "4MiB", "--max-queued-total", "6MiB")
    slows = [RawWS.open(s.port, "/flood", rcvbuf=4096) for _ in range(3)]
    fast = RawWS.open(s.port, "/flood")
    src = RawWS.open(s.port, "/src")
    for i in range(600):  # 9.6 MiB, in lockstep with the fast reader
        src.send_env(f"{i:06d}:" + "f" * CHUNK, path="Flood")
        assert fast.recv().startswith(f"{i:06d}:")
    closed = metric_value(metrics(s.port), "wsig_budget_closes_total")
    assert closed is not None and 1 <= closed <= 3
    # each slow reader got whole messages in order, then (all but perhaps one) a close frame
    codes = []
    for w in slows:
        got = []
        codes.append(how_it_ends(w, 10, got))
        assert [int(m[:6]) for m in got] == list(range(len(got)))
        w.drop(reset=True)
    assert codes.count((1008, "server memory budget")) == closed, codes
    assert sync_self(src) == []
    # every queue is gone: what the budget counts goes back to nothing
    wait_for(lambda: metric_value(metrics(s.port), "wsig_held_bytes") == 0, "held bytes back to 0")
    fast.close()
    src.close()
    assert s.stop() == 0
    assert "memory budget: closing" in s.stderr_text()


def test_messages_being_received_count_against_the_budget(serve):
    # An echo path takes messages of up to 16 MiB; three clients that each send 5 MiB of one and stop
    # hold 15 MiB against a budget of 8 MiB: the biggest go, the server and a healthy client stay.
    s = serve("--echo", "/echo", "--max-queued-total", "8MiB")
    size = 16 << 20
    part = 5 << 20
    attackers = []
    for _ in range(3):
        ws = RawWS.open(s.port, "/echo")
        head = frame(OP_TEXT, b"", length_override=size, mask=True, mask_key=b"\0\0\0\0")
        ws.send_raw(head + b"a" * part)  # a zero mask: the payload is sent as it is
        attackers.append(ws)
        healthy_one = RawWS.open(s.port, "/echo")
        healthy_one.send_text("ping")
        assert healthy_one.recv() == "ping"
        healthy_one.close()
    closes = []
    for ws in attackers:
        closes.append(how_it_ends(ws, 2))
        ws.drop(reset=True)
    assert closes.count((1008, "server memory budget")) >= 1, closes
    assert metric_value(metrics(s.port), "wsig_budget_closes_total") >= 1
    assert healthy(s.port)
    # a shed session's buffer goes when its read ends: at the latest when the close handshake's
    # 10 s bound ends it
    wait_for(lambda: metric_value(metrics(s.port), "wsig_held_bytes") == 0, "held bytes back to 0", timeout=25)
