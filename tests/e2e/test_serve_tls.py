"""`wsig serve` with a certificate (SPEC.md section 3): HTTPS and WSS on the same port, from PEM
(--tls-cert/--tls-key) or PKCS#12 (--pfx/--pfx-password-file); bad or unreadable certificates exit 78.
The certificates are made here with the openssl command line; the peers are Python's ssl module."""
import re
import signal
import subprocess

import pytest

from conftest import run_wsig
from helpers_serve import (OP_TEXT, Peer, RawWS, client_tls_context, envelope, frame, healthy, http, push,
                           raw_http, s_client, text_frame)

ROUTES = ["--route", "/chat=Chat"]


def openssl(*args, cwd):
    subprocess.run(["openssl", *map(str, args)], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem", "-days", "2",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", cwd=d)
    (d / "p12.pass").write_text("p12-pa55word\n")  # one trailing newline: not part of the password
    openssl("pkcs12", "-export", "-inkey", "key.pem", "-in", "cert.pem", "-out", "cert.p12",
            "-passout", "pass:p12-pa55word", cwd=d)
    (d / "wrong.pass").write_text("not-the-password\n")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other-key.pem", "-out", "other-cert.pem",
            "-days", "2", "-subj", "/CN=other", cwd=d)
    (d / "garbage.pem").write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    return d


def tls_args(certs):
    return ["--tls-cert", certs / "cert.pem", "--tls-key", certs / "key.pem"]


def pfx_args(certs):
    return ["--pfx", certs / "cert.p12", "--pfx-password-file", certs / "p12.pass"]


def exercise(s, certs):
    """wss upgrade with a verifying client, https push to it on the same port, and the message arrives."""
    ctx = client_tls_context(cafile=str(certs / "cert.pem"))
    assert s.url.startswith("https://127.0.0.1:"), s.url
    assert s.ws_url.startswith("wss://")
    p = Peer(f"wss://127.0.0.1:{s.port}/chat", ssl=ctx)
    assert p.name == "Chat"
    r = push(s.port, "over https", client_id=p.client_id, name="Chat", tls=ctx)
    assert r.status == 200, r
    assert r.json() == {"delivered": 1}
    assert p.recv() == "over https"
    p.send_env("over wss", direct=True)
    assert p.recv() == "over wss"
    assert healthy(s.port, tls=ctx)
    p.close()


def test_pem_certificate_serves_https_and_wss_on_one_port(serve, certs):
    s = serve(*ROUTES, *tls_args(certs))
    exercise(s, certs)


def test_pkcs12_with_a_password_file(serve, certs):
    s = serve(*ROUTES, *pfx_args(certs))
    exercise(s, certs)


def test_raw_tls_client_sees_the_same_101_and_coalesced_frames_work(serve, certs):
    s = serve(*ROUTES, *tls_args(certs))
    ctx = client_tls_context(cafile=str(certs / "cert.pem"))
    ws = RawWS.open(s.port, "/chat", tls=ctx)
    assert ws.handshake.names()[:5] == ["Upgrade", "Connection", "Sec-WebSocket-Accept", "X-Pode-Signal-Client-Id",
                                        "X-Pode-Signal-Name"], ws.handshake.raw
    ws.send_raw(b"".join(text_frame(envelope(f"t{i}", direct=True)) for i in range(10)))
    assert [ws.recv() for _ in range(10)] == [f"t{i}" for i in range(10)]
    ws.close()


def test_a_large_message_over_wss(serve, certs):
    s = serve(*ROUTES, *tls_args(certs))
    ctx = client_tls_context(cafile=str(certs / "cert.pem"))
    ws = RawWS.open(s.port, "/chat", tls=ctx)
    big = "z" * 500_000
    ws.send_raw(frame(OP_TEXT, envelope(big, direct=True)))
    assert ws.recv() == big
    ws.close()


