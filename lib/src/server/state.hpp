// Private to the server: shared state, logging, metrics and the transport-independent request logic
// that the templated sessions (sessions.hpp) call.
#pragma once

#include "commands/external_commands.hpp"
#include "net/event_loop.hpp"
#include "server/static_files.hpp"
#include "signal/router.hpp"

#include <wsig/registry.hpp>
#include <wsig/server.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace boost::asio::ssl {
class context;
}

namespace wsig::detail {

namespace http = boost::beast::http;
using request = http::request<http::string_body>;
using response = http::response<http::string_body>;
using tcp = boost::asio::ip::tcp;
// Sockets belong to one event loop's io_context: a concrete executor, not a type-erased one.
using socket_type = boost::asio::basic_stream_socket<tcp, boost::asio::io_context::executor_type>;

enum class severity { debug, info, warning, error };

class logger {
public:
    logger(log_format f, log_level l) : format_(f), level_(l) {}
    bool enabled(severity s) const noexcept;
    void log(severity s, std::string_view message) const;

private:
    log_format format_;
    log_level level_;
    mutable std::mutex mutex_;
};

// A signed or long client ID shortened for a log line: never log a full signed ID.
std::string redact_id(std::string_view id);

// A client-chosen string (a Name, group, Origin, Host, path) as a log line shows it: at most
// max_log_value bytes, cut at a character boundary, with "..." and its full length. A 16 KiB Name
// repeated in every warning of one connection filled 30 MB of log for 2,000 bad frames.
inline constexpr std::size_t max_log_value = 128;
std::string log_value(std::string_view value);

// Bounds the lines one source writes (a connection's per-message warnings, the refusals of one
// policy): at most `burst` lines per `window`, then one "N more ... suppressed" line when the source
// logs again after the window, or at its end (summarize). Thread-safe.
class log_limiter {
public:
    // 10 lines a second: enough to see what a client does wrong, too few to flood a disk
    // (lines are short once client strings are cut: about 10 KiB/s per source at most).
    static constexpr unsigned default_burst = 10;
    static constexpr std::chrono::milliseconds default_window{1000};

    explicit log_limiter(unsigned burst = default_burst, std::chrono::milliseconds window = default_window)
        : burst_(burst), window_(window) {}

    // Logs `message` unless this window's lines are spent; `who` names the source in the summary.
    void log(logger const& log, severity s, std::string_view who, std::string_view message);
    // The summary of what is still suppressed, if anything (a connection's end).
    void summarize(logger const& log, severity s, std::string_view who);

private:
    unsigned const burst_;
    std::chrono::milliseconds const window_;
    std::mutex mutex_;
    std::chrono::steady_clock::time_point window_start_{};
    unsigned lines_ = 0;            // written in this window
    std::uint64_t suppressed_ = 0;  // not written since the last summary
};

// Why a message meant for a client was not written (wsig_send_dropped_total{cause=...}).
enum class drop_cause : std::uint8_t {
    backpressure,  // refused by a full --send-queue, or queued and dropped by --slow-client close
    budget,        // queued, and dropped when --max-queued-total shed the connection
    closing,       // refused: the connection was closing
};
inline constexpr std::array<std::pair<drop_cause, char const*>, 3> drop_causes{
    {{drop_cause::backpressure, "backpressure"}, {drop_cause::budget, "budget"}, {drop_cause::closing, "closing"}}};

struct metrics {
    // messages_dropped is backpressure plus budget (the drops of the slow-client policy and budget);
    // a send to a closing connection was never counted there.
    std::atomic<std::uint64_t> messages_received{0}, messages_sent{0}, bytes_received{0}, bytes_sent{0},
        messages_dropped{0}, budget_closes{0};
    std::array<std::atomic<std::uint64_t>, drop_causes.size()> send_dropped{};  // by drop_cause

    void count_dropped(drop_cause cause, std::uint64_t n = 1) noexcept {
        send_dropped[static_cast<std::size_t>(cause)].fetch_add(n, std::memory_order_relaxed);
    }
    std::mutex mutex;
    std::map<unsigned, std::uint64_t> closes;         // close code -> count
    std::map<unsigned, std::uint64_t> push_requests;  // HTTP status -> count

    void count_close(unsigned code) {
        std::lock_guard lock(mutex);
        ++closes[code];
    }
    void count_push(unsigned status) {
        std::lock_guard lock(mutex);
        ++push_requests[status];
    }
};

using wsig::session_kind;

// What a live WebSocket session offers beyond the registry's interface: a hard stop for shutdown,
// and what the memory budget needs to know of it.
class live_session : public message_source {
public:
    virtual void abort() = 0;  // thread-safe: closes the socket now

