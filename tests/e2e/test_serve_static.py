"""`wsig serve --static DIR` through the real binary: the files, content types and 404s, traversal
and dotfiles refused, HEAD, validators (ETag, Last-Modified) and conditional GET, byte ranges, and a
big file streamed to a slow reader in bounded memory while the loop keeps answering WebSockets.
Traversal forms beyond these are in test_security.py."""
from email.utils import formatdate
from http.client import HTTPConnection
import hashlib
import os
import re
import socket
import time

import pytest

from conftest import WSIG
from helpers_serve import RawWS, http, raw_http, rss_kib, sanitized_build

DIGITS = bytes(range(256)) * 4  # 1 KiB whose every byte says where it is (mod 256)


@pytest.fixture
def site(tmp_path):
    www = tmp_path / "www"
    (www / "css").mkdir(parents=True)
    (www / "index.html").write_text("<h1>mine</h1>")
    (www / "css" / "a.css").write_text("b{}")
    (www / "digits.bin").write_bytes(DIGITS)
    (www / ".env").write_text("SECRET=dotenv")
    (www / ".git").mkdir()
    (www / ".git" / "config").write_text("[remote] url = secret")
    (www / "env-link").symlink_to(www / ".env")
    (tmp_path / "secret.txt").write_text("secret")
    (www / "out").symlink_to(tmp_path / "secret.txt")
    return www


def get(conn, path, headers=None, method="GET"):
    """One request on a keep-alive connection: (status, headers by lower-case name, body)."""
    conn.request(method, path, headers=headers or {})
    r = conn.getresponse()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()


def test_static_files_replace_the_demo_page(serve, site):
    s = serve("--static", site, "--route", "/ws=Chat")
    r = http(s.port, "GET", "/")
    assert (r.status, r.body, r.headers["content-type"]) == (200, b"<h1>mine</h1>", "text/html; charset=utf-8")
    r = http(s.port, "GET", "/css/a.css")
    assert (r.status, r.body, r.headers["content-type"]) == (200, b"b{}", "text/css; charset=utf-8")
    assert http(s.port, "GET", "/missing.html").status == 404
    assert http(s.port, "HEAD", "/css/a.css").status == 200
    r = http(s.port, "POST", "/css/a.css", body="x")
    assert (r.status, r.headers["allow"]) == (405, "GET, HEAD")


def test_head_of_a_static_file_gives_its_length_and_no_body(serve, site):
    s = serve("--static", site)
    conn = HTTPConnection("127.0.0.1", s.port, timeout=10)  # keep-alive: one connection
    conn.request("HEAD", "/css/a.css")
    r = conn.getresponse()
    assert (r.status, r.getheader("Content-Length"), r.read()) == (200, "3", b"")
    conn.request("GET", "/css/a.css")  # read right after: no stray body bytes in between
    r = conn.getresponse()
    assert (r.status, r.read()) == (200, b"b{}")
    conn.close()


@pytest.mark.parametrize("target", ["/../secret.txt", "/css/../../secret.txt", "/%2e%2e/secret.txt",
                                    "/..%2fsecret.txt", "/out"])
