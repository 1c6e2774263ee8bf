"""RFC 6455 conformance of the client side, `wsig listen URL --echo`: the checks of Autobahn
TestSuite's sections 1-10 (fuzzingserver) redone with a raw socket server (rawws.RawServer).

The test is the server: it answers the upgrade, sends crafted (unmasked, unless a test says so)
frames, and checks what comes back (every client frame must be masked, RFC 6455 5.1), how the
client closes and its exit code (SPEC.md 5 and 8: a normal close 1000/1001 -> 0; a protocol error,
close 1002/1007/1009 -> 76). Every wait has a deadline; nothing sleeps.
"""
import os
import subprocess

import pytest

from conftest import WSIG
from rawws import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, ConnectionEnded, RawServer,
                   close_payload, fragments)

MiB = 1024 * 1024
EXIT_OK, EXIT_PROTOCOL = 0, 76


class Listener:
    """`wsig listen ws://127.0.0.1:PORT/conformance --echo ARGS` and the one connection it made."""

    def __init__(self, tmp_path, args):
        self.peer = RawServer()
        env = dict(os.environ)
        env.pop("WSIG_SECRET", None)
        self.err_path = tmp_path / f"listen-{self.peer.port}.stderr"
        self.out = open(tmp_path / f"listen-{self.peer.port}.stdout", "wb")  # a 16 MiB echo is printed too
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen([WSIG, "listen", self.peer.url(), "--echo", *map(str, args)],
                                     stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.err, env=env)
        try:
            self.conn = self.peer.accept()
        except Exception:
            self.stop()
            raise

    def stderr(self):
        self.err.flush()
        return self.err_path.read_bytes().decode(errors="replace")

    def wait(self, timeout=10.0):
        """wsig's exit code once it has ended (within the deadline)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"wsig listen still running after {timeout}s: {self.stderr()}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.peer.close()
        self.out.close()
        self.err.close()


@pytest.fixture
def listen_echo(tmp_path):
    made = []

    def start(*args):
        lst = Listener(tmp_path, args)
        made.append(lst)
        return lst

    yield start
    for lst in made:
        lst.stop()


@pytest.fixture
def lst(listen_echo):
    return listen_echo()


def assert_echo(c, opcode, payload, timeout=10.0):
    """The client sent `payload` back as one masked, unfragmented frame."""
    f = c.recv_frame(timeout)
    assert (f.fin, f.rsv, f.opcode, f.masked) == (True, 0, opcode, True), f[:3] + (f.masked,)
    assert len(f.payload) == len(payload)
    assert f.payload == payload


def expect_client_close(c, timeout=10.0):
    """The client's close frame (masked), with no frame before it: (code, reason)."""
    f = c.recv_frame(timeout)
    if f.opcode != OP_CLOSE:
        raise AssertionError(f"expected the client's close, got opcode {f.opcode} {f.payload[:60]!r}")
    assert f.masked and f.fin and f.rsv == 0, f[:3] + (f.masked,)
    if not f.payload:
        return None, b""
    assert len(f.payload) >= 2, f.payload
    return int.from_bytes(f.payload[:2], "big"), f.payload[2:]


def no_frame_within(c, seconds):
    """Nothing arrives for `seconds` (a bounded check of an absence): "silence" or "tcp closed"."""
    try:
        f = c.recv_frame(seconds)
    except TimeoutError:
        return "silence"
    except ConnectionEnded:
        return "tcp closed"
    raise AssertionError(f"unexpected frame: opcode {f.opcode} {f.payload[:60]!r}")


def assert_client_failed(lst, code, exit_code=EXIT_PROTOCOL):
    """The client failed the connection: close `code` (masked) and nothing before it; once the
    server closes TCP, wsig exits with `exit_code`."""
    got, reason = expect_client_close(lst.conn)
    assert got == code, f"client closed with {got} {reason!r}, expected {code}"
    lst.conn.close()
    assert lst.wait() == exit_code, lst.stderr()


