// Private to the server: one WebSocket connection after its 101, on wsig's own RFC 6455 frame layer
// (wire/frame_reader.hpp to read, pre-framed messages to write). Templated on the transport:
//
//   plain_tcp   the session holds the descriptor itself, in its loop's edge-triggered epoll set:
//               an edge reads with recv() into the loop's scratch buffer, which the frame reader
//               parses in place; writes are a non-blocking sendmsg of everything queued, the rest
//               on the next EPOLLOUT edge. No Asio object, no buffer and no timer of its own.
//   a TLS stream  Asio's ssl::stream: reads into a buffer of the session, writes with async_write.
//
// Everything the session writes goes through one outbox in order: the 101, data frames, pongs,
// pings and the close frame, so a control frame never lands inside a data frame and "echo, then
// close" keeps its order. Deadlines (the 101, pings, the close handshake, the drain) are checked
// by the loop's one sweep (loop_member), not by a timer per connection.
#pragma once

#include "net/event_loop.hpp"
#include "server/send_queue.hpp"
#include "server/state.hpp"
#include "wire/frame.hpp"
#include "wire/frame_reader.hpp"

#include <wsig/message.hpp>

#include <boost/asio/buffer.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/stream_traits.hpp>

#include <fmt/format.h>

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace wsig::detail {

namespace net = boost::asio;
namespace beast = boost::beast;
using error_code = boost::system::error_code;

// Quiet on the ways a connection is expected to end.
inline bool expected_socket_ending(error_code const& ec) {
    return ec == net::error::operation_aborted || ec == net::error::eof || ec == net::error::connection_reset ||
           ec == net::error::broken_pipe || ec == net::ssl::error::stream_truncated ||
           ec == net::error::not_connected || ec == net::error::bad_descriptor || ec == net::error::timed_out;
}

// A session's lock: a mutex when the server runs more than one loop (a send may come from another
// thread); with one loop every call is on its thread, and locking would only cost (four lock pairs
// per recipient and round were a sixth of a fan-out's user time).
class session_mutex {
public:
    explicit session_mutex(bool shared) noexcept : shared_(shared) {}
    void lock() {
        if (shared_) mutex_.lock();
    }
    void unlock() {
        if (shared_) mutex_.unlock();
    }

private:
    bool const shared_;  // first: the one field a single loop reads
    std::mutex mutex_;
};

// The transport of a plain WebSocket: its descriptor, taken out of Asio.
struct plain_tcp {
    int fd = -1;
};

// Where a WebSocket session is in its life. Only on the session's loop; other threads see only
// `closing_` (sends refused), set when a close is asked for and at the end.
//
//    handshaking ──101 written──▶ open ──close queued──▶ closing ──written──▶ close_sent ──peer's close──▶ draining
//         │                        │                       │ (the peer closed first, or we failed it)       ▲
//         │                        │                       └──────────────written─────────────────────────────┘
//         └──(every state)──the socket ended (EOF, an error, a deadline)──▶ finished ◀──EOF or deadline── draining
//
//  state        data frames written          control frames        deadline (the loop's sweep)
//  handshaking  no (queued behind the 101)   -                     10 s for the 101
//  open         yes                          pong, ping            the next ping (--ping-interval)
//  closing      what was queued before the   the close frame       10 s for the peer's close
//               close, then nothing
//  close_sent   nothing (RFC 6455 5.5.1)     -                     the same 10 s
//  draining     nothing; our end is shut,    -                     5 s (and 64 MiB) to read the peer's end
//               what arrives is dropped
//  finished     nothing                      -                     -
enum class ws_state : std::uint8_t { handshaking, open, closing, close_sent, draining, finished };

constexpr bool legal_transition(ws_state from, ws_state to) noexcept {
    using enum ws_state;
    switch (from) {
        case handshaking: return to == open || to == finished;
        case open: return to == closing || to == finished;
        case closing: return to == close_sent || to == draining || to == finished;
        case close_sent: return to == draining || to == finished;
        case draining: return to == finished;
        case finished: return false;
    }
    return false;
}

template <class Transport>
class ws_session final : public live_session,
                         public loop_member,
                         public wire::frame_handler,
                         public std::enable_shared_from_this<ws_session<Transport>> {
    static constexpr bool tls = !std::is_same_v<Transport, plain_tcp>;
    using clock = std::chrono::steady_clock;

public:
    ws_session(server_state& st, event_loop& loop, Transport&& transport, upgrade_plan plan)
        : st_(st),
          loop_(loop),
          io_(std::move(transport)),
          info_(std::move(plan.info)),
          reader_(wire::reader_role::server,
                  plan.kind == session_kind::echo ? st.opts.echo_max_message_size : st.opts.max_message_size),
          kind_(plan.kind) {
        if (!plan.exec.empty()) {
            auto& x = rare();
            x.exec = std::move(plan.exec);
            x.process_slot = std::move(plan.process_slot);
        }
    }

    ws_session(ws_session const&) = delete;  // pinned: shared, registered and watched by address
    ws_session& operator=(ws_session const&) = delete;
    ws_session(ws_session&&) = delete;
    ws_session& operator=(ws_session&&) = delete;

    ~ws_session() override {
        st_.reg.remove(*this);
        st_.remove_live(*this);
        st_.release(reserved_ + receiving_bytes_);
        if constexpr (!tls) {
            if (io_.fd >= 0) ::close(io_.fd);  // at exit only: a session that finished closed it
        }
        if (warnings_) warnings_->summarize(st_.log, severity::warning, info_.remote);
    }

    // On the loop: registers the connection (before the 101 is written), joins the loop and writes
    // the 101 (`handshake`); `leftover` is what the client sent after its request in the same read.
    void run(std::string handshake, std::string_view leftover) {
        auto self = this->shared_from_this();
        st_.add_live(*this);
        // ws_count was taken by plan_upgrade (the --max-connections reservation); finish() gives it back.
        if (kind_ != session_kind::echo) {
            if (auto old = st_.reg.add(self)) old->close(1000, "replaced");
        }
        loop_.join(self);
        deadline_ = clock::now() + handshake_timeout;
        if constexpr (!tls) {
            error_code ec;
            loop_.watch(io_.fd, this, ec);
            if (ec) {
                fail_socket(ec, "watch");
                return;
            }
        }
        if (!leftover.empty()) rare().leftover = std::string(leftover);
        if constexpr (!tls) {
            // Written at once (a fresh socket's buffer has room): no outbox is made for it, so an
            // idle connection never had one, and left no hole in the heap where it was.
            ssize_t n = 0;
            do n = ::send(io_.fd, handshake.data(), handshake.size(), MSG_NOSIGNAL);
            while (n < 0 && errno == EINTR);
            if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
                return fail_socket(error_code(errno, boost::system::system_category()), "101");
            if (static_cast<std::size_t>(std::max<ssize_t>(n, 0)) == handshake.size()) return on_open();
            handshake.erase(0, static_cast<std::size_t>(std::max<ssize_t>(n, 0)));  // the rest goes through the outbox
        }
        queue_control(outgoing_message::frames(std::move(handshake), 0));
        do_flush();
    }

    connection_info const& info() const noexcept override { return info_; }
    connection_ptr self() override { return this->shared_from_this(); }
    std::shared_ptr<live_session> shared_live() override { return this->weak_from_this().lock(); }

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
            if (closing_) {
                st_.stats.count_dropped(drop_cause::closing, m->messages());
                return send_status::dropped_closing;
            }
            auto const pending = out_ ? out_->pending.bytes() : 0;
            if (in_flight_ && refused_ + pending + size > st_.opts.send_queue) {
                st_.stats.messages_dropped += m->messages();
                st_.stats.count_dropped(drop_cause::backpressure, m->messages());
                if (st_.opts.slow_client != slow_client_policy::drop)
                    drop_pending_and_close_locked(1008, "too slow", "send queue full", drop_cause::backpressure);
                return send_status::dropped_backpressure;
            }
            reserve = push_locked(m);
            flush_here = !in_flight_ && out_->pending.bytes() >= early_flush_bytes && loop_.running_here();
            mark = !std::exchange(flush_scheduled_, true);
        }
        if (reserve) st_.hold(reserve);
        if (mark) schedule_flush();
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

    // loop_member: the loop's end-of-round write.
    void flush_now() override { do_flush(); }

    void close(std::uint16_t code, std::string reason) override {
        {
            std::lock_guard lock(mutex_);
            closing_ = true;
        }
        net::post(loop_.get_executor(),
                  [self = this->shared_from_this(), code, r = std::move(reason)] { self->do_close(code, r); });
    }

    void abort() override {
        net::post(loop_.get_executor(), [self = this->shared_from_this()] { self->end_socket(); });
    }

    void warn(std::string message) override { warnings().log(st_.log, severity::warning, info_.remote, message); }

    // loop_member (plain only): an edge of the socket.
    void on_io(std::uint32_t events) override {
        if constexpr (!tls) {
            if (io_.fd < 0) return;  // ended earlier in this round
            if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) hung_up_ = true;
            if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) on_writable();
            if (io_.fd >= 0 && (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) on_readable();
        }
    }

    // loop_member: the deadlines of this connection.
    void on_sweep(clock::time_point now) override {
        if (now < deadline_) {
            release_idle_outbox();
            return;
        }
        switch (state_) {
            case ws_state::handshaking:
                st_.log.log(severity::info, fmt::format("closing {}: the 101 was not written in time", info_.remote));
                end_socket();
                return;
            case ws_state::open: return ping_tick(now);
            case ws_state::closing:
            case ws_state::close_sent:
            case ws_state::draining:
                st_.log.log(severity::debug, fmt::format("{}: the close handshake timed out", info_.remote));
                end_socket();
                return;
            case ws_state::finished: return;
        }
    }

