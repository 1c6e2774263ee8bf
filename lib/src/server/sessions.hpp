// Private to the server: the per-connection sessions, templated on the transport (plain TCP or TLS).
// http_session reads requests and hands upgrades to ws_session; ws_session reads with Beast and
// writes its send queue (pre-framed messages) itself, through a write gate shared with Beast's
// writes (write_gate.hpp).
#pragma once

#include "net/epoll_socket.hpp"
#include "server/state.hpp"
#include "server/write_gate.hpp"

#include <wsig/message.hpp>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream_base.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace wsig::detail {

// net, beast, websocket and error_code: the aliases of write_gate.hpp.

// Quiet on the ways a connection is expected to end.
inline bool expected_ending(error_code const& ec) {
    return ec == net::error::operation_aborted || ec == websocket::error::closed ||
           ec == beast::http::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset ||
           ec == net::error::broken_pipe || ec == net::ssl::error::stream_truncated || ec == beast::error::timeout ||
           ec == net::error::not_connected || ec == net::error::bad_descriptor;
}

// The HTTP side of a plain connection (Beast's timeouts bound requests); a WebSocket takes its
// socket alone, with no timer behind every read (the session's own ping timer finds dead peers),
// out of Asio's reactor into its loop's epoll set (epoll_socket.hpp).
using plain_stream = beast::basic_stream<tcp, net::io_context::executor_type>;

template <class Stream>
constexpr bool is_tls_v = !std::is_same_v<Stream, plain_stream> && !std::is_same_v<Stream, epoll_socket>;

// What a WebSocket session runs on, made from its HTTP session's stream. A plain socket that
// cannot join the epoll set comes back closed: the session's first write fails and ends it.
inline epoll_socket to_ws_transport(event_loop& loop, plain_stream&& s) {
    error_code ec;
    int fd = std::move(s).release_socket().release(ec);
    return {loop, ec ? -1 : fd, ec};
}
template <class Tls>
Tls&& to_ws_transport(event_loop&, Tls&& s) {
    return std::forward<Tls>(s);
}
template <class Stream>
using ws_transport_t =
    std::remove_cvref_t<decltype(to_ws_transport(std::declval<event_loop&>(), std::declval<Stream>()))>;

// The TCP socket under a transport.
inline epoll_socket& tcp_socket(epoll_socket& s) noexcept {
    return s;
}
template <class Stream>
auto& tcp_socket(Stream& s) noexcept {
    return beast::get_lowest_layer(s).socket();
}

// Where a WebSocket session is in its life. Only on the session's loop; other threads see only
// `closing_` (sends refused), set when a close is asked for and at the end.
//
//    handshaking ──101 written──▶ open ──start_close──▶ closing ──Beast wrote our close──▶ close_sent
//         │                        │                                                      ▲
//         │                        └──Beast wrote its close frame (the peer closed first)─┘
//         └──(every state)──the read loop ended──▶ finished
//
//  state        data frames written          Beast writes         pings
//  handshaking  no (queued until open)       the 101              no
//  open         yes                          pong, ping           every --ping-interval
//  closing      what was queued before it,   the close frame      no new one
//               then nothing
//  close_sent   nothing (RFC 6455 5.5.1)     -                    no new one
//  finished     nothing                      -                    no; the timer is cancelled
//
// A close asked for (do_close: replaced, admin, shutdown, slow client, a command) is kept in
// `requested_close_` whatever the state: it starts the close frame once the state is open and no
// ping is in flight (Beast allows one ping or close at a time), and gives the close its code and
// the disconnect hook its reason.
enum class ws_state : std::uint8_t { handshaking, open, closing, close_sent, finished };

constexpr bool legal_transition(ws_state from, ws_state to) noexcept {
    using enum ws_state;
    switch (from) {
        case handshaking: return to == open || to == finished;
        case open: return to == closing || to == close_sent || to == finished;
        case closing: return to == close_sent || to == finished;
        case close_sent: return to == finished;
        case finished: return false;
    }
    return false;
}

