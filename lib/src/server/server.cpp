// `wsig serve`: the listener, the lifecycle (signals, drain), and the HTTP surface: upgrade
// decisions, the push API, the admin API, health and metrics, and client-message routing.
#include "util/file_io.hpp"
#include "server/state.hpp"
#include "server/static_files.hpp"

#include <wsig/client_id.hpp>
#include <wsig/envelope.hpp>
#include <wsig/exit_code.hpp>
#include <wsig/message.hpp>
#include <wsig/signing.hpp>
#include <wsig/units.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/v6_only.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pkcs12.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>
#include <utility>

namespace wsig {

result<route_spec> parse_route_spec(std::string_view spec) {
    auto bad = [&](std::string_view why) {
        return make_error(errc::invalid_argument, fmt::format("route '{}': {}", spec, why));
    };
    auto comma = spec.find(',');
    auto head = spec.substr(0, comma);
    auto eq = head.find('=');
    if (eq == std::string_view::npos) return bad("expected PATH=NAME");
    route_spec r;
    r.path = std::string(head.substr(0, eq));
    r.name = std::string(head.substr(eq + 1));
    if (r.path.empty() || r.path[0] != '/') return bad("PATH must start with '/'");
    if (r.path.find_first_of("?# \t") != std::string::npos) return bad("PATH must be a plain path (no query, no spaces)");
    if (r.name.empty()) return bad("NAME is empty");
    while (comma != std::string_view::npos) {
        auto rest = spec.substr(comma + 1);
        auto next = rest.find(',');
        auto item = rest.substr(0, next);
        comma = next == std::string_view::npos ? next : comma + 1 + next;
        auto ieq = item.find('=');
        if (ieq == std::string_view::npos) return bad(fmt::format("'{}' is not key=value", item));
        auto key = item.substr(0, ieq), value = item.substr(ieq + 1);
        if (key == "exec") {
            // The command takes the rest of the spec, commas included.
            r.exec = std::string(rest.substr(ieq + 1));
            if (r.exec.find_first_not_of(" \t") == std::string::npos) return bad("exec= is empty");
            break;
        }
        if (key == "group") {
            if (value.empty()) return bad("group= is empty");
            r.group = std::string(value);
        } else if (key == "scope") {
            auto s = parse_scope(value);
            if (!s) return bad(s.error().message);
            r.scope = *s;
        } else {
            return bad(fmt::format("unknown key '{}' (known: group, scope, exec)", key));
        }
    }
    return r;
}

}  // namespace wsig

namespace wsig::detail {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
using error_code = boost::system::error_code;
using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Logging

bool logger::enabled(severity s) const noexcept {
    switch (level_) {
    case log_level::quiet: return s >= severity::warning;
    case log_level::info: return s >= severity::info;
    case log_level::debug: return true;
    }
    return true;
}

namespace {

// The length of the UTF-8 sequence at the start of `s` (not empty) and its code point; 0 when it
// is not valid UTF-8 (a stray continuation byte, a truncated or overlong sequence, a surrogate).
std::size_t utf8_sequence(std::string_view s, std::uint32_t& cp) {
    auto const* p = reinterpret_cast<unsigned char const*>(s.data());
    unsigned c = p[0];
    std::size_t n = 0;
    if (c < 0x80) {
        cp = c;
        return 1;
    }
    if ((c & 0xE0) == 0xC0) n = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0) n = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0) n = 4, cp = c & 0x07;
    else return 0;
    if (s.size() < n) return 0;
    for (std::size_t i = 1; i < n; ++i) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

// Code points a terminal or an editor acts on instead of showing: the C1 controls (U+0080..U+009F;
// some terminals take U+009B as CSI) and the bidirectional controls that reorder what is displayed
// (an override makes a line read differently from what it holds).
bool invisible_control(std::uint32_t cp) {
    return (cp >= 0x80 && cp <= 0x9F) || (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069) ||
           cp == 0x200E || cp == 0x200F || cp == 0x061C;
}

// One log record is one line: control characters that a client chose (a Name, a header, a
// command's output) are shown escaped, so no one can forge a line, colour the terminal or reorder
// what it shows: C0 and DEL as \n, \r, \t or \xNN, C1 and bidi controls as \uNNNN, bytes that are
// not UTF-8 as \xNN.
std::string one_line(std::string_view message) {
    std::string out;
    out.reserve(message.size());
    while (!message.empty()) {
        std::uint32_t cp = 0;
        auto n = utf8_sequence(message, cp);
        if (n == 0) {
            out += fmt::format("\\x{:02x}", static_cast<unsigned char>(message[0]));
            n = 1;
        } else if (cp == '\n') {
            out += "\\n";
        } else if (cp == '\r') {
            out += "\\r";
        } else if (cp == '\t') {
            out += "\\t";
        } else if (cp < 0x20 || cp == 0x7f) {
            out += fmt::format("\\x{:02x}", cp);
        } else if (invisible_control(cp)) {
            out += fmt::format("\\u{:04x}", cp);
        } else {
            out.append(message.substr(0, n));
        }
        message.remove_prefix(n);
    }
    return out;
}

// A json line keeps non-ASCII text as it is (nlohmann escapes only C0 and DEL), so the same
// controls become JSON \uNNNN escapes there: a reader gets the same string back, a terminal
// showing the raw line shows the escape.
std::string escape_invisible_in_json(std::string_view dumped) {
    std::string out;
    out.reserve(dumped.size());
    while (!dumped.empty()) {
        std::uint32_t cp = 0;
        auto n = utf8_sequence(dumped, cp);
        if (n == 0) n = 1;  // dump() replaced invalid UTF-8 already; keep the byte if not
        if (n > 1 && invisible_control(cp)) out += fmt::format("\\u{:04x}", cp);
        else out.append(dumped.substr(0, n));
        dumped.remove_prefix(n);
    }
    return out;
}

// The longest message one log line holds: a hook's 1 MiB output line or an error quoting a client
// string must not become one huge record. 4 KiB holds every message this server writes itself.
constexpr std::size_t max_log_message = 4096;

// `s` cut to at most `max` bytes without splitting a UTF-8 sequence.
std::string_view cut_utf8(std::string_view s, std::size_t max) {
    if (s.size() <= max) return s;
    auto end = max;
    for (int i = 0; i < 3 && end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80; ++i) --end;
    return s.substr(0, end);
}

std::string suppressed_line(std::string_view who, std::uint64_t n, unsigned burst, std::chrono::milliseconds window) {
    return fmt::format("{}: {} more line{} suppressed (at most {} per {} ms)", who, n, n == 1 ? "" : "s", burst,
                       window.count());
}

}  // namespace

