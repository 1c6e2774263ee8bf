// `wsig serve`: run_server (the event loops, signals, drain and shutdown), the server's log, its
// shared state (live sessions, the memory budget), and the text and request helpers the HTTP API
// (http_api.cpp) and the upgrade policy (upgrade.cpp) share.
#include "net/tls_context.hpp"
#include "server/acceptor.hpp"
#include "server/requests.hpp"
#include "server/state.hpp"
#include "util/file_io.hpp"
#include "util/text.hpp"
#include "util/utf8.hpp"

#include <wsig/envelope.hpp>
#include <wsig/exit_code.hpp>
#include <wsig/units.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <thread>
#include <utility>

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
        if (n > 1 && invisible_control(cp))
            out += fmt::format("\\u{:04x}", cp);
        else
            out.append(dumped.substr(0, n));
        dumped.remove_prefix(n);
    }
    return out;
}

// The longest message one log line holds: a hook's 1 MiB output line or an error quoting a client
// string must not become one huge record. 4 KiB holds every message this server writes itself.
constexpr std::size_t max_log_message = 4096;

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

void server_state::add_live(live_session& s) {
    std::lock_guard lock(live_mutex);
    s.live_next_ = live;
    if (live) live->live_prev_ = &s;
    live = &s;
}

void server_state::remove_live(live_session& s) {
    std::lock_guard lock(live_mutex);
    if (live != &s && !s.live_prev_) return;  // never added
    if (s.live_prev_)
        s.live_prev_->live_next_ = s.live_next_;
    else
        live = s.live_next_;
    if (s.live_next_) s.live_next_->live_prev_ = s.live_prev_;
    s.live_prev_ = s.live_next_ = nullptr;
}

// A session being destroyed is still listed until its destructor takes live_mutex: its
// shared_live() is null then, and it is skipped.
std::vector<std::shared_ptr<live_session>> server_state::live_sessions() {
    std::vector<std::shared_ptr<live_session>> out;
    std::lock_guard lock(live_mutex);
    for (auto* s = live; s; s = s->live_next_)
        if (auto p = s->shared_live()) out.push_back(std::move(p));
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
        if (h.releasing)
            staying -= std::min<std::uint64_t>(staying, h.bytes);
        else if (h.bytes > 0)
            candidates.emplace_back(h.bytes, std::move(s));
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
    if (a.is_v6() && a.to_v6().is_v4_mapped())
        return net::ip::make_address_v4(net::ip::v4_mapped, a.to_v6()).to_string();
    return a.to_string();
}

// ---------------------------------------------------------------------------------------------
// Request helpers shared by the HTTP API (http_api.cpp) and the upgrade policy (upgrade.cpp)

std::string peer_string(tcp::endpoint const& ep) {
    auto ip = peer_ip(ep);
    if (ip.find(':') != std::string::npos) return fmt::format("[{}]:{}", ip, ep.port());
    return fmt::format("{}:{}", ip, ep.port());
}

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

// Glob with '*' (any run) and '?' (one character), case-insensitive: origins are case-insensitive.
bool glob_match(std::string_view pattern, std::string_view text) {
    std::size_t p = 0, t = 0, star = std::string_view::npos, mark = 0;
    while (t < text.size()) {
        if (p < pattern.size() && (pattern[p] == '?' || ascii_lower(pattern[p]) == ascii_lower(text[t]))) {
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

// ---------------------------------------------------------------------------------------------
// What the external commands and the router log through the server

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
    return [&st](command_log level, std::string const& message) { st.log.log(to_severity(level), message); };
}

void report_unrouted(message_source& from, unrouted why, std::string_view detail) {
    auto const& info = from.info();
    switch (why) {
        case unrouted::bad_envelope:
            from.warn(fmt::format("dropped a message from {} ({} {}): {}", info.remote, log_value(info.name),
                                  redact_id(info.client_id), detail));
            return;
        case unrouted::refused:
            from.warn(fmt::format("message from {} ({}) not sent: {}", info.remote, redact_id(info.client_id), detail));
            return;
        case unrouted::date_refused: from.warn(fmt::format("demo [date] not sent: {}", detail)); return;
    }
}

}  // namespace wsig::detail

// ---------------------------------------------------------------------------------------------
// Lifecycle: the event loops, the acceptor, signals, drain and shutdown

namespace wsig {

int run_server(server_options options) {
    using namespace detail;
    unsigned threads = options.threads ? options.threads : std::max(1u, std::thread::hardware_concurrency());
    server_state st(std::move(options));
    st.loops = threads;
    auto const& o = st.opts;

    std::optional<ssl::context> tls;
    if (!o.pfx.empty() || !o.tls_cert.empty()) {
        tls.emplace(ssl::context::tls_server);
        if (auto ok = setup_server_tls(*tls, {.cert_file = o.tls_cert,
                                              .key_file = o.tls_key,
                                              .pfx_file = o.pfx,
                                              .pfx_password = o.pfx_password,
                                              .tls13_only = o.tls_min_version == tls_version::v1_3});
            !ok) {
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
    // The sweep checks each connection's deadlines: pings need it finer than once a second.
    if (o.ping_interval.count() > 0) {
        auto const period =
            std::clamp(o.ping_interval / 4, std::chrono::milliseconds(10), std::chrono::milliseconds(1000));
        for (auto& l : loops) l->set_sweep_period(period);
    }
    auto& ioc = loops.front()->context();
    auto stop_loops = [&loops] {
        for (auto& l : loops) l->stop();
    };
    if (!o.signal_routes.empty() || !o.on_connect.empty() || !o.on_disconnect.empty() || !o.schedules.empty()) {
        st.commands = std::make_shared<external_commands>(ioc.get_executor(), st.reg, o.levels,
                                                          command_options{.signal_routes = o.signal_routes,
                                                                          .on_connect = o.on_connect,
                                                                          .on_disconnect = o.on_disconnect,
                                                                          .schedules = o.schedules,
                                                                          .max_queue = o.send_queue,
                                                                          .max_output_line = o.max_message_size,
                                                                          .max_json_depth = o.max_json_depth},
                                                          command_logger_for(st));
        st.router.attach(st.commands.get());
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
        st.log.log(severity::info,
                   fmt::format("signal {}: stopping; closing {} connection(s)", sig, st.ws_count.load()));
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

    // The loops are stopped: the sessions they hold go, while the state they use is still here.
    for (auto& l : loops) l->drop_members();
    st.reg.drop_cached_lists();  // sessions it alone still holds go now, while their loops exist
    st.commands.reset();         // children still running are ended and reaped before the io_context goes
    st.log.log(severity::info, "stopped");
    return to_int(exit_code::ok);
}

}  // namespace wsig
