"""`wsig send` through the real binary: the request-header push against Python's http.server, the
envelope over ws:// against Python's websockets, status -> exit code, and the CI story against
`wsig serve` (listen, send, assert what arrived).
"""
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from conftest import DEADLINE, WSIG, read_line, run_wsig
from peers import HttpPeer, PodeLikePeer, WsPeer, free_port, make_cert, server_tls_context


def send(*args, input=None, timeout=DEADLINE):
    env = dict(os.environ)
    env.pop("WSIG_SECRET", None)
    return subprocess.run([WSIG, "send", *map(str, args)], input=input, capture_output=True, env=env,
                          timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)


def answering(status, body):
    return lambda path, headers, data: (status, body)


# ---------------------------------------------------------------------------------- http push

def test_http_push_delivered_1_prints_the_answer_and_exits_0(peers):
    p = peers(HttpPeer, answering(200, '{"delivered":1}'))
    r = send(p.url + "/signal", "hello", "--client-id", "id-1", "--name", "Chat", "--group", "g1",
             "--group", "g2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b'{"delivered":1}\n'
    (path, headers, body), = p.requests
    assert path == "/signal"
    assert body == b"hello"
    assert headers["X-Pode-Signal-Client-Id"] == "id-1"
    assert headers["X-Pode-Signal-Name"] == "Chat"
    assert headers["X-Pode-Signal-Group"] == "g1,g2"
    assert headers["Content-Type"].startswith("text/plain")


def test_http_broadcast_sends_only_the_headers_given(peers):
    p = peers(HttpPeer, answering(200, '{"delivered":3}'))
    r = send(p.url + "/signal", "hi", "--name", "Chat")
    assert r.returncode == 0
    headers = p.requests[0][1]
    assert "X-Pode-Signal-Client-Id" not in headers and "X-Pode-Signal-Group" not in headers


def test_delivered_0_exits_1_unless_allow_none(peers):
    p = peers(HttpPeer, answering(200, '{"delivered":0}'))
    r = send(p.url + "/signal", "hello", "--name", "Nobody")
    assert r.returncode == 1
    assert r.stdout == b'{"delivered":0}\n'
    r = send(p.url + "/signal", "hello", "--name", "Nobody", "--allow-none")
    assert r.returncode == 0, r.stderr


def test_a_2xx_without_delivered_is_success(peers):
    p = peers(HttpPeer, answering(200, "ok"))
    r = send(p.url + "/any/route", "x")
    assert (r.returncode, r.stdout) == (0, b"ok\n")


@pytest.mark.parametrize("status,code", [(404, 67), (403, 77), (401, 77), (400, 65), (500, 69), (503, 69)])
def test_http_status_maps_to_exit_code(peers, status, code):
    p = peers(HttpPeer, answering(status, '{"error":"the reason"}'))
    r = send(p.url + "/signal", "hello", "--client-id", "x", "--name", "Chat")
    assert r.returncode == code, r.stderr
    assert r.stdout == b""
    assert str(status).encode() in r.stderr and b"the reason" in r.stderr


def test_json_data_is_sent_compact_as_json(peers):
    p = peers(HttpPeer, answering(200, '{"delivered":1}'))
    r = send(p.url + "/signal", '{ "a" : [1, 2] }', "--json", "--name", "Chat")
    assert r.returncode == 0, r.stderr
    _, headers, body = p.requests[0]
    assert body == b'{"a":[1,2]}'
    assert headers["Content-Type"] == "application/json"


def test_invalid_json_exits_65_without_a_request(peers):
    p = peers(HttpPeer, answering(200, '{"delivered":1}'))
    r = send(p.url + "/signal", "{not json", "--json", "--name", "Chat")
    assert r.returncode == 65
    assert b"JSON" in r.stderr
    assert p.requests == []


def test_at_file_is_sent_verbatim_and_a_missing_one_exits_66(peers, tmp_path):
    p = peers(HttpPeer, answering(200, '{"delivered":1}'))
    f = tmp_path / "msg"
    f.write_bytes(b"line 1\nline 2\n")
    r = send(p.url + "/signal", f"@{f}", "--name", "Chat")
    assert r.returncode == 0, r.stderr
    assert p.requests[0][2] == b"line 1\nline 2\n"
    r = send(p.url + "/signal", f"@{tmp_path / 'missing'}", "--name", "Chat")
    assert r.returncode == 66
    assert len(p.requests) == 1


def test_dash_reads_all_of_stdin(peers):
    p = peers(HttpPeer, answering(200, '{"delivered":1}'))
    r = send(p.url + "/signal", "-", "--name", "Chat", input=b"from stdin\n")
    assert r.returncode == 0, r.stderr
    assert p.requests[0][2] == b"from stdin\n"


def test_api_key_file_becomes_a_bearer_header(peers, tmp_path):
    p = peers(HttpPeer, answering(200, '{"delivered":1}'))
    key = tmp_path / "key"
    key.write_text("s3cret-key\n")
    r = send(p.url + "/signal", "x", "--name", "Chat", "--api-key-file", key, "-H", "X-Trace: 42")
    assert r.returncode == 0, r.stderr
    headers = p.requests[0][1]
    assert headers["Authorization"] == "Bearer s3cret-key"
    assert headers["X-Trace"] == "42"


def test_unreadable_api_key_file_exits_78(tmp_path):
    r = send(f"http://127.0.0.1:{free_port()}/signal", "x", "--api-key-file", tmp_path / "none")
    assert r.returncode == 78


def test_refused_exits_69():
    r = send(f"http://127.0.0.1:{free_port()}/signal", "x", "--name", "Chat")
    assert r.returncode == 69


def test_a_server_that_never_answers_hits_the_timeout_124():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4)  # connections complete in the backlog; nobody ever reads or answers
    try:
        t0 = time.monotonic()
        r = send(f"http://127.0.0.1:{s.getsockname()[1]}/signal", "x", "--timeout", "500ms")
        assert r.returncode == 124, r.stderr
        assert 0.5 <= time.monotonic() - t0 < DEADLINE
    finally:
        s.close()