def test_plain_http_or_a_bad_handshake_on_the_tls_port_leaves_the_server_alive(serve, certs):
    s = serve(*ROUTES, *tls_args(certs))
    ctx = client_tls_context(cafile=str(certs / "cert.pem"))
    try:
        raw_http(s.port, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n", timeout=5)
    except (EOFError, OSError, TimeoutError):
        pass  # refusing plain text is fine; surviving it is what counts
    try:
        raw_http(s.port, b"\x16\x03\x01\x00\x04junk", timeout=5)  # a whole TLS record, not a handshake
    except (EOFError, OSError, TimeoutError):
        pass
    assert healthy(s.port, tls=ctx)
    assert http(s.port, "GET", "/signal/connections", tls=ctx).status == 200


@pytest.mark.parametrize("case", ["missing-cert", "missing-key", "garbage-cert", "key-does-not-match",
                                  "missing-pfx", "wrong-pfx-password", "missing-pfx-password-file", "pem-as-pfx"])
def test_bad_or_unreadable_certificate_exits_78(certs, case):
    args = {
        "missing-cert": ["--tls-cert", certs / "nope.pem", "--tls-key", certs / "key.pem"],
        "missing-key": ["--tls-cert", certs / "cert.pem", "--tls-key", certs / "nope.pem"],
        "garbage-cert": ["--tls-cert", certs / "garbage.pem", "--tls-key", certs / "key.pem"],
        "key-does-not-match": ["--tls-cert", certs / "cert.pem", "--tls-key", certs / "other-key.pem"],
        "missing-pfx": ["--pfx", certs / "nope.p12", "--pfx-password-file", certs / "p12.pass"],
        "wrong-pfx-password": ["--pfx", certs / "cert.p12", "--pfx-password-file", certs / "wrong.pass"],
        "missing-pfx-password-file": ["--pfx", certs / "cert.p12", "--pfx-password-file", certs / "nope.pass"],
        "pem-as-pfx": ["--pfx", certs / "cert.pem", "--pfx-password-file", certs / "p12.pass"],
    }[case]
    r = run_wsig("serve", "-p", "0", *ROUTES, *args, timeout=10)
    assert r.returncode == 78, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    assert r.stderr.strip() != ""


def test_a_slow_reader_over_tls_is_closed_1008_and_the_fast_one_gets_everything(serve, certs):
    s = serve("--route", "/flood=Flood", "--route", "/src=Src", "--send-queue", "64KiB", "--slow-client", "close",
              *tls_args(certs))
    ctx = client_tls_context(cafile=str(certs / "cert.pem"))
    slow = RawWS.open(s.port, "/flood", rcvbuf=4096, tls=ctx)
    fast = RawWS.open(s.port, "/flood", tls=ctx)
    src = RawWS.open(s.port, "/src", tls=ctx)
    for i in range(600):  # in lockstep with the fast reader
        src.send_env(f"{i:06d}:" + "t" * 16384, path="Flood")
        assert fast.recv().startswith(f"{i:06d}:")
    assert slow.expect_close(20) == (1008, "too slow")
    slow.expect_eof()
    slow.sock.close()
    fast.close()
    src.close()


def test_sigterm_closes_tls_clients_with_1001(serve, certs):
    s = serve(*ROUTES, *tls_args(certs))
    ctx = client_tls_context(cafile=str(certs / "cert.pem"))
    clients = [RawWS.open(s.port, "/chat", tls=ctx) for _ in range(3)]
    s.proc.send_signal(signal.SIGTERM)
    for w in clients:
        assert w.expect_close()[0] == 1001
        w.sock.close()
    assert s.proc.wait(timeout=10) == 0


def test_oversized_message_over_tls_closes_1009(serve, certs):
    s = serve(*ROUTES, *tls_args(certs), "--max-message-size", "4KiB")
    ctx = client_tls_context(cafile=str(certs / "cert.pem"))
    ws = RawWS.open(s.port, "/chat", tls=ctx)
    ws.send_raw(frame(OP_TEXT, envelope("y" * 5000, direct=True)))
    assert ws.expect_close()[0] == 1009
    ws.sock.close()


def test_a_static_file_and_a_range_stream_over_https(serve, certs, tmp_path):
    # the chunked file write path (server_session.hpp: write_file) on the TLS stream
    www = tmp_path / "www"
    www.mkdir()
    data = bytes(range(256)) * (16 << 10)  # 4 MiB: many chunks
    (www / "big.bin").write_bytes(data)
    s = serve("--static", www, *tls_args(certs))
    ctx = client_tls_context(cafile=str(certs / "cert.pem"))
    r = http(s.port, "GET", "/big.bin", tls=ctx)
    assert (r.status, len(r.body), r.body == data) == (200, len(data), True)
    r = http(s.port, "GET", "/big.bin", headers={"Range": "bytes=1000000-1000099"}, tls=ctx)
    assert (r.status, r.headers["content-range"], r.body) == (206, f"bytes 1000000-1000099/{len(data)}",
                                                             data[1000000:1000100])


# --- which TLS the server speaks -----------------------------------------------------------------

# The server's refusal of a TLS 1.2 client that offers only suites outside its list (alert 40).
NO_SHARED_CIPHER = re.compile(r"alert handshake failure|no shared cipher|no cipher match")
TLS13_DEFAULT_SUITES = {"TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256"}


@pytest.mark.parametrize("cipher, accepted", [
    ("AES128-SHA", False),                    # RSA key exchange, CBC, SHA-1 MAC
    ("AES256-GCM-SHA384", False),             # RSA key exchange (no forward secrecy), even with AEAD
    ("ECDHE-RSA-AES128-SHA", False),          # ECDHE, but CBC with a SHA-1 MAC
    ("ECDHE-RSA-AES256-SHA384", False),       # ECDHE, but CBC
    ("ECDHE-RSA-AES128-GCM-SHA256", True),
    ("ECDHE-RSA-AES256-GCM-SHA384", True),
    ("ECDHE-RSA-CHACHA20-POLY1305", True),
])
def test_tls_1_2_negotiates_only_ecdhe_with_aead(serve, certs, cipher, accepted):
    s = serve(*ROUTES, *tls_args(certs))
    r = s_client(s.port, "-tls1_2", "-cipher", cipher)
    if accepted:
        assert (r.returncode, r.protocol, r.cipher) == (0, "TLSv1.2", cipher), r
    else:
        assert (r.returncode, r.protocol, r.cipher) == (1, None, None), r
        assert re.search(r"^New, \(NONE\), Cipher is \(NONE\)", r.out, re.M), r
        assert NO_SHARED_CIPHER.search(r.out), r
    assert healthy(s.port, tls=client_tls_context(cafile=str(certs / "cert.pem")))


def test_the_server_picks_the_suite_by_its_own_order(serve, certs):
    """A client that prefers ChaCha20 over AES-128-GCM gets the server's first choice, AES-128-GCM."""
    s = serve(*ROUTES, *pfx_args(certs))
    r = s_client(s.port, "-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256")
    assert (r.returncode, r.protocol, r.cipher) == (0, "TLSv1.2", "ECDHE-RSA-AES128-GCM-SHA256"), r


def test_tls_1_3_keeps_openssls_default_suites(serve, certs):
    s = serve(*ROUTES, *tls_args(certs))
    r = s_client(s.port, "-tls1_3")
    assert r.returncode == 0 and r.protocol == "TLSv1.3" and r.cipher in TLS13_DEFAULT_SUITES, r


@pytest.mark.parametrize("how", ["flag", "env"])
def test_tls_min_version_1_3_refuses_a_tls_1_2_handshake(serve, certs, how):
    if how == "flag":
        s = serve(*ROUTES, *tls_args(certs), "--tls-min-version", "1.3")
    else:
        s = serve(*ROUTES, *tls_args(certs), env={"WSIG_TLS_MIN_VERSION": "1.3"})
    old = s_client(s.port, "-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256")
    assert (old.returncode, old.protocol, old.cipher) == (1, None, None), old
    assert re.search(r"alert protocol version|unsupported protocol", old.out), old
    new = s_client(s.port, "-tls1_3")
    assert new.returncode == 0 and new.protocol == "TLSv1.3" and new.cipher in TLS13_DEFAULT_SUITES, new
    exercise(s, certs)  # Python's websockets over wss and an https push still work


@pytest.mark.parametrize("value", ["1.1", "1.0", "tls1.3", ""])
def test_a_bad_tls_min_version_is_a_usage_error(certs, value):
    r = run_wsig("serve", "-p", "0", *ROUTES, *tls_args(certs), "--tls-min-version", value, timeout=10)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "--tls-min-version" in r.stderr and r.stdout == ""