std::string log_value(std::string_view value) {
    if (value.size() <= max_log_value) return std::string(value);
    return fmt::format("{}... ({} bytes)", cut_utf8(value, max_log_value), value.size());
}

void logger::log(severity s, std::string_view message) const {
    if (!enabled(s)) return;
    static constexpr char const* names[] = {"debug", "info", "warning", "error"};
    auto const* level = names[static_cast<int>(s)];
    auto ts = rfc3339_now();
    std::string cut;
    if (message.size() > max_log_message) {
        cut = fmt::format("{}... ({} bytes)", cut_utf8(message, max_log_message), message.size());
        message = cut;
    }
    std::string line;
    if (format_ == log_format::json)
        line = escape_invisible_in_json(json{{"ts", ts}, {"level", level}, {"msg", message}}.dump(
                   -1, ' ', false, json::error_handler_t::replace)) +
               "\n";
    else
        line = fmt::format("{} {} {}\n", ts, level, one_line(message));
    std::lock_guard lock(mutex_);
    std::fwrite(line.data(), 1, line.size(), stderr);
    std::fflush(stderr);
}

void log_limiter::log(logger const& log, severity s, std::string_view who, std::string_view message) {
    if (!log.enabled(s)) return;
    std::uint64_t summary = 0;
    {
        std::lock_guard lock(mutex_);
        auto now = std::chrono::steady_clock::now();
        if (now - window_start_ >= window_) {
            window_start_ = now;
            lines_ = 0;
            summary = std::exchange(suppressed_, 0);
        }
        if (lines_ >= burst_) {
            ++suppressed_;
            return;
        }
        ++lines_;
    }
    if (summary) log.log(s, suppressed_line(who, summary, burst_, window_));
    log.log(s, message);
}

void log_limiter::summarize(logger const& log, severity s, std::string_view who) {
    std::uint64_t summary = 0;
    {
        std::lock_guard lock(mutex_);
        summary = std::exchange(suppressed_, 0);
    }
    if (summary) log.log(s, suppressed_line(who, summary, burst_, window_));
}

std::string redact_id(std::string_view id) {
    if (id.size() <= 12) return std::string(id);
    return fmt::format("{}...", id.substr(0, 12));
}

void server_state::add_live(std::shared_ptr<live_session> const& s) {
    std::lock_guard lock(live_mutex);
    live.emplace(s.get(), s);
}

void server_state::remove_live(live_session const* s) {
    std::lock_guard lock(live_mutex);
    live.erase(s);
}

