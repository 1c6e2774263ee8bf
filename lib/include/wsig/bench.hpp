// `wsig bench`: a WebSocket load generator with latency percentiles (echo, fan-out, connect, idle).
// The engine is plain non-blocking sockets + epoll, one event loop per thread, with its own
// minimal RFC 6455 client; it works against any RFC 6455 server.
#pragma once

#include <wsig/error.hpp>
#include <wsig/exit_code.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wsig::bench {

enum class mode { echo, fanout, connect, idle };
enum class publish_via { ws, push };

std::string_view to_string(mode m);

struct options {
    std::string url;  // ws://host[:port]/path: the echo path, or the server (fan-out), or the upgrade target
    bench::mode mode = mode::echo;
    std::uint32_t connections = 0;  // 0: the mode's default (echo 100, fanout 1000, connect 16, idle 1000)
    std::uint64_t size = 64;        // payload bytes per message
    std::uint32_t in_flight = 0;    // 0: default (echo 1 per connection, fanout 16 broadcasts)
    std::chrono::milliseconds duration{10'000};
    std::chrono::milliseconds warmup{1'000};
    std::chrono::milliseconds connect_timeout{10'000};   // per connection: TCP connect + upgrade
    std::chrono::milliseconds broadcast_timeout{5'000};  // fan-out: a broadcast not complete by then is lost
    unsigned threads = 1;
    bool binary = false;  // binary frames instead of text

    // Fan-out.
    std::string sub_path;               // where subscribers connect; empty: the URL's path
    std::string pub_path;               // where the publisher connects (ws); empty: the URL's path
    std::optional<std::string> name;    // the signal Name to broadcast to (envelope "path", push header)
    publish_via via = publish_via::ws;  // a WebSocket envelope, or HTTP POST to push_path
    std::string push_path = "/signal";  // with via push
    bool raw = false;                   // publish the payload itself, not a Pode envelope

    std::vector<std::pair<std::string, std::string>> headers;  // extra request headers (upgrade, push)
};

// Fills the mode's defaults and checks the combination; errc::invalid_argument on a bad one.
result<options> resolve(options o);

// Latency percentiles, in nanoseconds.
struct latency {
    std::uint64_t count = 0;
    std::uint64_t min = 0, p50 = 0, p90 = 0, p99 = 0, p99_9 = 0, max = 0;
    double mean = 0;
};

struct summary {
    bench::mode mode = mode::echo;
    std::string url;
    std::uint32_t connections = 0;  // requested (subscribers in fan-out)
    std::uint32_t connected = 0;    // handshakes that succeeded during set-up (connect mode: in the window)
    std::uint32_t open_at_end = 0;  // still open when the run ended
    unsigned threads = 1;
    std::uint64_t size = 0;
    std::uint32_t in_flight = 0;
    double duration_s = 0;  // the measured window (shorter when interrupted)
    double warmup_s = 0;
    std::uint64_t messages = 0;    // echo: round trips; fanout: deliveries; connect: handshakes
    double rate = 0;               // messages per second
    std::uint64_t broadcasts = 0;  // fan-out: broadcasts received by every subscriber
    double broadcast_rate = 0;
    std::uint64_t lost = 0;  // fan-out: broadcasts not complete within the broadcast timeout
    bench::latency latency;  // echo: RTT; fanout: publish -> last receipt; connect, idle: handshake
    std::uint64_t errors = 0;
    std::vector<std::pair<std::string, std::uint64_t>> error_kinds;  // e.g. {"closed by server", 3}
    bool interrupted = false;
};

// A k6-style pass/fail criterion: `p99<5ms`, `p(99)<=5ms`, `max<100ms`, `mean<2ms`,
// `rate>100000`, `errors==0`, `messages>1000`, `connected>=1000`, `open>=1000`.
struct threshold {
    std::string text;
    std::string metric;  // p50 p90 p99 p99.9 max min mean rate messages errors connected open lost broadcasts
    std::string op;      // < <= > >= ==
    double value = 0;    // latency metrics in nanoseconds
    bool is_latency = false;
};
result<threshold> parse_threshold(std::string_view text);

struct threshold_result {
    threshold t;
    double actual = 0;
    bool ok = false;
};
std::vector<threshold_result> evaluate(summary const& s, std::vector<threshold> const& ts);

// Progress, reported about once a second from the thread that called run().
struct progress {
    bool warming_up = false;
    bool setting_up = false;
    double elapsed_s = 0;  // since traffic started (including warm-up)
    double total_s = 0;
    std::uint64_t messages = 0;  // completed so far, warm-up included
    double rate = 0;             // over the last interval
    std::uint32_t open = 0;
    std::uint64_t errors = 0;
};

// A failure that ends the run with a specific exit code: refused (69), handshake not 101 (76), ...
struct failure : std::runtime_error {
    exit_code code;
    failure(exit_code c, std::string const& message) : std::runtime_error(message), code(c) {}
};

// Runs the benchmark. `stop` (may be null) ends it early when set (a signal handler sets it);
// the summary then has interrupted = true. Throws failure when nothing can be measured.
summary run(options const& o, std::atomic<int> const* stop, std::function<void(progress const&)> const& on_progress);

std::string format_text(summary const& s, std::vector<threshold_result> const& checks);
std::string format_json(summary const& s, std::vector<threshold_result> const& checks);
std::string format_latency(std::uint64_t ns);

}  // namespace wsig::bench
