// Fuzzes the server's HTTP request path as http_session runs it: bytes -> request parser (16 KiB of
// headers, max_body_size of body) -> wants_upgrade -> plan_upgrade or handle_http, request after
// request while the connection stays open. Every response is documented and well formed, never
// leaks the secret, the API key or a file outside --static, and an upgrade plan is sound: its
// client ID verifies, its headers cannot split the 101, its --max-connections slot is counted.
//
// Two servers take every input. "full": routes with a fixed group and a local route with exec=, an
// echo path, the demo page at / and /msg, --static for the rest, client-chosen IDs, signing, an API
// key and allowed origins. "open": --auto-upgrade, strict signing, local default scope, no API key.
// The external commands (--signal-route, hooks, --every) are left out: they need a running
// executor, and neither plan_upgrade nor handle_http calls them.
#include "server_fixture.hpp"
#include "util/text.hpp"

#include <wsig/signing.hpp>

#include <boost/beast/http/empty_body.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <unistd.h>

namespace {

using namespace wsig_fuzz;
namespace fs = std::filesystem;

constexpr std::string_view outside_marker = "wsig-fuzz-outside-marker";

fs::path static_base;  // removed at exit (before this is destroyed: atexit runs first)

// base/www is the --static root; base/outside.txt is what no request may read.
fs::path make_static_tree() {
    std::string base_name = (fs::temp_directory_path() / "wsig-fuzz-static-XXXXXX").string();
    if (!mkdtemp(base_name.data())) fail("mkdtemp", base_name);
    fs::path base(base_name);
    auto write = [](fs::path const& p, std::string_view text) { std::ofstream(p, std::ios::binary) << text; };
    fs::create_directories(base / "www" / "sub");
    write(base / "outside.txt", outside_marker);
    write(base / "www" / "index.html", "<h1>index</h1>");
    write(base / "www" / "app.js", "console.log(1)");
    write(base / "www" / "sub" / "index.html", "<p>sub</p>");
    write(base / "www" / "sub" / "data.json", "{\"a\":1}");
    write(base / "www" / "a b%.txt", "odd name");
    fs::create_symlink("../outside.txt", base / "www" / "link-out");
    fs::create_symlink("..", base / "www" / "dir-out");
    fs::create_symlink("index.html", base / "www" / "link-in");
    static_base = base;
    std::atexit([] {
        std::error_code ec;
        fs::remove_all(static_base, ec);
    });
    return base;
}

std::vector<server_fixture>& servers() {
    static std::vector<server_fixture> all = [] {
        std::vector<server_fixture> out;
        auto base = make_static_tree();

        wsig::server_options full;
        full.routes = {{.path = "/ws", .name = "Chat"},
                       {.path = "/ops", .name = "Ops", .group = "admins"},
                       {.path = "/log", .name = "Log", .scope = wsig::scope::local, .exec = "cat"}};
        full.echo_paths = {"/echo"};
        full.accept_client_id = true;
        full.signing = {.enabled = true, .secret = std::string(secret)};
        full.allow_origins = {"http://localhost:*", "https://*.example.org"};
        full.api_key = std::string(api_key);
        full.max_body_size = 1 << 20;  // `wsig serve`'s default (--max-message-size)
        full.static_dir = (base / "www").string();
        full.demo = true;  // the CLI sets it only without --static; here / is the demo, the rest static
        (void)full.levels.apply_spec("Ops=group");
        out.emplace_back("full", std::move(full), default_fakes());
        out.back().st->static_root = fs::canonical(base / "www");

        wsig::server_options open;
        open.routes = {{.path = "/chat", .name = "Chat"}};
        open.auto_upgrade = true;
        open.default_scope = wsig::scope::local;
        open.signing = {.enabled = true, .secret = std::string(secret), .strict = true};
        open.max_connections = 1;  // one slot: the fuzzer gives it back after every plan
        open.max_body_size = 64 << 10;
        (void)open.levels.apply_spec("clientid");
        out.emplace_back("open", std::move(open), default_fakes());
        return out;
    }();
    return all;
}

std::string describe(request const& req) {
    std::ostringstream o;
    o << req;
    return o.str();
}

bool printable(std::string_view s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) >= 0x20 && c != 0x7F; });
}

