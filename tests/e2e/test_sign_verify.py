"""`wsig sign` and `wsig verify` through the real binary: Pode's vectors, every exit code,
secret sources and their precedence, strict mode."""
import base64
import hashlib
import hmac
import json
import re
import subprocess

import pytest

from conftest import ROOT, run_wsig

VECTORS = json.loads((ROOT / "tests" / "vectors" / "signing.json").read_text())
GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def strict_args(v):
    return ["--strict", "--user-agent", v["userAgent"], "--ip", v["ip"]] if v["strict"] else []


@pytest.mark.parametrize("v", VECTORS["vectors"], ids=lambda v: v["signed"][:12])
def test_sign_prints_the_vector(v):
    r = run_wsig("sign", v["value"], "--secret", v["secret"], *strict_args(v))
    assert (r.returncode, r.stdout, r.stderr) == (0, v["signed"] + "\n", "")


@pytest.mark.parametrize("v", VECTORS["vectors"], ids=lambda v: v["signed"][:12])
def test_verify_prints_the_value_and_exits_0(v):
    r = run_wsig("verify", v["signed"], "--secret", v["secret"], *strict_args(v))
    assert (r.returncode, r.stdout) == (0, v["value"] + "\n")


@pytest.mark.parametrize("bad", VECTORS["invalid"])
def test_verify_refuses_invalid_values_with_exit_1_and_a_reason(bad):
    r = run_wsig("verify", bad, "--secret", "s3cr3t")
    assert r.returncode == 1
    assert r.stdout == ""
    assert "invalid:" in r.stderr


def test_verify_says_why_for_each_kind_of_malformed_value():
    assert "does not start with 's:'" in run_wsig("verify", "12345", "--secret", "k").stderr
    assert "no '.'" in run_wsig("verify", "s:12345", "--secret", "k").stderr
    assert "does not match" in run_wsig("verify", "s:1.AAAA", "--secret", "k").stderr


def test_sign_new_signs_a_fresh_lowercase_guid_that_verifies():
    r = run_wsig("sign", "--new", "--secret", "s")
    assert r.returncode == 0
    signed = r.stdout.strip()
    value, sig = signed[2:].rsplit(".", 1)
    assert signed.startswith("s:") and GUID.match(value)
    expected = base64.b64encode(hmac.new(b"s", value.encode(), hashlib.sha256).digest()).decode()
    assert sig == expected
    assert run_wsig("verify", signed, "--secret", "s").stdout == value + "\n"
    assert run_wsig("sign", "--new", "--secret", "s").stdout != r.stdout


def test_signature_matches_openssl():
    r = run_wsig("sign", "client-42", "--secret", "pässwörd")
    mac = subprocess.run(["openssl", "dgst", "-sha256", "-hmac", "pässwörd", "-binary"], input=b"client-42",
                         capture_output=True, check=True).stdout
    assert r.stdout == f"s:client-42.{base64.b64encode(mac).decode()}\n"


def test_secret_file_loses_one_trailing_newline(tmp_path):
    f = tmp_path / "secret"
    f.write_text("s3cr3t\n")
    r = run_wsig("sign", "12345", "--secret-file", f)
    assert r.stdout == "s:12345.zgyE7UM25VQqgsXZg+Ncg1byFeChtn/4Xsrnt6rumwQ=\n"


def test_secret_sources_in_order_file_then_env_then_flag(tmp_path):
    f = tmp_path / "secret"
    f.write_text("s3cr3t")
    good = "s:12345.zgyE7UM25VQqgsXZg+Ncg1byFeChtn/4Xsrnt6rumwQ=\n"
    assert run_wsig("sign", "12345", env={"WSIG_SECRET": "s3cr3t"}).stdout == good
    assert run_wsig("sign", "12345", "--secret", "other", env={"WSIG_SECRET": "s3cr3t"}).stdout == good
    assert run_wsig("sign", "12345", "--secret-file", f, env={"WSIG_SECRET": "other"}).stdout == good


def test_unreadable_secret_file_exits_78(tmp_path):
    r = run_wsig("sign", "12345", "--secret-file", tmp_path / "missing")
    assert r.returncode == 78
    assert "missing" in r.stderr
    r = run_wsig("verify", "s:1.x", "--secret-file", tmp_path)  # a directory
    assert r.returncode == 78


@pytest.mark.parametrize("args", [["sign", "12345"], ["sign", "--secret", "k"], ["verify", "s:1.x"],
                                  ["sign", "1", "--secret", "k", "--ip", "::1"],
                                  ["sign", "1", "--secret", "k", "--user-agent", "x"]])
def test_usage_errors_exit_2(args):
    r = run_wsig(*args)
    assert r.returncode == 2, r.stderr
    assert r.stdout == ""


def test_whitespace_secret_is_refused():
    assert run_wsig("sign", "1", "--secret", "  ").returncode == 78


def test_strict_mode_with_ipv6_binds_to_the_peer():
    ua = "Mozilla/5.0 (X11; Linux x86_64)"
    key = f"k;{ua};::1".encode()
    expected = base64.b64encode(hmac.new(key, b"abc", hashlib.sha256).digest()).decode()
    r = run_wsig("sign", "abc", "--secret", "k", "--strict", "--user-agent", ua, "--ip", "::1")
    assert r.stdout == f"s:abc.{expected}\n"
    signed = r.stdout.strip()
    ok = run_wsig("verify", signed, "--secret", "k", "--strict", "--user-agent", ua, "--ip", "::1")
    assert ok.returncode == 0 and ok.stdout == "abc\n"
    assert run_wsig("verify", signed, "--secret", "k", "--strict", "--user-agent", ua,
                    "--ip", "127.0.0.1").returncode == 1
    assert run_wsig("verify", signed, "--secret", "k").returncode == 1
