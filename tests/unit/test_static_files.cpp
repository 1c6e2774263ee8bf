// Static files: index pages, content types, every way out of the root refused, dotfiles hidden,
// validators, conditional requests and byte ranges (RFC 9110 13 and 14).
#include "catch.hpp"

#include "server/static_files.hpp"

#include <unistd.h>

#include <filesystem>
#include <fstream>

namespace fs = std::filesystem;

namespace {

struct site {
    fs::path root;
    site() {
        root = fs::temp_directory_path() / ("wsig-static-" + std::to_string(::getpid()));
        fs::remove_all(root);
        fs::create_directories(root / "www" / "sub");
        std::ofstream(root / "www" / "index.html") << "<h1>home</h1>";
        std::ofstream(root / "www" / "a.CSS") << "b{}";
        std::ofstream(root / "www" / "sub" / "index.html") << "sub";
        std::ofstream(root / "www" / "data.bin") << "x";
        std::ofstream(root / "www" / ".env") << "KEY=1";
        fs::create_directories(root / "www" / ".git");
        std::ofstream(root / "www" / ".git" / "config") << "[core]";
        fs::create_directories(root / "www" / ".well-known");
        std::ofstream(root / "www" / ".well-known" / "index.html") << "wk";
        fs::create_symlink(root / "www" / ".env", root / "www" / "env-link");
        fs::create_directory_symlink(root / "www" / ".git", root / "www" / "git-link");
        std::ofstream(root / "secret.txt") << "secret";
        fs::create_symlink(root / "secret.txt", root / "www" / "link-out");
        fs::create_symlink(root / "www" / "a.CSS", root / "www" / "link-in");
        fs::create_directory_symlink(root, root / "www" / "dir-out");
        root = fs::canonical(root);
    }
    ~site() { fs::remove_all(root); }
    fs::path www() const { return root / "www"; }
};

}  // namespace

TEST_CASE("static files: / and directories serve index.html, with content types by extension") {
    site s;
    auto home = wsig::detail::resolve_static(s.www(), "/");
    CHECK(home.status == 200);
    CHECK(home.path == s.www() / "index.html");
    CHECK(home.content_type == "text/html; charset=utf-8");
    CHECK(wsig::detail::resolve_static(s.www(), "/sub/").path == s.www() / "sub" / "index.html");
    CHECK(wsig::detail::resolve_static(s.www(), "/sub").path == s.www() / "sub" / "index.html");
    auto css = wsig::detail::resolve_static(s.www(), "/a.CSS?v=1#top");
    CHECK(css.status == 200);
    CHECK(css.content_type == "text/css; charset=utf-8");
    CHECK(wsig::detail::resolve_static(s.www(), "/data.bin").content_type == "application/octet-stream");
    CHECK(wsig::detail::resolve_static(s.www(), "/link-in").status == 200);  // a symlink inside stays allowed
    CHECK(wsig::detail::resolve_static(s.www(), "/%61.CSS").status == 200);
}

TEST_CASE("static files: traversal, encoded slashes and symlinks out of the root get 404") {
    site s;
    for (auto target : {"/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt", "/%2E%2E%2fsecret.txt",
                        "/..%2fsecret.txt", "/link-out", "/dir-out/secret.txt", "/sub/../index.html", "/missing",
                        "/sub/missing.html", "relative", "", "/%00", "/index.html%00.png", "/%zz", "/a.CSS%"}) {
        INFO(target);
        CHECK(wsig::detail::resolve_static(s.www(), target).status == 404);
    }
}

TEST_CASE("static files: dotfiles and dot-directories get 404 unless allowed, through symlinks too") {
    site s;
    using wsig::detail::resolve_static;
    for (auto target : {"/.env", "/.git/config", "/.git/", "/.well-known/", "/%2eenv", "/%2Egit/config", "/sub/../.env",
                        "/./.env", "/env-link", "/git-link/config"}) {
        INFO(target);
        CHECK(resolve_static(s.www(), target).status == 404);
    }
    CHECK(resolve_static(s.www(), "/.env", true).path == s.www() / ".env");
    CHECK(resolve_static(s.www(), "/%2egit/config", true).path == s.www() / ".git" / "config");
    CHECK(resolve_static(s.www(), "/.well-known/", true).path == s.www() / ".well-known" / "index.html");
    CHECK(resolve_static(s.www(), "/env-link", true).status == 200);
    CHECK(resolve_static(s.www(), "/../secret.txt", true).status == 404);  // traversal stays refused
    CHECK(resolve_static(s.www(), "/./a.CSS").status == 200);              // "." is not a dotfile
}

TEST_CASE("static files: a regular file opens with its size; directories and missing files do not") {
    site s;
    auto f = wsig::detail::open_regular_file(s.www() / "index.html");
    REQUIRE(f);
    CHECK(f->size == 13);
    CHECK(f->fd.get() >= 0);
    CHECK(f->mtime_ns > 0);
    CHECK_FALSE(wsig::detail::open_regular_file(s.www() / "sub"));
    CHECK_FALSE(wsig::detail::open_regular_file(s.www() / "missing"));
    CHECK_FALSE(wsig::detail::open_regular_file(s.www() / "link-in"));  // resolve_static gives no symlinks
}

