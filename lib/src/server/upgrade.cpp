// Who may connect, and as what: the Host a request names (DNS rebinding), the Origin of an
// upgrade, the route a path upgrades to, client IDs (chosen, signed, in use), the connection and
// process caps, and plan_upgrade, which turns an upgrade request into a session to start or a refusal.
#include "server/requests.hpp"
#include "server/state.hpp"
#include "util/text.hpp"
#include "wire/frame.hpp"

#include <wsig/client_id.hpp>
#include <wsig/signing.hpp>

#include <boost/asio/ip/address.hpp>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <iterator>
#include <optional>
#include <string>
#include <utility>

namespace wsig::detail {

namespace net = boost::asio;
using error_code = boost::system::error_code;

namespace {

bool websocket_upgrade_header(request const& req) {
    return iequals(trim(req[http::field::upgrade]), "websocket");
}

}  // namespace

bool wants_upgrade(request const& req) {
    return websocket_upgrade_header(req) || req.count(http::field::sec_websocket_key) > 0;
}

std::optional<route_match> match_route(server_state const& st, std::string_view path, bool with_auto) {
    auto const& o = st.opts;
    if (!path.starts_with('/')) return std::nullopt;  // "GET ?x", "GET *": no route, not even --auto-upgrade
    for (auto const& e : o.echo_paths)
        if (e == path) return route_match{session_kind::echo, {}, {}, scope::global};
    for (auto const& r : o.routes)
        if (r.path == path)
            return route_match{session_kind::signal, r.name, r.group, r.scope.value_or(o.default_scope), r.exec};
    if (o.demo && path == "/msg") return route_match{session_kind::demo, "Msg", {}, o.default_scope};
    if (o.auto_upgrade && with_auto) return route_match{session_kind::signal, std::string(path), {}, scope::global};
    return std::nullopt;
}

namespace {

// A client-chosen ID: printable ASCII without spaces, of a sane length.
bool acceptable_client_id(std::string_view id) {
    if (id.empty() || id.size() > 512) return false;
    return std::all_of(id.begin(), id.end(), [](char c) { return c > 0x20 && c < 0x7F; });
}

// A Host header value split into its name and port ("[::1]:80" -> "::1", "80"); nullopt when it is
// not host[:port] (a port of 1-5 digits; a v6 literal in brackets).
struct host_port {
    std::string_view host;
    std::string_view port;
    bool bracketed = false;
};
std::optional<host_port> split_host(std::string_view h) {
    host_port out;
    std::string_view rest;
    if (h.starts_with('[')) {
        auto close = h.find(']');
        if (close == std::string_view::npos) return std::nullopt;
        out.host = h.substr(1, close - 1);
        out.bracketed = true;
        rest = h.substr(close + 1);
    } else {
        auto colon = h.find(':');
        out.host = h.substr(0, colon);
        rest = colon == std::string_view::npos ? std::string_view() : h.substr(colon);
    }
    if (!rest.empty()) {
        if (rest[0] != ':') return std::nullopt;
        out.port = rest.substr(1);
        if (out.port.empty() || out.port.size() > 5 ||
            !std::all_of(out.port.begin(), out.port.end(), [](char c) { return c >= '0' && c <= '9'; }))
            return std::nullopt;
    }
    if (out.host.empty()) return std::nullopt;
    return out;
}

bool ip_literal(host_port const& h) {
    error_code ec;
    std::string text(h.host);
    if (h.bracketed) {
        net::ip::make_address_v6(text, ec);
        return !ec;
    }
    net::ip::make_address_v4(text, ec);  // dotted quad only: "127.1" and "0x7f.1" are names
    return !ec;
}

// `localhost` and its subdomains (RFC 6761: they resolve to loopback), with or without the final dot.
bool loopback_name(std::string_view name) {
    if (name.ends_with('.')) name.remove_suffix(1);
    constexpr std::string_view suffix = ".localhost";
    return iequals(name, "localhost") ||
           (name.size() > suffix.size() && iequals(name.substr(name.size() - suffix.size()), suffix));
}

}  // namespace

// Nullopt when the request may be answered; otherwise the 421 (or 400) refusing it. A page on
// another name that rebinds that name to 127.0.0.1 sends its own name as Host: a loopback server
// answers only loopback names and IP literals, and the names --allow-host gives. A request without
// Host (HTTP/1.0, a non-browser client) is answered: a browser always sends one.
std::optional<response> refuse_host(server_state& st, request const& req, tcp::endpoint const& remote) {
    auto const& allowed = st.opts.allow_hosts;
    if (!st.loopback_bound && allowed.empty()) return std::nullopt;
    if (req.count(http::field::host) == 0) return std::nullopt;
    auto value = trim(req[http::field::host]);
    auto h = split_host(value);
    if (!h) return make_response(req, http::status::bad_request, "the Host header is not host[:port]\n");
    if (ip_literal(*h)) return std::nullopt;
    if (!h->bracketed) {
        if (st.loopback_bound && loopback_name(h->host)) return std::nullopt;
        auto name = h->host.ends_with('.') ? h->host.substr(0, h->host.size() - 1) : h->host;
        if (std::any_of(allowed.begin(), allowed.end(), [&](auto const& p) { return glob_match(p, name); }))
            return std::nullopt;
    }
    st.policy_log.log(
        st.log, severity::warning, "Host refusals",
        fmt::format("refused {} {} from {}: Host '{}' is not a name this server answers (421)", req.method_string(),
                    log_value(origin_form(req.target())), peer_string(remote), log_value(value)));
    return make_response(req, http::status::misdirected_request,
                         st.loopback_bound
                             ? "misdirected request: this server answers only loopback names and IP literals "
                               "in Host (see --allow-host)\n"
                             : "misdirected request: the Host is not one this server answers (see --allow-host)\n");
}

namespace {

// "scheme://host[:port]" with the scheme's default port dropped, lower-cased, for comparing origins.
std::string normal_origin(std::string_view scheme, std::string_view host_and_port) {
    std::string out = to_lower(fmt::format("{}://{}", scheme, host_and_port));
    auto drop = [&](std::string_view suffix) {
        if (out.ends_with(suffix)) out.resize(out.size() - suffix.size());
    };
    if (iequals(scheme, "http")) drop(":80");
    if (iequals(scheme, "https")) drop(":443");
    return out;
}

// True when `origin` is this server as the request reached it: its scheme and the request's Host.
bool own_origin(server_state const& st, request const& req, std::string_view origin) {
    bool tls = !st.opts.tls_cert.empty() || !st.opts.pfx.empty();
    auto host = trim(req[http::field::host]);
    if (host.empty()) return false;
    auto sep = origin.find("://");
    if (sep == std::string_view::npos) return false;  // "null" (a sandboxed or file: page) included
    return normal_origin(origin.substr(0, sep), origin.substr(sep + 3)) == normal_origin(tls ? "https" : "http", host);
}

}  // namespace

namespace {

// Counts the connection in before anything else can: check and increment are one atomic step,
// so concurrent upgrades cannot overshoot --max-connections. The session gives the slot back.
std::optional<response> reserve_slot(server_state& st, request const& req) {
    auto before = st.ws_count.fetch_add(1);
    if (st.opts.max_connections == 0 || before < st.opts.max_connections) return std::nullopt;
    --st.ws_count;
    auto res = make_response(req, http::status::service_unavailable, "too many connections\n");
    res.set(http::field::retry_after, "1");
    return res;
}

// The same for a local route's process (--max-processes): the slot is a token the process holds
// until it is reaped, not the socket (a process that outlives its connection still counts).
std::variant<std::shared_ptr<void>, response> reserve_process(server_state& st, request const& req,
                                                              tcp::endpoint const& remote, std::string_view path) {
    auto before = st.process_count.fetch_add(1);
    if (st.opts.max_processes != 0 && before >= st.opts.max_processes) {
        --st.process_count;
        st.policy_log.log(st.log, severity::warning, "process-cap refusals",
                          fmt::format("refused an upgrade of {} from {}: {} local-route processes are running "
                                      "(--max-processes)",
                                      log_value(path), peer_string(remote), st.opts.max_processes));
        auto res = make_response(req, http::status::service_unavailable, "too many local-route processes\n");
        res.set(http::field::retry_after, "1");
        return res;
    }
    return std::shared_ptr<void>(&st.process_count, [](std::atomic<std::size_t>* n) { --*n; });
}

// What RFC 6455 4.2.1 requires of the opening handshake: HTTP/1.1, Connection: Upgrade,
// Upgrade: websocket, a key (24 base64 characters for its 16 bytes), version 13 (426 naming it
// otherwise, 4.4).
std::optional<response> refuse_handshake(request const& req) {
    auto const key = trim(req[http::field::sec_websocket_key]);
    if (key.empty())
        return make_response(req, http::status::bad_request,
                             "WebSocket upgrade request is invalid, missing Sec-WebSocket-Key header\n");
    if (key.size() > 24)
        return make_response(req, http::status::bad_request,
                             "WebSocket upgrade request has an invalid Sec-WebSocket-Key\n");
    if (req.version() != 11)
        return make_response(req, http::status::bad_request, "a WebSocket upgrade needs HTTP/1.1\n");
    if (!list_contains(req[http::field::connection], "upgrade"))
        return make_response(req, http::status::bad_request,
                             "WebSocket upgrade request is missing Connection: Upgrade\n");
    if (!list_contains(req[http::field::upgrade], "websocket"))
        return make_response(req, http::status::bad_request,
                             "WebSocket upgrade request is missing Upgrade: websocket\n");
    auto const version = trim(req[http::field::sec_websocket_version]);
    if (version.empty())
        return make_response(req, http::status::bad_request,
                             "WebSocket upgrade request is missing Sec-WebSocket-Version\n");
    if (version != "13") {
        auto res = make_response(req, http::status::upgrade_required, "only WebSocket version 13 is supported\n");
        res.set(http::field::sec_websocket_version, "13");
        return res;
    }
    return std::nullopt;
}

}  // namespace

std::string switching_protocols(request const& req, connection_info const& info) {
    std::string out = fmt::format(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: {}\r\n",
        wire::accept_key(trim(req[http::field::sec_websocket_key])));
    if (!info.name.empty()) {
        fmt::format_to(std::back_inserter(out), "X-Pode-Signal-Client-Id: {}\r\nX-Pode-Signal-Name: {}\r\n",
                       info.client_id, info.name);
        if (!info.group.empty()) fmt::format_to(std::back_inserter(out), "X-Pode-Signal-Group: {}\r\n", info.group);
    }
    out += "Server: wsig\r\n\r\n";
    return out;
}

std::variant<upgrade_plan, response> plan_upgrade(server_state& st, request const& req, tcp::endpoint const& remote) {
    if (auto r = refuse_host(st, req, remote)) return std::move(*r);
    auto t = parse_target(req.target());
    auto m = match_route(st, t.path);
    if (!m) return make_response(req, http::status::not_found, "no WebSocket route here\n");
    if (req.method() != http::verb::get) {
        auto res = make_response(req, http::status::method_not_allowed, "a WebSocket upgrade must be a GET\n");
        res.set(http::field::allow, "GET");
        return res;
    }
    if (auto r = refuse_handshake(req)) return std::move(*r);
    if (!st.opts.allow_origins.empty() && req.count(http::field::origin) > 0) {
        auto origin = req[http::field::origin];
        bool ok = std::any_of(st.opts.allow_origins.begin(), st.opts.allow_origins.end(),
                              [&](auto const& p) { return glob_match(p, origin); });
        if (!ok) {
            st.policy_log.log(st.log, severity::warning, "Origin refusals",
                              fmt::format("refused an upgrade from {}: Origin '{}' is not allowed", peer_string(remote),
                                          log_value(origin)));
            return make_response(req, http::status::forbidden, "origin not allowed\n");
        }
    } else if (!m->exec.empty() && req.count(http::field::origin) > 0 &&
               !own_origin(st, req, trim(req[http::field::origin]))) {
        // A web page on any site could otherwise run the route's command (cross-site WebSocket
        // hijacking): without --allow-origin, an exec= route takes only its own origin, or none.
        st.policy_log.log(st.log, severity::warning, "Origin refusals",
                          fmt::format("refused an upgrade of {} from {}: Origin '{}' is another site (exec= route)",
                                      log_value(t.path), peer_string(remote), log_value(req[http::field::origin])));
        return make_response(req, http::status::forbidden,
                             "cross-site upgrade refused: this route runs a command and takes only its own "
                             "origin (see --allow-origin)\n");
    }
    if (st.stopping) return make_response(req, http::status::service_unavailable, "server is shutting down\n");
    upgrade_plan plan{m->kind, {}, m->exec};
    auto& info = plan.info;
    info.path = std::string(t.path);
    info.remote = peer_string(remote);
    info.since = std::chrono::system_clock::now();
    info.scope = m->scope;
    if (m->kind == session_kind::echo) {
        if (auto r = reserve_slot(st, req)) return std::move(*r);
        return plan;
    }
    info.name = m->name;
    info.group = m->group;
    if (info.group.empty())
        if (auto g = t.get("group")) {
            // It goes into the 101's header block: no control characters, a sane length.
            if (g->size() > 256 || std::any_of(g->begin(), g->end(), [](char c) {
                    return static_cast<unsigned char>(c) < 0x20 || c == 0x7F;
                }))
                return make_response(req, http::status::bad_request, "group must be printable, at most 256 bytes\n");
            info.group = *g;
        }
    auto const& signing = st.opts.signing;
    auto key = signing.enabled ? signing.key_for(trim(req[http::field::user_agent]), peer_ip(remote)) : std::string();
    // HMAC or RAND_bytes failed: no ID can be made, so no connection (never an unsigned one).
    auto const no_client_id = [&](error const& e) {
        st.log.log(severity::error, fmt::format("refused an upgrade from {}: {}", peer_string(remote), e.message));
        return make_response(req, http::status::internal_server_error, "the server cannot make a client ID\n");
    };
    std::optional<std::string> chosen;
    if (st.opts.accept_client_id)
        if (auto c = t.get("clientId"); c && !c->empty()) chosen = *c;
    if (chosen) {
        if (!acceptable_client_id(*chosen))
            return make_response(req, http::status::bad_request, "clientId must be 1-512 printable characters\n");
        if (signing.enabled) {
            if (is_signed_form(*chosen)) {
                if (!unsign(*chosen, key)) {
                    st.policy_log.log(st.log, severity::warning, "clientId refusals",
                                      fmt::format("refused an upgrade from {}: clientId {} does not verify",
                                                  peer_string(remote), redact_id(*chosen)));
                    return make_response(req, http::status::bad_request, "the signed clientId does not verify\n");
                }
                info.client_id = *chosen;
            } else {
                auto signed_id = sign(*chosen, key);
                if (!signed_id) return no_client_id(signed_id.error());
                info.client_id = std::move(*signed_id);
                // Only the holder of the signed ID may replace its connection: anyone can ask for the
                // unsigned form, and would get the same signature (Pode's rule).
                if (!st.reg.select({.names = {info.name}, .client_ids = {info.client_id}}, {.with_locals = true})
                         ->empty()) {
                    st.policy_log.log(st.log, severity::warning, "clientId refusals",
                                      fmt::format("refused an upgrade from {}: clientId {} is in use under {}",
                                                  peer_string(remote), redact_id(*chosen), log_value(info.name)));
                    return make_response(req, http::status::conflict,
                                         "this clientId is in use: only the holder of its signed form may "
                                         "replace it\n");
                }
            }
        } else {
            info.client_id = *chosen;
        }
    } else {
        auto id = new_client_id();
        if (id && signing.enabled) id = sign(*id, key);
        if (!id) return no_client_id(id.error());
        info.client_id = std::move(*id);
    }
    if (auto r = reserve_slot(st, req)) return std::move(*r);
    if (!plan.exec.empty()) {
        auto slot = reserve_process(st, req, remote, t.path);
        if (auto* r = std::get_if<response>(&slot)) {
            --st.ws_count;  // the --max-connections slot taken just above
            return std::move(*r);
        }
        plan.process_slot = std::move(std::get<std::shared_ptr<void>>(slot));
    }
    return plan;
}

}  // namespace wsig::detail
