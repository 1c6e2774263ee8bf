// util/url: the one URL parser of send, listen and bench.
#include "catch.hpp"

#include "util/url.hpp"

TEST_CASE("url: schemes, default ports and the target") {
    auto u = wsig::parse_url("WS://example.com/chat?x=1#frag");
    REQUIRE(u.has_value());
    CHECK(u->scheme == "ws");
    CHECK(u->host == "example.com");
    CHECK(u->port == "80");
    CHECK(u->target == "/chat?x=1");
    CHECK_FALSE(u->tls);
    CHECK(u->host_header() == "example.com");

    u = wsig::parse_url("wss://example.com");
    REQUIRE(u.has_value());
    CHECK(u->port == "443");
    CHECK(u->tls);
    CHECK(u->target == "/");

    u = wsig::parse_url("https://h:8443?q");
    REQUIRE(u.has_value());
    CHECK(u->tls);
    CHECK(u->target == "/?q");
    CHECK(u->host_header() == "h:8443");

    u = wsig::parse_url("http://h:443/");
    REQUIRE(u.has_value());
    CHECK(u->host_header() == "h:443");  // 443 is not http's default
}

TEST_CASE("url: IPv6 literals and ports") {
    auto u = wsig::parse_url("ws://[::1]:9000/x");
    REQUIRE(u.has_value());
    CHECK(u->host == "::1");
    CHECK(u->port == "9000");
    CHECK(u->host_header() == "[::1]:9000");
    u = wsig::parse_url("ws://[::1]");
    REQUIRE(u.has_value());
    CHECK(u->host_header() == "[::1]");
    u = wsig::parse_url("ws://h:0080/");
    REQUIRE(u.has_value());
    CHECK(u->port == "80");  // normalised: the Host header then leaves the default out
    CHECK(u->host_header() == "h");
}

TEST_CASE("url: what is refused") {
    for (char const* bad :
         {"example.com", "ftp://h/", "ws://", "ws:///path", "ws://user@h/", "ws://[::1/", "ws://[::1]x/", "ws://h:/",
          "ws://h:0/", "ws://h:65536/", "ws://h:-1/", "ws://h:+80/", "ws://h:8o/", "ws://h:99999999999999999999/"}) {
        INFO(bad);
        auto u = wsig::parse_url(bad);
        REQUIRE_FALSE(u.has_value());
        CHECK(u.error().code == wsig::errc::invalid_argument);
    }
    CHECK(wsig::parse_url("ws://h:65535/").has_value());
    CHECK(wsig::parse_url("ws://h:1/").has_value());
}