template <class Stream>
class ws_session final : public live_session,
                         public gate_owner,
                         public flushable,
                         public std::enable_shared_from_this<ws_session<Stream>> {
public:
    ws_session(server_state& st, event_loop& loop, Stream&& stream, std::string leftover, upgrade_plan plan)
        : st_(st),
          loop_(loop),
          ws_(std::move(stream)),
          kind_(plan.kind),
          info_(std::move(plan.info)),
          ping_timer_(ws_.get_executor()),
          exec_(std::move(plan.exec)),
          process_slot_(std::move(plan.process_slot)) {
        ws_.next_layer().set_prefix(std::move(leftover));
    }

    ws_session(ws_session const&) = delete;  // pinned: shared, registered and watched by address
    ws_session& operator=(ws_session const&) = delete;
    ws_session(ws_session&&) = delete;
    ws_session& operator=(ws_session&&) = delete;

    ~ws_session() override {
        st_.reg.remove(*this);
        st_.remove_live(this);
        st_.release(reserved_ + receiving_bytes_);
        warnings_.summarize(st_.log, severity::warning, info_.remote);  // what its process logged after finish
    }

    // Registers the connection (before the 101 is written), then answers the handshake.
    void run(request req) {
        ws_.next_layer().set_owner(std::weak_ptr<gate_owner>(this->shared_from_this()));
        // ws_count was taken by plan_upgrade (the --max-connections reservation); finish() gives it back.
        st_.add_live(this->shared_from_this());
        if (kind_ != session_kind::echo) {
            if (auto old = st_.reg.add(this->shared_from_this())) old->close(1000, "replaced");
        }
        websocket::stream_base::timeout t{};
        t.handshake_timeout = std::chrono::seconds(10);   // bounds both the 101 write and a close handshake
        t.idle_timeout = websocket::stream_base::none();  // our own ping timer finds dead peers
        t.keep_alive_pings = false;
        ws_.set_option(t);
        ws_.read_message_max(kind_ == session_kind::echo ? st_.opts.echo_max_message_size : st_.opts.max_message_size);
        ws_.auto_fragment(false);
        auto info = info_;
        ws_.set_option(websocket::stream_base::decorator(
            [info](websocket::response_type& res) { add_signal_headers_to(res, info); }));
        ws_.control_callback([this](websocket::frame_type, beast::string_view) { activity_ = true; });
        req_ = std::move(req);
        ws_.async_accept(req_, beast::bind_front_handler(&ws_session::on_accept, this->shared_from_this()));
    }

    connection_info const& info() const noexcept override { return info_; }
    connection_ptr self() override { return this->shared_from_this(); }

    // Queues `m` for the end of the loop's round. Only what the client is behind counts against
    // --send-queue: the bytes the kernel refused of the write in flight, and what was queued since.
    // What a round queues for a client that keeps up is not held against it (a burst of small
    // messages for a fast reader): on its loop it is written as soon as it passes early_flush_bytes.
    send_status send(message_ptr const& m) override {
        auto const size = m->frame().size();
        std::size_t reserve = 0;
        bool mark = false, flush_here = false;
        {
            std::lock_guard lock(mutex_);
            auto& pending = gate().pending();
            if (closing_) {
                st_.stats.count_dropped(drop_cause::closing);
                return send_status::dropped_closing;
            }
            if (in_flight_ && refused_ + pending.bytes() + size > st_.opts.send_queue) {
                ++st_.stats.messages_dropped;
                st_.stats.count_dropped(drop_cause::backpressure);
                if (st_.opts.slow_client != slow_client_policy::drop)
                    drop_pending_and_close_locked(1008, "too slow", "send queue full", drop_cause::backpressure);
                return send_status::dropped_backpressure;
            }
            pending.push(m);
            queued_bytes_ += size;
            reserve = reserve_locked();
            flush_here = !in_flight_ && pending.bytes() >= early_flush_bytes && loop_.running_here();
            mark = !std::exchange(flush_scheduled_, true);
        }
        if (reserve) st_.hold(reserve);
        // Written at the end of the loop's round, together with whatever else arrives in it.
        if (mark) {
            if (loop_.running_here())
                loop_.mark_dirty(this->shared_from_this());
            else
                net::post(ws_.get_executor(), [self = this->shared_from_this()] { self->loop_.mark_dirty(self); });
        }
        if (flush_here) do_flush();
        return send_status::queued;
    }

    holding held() override {
        std::lock_guard lock(mutex_);
        return {queued_bytes_ + receiving_bytes_, closing_};
    }

    void shed() override {
        std::lock_guard lock(mutex_);
        if (closing_) return;
        drop_pending_and_close_locked(1008, "server memory budget", "memory budget", drop_cause::budget);
    }

    // flushable: the loop's end-of-round write.
    void flush_now() override {
        {
            std::lock_guard lock(mutex_);
            flush_scheduled_ = false;
        }
        do_flush();
    }

    void close(std::uint16_t code, std::string reason) override {
        {
            std::lock_guard lock(mutex_);
            closing_ = true;
        }
        net::post(ws_.get_executor(), [self = this->shared_from_this(), code, r = std::move(reason)]() mutable {
            self->do_close(code, r);
        });
    }

    void abort() override {
        net::post(ws_.get_executor(), [self = this->shared_from_this()] {
            error_code ignored;
            self->sock().close(ignored);
            self->ping_timer_.cancel();
        });
    }

    // gate_owner, all on the session's loop
    bool raw_pending() override {
        if (!data_allowed()) return false;
        std::lock_guard lock(mutex_);
        return !gate().pending().empty();
    }

    void beast_parked() override {
        auto& gate = this->gate();
        if (gate.raw_busy()) {
            // What was queued before this control frame goes after the write in flight, then the frame.
            std::lock_guard lock(mutex_);
            gate.flush_before_beast = !gate.pending().empty();
            return;
        }
        gate.flush_before_beast = false;
        if (!start_raw_write()) gate.run_parked();
    }

    void beast_write_done() override {
        // That write was a close frame (ours, or the answer to the peer's): nothing may follow it.
        if (data_allowed() && !ws_.is_open()) enter(ws_state::close_sent);
        do_flush();
    }

    // At exit, after the loop stopped: a parked Beast write or a read waiting for its socket holds
    // the session; let it go.
    void release_parked() override {
        gate().drop_parked();
        if constexpr (!is_tls_v<Stream>) sock().drop_waiting();
    }

    void warn(std::string message) override { warnings_.log(st_.log, severity::warning, info_.remote, message); }

private:
    auto& sock() noexcept { return tcp_socket(ws_.next_layer().next_layer()); }
    write_gate& gate() noexcept { return ws_.next_layer().gate(); }

    // The one place the state changes.
    void enter(ws_state next) noexcept {
        assert(legal_transition(state_, next));
        state_ = next;
    }
    // Data frames may be written: after the 101, before a close frame is on the wire.
    bool data_allowed() const noexcept { return state_ == ws_state::open || state_ == ws_state::closing; }

    // A round's queue is written before it grows past this, even before the round ends: 64 KiB is
    // what a loopback socket's send buffer takes at once, and the most the round can hold back.
    static constexpr std::size_t early_flush_bytes = std::size_t{64} * 1024;

    // Under mutex_: the memory budget (server_state::hold) covers the queue in whole blocks; the
    // blocks to add now. release_reserve_locked gives back what the drained queue no longer needs.
    std::size_t reserve_locked() {
        if (queued_bytes_ <= reserved_) return 0;
        auto const block = server_state::budget_block;
        auto const add = (queued_bytes_ - reserved_ + block - 1) / block * block;
        reserved_ += add;
        return add;
    }
    std::size_t release_reserve_locked() {
        auto const block = server_state::budget_block;
        auto const keep = (queued_bytes_ + block - 1) / block * block;
        if (keep >= reserved_) return 0;
        auto const give = reserved_ - keep;
        reserved_ = keep;
        return give;
    }

    // Under mutex_: what is not yet being written goes (counted as dropped, for `cause`); the close
    // follows what is in flight. Nothing is sent after it.
    void drop_pending_and_close_locked(std::uint16_t code, char const* reason, char const* why, drop_cause cause) {
        auto& pending = gate().pending();
        st_.stats.messages_dropped += pending.messages();
        st_.stats.count_dropped(cause, pending.messages());
        queued_bytes_ -= pending.bytes();
        pending.clear();
        if (auto give = release_reserve_locked()) st_.release(give);
        closing_ = true;
        net::post(ws_.get_executor(), [self = this->shared_from_this(), code, reason, why] {
            self->st_.log.log(severity::warning, fmt::format("closing slow client {} ({}): {}", self->info_.remote,
                                                             redact_id(self->info_.client_id), why));
            self->do_close(code, reason);
        });
    }

    // The buffer of a message still being received counts against the memory budget.
    void set_receiving(std::size_t bytes) {
        if (bytes == receiving_bytes_) return;  // written only on this thread: read here without the lock
        std::size_t before = 0;
        {
            std::lock_guard lock(mutex_);
            before = std::exchange(receiving_bytes_, bytes);
        }
        if (bytes > before)
            st_.hold(bytes - before);
        else if (before > bytes)
            st_.release(before - bytes);
    }

    void fail(error_code ec, char const* stage) {
        if (expected_ending(ec)) {
            st_.log.log(severity::debug,
                        fmt::format("{} {}: {} ({})", info_.remote, log_value(info_.path), stage, ec.message()));
            return;
        }
        warn(fmt::format("{} {}: {}: {}", info_.remote, log_value(info_.path), stage, ec.message()));
    }

    void on_accept(error_code ec) {
        if (ec) {
            fail(ec, "handshake");
            finish(1006);
            return;
        }
        enter(ws_state::open);
        req_ = {};
        st_.log.log(severity::debug,
                    fmt::format("connected {} name={} group={} clientId={}", info_.remote, log_value(info_.name),
                                log_value(info_.group), redact_id(info_.client_id)));
        if (kind_ != session_kind::echo && st_.commands) st_.commands->on_connect(info_);
        if (!exec_.empty()) {
            // A local route: this connection's own process; its exit closes the socket.
            // What it logs (a dropped message, its stderr lines: both may echo the client) counts
            // against this connection's limit; once the session is gone, the server's log takes it.
            command_logger log = [weak = this->weak_from_this(), plain = command_logger_for(st_)](command_log level,
                                                                                                  std::string message) {
                auto self = weak.lock();
                if (!self) return plain(level, std::move(message));
                self->warnings_.log(self->st_.log, to_severity(level), self->info_.remote, message);
            };
            auto p = local_process::start(ws_.get_executor(), exec_, this->weak_from_this(), info_, st_.opts.send_queue,
                                          st_.opts.max_message_size, log, std::move(process_slot_));
            if (!p) {
                st_.log.log(severity::error,
                            fmt::format("local route {}: {}", log_value(info_.path), p.error().message));
                do_close(1011, "handler failed to start");
            } else {
                local_ = std::move(*p);
            }
        }
        if (requested_close_) {
            start_close();
        } else {
            do_flush();
            arm_ping();
        }
        do_read();
    }

    // Piece by piece, at most 64 KiB a piece, so that the buffer of a message being received grows
    // only as its bytes arrive (a frame header announcing 16 MiB allocates nothing yet) and is
    // counted against the memory budget while it grows. A small message completes in one piece.
    void do_read() {
        constexpr std::size_t piece_limit = std::size_t{64} * 1024;
        ws_.async_read_some(buffer_, piece_limit,
                            beast::bind_front_handler(&ws_session::on_read, this->shared_from_this()));
    }

    void on_read(error_code ec, std::size_t n) {
        if (ec) {
            set_receiving(0);
            unsigned code = 1006;
            if (ec == websocket::error::closed)
                code = ws_.reason().code;
            else if (ec == websocket::error::message_too_big)
                code = 1009;
            else if (ec == websocket::error::bad_frame_payload)
                code = 1007;
            else if (ec.category() == websocket::make_error_code(websocket::error::bad_opcode).category())
                code = 1002;
            else if (requested_close_ && requested_close_->code)
                code = requested_close_->code;
            fail(ec, "read");
            finish(code);
            return;
        }
        activity_ = true;
        st_.stats.bytes_received += n;
        if (!ws_.is_message_done()) {
            if (requested_close_) buffer_.consume(buffer_.size());  // closing: the rest of it is not wanted
            set_receiving(buffer_.capacity());
            do_read();
            return;
        }
        set_receiving(0);
        ++st_.stats.messages_received;
        auto data = buffer_.cdata();
        std::string_view text(static_cast<char const*>(data.data()), data.size());
        st_.router.route(*this, kind_, local_.get(), text, !ws_.got_text());
        buffer_.consume(buffer_.size());
        // Bounded memory: a big message must not pin its buffer for the life of an idle connection.
        if (buffer_.capacity() > std::size_t{64} * 1024) buffer_.shrink_to_fit();
        do_read();
    }

    // The read loop is over: the connection leaves the registry and stops its timer.
    void finish(unsigned code) {
        if (state_ == ws_state::finished) return;
        bool const was_open = state_ != ws_state::handshaking;
        enter(ws_state::finished);
        {
            std::lock_guard lock(mutex_);
            closing_ = true;
        }
        st_.stats.count_close(code);
        ping_timer_.cancel();
        st_.reg.remove(*this);
        if (local_) local_->on_client_gone();
        // Before ws_count drops: a shutdown waits for the hooks it starts.
        if (was_open && kind_ != session_kind::echo && st_.commands) {
            // Ours when we asked for a close with a reason, else what the peer's close frame said.
            auto const& why =
                requested_close_ && !requested_close_->reason.empty() ? requested_close_->reason : ws_.reason().reason;
            st_.commands->on_disconnect(info_, static_cast<std::uint16_t>(code), std::string(why.data(), why.size()));
        }
        --st_.ws_count;
        warnings_.summarize(st_.log, severity::warning, info_.remote);
        st_.log.log(severity::debug, fmt::format("disconnected {} name={} clientId={} code={}", info_.remote,
                                                 log_value(info_.name), redact_id(info_.client_id), code));
    }

    // Takes everything queued and writes it in one gathered write: on plain TCP first as one
    // non-blocking sendmsg (the kernel buffer almost always has room), and only what is left
    // through async_write. True when an asynchronous write is now in flight.
    bool start_raw_write() {
        auto& gate = this->gate();
        if (!data_allowed()) return false;
        {
            std::lock_guard lock(mutex_);
            if (gate.pending().empty()) return false;
            gate.take_pending();
        }
        auto const* buffers = &gate.gather();
        std::size_t const total = gate.writing().bytes();
        if constexpr (!is_tls_v<Stream>) {
            error_code ec;
            auto n = sock().write_some(*buffers, ec);
            if (ec == net::error::would_block || ec == net::error::try_again) {
                n = 0;
                ec = {};
            }
            if (ec || n == total) {
                complete_write(ec);
                return false;
            }
            {
                std::lock_guard lock(mutex_);
                in_flight_ = true;
                refused_ = total - n;
            }
            buffers = &gate.skip(n);  // what the kernel took; the rest goes asynchronously
        } else {
            // TLS writes are asynchronous: what the kernel refused is not known, so only what is
            // queued behind the write in flight counts against --send-queue.
            std::lock_guard lock(mutex_);
            in_flight_ = true;
            refused_ = 0;
        }
        gate.raw_started();
        net::async_write(ws_.next_layer().next_layer(), *buffers,
                         beast::bind_front_handler(&ws_session::on_raw_write, this->shared_from_this()));
        return true;
    }

    // The frames of the write in flight are done with (written or failed): release them and account.
    void complete_write(error_code ec) {
        auto& gate = this->gate();
        auto const bytes = gate.writing().bytes();
        auto const count = gate.writing().messages();
        gate.release_writing();  // the frames are released only now that the socket is done with them
        std::size_t give = 0;
        {
            std::lock_guard lock(mutex_);
            queued_bytes_ -= bytes;
            in_flight_ = false;
            refused_ = 0;
            give = release_reserve_locked();
            gate.recycle_spare();
        }
        if (give) st_.release(give);
        if (ec) {
            fail(ec, "write");
            error_code ignored;
            sock().close(ignored);
            return;
        }
        st_.stats.messages_sent += count;
        st_.stats.bytes_sent += bytes;
    }

    void do_flush() {
        auto& gate = this->gate();
        if (state_ == ws_state::handshaking || state_ == ws_state::finished) return;
        if (gate.raw_busy() || gate.beast_busy()) return;
        if (gate.has_parked()) {
            gate.run_parked();
            return;
        }
        if (!ws_.is_open()) return;  // after Beast starts a close, no data may follow it
        start_raw_write();
    }

    void on_raw_write(error_code ec, std::size_t) {
        auto& gate = this->gate();
        gate.raw_finished();
        complete_write(ec);
        if (ec) {
            if (gate.has_parked()) gate.run_parked();
            return;
        }
        if (gate.has_parked()) {
            if (gate.flush_before_beast) {
                gate.flush_before_beast = false;
                if (start_raw_write()) return;
            }
            gate.run_parked();
            return;
        }
        do_flush();
    }

    void do_close(std::uint16_t code, std::string const& reason) {
        if (requested_close_ || state_ == ws_state::finished) return;
        requested_close_.emplace(code);
        requested_close_->reason = reason;  // the server's own words, within the 123 bytes a close frame holds
        // A closing connection is no longer addressable (and no longer listed).
        if (kind_ != session_kind::echo) st_.reg.remove(*this);
        if (state_ != ws_state::handshaking) start_close();  // else on_accept starts it
    }

    void start_close() {
        if (state_ != ws_state::open || !ws_.is_open()) return;
        if (ping_in_flight_) return;  // on_ping starts it: Beast allows one ping/close at a time
        enter(ws_state::closing);
        ping_timer_.cancel();
        ws_.async_close(*requested_close_, [self = this->shared_from_this()](error_code ec) {
            if (ec) self->fail(ec, "close");
        });
    }

    void arm_ping() {
        if (st_.opts.ping_interval.count() <= 0) return;
        ping_timer_.expires_after(st_.opts.ping_interval);
        ping_timer_.async_wait(beast::bind_front_handler(&ws_session::on_ping_timer, this->shared_from_this()));
    }

    void on_ping_timer(error_code ec) {
        if (ec || state_ == ws_state::finished || requested_close_) return;
        missed_ = activity_ ? 0 : missed_ + 1;
        activity_ = false;
        if (missed_ >= 2) {
            st_.log.log(severity::info,
                        fmt::format("closing {} ({}): missed two pongs", info_.remote, redact_id(info_.client_id)));
            error_code ignored;
            sock().close(ignored);
            return;
        }
        if (!ping_in_flight_ && ws_.is_open()) {
            ping_in_flight_ = true;
            ws_.async_ping({}, [self = this->shared_from_this()](error_code e) {
                self->ping_in_flight_ = false;
                if (e) self->fail(e, "ping");
                if (self->requested_close_) self->start_close();
            });
        }
        arm_ping();
    }

    server_state& st_;
    event_loop& loop_;
    websocket::stream<gate_stream<Stream>> ws_;  // its next layer holds the write gate
    session_kind kind_;
    connection_info info_;
    request req_;
    beast::flat_buffer buffer_;
    net::steady_timer ping_timer_;

    // Shared with other threads (send/close), under mutex_, with the gate's pending queue.
    std::mutex mutex_;
    std::size_t queued_bytes_ = 0;     // pending plus in flight
    std::size_t reserved_ = 0;         // of the memory budget, for queued_bytes_ (whole blocks)
    std::size_t receiving_bytes_ = 0;  // of a message not yet complete, also in the budget
    std::size_t refused_ = 0;          // of the write in flight, what the kernel did not take at once
    bool in_flight_ = false;           // an asynchronous write is in flight
    bool flush_scheduled_ = false;     // marked dirty on the loop (or on its way there)
    bool closing_ = false;             // no more sends accepted: a close asked for, or finished

    // Only on the session's loop.
    ws_state state_ = ws_state::handshaking;
    std::optional<websocket::close_reason> requested_close_;  // the close do_close asked for, if any
    std::string exec_;                                        // a local route's command
    std::shared_ptr<void> process_slot_;    // its --max-processes slot, handed to the process at start
    log_limiter warnings_;                  // this connection's per-message warnings (warn) and its process's lines
    std::shared_ptr<local_process> local_;  // its process, while the connection lives
    bool ping_in_flight_ = false;           // Beast allows one ping or close at a time
    bool activity_ = false;                 // a frame arrived since the last ping tick
    int missed_ = 0;                        // ping ticks in a row without activity
};

