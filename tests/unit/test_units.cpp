// Durations and sizes: what parses, what is refused, and the round trip through format.
#include "catch.hpp"

#include <wsig/units.hpp>

using namespace std::chrono_literals;

TEST_CASE("units: durations with ms, s, m and h parse to milliseconds") {
    CHECK(wsig::parse_duration("500ms").value() == 500ms);
    CHECK(wsig::parse_duration("10s").value() == 10s);
    CHECK(wsig::parse_duration("2m").value() == 2min);
    CHECK(wsig::parse_duration("1h").value() == 1h);
    CHECK(wsig::parse_duration("0").value() == 0ms);
}

TEST_CASE("units: a duration without a unit, with a bad unit or not a number is refused") {
    for (auto text : {"", "10", "10x", "s", "-1s", "1.5s", " 1s", "1s ", "10S", "99999999999999999999s"}) {
        INFO(text);
        auto d = wsig::parse_duration(text);
        REQUIRE_FALSE(d.has_value());
        CHECK(d.error().code == wsig::errc::invalid_argument);
        CHECK_FALSE(d.error().message.empty());
    }
}

TEST_CASE("units: sizes in bytes, binary and decimal units") {
    CHECK(wsig::parse_size("512").value() == 512);
    CHECK(wsig::parse_size("512B").value() == 512);
    CHECK(wsig::parse_size("16KiB").value() == 16 * 1024);
    CHECK(wsig::parse_size("1MiB").value() == 1024 * 1024);
    CHECK(wsig::parse_size("2GiB").value() == 2ull * 1024 * 1024 * 1024);
    CHECK(wsig::parse_size("1KB").value() == 1000);
    CHECK(wsig::parse_size("1MB").value() == 1000 * 1000);
}

TEST_CASE("units: a bad size is refused, including one that overflows 64 bits") {
    for (auto text : {"", "KiB", "1XB", "1 KiB", "-1", "18446744073709551615GiB", "1kib"}) {
        INFO(text);
        CHECK_FALSE(wsig::parse_size(text).has_value());
    }
}

TEST_CASE("units: format gives the largest exact unit") {
    CHECK(wsig::format_duration(1500ms) == "1500ms");
    CHECK(wsig::format_duration(120s) == "2m");
    CHECK(wsig::format_size(1024 * 1024) == "1MiB");
    CHECK(wsig::format_size(1000) == "1000B");
}

TEST_CASE("units: timestamps are RFC 3339 in UTC, with or without milliseconds") {
    std::chrono::system_clock::time_point t{std::chrono::milliseconds(1'795'852'305'123)};
    CHECK(wsig::rfc3339(t) == "2026-11-28T07:51:45.123Z");
    CHECK(wsig::rfc3339(t, false) == "2026-11-28T07:51:45Z");
    CHECK(wsig::rfc3339(std::chrono::system_clock::time_point{}) == "1970-01-01T00:00:00.000Z");
    CHECK(wsig::rfc3339_now().size() == 24);
}