@pytest.mark.parametrize("args", [[], ["http://127.0.0.1:1/"], ["ftp://x/", "d"],
                                  ["http://127.0.0.1:1/", "d", "--timeout", "never"],
                                  ["http://127.0.0.1:1/", "d", "--path", "Chat"],
                                  ["http://127.0.0.1:1/", "d", "-H", "bad header"]])
def test_usage_errors_exit_2(args):
    r = send(*args)
    assert r.returncode == 2, r.stderr


# ------------------------------------------------------------------------------ ws envelope

def receive_one(received):
    async def script(ws, peer):
        await peer.recv(ws)
        await peer.drain(ws)
    return script


def test_ws_sends_exactly_one_envelope_and_closes_1000(peers):
    p = peers(WsPeer, receive_one([]))
    r = send(p.url + "/ws", "hello", "--path", "Chat", "--client-id", "id-9", "--group", "g1", "--direct")
    assert r.returncode == 0, r.stderr
    assert p.received == ['{"message":"hello","path":"Chat","clientId":"id-9","group":"g1","direct":true}']
    assert p.wait_closed() == (1000, "")


def test_ws_json_and_name_as_path(peers):
    p = peers(WsPeer, receive_one([]))
    r = send(p.url, '{"n": 1}', "--json", "--name", "Chat")
    assert r.returncode == 0, r.stderr
    assert p.received == ['{"message":{"n":1},"path":"Chat"}']


def test_ws_upgrade_forbidden_exits_77(peers):
    async def refuse(path, headers):
        from http import HTTPStatus
        return HTTPStatus.FORBIDDEN, [], b"forbidden\n"
    p = peers(WsPeer, receive_one([]), process_request=refuse)
    r = send(p.url, "x")
    assert r.returncode == 77


def test_ws_refused_exits_69():
    r = send(f"ws://127.0.0.1:{free_port()}/ws", "x")
    assert r.returncode == 69