std::vector<std::shared_ptr<live_session>> server_state::live_sessions() {
    std::vector<std::shared_ptr<live_session>> out;
    std::lock_guard lock(live_mutex);
    for (auto const& [p, w] : live)
        if (auto s = w.lock()) out.push_back(std::move(s));
    return out;
}

// Over the budget: the sessions already closing will give back what they hold; of the others, those
// holding the most (the clients furthest behind, or a huge message being received) are shed first,
// until what stays is within the budget. Each shed session is logged once (it is closing after).
// At most one pass per 10 ms: a pass looks at every session, and while the sessions it closed
// still hold their writes in flight every send would start another.
void server_state::enforce_budget() {
    std::unique_lock lock(budget_mutex, std::try_to_lock);
    if (!lock) return;  // another thread is shedding now
    auto const budget = opts.max_queued_total;
    std::uint64_t staying = held_bytes.load(std::memory_order_relaxed);
    if (staying <= budget) return;
    auto const now = std::chrono::steady_clock::now();
    if (now < next_budget_pass) return;
    next_budget_pass = now + std::chrono::milliseconds(10);
    std::vector<std::pair<std::size_t, std::shared_ptr<live_session>>> candidates;
    for (auto& s : live_sessions()) {
        auto h = s->held();
        if (h.releasing) staying -= std::min<std::uint64_t>(staying, h.bytes);
        else if (h.bytes > 0) candidates.emplace_back(h.bytes, std::move(s));
    }
    std::sort(candidates.begin(), candidates.end(), [](auto const& a, auto const& b) { return a.first > b.first; });
    for (auto const& [bytes, s] : candidates) {
        if (staying <= budget) break;
        staying -= std::min<std::uint64_t>(staying, bytes);
        ++stats.budget_closes;
        log.log(severity::warning, fmt::format("memory budget: closing {} ({}, {} bytes held): {} bytes held in all, "
                                               "--max-queued-total is {}",
                                               s->info().remote, redact_id(s->info().client_id), bytes,
                                               held_bytes.load(std::memory_order_relaxed), budget));
        s->shed();
    }
}

std::string peer_ip(tcp::endpoint const& ep) {
    auto a = ep.address();
    if (a.is_v6() && a.to_v6().is_v4_mapped()) return net::ip::make_address_v4(net::ip::v4_mapped, a.to_v6()).to_string();
    return a.to_string();
}

namespace {

std::string peer_string(tcp::endpoint const& ep) {
    auto ip = peer_ip(ep);
    if (ip.find(':') != std::string::npos) return fmt::format("[{}]:{}", ip, ep.port());
    return fmt::format("{}:{}", ip, ep.port());
}

std::string trim(std::string_view s) {
    auto b = s.find_first_not_of(" \t");
    if (b == std::string_view::npos) return {};
    auto e = s.find_last_not_of(" \t");
    return std::string(s.substr(b, e - b + 1));
}

struct split_target {
    std::string path;
    std::vector<std::pair<std::string, std::string>> query;

    std::optional<std::string> get(std::string_view key) const {
        for (auto const& [k, v] : query)
            if (iequals(k, key)) return v;
        return std::nullopt;
    }
};

}  // namespace

std::string origin_form(std::string_view target) {
    for (std::string_view scheme : {"http://", "https://"}) {
        if (target.size() < scheme.size() || !iequals(target.substr(0, scheme.size()), scheme)) continue;
        auto rest = target.substr(scheme.size());
        auto end = rest.find_first_of("/?");
        if (end == std::string_view::npos) return "/";
        return rest[end] == '/' ? std::string(rest.substr(end)) : "/" + std::string(rest.substr(end));
    }
    return std::string(target);
}

