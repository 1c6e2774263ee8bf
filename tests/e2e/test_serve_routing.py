"""`wsig serve`, Pode's default routing of client messages (SPEC.md section 3, pode-wire.md section 3):
direct, path = Name, all names when no path (sender included), group and clientId filters, what is
re-sent, field-name case, bad envelopes, broadcast levels, ?group= / ?clientId=, replacement,
--auto-upgrade Names, order from one sender, and frames that arrive together or in pieces.

"Nobody else got it" is checked with a barrier, not a sleep: the same sender then sends a marker
to that peer, and the marker must be the next thing it receives (one sender's order is kept)."""
import json
import socket
import threading

import pytest

from helpers_serve import (OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT, Peer, RawWS, connections, envelope, frame,
                           push, sync_self, sync_to, text_frame)

ROUTES = ["--route", "/chat=Chat", "--route", "/news=News"]


@pytest.fixture
def net(serve):
    """A server with Chat and News, and four raw clients: a, b on Chat; c, d on News."""
    s = serve(*ROUTES)
    socks = {k: RawWS.open(s.port, p) for k, p in (("a", "/chat"), ("b", "/chat"), ("c", "/news"), ("d", "/news"))}
    socks["server"] = s
    yield socks
    for k, w in socks.items():
        if k != "server":
            w.close()


def nothing_for(sender, *peers):
    for p in peers:
        assert sync_to(sender, p) == [], f"{p.name}/{p.client_id} got something it should not"


# --- direct / path / all names ---------------------------------------------------------------

def test_direct_true_goes_back_to_the_sender_only(net):
    a = net["a"]
    a.send_env("just me", direct=True, path="News", clientId=net["c"].client_id)
    assert a.recv() == "just me"
    nothing_for(a, net["b"], net["c"], net["d"])


def test_path_selects_the_name(net):
    a = net["a"]
    a.send_env("news!", path="News")
    assert net["c"].recv() == "news!"
    assert net["d"].recv() == "news!"
    assert sync_self(a) == []
    nothing_for(a, net["b"])


def test_path_is_a_case_sensitive_name(net):
    a = net["a"]
    a.send_env("lowercase", path="news")
    nothing_for(a, net["c"], net["d"], net["b"])
    assert sync_self(a) == []


def test_path_is_url_decoded(serve):
    s = serve("--route", "/x=My Name")
    a = RawWS.open(s.port, "/x")
    assert a.name == "My Name"
    a.send_env("decoded", path="My%20Name")
    assert a.recv() == "decoded"
    a.close()


def test_no_path_goes_to_every_name_including_the_sender(net):
    a = net["a"]
    a.send_env("everyone")
    for k in "abcd":
        assert net[k].recv() == "everyone", k


# --- filters ---------------------------------------------------------------------------------

def test_group_filter_is_case_insensitive_and_takes_an_array(serve):
    s = serve(*ROUTES)
    a = RawWS.open(s.port, "/chat")
    red = RawWS.open(s.port, "/chat?group=Red")
    blue = RawWS.open(s.port, "/news?group=blue")
    plain = RawWS.open(s.port, "/news")
    assert (red.group, blue.group) == ("Red", "blue")
    a.send_env("to red", path="Chat", group="RED")
    assert red.recv() == "to red"
    nothing_for(a, blue, plain)
    assert sync_self(a) == []
    a.send_env("to both", group=["red", "BLUE"])  # no path: every Name, filtered by group
    assert red.recv() == "to both"
    assert blue.recv() == "to both"
    nothing_for(a, plain)
    assert sync_self(a) == []
    for w in (a, red, blue, plain):
        w.close()


def test_client_id_filter_takes_a_string(net):
    a, b = net["a"], net["b"]
    a.send_env("only b", path="Chat", clientId=b.client_id)
    assert b.recv() == "only b"
    assert sync_self(a) == []


def test_client_id_filter_takes_an_array_across_names(net):
    a, b, c = net["a"], net["b"], net["c"]
    a.send_env("b and c", clientId=[b.client_id, c.client_id])
    assert b.recv() == "b and c"
    assert c.recv() == "b and c"
    assert sync_self(a) == []
    nothing_for(a, net["d"])


