// Shared by the server fuzzers: a server_state built without sockets or an io_context, fake
// registered connections that record what reaches them, the request parser set up as http_session
// sets it up, and the checks every response must pass.
#pragma once

#include "server/state.hpp"

#include <wsig/registry.hpp>
#include <wsig/signing.hpp>

#include <boost/asio/buffer.hpp>
#include <boost/asio/ip/address_v4.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/write.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace wsig_fuzz {

namespace http = boost::beast::http;
using wsig::detail::request;
using wsig::detail::response;
using wsig::detail::server_state;
using wsig::detail::tcp;

// A broken invariant: say which, with the response or request that broke it, and crash so that
// libFuzzer keeps the input.
[[noreturn]] inline void fail(char const* what, std::string_view detail) {
    std::fprintf(stderr, "\n==== wsig fuzz invariant broken: %s\n%.*s\n====\n", what, static_cast<int>(detail.size()),
                 detail.data());
    std::fflush(stderr);
    __builtin_trap();
}
#define WSIG_FUZZ_CHECK(cond, detail)                    \
    do {                                                 \
        if (!(cond)) ::wsig_fuzz::fail(#cond, (detail)); \
    } while (false)

// WSIG_FUZZ_TRACE=1: one line per request on stderr (to see what a corpus input reaches).
inline void trace(std::string_view server, request const& req, unsigned status) {
    static bool const on = std::getenv("WSIG_FUZZ_TRACE") != nullptr;
    if (on)
        std::fprintf(stderr, "trace: %.*s %.*s %.*s -> %u\n", static_cast<int>(server.size()), server.data(),
                     static_cast<int>(req.method_string().size()), req.method_string().data(),
                     static_cast<int>(req.target().size()), req.target().data(), status);
}

// Every fuzzer request comes from here; strict signing binds IDs to this IP and the User-Agent below.
inline tcp::endpoint const& remote() {
    static tcp::endpoint const ep(boost::asio::ip::make_address_v4("127.0.0.1"), 50000);
    return ep;
}
inline constexpr std::string_view user_agent = "wsig-fuzz";
inline constexpr std::string_view secret = "s3cr3t-fuzz";
inline constexpr std::string_view api_key = "k3y-fuzz";

// A registered connection that records every send and close instead of writing to a socket.
class fake_connection final : public wsig::connection {
public:
    explicit fake_connection(wsig::connection_info info) : info_(std::move(info)) {}
    wsig::connection_info const& info() const noexcept override { return info_; }
    wsig::send_status send(wsig::message_ptr const& message) override {
        WSIG_FUZZ_CHECK(message != nullptr, info_.client_id);
        WSIG_FUZZ_CHECK(message->op() == wsig::opcode::text, info_.client_id);
        received.emplace_back(message->payload());
        return wsig::send_status::queued;
    }
    void close(std::uint16_t code, std::string reason) override { closes.emplace_back(code, std::move(reason)); }

    std::vector<std::string> received;
    std::vector<std::pair<std::uint16_t, std::string>> closes;

private:
    wsig::connection_info info_;
};

struct fake_spec {
    std::string name;
    std::string id;  // signed with the server's key when signing is on
    std::string group = {};
    wsig::scope scope = wsig::scope::global;
};

// The connections every fuzzer registers: two Names with groups, a Name whose broadcast level wants
// a group, a local connection (never reachable by push), IDs that differ only in case.
inline std::vector<fake_spec> default_fakes() {
    return {{"Chat", "alice", "red"},   {"Chat", "bob", "Blue"},   {"Chat", "Alice"},
            {"Ops", "carol", "admins"}, {"Ops", "dave"},           {"Log", "erin", {}, wsig::scope::local},
            {"Msg", "frank"},           {"Secure", "grace", "red"}};
}

// A server_state as run_server builds it, minus the sockets, the io_context and the command
// external commands (these need an executor; handle_http and plan_upgrade never use them).
struct server_fixture {
    std::string label;
    std::unique_ptr<server_state> st;
    std::vector<std::shared_ptr<fake_connection>> conns;

    server_fixture(std::string name, wsig::server_options o, std::vector<fake_spec> const& fakes)
        : label(std::move(name)) {
        o.log_level = wsig::log_level::quiet;  // warnings only: the fuzzer's output stays readable
        st = std::make_unique<server_state>(std::move(o));
        auto key = st->opts.signing.key_for(user_agent, "127.0.0.1");
        for (auto const& f : fakes) {
            wsig::connection_info info{.name = f.name,
                                       .group = f.group,
                                       .client_id = st->opts.signing.enabled ? wsig::sign(f.id, key).value() : f.id,
                                       .scope = f.scope,
                                       .path = "/fake",
                                       .remote = "127.0.0.1:40000"};
            auto c = std::make_shared<fake_connection>(std::move(info));
            if (st->reg.add(c)) fail("two fakes with the same Name and ClientId", f.id);
            conns.push_back(std::move(c));
        }
    }

    void reset() {
        for (auto const& c : conns) {
            c->received.clear();
            c->closes.clear();
        }
    }
    std::size_t sends() const {
        std::size_t n = 0;
        for (auto const& c : conns) n += c->received.size();
        return n;
    }
    std::size_t closes() const {
        std::size_t n = 0;
        for (auto const& c : conns) n += c->closes.size();
        return n;
    }
};

// One request off the front of `in`, parsed as http_session reads it (16 KiB of headers, bodies up
// to max_body_size, the end of the input as the peer's EOF). nullopt where the session stops
// reading: the end of the input, or a parse error it answers with 400/413 itself.
inline std::optional<request> read_request(std::string_view& in, std::uint64_t body_limit) {
    if (in.empty()) return std::nullopt;  // end_of_stream between requests
    http::request_parser<http::string_body> parser;
    parser.body_limit(body_limit);
    parser.header_limit(16 * 1024);
    parser.eager(true);
    boost::beast::error_code ec;
    while (!parser.is_done()) {
        if (in.empty()) {
            parser.put_eof(ec);
            break;
        }
        auto n = parser.put(boost::asio::buffer(in.data(), in.size()), ec);
        in.remove_prefix(n);
        if (ec == http::error::need_more) {
            ec = {};
            if (n == 0) {  // all the input is there: more will never come
                parser.put_eof(ec);
                break;
            }
            continue;
        }
        if (ec || n == 0) break;
    }
    if (ec || !parser.is_done()) return std::nullopt;
    return parser.release();
}

inline std::string text_of(response const& res) {
    std::ostringstream out;
    out << res;
    return out.str();
}

inline std::string_view trimmed(std::string_view s) {
    auto b = s.find_first_not_of(" \t");
    if (b == std::string_view::npos) return {};
    return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

// A response as written is read back by a parser with the same status, body and header fields, in
// order: nothing a request put into a header value can split the header block.
inline void check_wire(response const& res, bool head) {
    auto text = text_of(res);
    http::response_parser<http::string_body> back;
    back.eager(true);
    back.skip(head);
    boost::beast::error_code ec;
    auto n = back.put(boost::asio::buffer(text.data(), text.size()), ec);
    WSIG_FUZZ_CHECK(!ec && back.is_done() && n == text.size(), text);
    auto const& got = back.get();
    WSIG_FUZZ_CHECK(got.result_int() == res.result_int() && got.body() == res.body(), text);
    auto a = res.begin(), b = got.begin();
    for (; a != res.end() && b != got.end(); ++a, ++b)
        WSIG_FUZZ_CHECK(a->name_string() == b->name_string() && trimmed(a->value()) == trimmed(b->value()), text);
    WSIG_FUZZ_CHECK(a == res.end() && b == got.end(), text);
}

// What holds for every response the server writes: a status it documents, its Server header, a
// Content-Length that matches the body (HEAD and 304: no body; a static file: the bytes of the file
// part `streamed` after the head), JSON that parses, and a sound header block.
inline void check_response(response const& res, bool head, std::optional<std::uint64_t> streamed = std::nullopt) {
    auto status = res.result_int();
    bool known = status == 200 || status == 206 || status == 304 || status == 400 || status == 401 || status == 403 ||
                 status == 404 || status == 405 || status == 409 || status == 416 || status == 421 || status == 426 ||
                 status == 500 || status == 503;
    auto text = [&] { return text_of(res); };
    WSIG_FUZZ_CHECK(known, text());
    WSIG_FUZZ_CHECK(res[http::field::server] == "wsig", text());
    bool const no_body = head || status == 304;
    if (status != 304) WSIG_FUZZ_CHECK(res.has_content_length(), text());
    if (no_body || streamed) WSIG_FUZZ_CHECK(res.body().empty(), text());
    if (streamed && !head)
        WSIG_FUZZ_CHECK(res[http::field::content_length] == std::to_string(*streamed), text());
    else if (!no_body)
        WSIG_FUZZ_CHECK(res[http::field::content_length] == std::to_string(res.body().size()), text());
    if (!no_body && !streamed && res[http::field::content_type] == "application/json")
        WSIG_FUZZ_CHECK(nlohmann::json::accept(res.body()), text());
    check_wire(res, no_body || streamed);
}

}  // namespace wsig_fuzz
