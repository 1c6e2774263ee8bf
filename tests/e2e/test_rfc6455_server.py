"""RFC 6455 conformance of `wsig serve --echo /echo`, the checks of Autobahn TestSuite's sections
1-10 (fuzzingclient) redone on a raw socket (rawws.py), so a regression is caught here.

Each test starts its own server (conftest's `serve`), talks to /echo through one or more RawClient
connections and asserts exact opcodes, payloads, close codes and who closes TCP. Where RFC 6455 lets
an endpoint choose (e.g. 1002 or 1007 for a bad close reason), the Autobahn expectation is quoted.
Every wait has a deadline; nothing sleeps.
"""
import os

import pytest

from rawws import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawClient, close_payload,
                   fragments)

MiB = 1024 * 1024


@pytest.fixture
def echo(serve):
    """echo(*serve_args) -> a function opening RawClient connections to /echo of a fresh server."""
    conns = []

    def start(*args):
        server = serve("--echo", "/echo", *args)

        def connect():
            c = RawClient(server.port, "/echo")
            conns.append(c)
            return c
        connect.server = server
        return connect

    yield start
    for c in conns:
        c.close()


@pytest.fixture
def ws(echo):
    """One connection to a server with the default options."""
    return echo()()


def assert_failed(c, code, timeout=5.0):
    """The server failed the connection: a close frame with `code` and nothing before it (no echo,
    no pong), then the server closes TCP."""
    got, reason, before = c.expect_close(timeout)
    assert before == [], f"frames before the close: {before}"
    assert got == code, f"close {got} {reason!r}, expected {code}"
    assert c.wait_eof(timeout) == []


def assert_echo(c, opcode, payload, timeout=10.0):
    f = c.recv_frame(timeout)
    assert (f.fin, f.rsv, f.opcode, f.masked) == (True, 0, opcode, False), f[:3] + (f.masked,)
    assert len(f.payload) == len(payload)
    assert f.payload == payload


def clean_close(c):
    """Our close 1000 is answered with close 1000 and the server closes TCP (RFC 6455 7.1.1)."""
    c.send_close(1000)
    code, _, before = c.expect_close()
    assert before == [] and code == 1000
    assert c.wait_eof() == []


# ============================================================================ 1 framing

LENGTHS = [0, 125, 126, 127, 128, 65535, 65536]


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
@pytest.mark.parametrize("length", LENGTHS)
def test_1_echo_of_each_length_encoding(ws, opcode, length):
    """Autobahn 1.1.1-1.2.7: 7-bit, 16-bit and 64-bit length encodings at their edges."""
    payload = (b"*" * length) if opcode == OP_TEXT else bytes(i % 256 for i in range(length))
    ws.send_frame(opcode, payload)
    assert_echo(ws, opcode, payload)
    clean_close(ws)


def test_1_16mib_binary_with_raised_limit(echo):
    c = echo("--max-message-size", "20MiB")()
    payload = os.urandom(16 * MiB)
    c.send_frame(OP_BINARY, payload)
    assert_echo(c, OP_BINARY, payload, timeout=30)
    clean_close(c)


def test_1_frame_delivered_one_byte_per_segment(ws):
    """Autobahn 1.1.8 / 9.5.x: a frame trickling in one byte per TCP segment is echoed whole."""
    payload = "slow ünïcödé ".encode() * 20
    ws.send_slowly(ws.frame(OP_TEXT, payload), step=1)
    assert_echo(ws, OP_TEXT, payload)
    clean_close(ws)


def test_1_64k_frame_delivered_in_997_byte_chops(ws):
    """Autobahn 1.1.8: 65536 bytes in chops of 997."""
    payload = b"*" * 65536
    ws.send_slowly(ws.frame(OP_TEXT, payload), step=997)
    assert_echo(ws, OP_TEXT, payload)
    clean_close(ws)


# ============================================================================ 2 pings and pongs

@pytest.mark.parametrize("payload", [b"", b"Hello, world!", bytes(range(125)), b"\xfe\xff" * 62 + b"\x00"],
                         ids=["empty", "text", "binary-125", "binary-125b"])