private:
    // What few connections need, in a block of its own: a local route's process, a close's words,
    // what followed the upgrade request.
    struct rare_parts {
        std::string exec;                      // a local route's command
        std::shared_ptr<void> process_slot;    // its --max-processes slot, handed to the process at start
        std::shared_ptr<local_process> local;  // its process, while the connection lives
        std::string our_reason;                // the reason of the close we asked for
        std::string peer_reason;               // the reason of the peer's close frame
        std::string leftover;                  // bytes after the upgrade request, read with it
    };
    rare_parts& rare() {
        if (!rare_) rare_ = std::make_unique<rare_parts>();
        return *rare_;
    }

    // The frames queued for the socket and the write in flight; allocated by the first frame,
    // freed by the sweep once drained, so an idle connection holds none.
    struct outbox {
        send_queue pending;                      // under mutex_
        send_queue writing;                      // the write in flight (loop only)
        std::vector<iovec> iov;                  // plain: what is left of it
        std::vector<net::const_buffer> buffers;  // TLS: all of it
        std::size_t first = 0;                   // plain: the first iovec not yet written
    };

    log_limiter& warnings() {
        std::lock_guard lock(mutex_);
        if (!warnings_) warnings_ = std::make_unique<log_limiter>();
        return *warnings_;
    }

    static constexpr auto handshake_timeout = std::chrono::seconds(10);  // the 101, and the close handshake
    static constexpr auto drain_timeout = std::chrono::seconds(5);
    static constexpr std::size_t drain_limit = std::size_t{64} << 20;
    // A round's queue is written before it grows past this, even before the round ends: 64 KiB is
    // what a loopback socket's send buffer takes at once, and the most the round can hold back.
    static constexpr std::size_t early_flush_bytes = std::size_t{64} * 1024;

    // The one place the state changes.
    void enter(ws_state next) noexcept {
        assert(legal_transition(state_, next));
        state_ = next;
    }
    bool finished() const noexcept { return state_ == ws_state::finished; }

    void schedule_flush() {
        if (loop_.running_here())
            loop_.mark_dirty(this);
        else
            net::post(loop_.get_executor(), [self = this->shared_from_this()] {
                if (!self->finished()) self->loop_.mark_dirty(self.get());  // a member until it finishes
            });
    }

    // Under mutex_: `m` joins the outbox; returns the memory-budget blocks to add.
    std::size_t push_locked(message_ptr const& m) {
        if (!out_) out_ = std::make_unique<outbox>();
        out_->pending.push(m);
        queued_bytes_ += m->frame().size();
        return reserve_locked();
    }

    // On the loop: a frame of our own (the 101, a pong, a ping, the close), queued behind the data.
    void queue_control(message_ptr const& m) {
        std::size_t reserve = 0;
        {
            std::lock_guard lock(mutex_);
            reserve = push_locked(m);
        }
        if (reserve) st_.hold(reserve);
    }
    // A pong, ping or close: bytes on the wire, not a message of the metrics.
    void queue_control_frame(opcode op, std::string_view payload) {
        unsigned char header[wire::max_frame_header];
        auto const n = wire::encode_frame_header(header, static_cast<std::uint8_t>(op), payload.size());
        std::string bytes(reinterpret_cast<char const*>(header), n);
        bytes.append(payload);
        queue_control(outgoing_message::frames(std::move(bytes), 0));
    }

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
        if (out_) {
            auto& pending = out_->pending;
            st_.stats.messages_dropped += pending.messages();
            st_.stats.count_dropped(cause, pending.messages());
            queued_bytes_ -= pending.bytes();
            pending.clear();
        }
        if (auto give = release_reserve_locked()) st_.release(give);
        closing_ = true;
        net::post(loop_.get_executor(), [self = this->shared_from_this(), code, reason, why] {
            self->st_.log.log(severity::warning, fmt::format("closing slow client {} ({}): {}", self->info_.remote,
                                                             redact_id(self->info_.client_id), why));
            self->do_close(code, reason);
        });
    }

    // The drained outbox goes at the sweep: a connection that gets a message now and then keeps
    // none between them, one that is busy keeps its one.
    void release_idle_outbox() {
        std::lock_guard lock(mutex_);
        if (out_ && !in_flight_ && out_->pending.empty() && out_->writing.empty()) out_.reset();
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

    void log_ending(error_code ec, char const* stage) {
        if (expected_socket_ending(ec)) {
            st_.log.log(severity::debug,
                        fmt::format("{} {}: {} ({})", info_.remote, log_value(info_.path), stage, ec.message()));
            return;
        }
        warn(fmt::format("{} {}: {}: {}", info_.remote, log_value(info_.path), stage, ec.message()));
    }

    // ------------------------------------------------------------------------------------------
    // Reading

    void on_open() {
        enter(ws_state::open);
        deadline_ = clock::now() + ping_period();
        st_.log.log(severity::debug,
                    fmt::format("connected {} name={} group={} clientId={}", info_.remote, log_value(info_.name),
                                log_value(info_.group), redact_id(info_.client_id)));
        if (kind_ != session_kind::echo && st_.commands) st_.commands->on_connect(info_);
        if (rare_ && !rare_->exec.empty()) start_local_process();
        if (requested_code_ != 0) return start_close();
        if (rare_ && !rare_->leftover.empty()) {
            auto bytes = std::move(rare_->leftover);
            rare_->leftover = {};
            on_bytes(bytes.data(), bytes.size());
        }
        if (state_ != ws_state::open) return;
        if constexpr (tls) {
            start_tls_read();
        } else {
            on_readable();  // what arrived before the 101 was written raised its edge already
        }
    }

    void start_local_process() {
        // A local route: this connection's own process; its exit closes the socket.
        // What it logs (a dropped message, its stderr lines: both may echo the client) counts
        // against this connection's limit; once the session is gone, the server's log takes it.
        command_logger log = [weak = this->weak_from_this(), plain = command_logger_for(st_)](command_log level,
                                                                                              std::string message) {
            auto self = weak.lock();
            if (!self) return plain(level, std::move(message));
            self->warnings().log(self->st_.log, to_severity(level), self->info_.remote, message);
        };
        auto& x = *rare_;
        auto p = local_process::start(loop_.get_executor(), x.exec, this->weak_from_this(), info_, st_.opts.send_queue,
                                      st_.opts.max_message_size, log, std::move(x.process_slot));
        if (!p) {
            st_.log.log(severity::error, fmt::format("local route {}: {}", log_value(info_.path), p.error().message));
            do_close(1011, "handler failed to start");
        } else {
            x.local = std::move(*p);
        }
    }

    // Plain: reads what the socket has into the loop's scratch buffer, each read parsed before the
    // next. A short read means the queue was empty then (what comes later raises a new edge);
    // after a hang-up, reads go on to the end of stream, which no edge announces again. At most
    // 16 reads per edge: then the loop runs other work and comes back.
    void on_readable() {
        if constexpr (!tls) {
            if (state_ == ws_state::handshaking) return;  // read once the 101 is written
            char* const buf = loop_.scratch();
            for (int reads = 0; reads < 16; ++reads) {
                ssize_t const r = ::recv(io_.fd, buf, event_loop::scratch_size, 0);
                if (r > 0) {
                    on_bytes(buf, static_cast<std::size_t>(r));
                    if (io_.fd < 0) return;
                    if (static_cast<std::size_t>(r) < event_loop::scratch_size && !hung_up_) return;
                    continue;
                }
                if (r == 0) return on_end_of_stream({});
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) return;
                return on_end_of_stream(error_code(errno, boost::system::system_category()));
            }
            net::post(loop_.get_executor(), [self = this->shared_from_this()] {
                if (self->io_.fd >= 0) self->on_readable();
            });
        }
    }

    void start_tls_read() {
        if constexpr (tls) {
            if (!tls_buffer_) tls_buffer_ = std::make_unique<char[]>(tls_read_size);
            tls_reading_ = true;
            io_.async_read_some(net::buffer(tls_buffer_.get(), tls_read_size),
                                [self = this->shared_from_this()](error_code ec, std::size_t n) {
                                    self->tls_reading_ = false;
                                    if (self->finished()) return;
                                    // The drain cancelled this read: now the TLS shutdown.
                                    if (self->state_ == ws_state::draining) return self->start_tls_shutdown();
                                    if (ec) return self->on_end_of_stream(ec);
                                    self->on_bytes(self->tls_buffer_.get(), n);
                                    // Draining now: start_drain began the shutdown (no read was in flight).
                                    if (self->finished() || self->state_ == ws_state::draining) return;
                                    self->start_tls_read();
                                });
        }
    }

    // What a read brought: frames for the reader, or (draining) bytes to drop.
    void on_bytes(char* data, std::size_t n) {
        activity_ = true;
        st_.stats.bytes_received += n;
        if (state_ == ws_state::draining) {
            drained_ += n;
            if (drained_ > drain_limit) end_socket();
            return;
        }
        if (reader_.done()) return;  // after the peer's close or a failure: nothing more is read
        // The read's broadcasts to one Name leave together (router.hpp), in blocks of at most a
        // quarter of --send-queue.
        broadcast_batch batch(std::min(st_.opts.send_queue / 4, std::size_t{64} * 1024));
        batch_ = &batch;
        if (!reader_.feed(data, n, *this)) {
            if (auto f = reader_.failure(); f.code != 0) fail_protocol(f.code, f.reason);
        }
        batch_ = nullptr;
        batch.flush();
        set_receiving(reader_.buffered());
    }

    // frame_handler
    void on_message(opcode op, std::string_view payload) override {
        ++st_.stats.messages_received;
        st_.router.route(*this, kind_, rare_ ? rare_->local.get() : nullptr, payload, op == opcode::binary, batch_);
    }

    void on_ping(std::string_view payload) override {
        if (state_ != ws_state::open) return;
        queue_control_frame(opcode::pong, payload);
        flush_at_round_end();
    }

    void on_pong(std::string_view) override {}

    void on_close(std::uint16_t code, std::string_view reason) override {
        if (batch_) batch_->flush();  // what it sent before its close goes first (to itself too)
        peer_code_ = code;
        if (!reason.empty()) rare().peer_reason = std::string(reason);
        switch (state_) {
            case ws_state::open:
                // Answered with the same code (none for 1005), then our end is shut (RFC 6455 5.5.1).
                requested_code_ = code;
                queue_close(code == 1005 ? std::string() : wire::close_payload(code, {}));
                return;
            case ws_state::close_sent: return start_drain();
            default: return;  // closing: the drain follows our close frame's write
        }
    }

    // The reader refused the input: our close with its code, then our end is shut at once (we do
    // not wait for the peer's close of a broken stream).
    void fail_protocol(std::uint16_t code, char const* reason) {
        warn(fmt::format("{} {}: closing with {}: {}", info_.remote, log_value(info_.path), code, reason));
        failed_code_ = code;
        if (batch_) batch_->flush();  // what it sent before the bad frame goes first (to itself too)
        if (state_ == ws_state::open) return queue_close(wire::close_payload(code, reason));
        if (state_ == ws_state::close_sent) start_drain();  // closing: the drain follows our close's write
    }

    // The peer's end of stream or a read error.
    void on_end_of_stream(error_code ec) {
        if (state_ != ws_state::draining) log_ending(ec ? ec : net::error::eof, "read");
        end_socket();
    }

    // ------------------------------------------------------------------------------------------
    // Closing

    void do_close(std::uint16_t code, std::string const& reason) {
        if (requested_code_ != 0 || peer_code_ != 0 || failed_code_ != 0 || finished()) return;
        requested_code_ = code;
        if (!reason.empty()) rare().our_reason = reason;  // the server's own words, within a close frame's 123 bytes
        // A closing connection is no longer addressable (and no longer listed).
        if (kind_ != session_kind::echo) st_.reg.remove(*this);
        if (state_ == ws_state::open) start_close();  // else on_open starts it
    }

    void start_close() {
        if (state_ != ws_state::open) return;
        queue_close(wire::close_payload(requested_code_, rare_ ? std::string_view(rare_->our_reason) : ""));
    }

    void queue_close(std::string payload) {
        {
            std::lock_guard lock(mutex_);
            closing_ = true;
        }
        enter(ws_state::closing);
        deadline_ = clock::now() + handshake_timeout;
        queue_control_frame(opcode::close, payload);
        flush_at_round_end();
    }

    // On the loop, after a control frame: the round's flush writes it.
    void flush_at_round_end() {
        bool mark = false;
        {
            std::lock_guard lock(mutex_);
            mark = !std::exchange(flush_scheduled_, true);
        }
        if (mark) schedule_flush();
    }

    // Our close frame is written: wait for the peer's (a close we asked for), or shut our end now
    // (the peer closed first, or we failed the connection).
    void on_close_written() {
        enter(ws_state::close_sent);
        if (peer_code_ != 0 || failed_code_ != 0) start_drain();
    }

    // Our end is shut; what the peer still sends is read and dropped until its end of stream (at
    // most 64 MiB and 5 s), so that it reads our close frame before the connection goes: closing
    // at once, with the rest of a refused message still arriving, would reset the connection.
    void start_drain() {
        enter(ws_state::draining);
        deadline_ = clock::now() + drain_timeout;
        if constexpr (tls) {
            if (tls_reading_) {
                error_code ignored;
                beast::get_lowest_layer(io_).socket().cancel(ignored);  // the read ends, then the shutdown
            } else {
                start_tls_shutdown();
            }
        } else {
            ::shutdown(io_.fd, SHUT_WR);
            // A FIN that came already raises no new edge: read on, after what runs now.
            net::post(loop_.get_executor(), [self = this->shared_from_this()] {
                if (self->io_.fd >= 0) self->on_readable();
            });
        }
    }

    void start_tls_shutdown() {
        if constexpr (tls) {
            io_.async_shutdown([self = this->shared_from_this()](error_code) { self->end_socket(); });
        }
    }

    // The socket is done with: closed now (what waits on it ends), and the connection finishes.
    void end_socket() {
        if (finished()) return;
        if constexpr (tls) {
            error_code ignored;
            beast::get_lowest_layer(io_).socket().close(ignored);
        } else {
            loop_.unwatch(io_.fd);
            ::close(io_.fd);
            io_.fd = -1;
        }
        finish();
    }

    void fail_socket(error_code ec, char const* stage) {
        log_ending(ec, stage);
        end_socket();
    }

    // The connection is over: it leaves the registry and its loop.
    void finish() {
        bool const was_open = state_ != ws_state::handshaking;
        enter(ws_state::finished);
        std::size_t give = 0;
        {
            std::lock_guard lock(mutex_);
            closing_ = true;
            if (out_ && !in_flight_) {
                queued_bytes_ -= out_->pending.bytes() + out_->writing.bytes();
                out_.reset();
                give = release_reserve_locked();
            }
        }
        if (give) st_.release(give);
        set_receiving(0);
        // The peer's code when its close came, else the one we failed or closed with, else 1006.
        std::uint16_t const code = peer_code_        ? peer_code_
                                   : failed_code_    ? failed_code_
                                   : requested_code_ ? requested_code_
                                                     : 1006;
        st_.stats.count_close(code);
        st_.reg.remove(*this);
        if (rare_ && rare_->local) rare_->local->on_client_gone();
        // Before ws_count drops: a shutdown waits for the hooks it starts.
        if (was_open && kind_ != session_kind::echo && st_.commands) {
            // Ours when we asked for a close with a reason, else what the peer's close frame said.
            std::string why;
            if (rare_) why = !rare_->our_reason.empty() ? rare_->our_reason : rare_->peer_reason;
            st_.commands->on_disconnect(info_, code, std::move(why));
        }
        --st_.ws_count;
        if (warnings_) warnings_->summarize(st_.log, severity::warning, info_.remote);
        st_.log.log(severity::debug, fmt::format("disconnected {} name={} clientId={} code={}", info_.remote,
                                                 log_value(info_.name), redact_id(info_.client_id), code));
        loop_.leave(*this);
    }

    // ------------------------------------------------------------------------------------------
    // Pings

    std::chrono::milliseconds ping_period() const {
        auto const p = st_.opts.ping_interval;
        return p.count() > 0 ? p : std::chrono::hours(24 * 365);
    }

    void ping_tick(clock::time_point now) {
        deadline_ = now + ping_period();
        missed_ = activity_ ? 0 : missed_ + 1;
        activity_ = false;
        if (missed_ >= 2) {
            st_.log.log(severity::info,
                        fmt::format("closing {} ({}): missed two pongs", info_.remote, redact_id(info_.client_id)));
            end_socket();
            return;
        }
        queue_control_frame(opcode::ping, {});
        flush_at_round_end();
    }

    // ------------------------------------------------------------------------------------------
    // Writing: everything queued, in one gathered write. On plain TCP a non-blocking sendmsg (the
    // kernel buffer almost always has room), the rest on the next EPOLLOUT edge; TLS through
    // async_write.

    void do_flush() {
        std::size_t total = 0;
        {
            std::lock_guard lock(mutex_);
            flush_scheduled_ = false;
            if (finished() || in_flight_ || !out_ || out_->pending.empty()) return;
            out_->pending.take(out_->writing);
            in_flight_ = true;  // TLS: what the kernel refused is not known, so only what is queued behind counts
            refused_ = 0;
            total = out_->writing.bytes();
        }
        auto& o = *out_;  // not freed while a write is in flight
        if constexpr (tls) {
            o.buffers.clear();
            for (auto const& c : o.writing.chunks()) o.buffers.emplace_back(c.bytes().data(), c.bytes().size());
            net::async_write(io_, o.buffers, [self = this->shared_from_this()](error_code ec, std::size_t) {
                self->complete_write(ec);
            });
        } else {
            o.iov.clear();
            o.first = 0;
            for (auto const& c : o.writing.chunks()) {
                auto const b = c.bytes();
                // NOLINTNEXTLINE(cppcoreguidelines-pro-type-const-cast): iovec is non-const for reads and writes
                o.iov.push_back(iovec{const_cast<char*>(b.data()), b.size()});
            }
            write_some(total);
        }
    }

    // Plain: writes what the kernel takes now; the rest waits for EPOLLOUT.
    void write_some(std::size_t left) {
        auto& o = *out_;
        while (o.first < o.iov.size()) {
            msghdr msg{};
            msg.msg_iov = o.iov.data() + o.first;
            msg.msg_iovlen = std::min<std::size_t>(o.iov.size() - o.first, IOV_MAX);
            ssize_t const r = msg.msg_iovlen == 1
                                  ? ::send(io_.fd, msg.msg_iov[0].iov_base, msg.msg_iov[0].iov_len, MSG_NOSIGNAL)
                                  : ::sendmsg(io_.fd, &msg, MSG_NOSIGNAL);
            if (r < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    std::lock_guard lock(mutex_);
                    refused_ = left;  // what the client is behind by; the rest waits for EPOLLOUT
                    return;
                }
                return complete_write(error_code(errno, boost::system::system_category()));
            }
            auto n = static_cast<std::size_t>(r);
            left -= n;
            while (n > 0 && n >= o.iov[o.first].iov_len) n -= o.iov[o.first++].iov_len;
            if (n > 0) {
                auto& v = o.iov[o.first];
                v.iov_base = static_cast<char*>(v.iov_base) + n;
                v.iov_len -= n;
            }
        }
        complete_write({});
    }

    void on_writable() {
        if constexpr (!tls) {
            // A write in flight between handlers waits for this edge (in_flight_ and refused_ are
            // written only on this loop, so read here without the lock).
            if (in_flight_) write_some(refused_);
        }
    }

    // The frames of the write in flight are done with (written or failed): release them and
    // account; then what a close frame among them means, and the next write.
    void complete_write(error_code ec) {
        auto& o = *out_;
        auto const bytes = o.writing.bytes();
        auto const count = o.writing.messages();
        o.writing.clear();  // the frames are released only now that the socket is done with them
        std::size_t give = 0;
        {
            std::lock_guard lock(mutex_);
            queued_bytes_ -= bytes;
            in_flight_ = false;
            refused_ = 0;
            give = release_reserve_locked();
            o.pending.adopt_spare(o.writing);
        }
        if (give) st_.release(give);
        if (ec) return fail_socket(ec, "write");
        st_.stats.messages_sent += count;
        st_.stats.bytes_sent += bytes;
        switch (state_) {
            case ws_state::handshaking: return on_open();
            case ws_state::closing: {
                // The close frame was the last thing queued: once all is written, it is on the wire.
                bool drained = false;
                {
                    std::lock_guard lock(mutex_);
                    drained = out_->pending.empty();
                }
                if (drained) return on_close_written();
                break;
            }
            default: break;
        }
        do_flush();
    }

    server_state& st_;
    event_loop& loop_;
    // Shared with other threads (send/close), under mutex_; next to st_ and loop_, so that a send
    // to a session that keeps up touches one or two of its cache lines.
    std::unique_ptr<outbox> out_;
    std::size_t queued_bytes_ = 0;  // pending plus in flight
    std::size_t reserved_ = 0;      // of the memory budget, for queued_bytes_ (whole blocks)
    std::size_t refused_ = 0;       // of the write in flight, what the kernel did not take at once
    bool in_flight_ = false;        // a write is in flight (written on the loop only: it reads it unlocked)
    bool flush_scheduled_ = false;  // marked dirty on the loop (or on its way there)
    bool closing_ = false;          // no more sends accepted: a close asked for, or finished
    session_mutex mutex_{st_.loops > 1};
    std::size_t receiving_bytes_ = 0;  // of a message not yet complete, also in the budget

    Transport io_;
    connection_info info_;
    wire::frame_reader reader_;
    clock::time_point deadline_{};  // of the current state: the 101, the next ping, the close, the drain
    std::unique_ptr<rare_parts> rare_;
    broadcast_batch* batch_ = nullptr;  // during a read: where its broadcasts collect
    std::unique_ptr<log_limiter>
        warnings_;  // this connection's warnings and its process's lines (under mutex_ once made)

    // Only on the session's loop.
    std::size_t drained_ = 0;  // bytes dropped while draining
    session_kind kind_;
    ws_state state_ = ws_state::handshaking;
    std::uint16_t requested_code_ = 0;                  // the close asked for (ours, or our answer to the peer's)
    std::uint16_t peer_code_ = 0;                       // the peer's close frame's code
    std::uint16_t failed_code_ = 0;                     // the code we failed the connection with
    std::uint8_t missed_ = 0;                           // ping ticks in a row without activity
    bool activity_ = false;                             // bytes arrived since the last ping tick
    bool hung_up_ = false;                              // plain: the peer's FIN (or an error) was seen
    bool tls_reading_ = false;                          // TLS: a read is in flight
    static constexpr std::size_t tls_read_size = 4096;  // decrypted bytes per read: a record takes a few
    std::unique_ptr<char[]> tls_buffer_;                // TLS: the read buffer
};

}  // namespace wsig::detail