def test_ws_api_key_goes_on_the_upgrade(peers, tmp_path):
    p = peers(WsPeer, receive_one([]))
    key = tmp_path / "key"
    key.write_text("k\n")
    r = send(p.url, "x", "--api-key-file", key)
    assert r.returncode == 0, r.stderr
    assert p.requests[0][1]["Authorization"] == "Bearer k"


# ----------------------------------------------------------------- the CI story, wsig serve

def serve_has_routes():
    r = run_wsig("serve", "--help")
    return r.returncode == 0 and "--route" in r.stdout.split("Examples:")[0]


@pytest.mark.skipif(not serve_has_routes(), reason="wsig serve has no --route yet")
def test_ci_story_serve_listen_send(serve, tmp_path):
    server = serve("--route", "/ws=Chat")
    id_file = tmp_path / "id"
    listener = subprocess.Popen([WSIG, "listen", server.ws_url + "/ws", "--count", "1", "--id-file", str(id_file),
                                 "--timeout", "10s"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    try:
        end = time.monotonic() + DEADLINE
        while not id_file.exists():
            assert listener.poll() is None, listener.stderr.read()
            assert time.monotonic() < end, "no id file"
            time.sleep(0.01)  # polling for the file: the event we wait on
        client_id = id_file.read_text().strip()
        assert client_id
        r = send(server.url + "/signal", "hello", "--name", "Chat", "--client-id", client_id)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout) == {"delivered": 1}
        out, err = listener.communicate(timeout=DEADLINE)
        assert listener.returncode == 0, err
        assert out == b"hello\n"
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_while_waiting_for_the_answer(sig, code):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    try:
        proc = subprocess.Popen([WSIG, "send", f"http://127.0.0.1:{s.getsockname()[1]}/signal", "x"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        conn, _ = s.accept()  # the event: wsig is connected and waiting for the answer
        conn.settimeout(DEADLINE)
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(4096)
        proc.send_signal(sig)
        assert proc.wait(DEADLINE) == code
        conn.close()
    finally:
        s.close()


# ---------------------------------------------------------------------------------------- TLS

@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    return make_cert(str(tmp_path_factory.mktemp("tls")))


def test_https_push_with_cacert(peers, cert):
    p = peers(HttpPeer, answering(200, '{"delivered":1}'), ssl_context=server_tls_context(*cert))
    r = send(p.url + "/signal", "over tls", "--name", "Chat", "--cacert", cert[0])
    assert (r.returncode, r.stdout) == (0, b'{"delivered":1}\n'), r.stderr
    assert p.requests[0][2] == b"over tls"


def test_https_untrusted_exits_76_and_insecure_passes(peers, cert):
    p = peers(HttpPeer, answering(200, '{"delivered":1}'), ssl_context=server_tls_context(*cert))
    r = send(p.url + "/signal", "x", "--name", "Chat")
    assert r.returncode == 76, r.stderr
    r = send(p.url + "/signal", "x", "--name", "Chat", "--insecure")
    assert r.returncode == 0, r.stderr


def test_wss_envelope_with_cacert(peers, cert):
    p = peers(WsPeer, receive_one([]), ssl_context=server_tls_context(*cert))
    r = send(p.url + "/ws", "hi", "--path", "Chat", "--cacert", cert[0])
    assert r.returncode == 0, r.stderr
    assert p.received == ['{"message":"hi","path":"Chat"}']
    assert p.wait_closed() == (1000, "")


def test_ws_send_to_a_pode_style_server_that_answers_close_empty_and_drops(peers):
    p = peers(PodeLikePeer)
    r = send(p.url + "/msg", "hello", "--path", "Msg")
    assert r.returncode == 0, r.stderr
    assert p.frames.get(timeout=DEADLINE) == (0x1, b'{"message":"hello","path":"Msg"}')
    opcode, payload = p.frames.get(timeout=DEADLINE)
    assert (opcode, payload[:2]) == (0x8, (1000).to_bytes(2, "big"))