def test_static_traversal_is_refused(serve, site, target):
    s = serve("--static", site)
    head, body = raw_http(s.port, f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    assert head.status == 404, head.raw
    assert b"secret" not in body


DOT_TARGETS = ["/.env", "/.git/config", "/%2eenv", "/%2Egit/config", "/./.env", "/env-link", "/.git/"]


@pytest.mark.parametrize("target", DOT_TARGETS)
def test_dotfiles_and_dot_directories_are_404(serve, site, target):
    s = serve("--static", site)
    head, body = raw_http(s.port, f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    assert (head.status, body) == (404, b"not found\n"), head.raw
    assert http(s.port, "HEAD", target).status == 404


@pytest.mark.parametrize("how", ["flag", "env"])
def test_static_dotfiles_serves_them_and_still_refuses_traversal(serve, site, how):
    s = serve("--static", site, "--static-dotfiles") if how == "flag" else \
        serve("--static", site, env={"WSIG_STATIC_DOTFILES": "true"})
    assert http(s.port, "GET", "/.env").body == b"SECRET=dotenv"
    assert http(s.port, "GET", "/%2egit/config").body == b"[remote] url = secret"
    assert http(s.port, "GET", "/env-link").body == b"SECRET=dotenv"
    assert http(s.port, "GET", "/.git/").status == 404  # a directory without index.html
    head, body = raw_http(s.port, b"GET /../secret.txt HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    assert head.status == 404 and b"secret" not in body


def test_file_responses_carry_etag_last_modified_and_accept_ranges(serve, site):
    os.utime(site / "digits.bin", (784111777, 784111777))
    s = serve("--static", site)
    conn = HTTPConnection("127.0.0.1", s.port, timeout=10)
    for method in ("GET", "HEAD"):
        status, h, body = get(conn, "/digits.bin", method=method)
        assert status == 200
        assert h["last-modified"] == "Sun, 06 Nov 1994 08:49:37 GMT" == formatdate(784111777, usegmt=True)
        assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+"', h["etag"]), h["etag"]
        assert (h["accept-ranges"], h["content-length"]) == ("bytes", "1024")
        assert body == (DIGITS if method == "GET" else b"")
    etag = h["etag"]
    (site / "digits.bin").write_bytes(DIGITS[:1000])  # a change of size or time is a new validator
    assert get(conn, "/digits.bin")[1]["etag"] != etag
    conn.close()


def test_if_none_match_gives_304_without_a_body_and_keeps_the_connection(serve, site):
    s = serve("--static", site)
    conn = HTTPConnection("127.0.0.1", s.port, timeout=10)
    etag = get(conn, "/digits.bin")[1]["etag"]
    for value in (etag, f'"nope", W/{etag}', "*"):
        status, h, body = get(conn, "/digits.bin", {"If-None-Match": value})
        assert (status, body, h["etag"]) == (304, b"", etag), value
        assert "content-length" not in h and "content-type" not in h
    assert get(conn, "/digits.bin", {"If-None-Match": '"nope"'})[0] == 200
    # If-None-Match decides: If-Modified-Since is not looked at when it is there
    assert get(conn, "/digits.bin", {"If-None-Match": '"nope"',
                                     "If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"})[0] == 200
    status, h, body = get(conn, "/digits.bin")  # the same connection still works
    assert (status, body) == (200, DIGITS)
    conn.close()
    head, _ = raw_http(s.port, f"HEAD /digits.bin HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: {etag}\r\n"
                               "Connection: close\r\n\r\n".encode())
    assert head.status == 304


def test_if_modified_since_gives_304_for_a_file_not_changed_since(serve, site):
    os.utime(site / "digits.bin", (784111777, 784111777))
    s = serve("--static", site)
    conn = HTTPConnection("127.0.0.1", s.port, timeout=10)
    for since, status in (("Sun, 06 Nov 1994 08:49:37 GMT", 304), ("Sunday, 06-Nov-94 08:49:38 GMT", 304),
                          ("Sun, 06 Nov 1994 08:49:36 GMT", 200), ("not a date", 200)):
        got, _, body = get(conn, "/digits.bin", {"If-Modified-Since": since})
        assert (got, body) == (status, b"" if status == 304 else DIGITS), since
    conn.close()


@pytest.mark.parametrize("range_, first, last", [
    ("bytes=0-0", 0, 0), ("bytes=10-19", 10, 19), ("bytes=1000-", 1000, 1023), ("bytes=1000-99999", 1000, 1023),
    ("bytes=-24", 1000, 1023), ("bytes=-5000", 0, 1023), ("bytes=300-300", 300, 300)])
def test_a_range_gives_206_with_exactly_those_bytes(serve, site, range_, first, last):
    s = serve("--static", site)
    conn = HTTPConnection("127.0.0.1", s.port, timeout=10)
    status, h, body = get(conn, "/digits.bin", {"Range": range_})
    assert (status, h["content-range"], h["content-length"]) == (206, f"bytes {first}-{last}/1024", str(last - first + 1))
    assert body == DIGITS[first:last + 1]
    assert get(conn, "/css/a.css")[2] == b"b{}"  # nothing left over on the connection
    conn.close()


@pytest.mark.parametrize("range_", ["bytes=1024-", "bytes=5000-6000", "bytes=-0", "bytes=99999999999999999999999-"])
def test_a_range_past_the_end_is_416_with_the_size(serve, site, range_):
    s = serve("--static", site)
    head, body = raw_http(s.port, f"GET /digits.bin HTTP/1.1\r\nHost: localhost\r\nRange: {range_}\r\n"
                                  "Connection: close\r\n\r\n".encode())
    assert (head.status, head.get("Content-Range"), body) == (416, "bytes */1024", b"range not satisfiable\n")


@pytest.mark.parametrize("range_", ["bytes=a-b", "bytes=20-10", "items=0-5", "bytes", "bytes=0-1,5-6", "bytes=--1"])
def test_a_malformed_or_multiple_range_is_ignored_with_the_whole_file(serve, site, range_):
    s = serve("--static", site)
    r = http(s.port, "GET", "/digits.bin", headers={"Range": range_})
    assert (r.status, r.body, "content-range" in r.headers) == (200, DIGITS, False)


def test_if_range_honours_the_range_only_for_the_current_validator(serve, site):
    os.utime(site / "digits.bin", (784111777, 784111777))
    s = serve("--static", site)
    conn = HTTPConnection("127.0.0.1", s.port, timeout=10)
    etag = get(conn, "/digits.bin", method="HEAD")[1]["etag"]
    for if_range, status in ((etag, 206), ("Sun, 06 Nov 1994 08:49:37 GMT", 206), ('"stale"', 200),
                             (f"W/{etag}", 200), ("Sun, 06 Nov 1994 08:49:36 GMT", 200)):
        got, h, body = get(conn, "/digits.bin", {"Range": "bytes=0-9", "If-Range": if_range})
        assert (got, body) == (status, DIGITS[:10] if status == 206 else DIGITS), if_range
    # HEAD has no ranges (RFC 9110 14.2): the whole file's headers
    status, h, body = get(conn, "/digits.bin", {"Range": "bytes=0-9"}, method="HEAD")
    assert (status, h["content-length"], body) == (200, "1024", b"")
    conn.close()


def test_a_64_mib_file_streams_to_a_slow_reader_in_bounded_memory_while_websockets_get_answers(serve, tmp_path):
    if sanitized_build(WSIG):
        pytest.skip("RSS says nothing under a sanitizer: freed memory stays in its quarantine")
    www = tmp_path / "big"
    www.mkdir()
    block = os.urandom(1 << 20)
    with open(www / "big.bin", "wb") as f:
        for _ in range(64):
            f.write(block)
    size = 64 << 20
    s = serve("--static", www, "--echo", "/echo", "--threads", "1")  # one loop: the echo shares it with the download
    echo = RawWS.open(s.port, "/echo")
    echo.send_text("warm-up")
    assert echo.recv() == "warm-up"
    before = rss_kib(s.proc.pid)

    conn = HTTPConnection("127.0.0.1", s.port, timeout=10)
    conn.connect()
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)  # a slow reader: small window
    conn.request("GET", "/big.bin")
    r = conn.getresponse()
    assert (r.status, r.getheader("Content-Length")) == (200, str(size))
    got = hashlib.sha256()
    received = 0
    round_trips = []
    # The reader takes 1 MiB at a time; between reads, the WebSocket client on the same loop gets its
    # answer while the server still has most of the file to send.
    while received < 8 << 20:
        chunk = r.read(1 << 20)
        got.update(chunk)
        received += len(chunk)
        t0 = time.monotonic()
        echo.send_text(f"ping {received}")
        assert echo.recv() == f"ping {received}"
        round_trips.append(time.monotonic() - t0)
    growth_mib = (rss_kib(s.proc.pid) - before) / 1024
    assert growth_mib < 8, f"RSS grew by {growth_mib:.1f} MiB while serving a 64 MiB file"
    assert max(round_trips) < 1.0, f"echo round trips during the download: {round_trips}"
    rest = r.read()
    got.update(rest)
    assert received + len(rest) == size
    assert got.hexdigest() == hashlib.sha256(block * 64).hexdigest()
    # the same connection: HEAD of the big file gives its length and reads nothing
    status, h, body = get(conn, "/big.bin", method="HEAD")
    assert (status, h["content-length"], body) == (200, str(size), b"")
    conn.close()
    echo.close()
