// `wsig bench`: options, the run (set-up, warm-up, measured window, stop), thresholds and reports.
#include "bench/engine.hpp"

#include <wsig/envelope.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <sys/resource.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <thread>

namespace wsig::bench {

std::string_view to_string(mode m) {
    switch (m) {
        case mode::echo: return "echo";
        case mode::fanout: return "fanout";
        case mode::connect: return "connect";
        case mode::idle: return "idle";
    }
    return "echo";
}

result<options> resolve(options o) {
    auto bad = [](std::string m) { return make_error(errc::invalid_argument, std::move(m)); };
    if (o.connections == 0) {
        switch (o.mode) {
            case mode::echo: o.connections = 100; break;
            case mode::fanout: o.connections = 1000; break;
            case mode::connect: o.connections = 16; break;
            case mode::idle: o.connections = 1000; break;
        }
    }
    if (o.in_flight == 0) o.in_flight = o.mode == mode::fanout ? 16 : 1;
    if (o.threads == 0) return bad("--threads must be at least 1");
    if (o.threads > 256) return bad("--threads must be at most 256");
    if (o.connections > 1'000'000) return bad("--connections must be at most 1000000");
    if (o.in_flight > 1'000'000) return bad("--in-flight must be at most 1000000");
    if (o.size == 0) return bad("--size must be at least 1 byte");
    if (o.size > (64ull << 20) - 1024) return bad("--size must be below 64MiB");
    if (o.duration.count() <= 0) return bad("--duration must be more than 0");
    constexpr std::chrono::hours day{24};
    if (o.duration > day || o.warmup > day || o.connect_timeout > day || o.broadcast_timeout > day)
        return bad("--duration, --warmup and the timeouts must be at most 24h");
    if (o.warmup.count() < 0) return bad("--warmup must not be negative");
    if (o.connect_timeout.count() <= 0) return bad("--connect-timeout must be more than 0");
    if (o.broadcast_timeout.count() <= 0) return bad("--broadcast-timeout must be more than 0");
    bool const fanout = o.mode == mode::fanout;
    if (!fanout && (!o.sub_path.empty() || !o.pub_path.empty() || o.name || o.via != publish_via::ws || o.raw))
        return bad("--sub-path, --pub-path, --name, --via and --raw only apply to --mode fanout");
    if (fanout && o.size < 17) return bad("--mode fanout needs --size 17 or more (the payload carries a broadcast ID)");
    if (fanout && o.via == publish_via::push && !o.name)
        return bad("--via push needs --name NAME: the signal Name to push to (X-Pode-Signal-Name)");
    if (fanout && o.via == publish_via::push && o.raw) return bad("--raw applies to --via ws only");
    if (o.mode == mode::idle) o.warmup = std::chrono::milliseconds(0);
    for (auto const* p : {&o.sub_path, &o.pub_path, &o.push_path})
        if (!p->empty() && p->front() != '/') return bad(fmt::format("'{}': a path must start with '/'", *p));
    return o;
}

namespace {

using namespace detail;

void raise_file_limit(std::uint64_t need) {
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    if (rl.rlim_cur >= need) return;
    rl.rlim_cur = std::min<rlim_t>(rl.rlim_max, static_cast<rlim_t>(need));
    setrlimit(RLIMIT_NOFILE, &rl);
}

// Replaces the path of a target ("/a?b") by another path, keeping nothing of the old one.
std::string with_path(std::string const& target, std::string const& path) {
    return path.empty() ? target : path;
}

}  // namespace

summary run(options const& o, std::atomic<int> const* stop, std::function<void(progress const&)> const& on_progress) {
    auto ep = parse_endpoint(o.url);
    if (!ep) {
        throw failure(ep.error().code == errc::invalid_argument ? exit_code::usage : exit_code::unavailable,
                      ep.error().message);
    }
    shared sh;
    sh.o = o;
    sh.ep = *ep;
    sh.sub_target = with_path(sh.ep.target, o.sub_path);
    sh.pub_target = with_path(sh.ep.target, o.pub_path);
    sh.push_target = o.push_path;

    unsigned const nthreads = std::max(1u, std::min<unsigned>(o.threads, std::max<std::uint32_t>(1, o.connections)));
    std::uint32_t publishers = 0;
    if (o.mode == mode::fanout) {
        publishers = o.via == publish_via::push ? o.in_flight : 1;
        std::uint64_t cap = 1024;
        while (cap < 4ull * o.in_flight) cap <<= 1;
        sh.slots = std::make_unique<slot[]>(cap);
        sh.slot_mask = cap - 1;
        // The message: '#', 16 hex digits of the broadcast ID, then 'x' up to --size bytes.
        std::string message(o.size, 'x');
        message[0] = '#';
        if (o.raw || o.via == publish_via::push) {
            sh.pub_template = message;
        } else {
            sh.pub_template = make_envelope(nlohmann::json(message), o.name, {}, {}, false);
        }
        sh.pub_hex_offset = sh.pub_template.find('#') + 1;
        if (o.via == publish_via::push) {
            std::string head = fmt::format("POST {} HTTP/1.1\r\nHost: {}\r\nX-Pode-Signal-Name: {}\r\n", o.push_path,
                                           sh.ep.host_header, *o.name);
            for (auto const& [n, v] : o.headers) head += fmt::format("{}: {}\r\n", n, v);
            head += fmt::format("Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n", sh.pub_template.size());
            sh.push_head = std::move(head);
        }
    }
    raise_file_limit(static_cast<std::uint64_t>(o.connections) + publishers + 64 + std::uint64_t{4} * nthreads);

    std::vector<std::unique_ptr<loop>> loops;
    for (unsigned t = 0; t < nthreads; ++t) loops.push_back(std::make_unique<loop>(sh, t));
    role const main_role = o.mode == mode::echo      ? role::echo
                           : o.mode == mode::fanout  ? role::sub
                           : o.mode == mode::connect ? role::connector
                                                     : role::idle;
    for (std::uint32_t k = 0; k < publishers; ++k) loops[0]->add(o.via == publish_via::push ? role::push : role::pub);
    for (std::uint32_t k = 0; k < o.connections; ++k) loops[k % nthreads]->add(main_role);
    if (publishers) sh.publisher = loops[0].get();
    std::int64_t const in_setup = o.mode == mode::connect ? 0 : static_cast<std::int64_t>(o.connections) + publishers;
    sh.setup_pending.store(in_setup);

    std::vector<std::thread> threads;
    threads.reserve(loops.size());
    for (auto& l : loops) threads.emplace_back([&l] { l->run(); });

    auto interrupted = [&] { return (stop && stop->load() != 0) || sh.fatal.load(); };
    auto sum_progress = [&](progress& p) {
        p.messages = 0;
        p.errors = 0;
        p.open = 0;
        for (auto const& l : loops) {
            p.messages += l->progress_messages.load(std::memory_order_relaxed);
            p.errors += l->progress_errors.load(std::memory_order_relaxed);
            p.open +=
                static_cast<std::uint32_t>(std::max<std::int64_t>(0, l->progress_open.load(std::memory_order_relaxed)));
        }
    };

    // Set-up: every connection has finished its handshake (or failed).
    auto const tick = std::chrono::milliseconds(10);
    std::int64_t last_report = now_ns();
    while (sh.setup_pending.load() > 0 && !interrupted()) {
        std::this_thread::sleep_for(tick);
        if (on_progress && now_ns() - last_report >= 1'000'000'000) {
            last_report = now_ns();
            progress p;
            p.setting_up = true;
            sum_progress(p);
            on_progress(p);
        }
    }
    std::int64_t const t0 = now_ns();
    sh.warm_end_ns.store(t0 + o.warmup.count() * 1'000'000);
    sh.end_ns.store(sh.warm_end_ns.load() + o.duration.count() * 1'000'000);
    sh.start_ns.store(t0, std::memory_order_release);
    for (auto& l : loops) l->wake();

    bool was_interrupted = false;
    std::int64_t stopped_at = 0;
    std::uint64_t last_messages = 0;
    last_report = t0;
    for (;;) {
        std::int64_t const now = now_ns();
        if (interrupted()) {
            was_interrupted = !sh.fatal.load();
            stopped_at = now;
            sh.stop.store(true);
            break;
        }
        if (now >= sh.end_ns.load()) break;
        if (on_progress && now - last_report >= 1'000'000'000) {
            progress p;
            sum_progress(p);
            p.warming_up = now < sh.warm_end_ns.load();
            p.elapsed_s = static_cast<double>(now - t0) / 1e9;
            p.total_s = static_cast<double>(sh.end_ns.load() - t0) / 1e9;
            p.rate = static_cast<double>(p.messages - last_messages) / (static_cast<double>(now - last_report) / 1e9);
            last_messages = p.messages;
            last_report = now;
            on_progress(p);
        }
        std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(
            tick, std::chrono::nanoseconds(std::max<std::int64_t>(0, sh.end_ns.load() - now))));
    }
    for (auto& l : loops) l->wake();
    for (auto& t : threads) t.join();

