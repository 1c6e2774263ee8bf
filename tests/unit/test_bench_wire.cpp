// The HTTP parsing of `wsig bench` (bench_wire.cpp): response heads and chunked bodies, and the
// lengths a hostile server can announce (overflow, absurd sizes, truncation).
#include "catch.hpp"

#include "bench/wire.hpp"

#include <cstdio>
#include <string>
#include <vector>

using wsig::bench::detail::chunked_body_length;
using wsig::bench::detail::max_body_length;
using wsig::bench::detail::max_head_length;
using wsig::bench::detail::parse_response_head;
using wsig::bench::detail::response_head;

namespace {

std::string const ok_head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n";

wsig::bench::detail::parse_result head_of(std::string const& text, response_head& head) {
    return parse_response_head(text, head);
}

wsig::bench::detail::parse_result chunked(std::string const& text, std::size_t& length) {
    return chunked_body_length(text, length);
}

}  // namespace

TEST_CASE("bench wire: a 101 head and a Content-Length head parse") {
    response_head head;
    auto r = head_of(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: abc=\r\n\r\nframes",
        head);
    REQUIRE(r.complete());
    CHECK(head.status == 101);
    CHECK(head.reason == "Switching Protocols");
    CHECK(head.upgrade == "websocket");
    CHECK(head.accept == "abc=");
    CHECK(head.content_length == -1);
    CHECK(head.head_len == std::string("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: "
                                       "Upgrade\r\nSec-WebSocket-Accept: abc=\r\n\r\n")
                               .size());

    r = head_of(ok_head + "Content-Length: 15\r\n\r\n{\"delivered\":1}", head);
    REQUIRE(r.complete());
    CHECK(head.status == 200);
    CHECK(head.content_length == 15);
    CHECK_FALSE(head.chunked);
}

TEST_CASE("bench wire: an incomplete head needs more bytes; one over the limit is refused") {
    response_head head;
    CHECK(head_of(ok_head, head).incomplete());
    CHECK(head_of("", head).incomplete());
    auto r = head_of(ok_head + "X-Pad: " + std::string(max_head_length, 'a'), head);
    CHECK(r.malformed());
    CHECK(r.why.find("head over") != std::string::npos);
    r = head_of(ok_head + "X-Pad: " + std::string(max_head_length, 'a') + "\r\n\r\n", head);  // complete but too big
    CHECK(r.malformed());
}

TEST_CASE("bench wire: a Content-Length that overflows, is absurd or is not a number is a protocol error") {
    for (std::string value :
         std::vector<std::string>{"18446744073709551615", "99999999999999999999", "9223372036854775808",
                                  std::to_string(max_body_length + 1), "-1", "+5", "", "12abc", "0x10", "1 2"}) {
        INFO("Content-Length: " << value);
        response_head head;
        auto r = head_of(ok_head + "Content-Length: " + value + "\r\n\r\n", head);
        CHECK(r.malformed());
        CHECK_FALSE(r.why.empty());
    }
    response_head head;
    REQUIRE(head_of(ok_head + "Content-Length: " + std::to_string(max_body_length) + "\r\n\r\n", head).complete());
    CHECK(head.content_length == static_cast<std::int64_t>(max_body_length));
    auto r = head_of(ok_head + "Content-Length: 5\r\nContent-Length: 6\r\n\r\n", head);
    CHECK(r.malformed());
    CHECK(head_of(ok_head + "Content-Length: 5\r\nContent-Length: 5\r\n\r\n", head).complete());
}

TEST_CASE("bench wire: a chunked body with extensions and a trailer parses to its whole length") {
    std::size_t length = 0;
    std::string const body = "5;name=value\r\nhello\r\n6 ; ext\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
    auto r = chunked(body + "next response", length);
    REQUIRE(r.complete());
    CHECK(length == body.size());
    REQUIRE(chunked("0\r\n\r\n", length).complete());
    CHECK(length == 5);
    REQUIRE(chunked("A\r\n0123456789\r\n0\r\n\r\n", length).complete());  // upper-case hex
    CHECK(length == 20);
}

TEST_CASE("bench wire: a chunk size near 2^64 is refused, not wrapped around") {
    // Before the bound, pos + n + 2 wrapped around: ffffffffffffffec (2^64 - 20) took the position back
    // to the start of its own 18-byte line, and the parser looped for ever.
    for (std::string size : {"ffffffffffffffff", "ffffffffffffffec", "fffffffffffffffe", "fffffffffffffffd",
                             "8000000000000000", "10000000000000000", "ffffffffffffffffffffffff", "100001"}) {
        INFO("chunk size " << size);
        std::size_t length = 0;
        auto r = chunked(size + "\r\n" + "abcdefgh\r\n" + size + "\r\nabcdefgh\r\n0\r\n\r\n", length);
        CHECK(r.malformed());
        CHECK_FALSE(r.why.empty());
        r = chunked(size + "\r\n", length);  // announced, nothing of it sent yet
        CHECK(r.malformed());
    }
}

TEST_CASE("bench wire: chunks that together pass the body limit are refused") {
    std::string const half = std::string(max_body_length / 2, 'x');
    char size[32];
    std::snprintf(size, sizeof size, "%zx", half.size());
    std::string const chunk = std::string(size) + "\r\n" + half + "\r\n";
    std::size_t length = 0;
    REQUIRE(chunked(chunk + chunk + "0\r\n\r\n", length).complete());  // exactly the limit
    CHECK(length == 2 * chunk.size() + 5);
    auto r = chunked(chunk + chunk + "1\r\nx\r\n0\r\n\r\n", length);
    CHECK(r.malformed());
    CHECK(r.why.find("limit") != std::string::npos);
}

TEST_CASE("bench wire: a truncated chunked body needs more bytes; bad framing is refused") {
    std::size_t length = 0;
    for (std::string partial : {"", "5", "5\r\n", "5\r\nhel", "5\r\nhello", "5\r\nhello\r", "5\r\nhello\r\n",
                                "5\r\nhello\r\n0\r\n", "5\r\nhello\r\n0\r\nX-T: 1\r\n"}) {
        INFO(partial);
        CHECK(chunked(partial, length).incomplete());
    }
    for (std::string bad : std::vector<std::string>{"5\r\nhelloXX0\r\n\r\n", "zz\r\n", "\r\n", ";ext\r\n",
                                                    "-5\r\nhello\r\n", "0x5\r\n", std::string(2000, '1')}) {
        INFO(bad);
        CHECK(chunked(bad, length).malformed());
    }
    CHECK(chunked("0\r\n" + std::string(max_head_length + 1, 't'), length).malformed());  // endless trailers
}