def test_unknown_client_id_reaches_nobody(net):
    a = net["a"]
    a.send_env("ghost", clientId="0a0a0a0a-0a0a-0a0a-0a0a-0a0a0a0a0a0a")
    assert sync_self(a) == []
    nothing_for(a, net["b"], net["c"], net["d"])


def test_group_and_client_id_filters_combine(serve):
    s = serve(*ROUTES)
    a = RawWS.open(s.port, "/chat")
    red = RawWS.open(s.port, "/chat?group=Red")
    a.send_env("wrong group", path="Chat", group="Green", clientId=red.client_id)
    a.send_env("right group", path="Chat", group="red", clientId=red.client_id)
    assert red.recv() == "right group"
    a.close()
    red.close()


# --- what is re-sent -------------------------------------------------------------------------

@pytest.mark.parametrize("message,wire", [
    ("plain text", "plain text"),
    ('{"k": 1}', '{"k": 1}'),                  # a string that looks like JSON is still raw
    ("h\u00e9llo \u2713 \U0001F600", "h\u00e9llo \u2713 \U0001F600"),
    ({"a": 1, "b": [True, None, "x y"]}, '{"a":1,"b":[true,null,"x y"]}'),
    ([1, "two", {"three": 3}], '[1,"two",{"three":3}]'),
    (42, "42"),
    (-1.5, "-1.5"),
    (True, "true"),
])
def test_only_the_message_is_resent_raw_string_or_compact_json(net, message, wire):
    a, b = net["a"], net["b"]
    # sent with spaces after separators: the server re-encodes non-strings compactly
    a.send_text(json.dumps({"message": message, "path": "Chat", "clientId": b.client_id}, ensure_ascii=False))
    assert b.recv() == wire


def test_field_names_are_case_insensitive(net):
    a, c = net["a"], net["c"]
    a.send_text(json.dumps({"MESSAGE": "shout", "PATH": "News", "ClientID": c.client_id}))
    assert c.recv() == "shout"
    nothing_for(a, net["d"])
    a.send_text(json.dumps({"Message": "to me", "DIRECT": True}))
    assert a.recv() == "to me"
    a.send_text(json.dumps({"message": "grouped", "Group": "nomatch", "PaTh": "News"}))
    nothing_for(a, c, net["d"])


def test_an_envelope_in_a_binary_frame_is_routed_too(net):
    a, b = net["a"], net["b"]
    a.send_binary(envelope("from binary", path="Chat", clientId=b.client_id).encode())
    op, data = b.recv_message()
    assert (op, data) == (OP_TEXT, b"from binary")  # signals always go out as text


@pytest.mark.parametrize("bad", [
    "not json", "{", '{"path":"Chat"}', '{"message":null}', '{"message":""}', "[]", '"a string"', "42",
    '{"message":"x","clientId":{"not":"a string"}}',
])
def test_bad_envelope_is_dropped_and_the_connection_kept(net, bad):
    a = net["a"]
    a.send_text(bad)
    assert sync_self(a) == []  # the sender got nothing and is still connected
    nothing_for(a, net["b"], net["c"])
    a.send_env("still works", path="News")
    assert net["c"].recv() == "still works"


# --- broadcast levels --------------------------------------------------------------------------

def test_broadcast_level_per_name_refuses_a_send_without_group(serve):
    s = serve(*ROUTES, "--broadcast-level", "Chat=group")
    a = RawWS.open(s.port, "/chat?group=G")
    b = RawWS.open(s.port, "/chat?group=G")
    c = RawWS.open(s.port, "/news")
    a.send_env("refused", path="Chat")
    nothing_for(a, b)
    a.send_env("allowed: group", path="Chat", group="G")
    assert b.recv() == "allowed: group"
    a.send_env("allowed: client id", path="Chat", clientId=b.client_id)
    assert b.recv() == "allowed: client id"
    a.send_env("news is level name", path="News")
    assert c.recv() == "news is level name"
    for w in (a, b, c):
        w.close()


def test_default_broadcast_level_clientid_applies_to_every_name(serve):
    s = serve(*ROUTES, "--broadcast-level", "clientid")
    a = RawWS.open(s.port, "/chat?group=G")
    c = RawWS.open(s.port, "/news?group=G")
    a.send_env("refused: name", path="News")
    a.send_env("refused: group", path="News", group="G")
    a.send_env("refused: all names")
    a.send_env("ok", path="News", clientId=c.client_id)
    assert c.recv() == "ok"
    assert sync_self(a) == []
    a.close()
    c.close()


