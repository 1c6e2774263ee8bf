// External commands of `wsig serve`: signal routes (--signal-route), connect/disconnect hooks,
// local-route processes (exec=) and schedules (--every). Pode's Add-PodeSignalRoute,
// Register-PodeSignalEvent, local scope and Add-PodeSchedule, with external commands.
#pragma once

#include "commands/child_process.hpp"
#include "signal/router.hpp"

#include <wsig/envelope.hpp>
#include <wsig/json.hpp>
#include <wsig/registry.hpp>
#include <wsig/server.hpp>
#include <wsig/units.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace wsig::detail {

enum class command_log { debug, info, warning, error };
using command_logger = std::function<void(command_log, std::string)>;

struct command_options {
    std::vector<wsig::signal_route_spec> signal_routes = {};
    std::string on_connect = {};     // empty: no hook
    std::string on_disconnect = {};  // empty: no hook
    std::vector<wsig::schedule_spec> schedules = {};
    // Bytes of events queued for one signal-route command before events are dropped (and counted):
    // a command that stops reading never blocks the server or grows its memory without bound.
    std::size_t max_queue = std::size_t{1024} * 1024;
    std::size_t max_output_line = std::size_t{1024} * 1024;  // longest action line or schedule output kept
    std::size_t max_json_depth = default_max_json_depth;     // nesting of an action line (--max-json-depth)
    // Hooks: at most this many run at once; later events wait in a queue of max_pending_hooks,
    // and beyond it they are dropped and counted (a flood of connections cannot fork-bomb the host).
    std::size_t max_running_hooks = 16;
    std::size_t max_pending_hooks = 4096;
    std::chrono::milliseconds hook_timeout{30000};  // a hung hook is ended after 30 s
    std::chrono::milliseconds restart_min{100};     // back-off of a crashing signal-route command
    std::chrono::milliseconds restart_max{10000};
};

// One action line of a signal-route command, checked whole before any of it runs.
struct signal_action {
    struct send_to {
        target to;
        std::string payload;  // the data as it goes on the wire (a string raw, anything else as JSON)
    };
    struct reply_to {
        std::string payload;
        std::optional<std::uint64_t> event_id;  // none: the sender of the latest event
    };
    std::optional<send_to> send;
    std::optional<reply_to> reply;
    std::optional<target> close;  // never everyone: a name, group or clientId is required
};

// Parses {"send":{…}}, {"reply":DATA[,"id":N]}, {"close":{…}} (any of them, together); the error
// says why the line is skipped. Pure: tests/fuzz/fuzz_action_line.cpp runs it on any bytes.
result<signal_action> parse_action_line(std::string_view line, std::size_t max_depth = default_max_json_depth);

// What the handlers need of the server beyond the registry: the broadcast levels and how a payload
// becomes a frame are in the core library already; sending uses connection::send.
class external_commands : public std::enable_shared_from_this<external_commands>, public signal_route_target {
public:
    external_commands(boost::asio::any_io_executor const& executor, registry& reg, broadcast_levels const& levels,
                      command_options options, command_logger log);

    void start();  // starts the signal-route commands and the schedules
    // Ends the signal-route commands and schedules (SIGTERM, then SIGKILL after a grace period) and takes
    // no new events; hooks already queued still run (the disconnects of a shutdown), bounded by their timeout.
    void stop();
    // No command of ours is running and no hook is waiting (thread-safe).
    bool idle() const noexcept { return running_.load() == 0; }

    // True when client messages on sockets of `socket_path` go to a signal route (no default routing then).
    bool routes(std::string_view socket_path) const override;
    // A client message on a signal-route socket; thread-safe. Its message value is moved into the event.
    void on_message(connection_ptr const& sender, std::string_view socket_path, envelope env) override;

    // Connection events (every cause for disconnect); thread-safe. `reason` says why it ended.
    void on_connect(connection_info const& info);
    void on_disconnect(connection_info const& info, std::uint16_t code, std::string_view reason);

    // Exported by /metrics (server.cpp's metrics_text), thread-safe: client messages a signal
    // route's command did not take (its stdin queue full, or not running), as
    // wsig_command_events_dropped_total; hooks dropped with max_pending_hooks already waiting, as
    // wsig_command_hooks_dropped_total; signal-route commands restarted, as wsig_command_restarts_total.
    std::uint64_t dropped_events() const noexcept { return dropped_events_.load(); }
    std::uint64_t dropped_hooks() const noexcept { return dropped_hooks_.load(); }
    std::uint64_t restarts() const noexcept { return restarts_.load(); }

private:
    struct route_runner;
    struct pending_hook {
        std::string command;
        std::string input;
        environment env;
    };

    void start_route(std::size_t index);
    void on_action(std::size_t index, std::string const& line, bool truncated);
    void run_hook(std::string const& command, connection_info const& info, std::string_view type, std::uint16_t code,
                  std::string_view reason);
    void launch_hooks();
    void arm_schedule(std::size_t index);
    void run_schedule(std::size_t index);
    void log(command_log level, std::string message) const;

    boost::asio::strand<boost::asio::any_io_executor> strand_;
    registry& registry_;
    broadcast_levels const& levels_;
    command_options options_;
    command_logger log_;
    std::vector<std::shared_ptr<route_runner>> routes_;
    std::deque<pending_hook> pending_hooks_;
    std::size_t running_hooks_ = 0;
    std::vector<std::unique_ptr<boost::asio::steady_timer>> schedule_timers_;
    std::vector<std::shared_ptr<child_process>> schedule_children_;
    std::vector<std::shared_ptr<child_process>> hook_children_;
    bool stopped_ = false;
    std::atomic<std::uint64_t> dropped_events_{0};
    std::atomic<std::uint64_t> dropped_hooks_{0};
    std::atomic<std::uint64_t> restarts_{0};
    std::atomic<std::size_t> running_{0};  // children alive plus hooks waiting
};

// One local-route process (--route PATH=NAME,scope=local,exec=CMD) bound to one connection: its
// stdout lines go to the client, the client's messages go to its stdin, and each ends the other.
// `slot` (a --max-processes reservation) is held until the process has been reaped.
class local_process : public std::enable_shared_from_this<local_process>, public local_route_target {
public:
    static result<std::shared_ptr<local_process>> start(boost::asio::any_io_executor const& executor,
                                                        std::string command, std::weak_ptr<connection> conn,
                                                        connection_info const& info, std::size_t max_queue,
                                                        std::size_t max_line, command_logger const& log,
                                                        std::shared_ptr<void> slot = {});
    void on_client_message(std::string_view text) override;  // thread-safe
    void on_client_gone();                                   // thread-safe; ends the process

    local_process(boost::asio::any_io_executor const& executor, std::weak_ptr<connection> conn, command_logger log);

private:
    boost::asio::strand<boost::asio::any_io_executor> strand_;
    std::weak_ptr<connection> conn_;
    command_logger log_;
    std::shared_ptr<child_process> child_;
    bool gone_ = false;
};

}  // namespace wsig::detail
