// The endpoint, the HTTP/1.1 upgrade and its response, for the `wsig bench` client.
#include "bench/wire.hpp"

#include "util/url.hpp"

#include <wsig/base64.hpp>

#include <fmt/format.h>

#include <netdb.h>
#include <netinet/in.h>

#include <algorithm>
#include <cctype>
#include <charconv>

namespace wsig::bench::detail {
result<endpoint> parse_endpoint(std::string const& url) {
    auto u = parse_url(url);
    if (!u) return u.error();
    if (u->tls)
        return make_error(errc::invalid_argument,
                          "wss:// is not supported by wsig bench (it measures plain ws://; put a TLS terminator "
                          "in front of the server to include TLS)");
    endpoint ep;
    ep.host_header = u->host_header();
    ep.host = std::move(u->host);
    ep.port = std::move(u->port);
    ep.target = std::move(u->target);

    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_family = AF_UNSPEC;
    addrinfo* res = nullptr;
    int const rc = getaddrinfo(ep.host.c_str(), ep.port.c_str(), &hints, &res);
    if (rc != 0 || res == nullptr)
        return make_error(errc::io, fmt::format("cannot resolve '{}': {}", ep.host, gai_strerror(rc)));
    std::memcpy(&ep.addr, res->ai_addr, res->ai_addrlen);
    ep.addr_len = res->ai_addrlen;
    freeaddrinfo(res);
    return ep;
}

std::string new_ws_key(std::uint64_t& rng) {
    unsigned char raw[16];
    std::uint64_t const a = next_random(rng), b = next_random(rng);
    std::memcpy(raw, &a, 8);
    std::memcpy(raw + 8, &b, 8);
    return base64_encode(std::string_view(reinterpret_cast<char const*>(raw), sizeof raw));
}

std::string upgrade_request(endpoint const& ep, std::string_view target, std::string_view key,
                            header_list const& extra) {
    std::string r;
    r.reserve(256);
    r += "GET ";
    r += target;
    r += " HTTP/1.1\r\nHost: ";
    r += ep.host_header;
    r += "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ";
    r += key;
    r += "\r\nSec-WebSocket-Version: 13\r\nUser-Agent: wsig-bench/" WSIG_VERSION "\r\n";
    for (auto const& [name, value] : extra) {
        r += name;
        r += ": ";
        r += value;
        r += "\r\n";
    }
    r += "\r\n";
    return r;
}

namespace {

parse_result malformed(std::string why) {
    return {parse_result::state::malformed, std::move(why)};
}
parse_result incomplete() {
    return {};
}
parse_result complete() {
    return {parse_result::state::complete, {}};
}

// Shown in an error message: at most 40 bytes of what the server sent, without control characters.
std::string quoted(std::string_view text) {
    std::string out;
    for (char c : text.substr(0, 40)) out.push_back(static_cast<unsigned char>(c) < 0x20 || c == 0x7F ? '?' : c);
    if (text.size() > 40) out += "...";
    return fmt::format("'{}'", out);
}

// A decimal Content-Length: digits only, no overflow (from_chars says so), at most max_body_length.
parse_result parse_content_length(std::string_view value, std::int64_t& out) {
    std::uint64_t n = 0;
    auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
    if (value.empty() || ec != std::errc{} || p != value.data() + value.size())
        return malformed(fmt::format("Content-Length {} is not a number that fits in 64 bits", quoted(value)));
    if (n > max_body_length)
        return malformed(
            fmt::format("Content-Length {} is over the {}-byte limit of a response body", n, max_body_length));
    if (out >= 0 && static_cast<std::uint64_t>(out) != n)
        return malformed(fmt::format("two different Content-Length values ({} and {})", out, n));
    out = static_cast<std::int64_t>(n);
    return complete();
}

}  // namespace

parse_result parse_response_head(std::string_view data, response_head& head) {
    auto const end = data.find("\r\n\r\n");
    if (end == std::string_view::npos) {
        if (data.size() > max_head_length)
            return malformed(fmt::format("a response head over {} bytes", max_head_length));
        return incomplete();
    }
    if (end + 4 > max_head_length) return malformed(fmt::format("a response head over {} bytes", max_head_length));
    head = response_head{};
    head.head_len = end + 4;
    std::string_view block = data.substr(0, end + 2);
    auto const eol = block.find("\r\n");
    std::string_view const status_line = block.substr(0, eol);
    block.remove_prefix(eol + 2);
    // HTTP/1.1 101 Switching Protocols
    auto const bad_status = [&] {
        return malformed(fmt::format("the status line {} is not HTTP", quoted(status_line)));
    };
    if (status_line.size() < 12 || status_line.substr(0, 5) != "HTTP/") return bad_status();
    auto const sp = status_line.find(' ');
    if (sp == std::string_view::npos || sp + 4 > status_line.size()) return bad_status();
    int status = 0;
    auto [p, ec] = std::from_chars(status_line.data() + sp + 1, status_line.data() + sp + 4, status);
    if (ec != std::errc{} || p != status_line.data() + sp + 4) return bad_status();
    head.status = status;
    if (sp + 5 <= status_line.size()) head.reason = std::string(status_line.substr(sp + 5));
    while (!block.empty()) {
        auto const line_end = block.find("\r\n");
        std::string_view const line = block.substr(0, line_end);
        block.remove_prefix(line_end + 2);
        auto const colon = line.find(':');
        if (colon == std::string_view::npos)
            return malformed(fmt::format("the header line {} has no ':'", quoted(line)));
        std::string_view const name = line.substr(0, colon);
        std::string_view const value = trim(line.substr(colon + 1));
        if (iequals(name, "sec-websocket-accept"))
            head.accept = std::string(value);
        else if (iequals(name, "upgrade"))
            head.upgrade = std::string(value);
        else if (iequals(name, "connection"))
            head.connection = std::string(value);
        else if (iequals(name, "content-length")) {
            if (auto r = parse_content_length(value, head.content_length); !r.complete()) return r;
        } else if (iequals(name, "transfer-encoding")) {
            head.chunked = list_contains(value, "chunked");
        }
    }
    return complete();
}

parse_result chunked_body_length(std::string_view data, std::size_t& length) {
    // Every position below stays within data.size(), and every chunk within max_body_length: no sum
    // here can overflow, whatever sizes the server announces.
    std::size_t pos = 0;
    std::size_t body = 0;  // the chunks' data so far
    for (;;) {
        auto const eol = data.find("\r\n", pos);
        if (eol == std::string_view::npos) {
            if (data.size() - pos > max_chunk_line)
                return malformed(fmt::format("a chunk-size line over {} bytes", max_chunk_line));
            return incomplete();
        }
        if (eol - pos > max_chunk_line)
            return malformed(fmt::format("a chunk-size line over {} bytes", max_chunk_line));
        std::string_view const line = data.substr(pos, eol - pos);
        std::string_view size_text = line;
        if (auto const semi = size_text.find(';'); semi != std::string_view::npos)
            size_text = size_text.substr(0, semi);  // chunk extensions: ignored
        size_text = trim(size_text);
        std::uint64_t n = 0;
        auto [p, ec] = std::from_chars(size_text.data(), size_text.data() + size_text.size(), n, 16);
        if (size_text.empty() || ec != std::errc{} || p != size_text.data() + size_text.size())
            return malformed(fmt::format("the chunk size {} is not a hex number that fits in 64 bits", quoted(line)));
        if (n > max_body_length - body)
            return malformed(
                fmt::format("a chunk of {} bytes takes the body over its {}-byte limit", n, max_body_length));
        pos = eol + 2;
        if (n == 0) {
            // Trailers (none expected) end with an empty line.
            std::size_t const trailers = pos;
            for (;;) {
                auto const t = data.find("\r\n", pos);
                if (t == std::string_view::npos) {
                    if (data.size() - trailers > max_head_length)
                        return malformed(fmt::format("trailers over {} bytes", max_head_length));
                    return incomplete();
                }
                bool const empty = t == pos;
                pos = t + 2;
                if (pos - trailers > max_head_length)
                    return malformed(fmt::format("trailers over {} bytes", max_head_length));
                if (empty) {
                    length = pos;
                    return complete();
                }
            }
        }
        body += static_cast<std::size_t>(n);
        if (data.size() - pos < n + 2) return incomplete();
        pos += static_cast<std::size_t>(n);
        if (data.substr(pos, 2) != "\r\n") return malformed("chunk data not followed by CRLF");
        pos += 2;
    }
}

}  // namespace wsig::bench::detail