def test_direct_is_not_subject_to_the_broadcast_level(serve):
    s = serve(*ROUTES, "--broadcast-level", "clientid")
    a = RawWS.open(s.port, "/chat")
    a.send_env("mine", direct=True)
    assert a.recv() == "mine"
    a.close()


def test_a_name_level_overrides_the_default(serve):
    s = serve(*ROUTES, "--broadcast-level", "clientid", "--broadcast-level", "News=name")
    a = RawWS.open(s.port, "/chat")
    c = RawWS.open(s.port, "/news")
    a.send_env("to news", path="News")
    assert c.recv() == "to news"
    a.close()
    c.close()


# --- ?group= and ?clientId= --------------------------------------------------------------

def test_query_group_when_the_route_has_none(serve):
    s = serve(*ROUTES, "--route", "/fixed=Fixed,group=Set")
    a = RawWS.open(s.port, "/chat?group=Mine")
    assert a.group == "Mine"
    f = RawWS.open(s.port, "/fixed")
    assert f.group == "Set"
    assert {c["clientId"]: c["group"] for c in connections(s.port)}[a.client_id] == "Mine"
    assert push(s.port, "grp", name="Chat", group="mine").json() == {"delivered": 1}
    assert a.recv() == "grp"
    a.close()
    f.close()


def test_query_client_id_with_accept_client_id(serve):
    s = serve(*ROUTES, "--accept-client-id")
    a = RawWS.open(s.port, "/chat?clientId=my-own-id")
    assert a.client_id == "my-own-id"
    assert push(s.port, "to mine", client_id="my-own-id", name="Chat").json() == {"delivered": 1}
    assert a.recv() == "to mine"
    a.close()


def test_query_client_id_is_ignored_without_accept_client_id(serve):
    s = serve(*ROUTES)
    ws = RawWS(s.port, "/chat?clientId=my-own-id")
    if ws.handshake.status == 101:
        assert ws.client_id != "my-own-id"
        ws.close()
    else:
        assert 400 <= ws.handshake.status < 500, ws.handshake.raw
        ws.sock.close()


def test_a_duplicate_client_id_replaces_the_old_connection(serve):
    s = serve(*ROUTES, "--accept-client-id")
    old = RawWS.open(s.port, "/chat?clientId=dup")
    other_name = RawWS.open(s.port, "/news?clientId=dup")  # another Name: not a duplicate
    new = RawWS.open(s.port, "/chat?clientId=dup")
    assert old.expect_close() == (1000, "replaced")
    assert push(s.port, "to the new one", client_id="dup", name="Chat").json() == {"delivered": 1}
    assert new.recv() == "to the new one"
    conns = connections(s.port)
    assert sorted((c["name"], c["clientId"]) for c in conns) == [("Chat", "dup"), ("News", "dup")]
    assert sync_self(other_name) == []
    new.close()
    other_name.close()


def test_a_replaced_connection_closing_late_does_not_remove_its_replacement(serve):
    s = serve(*ROUTES, "--accept-client-id")
    old = RawWS.open(s.port, "/chat?clientId=dup")
    new = RawWS.open(s.port, "/chat?clientId=dup")
    assert old.expect_close() == (1000, "replaced")
    old.expect_eof()
    assert [c["clientId"] for c in connections(s.port, name="Chat")] == ["dup"]
    assert push(s.port, "alive", client_id="dup", name="Chat").json() == {"delivered": 1}
    assert new.recv() == "alive"
    new.close()


# --- --auto-upgrade -------------------------------------------------------------------

def test_auto_upgrade_names_the_connection_by_its_url_path(serve):
    s = serve("--auto-upgrade")
    a = RawWS.open(s.port, "/some/where?x=1")
    b = RawWS.open(s.port, "/receive")
    assert a.name == "/some/where"
    assert b.name == "/receive"
    assert a.group is None
    a.send_env("to receive", path="/receive")
    assert b.recv() == "to receive"
    assert sync_self(a) == []
    assert push(s.port, "pushed", client_id=a.client_id, name="/some/where").json() == {"delivered": 1}
    assert a.recv() == "pushed"
    assert sorted(c["name"] for c in connections(s.port)) == ["/receive", "/some/where"]
    a.close()
    b.close()