// A response body read from a file_part as the serializer asks for it, one chunk at a time: a
// response holds one chunk of memory whatever the file's size, and each chunk is one pread (from the
// page cache, a few microseconds) between two socket writes, so the loop runs other work in between.
struct file_part_body {
    using value_type = file_part;
    // 64 KiB: fewer syscalls than Beast's file_body's 4 KiB, and still small beside a socket's buffer
    static constexpr std::size_t chunk_size = std::size_t{64} * 1024;

    static std::uint64_t size(value_type const& part) { return part.length; }

    class writer {
    public:
        using const_buffers_type = net::const_buffer;

        template <bool isRequest, class Fields>
        writer(beast::http::header<isRequest, Fields>&, value_type& part)
            : part_(part), offset_(part.offset), remain_(part.length) {}

        static void init(error_code& ec) { ec = {}; }

        boost::optional<std::pair<const_buffers_type, bool>> get(error_code& ec) {
            ec = {};
            if (remain_ == 0) return boost::none;
            if (!buffer_) buffer_ = std::make_unique<char[]>(chunk_size);
            auto want = static_cast<std::size_t>(std::min<std::uint64_t>(remain_, chunk_size));
            ssize_t n = 0;
            do n = ::pread(part_.fd.get(), buffer_.get(), want, static_cast<off_t>(offset_));
            while (n < 0 && errno == EINTR);
            if (n < 0) {
                ec.assign(errno, boost::system::system_category());
                return boost::none;
            }
            if (n == 0) {  // the file shrank after its length was sent: end the connection
                ec = beast::http::error::short_read;
                return boost::none;
            }
            offset_ += static_cast<std::uint64_t>(n);
            remain_ -= static_cast<std::uint64_t>(n);
            return {{const_buffers_type(buffer_.get(), static_cast<std::size_t>(n)), remain_ > 0}};
        }

