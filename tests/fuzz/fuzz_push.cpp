// Fuzzes the push API (POST /signal with X-Pode-Signal-* headers): any request gives a documented
// status, and a message reaches exactly the connections the headers name, verbatim, or none at all.
//
// The input is an HTTP request as a client sends it; whatever its method and path, it is handled as
// POST /signal (its query kept), so every mutation exercises the push headers and the body. It runs
// against three servers with the same registered connections: unsigned IDs; signed IDs behind an
// API key; strict signing (IDs bound to User-Agent "wsig-fuzz" and 127.0.0.1).
#include "server_fixture.hpp"
#include "util/text.hpp"

#include <wsig/signing.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace {

using namespace wsig_fuzz;

std::vector<server_fixture>& servers() {
    static std::vector<server_fixture> all = [] {
        auto base = [] {
            wsig::server_options o;
            o.routes = {{.path = "/ws", .name = "Chat"}, {.path = "/ops", .name = "Ops", .group = "admins"}};
            o.max_body_size = 1 << 20;  // what `wsig serve` sets by default (--max-message-size)
            (void)o.levels.apply_spec("Ops=group");
            (void)o.levels.apply_spec("Secure=clientid");
            return o;
        };
        std::vector<server_fixture> out;
        out.emplace_back("plain", base(), default_fakes());
        auto keyed = base();
        keyed.signing = {.enabled = true, .secret = std::string(secret)};
        keyed.api_key = std::string(api_key);
        out.emplace_back("keyed", std::move(keyed), default_fakes());
        auto strict = base();
        strict.signing = {.enabled = true, .secret = std::string(secret), .strict = true};
        out.emplace_back("strict", std::move(strict), default_fakes());
        return out;
    }();
    return all;
}

std::vector<std::string> groups_of(std::string_view header) {
    std::vector<std::string> out;
    while (!header.empty()) {
        auto c = header.find(',');
        if (auto item = header.substr(0, c); !item.empty()) out.emplace_back(item);
        if (c == std::string_view::npos) break;
        header.remove_prefix(c + 1);
    }
    return out;
}

bool group_ok(std::string const& group, std::vector<std::string> const& groups) {
    return groups.empty() ||
           std::any_of(groups.begin(), groups.end(), [&](auto const& g) { return wsig::iequals(g, group); });
}

void check_push(server_fixture& f, request const& req, response const& res) {
    auto const& st = *f.st;
    auto text = [&] {  // only built when a check fails
        std::ostringstream o;
        o << res << "\n---- request:\n" << req;
        return o.str();
    };
    auto status = res.result_int();
    WSIG_FUZZ_CHECK(status == 200 || status == 400 || status == 401 || status == 403 || status == 404, text());
    WSIG_FUZZ_CHECK(res[http::field::content_type] == "application/json", text());
    WSIG_FUZZ_CHECK(f.closes() == 0, text());
    if (!st.opts.api_key.empty()) {
        auto auth = req[http::field::authorization];
        bool right_key =
            auth.size() > 7 && wsig::iequals(auth.substr(0, 7), "Bearer ") && trimmed(auth.substr(7)) == api_key;
        WSIG_FUZZ_CHECK(right_key == (status != 401), text());
    }
    if (status != 200) {
        WSIG_FUZZ_CHECK(f.sends() == 0, text());  // a refused push delivers nothing
        return;
    }
    auto delivered = nlohmann::json::parse(res.body()).at("delivered").get<std::size_t>();
    auto const& body = req.body();
    WSIG_FUZZ_CHECK(f.sends() == (body.empty() ? 0 : delivered), text());

    auto id = std::string(trimmed(req["X-Pode-Signal-Client-Id"]));
    auto name = std::string(trimmed(req["X-Pode-Signal-Name"]));
    auto groups = groups_of(req["X-Pode-Signal-Group"]);
    WSIG_FUZZ_CHECK(!name.empty(), text());  // a 200 always names a Name
    if (!id.empty()) {
        // To one client: it existed, under that Name, global, in a named group; its ID verifies.
        WSIG_FUZZ_CHECK(delivered == (body.empty() ? 0 : 1), text());
        if (st.opts.signing.enabled)
            WSIG_FUZZ_CHECK(
                wsig::unsign(id, st.opts.signing.key_for(trimmed(req[http::field::user_agent]), "127.0.0.1")), text());
        bool found = false;
        for (auto const& c : f.conns) {
            auto const& i = c->info();
            bool target =
                i.name == name && i.client_id == id && i.scope == wsig::scope::global && group_ok(i.group, groups);
            found = found || target;
            if (!target) WSIG_FUZZ_CHECK(c->received.empty(), text());
        }
        WSIG_FUZZ_CHECK(found, text());
    } else {
        // A broadcast: every global connection of that Name in a named group, nobody else; the
        // broadcast level allowed it.
        WSIG_FUZZ_CHECK(st.opts.levels.check(name, !groups.empty(), false).has_value(), text());
        std::size_t targets = 0;
        for (auto const& c : f.conns) {
            auto const& i = c->info();
            bool target = i.name == name && i.scope == wsig::scope::global && group_ok(i.group, groups);
            targets += target;
            if (!target || body.empty()) WSIG_FUZZ_CHECK(c->received.empty(), text());
        }
        WSIG_FUZZ_CHECK(delivered == (body.empty() ? 0 : targets), text());  // an empty body sends nothing
    }
    for (auto const& c : f.conns) {
        WSIG_FUZZ_CHECK(c->received.size() <= 1, text());                          // once
        for (auto const& got : c->received) WSIG_FUZZ_CHECK(got == body, text());  // verbatim
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size) {
    for (auto& f : servers()) {
        std::string_view in(reinterpret_cast<char const*>(data), size);
        auto req = read_request(in, f.st->opts.max_body_size);
        if (!req) return 0;
        auto target = std::string(req->target());
        auto q = target.find('?');
        req->target("/signal" + (q == std::string::npos ? std::string() : target.substr(q)));
        req->method(http::verb::post);
        f.reset();
        auto res = wsig::detail::handle_http(*f.st, *req, remote()).res;
        trace(f.label, *req, res.result_int());
        check_response(res, false);
        check_push(f, *req, res);
    }
    return 0;
}
