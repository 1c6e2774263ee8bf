"""The security review of SECURITY.md, as tests of the real binary: what the server logs (never a secret,
the API key or a full signed client ID), what the commands it starts inherit (no secret, no socket),
TLS 1.2 as the floor on both sides, the API key on the push and admin API and from the environment,
path traversal under --static, and what a signed ID is worth with and without --strict. The other
items of the review are covered where SECURITY.md says (test_serve_http.py, test_serve_signing.py,
test_serve_badinput.py, tests/unit)."""
import json
import re
import ssl
import subprocess
from urllib.parse import quote

import pytest

from conftest import DEADLINE, ROOT, run_wsig
from helpers_serve import (RawWS, WSClosed, http, openssl_sign, push, raw_http, s_client, sync_self, tamper,
                           wait_for)
from peers import HttpPeer

ROUTES = ["--route", "/chat=Chat"]
SECRET = "s3cr3t-n0t-f0r-l0gs"
API_KEY = "ap1-k3y-n0t-f0r-l0gs"


@pytest.fixture
def secret_file(tmp_path):
    f = tmp_path / "secret"
    f.write_text(SECRET + "\n")
    return f


@pytest.fixture
def key_file(tmp_path):
    f = tmp_path / "api.key"
    f.write_text(API_KEY + "\n")
    return f


def bearer(key=API_KEY):
    return {"Authorization": f"Bearer {key}"}


# --- constant-time comparisons -------------------------------------------------------------------

def function_body(source, signature):
    """The text of the C++ function that starts with `signature` (to its closing brace at column 0)."""
    start = source.index(signature)
    return source[start:source.index("\n}\n", start)]


def test_signature_and_api_key_are_compared_in_constant_time_in_the_source():
    # A timing test is noise on a shared machine; this guards the code that SECURITY.md cites instead.
    unsign = function_body((ROOT / "lib/src/signal/signing.cpp").read_text(), "result<std::string> unsign(")
    assert "CRYPTO_memcmp(" in unsign
    assert not re.search(r"given\s*[!=]=\s*expected|expected\s*[!=]=\s*given|\.compare\(|(?<!CRYPTO_)memcmp\(|strcmp\(", unsign)
    api = function_body((ROOT / "lib/src/server/http_api.cpp").read_text(), "bool api_key_ok(")
    assert "CRYPTO_memcmp(" in api
    assert not re.search(r"key\s*[!=]=\s*want|want\s*[!=]=\s*key", api)


def test_hmac_and_random_results_are_checked_in_the_source():
    # HMAC() cannot be made to fail from outside (tests/unit/test_signing.cpp covers the error path it
    # leads to); this guards that its result, the digest length and RAND_bytes' answer are read.
    hmac = function_body((ROOT / "lib/src/signal/signing.cpp").read_text(), "result<std::string> hmac_sha256_base64(")
    assert re.search(r"=\s*HMAC\(", hmac) and "mac == nullptr" in hmac, hmac
    assert "digest_len != SHA256_DIGEST_LENGTH" in hmac and "signature_length" in hmac
    unsign = function_body((ROOT / "lib/src/signal/signing.cpp").read_text(), "result<std::string> unsign(")
    assert "if (!expected) return expected.error();" in unsign
    new_id = function_body((ROOT / "lib/src/signal/client_id.cpp").read_text(), "result<std::string> new_client_id(")
    assert "RAND_bytes(" in new_id and "!= 1" in new_id and "throw" not in new_id