TEST_CASE("static files: validators are a quoted strong ETag and an IMF-fixdate") {
    using namespace wsig::detail;
    CHECK(entity_tag(0x1234, 0x5678) == "\"1234-5678\"");
    CHECK(http_date(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT");
    CHECK(http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT");
}

TEST_CASE("static files: HTTP-dates parse in all three forms; anything else does not") {
    using wsig::detail::parse_http_date;
    CHECK(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == 784111777);
    CHECK(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == 784111777);
    CHECK(parse_http_date("Sun Nov  6 08:49:37 1994") == 784111777);
    CHECK(parse_http_date(" Sun, 06 Nov 1994 08:49:37 GMT ") == 784111777);
    for (auto bad : {"", "yesterday", "Sun, 06 Nov 1994 08:49:37", "Sun, 06 Foo 1994 08:49:37 GMT",
                     "Sun, 32 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 24:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 UTC",
                     "Sun, 06 Nov 1994 08:49:37 GMT extra", "Sun, 06 Nov 19x4 08:49:37 GMT", "784111777"}) {
        INFO(bad);
        CHECK_FALSE(parse_http_date(bad));
    }
}

TEST_CASE("static files: If-None-Match compares weakly, takes lists and *") {
    using wsig::detail::if_none_match_holds;
    CHECK(if_none_match_holds("\"a-1\"", "\"a-1\""));
    CHECK(if_none_match_holds("W/\"a-1\"", "\"a-1\""));
    CHECK(if_none_match_holds("\"x\", W/\"a-1\" ,\"y\"", "\"a-1\""));
    CHECK(if_none_match_holds(" * ", "\"a-1\""));
    CHECK_FALSE(if_none_match_holds("\"a-2\"", "\"a-1\""));
    CHECK_FALSE(if_none_match_holds("a-1", "\"a-1\""));  // unquoted: not the same tag
    CHECK_FALSE(if_none_match_holds("", "\"a-1\""));
}

namespace {

wsig::detail::file_answer range_answer(std::string_view range, std::uint64_t size = 1000) {
    return wsig::detail::answer_for({.range = range}, size, "\"e\"", 1000);
}

}  // namespace

TEST_CASE("static files: one byte range gives 206 with exactly its bytes, clipped to the file") {
    auto check = [](std::string_view range, std::uint64_t first, std::uint64_t length) {
        INFO(range);
        auto a = range_answer(range);
        CHECK(a.status == 206);
        CHECK(a.first == first);
        CHECK(a.length == length);
    };
    check("bytes=0-0", 0, 1);
    check("bytes=10-19", 10, 10);
    check("bytes=990-", 990, 10);
    check("bytes=990-5000", 990, 10);
    check("bytes=-10", 990, 10);
    check("bytes=-5000", 0, 1000);
    check("BYTES = 5-5", 5, 1);
    check("bytes= 5-6 ,", 5, 2);
    check("bytes=0-99999999999999999999999", 0, 1000);  // past 2^64: saturates, still the whole rest
}

TEST_CASE("static files: a range past the end is 416; a malformed or multiple Range is ignored (200)") {
    for (auto range : {"bytes=1000-", "bytes=1000-2000", "bytes=-0", "bytes=99999999999999999999999-"}) {
        INFO(range);
        CHECK(range_answer(range).status == 416);
    }
    CHECK(range_answer("bytes=-1", 0).status == 416);  // an empty file has no last byte
    for (auto range : {"", "bytes", "bytes=", "bytes=a-b", "bytes=5-4", "bytes=--5", "items=0-5", "bytes=0-5,10-20",
                       "bytes=0-5, 2000-3000", "bytes=5", "bytes=+1-2", "bytes=0x10-"}) {
        INFO(range);
        auto a = range_answer(range);
        CHECK(a.status == 200);
        CHECK(a.length == 1000);
    }
}

TEST_CASE("static files: conditional GET in RFC 9110's order, If-Range, and HEAD ignoring Range") {
    using wsig::detail::answer_for;
    std::string_view etag = "\"3e8-1\"";
    std::time_t mtime = 784111777;
    auto status = [&](wsig::detail::file_conditions c) { return answer_for(c, 1000, etag, mtime).status; };
    CHECK(status({}) == 200);
    CHECK(status({.if_none_match = "\"3e8-1\""}) == 304);
    CHECK(status({.if_none_match = "\"old\""}) == 200);
    CHECK(status({.if_modified_since = "Sun, 06 Nov 1994 08:49:37 GMT"}) == 304);  // equal: not modified
    CHECK(status({.if_modified_since = "Mon, 07 Nov 1994 08:49:37 GMT"}) == 304);
    CHECK(status({.if_modified_since = "Sat, 05 Nov 1994 08:49:37 GMT"}) == 200);
    CHECK(status({.if_modified_since = "not a date"}) == 200);
    // If-None-Match present: If-Modified-Since is not looked at, either way
    CHECK(status({.if_none_match = "\"old\"", .if_modified_since = "Mon, 07 Nov 1994 08:49:37 GMT"}) == 200);
    CHECK(status({.if_none_match = "*", .if_modified_since = "Sat, 05 Nov 1994 08:49:37 GMT"}) == 304);
    // If-Range: the current strong ETag or the exact date honours the Range; anything else sends all
    CHECK(status({.range = "bytes=0-9", .if_range = "\"3e8-1\""}) == 206);
    CHECK(status({.range = "bytes=0-9", .if_range = "Sun, 06 Nov 1994 08:49:37 GMT"}) == 206);
    CHECK(status({.range = "bytes=0-9", .if_range = "W/\"3e8-1\""}) == 200);  // weak never matches here
    CHECK(status({.range = "bytes=0-9", .if_range = "\"old\""}) == 200);
    CHECK(status({.range = "bytes=0-9", .if_range = "Sat, 05 Nov 1994 08:49:37 GMT"}) == 200);
    CHECK(status({.range = "bytes=5000-", .if_range = "\"old\""}) == 200);  // not 416: the Range is dropped
    CHECK(status({.ranges_apply = false, .range = "bytes=0-9"}) == 200);    // HEAD
    CHECK(status({.if_none_match = "\"3e8-1\"", .range = "bytes=0-9"}) == 304);
}