    if (sh.fatal.load()) throw failure(sh.fatal_code, sh.fatal_message);

    summary s;
    s.mode = o.mode;
    s.url = o.url;
    s.connections = o.connections;
    s.threads = nthreads;
    s.size = o.size;
    s.in_flight = o.in_flight;
    s.warmup_s = static_cast<double>(o.warmup.count()) / 1e3;
    s.interrupted = was_interrupted;
    std::int64_t const window_end = was_interrupted ? std::min(stopped_at, sh.end_ns.load()) : sh.end_ns.load();
    s.duration_s = static_cast<double>(std::max<std::int64_t>(0, window_end - sh.warm_end_ns.load())) / 1e9;
    histogram h;
    std::array<std::uint64_t, fail_kinds> errors{};
    for (auto const& l : loops) {
        h.merge(l->hist);
        s.messages += l->messages;
        s.broadcasts += l->broadcasts;
        s.open_at_end += l->open_at_end;
        s.connected += l->connected;
        for (std::size_t k = 0; k < fail_kinds; ++k) errors[k] += l->errors[k];
    }
    for (std::size_t k = 0; k < fail_kinds; ++k) {
        s.errors += errors[k];
        if (errors[k]) s.error_kinds.emplace_back(fail_name(static_cast<fail>(k)), errors[k]);
    }
    s.lost = errors[static_cast<std::size_t>(fail::lost)];
    s.latency = h.summary();
    if (s.duration_s > 0) {
        s.rate = static_cast<double>(s.messages) / s.duration_s;
        s.broadcast_rate = static_cast<double>(s.broadcasts) / s.duration_s;
    }
    return s;
}