def close_normally(lst, code=1000):
    """Server-initiated close handshake: the client echoes the close, the server closes TCP, exit 0."""
    lst.conn.send_close(code)
    got, _ = expect_client_close(lst.conn)
    assert got == code
    lst.conn.close()
    assert lst.wait() == EXIT_OK, lst.stderr()


# ============================================================================ 1 framing

@pytest.mark.parametrize("length", [0, 125, 126, 127, 128, 65535, 65536])
def test_1_echo_of_each_length_encoding(lst, length):
    """Autobahn 1.1.1-1.2.7: text then binary of the same length, each echoed masked."""
    text = b"*" * length
    binary = bytes(i % 256 for i in range(length))
    lst.conn.send(lst.conn.frame(OP_TEXT, text) + lst.conn.frame(OP_BINARY, binary))
    assert_echo(lst.conn, OP_TEXT, text)
    assert_echo(lst.conn, OP_BINARY, binary)
    close_normally(lst)


def test_1_16mib_binary_in_one_frame(lst):
    """Autobahn 9.2.6 for the client: within its 64MiB default."""
    payload = os.urandom(16 * MiB)
    lst.conn.send_frame(OP_BINARY, payload)
    assert_echo(lst.conn, OP_BINARY, payload, timeout=30)
    close_normally(lst)


def test_1_frame_delivered_one_byte_per_segment(lst):
    """Autobahn 1.1.8 / 9.5.x: a frame trickling in one byte per TCP segment."""
    payload = "slow ünïcödé ".encode() * 20
    lst.conn.send_slowly(lst.conn.frame(OP_TEXT, payload), step=1)
    assert_echo(lst.conn, OP_TEXT, payload)
    close_normally(lst)


# ============================================================================ 2 pings and pongs

@pytest.mark.parametrize("payload", [b"", b"Hello, world!", bytes(range(125))], ids=["empty", "text", "binary-125"])
def test_2_ping_is_answered_by_a_masked_pong(lst, payload):
    """Autobahn 2.1-2.4."""
    lst.conn.send_frame(OP_PING, payload)
    assert_echo(lst.conn, OP_PONG, payload)
    close_normally(lst)


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG], ids=["ping", "pong"])
def test_2_control_frame_of_126_bytes_fails_with_1002(lst, opcode):
    """Autobahn 2.5: control frames carry at most 125 bytes (RFC 6455 5.5)."""
    lst.conn.send_frame(opcode, b"x" * 126)
    assert_client_failed(lst, 1002)


def test_2_unsolicited_pong_is_ignored(lst):
    """Autobahn 2.7/2.8."""
    lst.conn.send(lst.conn.frame(OP_PONG, b"unsolicited") + lst.conn.frame(OP_TEXT, b"after"))
    assert_echo(lst.conn, OP_TEXT, b"after")
    close_normally(lst)


def test_2_ten_pings_in_one_segment_get_ten_pongs_in_order(lst):
    """Autobahn 2.10/2.11."""
    payloads = [f"ping {i}".encode() for i in range(10)]
    lst.conn.send(b"".join(lst.conn.frame(OP_PING, p) for p in payloads))
    for p in payloads:
        assert_echo(lst.conn, OP_PONG, p)
    close_normally(lst)


def test_2_ping_and_close_during_a_big_echo_write_wait_for_the_frame(lst):
    """An 8 MiB message, 3 pings and a close in one go, read only afterwards: echo intact, then 3
    masked pongs in order, then the close."""
    c = lst.conn
    payload = os.urandom(8 * MiB)
    c.send(c.frame(OP_BINARY, payload) + b"".join(c.frame(OP_PING, b"p%d" % i) for i in range(3))
           + c.frame(OP_CLOSE, close_payload(1000)))
    assert_echo(c, OP_BINARY, payload, timeout=30)
    for i in range(3):
        assert_echo(c, OP_PONG, b"p%d" % i)
    assert expect_client_close(c)[0] == 1000
    c.close()
    assert lst.wait() == EXIT_OK, lst.stderr()