namespace {

split_target parse_target(std::string_view raw_target) {
    split_target out;
    auto full = origin_form(raw_target);
    std::string_view target = full;
    auto q = target.find('?');
    out.path = std::string(target.substr(0, q));
    if (q == std::string_view::npos) return out;
    auto rest = target.substr(q + 1);
    while (!rest.empty()) {
        auto amp = rest.find('&');
        auto item = rest.substr(0, amp);
        auto eq = item.find('=');
        if (!item.empty())
            out.query.emplace_back(url_decode(item.substr(0, eq)),
                                   eq == std::string_view::npos ? std::string() : url_decode(item.substr(eq + 1)));
        if (amp == std::string_view::npos) break;
        rest = rest.substr(amp + 1);
    }
    return out;
}

bool valid_utf8(std::string_view s) {
    std::uint32_t cp = 0;
    while (!s.empty()) {
        auto n = utf8_sequence(s, cp);
        if (n == 0) return false;
        s.remove_prefix(n);
    }
    return true;
}

// Glob with '*' (any run) and '?' (one character), case-insensitive: origins are case-insensitive.
bool glob_match(std::string_view pattern, std::string_view text) {
    std::size_t p = 0, t = 0, star = std::string_view::npos, mark = 0;
    auto lower = [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; };
    while (t < text.size()) {
        if (p < pattern.size() && (pattern[p] == '?' || lower(pattern[p]) == lower(text[t]))) {
            ++p;
            ++t;
        } else if (p < pattern.size() && pattern[p] == '*') {
            star = p++;
            mark = t;
        } else if (star != std::string_view::npos) {
            p = star + 1;
            t = ++mark;
        } else {
            return false;
        }
    }
    while (p < pattern.size() && pattern[p] == '*') ++p;
    return p == pattern.size();
}


response json_response(request const& req, http::status status, json const& body) {
    return make_response(req, status, body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n",
                         "application/json");
}

response json_error(request const& req, http::status status, std::string message) {
    return json_response(req, status, json{{"error", std::move(message)}});
}

bool websocket_upgrade_header(request const& req) { return iequals(trim(req[http::field::upgrade]), "websocket"); }

// Where an upgrade on `path` goes; nullopt when nothing is there.
struct route_match {
    session_kind kind;
    std::string name;
    std::string group;
    wsig::scope scope;
    std::string exec = {};
};

std::optional<route_match> match_route(server_state const& st, std::string_view path, bool with_auto = true) {
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

// A client-chosen ID: printable ASCII without spaces, of a sane length.
bool acceptable_client_id(std::string_view id) {
    if (id.empty() || id.size() > 512) return false;
    return std::all_of(id.begin(), id.end(), [](char c) { return c > 0x20 && c < 0x7F; });
}

bool api_key_ok(server_state const& st, request const& req) {
    if (st.opts.api_key.empty()) return true;
    auto auth = req[http::field::authorization];
    constexpr std::string_view bearer = "Bearer ";
    if (auth.size() < bearer.size() || !iequals(auth.substr(0, bearer.size()), bearer)) return false;
    auto key = trim(auth.substr(bearer.size()));
    auto const& want = st.opts.api_key;
    // Constant time over the expected key's length; a length mismatch still compares.
    std::string padded = key;
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
    auto id = trim(req["X-Pode-Signal-Client-Id"]);
    auto name = trim(req["X-Pode-Signal-Name"]);
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
        auto conn = st.reg.find(name, id, groups);
        if (!conn)
            return json_error(req, http::status::not_found,
                              fmt::format("The Signal client connection being referenced does not exist, Name: {}, "
                                          "Group: {}, ClientId: {}",
                                          name, req["X-Pode-Signal-Group"], redact_id(id)));
        if (body.empty()) return json_response(req, http::status::ok, json{{"delivered", 0}});
        bool const queued = conn->send(outgoing_message::text(body)) == send_status::queued;
        return json_response(req, http::status::ok, json{{"delivered", queued ? 1 : 0}});
    }
    if (name.empty())
        return json_error(req, http::status::bad_request,
                          "missing X-Pode-Signal-Client-Id or X-Pode-Signal-Name header");
    auto targets = resolve_targets(st.reg, st.opts.levels, target{{name}, groups, {}});
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
        for (auto const& c : st.reg.list(filter)) {
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
    auto conns = st.reg.list(filter);
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
    counter("wsig_budget_closes_total", "Connections closed to keep within --max-queued-total.", m.budget_closes.load());
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
    out += fmt::format("# HELP wsig_held_bytes Bytes held for clients: send queues and messages being received.\n"
                       "# TYPE wsig_held_bytes gauge\nwsig_held_bytes {}\n",
                       st.held_bytes.load(std::memory_order_relaxed));
    std::lock_guard lock(m.mutex);
    out += "# HELP wsig_closes_total WebSocket connections ended, by close code.\n# TYPE wsig_closes_total counter\n";
    for (auto const& [code, n] : m.closes) out += fmt::format("wsig_closes_total{{code=\"{}\"}} {}\n", code, n);
    out += "# HELP wsig_push_requests_total Push API requests, by HTTP status.\n"
           "# TYPE wsig_push_requests_total counter\n";
    for (auto const& [code, n] : m.push_requests)
        out += fmt::format("wsig_push_requests_total{{status=\"{}\"}} {}\n", code, n);
    return out;
}

}  // namespace

response make_response(request const& req, http::status status, std::string body, std::string_view content_type) {
    response res{status, req.version() ? req.version() : 11};
    res.set(http::field::server, "wsig");
    res.set(http::field::content_type, content_type);
    res.keep_alive(req.keep_alive());
    res.body() = std::move(body);
    res.prepare_payload();
    return res;
}

bool wants_upgrade(request const& req) {
    return websocket_upgrade_header(req) || req.count(http::field::sec_websocket_key) > 0;
}

// ---------------------------------------------------------------------------------------------
// Who may connect: the Host a request names (DNS rebinding) and the Origin of an exec= upgrade

namespace {

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
    st.policy_log.log(st.log, severity::warning, "Host refusals",
                      fmt::format("refused {} {} from {}: Host '{}' is not a name this server answers (421)",
                                  req.method_string(), log_value(origin_form(req.target())), peer_string(remote),
                                  log_value(value)));
    return make_response(req, http::status::misdirected_request,
                         st.loopback_bound
                             ? "misdirected request: this server answers only loopback names and IP literals "
                               "in Host (see --allow-host)\n"
                             : "misdirected request: the Host is not one this server answers (see --allow-host)\n");
}

// "scheme://host[:port]" with the scheme's default port dropped, lower-cased, for comparing origins.
std::string normal_origin(std::string_view scheme, std::string_view host_and_port) {
    std::string out = fmt::format("{}://{}", scheme, host_and_port);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; });
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

}  // namespace

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
    if (trim(req[http::field::sec_websocket_key]).empty())
        return make_response(req, http::status::bad_request,
                             "WebSocket upgrade request is invalid, missing Sec-WebSocket-Key header\n");
    if (!st.opts.allow_origins.empty() && req.count(http::field::origin) > 0) {
        auto origin = req[http::field::origin];
        bool ok = std::any_of(st.opts.allow_origins.begin(), st.opts.allow_origins.end(),
                              [&](auto const& p) { return glob_match(p, origin); });
        if (!ok) {
            st.policy_log.log(st.log, severity::warning, "Origin refusals",
                              fmt::format("refused an upgrade from {}: Origin '{}' is not allowed",
                                          peer_string(remote), log_value(origin)));
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
                if (!st.reg.list(target{{info.name}, {}, {info.client_id}}).empty()) {
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

namespace {

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
    auto res = answer.status == 416 ? make_response(req, http::status::range_not_satisfiable, "range not satisfiable\n")
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

}  // namespace

severity to_severity(command_log level) noexcept {
    switch (level) {
    case command_log::debug: return severity::debug;
    case command_log::info: return severity::info;
    case command_log::warning: return severity::warning;
    case command_log::error: return severity::error;
    }
    return severity::error;
}

command_logger command_logger_for(server_state& st) {
    return [&st](command_log level, std::string message) { st.log.log(to_severity(level), message); };
}

namespace {

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

void on_client_message(server_state& st, live_session& sender, session_kind kind, std::string_view data,
                       bool binary) {
    if (kind == session_kind::echo) {
        sender.send(outgoing_message::make(binary ? opcode::binary : opcode::text, data));
        return;
    }
    auto const& from = sender.info();
    auto env = parse_envelope(data, envelope_limits{.max_depth = st.opts.max_json_depth});
    if (!env) {
        sender.warn(fmt::format("dropped a message from {} ({} {}): {}", from.remote, log_value(from.name),
                                redact_id(from.client_id), env.error().message));
        return;
    }
    // A signal route takes every message of its sockets: nothing is auto-routed (Pode's rule).
    if (st.commands && st.commands->routes(from.path)) {
        st.commands->on_message(sender.self(), from.path, std::move(*env));
        return;
    }
    if (kind == session_kind::demo && !env->direct && env->message.is_string() &&
        iequals(env->message.get_ref<std::string const&>(), "[date]")) {
        auto now = std::chrono::system_clock::now();
        auto text = fmt::format("{:%Y-%m-%d %H:%M:%S} UTC", fmt::gmtime(std::chrono::system_clock::to_time_t(now)));
        auto targets = resolve_targets(st.reg, st.opts.levels, target{{"Msg"}, {}, {}});
        if (!targets) {
            sender.warn(fmt::format("demo [date] not sent: {}", targets.error().message));
            return;
        }
        auto msg = outgoing_message::text(text);
        for (auto const& c : *targets) c->send(msg);
        return;
    }
    auto msg = outgoing_message::text(payload_text(env->message));
    if (env->direct) {
        sender.send(std::move(msg));
        return;
    }
    target t;
    if (env->path) t.names.push_back(*env->path);
    t.groups = std::move(env->groups);
    t.client_ids = std::move(env->client_ids);
    auto targets = resolve_targets(st.reg, st.opts.levels, t);
    if (!targets) {
        sender.warn(fmt::format("message from {} ({}) not sent: {}", from.remote, redact_id(from.client_id),
                                targets.error().message));
        return;
    }
    for (auto const& c : *targets) c->send(msg);
}

// ---------------------------------------------------------------------------------------------
// Listener and lifecycle

namespace {

std::string openssl_error() {
    auto e = ERR_get_error();
    if (e == 0) return "unknown error";
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
}

result<void> load_pfx(ssl::context& ctx, std::string const& file, std::string const& password) {
    std::ifstream in(file, std::ios::binary);
    if (!in) return make_error(errc::io, fmt::format("cannot read PKCS#12 file '{}'", file));
    std::string der((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto const* p = reinterpret_cast<unsigned char const*>(der.data());
    PKCS12* p12 = d2i_PKCS12(nullptr, &p, static_cast<long>(der.size()));
    if (!p12) return make_error(errc::io, fmt::format("'{}' is not a PKCS#12 file: {}", file, openssl_error()));
    EVP_PKEY* key = nullptr;
    X509* cert = nullptr;
    STACK_OF(X509)* chain = nullptr;
    int ok = PKCS12_parse(p12, password.c_str(), &key, &cert, &chain);
    PKCS12_free(p12);
    if (!ok || !key || !cert) {
        EVP_PKEY_free(key);
        X509_free(cert);
        sk_X509_pop_free(chain, X509_free);
        return make_error(errc::io, fmt::format("cannot open PKCS#12 file '{}' (wrong password?): {}", file,
                                                openssl_error()));
    }
    auto* native = ctx.native_handle();
    bool good = SSL_CTX_use_certificate(native, cert) == 1 && SSL_CTX_use_PrivateKey(native, key) == 1 &&
                SSL_CTX_check_private_key(native) == 1;
    for (int i = 0; good && chain && i < sk_X509_num(chain); ++i) {
        X509* c = sk_X509_value(chain, i);
        if (SSL_CTX_add_extra_chain_cert(native, c) == 1)
            sk_X509_set(chain, i, nullptr);  // owned by the context now
        else
            good = false;
    }
    EVP_PKEY_free(key);
    X509_free(cert);
    sk_X509_pop_free(chain, X509_free);
    if (!good) return make_error(errc::io, fmt::format("PKCS#12 file '{}': {}", file, openssl_error()));
    return {};
}

// TLS 1.2 suites: forward secrecy (ECDHE) and AEAD only, in this order (Mozilla's "intermediate"
// list less its DHE suites): no RSA key exchange (no forward secrecy), no CBC (Lucky13 and padding
// oracles), no SHA-1 MAC. TLS 1.3 has only AEAD suites with (EC)DHE: OpenSSL's defaults stay.
constexpr char const* tls12_ciphers =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

// Every call is checked: a context OpenSSL did not take as asked is a configuration error (exit 78),
// never a server that runs with weaker settings than it says.
result<void> setup_tls(ssl::context& ctx, server_options const& o) {
    auto* native = ctx.native_handle();
    auto const refused = [](std::string const& what) {
        return make_error(errc::io, fmt::format("TLS settings: {}: {}", what, openssl_error()));
    };
    error_code ec;
    ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                        ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use,
                    ec);
    if (ec) return make_error(errc::io, fmt::format("TLS settings: the context options: {}", ec.message()));
    // The server's order, not the client's; no renegotiation (a client could ask for one per message).
    auto const wanted = static_cast<std::uint64_t>(SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION);
    if ((static_cast<std::uint64_t>(SSL_CTX_set_options(native, wanted)) & wanted) != wanted)
        return refused("server cipher preference and no renegotiation");
    int const min_version = o.tls_min_version == tls_version::v1_3 ? TLS1_3_VERSION : TLS1_2_VERSION;
    if (SSL_CTX_set_min_proto_version(native, min_version) != 1)
        return refused(o.tls_min_version == tls_version::v1_3 ? "TLS 1.3 as the minimum" : "TLS 1.2 as the minimum");
    if (SSL_CTX_set_cipher_list(native, tls12_ciphers) != 1) return refused("the TLS 1.2 cipher suites");
    if (!o.pfx.empty()) return load_pfx(ctx, o.pfx, o.pfx_password);
    ctx.use_certificate_chain_file(o.tls_cert, ec);
    if (ec) return make_error(errc::io, fmt::format("certificate '{}': {}", o.tls_cert, ec.message()));
    ctx.use_private_key_file(o.tls_key, ssl::context::pem, ec);
    if (ec) return make_error(errc::io, fmt::format("private key '{}': {}", o.tls_key, ec.message()));
    if (SSL_CTX_check_private_key(native) != 1)
        return make_error(errc::io, "the private key does not match the certificate");
    return {};
}

class acceptor {
public:
    // Accepts on the first loop and hands the connections to the loops in turn.
    acceptor(std::vector<std::unique_ptr<event_loop>>& loops, server_state& st, ssl::context* tls)
        : loops_(loops), st_(st), tls_(tls), acceptor_(loops.front()->context()), retry_(loops.front()->context()) {}

    result<tcp::endpoint> open(tcp::endpoint ep) {
        error_code ec;
        acceptor_.open(ep.protocol(), ec);
        if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
        if (!ec && ep.address().is_v6()) acceptor_.set_option(net::ip::v6_only(false), ec);
        if (!ec) acceptor_.bind(ep, ec);
        if (ec == net::error::address_in_use)
            return make_error(errc::io, fmt::format("port {} on {} is in use", ep.port(), ep.address().to_string()));
        if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
        if (ec) return make_error(errc::io, fmt::format("cannot listen on {}: {}", ep.address().to_string(), ec.message()));
        auto local = acceptor_.local_endpoint(ec);
        if (ec) return make_error(errc::io, ec.message());
        return local;
    }

    void start() { do_accept(); }

    void stop() {
        error_code ignored;
        acceptor_.close(ignored);
        retry_.cancel();
    }

private:
    void do_accept() {
        auto& loop = *loops_[next_++ % loops_.size()];
        acceptor_.async_accept(loop.context(), [this, &loop](error_code ec, socket_type socket) {
            if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
            if (ec) {
                // Out of descriptors and the like: wait a little instead of spinning.
                st_.log.log(severity::warning, fmt::format("accept: {}", ec.message()));
                retry_.expires_after(std::chrono::milliseconds(100));
                retry_.async_wait([this](error_code e) {
                    if (!e) do_accept();
                });
                return;
            }
            error_code ignored;
            socket.set_option(tcp::no_delay(true), ignored);
            if (tls_)
                start_tls_session(st_, loop, *tls_, std::move(socket));
            else
                start_plain_session(st_, loop, std::move(socket));
            do_accept();
        });
    }

    std::vector<std::unique_ptr<event_loop>>& loops_;
    std::size_t next_ = 0;
    server_state& st_;
    ssl::context* tls_;
    tcp::acceptor acceptor_;
    net::steady_timer retry_;
};

result<tcp::endpoint> bind_endpoint(server_options const& o) {
    std::string addr = o.address;
    if (addr == "*") addr = "0.0.0.0";
    if (addr == "localhost") addr = "127.0.0.1";
    if (addr.size() > 2 && addr.front() == '[' && addr.back() == ']') addr = addr.substr(1, addr.size() - 2);
    error_code ec;
    auto a = net::ip::make_address(addr, ec);
    if (ec) return make_error(errc::invalid_argument, fmt::format("address '{}' is not an IP address", o.address));
    return tcp::endpoint(a, o.port);
}

std::string url_for(tcp::endpoint const& ep, bool tls) {
    auto a = ep.address();
    std::string host;
    if (a.is_unspecified())
        host = a.is_v6() ? "[::1]" : "127.0.0.1";
    else if (a.is_v6())
        host = fmt::format("[{}]", a.to_string());
    else
        host = a.to_string();
    return fmt::format("{}://{}:{}", tls ? "https" : "http", host, ep.port());
}

}  // namespace

}  // namespace wsig::detail

namespace wsig {

int run_server(server_options options) {
    using namespace detail;
    unsigned threads = options.threads ? options.threads : std::max(1u, std::thread::hardware_concurrency());
    server_state st(std::move(options));
    auto const& o = st.opts;

    std::optional<ssl::context> tls;
    if (!o.pfx.empty() || !o.tls_cert.empty()) {
        tls.emplace(ssl::context::tls_server);
        if (auto ok = setup_tls(*tls, o); !ok) {
            st.log.log(severity::error, ok.error().message);
            return to_int(exit_code::config);
        }
    }
    auto ep = bind_endpoint(o);
    if (!ep) {
        st.log.log(severity::error, ep.error().message);
        return to_int(exit_code::usage);
    }

    if (!o.static_dir.empty()) {
        std::error_code ec;
        st.static_root = std::filesystem::canonical(o.static_dir, ec);
        if (ec || !std::filesystem::is_directory(st.static_root)) {
            st.log.log(severity::error, fmt::format("--static '{}' is not a readable directory", o.static_dir));
            return to_int(exit_code::config);
        }
    }

    // One loop per thread; the first also runs the listener, the signals and the external commands.
    std::vector<std::unique_ptr<event_loop>> loops;
    for (unsigned i = 0; i < threads; ++i) loops.push_back(std::make_unique<event_loop>());
    auto& ioc = loops.front()->context();
    auto stop_loops = [&loops] {
        for (auto& l : loops) l->stop();
    };
    if (!o.signal_routes.empty() || !o.on_connect.empty() || !o.on_disconnect.empty() || !o.schedules.empty()) {
        st.commands = std::make_shared<external_commands>(
            ioc.get_executor(), st.reg, o.levels,
            command_options{.signal_routes = o.signal_routes, .on_connect = o.on_connect,
                            .on_disconnect = o.on_disconnect, .schedules = o.schedules,
                            .max_queue = o.send_queue, .max_output_line = o.max_message_size,
                            .max_json_depth = o.max_json_depth},
            command_logger_for(st));
        st.commands->start();
    }
    acceptor lis(loops, st, tls ? &*tls : nullptr);
    auto local = lis.open(*ep);
    if (!local) {
        st.log.log(severity::error, local.error().message);
        return to_int(exit_code::config);
    }
    st.loopback_bound = local->address().is_loopback();  // before the first request is read
    lis.start();
    auto url = url_for(*local, tls.has_value());
    // Before the URL line: a signal that follows the line at once must already be ours to handle.
    net::signal_set signals(ioc, SIGINT, SIGTERM);

    // The ready file first: whoever reads the stdout line may look for the file at once.
    // The URL is no secret: readable by all, as files a service writes for others usually are.
    if (!o.ready_file.empty()) {
        if (auto w = write_file_atomically(o.ready_file, url + "\n", 0644); !w) {
            st.log.log(severity::error, fmt::format("--ready-file: {}", w.error().message));
            return to_int(exit_code::config);
        }
    }
    std::fwrite(url.data(), 1, url.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
    st.log.log(severity::info, fmt::format("listening on {} ({} thread{}){}", url, threads, threads == 1 ? "" : "s",
                                           o.demo ? fmt::format("; demo: open {}/", url) : ""));

    net::steady_timer drain(ioc);
    auto deadline = std::chrono::steady_clock::now();
    bool aborted = false;

    bool commands_stopped = false;
    std::function<void()> poll_drain = [&] {
        bool drained = st.ws_count.load() == 0;
        if (drained && st.commands && !commands_stopped) {
            // Every socket is closed: end the commands; the disconnect hooks of the shutdown still run.
            commands_stopped = true;
            st.commands->stop();
        }
        if (drained && (!st.commands || st.commands->idle())) {
            stop_loops();
            return;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            if (aborted) {
                stop_loops();
                return;
            }
            aborted = true;
            if (st.commands && !commands_stopped) {
                commands_stopped = true;
                st.commands->stop();
            }
            st.log.log(severity::info, fmt::format("shutdown timeout: dropping {} connection(s)", st.ws_count.load()));
            for (auto const& s : st.live_sessions()) s->abort();
            deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
        }
        drain.expires_after(std::chrono::milliseconds(20));
        drain.async_wait([&](error_code ec) {
            if (!ec) poll_drain();
        });
    };

    std::function<void(error_code, int)> on_signal = [&](error_code ec, int sig) {
        if (ec) return;
        if (st.stopping.exchange(true)) {
            st.log.log(severity::info, fmt::format("second signal ({}): exiting now", sig));
            std::fflush(stderr);
            std::_Exit(0);
        }
        st.log.log(severity::info, fmt::format("signal {}: stopping; closing {} connection(s)", sig, st.ws_count.load()));
        lis.stop();
        for (auto const& s : st.live_sessions()) s->close(1001, "server shutting down");
        deadline = std::chrono::steady_clock::now() + o.shutdown_timeout;
        signals.async_wait(on_signal);
        poll_drain();
    };
    signals.async_wait(on_signal);

    std::vector<std::thread> pool;
    pool.reserve(threads - 1);
    for (unsigned i = 1; i < threads; ++i) pool.emplace_back([&loop = *loops[i]] { loop.run(); });
    loops.front()->run();
    for (auto& t : pool) t.join();

    // The loop is stopped: break the cycles a parked write or read holds before everything goes.
    for (auto const& s : st.live_sessions()) s->release_parked();
    st.reg.drop_cached_lists();  // sessions it alone still holds go now, while their loops exist
    st.commands.reset();  // children still running are ended and reaped before the io_context goes
    st.log.log(severity::info, "stopped");
    return to_int(exit_code::ok);
}

}  // namespace wsig