def test_2_ping_is_answered_by_pong_with_the_same_payload(ws, payload):
    """Autobahn 2.1-2.4 (2.4: 125 bytes, the most a control frame may carry)."""
    ws.send_frame(OP_PING, payload)
    assert_echo(ws, OP_PONG, payload)
    clean_close(ws)


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG], ids=["ping", "pong"])
def test_2_control_frame_of_126_bytes_fails_with_1002(ws, opcode):
    """Autobahn 2.5: control frames carry at most 125 bytes (RFC 6455 5.5)."""
    ws.send_frame(opcode, b"x" * 126)
    assert_failed(ws, 1002)


def test_2_ping_delivered_one_byte_per_segment(ws):
    """Autobahn 2.6."""
    ws.send_slowly(ws.frame(OP_PING, b"Hello-ping" * 12), step=1)
    assert_echo(ws, OP_PONG, b"Hello-ping" * 12)
    clean_close(ws)


def test_2_unsolicited_pongs_are_ignored(ws):
    """Autobahn 2.7/2.8: a pong nobody asked for gets no answer; the connection goes on."""
    ws.send(ws.frame(OP_PONG, b"") + ws.frame(OP_PONG, b"unsolicited pong payload") + ws.frame(OP_TEXT, b"after"))
    assert_echo(ws, OP_TEXT, b"after")
    clean_close(ws)


def test_2_ten_pings_in_one_segment_get_ten_pongs_in_order(ws):
    """Autobahn 2.10/2.11: each ping answered, in order."""
    payloads = [f"ping {i}".encode() for i in range(10)]
    ws.send(b"".join(ws.frame(OP_PING, p) for p in payloads))
    for p in payloads:
        assert_echo(ws, OP_PONG, p)
    clean_close(ws)


def test_2_ping_then_close_gets_pong_then_close(ws):
    """Autobahn 2.9-like: a ping followed at once by a close: pong, then close 1000."""
    ws.send(ws.frame(OP_PING, b"last") + ws.frame(OP_CLOSE, close_payload(1000)))
    assert_echo(ws, OP_PONG, b"last")
    code, _, before = ws.expect_close()
    assert (before, code) == ([], 1000)
    assert ws.wait_eof() == []


def test_2_pings_interleaved_with_messages_lose_nothing(ws):
    """200 (message, ping) pairs in one segment: 200 echoes in order and 200 pongs in order, each
    pong after the echo of the message before its ping (the server writes data frames on its own
    path beside Beast's control frames: neither may overtake the other)."""
    msgs = [f"message {i}".encode() for i in range(200)]
    ws.send(b"".join(ws.frame(OP_TEXT, m) + ws.frame(OP_PING, b"p%d" % i) for i, m in enumerate(msgs)))
    got = [ws.recv_frame() for _ in range(400)]
    assert all(f.fin and f.rsv == 0 and not f.masked for f in got)
    assert [f.payload for f in got if f.opcode == OP_TEXT] == msgs
    assert [f.payload for f in got if f.opcode == OP_PONG] == [b"p%d" % i for i in range(200)]
    order = [(f.opcode, f.payload) for f in got]
    for i, m in enumerate(msgs):
        assert order.index((OP_TEXT, m)) < order.index((OP_PONG, b"p%d" % i))
    clean_close(ws)


def test_2_ping_and_close_during_a_big_echo_write_wait_for_the_frame(echo):
    """An 8 MiB message, 3 pings and a close in one go, read only afterwards: the echo is still
    being written (socket buffers are far smaller) when the pings and the close arrive, and no
    control frame may land inside it: echo intact, 3 pongs in order, close 1000."""
    c = echo("--max-message-size", "16MiB")()
    payload = os.urandom(8 * MiB)
    c.send(c.frame(OP_BINARY, payload) + b"".join(c.frame(OP_PING, b"p%d" % i) for i in range(3))
           + c.frame(OP_CLOSE, close_payload(1000)))
    assert_echo(c, OP_BINARY, payload, timeout=30)
    for i in range(3):
        assert_echo(c, OP_PONG, b"p%d" % i)
    code, _, before = c.expect_close()
    assert before == [] and code == 1000
    assert c.wait_eof() == []