# ============================================================================ 3 reserved bits

@pytest.mark.parametrize("rsv", [4, 2, 1, 7], ids=["rsv1", "rsv2", "rsv3", "all"])
def test_3_reserved_bits_fail_with_1002(lst, rsv):
    """Autobahn 3.1-3.7: nothing negotiated, RSV bits must be 0; nothing is echoed."""
    lst.conn.send_frame(OP_TEXT, b"Hello, world!", rsv=rsv)
    assert_client_failed(lst, 1002)


def test_3_good_frame_then_reserved_bits_then_ping(lst):
    """Autobahn 3.2: echo of the good frame, then the failure; the ping gets no pong."""
    c = lst.conn
    c.send(c.frame(OP_TEXT, b"good") + c.frame(OP_TEXT, b"bad", rsv=2) + c.frame(OP_PING, b"p"))
    assert_echo(c, OP_TEXT, b"good")
    assert_client_failed(lst, 1002)


# ============================================================================ 4 opcodes

@pytest.mark.parametrize("opcode", [3, 7, 11, 15])
def test_4_reserved_opcodes_fail_with_1002(lst, opcode):
    """Autobahn 4.1.x/4.2.x."""
    lst.conn.send_frame(opcode, b"reserved")
    assert_client_failed(lst, 1002)


# ============================================================================ 5 fragmentation

@pytest.mark.parametrize("opcode,nfrag", [(OP_TEXT, 2), (OP_BINARY, 2), (OP_TEXT, 100)],
                         ids=["text-2", "binary-2", "text-100"])
