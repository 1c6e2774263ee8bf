// `wsig bench URL`: load-tests a WebSocket server (echo, fan-out, connect, idle) with latency percentiles.
#include "commands.hpp"

#include <wsig/bench.hpp>
#include <wsig/exit_code.hpp>
#include <wsig/units.hpp>

#include <fmt/format.h>

#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace wsig::cli {
namespace {

std::atomic<int> g_signal{0};

extern "C" void on_signal(int sig) {
    g_signal.store(sig);
}

struct bench_cli {
    std::string url;
    std::string mode = "echo";
    std::uint32_t connections = 0;
    std::string size = "64";
    std::uint32_t in_flight = 0;
    std::string duration = "10s";
    std::string warmup = "1s";
    std::string connect_timeout = "10s";
    std::string broadcast_timeout = "5s";
    unsigned threads = 1;
    bool binary = false;
    std::string sub_path, pub_path, name, via = "ws", push_path = "/signal";
    bool raw = false;
    std::vector<std::string> headers;
    std::string output = "text";
    std::vector<std::string> thresholds;
    bool quiet = false;
};

void print_progress(bench::progress const& p, bench::mode m) {
    std::string line;
    if (p.setting_up) {
        line = fmt::format("connecting: {} open, {} errors", p.open, p.errors);
    } else {
        char const* what = m == bench::mode::echo      ? "rt/s"
                           : m == bench::mode::fanout  ? "deliveries/s"
                           : m == bench::mode::connect ? "conn/s"
                                                       : "";
        line = fmt::format("[{:5.1f}s/{:.1f}s]{} {:>12.0f} {}  {} open  {} errors", p.elapsed_s, p.total_s,
                           p.warming_up ? " warm-up" : "", p.rate, what, p.open, p.errors);
    }
    fmt::print(stderr, "\r\x1b[K{}", line);
    std::fflush(stderr);
}

}  // namespace