    private:
        value_type& part_;
        std::uint64_t offset_, remain_;
        std::unique_ptr<char[]> buffer_;  // allocated at the first chunk: a HEAD-like empty part costs none
    };
};

template <class Stream>
class http_session : public std::enable_shared_from_this<http_session<Stream>> {
public:
    template <class... Args>
    http_session(server_state& st, event_loop& loop, tcp::endpoint remote, Args&&... args)
        : st_(st), loop_(loop), remote_(std::move(remote)), stream_(std::forward<Args>(args)...) {}

    void run() {
        net::dispatch(stream_.get_executor(), [self = this->shared_from_this()] { self->start(); });
    }

private:
    auto& lowest() { return beast::get_lowest_layer(stream_); }

    void start() {
        if constexpr (is_tls_v<Stream>) {
            lowest().expires_after(std::chrono::seconds(10));
            stream_.async_handshake(net::ssl::stream_base::server,
                                    beast::bind_front_handler(&http_session::on_handshake, this->shared_from_this()));
        } else {
            do_read();
        }
    }

    void on_handshake(error_code ec) {
        if (ec) return fail(ec, "tls handshake");
        do_read();
    }

    void fail(error_code ec, char const* stage) {
        if (expected_ending(ec) || ec == beast::http::error::end_of_stream) {
            st_.log.log(severity::debug, fmt::format("http {}: {}: {}", peer(), stage, ec.message()));
            return;
        }
        st_.log.log(severity::info, fmt::format("http {}: {}: {}", peer(), stage, ec.message()));
    }

