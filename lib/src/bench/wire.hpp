// The bytes of `wsig bench`: URL, HTTP/1.1 upgrade and push requests, response heads, and RFC 6455
// client frames (masked), written from the RFC, with no Beast.
#pragma once

#include "util/text.hpp"
#include "wire/frame.hpp"

#include <wsig/error.hpp>

#include <sys/socket.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wsig::bench::detail {

struct endpoint {
    std::string host;         // without IPv6 brackets
    std::string port;         // decimal
    std::string host_header;  // host[:port] as sent in Host
    std::string target;       // path and query, at least "/"
    sockaddr_storage addr{};
    socklen_t addr_len = 0;
};

// Parses ws://host[:port][/path] (util/url.hpp) and resolves the host (numeric or by name, the
// first address). wss:// is not supported: errc::invalid_argument with a message that says so.
result<endpoint> parse_endpoint(std::string const& url);

// 16 random bytes in base64 (24 characters); the answer the server must give: wire::accept_key.
std::string new_ws_key(std::uint64_t& rng);

using header_list = std::vector<std::pair<std::string, std::string>>;

std::string upgrade_request(endpoint const& ep, std::string_view target, std::string_view key,
                            header_list const& extra);

// Bounds on what a server may answer the bench with. A push answer is a few bytes of JSON and a 101
// has no body: these leave room for any error page while every length stays far from overflow.
inline constexpr std::size_t max_head_length = std::size_t{64} * 1024;  // status line and headers, blank line included
inline constexpr std::size_t max_body_length = 1 << 20;  // a body (Content-Length or all chunks together)
inline constexpr std::size_t max_chunk_line = 1024;      // one chunk-size line, extensions included

// How far a parse got; `why` says what is wrong when it is `malformed` (a protocol error).
struct parse_result {
    enum class state { complete, incomplete, malformed };
    state st = state::incomplete;
    std::string why;

    bool complete() const { return st == state::complete; }
    bool incomplete() const { return st == state::incomplete; }
    bool malformed() const { return st == state::malformed; }
};

// The head of an HTTP response: status code and the headers that matter here.
struct response_head {
    int status = 0;
    std::size_t head_len = 0;  // bytes up to and including the blank line
    std::string reason;
    std::string accept;                // Sec-WebSocket-Accept
    std::string upgrade;               // Upgrade
    std::string connection;            // Connection
    std::int64_t content_length = -1;  // -1: none given; else at most max_body_length
    bool chunked = false;
};

// Parses the head at the start of data (filling `head` when complete). Malformed: not HTTP, a head
// over max_head_length, a Content-Length that is not a number, overflows or is over max_body_length.
parse_result parse_response_head(std::string_view data, response_head& head);

// The length of a complete chunked body (framing and trailers included) at the start of data, in
// `length` when complete. Malformed: a bad chunk-size line, a chunk or the sum of the chunks over
// max_body_length, chunk data not followed by CRLF, trailers over max_head_length.
parse_result chunked_body_length(std::string_view data, std::size_t& length);

inline std::uint64_t next_random(std::uint64_t& s) {  // xorshift64*
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 2685821657736338717ull;
}

// Writes v as 16 lowercase hex digits.
inline void put_hex16(char* out, std::uint64_t v) {
    for (int i = 15; i >= 0; --i) {
        out[i] = hex_digits[v & 0xF];
        v >>= 4;
    }
}

// Reads 16 hex digits; false when one is not a hex digit.
inline bool get_hex16(char const* in, std::uint64_t& v) {
    std::uint64_t r = 0;
    for (int i = 0; i < 16; ++i) {
        int const d = hex_value(in[i]);
        if (d < 0) return false;
        r = (r << 4) | static_cast<unsigned>(d);
    }
    v = r;
    return true;
}

}  // namespace wsig::bench::detail
