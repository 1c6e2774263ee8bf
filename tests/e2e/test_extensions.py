"""`wsig serve` extensions through the real binary: signal routes (--signal-route), connect and
disconnect hooks, local routes (exec=) and schedules (--every); static files are in test_serve_static.py.
Handlers are small Python and shell programs written by the tests."""
import json
import os
import pathlib
import signal
import sys
import textwrap
import time

import pytest

from helpers_serve import (OP_TEXT, Peer, RawWS, WSClosed, http, metric_value, push, sync_self,
                           wait_connections, wait_for)

PY = "/usr/bin/python3"


def write_handler(tmp_path, name, body):
    """A Python handler program; returns the command line that runs it unbuffered."""
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return f"{PY} -u {path}"


# A signal-route handler: records every event to events.jsonl, then acts on the message:
# "reply:X" -> reply X; {"act": ACTION} -> prints ACTION; "crash" -> exits 3; anything else -> nothing.
BOT = """
import json, sys, os
log = open(os.environ["EVENTS"], "a")
for line in sys.stdin:
    e = json.loads(line)
    log.write(line); log.flush()
    m = e["data"]["message"]
    if m == "crash":
        sys.exit(3)
    if isinstance(m, str) and m.startswith("reply:"):
        print(json.dumps({"reply": m[6:]}))
    elif isinstance(m, dict) and "act" in m:
        print(json.dumps(m["act"]))
    elif isinstance(m, dict) and "raw" in m:
        print(m["raw"])
"""


@pytest.fixture
def bot(tmp_path):
    events = tmp_path / "events.jsonl"
    events.touch()
    return write_handler(tmp_path, "bot.py", BOT), {"EVENTS": str(events)}, events


def test_signal_route_event_line_and_reply(serve, bot):
    cmd, env, events = bot
    s = serve("--route", "/chat=Chat", "--signal-route", f"/chat={cmd}", env=env)
    a = Peer(s.ws_url + "/chat?group=Team")
    a.send_env("reply:pong", path="Chat", clientId=["x", "y"], group="G", direct=True)
    assert a.recv() == "pong"
    e = json.loads(events.read_text().splitlines()[0])
    assert e["event"] == "message" and e["id"] == 1
    assert (e["name"], e["group"], e["clientId"], e["path"]) == ("Chat", "Team", a.client_id, "/chat")
    assert e["data"] == {"message": "reply:pong", "path": "Chat", "clientId": ["x", "y"], "group": "G",
                         "direct": True}
    assert e["ts"].endswith("Z") and len(e["ts"]) == 24


def test_signal_route_takes_precedence_over_default_routing(serve, bot):
    cmd, env, events = bot
    s = serve("--route", "/chat=Chat", "--route", "/plain=Plain", "--signal-route", f"/chat={cmd}", env=env)
    other = Peer(s.ws_url + "/plain")
    a = Peer(s.ws_url + "/chat")
    a.send_env("hello everyone")  # default routing would broadcast this to every name
    a.send_env("reply:done")
    assert a.recv() == "done"  # the reply comes after the first event was handled, and nothing else came
    other.send_env("marker", path="Plain")
    assert other.recv() == "marker"  # the broadcast never reached the other Name
    assert len(events.read_text().splitlines()) == 2


def test_send_action_reaches_name_group_and_client_id_and_respects_broadcast_levels(serve, bot):
    cmd, env, _ = bot
    s = serve("--route", "/chat=Chat", "--route", "/room=Room", "--broadcast-level", "Locked=clientid",
              "--route", "/locked=Locked", "--signal-route", f"/chat={cmd}", env=env)
    red = Peer(s.ws_url + "/room?group=red")
    blue = Peer(s.ws_url + "/room?group=blue")
    locked = Peer(s.ws_url + "/locked")
    a = Peer(s.ws_url + "/chat")
    a.send_env({"act": {"send": {"name": "Room", "group": "RED", "data": {"n": 1}}}})
    a.send_env({"act": {"send": {"name": "Room", "clientId": blue.client_id, "data": "to blue"}}})
    a.send_env({"act": {"send": {"name": "Locked", "data": "refused"}}})
    a.send_env("reply:barrier")
    assert a.recv() == "barrier"
    assert red.recv() == '{"n":1}'
    assert blue.recv() == "to blue"
    locked.send_env("self", direct=True)
    assert locked.recv() == "self"  # "refused" never arrived before it


