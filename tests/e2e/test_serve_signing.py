"""`wsig serve` with client-ID signing (SPEC.md sections 2, 3, 9, 10; pode-wire.md sections 4 and 12):
the 101 client ID is s:<guid>.<sig> with the signature that `openssl dgst -sha256 -hmac` computes,
from --secret-file or WSIG_SECRET; --strict binds it to User-Agent and IP; pushes need the exact
signed ID (a tampered one is 400); ?clientId= is signed by the server and a forged signed one is
refused."""
import re
import socket
from urllib.parse import quote

import pytest

from helpers_serve import (GUID_RE, SIG_RE, Peer, RawWS, connections, openssl_sign, push, split_signed, sync_self,
                           tamper)

ROUTES = ["--route", "/chat=Chat"]
SECRET = "super-secret"


@pytest.fixture
def secret_file(tmp_path):
    f = tmp_path / "secret"
    f.write_text(SECRET + "\n")  # one trailing newline: not part of the secret
    return f


def assert_signed_guid(client_id, secret=SECRET, **strict):
    m = re.fullmatch(rf"s:({GUID_RE})\.({SIG_RE})", client_id)
    assert m, f"not s:<guid>.<sig>: {client_id!r}"
    assert client_id == openssl_sign(m.group(1), secret, **strict)


def test_openssl_reproduces_the_spec_vectors():
    # the oracle the tests use, checked against pode-wire.md section 12
    assert openssl_sign("value", "key") == "s:value.kPv88V50o2uJ29sqch2a7P/f3dxcg+J/dZJZT3GTJIE="
    assert openssl_sign("12345", "s3cr3t", user_agent="wsig-test/1.0", ip="127.0.0.1") == \
        "s:12345.eZRJa9Hk+mQiz8+KAj1kS3y69qv7R2QTI0Zi7f6NwW8="
    assert openssl_sign("12345", "s3cr3t", user_agent="", ip="127.0.0.1") == \
        "s:12345.ej9NU1/mi+qIgdxmh5wpFDsNHIS5uRX13TvCeHBSnKQ="


def test_secret_file_signs_the_client_id_in_the_101(serve, secret_file):
    s = serve(*ROUTES, "--secret-file", secret_file)
    a = RawWS.open(s.port, "/chat")
    assert len(a.client_id) == 83
    assert_signed_guid(a.client_id)
    assert [c["clientId"] for c in connections(s.port)] == [a.client_id]  # stored in signed form
    a.close()


def test_wsig_secret_environment_variable_enables_signing(serve):
    s = serve(*ROUTES, env={"WSIG_SECRET": "from-the-env"})
    p = Peer(f"{s.ws_url}/chat")
    assert_signed_guid(p.client_id, secret="from-the-env")
    p.close()


def test_strict_binds_the_signature_to_user_agent_and_ip(serve, secret_file):
    s = serve(*ROUTES, "--secret-file", secret_file, "--strict")
    a = RawWS.open(s.port, "/chat", headers={"User-Agent": "wsig-test/1.0"})
    assert_signed_guid(a.client_id, user_agent="wsig-test/1.0", ip="127.0.0.1")
    value, _ = split_signed(a.client_id)
    assert a.client_id != openssl_sign(value, SECRET)
    a.close()


def test_strict_without_user_agent_uses_an_empty_one(serve, secret_file):
    s = serve(*ROUTES, "--secret-file", secret_file, "--strict")
    a = RawWS.open(s.port, "/chat")  # the raw client sends no User-Agent
    assert_signed_guid(a.client_id, user_agent="", ip="127.0.0.1")
    a.close()


def test_strict_trims_the_user_agent(serve, secret_file):
    s = serve(*ROUTES, "--secret-file", secret_file, "--strict")
    a = RawWS.open(s.port, "/chat", headers={"User-Agent": "   spaced/2.0   "})
    assert_signed_guid(a.client_id, user_agent="spaced/2.0", ip="127.0.0.1")
    a.close()


def test_push_with_the_signed_id_works_and_a_tampered_one_is_400(serve, secret_file):
    s = serve(*ROUTES, "--secret-file", secret_file)
    a = RawWS.open(s.port, "/chat")
    value, sig = split_signed(a.client_id)
    for bad in (tamper(a.client_id),                       # signature changed
                f"s:{value[:-1]}{'0' if value[-1] != '0' else '1'}.{sig}",  # value changed
                value,                                      # unsigned
                f"s:{value}",                              # no signature
                f"s:{value}.{sig[:-1]}"):                  # truncated signature
        r = push(s.port, "refused", client_id=bad, name="Chat")
        assert r.status == 400, (bad, r)
    r = push(s.port, "accepted", client_id=a.client_id, name="Chat")
    assert r.status == 200, r
    assert r.json() == {"delivered": 1}
    assert a.recv() == "accepted"  # nothing from the refused pushes before it
    a.close()


def test_strict_push_is_verified_with_the_push_requests_own_user_agent(serve, secret_file):
    s = serve(*ROUTES, "--secret-file", secret_file, "--strict")
    a = RawWS.open(s.port, "/chat", headers={"User-Agent": "browser/1.0"})
    r = push(s.port, "other UA", client_id=a.client_id, name="Chat", headers={"User-Agent": "curl/8"})
    assert r.status == 400, r
    r = push(s.port, "same UA", client_id=a.client_id, name="Chat", headers={"User-Agent": "browser/1.0"})
    assert r.status == 200, r
    assert a.recv() == "same UA"
    a.close()