    struct holding {
        std::size_t bytes = 0;   // its send queue (queued and in flight) and the message it is receiving
        bool releasing = false;  // closing: what it holds goes soon, whatever happens
    };
    virtual holding held() = 0;  // thread-safe
    // Thread-safe: drops what it has queued and closes with 1008, to bring the memory budget back.
    virtual void shed() = 0;
    // This session as shared, or null once its last owner let go (it is being destroyed).
    virtual std::shared_ptr<live_session> shared_live() = 0;

private:
    friend struct server_state;
    live_session* live_prev_ = nullptr;  // the server's list of live sessions (server_state::live),
    live_session* live_next_ = nullptr;  // through the sessions themselves: nothing allocated per one
};

// The router's warning for a message that reached no one, logged through the sender's limiter.
void report_unrouted(message_source& from, unrouted why, std::string_view detail);

struct server_state {
    server_options opts;
    logger log;
    registry reg;
    metrics stats;
    std::atomic<std::size_t> ws_count{0};
    unsigned loops = 1;  // event loops (threads): with one, every session call is on its thread
    // Live local-route processes (--max-processes): taken in plan_upgrade, given back once reaped.
    std::atomic<std::size_t> process_count{0};
    bool loopback_bound = false;  // the listener's address is loopback (set before it accepts)
    // Refusals by the connection policy (--max-processes, Host, Origin, client IDs): bounded like
    // a connection's warnings, since a hostile client can repeat them at will.
    log_limiter policy_log;
    std::atomic<bool> stopping{false};
    // Signal routes, hooks and schedules; null when none is configured.
    std::shared_ptr<external_commands> commands;
    wsig::router router;  // where each client message goes

    std::mutex live_mutex;
    live_session* live = nullptr;  // the first of the live sessions (each removes itself as it dies)

    // The memory budget (--max-queued-total): bytes held for all sessions together. A session
    // reserves it in blocks (budget_block) as its queue grows and gives it back as it drains, so a
    // small broadcast costs one atomic update per recipient and round, not one per frame.
    static constexpr std::size_t budget_block = 4096;
    std::atomic<std::uint64_t> held_bytes{0};
    std::mutex budget_mutex;  // one shedding at a time, and guards:
    std::chrono::steady_clock::time_point next_budget_pass{};
    // Adds `n` to what is held; past the budget the sessions holding the most are shed.
    void hold(std::size_t n) {
        if (held_bytes.fetch_add(n, std::memory_order_relaxed) + n > opts.max_queued_total) enforce_budget();
    }
    void release(std::size_t n) { held_bytes.fetch_sub(n, std::memory_order_relaxed); }
    void enforce_budget();

    std::filesystem::path static_root;  // canonical --static directory

    explicit server_state(server_options o)
        : opts(std::move(o)),
          log(opts.log_format, opts.log_level),
          router(reg, opts.levels, opts.max_json_depth, report_unrouted) {}

    void add_live(live_session& s);
    void remove_live(live_session& s);
    std::vector<std::shared_ptr<live_session>> live_sessions();
};

// The outcome of an upgrade request: a session to start, or the HTTP response refusing it.
struct upgrade_plan {
    session_kind kind;
    connection_info info;
    std::string exec = {};  // a local route's command, run for this connection
    // A local route's --max-processes slot: held until its process is reaped (null otherwise).
    std::shared_ptr<void> process_slot = {};
};
std::variant<upgrade_plan, response> plan_upgrade(server_state& st, request const& req, tcp::endpoint const& remote);

// A request target in origin form ("/path?query"). The absolute form a client may send
// ("http://host:port/path?query", RFC 9112 section 3.2.2) means the same; its empty path is "/".
std::string origin_form(std::string_view target);

// True when the request asks for a WebSocket (an Upgrade: websocket or a Sec-WebSocket-Key).
bool wants_upgrade(request const& req);

// The 101 that accepts `req` (whose upgrade plan_upgrade allowed): Upgrade, Connection,
// Sec-WebSocket-Accept, X-Pode-Signal-Client-Id, -Name, -Group when set (Pode's order and casing),
// then Server. Echo sockets are not signal connections: no X-Pode-Signal headers.
std::string switching_protocols(request const& req, connection_info const& info);

// What handle_http answers: a complete response, or (a file under --static) a response whose
// header is complete and whose body is `file`, which the session streams (never read whole).
struct http_reply {
    response res;
    std::optional<file_part> file = {};

    http_reply(response r) : res(std::move(r)) {}  // implicit: most answers are a plain response
    http_reply(response head, file_part body) : res(std::move(head)), file(std::move(body)) {}
};

// Every HTTP request that is not an upgrade. The response is complete: its Content-Length is set,
// and an answer to HEAD has the length a GET would give and no body (nor a file to stream).
http_reply handle_http(server_state& st, request const& req, tcp::endpoint const& remote);

// A response to HEAD keeps its Content-Length and loses its body (a keep-alive client would read the
// body as the next response).
void strip_for_head(request const& req, response& res);

// A simple response with the request's version and keep-alive.
response make_response(request const& req, http::status status, std::string body,
                       std::string_view content_type = "text/plain; charset=utf-8");

// Start a session on an accepted socket (plain.cpp, tls.cpp).
void start_plain_session(server_state& st, event_loop& loop, socket_type socket);
void start_tls_session(server_state& st, event_loop& loop, boost::asio::ssl::context& ctx, socket_type socket);

// The server's log as the external commands' logger, and their levels as its severities.
command_logger command_logger_for(server_state& st);
severity to_severity(command_log level) noexcept;

// Peer "ip" as Pode sees it (v4-mapped addresses shown as v4).
std::string peer_ip(tcp::endpoint const& ep);

}  // namespace wsig::detail
