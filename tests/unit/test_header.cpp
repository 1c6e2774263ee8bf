// util/header: the one -H parser of send, listen and bench.
#include "catch.hpp"

#include "util/header.hpp"

#include <string>

using namespace std::string_literals;

TEST_CASE("header: one -H argument, with the strict rule") {
    auto h = wsig::parse_header("X-Trace:  42 \t");
    REQUIRE(h.has_value());
    CHECK(h->first == "X-Trace");
    CHECK(h->second == "42");
    h = wsig::parse_header("Empty:");
    REQUIRE(h.has_value());
    CHECK(h->second.empty());
    CHECK(wsig::parse_header("A: b: c")->second == "b: c");
    CHECK_FALSE(wsig::parse_header("no colon").has_value());
    CHECK_FALSE(wsig::parse_header(": value").has_value());
    CHECK_FALSE(wsig::parse_header("Bad Name: x").has_value());   // bench used to accept this one
    CHECK_FALSE(wsig::parse_header("Bad[Name]: x").has_value());  // and this one
    CHECK_FALSE(wsig::parse_header("Bad/Name: x").has_value());
    CHECK_FALSE(wsig::parse_header("X: a\r\nInjected: b").has_value());
    CHECK_FALSE(wsig::parse_header("X: a\nb").has_value());
    CHECK_FALSE(wsig::parse_header("X: a\0b"s).has_value());
    CHECK(wsig::parse_header("bad header").error().code == wsig::errc::invalid_argument);
}