void check_plan(server_fixture& f, request const& req, wsig::detail::upgrade_plan const& plan) {
    auto const& st = *f.st;
    auto why = [&] { return describe(req); };
    WSIG_FUZZ_CHECK(req.method() == http::verb::get, why());
    WSIG_FUZZ_CHECK(st.ws_count == 1, why());  // the slot is taken before the session exists
    auto const& info = plan.info;
    auto target = wsig::detail::origin_form(req.target());
    WSIG_FUZZ_CHECK(info.path == target.substr(0, target.find('?')), why());
    if (plan.kind == wsig::detail::session_kind::echo) {
        WSIG_FUZZ_CHECK(info.name.empty() && info.client_id.empty(), why());
    } else {
        // A route path starts with '/'; "GET ?x" once gave --auto-upgrade the empty Name
        // (corpus: regress-auto-upgrade-empty-path).
        WSIG_FUZZ_CHECK(!info.name.empty() && info.path.starts_with('/'), why());
        WSIG_FUZZ_CHECK(!info.client_id.empty(), why());
        WSIG_FUZZ_CHECK(printable(info.group) && info.group.size() <= 256, why());
        WSIG_FUZZ_CHECK(
            std::all_of(info.client_id.begin(), info.client_id.end(), [](char c) { return c > 0x20 && c < 0x7F; }),
            why());
        if (st.opts.signing.enabled) {
            auto key = st.opts.signing.key_for(trimmed(req[http::field::user_agent]), "127.0.0.1");
            WSIG_FUZZ_CHECK(wsig::is_signed_form(info.client_id) && wsig::unsign(info.client_id, key), why());
        }
        if (!plan.exec.empty()) WSIG_FUZZ_CHECK(info.scope == wsig::scope::local, why());
    }
    // The 101 as the session writes it: read back whole by a parser, Pode's headers from the plan in
    // Pode's order, a block nothing can split.
    auto const wire = wsig::detail::switching_protocols(req, info);
    http::response_parser<http::empty_body> back;
    back.skip(true);  // a 101 has no body
    boost::beast::error_code ec;
    auto n = back.put(boost::asio::buffer(wire.data(), wire.size()), ec);
    WSIG_FUZZ_CHECK(!ec && back.is_header_done() && n == wire.size(), wire);
    auto const& got = back.get();
    WSIG_FUZZ_CHECK(got.result() == http::status::switching_protocols, wire);
    std::vector<std::string> names;
    for (auto const& field : got) names.emplace_back(field.name_string());
    std::vector<std::string> want{"Upgrade", "Connection", "Sec-WebSocket-Accept"};
    if (!info.name.empty()) {
        want.insert(want.end(), {"X-Pode-Signal-Client-Id", "X-Pode-Signal-Name"});
        if (!info.group.empty()) want.emplace_back("X-Pode-Signal-Group");
        WSIG_FUZZ_CHECK(got["X-Pode-Signal-Client-Id"] == info.client_id && got["X-Pode-Signal-Name"] == info.name,
                        wire);
    }
    want.emplace_back("Server");
    WSIG_FUZZ_CHECK(names == want, wire);
}

// Nothing the server holds may leave in a response unless the request carried it in.
void check_no_leak(std::string_view raw, std::string const& wire) {
    for (auto secret_text : {secret, api_key, outside_marker})
        if (raw.find(secret_text) == std::string_view::npos)
            WSIG_FUZZ_CHECK(wire.find(secret_text) == std::string::npos, wire);
}

// The bytes a file part stands for (the fixture's files are a few bytes).
std::string file_bytes(wsig::detail::file_part const& part) {
    std::string out(static_cast<std::size_t>(std::min<std::uint64_t>(part.length, 1 << 20)), '\0');
    auto n = ::pread(part.fd.get(), out.data(), out.size(), static_cast<off_t>(part.offset));
    out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
    return out;
}

// One connection's worth of requests; false when the connection would end here.
bool one_request(server_fixture& f, std::string_view raw, std::string_view& in) {
    auto& st = *f.st;
    if (st.stopping) return false;
    auto req = read_request(in, st.opts.max_body_size);
    if (!req) return false;
    f.reset();
    if (wsig::detail::wants_upgrade(*req)) {
        auto plan = wsig::detail::plan_upgrade(st, *req, remote());
        if (auto* res = std::get_if<response>(&plan)) {
            trace(f.label, *req, res->result_int());
            WSIG_FUZZ_CHECK(st.ws_count == 0, describe(*req));
            check_response(*res, false);
            check_no_leak(raw, text_of(*res));
            return false;  // the session writes it with Connection: close
        }
        trace(f.label, *req, 101);
        check_plan(f, *req, std::get<wsig::detail::upgrade_plan>(plan));
        --st.ws_count;  // what the WebSocket session does when it ends
        return false;   // the rest of the bytes are WebSocket frames
    }
    auto reply = wsig::detail::handle_http(st, *req, remote());
    auto const& res = reply.res;
    trace(f.label, *req, res.result_int());
    bool head = req->method() == http::verb::head;
    WSIG_FUZZ_CHECK(!(head && reply.file), describe(*req));  // HEAD reads no file
    check_response(res, head, reply.file ? std::optional(reply.file->length) : std::nullopt);
    auto wire = text_of(res);
    if (reply.file) wire += file_bytes(*reply.file);  // what the session would stream after the head
    check_no_leak(raw, wire);
    WSIG_FUZZ_CHECK(st.ws_count == 0, wire);
    auto target = wsig::detail::origin_form(req->target());
    auto path = std::string_view(target).substr(0, target.find('?'));
    bool pushed = path == "/signal" && res.result_int() == 200;
    bool closed = path == "/signal/connections" && res.result_int() == 200;
    WSIG_FUZZ_CHECK(pushed || f.sends() == 0, wire);
    WSIG_FUZZ_CHECK(closed || f.closes() == 0, wire);
    for (auto const& c : f.conns)
        for (auto const& [code, reason] : c->closes) WSIG_FUZZ_CHECK(code == 1000, wire);
    if (!st.opts.api_key.empty() && (path == "/signal" || path == "/signal/connections") && res.result_int() != 405) {
        auto auth = (*req)[http::field::authorization];
        bool right_key =
            auth.size() > 7 && wsig::iequals(auth.substr(0, 7), "Bearer ") && trimmed(auth.substr(7)) == api_key;
        WSIG_FUZZ_CHECK(right_key == (res.result_int() != 401), wire);
    }
    // As http_session::write: the connection stays if it may.
    return !res.need_eof();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size) {
    std::string_view raw(reinterpret_cast<char const*>(data), size);
    for (auto& f : servers()) {
        auto in = raw;
        // A keep-alive connection: a bounded number of pipelined requests is enough to reach every state.
        for (int i = 0; i < 8 && one_request(f, raw, in); ++i) {
        }
    }
    return 0;
}