def test_signed_ids_in_client_envelopes_route(serve, secret_file):
    s = serve(*ROUTES, "--secret-file", secret_file)
    a = RawWS.open(s.port, "/chat")
    b = RawWS.open(s.port, "/chat")
    a.send_env("to signed b", path="Chat", clientId=b.client_id)
    assert b.recv() == "to signed b"
    value, _ = split_signed(b.client_id)
    a.send_env("unsigned form reaches nobody", path="Chat", clientId=value)
    assert sync_self(a) == []
    assert sync_self(b) == []
    a.close()
    b.close()


def test_query_client_id_is_signed_by_the_server(serve, secret_file):
    s = serve(*ROUTES, "--secret-file", secret_file, "--accept-client-id")
    a = RawWS.open(s.port, "/chat?clientId=5d12f974-7b1a-4524-ab93-6afbf42c4ffa")
    assert a.client_id == "s:5d12f974-7b1a-4524-ab93-6afbf42c4ffa.8qHWZA7dMwgbAO0uW3pncXp8U6YpaOJBiaXpPFqdVlg="
    assert push(s.port, "ok", client_id=a.client_id, name="Chat").json() == {"delivered": 1}
    assert a.recv() == "ok"
    a.close()


def test_query_client_id_already_signed_and_valid_is_kept(serve, secret_file):
    s = serve(*ROUTES, "--secret-file", secret_file, "--accept-client-id")
    signed = openssl_sign("12345", SECRET)
    a = RawWS.open(s.port, "/chat?clientId=" + signed.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D"))
    assert a.client_id == signed
    a.close()


@pytest.mark.parametrize("forge", ["tampered", "other-secret", "no-signature"])
def test_query_client_id_forged_signed_is_refused(serve, secret_file, forge):
    s = serve(*ROUTES, "--secret-file", secret_file, "--accept-client-id")
    forged = {"tampered": tamper(openssl_sign("12345", SECRET)),
              "other-secret": openssl_sign("12345", "not-the-secret"),
              "no-signature": "s:12345"}[forge]
    q = forged.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    ws = RawWS(s.port, "/chat?clientId=" + q)
    assert 400 <= ws.handshake.status < 500, ws.handshake.raw
    ws.sock.close()
    assert connections(s.port) == []


def test_auto_upgraded_connections_are_signed_too(serve, secret_file):
    s = serve("--auto-upgrade", "--secret-file", secret_file)
    a = RawWS.open(s.port, "/anywhere")
    assert_signed_guid(a.client_id)
    a.close()


def test_signing_off_refuses_a_signed_looking_push(serve):
    s = serve(*ROUTES)
    a = RawWS.open(s.port, "/chat")
    r = push(s.port, "x", client_id=openssl_sign(a.client_id, SECRET), name="Chat")
    assert r.status in (400, 404), r
    a.close()


def test_strict_uses_the_ipv6_peer_address(serve, secret_file):
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    s = serve(*ROUTES, "-a", "::1", "--secret-file", secret_file, "--strict")
    assert s.url.startswith("http://[::1]:"), s.url
    a = RawWS.open(s.port, "/chat", addr="::1", headers={"User-Agent": "wsig-test/1.0"})
    assert_signed_guid(a.client_id, user_agent="wsig-test/1.0", ip="::1")
    a.close()


def test_secret_file_wins_over_wsig_secret(serve, secret_file):
    s = serve(*ROUTES, "--secret-file", secret_file, env={"WSIG_SECRET": "from-the-env"})
    a = RawWS.open(s.port, "/chat")
    assert_signed_guid(a.client_id)  # signed with the file's secret
    a.close()


def test_strict_query_client_id_signed_for_this_user_agent_is_kept_for_another_refused(serve, secret_file):
    s = serve(*ROUTES, "--secret-file", secret_file, "--strict", "--accept-client-id")
    signed = openssl_sign("12345", SECRET, user_agent="wsig-test/1.0", ip="127.0.0.1")
    q = signed.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
    a = RawWS.open(s.port, "/chat?clientId=" + q, headers={"User-Agent": "wsig-test/1.0"})
    assert a.client_id == signed
    other = RawWS(s.port, "/chat?clientId=" + q, headers={"User-Agent": "someone-else/2.0"})
    assert 400 <= other.handshake.status < 500, other.handshake.raw
    other.sock.close()
    assert [c["clientId"] for c in connections(s.port)] == [signed]
    a.close()


def test_the_same_plain_query_client_id_twice_is_409_and_only_its_signed_form_replaces(serve, secret_file):
    s = serve(*ROUTES, "--secret-file", secret_file, "--accept-client-id")
    old = RawWS.open(s.port, "/chat?clientId=mine")
    assert old.client_id == openssl_sign("mine", SECRET)
    # Anyone may ask for the plain ID and would get the same signature: only its holder may replace it.
    assert RawWS.attempt(s.port, "/chat?clientId=mine").status == 409
    new = RawWS.open(s.port, "/chat?clientId=" + quote(old.client_id, safe=""))
    assert new.client_id == old.client_id
    assert old.expect_close() == (1000, "replaced")
    assert push(s.port, "to new", client_id=new.client_id, name="Chat").json() == {"delivered": 1}
    assert new.recv() == "to new"
    new.close()
