// `wsig serve`: the Pode-style signal server's options and entry point (no Beast/Asio here).
#pragma once

#include <wsig/error.hpp>
#include <wsig/json.hpp>
#include <wsig/registry.hpp>
#include <wsig/signing.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace wsig {

// One --route PATH=NAME[,group=G][,scope=local|global].
struct route_spec {
    std::string path;                  // exact URL path, e.g. "/msg"
    std::string name;                  // the signal Name connections are registered under
    std::string group;                 // empty: the client may give ?group=
    std::optional<wsig::scope> scope;  // unset: --default-scope
    std::string exec = {};             // scope=local only: a command run for each connection
};

// Parses "PATH=NAME[,group=G][,scope=local|global][,exec=CMD]"; the path must start with '/'.
// exec= comes last and takes the rest of the spec, commas included.
result<route_spec> parse_route_spec(std::string_view spec);

// One --signal-route PATH=CMD: client messages on sockets of PATH go to CMD (Add-PodeSignalRoute).
struct signal_route_spec {
    std::string path;
    std::string command;  // run once with /bin/sh -c and kept running
};
result<signal_route_spec> parse_signal_route(std::string_view spec);

// One --every DURATION:NAME:CMD: CMD's output broadcast to NAME on that period (Add-PodeSchedule).
struct schedule_spec {
    std::chrono::milliseconds period;
    std::string name;
    std::string command;
};
result<schedule_spec> parse_schedule(std::string_view spec);

enum class slow_client_policy { drop, close };
enum class tls_version { v1_2, v1_3 };  // the oldest TLS version the server speaks (--tls-min-version)
enum class log_format { text, json };
enum class log_level { quiet, info, debug };  // -q: errors and warnings only; -v: per-connection events

struct server_options {
    std::string address = "127.0.0.1";  // loopback: nothing is exposed unless asked for
    std::uint16_t port = 8091;          // Pode's documented demo port; 0 picks a free one
    std::vector<route_spec> routes;
    std::vector<std::string> echo_paths;
    bool accept_client_id = false;                    // off: a client cannot choose (or steal) an ID
    bool auto_upgrade = false;                        // Pode deprecates it; opt-in only
    wsig::scope default_scope = scope::global;        // Pode's default scope
    broadcast_levels levels;                          // default level "name": anything goes, as Pode
    signing_config signing;                           // off unless a secret is given
    std::string tls_cert, tls_key;                    // PEM files; both or neither
    std::string pfx, pfx_password;                    // PKCS#12 alternative (the password itself, read by the CLI)
    tls_version tls_min_version = tls_version::v1_2;  // 1.2: older browsers and clients still need it
    std::vector<std::string> allow_origins;           // empty: every Origin (as Pode), but exec= routes only their own
    std::string api_key;                       // empty: the push/admin API is open (it binds to loopback by default)
    std::uint64_t max_message_size = 1 << 20;  // 1 MiB: bounded memory per read; larger closes with 1009
    // --echo sockets are the target of conformance suites, whose largest messages are 16 MiB
    // (heavily fragmented ones too); the same value as max_message_size when that is given.
    std::uint64_t echo_max_message_size = 16 << 20;
    std::uint64_t max_body_size = 16 << 20;  // 16 MiB: push bodies beyond get 413
    std::size_t max_connections = 0;         // 0: no limit but the file limit
    // Live local-route (exec=) processes; past it upgrades to exec= routes get 503. 64: one process
    // per connection must not let a flood of upgrades fork-bomb the host. 0: no limit.
    std::size_t max_processes = 64;
    // Host names (globs) answered besides IP literals, and besides loopback names on a loopback
    // bind. Empty: a loopback server answers only loopback names and IP literals (DNS rebinding),
    // any other server answers every Host.
    std::vector<std::string> allow_hosts = {};
    std::uint64_t send_queue = 1 << 20;  // 1 MiB queued per client before the slow-client policy applies
    slow_client_policy slow_client = slow_client_policy::close;  // never unbounded memory
    // 256 MiB for every client together: send queues and messages being received (an echo path's
    // 16 MiB messages included). Past it the clients holding the most go first (closed, or their
    // queue dropped under --slow-client drop), so a crowd of slow readers cannot exhaust the host.
    std::uint64_t max_queued_total = 256u << 20;
    std::size_t max_json_depth = default_max_json_depth;  // envelopes and action lines nested deeper are dropped
    std::chrono::milliseconds ping_interval{30000};       // 30 s: keeps NATs open; dead peers go within ~90 s
    unsigned threads = 0;                                 // 0: one per core
    std::chrono::milliseconds shutdown_timeout{5000};     // 5 s: enough for well-behaved clients to answer a close
    wsig::log_format log_format = log_format::text;
    wsig::log_level log_level = log_level::info;
    std::string ready_file;  // written with the URL once accepting
    std::vector<signal_route_spec> signal_routes = {};
    std::string on_connect = {};     // a command per connect event (Register-PodeSignalEvent)
    std::string on_disconnect = {};  // a command per disconnect event, for every cause
    std::vector<schedule_spec> schedules = {};
    std::string static_dir = {};   // files served at /, replacing the demo page
    bool static_dotfiles = false;  // serve names starting with '.' (.env, .git/) under static_dir: 404 by default
    bool demo = false;             // the /msg demo with the built-in page (set when nothing else is)
};

// Runs the server until SIGINT/SIGTERM; returns the process exit code (0 on a graceful stop,
// 78 when the port is in use or the certificate cannot be loaded).
int run_server(server_options options);

// The built-in demo page served at "/" (HTML with inline script, no external resources).
std::string_view demo_page() noexcept;

}  // namespace wsig