    std::string peer() const { return fmt::format("{}:{}", peer_ip(remote_), remote_.port()); }

    void do_read() {
        if (st_.stopping) return do_shutdown();
        parser_.emplace();
        parser_->body_limit(st_.opts.max_body_size);
        parser_->header_limit(16 * 1024);                  // 16 KiB of headers is plenty; bounded memory
        lowest().expires_after(std::chrono::seconds(30));  // idle keep-alive and slow-loris bound
        beast::http::async_read(stream_, buffer_, *parser_,
                                beast::bind_front_handler(&http_session::on_read, this->shared_from_this()));
    }

    void on_read(error_code ec, std::size_t) {
        if (ec == beast::http::error::end_of_stream) return do_shutdown();
        if (ec == beast::http::error::body_limit) {
            request r;
            r.version(11);
            return write(make_response(r, beast::http::status::payload_too_large, "request body too large\n"), true);
        }
        if (ec) {
            fail(ec, "read");
            if (ec.category() == beast::http::make_error_code(beast::http::error::bad_target).category()) {
                request r;
                r.version(11);
                return write(make_response(r, beast::http::status::bad_request, "malformed HTTP request\n"), true);
            }
            return;
        }
        auto req = parser_->release();
        parser_.reset();
        if (wants_upgrade(req)) {
            auto plan = plan_upgrade(st_, req, remote_);
            if (auto* res = std::get_if<response>(&plan)) {
                strip_for_head(req, *res);
                return write(std::move(*res), true);
            }
            lowest().expires_never();
            std::string leftover(static_cast<char const*>(buffer_.cdata().data()), buffer_.size());
            std::make_shared<ws_session<ws_transport_t<Stream>>>(st_, loop_, to_ws_transport(loop_, std::move(stream_)),
                                                                 std::move(leftover),
                                                                 std::move(std::get<upgrade_plan>(plan)))
                ->run(std::move(req));
            return;
        }
        auto reply = handle_http(st_, req, remote_);
        if (reply.file) return write_file(std::move(reply.res), std::move(*reply.file));
        write(std::move(reply.res), false);
    }

