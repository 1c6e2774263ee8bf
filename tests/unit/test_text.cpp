// util/text: the ASCII helpers every HTTP field, URL and Name goes through.
#include "catch.hpp"

#include "util/text.hpp"

#include <string>

using namespace std::string_literals;

TEST_CASE("text: iequals and to_lower fold ASCII only") {
    CHECK(wsig::iequals("WebSocket", "websocket"));
    CHECK(wsig::iequals("", ""));
    CHECK_FALSE(wsig::iequals("websocket", "websockets"));
    CHECK_FALSE(wsig::iequals("\xC3\x89", "\xC3\xA9"));  // É and é: not ASCII, not folded
    CHECK(wsig::to_lower("Sec-WebSocket-KEY") == "sec-websocket-key");
    CHECK(wsig::to_lower("\xC3\x89") == "\xC3\x89");
    CHECK(wsig::ascii_lower('@') == '@');
    CHECK(wsig::ascii_lower('[') == '[');
}

TEST_CASE("text: trim drops SP and HTAB, never CR or LF") {
    CHECK(wsig::trim("  a b\t") == "a b");
    CHECK(wsig::trim(" \t ").empty());
    CHECK(wsig::trim("").empty());
    CHECK(wsig::trim("x\r") == "x\r");
    CHECK(wsig::trim("\nx") == "\nx");
}

TEST_CASE("text: list members are trimmed, empty ones skipped, tokens matched case-insensitively") {
    std::string seen;
    wsig::for_each_list_member(" a ,, b\t,c,", [&](std::string_view m) { seen += std::string(m) + "|"; });
    CHECK(seen == "a|b|c|");
    CHECK(wsig::list_contains("keep-alive, Upgrade", "upgrade"));
    CHECK(wsig::list_contains("gzip,chunked", "chunked"));
    CHECK_FALSE(wsig::list_contains("upgrades", "upgrade"));
    CHECK_FALSE(wsig::list_contains("", "upgrade"));
}

TEST_CASE("text: hex digits") {
    CHECK(wsig::hex_value('0') == 0);
    CHECK(wsig::hex_value('9') == 9);
    CHECK(wsig::hex_value('a') == 10);
    CHECK(wsig::hex_value('F') == 15);
    CHECK(wsig::hex_value('g') == -1);
    CHECK(wsig::hex_value('\0') == -1);
    CHECK(std::string(wsig::hex_digits) == "0123456789abcdef");
}

TEST_CASE("text: percent-decoding, lenient and strict") {
    CHECK(*wsig::percent_decode("a%20b%2fc") == "a b/c");
    CHECK(*wsig::percent_decode("a+b") == "a+b");
    CHECK(*wsig::percent_decode("a+b", {.plus_is_space = true}) == "a b");
    // Lenient: a '%' that starts no escape stays as it is.
    CHECK(*wsig::percent_decode("100%") == "100%");
    CHECK(*wsig::percent_decode("%4") == "%4");
    CHECK(*wsig::percent_decode("%zz%41") == "%zzA");
    // Strict: it fails; refused bytes fail only when they come from an escape.
    wsig::percent_rules const path{.strict = true, .refused = std::string_view("/\\\0", 3)};
    CHECK(*wsig::percent_decode("/a/b%20c", path) == "/a/b c");
    CHECK_FALSE(wsig::percent_decode("/a%2", path));
    CHECK_FALSE(wsig::percent_decode("/a%zz", path));
    CHECK_FALSE(wsig::percent_decode("/a%2Fb", path));
    CHECK_FALSE(wsig::percent_decode("/a%5cb", path));
    CHECK_FALSE(wsig::percent_decode("/a%00b", path));
    CHECK(*wsig::percent_decode("%C3%A9") == "\xC3\xA9");
}

TEST_CASE("text: RFC 9110 tokens") {
    CHECK(wsig::is_token("X-Trace"));
    CHECK(wsig::is_token("!#$%&'*+-.^_`|~09azAZ"));
    CHECK_FALSE(wsig::is_token(""));
    for (char c : "()<>@,;:\\\"/[]?={} \t\x7f"s) CHECK_FALSE(wsig::is_token(std::string("X") + c));
}