def test_reply_by_event_id_reaches_that_sender(serve, tmp_path):
    # Answers every event only when the next one arrives, addressed by the earlier id.
    seen = tmp_path / "seen"
    cmd = write_handler(tmp_path, "late.py", f"""
        import json, sys
        prev = None
        for line in sys.stdin:
            e = json.loads(line)
            open({str(seen)!r}, "a").write(str(e["id"]) + "\\n")
            if prev is not None:
                print(json.dumps({{"reply": "for " + str(prev["id"]), "id": prev["id"]}}))
            prev = e
    """)
    s = serve("--route", "/chat=Chat", "--signal-route", f"/chat={cmd}")
    a = Peer(s.ws_url + "/chat")
    b = Peer(s.ws_url + "/chat")
    a.send_env("first")
    wait_for(lambda: seen.exists() and seen.read_text() == "1\n", "event 1 at the handler")
    b.send_env("second")  # triggers the reply to event 1, whose sender is a
    assert a.recv() == "for 1"


def test_close_action_closes_the_named_connection_with_1000(serve, bot):
    cmd, env, _ = bot
    s = serve("--route", "/chat=Chat", "--route", "/room=Room", "--signal-route", f"/chat={cmd}", env=env)
    victim = Peer(s.ws_url + "/room")
    a = Peer(s.ws_url + "/chat")
    a.send_env({"act": {"close": {"name": "Room", "clientId": victim.client_id}}})
    assert victim.expect_close() == (1000, "closed by handler")


def test_malformed_action_lines_are_skipped_and_logged(serve, bot):
    cmd, env, _ = bot
    s = serve("--route", "/chat=Chat", "--signal-route", f"/chat={cmd}", env=env)
    a = Peer(s.ws_url + "/chat")
    a.send_env({"raw": "this is not json"})
    a.send_env({"raw": '{"unknown":1}'})
    a.send_env({"raw": '{"send":{"name":"Chat"}}'})
    a.send_env("reply:still here")
    assert a.recv() == "still here"
    assert s.stop() == 0
    err = s.stderr_text()
    assert "not valid JSON" in err and "no send, reply or close" in err and "send needs" in err


def test_an_action_line_nested_past_the_depth_limit_is_skipped_and_the_next_one_runs(serve, bot):
    # a handler that echoes client data into its actions must not hand the server a value that
    # overflows its stack when copied or dumped: 100,000 levels are refused while parsing
    cmd, env, _ = bot
    s = serve("--route", "/chat=Chat", "--signal-route", f"/chat={cmd}", env=env)
    a = Peer(s.ws_url + "/chat")
    depth = 100_000
    a.send_env({"raw": '{"send":{"name":"Chat","data":' + "[" * depth + "]" * depth + "}}"})
    # the action object and its "send" are levels 1 and 2: data 62 deep is the deepest allowed
    a.send_env({"raw": '{"send":{"name":"Chat","data":' + "[" * 62 + "]" * 62 + "}}"})
    a.send_env("reply:still here")
    assert a.recv() == "[" * 62 + "]" * 62
    assert a.recv() == "still here"
    assert s.stop() == 0
    assert "action line skipped: JSON nested deeper than 64 levels" in s.stderr_text()


def test_a_crashing_handler_is_restarted_and_reported(serve, bot):
    cmd, env, events = bot
    s = serve("--route", "/chat=Chat", "--signal-route", f"/chat={cmd}", env=env)
    a = Peer(s.ws_url + "/chat")
    a.send_env("crash")

    def back():
        a.send_env("reply:back")
        try:
            return a.recv(timeout=0.5) == "back"
        except TimeoutError:
            return False
    wait_for(back, "the restarted handler to answer", timeout=15)
    assert s.stop() == 0
    assert "exited with 3; restarting in" in s.stderr_text()


def test_a_hung_handler_never_blocks_other_clients(serve, tmp_path):
    # The handler never reads its stdin: events pile up to the bound and are dropped.
    s = serve("--route", "/slow=Slow", "--route", "/fast=Fast", "--signal-route", "/slow=exec sleep 600")
    slow = Peer(s.ws_url + "/slow")
    fast = Peer(s.ws_url + "/fast")
    big = "x" * 60000
    for _ in range(100):  # 6 MB of events for a queue bounded at 1 MiB plus the pipe
        slow.send_env(big)
    fast.send_env("still fast", direct=True)
    assert fast.recv() == "still fast"
    assert push(s.port, "pushed", client_id=fast.client_id, name="Fast").status == 200
    assert fast.recv() == "pushed"
    # /metrics counts the events the command did not take (at most the 100 sent)
    dropped = wait_for(lambda: metric_value(http(s.port, "GET", "/metrics").text,
                                            "wsig_command_events_dropped_total") or None,
                       "a dropped event in /metrics")
    assert 0 < dropped <= 100
    assert s.stop() == 0
    assert "dropped" in s.stderr_text()


def hook_cmd(tmp_path):
    out = tmp_path / "hooks"
    out.mkdir()
    return (f"cat > {out}/$WSIG_EVENT-$$.json; "
            f"echo \"$WSIG_EVENT|$WSIG_NAME|$WSIG_GROUP|$WSIG_CLIENT_ID|$WSIG_SCOPE\" >> {out}/events.txt"), out