// ---------------------------------------------------------------------------------------------
// Thresholds

namespace {

bool latency_metric(std::string_view m) {
    return m == "p50" || m == "p90" || m == "p99" || m == "p99.9" || m == "max" || m == "min" || m == "mean";
}

bool count_metric(std::string_view m) {
    return m == "rate" || m == "messages" || m == "errors" || m == "connected" || m == "open" || m == "lost" ||
           m == "broadcasts" || m == "broadcast_rate";
}

}  // namespace

result<threshold> parse_threshold(std::string_view text) {
    auto bad = [&](std::string_view why) {
        return make_error(errc::invalid_argument,
                          fmt::format("threshold '{}': {} (e.g. 'p99<5ms', 'rate>100000', 'errors==0')", text, why));
    };
    threshold t;
    t.text = std::string(text);
    std::string s;
    for (char c : text)
        if (c != ' ') s += c;
    auto const op_pos = s.find_first_of("<>=!");
    if (op_pos == std::string::npos || op_pos == 0) return bad("no comparison");
    std::string metric = s.substr(0, op_pos);
    metric = to_lower(metric);
    // k6 spellings: p(99), p(99.9), avg, med.
    if (metric.size() > 3 && metric.rfind("p(", 0) == 0 && metric.back() == ')')
        metric = "p" + metric.substr(2, metric.size() - 3);
    if (metric == "avg") metric = "mean";
    if (metric == "med") metric = "p50";
    if (metric == "p999") metric = "p99.9";
    if (!latency_metric(metric) && !count_metric(metric))
        return bad(
            "unknown metric: use p50, p90, p99, p99.9, max, min, mean, rate, messages, errors, connected, open, "
            "lost, broadcasts or broadcast_rate");
    std::size_t op_len = 1;
    if (op_pos + 1 < s.size() && s[op_pos + 1] == '=') op_len = 2;
    std::string const op = s.substr(op_pos, op_len);
    if (op != "<" && op != "<=" && op != ">" && op != ">=" && op != "==")
        return bad("the comparison must be <, <=, >, >= or ==");
    std::string const value = s.substr(op_pos + op_len);
    double v = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
    if (ec != std::errc{} || end == value.data() || !std::isfinite(v) || v < 0) return bad("the value is not a number");
    std::string_view const unit(end, static_cast<std::size_t>(value.data() + value.size() - end));
    t.metric = metric;
    t.op = op;
    t.is_latency = latency_metric(metric);
    if (t.is_latency) {
        double f = 0;
        if (unit == "ns")
            f = 1;
        else if (unit == "us" || unit == "\xC2\xB5s")
            f = 1e3;
        else if (unit == "ms" || unit.empty())
            f = 1e6;  // k6: milliseconds when no unit
        else if (unit == "s")
            f = 1e9;
        else
            return bad("the unit must be ns, us, ms or s");
        t.value = v * f;
    } else {
        if (!unit.empty()) return bad("a count or rate takes no unit");
        t.value = v;
    }
    return t;
}