def test_5_fragmented_message_is_echoed_as_one(lst, opcode, nfrag):
    """Autobahn 5.3-5.8."""
    payload = ("fragmënt" * 50).encode()[:400]
    size = -(-len(payload) // nfrag)
    frames = [lst.conn.frame(op, chunk, fin=fin) for op, chunk, fin in fragments(opcode, payload, size)]
    assert len(frames) == nfrag
    lst.conn.send(b"".join(frames))
    assert_echo(lst.conn, opcode, payload)
    close_normally(lst)


def test_5_ping_between_fragments_is_answered_first(lst):
    """Autobahn 5.6-5.8: the pong comes before the reassembled message."""
    c = lst.conn
    c.send(c.frame(OP_TEXT, b"fragment1", fin=False) + c.frame(OP_PING, b"between"))
    assert_echo(c, OP_PONG, b"between")
    c.send_frame(OP_CONT, b"fragment2", fin=True)
    assert_echo(c, OP_TEXT, b"fragment1fragment2")
    close_normally(lst)


def test_5_pings_between_64_fragments_are_all_answered_before_the_message(lst):
    """Autobahn 5.19/5.20 at scale: 1 MiB in 64 fragments, a ping after each of the first 63."""
    c = lst.conn
    payload = os.urandom(MiB)
    data = b""
    for i, (op, chunk, fin) in enumerate(fragments(OP_BINARY, payload, MiB // 64)):
        data += c.frame(op, chunk, fin=fin)
        if not fin:
            data += c.frame(OP_PING, b"ping %d" % i)
    c.send(data)
    for i in range(63):
        assert_echo(c, OP_PONG, b"ping %d" % i)
    assert_echo(c, OP_BINARY, payload)
    close_normally(lst)


def test_5_16mib_text_in_4096_fragments(lst):
    """Autobahn 9.3.x for the client: a 16 MiB message in 4096 fragments of 4 KiB passes within
    the default 64MiB limit, echoed as one frame."""
    payload = b"0123456789abcdef" * (MiB)
    c = lst.conn
    c.send(b"".join(c.frame(op, chunk, fin=fin) for op, chunk, fin in fragments(OP_TEXT, payload, 4096)))
    assert_echo(c, OP_TEXT, payload, timeout=30)
    close_normally(lst)


@pytest.mark.parametrize("fin", [True, False], ids=["fin", "nofin"])
def test_5_continuation_without_a_start_fails_with_1002(lst, fin):
    """Autobahn 5.9-5.12."""
    lst.conn.send_frame(OP_CONT, b"non-continuation payload", fin=fin)
    assert_client_failed(lst, 1002)


def test_5_new_message_before_the_previous_finished_fails_with_1002(lst):
    """RFC 6455 5.4."""
    c = lst.conn
    c.send(c.frame(OP_TEXT, b"first part", fin=False) + c.frame(OP_TEXT, b"intruder"))
    assert_client_failed(lst, 1002)


@pytest.mark.parametrize("opcode", [OP_PING, OP_PONG], ids=["ping", "pong"])
def test_5_control_frame_without_fin_fails_with_1002(lst, opcode):
    """Autobahn 5.1/5.2."""
    c = lst.conn
    c.send(c.frame(opcode, b"fragmented control", fin=False) + c.frame(OP_CONT, b"rest"))
    assert_client_failed(lst, 1002)


# ============================================================================ 6 UTF-8

def test_6_valid_multibyte_utf8_is_echoed(lst):
    """Autobahn 6.2/6.5: 2-, 3- and 4-byte sequences, the last one split across fragments."""
    whole = "κόσμε Hello-µ@ßöäüàá 𝄞😀 \U0010ffff".encode()
    split = "𝄞".encode()
    c = lst.conn
    c.send(c.frame(OP_TEXT, whole) + c.frame(OP_TEXT, b"a" + split[:2], fin=False)
           + c.frame(OP_CONT, split[2:] + b"z"))
    assert_echo(c, OP_TEXT, whole)
    assert_echo(c, OP_TEXT, b"a" + split + b"z")
    close_normally(lst)


@pytest.mark.parametrize("payload", [b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
                                     b"\xc0\xaf", b"\xf4\x90\x80\x80", b"\xff"],
                         ids=["surrogate", "overlong", "above-10ffff", "ff"])
def test_6_invalid_utf8_in_one_frame_fails_with_1007(lst, payload):
    lst.conn.send_frame(OP_TEXT, payload)
    assert_client_failed(lst, 1007)


def test_6_invalid_utf8_across_fragments_fails_with_1007(lst):
    """Autobahn 6.3.2."""
    c = lst.conn
    c.send(c.frame(OP_TEXT, b"\xce\xba\xed", fin=False) + c.frame(OP_CONT, b"\xa0\x80edited"))
    assert_client_failed(lst, 1007)


def test_6_fail_fast_on_the_first_fragment(lst):
    """Autobahn 6.4.1: 1007 before the message is complete (the rest is never sent)."""
    lst.conn.send_frame(OP_TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80", fin=False)
    assert_client_failed(lst, 1007)


def test_6_fail_fast_inside_a_partly_delivered_frame(lst):
    """Autobahn 6.4.3: a frame announcing 1000 bytes delivers an invalid sequence in its first
    bytes and stalls; 1007 without the rest of the frame."""
    data = lst.conn.frame(OP_TEXT, b"\xce\xba\xe1\xbd\xb9\xf4\x90\x80\x80" + b"a" * 991)
    lst.conn.send(data[:4 + 20])  # 2+2 header bytes (unmasked), 20 payload bytes
    assert_client_failed(lst, 1007)


# ============================================================================ 7 close handling

@pytest.mark.parametrize("code", [1000, 1001])
def test_7_server_close_is_echoed_and_exits_0(lst, code):
    """Autobahn 7.1.1: the client answers the close with the same code and ends with 0."""
    lst.conn.send_frame(OP_TEXT, b"Hello World!")
    assert_echo(lst.conn, OP_TEXT, b"Hello World!")
    close_normally(lst, code)


def test_7_client_waits_for_the_server_to_close_tcp(lst):
    """RFC 6455 7.1.1: after the close handshake the server closes TCP first; the client's close
    frame is its last frame and it does not end before the TCP close (or its own time-out)."""
    c = lst.conn
    c.send_close(1000)
    assert expect_client_close(c)[0] == 1000
    assert no_frame_within(c, 0.3) == "silence"  # no further frame, and no TCP close from the client yet
    assert lst.proc.poll() is None
    c.close()
    assert lst.wait() == EXIT_OK, lst.stderr()


def test_7_close_without_payload_exits_0(lst):
    """Autobahn 7.3.1: an empty close (1005 to the application) is a normal end."""
    lst.conn.send_close()
    got, reason = expect_client_close(lst.conn)
    assert got in (None, 1000) and reason == b""
    lst.conn.close()
    assert lst.wait() == EXIT_OK, lst.stderr()


def test_7_close_with_reason(lst):
    """Autobahn 7.3.3."""
    lst.conn.send_close(1000, "bye κόσμε")
    got, reason = expect_client_close(lst.conn)
    assert got == 1000 and reason in (b"", "bye κόσμε".encode())
    lst.conn.close()
    assert lst.wait() == EXIT_OK, lst.stderr()


@pytest.mark.parametrize("code", [1002, 1007, 1009])
def test_7_server_closing_with_an_error_code_exits_76(lst, code):
    """SPEC.md 8: a close 1002/1007/1009 from the server is a protocol error (76); the client still
    completes the handshake with a close frame."""
    lst.conn.send_close(code)
    got, _ = expect_client_close(lst.conn)
    assert got in (code, 1000)
    lst.conn.close()
    assert lst.wait() == EXIT_PROTOCOL, lst.stderr()


@pytest.mark.parametrize("code", [0, 999, 1005, 1006, 1016, 2999])
def test_7_invalid_close_code_fails_with_1002(lst, code):
    """Autobahn 7.9.x."""
    lst.conn.send_close(code)
    assert_client_failed(lst, 1002)


def test_7_close_payload_of_one_byte_fails_with_1002(lst):
    """Autobahn 7.3.2."""
    lst.conn.send_frame(OP_CLOSE, b"\x03")
    assert_client_failed(lst, 1002)


def test_7_close_reason_with_invalid_utf8_fails(lst):
    """Autobahn 7.5.1: 1002 or 1007."""
    lst.conn.send_close(1000, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited")
    got, _ = expect_client_close(lst.conn)
    assert got in (1002, 1007), got
    lst.conn.close()
    assert lst.wait() == EXIT_PROTOCOL, lst.stderr()


def test_7_big_message_then_close_is_echoed_then_closed(lst):
    """Autobahn 7.1.6: a 256 KiB message and a close in one go: the echo, then the close."""
    c = lst.conn
    payload = b"BAsd7&jh23" * 25600
    c.send(c.frame(OP_TEXT, payload) + c.frame(OP_CLOSE, close_payload(1000)))
    assert_echo(c, OP_TEXT, payload)
    assert expect_client_close(c)[0] == 1000
    c.close()
    assert lst.wait() == EXIT_OK, lst.stderr()


def test_7_nothing_is_echoed_after_the_close(lst):
    """Autobahn 7.1.2-7.1.4: data, a ping and a second close after the close get nothing."""
    c = lst.conn
    c.send(c.frame(OP_CLOSE, close_payload(1000)) + c.frame(OP_TEXT, b"after close")
           + c.frame(OP_PING, b"after") + c.frame(OP_CLOSE, close_payload(1000)))
    assert expect_client_close(c)[0] == 1000
    assert no_frame_within(c, 0.3)
    c.close()
    assert lst.wait() == EXIT_OK, lst.stderr()


# ============================================================================ 9 limits and performance

def test_9_1mib_delivered_in_4096_byte_chops(lst):
    """Autobahn 9.5.x/9.6.x for the client."""
    payload = os.urandom(MiB)
    lst.conn.send_slowly(lst.conn.frame(OP_BINARY, payload), step=4096)
    assert_echo(lst.conn, OP_BINARY, payload)
    close_normally(lst)


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY], ids=["text", "binary"])
def test_9_1000_small_messages_in_one_segment_are_all_echoed_in_order(lst, opcode):
    """Autobahn 9.7.x/9.8.x."""
    msgs = [f"{i:04d}".encode() + b"m" * 60 for i in range(1000)]
    c = lst.conn
    c.send(b"".join(c.frame(opcode, m) for m in msgs))
    for m in msgs:
        assert_echo(c, opcode, m)
    close_normally(lst)


@pytest.mark.parametrize("fragmented", [False, True], ids=["one-frame", "fragmented"])
def test_9_message_over_max_message_size_fails_with_1009(listen_echo, fragmented):
    lst = listen_echo("--max-message-size", "1KiB")
    c = lst.conn
    if fragmented:
        c.send(b"".join(c.frame(op, chunk, fin=fin) for op, chunk, fin in fragments(OP_BINARY, b"z" * 2000, 100)))
    else:
        c.send_frame(OP_BINARY, b"z" * 2000)
    assert_client_failed(lst, 1009)


def test_9_default_limit_is_64mib(lst):
    """SPEC.md 5: the client's default --max-message-size is 64MiB; a frame announcing one byte
    more is refused from its header alone with 1009 (the payload is never sent)."""
    lst.conn.send(lst.conn.frame(OP_BINARY, b"\0" * 100, length_override=64 * MiB + 1))
    assert_client_failed(lst, 1009)


def test_9_a_frame_of_exactly_64mib_is_waited_for(lst):
    """The limit is inclusive: a frame announcing exactly 64 MiB is not refused from its header;
    the client waits for its payload (we end it by dropping TCP: 69, connection lost)."""
    lst.conn.send(lst.conn.frame(OP_BINARY, b"\0" * 100, length_override=64 * MiB))
    assert no_frame_within(lst.conn, 0.3) == "silence"
    lst.conn.close()
    assert lst.wait() == 69, lst.stderr()


def test_9_frame_length_with_the_top_bit_set_is_refused(lst):
    """RFC 6455 5.2: a 64-bit length with its top bit set is refused from the header (1002 or 1009)."""
    lst.conn.send(lst.conn.frame(OP_BINARY, b"12345", length_override=(1 << 63) + 5))
    got, _ = expect_client_close(lst.conn)
    assert got in (1002, 1009), got
    lst.conn.close()
    assert lst.wait() == EXIT_PROTOCOL, lst.stderr()


# ============================================================================ 10 misc

@pytest.mark.parametrize("opcode", [OP_TEXT, OP_PING, OP_CLOSE], ids=["text", "ping", "close"])
def test_10_masked_frame_from_the_server_fails_with_1002(lst, opcode):
    """RFC 6455 5.1: "A client MUST close a connection if it detects a masked frame"."""
    payload = close_payload(1000) if opcode == OP_CLOSE else b"masked by the server"
    lst.conn.send_frame(opcode, payload, mask=True)
    assert_client_failed(lst, 1002)


def test_10_mask_keys_are_fresh_per_frame(lst):
    """RFC 6455 5.3: the client MUST pick a fresh, unpredictable masking key for each frame: 100
    echoes carry 100 different keys (a repeat among 100 random 32-bit keys has odds of about
    1e-6; one is tolerated), none of them the all-zero key that leaves the payload in clear."""
    c = lst.conn
    c.send(b"".join(c.frame(OP_BINARY, b"k%d" % i) for i in range(100)))
    keys = []
    for i in range(100):
        f = c.recv_frame()
        assert f.masked and f.payload == b"k%d" % i
        keys.append(f.mask_key)
    assert len(set(keys)) >= 99, f"{len(set(keys))} distinct keys in 100 frames: {[k.hex() for k in keys[:20]]}"
    assert b"\0\0\0\0" not in keys
    close_normally(lst)