# --- logs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_debug_log_never_holds_the_secret_the_api_key_or_a_full_signed_id(serve, secret_file, key_file,
                                                                              log_format):
    common = ["--secret-file", secret_file, "--api-key-file", key_file, "-v", "--log-format", log_format]
    s = serve(*ROUTES, "--route", "/ops=Ops", "--accept-client-id", "--broadcast-level", "Ops=clientid",
              "--send-queue", "4KiB", *common)
    ids = set()
    a = RawWS.open(s.port, "/chat")
    b = RawWS.open(s.port, "/chat?clientId=chosen-by-b")  # signed by the server
    ops = RawWS.open(s.port, "/ops")
    ids |= {a.client_id, b.client_id, ops.client_id}
    # a forged signed ID on connect: refused and logged
    forged = openssl_sign("forged-id", "not-the-secret")
    ids.add(forged)
    assert RawWS.attempt(s.port, f"/chat?clientId={quote(forged, safe='')}").status == 400
    # pushes: good, tampered, unknown (valid signature, nobody holds it), without the key, with a wrong key
    unknown = openssl_sign("nobody-holds-this", SECRET)
    ids |= {tamper(a.client_id), unknown}
    assert push(s.port, "hi", client_id=a.client_id, name="Chat", headers=bearer()).status == 200
    assert push(s.port, "x", client_id=tamper(a.client_id), name="Chat", headers=bearer()).status == 400
    assert push(s.port, "x", client_id=unknown, name="Chat", headers=bearer()).status == 404
    assert push(s.port, "x", client_id=a.client_id, name="Chat").status == 401
    assert push(s.port, "x", client_id=a.client_id, name="Chat", headers=bearer(API_KEY + "x")).status == 401
    assert a.recv() == "hi"
    # a bad envelope, and a broadcast the level refuses (both logged with the sender)
    ops.send_text("{not json")
    ops.send_env("to everyone", path="Ops")
    a.send_env("to b", clientId=b.client_id, path="Chat")
    assert b.recv() == "to b"
    assert sync_self(ops) == []
    # a slow reader closed with 1008, a DELETE by full ID, clean closes
    slow = RawWS.open(s.port, "/chat", rcvbuf=4096)
    ids.add(slow.client_id)
    for _ in range(200):
        if push(s.port, "z" * 262144, client_id=slow.client_id, name="Chat", headers=bearer()).status == 404:
            break
    else:
        pytest.fail("the slow reader was never closed")
    r = http(s.port, "DELETE", f"/signal/connections?name=Chat&clientId={quote(b.client_id, safe='')}",
             headers=bearer())
    assert r.json() == {"closed": 1}
    a.close()
    ops.close()
    for w in (slow, b):
        w.sock.close()
    # a peer that misses its pongs (a server of its own: the others here do not answer pings)
    s2 = serve(*ROUTES, "--ping-interval", "300ms", *common)
    mute = RawWS.open(s2.port, "/chat")
    ids.add(mute.client_id)
    wait_for(lambda: http(s2.port, "GET", "/signal/connections", headers=bearer()).json()["connections"] == [],
             "the mute peer to be dropped")
    mute.sock.close()
    assert s.stop() == 0 and s2.stop() == 0
    log = s.proc.stderr.read().decode(errors="replace") + s2.proc.stderr.read().decode(errors="replace")
    # the log did record these events, with a prefix of the ID at most
    for phrase in ("does not verify", "answered 400", "answered 404", "answered 401", "slow client",
                   "missed two pongs", "dropped a message", "not sent"):
        assert phrase in log, f"no '{phrase}' line: the test did not exercise that log call\n{log}"
    assert a.client_id[:12] in log
    assert SECRET not in log
    assert API_KEY not in log
    for cid in ids:
        value, _, sig = cid[2:].rpartition(".")
        assert cid not in log, f"a full signed ID is in the log: {cid}"
        assert sig not in log, f"a signature is in the log: {sig}"


@pytest.mark.parametrize("value", [b"https://evil\x1b[31m", b"https://evil\rfake line", b"x\x01\x7f"],
                         ids=["escape", "carriage-return", "control"])