def hook_events(out):
    p = out / "events.txt"
    return p.read_text().splitlines() if p.exists() else []


def test_connect_and_disconnect_hooks_get_json_and_environment(serve, tmp_path):
    cmd, out = hook_cmd(tmp_path)
    s = serve("--route", "/chat=Chat", "--on-connect", cmd, "--on-disconnect", cmd)
    a = Peer(s.ws_url + "/chat?group=G")
    wait_for(lambda: len(hook_events(out)) == 1, "the connect hook")
    assert hook_events(out) == [f"connect|Chat|G|{a.client_id}|global"]
    a.close()
    wait_for(lambda: len(hook_events(out)) == 2, "the disconnect hook")
    assert hook_events(out)[1] == f"disconnect|Chat|G|{a.client_id}|global"
    docs = {}
    for f in out.glob("*.json"):
        d = json.loads(f.read_text())
        docs[d["type"]] = d
    assert docs["connect"]["connection"] == {"name": "Chat", "group": "G", "clientId": a.client_id,
                                             "scope": "global"}
    assert docs["connect"]["name"] == "Chat" and docs["connect"]["ts"].endswith("Z")
    assert docs["disconnect"]["code"] == 1000


@pytest.mark.parametrize("cause", ["server-close", "replacement", "dead-peer", "shutdown"])
def test_disconnect_fires_for_every_cause(serve, tmp_path, cause):
    cmd, out = hook_cmd(tmp_path)
    args = ["--route", "/chat=Chat", "--on-disconnect", cmd, "--accept-client-id", "--ping-interval", "200ms"]
    s = serve(*args)
    if cause == "dead-peer":
        ws = RawWS.open(s.port, "/chat", rcvbuf=4096)  # never answers pings: it does not read
        cid = ws.client_id
    else:
        a = Peer(s.ws_url + "/chat?clientId=victim")
        cid = a.client_id
    if cause == "server-close":
        assert http(s.port, "DELETE", f"/signal/connections?name=Chat&clientId={cid}").status == 200
    elif cause == "replacement":
        Peer(s.ws_url + "/chat?clientId=victim")
    elif cause == "shutdown":
        assert s.stop() == 0
    wait_for(lambda: any(e.startswith(f"disconnect|Chat||{cid}|") for e in hook_events(out)),
             f"the disconnect hook after {cause}", timeout=15)


def test_local_route_process_talks_to_its_client_and_its_exit_closes_the_socket(serve, tmp_path):
    cmd = "head -n 2 | tr a-z A-Z"
    s = serve("--route", f"/shout=Shout,scope=local,exec={cmd}")
    a = Peer(s.ws_url + "/shout")
    a.send("one")
    a.send("two")
    assert a.recv() == "ONE"
    assert a.recv() == "TWO"
    assert a.expect_close() == (1000, "handler exited")


def test_local_route_exec_takes_the_rest_of_the_spec_commas_included(serve):
    s = serve("--route", "/hi=Hi,scope=local,exec=printf 'a,b\\n'; sleep 600")
    a = Peer(s.ws_url + "/hi")
    assert a.recv() == "a,b"


def test_local_route_process_ends_when_its_client_leaves(serve, tmp_path):
    pidfile = tmp_path / "pid"
    s = serve("--route", f"/tail=Tail,scope=local,exec=echo $$ > {pidfile}; echo ready; exec sleep 600")
    a = Peer(s.ws_url + "/tail")
    assert a.recv() == "ready"
    pid = int(pidfile.read_text())
    os.kill(pid, 0)
    a.close()

    def gone():
        try:
            os.kill(pid, 0)
            return False
        except ProcessLookupError:
            return True
    wait_for(gone, "the local process to end")


def test_local_connections_are_not_reachable_by_push(serve):
    s = serve("--route", "/tail=Tail,scope=local,exec=exec sleep 600")
    a = Peer(s.ws_url + "/tail")
    assert a.client_id
    assert push(s.port, "x", client_id=a.client_id, name="Tail").status == 404
    assert push(s.port, "x", name="Tail").json() == {"delivered": 0}


def test_every_broadcasts_the_command_output_to_its_name(serve, tmp_path):
    s = serve("--route", "/times=Times", "--route", "/other=Other", "--every", "100ms:Times:printf 'tick\\n'")
    a = Peer(s.ws_url + "/times")
    other = Peer(s.ws_url + "/other")
    assert a.recv(timeout=5) == "tick"
    assert a.recv(timeout=5) == "tick"
    assert sync_self(other) == []


def test_bad_extension_flags_exit_2(tmp_path):
    from conftest import run_wsig
    for args in (["--every", "1x:Times:date"], ["--every", "1s:Times"], ["--signal-route", "chat=cmd"],
                 ["--route", "/x=X,scope=global,exec=cat"], ["--static", str(tmp_path / "missing")]):
        r = run_wsig("serve", "-p", "0", *args)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.strip()