# ============================================================================ 3 reserved bits

@pytest.mark.parametrize("rsv", range(1, 8))
def test_3_reserved_bits_on_text_fail_with_1002(ws, rsv):
    """Autobahn 3.1-3.4: no extension negotiated, so RSV1-3 must be 0 (RFC 6455 5.2)."""
    ws.send_frame(OP_TEXT, b"Hello, world!", rsv=rsv)
    assert_failed(ws, 1002)


@pytest.mark.parametrize("opcode", [OP_BINARY, OP_PING, OP_CLOSE], ids=["binary", "ping", "close"])
def test_3_reserved_bits_on_other_frames_fail_with_1002(ws, opcode):
    """Autobahn 3.5-3.7."""
    payload = close_payload(1000) if opcode == OP_CLOSE else b"\x00\xff\xfe\xfd"
    ws.send_frame(opcode, payload, rsv=7)
    assert_failed(ws, 1002)


def test_3_good_frame_then_reserved_bits_then_ping(ws):
    """Autobahn 3.2: the good message is echoed, the bad frame fails the connection, the ping
    after it gets no pong."""
    ws.send(ws.frame(OP_TEXT, b"good") + ws.frame(OP_TEXT, b"bad", rsv=2) + ws.frame(OP_PING, b"p"))
    assert_echo(ws, OP_TEXT, b"good")
    assert_failed(ws, 1002)


# ============================================================================ 4 opcodes

@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
def test_4_reserved_opcodes_fail_with_1002(ws, opcode):
    """Autobahn 4.1.1-4.2.5: non-control 3-7 and control 11-15 are reserved (RFC 6455 5.2)."""
    ws.send_frame(opcode, b"reserved" if opcode < 8 else b"")
    assert_failed(ws, 1002)


def test_4_good_frame_then_reserved_opcode_then_ping(ws):
    """Autobahn 4.1.3/4.2.3."""
    ws.send(ws.frame(OP_TEXT, b"good") + ws.frame(5, b"") + ws.frame(OP_PING, b"p"))
    assert_echo(ws, OP_TEXT, b"good")
    assert_failed(ws, 1002)


# ============================================================================ 5 fragmentation

@pytest.mark.parametrize("opcode,nfrag", [(OP_TEXT, 2), (OP_BINARY, 2), (OP_TEXT, 100), (OP_BINARY, 100)],
                         ids=["text-2", "binary-2", "text-100", "binary-100"])
