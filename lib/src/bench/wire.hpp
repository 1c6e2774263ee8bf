// The bytes of `wsig bench`: URL, HTTP/1.1 upgrade and push requests, response heads, and RFC 6455
// client frames (masked), written from the RFC, with no Beast.
#pragma once

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

// Parses ws://host[:port][/path] and resolves the host (numeric or by name, the first address).
// wss:// is not supported: errc::invalid_argument with a message that says so.
result<endpoint> parse_endpoint(std::string const& url);

// 16 random bytes in base64 (24 characters) and the Sec-WebSocket-Accept the server must answer.
std::string new_ws_key(std::uint64_t& rng);
std::string accept_for(std::string_view key);

using header_list = std::vector<std::pair<std::string, std::string>>;

std::string upgrade_request(endpoint const& ep, std::string_view target, std::string_view key,
                            header_list const& extra);

// Bounds on what a server may answer the bench with. A push answer is a few bytes of JSON and a 101
// has no body: these leave room for any error page while every length stays far from overflow.
inline constexpr std::size_t max_head_length = 64 * 1024;   // status line and headers, blank line included
inline constexpr std::size_t max_body_length = 1 << 20;     // a body (Content-Length or all chunks together)
inline constexpr std::size_t max_chunk_line = 1024;         // one chunk-size line, extensions included

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
    std::string accept;         // Sec-WebSocket-Accept
    std::string upgrade;        // Upgrade
    std::string connection;     // Connection
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

bool iequals(std::string_view a, std::string_view b);
bool icontains_token(std::string_view list, std::string_view token);

inline std::uint64_t next_random(std::uint64_t& s) {  // xorshift64*
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 2685821657736338717ull;
}

// Appends one masked client frame (FIN set) with the given opcode and payload.
inline void append_frame(std::string& out, std::uint8_t opcode, char const* payload, std::size_t n,
                         std::uint32_t mask_key) {
    char head[14];
    std::size_t h = 0;
    head[h++] = static_cast<char>(0x80 | opcode);
    if (n < 126) {
        head[h++] = static_cast<char>(0x80 | n);
    } else if (n <= 0xFFFF) {
        head[h++] = static_cast<char>(0x80 | 126);
        head[h++] = static_cast<char>((n >> 8) & 0xFF);
        head[h++] = static_cast<char>(n & 0xFF);
    } else {
        head[h++] = static_cast<char>(0x80 | 127);
        for (int i = 7; i >= 0; --i) head[h++] = static_cast<char>((static_cast<std::uint64_t>(n) >> (8 * i)) & 0xFF);
    }
    unsigned char mask[4];
    std::memcpy(mask, &mask_key, 4);
    std::memcpy(head + h, mask, 4);
    h += 4;
    std::size_t const start = out.size();
    out.resize(start + h + n);
    char* dst = out.data() + start;
    std::memcpy(dst, head, h);
    dst += h;
    if (n) std::memcpy(dst, payload, n);
    // Mask 8 bytes at a time, then the tail.
    std::uint64_t m8;
    unsigned char m8b[8] = {mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]};
    std::memcpy(&m8, m8b, 8);
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        std::uint64_t w;
        std::memcpy(&w, dst + i, 8);
        w ^= m8;
        std::memcpy(dst + i, &w, 8);
    }
    for (; i < n; ++i) dst[i] = static_cast<char>(static_cast<unsigned char>(dst[i]) ^ mask[i & 3]);
}

// Writes v as 16 lowercase hex digits.
inline void put_hex16(char* out, std::uint64_t v) {
    static constexpr char digits[] = "0123456789abcdef";
    for (int i = 15; i >= 0; --i) {
        out[i] = digits[v & 0xF];
        v >>= 4;
    }
}

// Reads 16 hex digits; false when one is not a hex digit.
inline bool get_hex16(char const* in, std::uint64_t& v) {
    std::uint64_t r = 0;
    for (int i = 0; i < 16; ++i) {
        char const c = in[i];
        unsigned d;
        if (c >= '0' && c <= '9') d = static_cast<unsigned>(c - '0');
        else if (c >= 'a' && c <= 'f') d = static_cast<unsigned>(c - 'a' + 10);
        else return false;
        r = (r << 4) | d;
    }
    v = r;
    return true;
}

}  // namespace wsig::bench::detail