    void write(response res, bool close_after) {
        if (close_after) res.keep_alive(false);
        res_.emplace(std::move(res));  // complete: make_response and handle_http set its length
        lowest().expires_after(std::chrono::seconds(30));
        beast::http::async_write(stream_, *res_,
                                 beast::bind_front_handler(&http_session::on_write, this->shared_from_this()));
    }

    void on_write(error_code ec, std::size_t) {
        if (ec) return fail(ec, "write");
        bool close = res_->need_eof();
        res_.reset();
        if (close) return do_shutdown();
        do_read();
    }

    // A file's response: its header (complete, with the length) and the file, one chunk per write.
    // Each write has its own 30 s bound, so a slow reader of a big file is cut off only when it stops
    // reading, not after 30 s of download.
    void write_file(response head, file_part body) {
        file_res_ = std::make_unique<file_response>(std::move(head), std::move(body));
        do_write_file();
    }

    void do_write_file() {
        lowest().expires_after(std::chrono::seconds(30));
        beast::http::async_write_some(
            stream_, file_res_->serializer,
            beast::bind_front_handler(&http_session::on_write_file, this->shared_from_this()));
    }

    void on_write_file(error_code ec, std::size_t) {
        if (ec) return fail(ec, "write");
        if (!file_res_->serializer.is_done()) return do_write_file();
        bool close = file_res_->message.need_eof();
        file_res_.reset();  // closes the file
        if (close) return do_shutdown();
        do_read();
    }

    void do_shutdown() {
        if constexpr (is_tls_v<Stream>) {
            lowest().expires_after(std::chrono::seconds(5));
            stream_.async_shutdown([self = this->shared_from_this()](error_code) {
                error_code ignored;
                self->lowest().socket().close(ignored);
            });
        } else {
            error_code ignored;
            stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
        }
    }

    server_state& st_;
    event_loop& loop_;
    tcp::endpoint remote_;
    Stream stream_;
    beast::flat_buffer buffer_;
    std::optional<beast::http::request_parser<beast::http::string_body>> parser_;
    std::optional<response> res_;
    // The serializer refers to the message: both live in one allocation that does not move.
    struct file_response {
        beast::http::response<file_part_body> message;
        beast::http::serializer<false, file_part_body> serializer{message};
        file_response(response head, file_part body) : message(std::move(head.base()), std::move(body)) {}
    };
    std::unique_ptr<file_response> file_res_;  // only while a file is being written
};

}  // namespace wsig::detail