def test_control_characters_in_a_header_are_refused_before_any_log_line(serve, value):
    s = serve(*ROUTES, "--allow-origin", "https://good.example", "-v")  # a refused Origin is logged
    head, _ = raw_http(s.port, b"GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                               b"Origin: " + value + b"\r\n\r\n")
    assert head.status == 400, head.raw
    assert s.stop() == 0
    log = s.proc.stderr.read()
    assert b"evil" not in log and b"\x1b" not in log and b"\x01" not in log, log


def test_a_client_cannot_forge_a_log_line_through_an_envelope_name(serve):
    s = serve(*ROUTES, "--broadcast-level", "group")  # a refused broadcast is logged with its Name
    a = RawWS.open(s.port, "/chat")
    a.send_env("x", path="Chat\n2030-01-01T00:00:00.000Z error FORGED\u001b[31m")
    assert sync_self(a) == []
    a.close()
    assert s.stop() == 0
    log = s.proc.stderr.read().decode(errors="replace")
    assert "not sent" in log
    assert not any(line.startswith("2030-01-01") for line in log.splitlines()), log
    assert "\x1b" not in log


# --- child processes -----------------------------------------------------------------------------

PROBE = ("/usr/bin/python3 -c \"import json, os, sys; "
         "fds = {f: os.readlink(p) if os.path.lexists(p) else None "
         "for f in os.listdir('/proc/self/fd') for p in ['/proc/self/fd/' + f]}; "
         "json.dump({'env': dict(os.environ), 'fds': fds}, open(sys.argv[1], 'w'))\" ")


def test_commands_and_hooks_inherit_no_secret_and_no_socket(serve, tmp_path, key_file):
    out = {k: tmp_path / f"{k}.json" for k in ("route", "local")}
    hook_out = f"{tmp_path}/hook.$$.json"  # one file per hook run (two connections, two hooks)
    env = {"WSIG_SECRET": SECRET, "WSIG_API_KEY": API_KEY, "WSIG_PFX_PASSWORD": "p12-pa55",
           "UNRELATED_VARIABLE": "kept"}
    s = serve(*ROUTES, "--route", f"/local=Local,scope=local,exec={PROBE}{out['local']}; cat",
              "--on-connect", f"{PROBE}{hook_out}",
              "--signal-route", f"/chat={PROBE}{out['route']}; cat > /dev/null", env=env)
    a = RawWS.open(s.port, "/chat")  # connected sockets exist while the commands start
    b = RawWS.open(s.port, "/local")
    wait_for(lambda: len(list(tmp_path.glob("hook.*.json"))) == 2, "two hook runs")
    out.update({f"hook {i}": f for i, f in enumerate(sorted(tmp_path.glob("hook.*.json")))})
    wait_for(lambda: all(_json_ok(f) for f in out.values()), "complete probe files")
    for what, f in out.items():
        seen = json.loads(f.read_text())
        for var in ("WSIG_SECRET", "WSIG_API_KEY", "WSIG_PFX_PASSWORD"):
            assert var not in seen["env"], f"{what}: {var} was inherited"
        assert seen["env"].get("UNRELATED_VARIABLE") == "kept", what  # the rest of the environment is there
        sockets = {fd: target for fd, target in seen["fds"].items() if target and target.startswith("socket:")}
        assert sockets == {}, f"{what}: inherited sockets {sockets} (all fds: {seen['fds']})"
        open_fds = {fd for fd, target in seen["fds"].items() if target is not None}  # None: the listing's own
        assert open_fds == {"0", "1", "2"}, f"{what}: {seen['fds']}"
    assert json.loads(out["hook 0"].read_text())["env"]["WSIG_CLIENT_ID"]  # the hook's own variables are set
    a.close()
    b.close()


def _json_ok(f):
    try:
        json.loads(f.read_text())
        return True
    except (OSError, ValueError):  # not there yet, or being written
        return False


# --- TLS 1.2 minimum -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out",
                    "cert.pem", "-days", "2", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1"], cwd=d, check=True, capture_output=True, timeout=60)
    subprocess.run(["openssl", "pkcs12", "-export", "-inkey", "key.pem", "-in", "cert.pem", "-out", "cert.p12",
                    "-passout", "pass:p12-pa55word"], cwd=d, check=True, capture_output=True, timeout=60)
    return d


def s_client_version(port, version):
    """openssl s_client with one protocol version, at security level 0 so that the client itself is
    willing to speak TLS 1.0/1.1: a refusal then comes from the server. Returns (negotiated or None, output)."""
    r = s_client(port, version, "-cipher", "DEFAULT@SECLEVEL=0")
    return r.protocol, r.out


def tls11_context(cert, key, newest=ssl.TLSVersion.TLSv1_1):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = newest
    ctx.set_ciphers("DEFAULT@SECLEVEL=0")
    return ctx


def s_client_speaks_tls_1_1(peers, certs):
    """The control: the same s_client command negotiates TLS 1.1 with a server that allows it (else skip)."""
    p = peers(HttpPeer, lambda *a: (200, "{}"), ssl_context=tls11_context(str(certs / "cert.pem"),
                                                                           str(certs / "key.pem")))
    version, out = s_client_version(p.port, "-tls1_1")
    if version is None:
        pytest.skip(f"this OpenSSL cannot speak TLS 1.1 even at SECLEVEL=0: {out[-300:]}")
    assert version == "TLSv1.1"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("tls_args", ["pem", "pfx"])
def test_the_server_refuses_tls_1_0_and_1_1_and_speaks_1_2_and_1_3(serve, certs, peers, tls_args):
    s_client_speaks_tls_1_1(peers, certs)
    args = (["--tls-cert", certs / "cert.pem", "--tls-key", certs / "key.pem"] if tls_args == "pem" else
            ["--pfx", certs / "cert.p12"])
    s = serve(*ROUTES, *args, env={"WSIG_PFX_PASSWORD": "p12-pa55word"})  # the password from the environment
    for old in ("-tls1", "-tls1_1"):
        version, out = s_client_version(s.port, old)
        assert version is None, f"{old} was accepted:\n{out}"
        assert re.search(r"alert protocol version|unsupported protocol|no protocols available", out), out
    for new, name in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
        version, out = s_client_version(s.port, new)
        assert version == name, out
    ctx = ssl.create_default_context(cafile=str(certs / "cert.pem"))
    assert http(s.port, "GET", "/healthz", tls=ctx).status == 200  # still serving


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("scheme", ["https", "wss"])
def test_the_clients_refuse_a_server_that_offers_at_most_tls_1_1(peers, certs, scheme):
    cert, key = str(certs / "cert.pem"), str(certs / "key.pem")
    old = peers(HttpPeer, lambda *a: (200, '{"delivered":1}'), ssl_context=tls11_context(cert, key))
    url = f"{scheme}://127.0.0.1:{old.port}/signal"
    r = run_wsig("send", url, "x", "--name", "Chat", "--cacert", cert)
    assert r.returncode == 76, (r.returncode, r.stderr)
    assert "TLS handshake" in r.stderr, r.stderr
    assert old.requests == []
    # the control: the same peer allowing TLS 1.2 gets past the handshake (https: delivered)
    new = peers(HttpPeer, lambda *a: (200, '{"delivered":1}'),
                ssl_context=tls11_context(cert, key, newest=ssl.TLSVersion.TLSv1_2))
    r = run_wsig("send", f"{scheme}://127.0.0.1:{new.port}/signal", "x", "--name", "Chat", "--cacert", cert)
    assert "TLS handshake" not in r.stderr, r.stderr
    if scheme == "https":
        assert r.returncode == 0, r.stderr


# --- the API key -----------------------------------------------------------------------------------

def test_the_push_and_admin_api_refuse_requests_without_the_key(serve, key_file):
    s = serve(*ROUTES, "--api-key-file", key_file)
    a = RawWS.open(s.port, "/chat")
    for method, path in (("POST", "/signal"), ("GET", "/signal/connections"),
                         ("DELETE", f"/signal/connections?clientId={a.client_id}")):
        for headers in ({}, bearer("wrong"), bearer(API_KEY[:-1]), {"Authorization": API_KEY}):
            r = http(s.port, method, path, body="x" if method == "POST" else None,
                     headers={"X-Pode-Signal-Name": "Chat", **headers})
            assert r.status == 401, (method, path, headers, r)
            assert r.headers.get("www-authenticate") == "Bearer"
    assert http(s.port, "GET", "/healthz").status == 200  # the health check stays open
    assert sync_self(a) == []
    a.close()


def test_metrics_needs_the_key_when_one_is_set(serve, key_file):
    s = serve(*ROUTES, "--api-key-file", key_file)
    assert http(s.port, "GET", "/metrics").status in (401, 403)
    assert http(s.port, "GET", "/metrics", headers=bearer()).status == 200


def test_serve_reads_the_api_key_from_the_environment(serve):
    s = serve(*ROUTES, env={"WSIG_API_KEY": API_KEY})
    assert push(s.port, "x", name="Chat").status == 401
    assert push(s.port, "x", name="Chat", headers=bearer()).status == 200


def test_send_reads_the_api_key_from_the_environment(peers, tmp_path):
    p = peers(HttpPeer, lambda *a: (200, '{"delivered":1}'))
    r = run_wsig("send", p.url + "/signal", "x", "--name", "Chat", env={"WSIG_API_KEY": API_KEY})
    assert r.returncode == 0, r.stderr
    assert p.requests[-1][1]["Authorization"] == f"Bearer {API_KEY}"
    other = tmp_path / "file.key"
    other.write_text("from-the-file\n")
    r = run_wsig("send", p.url + "/signal", "x", "--name", "Chat", "--api-key-file", other,
                 env={"WSIG_API_KEY": API_KEY})
    assert r.returncode == 0, r.stderr
    assert p.requests[-1][1]["Authorization"] == "Bearer from-the-file"  # the file wins
    assert API_KEY not in r.stdout + r.stderr


def test_a_server_reachable_from_other_hosts_without_a_key_warns(serve, key_file):
    s = serve(*ROUTES, "-a", "0.0.0.0")
    assert s.stop() == 0
    assert "answers anyone who reaches this port" in s.proc.stderr.read().decode()
    for args in (["-a", "0.0.0.0", "--api-key-file", key_file], ["-a", "127.0.0.1"]):
        s = serve(*ROUTES, *args)
        assert s.stop() == 0
        assert "answers anyone" not in s.proc.stderr.read().decode(), args


# --- --static ------------------------------------------------------------------------------------

@pytest.fixture
def site(tmp_path):
    www = tmp_path / "www"
    (www / "sub").mkdir(parents=True)
    (www / "index.html").write_text("<h1>site</h1>")
    (tmp_path / "private.txt").write_text("private")
    (tmp_path / "private-dir").mkdir()
    (tmp_path / "private-dir" / "index.html").write_text("private")
    (www / "linked-dir").symlink_to(tmp_path / "private-dir")
    return www


@pytest.mark.parametrize("target", [
    "/../private.txt", "/sub/../../private.txt", "/%2e%2e/private.txt", "/.%2e/private.txt",
    "/%2E%2E/private.txt", "/sub%2f..%2f..%2fprivate.txt", "/..%5cprivate.txt", "/%252e%252e/private.txt",
    "/..%00/private.txt", "//../private.txt", "/sub/./../../private.txt", "/linked-dir/", "/linked-dir/index.html",
    "/%2e%2e%2fprivate.txt",
])
def test_static_never_serves_a_file_outside_the_root(serve, site, target):
    s = serve("--static", site)
    head, body = raw_http(s.port, f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    assert head.status in (400, 404), (target, head.raw)
    assert b"private" not in body
    assert http(s.port, "GET", "/").body == b"<h1>site</h1>"


# --- signed IDs: a bearer token, bound to the client with --strict -------------------------------

def test_without_strict_a_signed_id_works_from_any_client_with_strict_only_from_its_own(serve, secret_file):
    s = serve(*ROUTES, "--secret-file", secret_file, "--accept-client-id")
    a = RawWS.open(s.port, "/chat", headers={"User-Agent": "browser-a"})
    # replayed by another client: accepted (Pode's model) and it replaces the holder
    thief = RawWS.open(s.port, f"/chat?clientId={quote(a.client_id, safe='')}", headers={"User-Agent": "other"})
    assert thief.client_id == a.client_id
    with pytest.raises(WSClosed) as closed:
        a.recv()
    assert closed.value.code == 1000
    thief.close()

    strict = serve(*ROUTES, "--secret-file", secret_file, "--accept-client-id", "--strict")
    b = RawWS.open(strict.port, "/chat", headers={"User-Agent": "browser-b"})
    stolen = f"/chat?clientId={quote(b.client_id, safe='')}"
    assert RawWS.attempt(strict.port, stolen, headers={"User-Agent": "other"}).status == 400
    assert push(strict.port, "x", client_id=b.client_id, name="Chat",
                headers={"User-Agent": "other"}).status == 400
    assert sync_self(b) == []  # still connected, nothing received
    b.close()