std::vector<threshold_result> evaluate(summary const& s, std::vector<threshold> const& ts) {
    std::vector<threshold_result> out;
    for (auto const& t : ts) {
        threshold_result r;
        r.t = t;
        auto const& l = s.latency;
        auto const& m = t.metric;
        double a = 0;
        if (m == "p50")
            a = static_cast<double>(l.p50);
        else if (m == "p90")
            a = static_cast<double>(l.p90);
        else if (m == "p99")
            a = static_cast<double>(l.p99);
        else if (m == "p99.9")
            a = static_cast<double>(l.p99_9);
        else if (m == "max")
            a = static_cast<double>(l.max);
        else if (m == "min")
            a = static_cast<double>(l.min);
        else if (m == "mean")
            a = l.mean;
        else if (m == "rate")
            a = s.rate;
        else if (m == "messages")
            a = static_cast<double>(s.messages);
        else if (m == "errors")
            a = static_cast<double>(s.errors);
        else if (m == "connected")
            a = static_cast<double>(s.connected);
        else if (m == "open")
            a = static_cast<double>(s.open_at_end);
        else if (m == "lost")
            a = static_cast<double>(s.lost);
        else if (m == "broadcasts")
            a = static_cast<double>(s.broadcasts);
        else if (m == "broadcast_rate")
            a = s.broadcast_rate;
        r.actual = a;
        // A latency threshold with nothing measured fails: there is no evidence it holds.
        bool const no_data = t.is_latency && l.count == 0;
        if (t.op == "<")
            r.ok = a < t.value;
        else if (t.op == "<=")
            r.ok = a <= t.value;
        else if (t.op == ">")
            r.ok = a > t.value;
        else if (t.op == ">=")
            r.ok = a >= t.value;
        else
            r.ok = a == t.value;
        if (no_data) r.ok = false;
        out.push_back(std::move(r));
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// Reports

std::string format_latency(std::uint64_t ns) {
    auto const v = static_cast<double>(ns);
    if (ns < 1000) return fmt::format("{} ns", ns);
    if (ns < 1'000'000) return fmt::format("{:.1f} us", v / 1e3);
    if (ns < 1'000'000'000) return fmt::format("{:.2f} ms", v / 1e6);
    return fmt::format("{:.2f} s", v / 1e9);
}

namespace {

std::string grouped(std::uint64_t n) {
    std::string d = std::to_string(n);
    std::string out;
    int k = 0;
    for (auto it = d.rbegin(); it != d.rend(); ++it, ++k) {
        if (k && k % 3 == 0) out.insert(out.begin(), ',');
        out.insert(out.begin(), *it);
    }
    return out;
}

std::string what_unit(mode m) {
    switch (m) {
        case mode::echo: return "round trips";
        case mode::fanout: return "deliveries";
        case mode::connect:
        case mode::idle: return "handshakes";
    }
    return "messages";
}

std::string threshold_value(threshold_result const& r) {
    if (r.t.is_latency) return format_latency(static_cast<std::uint64_t>(std::llround(r.actual)));
    if (r.t.metric == "rate" || r.t.metric == "broadcast_rate") return fmt::format("{:.1f}", r.actual);
    return fmt::format("{}", static_cast<std::uint64_t>(std::llround(r.actual)));
}

double us(std::uint64_t ns) {
    return std::round(static_cast<double>(ns) / 10.0) / 100.0;
}

}  // namespace

std::string format_text(summary const& s, std::vector<threshold_result> const& checks) {
    std::string out;
    out += fmt::format("wsig bench --mode {} {}{}\n", to_string(s.mode), s.url, s.interrupted ? "  (interrupted)" : "");
    std::string const threads = fmt::format("{} thread{}", s.threads, s.threads == 1 ? "" : "s");
    switch (s.mode) {
        case mode::echo:
            out += fmt::format("  connections  {} ({} open at the end), {}, {} B messages, {} in flight each\n",
                               s.connections, s.open_at_end, threads, s.size, s.in_flight);
            break;
        case mode::fanout:
            out += fmt::format("  subscribers  {} ({} open at the end), {}, {} B messages, {} broadcasts in flight\n",
                               s.connected, s.open_at_end, threads, s.size, s.in_flight);
            break;
        case mode::connect: out += fmt::format("  connectors   {}, {}\n", s.connections, threads); break;
        case mode::idle:
            out += fmt::format("  connections  {} of {} connected, {} open at the end, {}\n", s.connected,
                               s.connections, s.open_at_end, threads);
            break;
    }
    out += fmt::format("  duration     {:.2f} s measured", s.duration_s);
    if (s.warmup_s > 0) out += fmt::format(" after {:.2f} s of warm-up", s.warmup_s);
    out += "\n";
    if (s.mode != mode::idle)
        out += fmt::format("  {:<12} {}  ({:.1f}/s)\n", what_unit(s.mode), grouped(s.messages), s.rate);
    if (s.mode == mode::fanout)
        out += fmt::format("  broadcasts   {}  ({:.1f}/s), {} lost\n", grouped(s.broadcasts), s.broadcast_rate, s.lost);
    auto const& l = s.latency;
    std::string const what = s.mode == mode::echo     ? "round trip"
                             : s.mode == mode::fanout ? "publish to last receipt"
                                                      : "handshake";
    if (l.count) {
        out += fmt::format("  latency      p50 {}  p90 {}  p99 {}  p99.9 {}  max {}   ({}, {} samples)\n",
                           format_latency(l.p50), format_latency(l.p90), format_latency(l.p99), format_latency(l.p99_9),
                           format_latency(l.max), what, grouped(l.count));
    } else {
        out += fmt::format("  latency      none measured ({})\n", what);
    }
    out += fmt::format("  errors       {}", s.errors);
    if (!s.error_kinds.empty()) {
        out += " (";
        for (std::size_t k = 0; k < s.error_kinds.size(); ++k)
            out += fmt::format("{}{}: {}", k ? ", " : "", s.error_kinds[k].first, s.error_kinds[k].second);
        out += ")";
    }
    out += "\n";
    for (auto const& c : checks)
        out += fmt::format("  threshold    {:<16} {}  ({})\n", c.t.text, c.ok ? "ok" : "FAILED", threshold_value(c));
    return out;
}

std::string format_json(summary const& s, std::vector<threshold_result> const& checks) {
    nlohmann::ordered_json j;
    j["mode"] = to_string(s.mode);
    j["url"] = s.url;
    j["connections"] = s.connections;
    j["connected"] = s.connected;
    j["open_at_end"] = s.open_at_end;
    j["threads"] = s.threads;
    j["size"] = s.size;
    j["in_flight"] = s.in_flight;
    j["duration_s"] = std::round(s.duration_s * 1000) / 1000;
    j["warmup_s"] = s.warmup_s;
    j["messages"] = s.messages;
    j["rate"] = std::round(s.rate * 10) / 10;
    if (s.mode == mode::fanout) {
        j["broadcasts"] = s.broadcasts;
        j["broadcast_rate"] = std::round(s.broadcast_rate * 10) / 10;
        j["lost"] = s.lost;
    }
    auto const& l = s.latency;
    j["latency_us"] = {{"p50", us(l.p50)},
                       {"p90", us(l.p90)},
                       {"p99", us(l.p99)},
                       {"p99_9", us(l.p99_9)},
                       {"max", us(l.max)},
                       {"min", us(l.min)},
                       {"mean", std::round(l.mean / 10.0) / 100.0}};
    j["latency_samples"] = l.count;
    j["errors"] = s.errors;
    nlohmann::ordered_json kinds = nlohmann::ordered_json::object();
    for (auto const& [name, n] : s.error_kinds) kinds[name] = n;
    j["error_kinds"] = kinds;
    j["interrupted"] = s.interrupted;
    nlohmann::ordered_json th = nlohmann::ordered_json::array();
    for (auto const& c : checks) {
        nlohmann::ordered_json one;
        one["threshold"] = c.t.text;
        one["ok"] = c.ok;
        one["value"] = c.t.is_latency ? us(static_cast<std::uint64_t>(std::llround(c.actual))) : c.actual;
        th.push_back(std::move(one));
    }
    j["thresholds"] = th;
    return j.dump() + "\n";
}

}  // namespace wsig::bench