# --- scope -------------------------------------------------------------------------------

def test_local_scope_connections_are_never_broadcast_targets(serve):
    s = serve("--route", "/loc=Loc,scope=local", "--route", "/glob=Glob")
    g = RawWS.open(s.port, "/glob")
    loc = RawWS(s.port, "/loc")
    assert loc.handshake.status == 101, loc.handshake.raw
    assert push(s.port, "x", name="Loc").json() == {"delivered": 0}
    assert push(s.port, "x", client_id=loc.client_id, name="Loc").status == 404
    loc.sock.close()
    g.close()


# --- order and framing ---------------------------------------------------------------------

def test_one_senders_messages_arrive_in_order(net):
    a, c, d = net["a"], net["c"], net["d"]
    n = 300
    for i in range(n):
        a.send_env(f"m{i}", path="News")
    assert [c.recv() for _ in range(n)] == [f"m{i}" for i in range(n)]
    assert [d.recv() for _ in range(n)] == [f"m{i}" for i in range(n)]


def test_order_is_kept_for_a_library_peer_too(serve):
    s = serve(*ROUTES)
    src = Peer(f"{s.ws_url}/chat")
    dst = Peer(f"{s.ws_url}/news")
    for i in range(200):
        src.send_env(i, path="News")
    assert [dst.recv() for _ in range(200)] == [str(i) for i in range(200)]
    src.close()
    dst.close()


def test_coalesced_frames_in_one_tcp_send_are_all_processed(net):
    a, b = net["a"], net["b"]
    batch = b"".join(text_frame(envelope(f"c{i}", path="Chat", clientId=b.client_id)) for i in range(20))
    a.send_raw(batch)  # one sendall of 20 frames: they arrive in one read
    assert [b.recv() for _ in range(20)] == [f"c{i}" for i in range(20)]


def test_coalesced_frames_mixing_control_and_data_frames(net):
    a = net["a"]
    batch = (text_frame(envelope("one", direct=True)) + frame(OP_PING, b"p1")
             + text_frame(envelope("two", direct=True)) + frame(OP_PING, b"p2")
             + text_frame(envelope("three", direct=True)))
    a.send_raw(batch)
    got = []
    pongs = []
    while len(got) < 3 or len(pongs) < 2:
        f = a.recv_frame()
        if f.opcode == OP_PONG:
            pongs.append(f.payload)
        else:
            assert f.opcode == OP_TEXT and f.fin, f
            got.append(f.payload.decode())
    assert got == ["one", "two", "three"]
    assert pongs == [b"p1", b"p2"]  # pongs echo the ping payload (SPEC section 10)


def test_a_frame_dribbled_byte_by_byte_is_processed(net):
    a = net["a"]
    a.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = text_frame(envelope("slowly", direct=True))
    for i in range(len(data)):
        a.send_raw(data[i:i + 1])
    assert a.recv() == "slowly"


def test_a_fragmented_message_is_reassembled_and_routed(net):
    a, b = net["a"], net["b"]
    env = envelope("fragmented " + "x" * 3000, path="Chat", clientId=b.client_id).encode()
    parts = [env[:10], env[10:1500], env[1500:]]
    a.send_raw(frame(OP_TEXT, parts[0], fin=False))
    a.send_raw(frame(OP_CONT, parts[1], fin=False) + frame(OP_PING, b"mid"))  # a ping between fragments
    assert a.recv_frame().payload == b"mid"
    a.send_raw(frame(OP_CONT, parts[2], fin=True))
    assert b.recv() == "fragmented " + "x" * 3000


def test_large_messages_are_routed_intact(net):
    a, b = net["a"], net["b"]
    big = "".join(chr(0x41 + i % 26) for i in range(200_000))
    a.send_env(big, path="Chat", clientId=b.client_id)
    assert b.recv() == big


# --- --echo -----------------------------------------------------------------------------