def test_5_fragmented_message_is_echoed_as_one(ws, opcode, nfrag):
    """Autobahn 5.3-5.8: fragments are reassembled; the echo is one unfragmented frame."""
    payload = ("fragmënt" * 50).encode()[:400]
    size = -(-len(payload) // nfrag)
    frames = [ws.frame(op, chunk, fin=fin) for op, chunk, fin in fragments(opcode, payload, size)]
    assert len(frames) == nfrag
    ws.send(b"".join(frames))
    assert_echo(ws, opcode, payload)
    clean_close(ws)


def test_5_empty_fragments_are_fine(ws):
    """Autobahn 5.18-ish: empty first, middle and last fragments."""
    ws.send(ws.frame(OP_TEXT, b"", fin=False) + ws.frame(OP_CONT, b"abc", fin=False)
            + ws.frame(OP_CONT, b"", fin=False) + ws.frame(OP_CONT, b"", fin=True))
    assert_echo(ws, OP_TEXT, b"abc")
    clean_close(ws)


@pytest.mark.parametrize("slow", [False, True], ids=["one-segment", "frame-by-frame"])
def test_5_ping_between_fragments_is_answered_first(ws, slow):
    """Autobahn 5.6-5.8/5.15: control frames may be injected in a fragmented message; the pong
    comes before the message, which is echoed whole."""
    parts = [ws.frame(OP_TEXT, b"fragment1", fin=False), ws.frame(OP_PING, b"between"),
             ws.frame(OP_CONT, b"fragment2", fin=True)]
    if slow:
        ws.send(parts[0] + parts[1])
        assert_echo(ws, OP_PONG, b"between")
        ws.send(parts[2])
    else:
        ws.send(b"".join(parts))
        assert_echo(ws, OP_PONG, b"between")
    assert_echo(ws, OP_TEXT, b"fragment1fragment2")
    clean_close(ws)


def test_5_pings_between_64_fragments_are_all_answered_before_the_message(echo):
    """Autobahn 5.19/5.20 at scale: a 1 MiB binary message in 64 fragments with a ping after each
    of the first 63; 63 pongs in order, then the whole message."""
    c = echo("--max-message-size", "2MiB")()
    payload = os.urandom(MiB)
    parts = fragments(OP_BINARY, payload, MiB // 64)
    data = b""
    for i, (op, chunk, fin) in enumerate(parts):
        data += c.frame(op, chunk, fin=fin)
        if not fin:
            data += c.frame(OP_PING, b"ping %d" % i)
    c.send(data)
    for i in range(63):
        assert_echo(c, OP_PONG, b"ping %d" % i)
    assert_echo(c, OP_BINARY, payload)
    clean_close(c)


@pytest.mark.parametrize("fin", [True, False], ids=["fin", "nofin"])
def test_5_continuation_without_a_start_fails_with_1002(ws, fin):
    """Autobahn 5.9-5.12: a continuation frame with no message to continue."""
    ws.send_frame(OP_CONT, b"non-continuation payload", fin=fin)
    assert_failed(ws, 1002)


def test_5_continuation_after_a_finished_message_fails_with_1002(ws):
    """Autobahn 5.13-5.14: the first message is echoed, the stray continuation fails."""
    ws.send(ws.frame(OP_TEXT, b"whole") + ws.frame(OP_CONT, b"stray", fin=True))
    assert_echo(ws, OP_TEXT, b"whole")
    assert_failed(ws, 1002)


@pytest.mark.parametrize("second", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_5_new_message_before_the_previous_finished_fails_with_1002(ws, second):
    """RFC 6455 5.4: fragments of one message may not be interleaved with another's."""
    ws.send(ws.frame(OP_TEXT, b"first part", fin=False) + ws.frame(second, b"intruder", fin=True))
    assert_failed(ws, 1002)


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG, OP_CLOSE], ids=["ping", "pong", "close"])
def test_5_control_frame_without_fin_fails_with_1002(ws, opcode):
    """Autobahn 5.1/5.2: control frames must not be fragmented (RFC 6455 5.5)."""
    payload = close_payload(1000) if opcode == OP_CLOSE else b"fragmented control"
    ws.send(ws.frame(opcode, payload, fin=False) + ws.frame(OP_CONT, b"rest", fin=True))
    assert_failed(ws, 1002)


def _many_fragments(c, opcode, payload, size):
    c.send(b"".join(c.frame(op, chunk, fin=fin) for op, chunk, fin in fragments(opcode, payload, size)))


def test_5_4mib_in_4096_fragments_passes_with_8mib_limit(echo):
    """Autobahn 9.3.x/9.4.x: heavy fragmentation (4096 frames of 1 KiB) of a 4 MiB message."""
    c = echo("--max-message-size", "8MiB")()
    payload = b"0123456789abcdef" * (4 * MiB // 16)
    _many_fragments(c, OP_TEXT, payload, 1024)
    assert_echo(c, OP_TEXT, payload, timeout=30)
    clean_close(c)


def send_until_refused(c, data):
    """Sends data; the server may close while we are still sending (it refused the message)."""
    try:
        c.send(data)
    except (BrokenPipeError, ConnectionResetError):
        pass


def test_5_4mib_in_4096_fragments_passes_at_the_default_limit(ws):
    """The hardening issue: heavily fragmented 4 MiB messages pass within the default limits (an
    --echo path takes 16 MiB by default, Autobahn's largest message)."""
    payload = b"0123456789abcdef" * (4 * MiB // 16)
    _many_fragments(ws, OP_TEXT, payload, 1024)
    assert_echo(ws, OP_TEXT, payload, timeout=30)
    clean_close(ws)


def test_5_signal_routes_keep_the_1mib_default(serve):
    """Signal connections keep --max-message-size's 1MiB default (SPEC.md 3): a fragmented 4 MiB
    message is refused with 1009 before it is complete."""
    s = serve("--route", "/chat=Chat")
    c = RawClient(s.port, "/chat")
    payload = os.urandom(4 * MiB)
    frames = [c.frame(op, chunk, fin=fin) for op, chunk, fin in fragments(OP_BINARY, payload, 1024)]
    send_until_refused(c, b"".join(frames[:-1]))
    got, _, before = c.expect_close(10)
    assert before == [] and got == 1009


# ============================================================================ 6 UTF-8

VALID_UTF8 = {
    "greek": "κόσμε".encode(),                                    # Autobahn 6.2.x
    "mixed": "Hello-µ@ßöäüàá-UTF-8!!".encode(),                   # Autobahn 6.1.x
    "4-byte": "𝄞 music 😀 emoji 𐍈".encode(),                   # U+1D11E, U+1F600, U+10348
    "boundaries": "\u0000\u007f\u0080\u07ff\u0800\uffff\U00010000\U0010ffff".encode(),  # 6.5/6.6-ish
    "bom-and-noncharacters": "\ufeff\ufdd0\ufffe".encode(),
}


@pytest.mark.parametrize("name", VALID_UTF8)
def test_6_valid_utf8_is_echoed(ws, name):
    ws.send_frame(OP_TEXT, VALID_UTF8[name])
    assert_echo(ws, OP_TEXT, VALID_UTF8[name])
    clean_close(ws)


def test_6_valid_utf8_fragmented_at_every_byte(ws):
    """Autobahn 6.2.3/6.2.4: a code point split across fragments is still valid."""
    payload = "Hello-µ@ßöäüàá-UTF-8!! κόσμε 𝄞😀".encode()
    _many_fragments(ws, OP_TEXT, payload, 1)
    assert_echo(ws, OP_TEXT, payload)
    clean_close(ws)


INVALID_UTF8 = {
    "surrogate": b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",  # Autobahn 6.3.1
    "overlong-slash": b"\xc0\xaf",                                                   # 6.8-ish
    "overlong-3byte": b"\xe0\x80\xaf",
    "above-10ffff": b"\xf4\x90\x80\x80",
    "lone-continuation": b"abc\x80def",
    "truncated-at-end": b"\xce\xba\xce",
    "fe-ff": b"\xfe\xff",
}


@pytest.mark.parametrize("name", INVALID_UTF8)
def test_6_invalid_utf8_in_one_frame_fails_with_1007(ws, name):
    """RFC 6455 8.1: a text message that is not UTF-8 fails the connection (1007, 7.4.1)."""
    ws.send_frame(OP_TEXT, INVALID_UTF8[name])
    assert_failed(ws, 1007)


@pytest.mark.parametrize("split", [(b"\xce\xba\xed", b"\xa0\x80edited"), (b"ok\xf4", b"\x90\x80\x80"),
                                   (b"ok", b"\xc0\xaf")],
                         ids=["surrogate-split", "above-10ffff-split", "overlong-in-2nd"])
def test_6_invalid_utf8_across_fragments_fails_with_1007(ws, split):
    """Autobahn 6.3.2: the invalid sequence starts in one fragment and ends in the next."""
    ws.send(ws.frame(OP_TEXT, split[0], fin=False) + ws.frame(OP_CONT, split[1], fin=True))
    assert_failed(ws, 1007)


def test_6_fail_fast_on_the_first_fragment(ws):
    """Autobahn 6.4.1/6.4.2: the first fragment already holds an invalid sequence; 1007 comes
    before the message is complete (we never send the rest)."""
    ws.send_frame(OP_TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80", fin=False)
    assert_failed(ws, 1007, timeout=5.0)


def test_6_fail_fast_inside_a_partly_delivered_frame(ws):
    """Autobahn 6.4.3/6.4.4: a frame announcing 1000 bytes delivers an invalid sequence in its
    first bytes and then stalls; 1007 comes without the rest of the frame."""
    data = ws.frame(OP_TEXT, b"\xce\xba\xe1\xbd\xb9\xf4\x90\x80\x80" + b"a" * 991)
    ws.send(data[:8 + 20])  # 2+2 header bytes, 4 mask bytes, 20 payload bytes
    assert_failed(ws, 1007, timeout=5.0)


# ============================================================================ 7 close handling

def test_7_close_1000_is_echoed_and_the_server_closes_tcp(ws):
    """Autobahn 7.1.1, RFC 6455 7.1.1: the server closes the TCP connection first."""
    ws.send_frame(OP_TEXT, b"Hello World!")
    assert_echo(ws, OP_TEXT, b"Hello World!")
    clean_close(ws)


def test_7_close_without_payload_is_answered(ws):
    """Autobahn 7.3.1: an empty close is answered with an empty close or 1000."""
    ws.send_close()
    code, reason, before = ws.expect_close()
    assert before == [] and code in (None, 1000) and reason == b""
    assert ws.wait_eof() == []


@pytest.mark.parametrize("reason", [b"Hello World!", "κόσμε 😀".encode(), b"x" * 123],
                         ids=["ascii", "utf8", "123-bytes"])
def test_7_close_with_reason_is_answered_with_the_code(ws, reason):
    """Autobahn 7.3.3-7.3.5 (123 bytes of reason: the 125-byte maximum)."""
    ws.send_close(1000, reason)
    code, got_reason, before = ws.expect_close()
    assert before == [] and code == 1000
    assert got_reason in (b"", reason)
    assert ws.wait_eof() == []


def test_7_close_payload_over_125_bytes_fails_with_1002(ws):
    """Autobahn 7.3.6: a 124-byte reason makes a 126-byte control frame."""
    ws.send_close(1000, b"y" * 124)
    assert_failed(ws, 1002)


def test_7_close_payload_of_one_byte_fails_with_1002(ws):
    """Autobahn 7.3.2: a close body is empty or at least the 2-byte code (RFC 6455 5.5.1)."""
    ws.send_frame(OP_CLOSE, b"\x03")
    assert_failed(ws, 1002)


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999])
def test_7_valid_close_codes_are_echoed(ws, code):
    """Autobahn 7.7.x: a valid code is answered with the same code."""
    ws.send_close(code)
    got, _, before = ws.expect_close()
    assert before == [] and got == code
    assert ws.wait_eof() == []


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999])
def test_7_invalid_close_codes_fail_with_1002(ws, code):
    """Autobahn 7.9.x: codes that must never be sent on the wire."""
    ws.send_close(code)
    assert_failed(ws, 1002)


