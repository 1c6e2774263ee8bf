// The HTTP surface of `wsig serve` besides upgrades: the push API (POST /signal), the admin API
// (GET/DELETE /signal/connections), health, Prometheus metrics, the demo page and --static files,
// and the routing of a request to them.
#include "server/requests.hpp"
#include "server/state.hpp"
#include "server/static_files.hpp"

#include <wsig/signing.hpp>

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <nlohmann/json.hpp>

#include <ctime>
#include <string>
#include <utility>

namespace wsig::detail {

using json = nlohmann::json;

response make_response(request const& req, http::status status, std::string body, std::string_view content_type) {
    response res{status, req.version() ? req.version() : 11};
    res.set(http::field::server, "wsig");
    res.set(http::field::content_type, content_type);
    res.keep_alive(req.keep_alive());
    res.body() = std::move(body);
    res.prepare_payload();
    return res;
}

namespace {

response json_response(request const& req, http::status status, json const& body) {
    return make_response(req, status, body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n",
                         "application/json");
}

response json_error(request const& req, http::status status, std::string message) {
    return json_response(req, status, json{{"error", std::move(message)}});
}

bool api_key_ok(server_state const& st, request const& req) {
    if (st.opts.api_key.empty()) return true;
    auto auth = req[http::field::authorization];
    constexpr std::string_view bearer = "Bearer ";
    if (auth.size() < bearer.size() || !iequals(auth.substr(0, bearer.size()), bearer)) return false;
    auto key = trim(auth.substr(bearer.size()));
    auto const& want = st.opts.api_key;
    // Constant time over the expected key's length; a length mismatch still compares.
    std::string padded(key);
    padded.resize(want.size());
    bool same = CRYPTO_memcmp(padded.data(), want.data(), want.size()) == 0;
    return same && key.size() == want.size();
}

std::vector<std::string> split_groups(std::string_view header) {
    std::vector<std::string> out;
    while (!header.empty()) {
        auto c = header.find(',');
        auto item = header.substr(0, c);
        if (!item.empty()) out.emplace_back(item);  // Pode removes empty entries and does not trim
        if (c == std::string_view::npos) break;
        header = header.substr(c + 1);
    }
    return out;
}

response handle_push(server_state& st, request const& req, tcp::endpoint const& remote) {
    std::string id(trim(req["X-Pode-Signal-Client-Id"]));
    std::string name(trim(req["X-Pode-Signal-Name"]));
    auto groups = split_groups(req["X-Pode-Signal-Group"]);
    auto const& body = req.body();
    if (!valid_utf8(body)) return json_error(req, http::status::bad_request, "the body is not valid UTF-8");
    if (!id.empty()) {
        if (name.empty())
            return json_error(req, http::status::bad_request,
                              "Invalid Signal headers supplied, missing required X-Pode-Signal-Name HTTP header");
        if (st.opts.signing.enabled) {
            auto key = st.opts.signing.key_for(trim(req[http::field::user_agent]), peer_ip(remote));
            if (!is_signed_form(id) || !unsign(id, key))
                return json_error(req, http::status::bad_request,
                                  fmt::format("The X-PODE-SIGNAL-CLIENT-ID value is not valid: {}", redact_id(id)));
        }
        auto conn = st.reg.select({.names = {name}, .groups = groups, .client_ids = {id}});
        if (conn->empty())
            return json_error(req, http::status::not_found,
                              fmt::format("The Signal client connection being referenced does not exist, Name: {}, "
                                          "Group: {}, ClientId: {}",
                                          name, req["X-Pode-Signal-Group"], redact_id(id)));
        if (body.empty()) return json_response(req, http::status::ok, json{{"delivered", 0}});
        bool const queued = conn->items().front()->send(outgoing_message::text(body)) == send_status::queued;
        return json_response(req, http::status::ok, json{{"delivered", queued ? 1 : 0}});
    }
    if (name.empty())
        return json_error(req, http::status::bad_request,
                          "missing X-Pode-Signal-Client-Id or X-Pode-Signal-Name header");
    auto targets = st.reg.select({.names = {name}, .groups = groups}, {.levels = &st.opts.levels});
    if (!targets) return json_error(req, http::status::forbidden, targets.error().message);
    if (body.empty()) return json_response(req, http::status::ok, json{{"delivered", 0}});
    auto msg = outgoing_message::text(body);
    std::size_t delivered = 0;  // a connection that refused it (closing, too slow) does not count
    for (auto const& c : *targets) delivered += c->send(msg) == send_status::queued;
    return json_response(req, http::status::ok, json{{"delivered", delivered}});
}

response handle_connections(server_state& st, request const& req, split_target const& t) {
    target filter;
    if (auto n = t.get("name"); n && !n->empty()) filter.names.push_back(*n);
    if (auto g = t.get("group"); g && !g->empty()) filter.groups = split_groups(*g);
    if (auto c = t.get("clientId"); c && !c->empty()) filter.client_ids.push_back(*c);
    if (req.method() == http::verb::get) {
        json list = json::array();
        for (auto const& c : *st.reg.select(filter, {.with_locals = true})) {
            auto const& i = c->info();
            list.push_back({{"name", i.name},
                            {"group", i.group},
                            {"clientId", i.client_id},
                            {"scope", to_string(i.scope)},
                            {"remote", i.remote},
                            {"since", rfc3339(i.since, false)}});
        }
        return json_response(req, http::status::ok, json{{"connections", std::move(list)}});
    }
    if (filter.names.empty() && filter.groups.empty() && filter.client_ids.empty())
        return json_error(req, http::status::bad_request, "give at least one of name=, group=, clientId=");
    auto conns = st.reg.select(filter, {.with_locals = true}).value();
    for (auto const& c : conns) c->close(1000, "closed");
    return json_response(req, http::status::ok, json{{"closed", conns.size()}});
}

std::string label(std::string_view v) {
    std::string out;
    for (char c : v) {
        if (c == '\\' || c == '"') out += '\\';
        if (c == '\n') {
            out += "\\n";
            continue;
        }
        out += c;
    }
    return out;
}

std::string metrics_text(server_state& st) {
    std::string out;
    auto& m = st.stats;
    out += "# HELP wsig_connections Open signal connections by name.\n# TYPE wsig_connections gauge\n";
    for (auto const& [name, n] : st.reg.count_by_name())
        out += fmt::format("wsig_connections{{name=\"{}\"}} {}\n", label(name), n);
    auto counter = [&](char const* name, char const* help, std::uint64_t v) {
        out += fmt::format("# HELP {} {}\n# TYPE {} counter\n{} {}\n", name, help, name, name, v);
    };
    counter("wsig_messages_received_total", "Client messages received.", m.messages_received.load());
    counter("wsig_messages_sent_total", "Messages written to clients.", m.messages_sent.load());
    counter("wsig_bytes_received_total", "Payload bytes received from clients.", m.bytes_received.load());
    counter("wsig_bytes_sent_total", "Bytes written to clients (frames).", m.bytes_sent.load());
    counter("wsig_messages_dropped_total", "Messages dropped by the slow-client policy or the memory budget.",
            m.messages_dropped.load());
    counter("wsig_budget_closes_total", "Connections closed to keep within --max-queued-total.",
            m.budget_closes.load());
    out +=
        "# HELP wsig_send_dropped_total Messages for clients not written, by cause.\n"
        "# TYPE wsig_send_dropped_total counter\n";
    for (auto const& [cause, name] : drop_causes)
        out += fmt::format("wsig_send_dropped_total{{cause=\"{}\"}} {}\n", name,
                           m.send_dropped[static_cast<std::size_t>(cause)].load(std::memory_order_relaxed));
    auto const* commands = st.commands.get();
    counter("wsig_command_events_dropped_total", "Client messages a signal route's command did not take.",
            commands ? commands->dropped_events() : 0);
    counter("wsig_command_hooks_dropped_total", "Connect and disconnect hooks dropped: too many were waiting.",
            commands ? commands->dropped_hooks() : 0);
    counter("wsig_command_restarts_total", "Signal-route commands restarted.", commands ? commands->restarts() : 0);
    out += fmt::format(
        "# HELP wsig_held_bytes Bytes held for clients: send queues and messages being received.\n"
        "# TYPE wsig_held_bytes gauge\nwsig_held_bytes {}\n",
        st.held_bytes.load(std::memory_order_relaxed));
    std::lock_guard lock(m.mutex);
    out += "# HELP wsig_closes_total WebSocket connections ended, by close code.\n# TYPE wsig_closes_total counter\n";
    for (auto const& [code, n] : m.closes) out += fmt::format("wsig_closes_total{{code=\"{}\"}} {}\n", code, n);
    out +=
        "# HELP wsig_push_requests_total Push API requests, by HTTP status.\n"
        "# TYPE wsig_push_requests_total counter\n";
    for (auto const& [code, n] : m.push_requests)
        out += fmt::format("wsig_push_requests_total{{status=\"{}\"}} {}\n", code, n);
    return out;
}

// GET/HEAD of a file under --static; everything else there is 405, what is not there 404. The file
// is opened here and streamed by the session in bounded chunks (http_session::write_file), so a
// response costs one chunk of memory whatever the file's size; HEAD and 304 never read it.
http_reply serve_static(server_state& st, request const& req) {
    auto method = req.method();
    if (method != http::verb::get && method != http::verb::head) {
        auto res = make_response(req, http::status::method_not_allowed, "method not allowed\n");
        res.set(http::field::allow, "GET, HEAD");
        return res;
    }
    auto file = resolve_static(st.static_root, origin_form(req.target()), st.opts.static_dotfiles);
    if (file.status != 200) return make_response(req, http::status::not_found, "not found\n");
    auto opened = open_regular_file(file.path);
    if (!opened) return make_response(req, http::status::not_found, "not found\n");
    auto mtime = static_cast<std::time_t>(opened->mtime_ns / 1'000'000'000);
    auto etag = entity_tag(opened->size, opened->mtime_ns);
    auto header = [&req](http::field f) -> std::optional<std::string_view> {
        auto it = req.find(f);
        if (it == req.end()) return std::nullopt;
        return it->value();
    };
    auto answer = answer_for({.ranges_apply = method == http::verb::get,
                              .if_none_match = header(http::field::if_none_match),
                              .if_modified_since = header(http::field::if_modified_since),
                              .range = header(http::field::range),
                              .if_range = header(http::field::if_range)},
                             opened->size, etag, mtime);
    auto res = answer.status == 416
                   ? make_response(req, http::status::range_not_satisfiable, "range not satisfiable\n")
                   : make_response(req, static_cast<http::status>(answer.status), "", file.content_type);
    if (answer.status == 416) res.set(http::field::content_range, fmt::format("bytes */{}", opened->size));
    res.set(http::field::accept_ranges, "bytes");
    res.set(http::field::etag, etag);
    res.set(http::field::last_modified, http_date(mtime));
    if (answer.status == 304 || answer.status == 416) {
        if (answer.status == 304) {  // no content: no type, and no Content-Length but the 200's (RFC 9110 8.6)
            res.erase(http::field::content_type);
            res.erase(http::field::content_length);
        }
        return res;
    }
    if (answer.status == 206)
        res.set(http::field::content_range,
                fmt::format("bytes {}-{}/{}", answer.first, answer.first + answer.length - 1, opened->size));
    res.content_length(answer.length);
    if (method == http::verb::head) return res;  // the length a GET would give; the file is not read
    return {std::move(res), file_part{std::move(opened->fd), answer.first, answer.length}};
}

http_reply route_http(server_state& st, request const& req, tcp::endpoint const& remote) {
    if (auto r = refuse_host(st, req, remote)) return std::move(*r);
    auto t = parse_target(req.target());
    auto path = t.path;
    // HEAD is GET without the body (handle_http strips it): what answers GET answers HEAD.
    auto method = req.method() == http::verb::head ? http::verb::get : req.method();
    auto unauthorized = [&] {  // the push and admin API when --api-key-file is set
        auto res = json_error(req, http::status::unauthorized, "missing or wrong API key");
        res.set(http::field::www_authenticate, "Bearer");
        return res;
    };
    auto not_allowed = [&](char const* allow) {
        auto res = make_response(req, http::status::method_not_allowed, "method not allowed\n");
        res.set(http::field::allow, allow);
        return res;
    };
    if (path == "/signal") {
        if (method != http::verb::post) return not_allowed("POST");
        response res = api_key_ok(st, req) ? handle_push(st, req, remote) : unauthorized();
        st.stats.count_push(res.result_int());
        if (res.result_int() >= 400)
            st.log.log(severity::info, fmt::format("push from {} answered {}: {}", peer_string(remote),
                                                   res.result_int(), res.body().substr(0, 200)));
        return res;
    }
    if (path == "/signal/connections") {
        if (method != http::verb::get && method != http::verb::delete_) return not_allowed("GET, DELETE");
        if (!api_key_ok(st, req)) return unauthorized();
        return handle_connections(st, req, t);
    }
    if (path == "/healthz") {
        if (method != http::verb::get) return not_allowed("GET");
        return make_response(req, http::status::ok, "ok");
    }
    if (path == "/metrics") {
        if (method != http::verb::get) return not_allowed("GET");
        if (!api_key_ok(st, req)) return unauthorized();  // an admin endpoint: it lists the Names in use
        return make_response(req, http::status::ok, metrics_text(st), "text/plain; version=0.0.4; charset=utf-8");
    }
    if (match_route(st, path, false)) {
        if (method != http::verb::get) return not_allowed("GET");
        auto res = make_response(req, http::status::upgrade_required, "this path takes WebSocket upgrades only\n");
        res.set(http::field::upgrade, "websocket");
        return res;
    }
    if (path == "/" && st.opts.demo) {
        if (method != http::verb::get) return not_allowed("GET");
        return make_response(req, http::status::ok, std::string(demo_page()), "text/html; charset=utf-8");
    }
    if (!st.opts.static_dir.empty()) return serve_static(st, req);
    return make_response(req, http::status::not_found, "not found\n");
}

}  // namespace

void strip_for_head(request const& req, response& res) {
    if (req.method() != http::verb::head) return;
    // make_response set the length a GET would give (serve_static: the file's, with no body here)
    if (!res.has_content_length() && !res.body().empty()) res.content_length(res.body().size());
    res.body().clear();
}

http_reply handle_http(server_state& st, request const& req, tcp::endpoint const& remote) {
    auto reply = route_http(st, req, remote);
    strip_for_head(req, reply.res);
    return reply;
}

}  // namespace wsig::detail