def test_echo_path_echoes_text_binary_and_fragmented_frames_verbatim(serve):
    s = serve("--echo", "/echo", *ROUTES)
    e = RawWS.open(s.port, "/echo")
    e.send_text("not an envelope")
    assert e.recv_message() == (OP_TEXT, b"not an envelope")
    e.send_binary(b"\x00\xff\x10")
    assert e.recv_message() == (OP_BINARY, b"\x00\xff\x10")
    e.send_raw(frame(OP_BINARY, b"ab", fin=False) + frame(OP_CONT, b"cd", fin=False) + frame(OP_CONT, b"ef"))
    assert e.recv_message() == (OP_BINARY, b"abcdef")
    e.send_raw(frame(OP_TEXT, b"", fin=True))
    assert e.recv_message() == (OP_TEXT, b"")
    e.close()


@pytest.mark.parametrize("threads", ["1", "4"])
def test_concurrent_senders_each_keep_their_order(serve, threads):
    s = serve(*ROUTES, "--threads", threads)
    receivers = [RawWS.open(s.port, "/news") for _ in range(3)]
    senders = [RawWS.open(s.port, "/chat") for _ in range(4)]
    n = 150
    done = []

    def send(k, w):
        for i in range(n):
            w.send_env(f"{k}:{i}", path="News")
        done.append(k)

    threads_ = [threading.Thread(target=send, args=(k, w)) for k, w in enumerate(senders)]
    for t in threads_:
        t.start()
    for r in receivers:
        got = [r.recv() for _ in range(n * len(senders))]
        for k in range(len(senders)):
            assert [m for m in got if m.startswith(f"{k}:")] == [f"{k}:{i}" for i in range(n)], k
    for t in threads_:
        t.join(10)
    assert sorted(done) == list(range(len(senders)))
    for w in receivers + senders:
        w.close()


def test_a_routed_message_is_one_text_frame_even_when_large(net):
    a, b = net["a"], net["b"]
    big = "B" * 100_000
    a.send_env(big, path="Chat", clientId=b.client_id)
    f = b.recv_frame()
    assert (f.opcode, f.fin, f.payload) == (OP_TEXT, True, big.encode())


def test_a_lone_surrogate_in_an_envelope_never_becomes_invalid_utf8(serve):
    s = serve(*ROUTES)
    a = RawWS.open(s.port, "/chat")
    p = Peer(f"{s.ws_url}/chat")  # closes with 1007 if it ever receives invalid UTF-8
    a.send_text('{"message":"x\\ud800y","path":"Chat","clientId":"%s"}' % p.client_id)
    a.send_env("marker", path="Chat", clientId=p.client_id)
    got = p.recv()
    if got != "marker":  # a repaired copy is acceptable; the marker must follow
        assert p.recv() == "marker"
    a.close()
    p.close()


def test_concurrent_duplicates_leave_exactly_one_connection(serve):
    s = serve(*ROUTES, "--accept-client-id", "--threads", "4")
    n = 12
    socks = [None] * n
    barrier = threading.Barrier(n)

    def attempt(i):
        barrier.wait(10)
        socks[i] = RawWS.open(s.port, "/chat?clientId=dup")

    workers = [threading.Thread(target=attempt, args=(i,)) for i in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(20)
    assert all(isinstance(w, RawWS) for w in socks)
    conns = connections(s.port)
    assert [c["clientId"] for c in conns] == ["dup"], conns
    port = int(conns[0]["remote"].rsplit(":", 1)[1])
    survivors = [w for w in socks if w.local_port() == port]
    assert len(survivors) == 1, conns
    for w in socks:
        if w is not survivors[0]:
            assert w.expect_close() == (1000, "replaced")
    assert push(s.port, "survivor", client_id="dup", name="Chat").json() == {"delivered": 1}
    assert survivors[0].recv() == "survivor"
    for w in socks:
        w.sock.close()


def test_default_scope_local_applies_to_routes_without_a_scope(serve):
    s = serve("--route", "/loc=Loc", "--route", "/glob=Glob,scope=global", "--default-scope", "local")
    g = RawWS.open(s.port, "/glob")
    loc = RawWS(s.port, "/loc")
    assert loc.handshake.status == 101, loc.handshake.raw
    assert push(s.port, "x", name="Loc").json() == {"delivered": 0}
    assert push(s.port, "y", name="Glob").json() == {"delivered": 1}
    assert g.recv() == "y"
    loc.sock.close()
    g.close()