command setup_bench(CLI::App& root) {
    auto o = std::make_shared<bench_cli>();
    auto* app = root.add_subcommand("bench", "Load-test a WebSocket server: throughput and latency percentiles");
    app->footer(R"~(Modes:
  echo     C connections send S-byte messages, D in flight each, to a server that echoes them;
           round trips/s and the round-trip time per message
  fanout   C subscribers connect to --sub-path; one publisher broadcasts to them, with --in-flight
           broadcasts outstanding: a Pode envelope {"message":…,"path":NAME} on --pub-path (default),
           the bare payload (--raw), or POST --push-path with X-Pode-Signal-Name (--via push);
           deliveries/s and the time from publish to the LAST subscriber's receipt
  connect  C connectors open, upgrade and close connections in a loop; handshakes/s and their latency
  idle     open C connections and hold them for --duration; how many connected and stayed open

Examples:
  wsig serve -p 8091 --echo /echo &
  wsig bench ws://127.0.0.1:8091/echo -c 100 -s 64 --duration 10s
  wsig bench ws://127.0.0.1:8091/echo -c 10 --in-flight 32 --threads 2 --output json
  wsig bench ws://127.0.0.1:8091/echo --threshold 'p99<5ms' --threshold 'rate>50000'
  wsig serve -p 8091 --route /sub=Sub --route /pub=Pub &
  wsig bench ws://127.0.0.1:8091 --mode fanout --sub-path /sub --pub-path /pub --name Sub -c 1000 --in-flight 16
  wsig bench ws://127.0.0.1:8091/sub --mode fanout --via push --name Sub -c 1000 --in-flight 16
  wsig bench ws://127.0.0.1:8091/echo --mode connect -c 16 --duration 5s
  wsig bench ws://127.0.0.1:8091/echo --mode idle -c 10000 --duration 30s

Thresholds (like k6): METRIC OP VALUE, OP one of < <= > >= ==; latency metrics p50 p90 p99 p99.9
max min mean take ns, us, ms (the default) or s; counts: rate messages errors connected open lost
broadcasts broadcast_rate. In JSON, latencies are in microseconds.

Exit codes: 0 done, 2 usage, 69 connection refused or reset (or upgrade answered 5xx), 76 upgrade
not 101 or bad Sec-WebSocket-Accept, 67/77 push answered 404/401-403, 99 a --threshold failed,
130/143 interrupted (the summary is still printed).)~");

    app->add_option("url", o->url, "ws://HOST[:PORT]/PATH: the echo path (echo, connect, idle) or the server (fanout)")
        ->required();
    app->add_option("-m,--mode", o->mode, "echo, fanout, connect or idle (default echo)")
        ->check(CLI::IsMember({"echo", "fanout", "connect", "idle"}));
    app->add_option("-c,--connections", o->connections,
                    "Connections (fanout: subscribers); default echo 100, fanout 1000, connect 16, idle 1000")
        ->check(CLI::Range(1u, 1'000'000u));
    app->add_option("-s,--size", o->size, "Message payload size, e.g. 64, 1KiB (default 64; fanout: 17 or more)")
        ->type_name("SIZE");
    app->add_option("--in-flight", o->in_flight,
                    "echo: messages in flight per connection (default 1); fanout: broadcasts in flight (default 16)")
        ->check(CLI::Range(1u, 1'000'000u));
    app->add_option("--duration", o->duration, "How long to measure, after the warm-up (default 10s)")
        ->type_name("DURATION");
    app->add_option("--warmup", o->warmup, "Traffic before measuring, excluded from the results (default 1s)")
        ->type_name("DURATION");
    app->add_option("--threads", o->threads, "Event-loop threads; connections are spread over them (default 1)")
        ->check(CLI::Range(1u, 256u));
    app->add_flag("--binary", o->binary, "Send binary frames instead of text");
    app->add_option("--sub-path", o->sub_path, "fanout: the path subscribers connect to (default: the URL's path)")
        ->type_name("URLPATH");
    app->add_option("--pub-path", o->pub_path, "fanout: the path the publisher connects to (default: the URL's path)")
        ->type_name("URLPATH");
    app->add_option("--name", o->name,
                    "fanout: the signal Name to broadcast to: the envelope's \"path\", or X-Pode-Signal-Name with "
                    "--via push")
        ->type_name("NAME");
    app->add_option("--via", o->via, "fanout: publish with a ws envelope (default) or an HTTP push (POST --push-path)")
        ->check(CLI::IsMember({"ws", "push"}));
    app->add_option("--push-path", o->push_path, "fanout --via push: the push endpoint (default /signal)")
        ->type_name("URLPATH");
    app->add_flag("--raw", o->raw,
                  "fanout: publish the bare payload, not a Pode envelope (for plain broadcast servers)");
    app->add_option("--connect-timeout", o->connect_timeout,
                    "Per connection: TCP connect plus the upgrade must finish within it (default 10s)")
        ->type_name("DURATION");
    app->add_option("--broadcast-timeout", o->broadcast_timeout,
                    "fanout: a broadcast not received by every subscriber within it counts as lost (default 5s)")
        ->type_name("DURATION");
    app->add_option("-H,--header", o->headers, "Extra request header 'Name: value' (upgrades and pushes); repeatable")
        ->type_name("HEADER");
    app->add_option("-o,--output", o->output, "text (a table, default) or json (one summary object) on stdout")
        ->check(CLI::IsMember({"text", "json"}));
    app->add_option("--threshold", o->thresholds,
                    "Pass/fail criterion, e.g. 'p99<5ms', 'rate>100000', 'errors==0'; repeatable; exit 99 on failure")
        ->type_name("EXPR");
    app->add_flag("-q,--quiet", o->quiet, "No progress line on stderr (it is shown only on a terminal anyway)");

    return {app, [o] {
                bench::options b;
                b.url = o->url;
                b.mode = o->mode == "fanout"    ? bench::mode::fanout
                         : o->mode == "connect" ? bench::mode::connect
                         : o->mode == "idle"    ? bench::mode::idle
                                                : bench::mode::echo;
                b.connections = o->connections;
                b.size = size_flag("--size", o->size);
                b.in_flight = o->in_flight;
                b.duration = duration_flag("--duration", o->duration);
                b.warmup = duration_flag("--warmup", o->warmup);
                b.connect_timeout = duration_flag("--connect-timeout", o->connect_timeout);
                b.broadcast_timeout = duration_flag("--broadcast-timeout", o->broadcast_timeout);
                b.threads = o->threads;
                b.binary = o->binary;
                b.sub_path = o->sub_path;
                b.pub_path = o->pub_path;
                if (!o->name.empty()) b.name = o->name;
                b.via = o->via == "push" ? bench::publish_via::push : bench::publish_via::ws;
                b.push_path = o->push_path;
                b.raw = o->raw;
                b.headers = header_flags(o->headers);
                std::vector<bench::threshold> thresholds;
                for (auto const& t : o->thresholds) {
                    auto parsed = bench::parse_threshold(t);
                    if (!parsed) throw exit_error(to_int(exit_code::usage), parsed.error().message);
                    thresholds.push_back(*parsed);
                }
                auto resolved = bench::resolve(b);
                if (!resolved) throw exit_error(to_int(exit_code::usage), resolved.error().message);
                b = *resolved;

                bool const show_progress = !o->quiet && isatty(STDERR_FILENO) != 0;
                std::function<void(bench::progress const&)> progress;
                if (show_progress) progress = [m = b.mode](bench::progress const& p) { print_progress(p, m); };

                g_signal.store(0);
                auto const old_int = std::signal(SIGINT, on_signal);
                auto const old_term = std::signal(SIGTERM, on_signal);
                bench::summary s;
                try {
                    s = bench::run(b, &g_signal, progress);
                } catch (bench::failure const& f) {
                    if (show_progress) fmt::print(stderr, "\r\x1b[K");
                    std::signal(SIGINT, old_int);
                    std::signal(SIGTERM, old_term);
                    throw exit_error(to_int(f.code), f.what());
                }
                std::signal(SIGINT, old_int);
                std::signal(SIGTERM, old_term);
                if (show_progress) fmt::print(stderr, "\r\x1b[K");

                auto const checks = bench::evaluate(s, thresholds);
                fmt::print("{}", o->output == "json" ? bench::format_json(s, checks) : bench::format_text(s, checks));
                std::fflush(stdout);
                if (s.messages == 0 && (b.mode == bench::mode::echo || b.mode == bench::mode::fanout) && !s.interrupted)
                    print_warning("no message completed: is the server echoing (echo) or broadcasting (fanout)?");
                if (s.interrupted) return to_int(g_signal.load() == SIGTERM ? exit_code::sigterm : exit_code::sigint);
                for (auto const& c : checks)
                    if (!c.ok) {
                        print_error(fmt::format("threshold '{}' failed", c.t.text));
                        return to_int(exit_code::threshold);
                    }
                return to_int(exit_code::ok);
            }};
}

}  // namespace wsig::cli