@pytest.mark.parametrize("code", [5000, 65535])
def test_7_close_codes_above_4999(ws, code):
    """Autobahn 7.13.1/7.13.2: RFC 6455 7.4.2 defines codes up to 4999 only; Autobahn accepts a
    close with 1000, the same code or 1002 ("actual events are undefined by the spec"). What
    must hold: a close frame comes back, nothing else, and the server closes TCP."""
    ws.send_close(code)
    got, _, before = ws.expect_close()
    assert before == [] and got in (1000, code, 1002), got
    assert ws.wait_eof() == []


def test_7_close_reason_with_invalid_utf8_fails(ws):
    """Autobahn 7.5.1: "clean close with protocol error or invalid utf8 code" (1002 or 1007)."""
    ws.send_close(1000, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited")
    got, _, before = ws.expect_close()
    assert before == [] and got in (1002, 1007), got
    assert ws.wait_eof() == []


def test_7_nothing_is_answered_after_a_close(ws):
    """Autobahn 7.1.2-7.1.4: after our close, a second close, a ping and a text frame get
    nothing; only the close is answered and the server closes TCP."""
    ws.send(ws.frame(OP_CLOSE, close_payload(1000)) + ws.frame(OP_TEXT, b"after close")
            + ws.frame(OP_PING, b"after close") + ws.frame(OP_CLOSE, close_payload(1000)))
    code, _, before = ws.expect_close()
    assert before == [] and code == 1000
    assert ws.wait_eof() == []


def test_7_close_in_the_middle_of_a_fragmented_message(ws):
    """Autobahn 7.1.5: first fragment, close, last fragment: no echo, close 1000."""
    ws.send(ws.frame(OP_TEXT, b"fragment1", fin=False) + ws.frame(OP_CLOSE, close_payload(1000))
            + ws.frame(OP_CONT, b"fragment2", fin=True))
    code, _, before = ws.expect_close()
    assert before == [] and code == 1000
    assert ws.wait_eof() == []


def test_7_big_message_then_close_is_echoed_then_closed(ws):
    """Autobahn 7.1.6: a 256 KiB message, then a close, in one go: the echo comes before the close."""
    payload = b"BAsd7&jh23" * 25600
    ws.send(ws.frame(OP_TEXT, payload) + ws.frame(OP_CLOSE, close_payload(1000)))
    assert_echo(ws, OP_TEXT, payload)
    code, _, before = ws.expect_close()
    assert before == [] and code == 1000
    assert ws.wait_eof() == []


def test_7_close_after_1000_messages_comes_after_their_echoes(ws):
    """1000 messages, a close and a late message in one segment: the 1000 echoes in order, then
    close 1000, then nothing (RFC 6455 5.5.1: no data frame after a close frame), TCP closed.
    RFC 6455 would let an endpoint drop queued data when closing; an echo server that drops echoes
    of messages it received before the close would be a regression here."""
    msgs = [b"%04d" % i + b"m" * 60 for i in range(1000)]
    ws.send(b"".join(ws.frame(OP_TEXT, m) for m in msgs) + ws.frame(OP_CLOSE, close_payload(1000))
            + ws.frame(OP_TEXT, b"late"))
    code, _, before = ws.expect_close()
    assert [(f.opcode, f.payload) for f in before] == [(OP_TEXT, m) for m in msgs]
    assert code == 1000
    assert ws.wait_eof() == []


@pytest.mark.parametrize("bad", ["rsv1", "bad-utf8", "long-ping"])
def test_7_failure_after_1000_messages_sends_nothing_after_its_close(ws, bad):
    """1000 messages then a bad frame: whatever echoes go out are intact and in order, then the
    close (1002/1007), then nothing, TCP closed."""
    msgs = [b"%04d" % i + b"m" * 60 for i in range(1000)]
    bad_frame, code = {"rsv1": (ws.frame(OP_TEXT, b"x", rsv=4), 1002),
                       "bad-utf8": (ws.frame(OP_TEXT, b"\xff"), 1007),
                       "long-ping": (ws.frame(OP_PING, b"x" * 126), 1002)}[bad]
    ws.send(b"".join(ws.frame(OP_TEXT, m) for m in msgs) + bad_frame + ws.frame(OP_TEXT, b"late"))
    got, _, before = ws.expect_close()
    assert [(f.opcode, f.payload) for f in before] == [(OP_TEXT, m) for m in msgs[:len(before)]]
    assert got == code
    assert ws.wait_eof() == []


# ============================================================================ 9 limits and performance

@pytest.mark.parametrize("fragment", [None, 1024], ids=["one-frame", "1024-fragments"])
def test_9_1mib_text_at_the_default_limit_is_echoed(ws, fragment):
    """Autobahn 9.1.3 (1 MiB), exactly the default --max-message-size, whole or in fragments."""
    payload = b"*" * MiB
    if fragment:
        _many_fragments(ws, OP_TEXT, payload, fragment)
    else:
        ws.send_frame(OP_TEXT, payload)
    assert_echo(ws, OP_TEXT, payload)
    clean_close(ws)


def test_9_4mib_binary_with_raised_limit(echo):
    """Autobahn 9.2.4."""
    c = echo("--max-message-size", "8MiB")()
    payload = os.urandom(4 * MiB)
    c.send_frame(OP_BINARY, payload)
    assert_echo(c, OP_BINARY, payload, timeout=20)
    clean_close(c)


def test_9_1mib_delivered_in_4096_byte_chops(ws):
    """Autobahn 9.5.x/9.6.x: a 1 MiB frame arriving in 256 separate segments."""
    payload = os.urandom(MiB)
    ws.send_slowly(ws.frame(OP_BINARY, payload), step=4096)
    assert_echo(ws, OP_BINARY, payload)
    clean_close(ws)


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_9_1000_small_messages_in_one_segment_are_all_echoed_in_order(ws, opcode):
    """Autobahn 9.7.x/9.8.x: many messages back to back; none lost, none reordered."""
    msgs = [f"{i:04d}".encode() + b"m" * 60 for i in range(1000)]
    ws.send(b"".join(ws.frame(opcode, m) for m in msgs))
    for m in msgs:
        assert_echo(ws, opcode, m)
    clean_close(ws)


def test_9_one_byte_over_the_limit_is_1009(echo):
    c = echo("--max-message-size", "1MiB")()
    send_until_refused(c, c.frame(OP_BINARY, b"\x01" * (MiB + 1)))
    got, _, before = c.expect_close()
    assert before == [] and got == 1009


def test_9_one_byte_over_the_echo_default_of_16mib_is_1009(ws):
    send_until_refused(ws, ws.frame(OP_BINARY, b"\x01" * (16 * MiB + 1)))
    got, _, before = ws.expect_close(15)
    assert before == [] and got == 1009


def test_9_oversized_frame_header_is_refused_without_the_payload(echo):
    """A frame announcing 2 MiB over a 1 KiB limit is refused from its header alone."""
    c = echo("--max-message-size", "1KiB")()
    c.send(c.frame(OP_BINARY, b"\x00" * (2 * MiB))[:14 + 100])
    got, _, before = c.expect_close(5.0)
    assert before == [] and got == 1009


def test_9_frame_length_with_the_top_bit_set_is_refused(ws):
    """RFC 6455 5.2: the most significant bit of a 64-bit length MUST be 0. A frame claiming
    2^63 + 5 bytes is refused from its header (1002 or 1009), not waited for or allocated."""
    ws.send(ws.frame(OP_BINARY, b"12345", length_override=(1 << 63) + 5))
    got, _, before = ws.expect_close(5.0)
    assert before == [] and got in (1002, 1009), got


def test_9_oversized_fragmented_message_is_1009(echo):
    c = echo("--max-message-size", "1KiB")()
    c.send(b"".join(c.frame(op, chunk, fin=fin) for op, chunk, fin in fragments(OP_TEXT, b"z" * 2000, 100)))
    got, _, before = c.expect_close()
    assert before == [] and got == 1009


# ============================================================================ 10 misc

def test_10_64k_auto_fragmented_in_1300_byte_frames(ws):
    """Autobahn 10.1.1: 65536 bytes of text in fragments of 1300."""
    payload = b"*" * 65536
    _many_fragments(ws, OP_TEXT, payload, 1300)
    assert_echo(ws, OP_TEXT, payload)
    clean_close(ws)


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_PING], ids=["text", "ping"])
def test_10_unmasked_client_frame_fails_with_1002(ws, opcode):
    """RFC 6455 5.1: a server MUST close the connection on an unmasked client frame."""
    ws.send_frame(opcode, b"unmasked", mask=False)
    assert_failed(ws, 1002)


def test_10_all_zero_mask_key_is_accepted(ws):
    """RFC 6455 5.3: the key is any 32-bit value; 0 is one (the payload then goes in clear)."""
    ws.send_frame(OP_TEXT, b"clear", mask_key=b"\0\0\0\0")
    assert_echo(ws, OP_TEXT, b"clear")
    clean_close(ws)


def test_10_connections_are_independent(echo):
    """A failed connection does not disturb another one on the same server."""
    connect = echo()
    good, bad = connect(), connect()
    bad.send_frame(OP_TEXT, b"\xff")
    assert_failed(bad, 1007)
    good.send_frame(OP_TEXT, b"still here")
    assert_echo(good, OP_TEXT, b"still here")
    clean_close(good)
