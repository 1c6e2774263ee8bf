// Where one client message goes: a local route's process, back to the sender (--echo, `direct`),
// a signal route's command, the demo's [date], or the recipients its envelope names. Every such
// decision is here; the session only hands each complete message over.
#pragma once

#include <wsig/envelope.hpp>
#include <wsig/registry.hpp>

#include <cstddef>
#include <string>
#include <string_view>

namespace wsig {

// What a WebSocket route is for: Pode signals, --echo (conformance suites), the /msg demo.
enum class session_kind { signal, echo, demo };

// The connection a message came from, as the router needs it (a server session implements it).
class message_source : public connection {
public:
    virtual connection_ptr self() = 0;  // this connection as the registry holds it
    // A warning about this connection's traffic (a bad envelope, a refused broadcast), through its
    // own log limiter: one client cannot flood the log. Thread-safe.
    virtual void warn(std::string message) = 0;
};

// A local route's process (exec=): every message of its connection goes to it as text, unparsed.
// commands/ implements it; the router knows no process.
class local_route_target {
public:
    virtual ~local_route_target() = default;
    virtual void on_client_message(std::string_view text) = 0;  // thread-safe
};

// The signal routes (--signal-route): messages on their paths go to a command, not to recipients.
class signal_route_target {
public:
    virtual ~signal_route_target() = default;
    virtual bool routes(std::string_view socket_path) const = 0;
    virtual void on_message(connection_ptr const& sender, std::string_view socket_path, envelope env) = 0;
};

// Why a message reached no one; the server words the warning (its log redacts IDs and cuts client
// strings) and logs it through the sender's limiter.
enum class unrouted { bad_envelope, refused, date_refused };
using unrouted_report = void (*)(message_source& from, unrouted why, std::string_view detail);

// The broadcasts of one read, corked: consecutive messages of one sender whose recipients are the
// same cached list (a whole Name) are framed back to back and sent once, as one block, so each
// recipient queues one entry (one reference, one iovec) instead of one per message. Order is kept:
// any other outcome of the router sends what was collected first, and so does flush(), which the
// session calls after each read. Only on the sender's thread.
class broadcast_batch {
public:
    // A batch is sent before it grows past `max_bytes`: the session passes a quarter of its
    // --send-queue (at most 64 KiB), so one block is never what pushes a client that keeps up
    // past its queue while a write of its is in flight.
    explicit broadcast_batch(std::size_t max_bytes) noexcept : max_bytes_(max_bytes) {}
    broadcast_batch(broadcast_batch const&) = delete;
    broadcast_batch& operator=(broadcast_batch const&) = delete;
    broadcast_batch(broadcast_batch&&) = delete;
    broadcast_batch& operator=(broadcast_batch&&) = delete;
    ~broadcast_batch() { flush(); }

    // `m` for `to`: joins the batch when `to` is its list, else the batch goes and `m` starts one.
    void add(recipients to, message_ptr const& m);
    // Sends what was collected.
    void flush();

private:
    std::size_t max_bytes_;
    std::size_t bytes_ = 0;  // of the frames collected
    recipients to_;
    message_ptr first_;   // the batch's only message, while it has one
    std::string frames_;  // their frames back to back, once it has two
    std::size_t count_ = 0;
};

class router {
public:
    router(registry const& reg, broadcast_levels const& levels, std::size_t max_json_depth, unrouted_report report)
        : reg_(reg), levels_(levels), max_json_depth_(max_json_depth), report_(report) {}

    // Before any message is routed (the server's commands start after its state is built).
    void attach(signal_route_target* signal_routes) noexcept { signal_routes_ = signal_routes; }

    // One complete client message on a socket of `kind` (`local`: its process, when it has one).
    // Thread-safe. Messages go out in the order of the calls for each recipient. With `batch`, a
    // broadcast may wait in it (until its flush) to go out together with the next ones.
    void route(message_source& from, session_kind kind, local_route_target* local, std::string_view data, bool binary,
               broadcast_batch* batch = nullptr) const;

private:
    void send_date(message_source& from) const;

    registry const& reg_;
    broadcast_levels const& levels_;
    std::size_t max_json_depth_;
    unrouted_report report_;
    signal_route_target* signal_routes_ = nullptr;
};

}  // namespace wsig
