// Private to the server: the per-connection sessions, templated on the transport (plain TCP or TLS).
// http_session reads requests and hands upgrades to ws_session; ws_session reads with Beast and
// writes its send queue (pre-framed messages) itself, through a write gate shared with Beast's writes.
#pragma once

#include "net/epoll_socket.hpp"
#include "server/send_queue.hpp"
#include "server/state.hpp"

#include <wsig/message.hpp>

#include <boost/asio/bind_executor.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream_base.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <fmt/format.h>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace wsig::detail {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using error_code = boost::system::error_code;

// The session behind a gate: tells it whether raw data is waiting and hears about Beast's writes.
class gate_owner {
public:
    virtual ~gate_owner() = default;
    virtual bool raw_pending() = 0;       // raw frames queued and allowed to go before a Beast write
    virtual void beast_parked() = 0;      // a Beast write waits: flush what is queued first
    virtual void beast_write_done() = 0;  // a Beast write completed: raw writes may resume
};

// The next layer of the websocket::stream. Every byte Beast writes (101, pong, close, ping) passes
// here, and waits while a raw gathered write is in flight or raw data queued before it is pending;
// raw writes in turn wait while Beast writes. So exactly one write is in flight per socket and a
// control frame never lands inside a data frame. It also replays bytes that arrived after the
// upgrade request in the same read (they belong to the WebSocket).
template <class Next>
class gate_stream {
public:
    using executor_type = typename Next::executor_type;
    using next_layer_type = Next;

    template <class... Args>
    explicit gate_stream(Args&&... args) : next_(std::forward<Args>(args)...) {}

    executor_type get_executor() noexcept { return next_.get_executor(); }
    Next& next_layer() noexcept { return next_; }
    Next const& next_layer() const noexcept { return next_; }

    void set_owner(std::weak_ptr<gate_owner> owner) { owner_ = std::move(owner); }
    void set_prefix(std::string bytes) { prefix_ = std::move(bytes); }

    bool raw_busy = false;  // the owner's gathered write is in flight
    bool beast_busy() const noexcept { return beast_busy_; }
    bool has_parked() const noexcept { return static_cast<bool>(parked_); }
    void drop_parked() { parked_ = nullptr; }
    void run_parked() {
        auto p = std::move(parked_);
        parked_ = nullptr;
        p();
    }

    template <class MutableBuffers, class Token>
    auto async_read_some(MutableBuffers const& buffers, Token&& token) {
        return net::async_initiate<Token, void(error_code, std::size_t)>(
            [this](auto handler, MutableBuffers const& bufs) {
                if (prefix_.empty()) {
                    next_.async_read_some(bufs, std::move(handler));
                    return;
                }
                auto n = net::buffer_copy(bufs, net::buffer(prefix_));
                prefix_.erase(0, n);
                net::post(next_.get_executor(), beast::bind_front_handler(std::move(handler), error_code{}, n));
            },
            token, buffers);
    }

    template <class ConstBuffers, class Token>
    auto async_write_some(ConstBuffers const& buffers, Token&& token) {
        return net::async_initiate<Token, void(error_code, std::size_t)>(
            [this](auto handler, ConstBuffers const& bufs) {
                auto owner = owner_.lock();
                if (raw_busy || (owner && owner->raw_pending())) {
                    auto hp = std::make_shared<decltype(handler)>(std::move(handler));
                    parked_ = [this, hp, bufs] { start_beast(std::move(*hp), bufs); };
                    if (owner) owner->beast_parked();
                    return;
                }
                start_beast(std::move(handler), bufs);
            },
            token, buffers);
    }

private:
    template <class Handler, class ConstBuffers>
    void start_beast(Handler handler, ConstBuffers const& bufs) {
        beast_busy_ = true;
        next_.async_write_some(bufs, [this, h = std::move(handler)](error_code ec, std::size_t n) mutable {
            beast_busy_ = false;
            // Keeps the session (and this gate) alive past the handler, which may drop the last reference.
            auto owner = owner_.lock();
            std::move(h)(ec, n);
            if (owner) owner->beast_write_done();
        });
    }

    Next next_;
    std::weak_ptr<gate_owner> owner_;
    std::function<void()> parked_;
    std::string prefix_;
    bool beast_busy_ = false;
};

template <class Next>
void teardown(beast::role_type role, gate_stream<Next>& s, error_code& ec) {
    using websocket::teardown;
    teardown(role, s.next_layer(), ec);
}

inline void teardown(beast::role_type role, gate_stream<epoll_socket>& s, error_code& ec) {
    if (role == beast::role_type::server) s.next_layer().shutdown(net::socket_base::shutdown_send, ec);
    s.next_layer().close(ec);
}

// The end of a plain connection after a close frame: stop sending, read (and drop) what the peer
// still sends until its end of stream, then close. Beast 1.81's own TCP teardown stops draining
// after the first read that finds data (beast/websocket/impl/teardown.hpp tests the coroutine's
// argument, not what was read), so closing the socket then, with the rest of a refused 1009
// message still arriving, reset the connection and the peer never read the close frame.
// Bounded: at most 64 MiB and 5 s, then the socket is closed anyway. What is read is dropped, so
// every drain of a loop reads into one scratch buffer of its thread: when 10,000 clients close at
// once, 10,000 drains do not each hold 4 KiB.
template <class Handler>
void async_teardown(beast::role_type role, gate_stream<epoll_socket>& s, Handler&& handler) {
    struct drain {
        explicit drain(epoll_socket& so) : sock(so), deadline(so.get_executor()) {}
        epoll_socket& sock;
        net::steady_timer deadline;
        std::size_t total = 0;
        bool done = false;
    };
    auto d = std::make_shared<drain>(s.next_layer());
    error_code ignored;
    if (role == beast::role_type::server) d->sock.shutdown(net::socket_base::shutdown_send, ignored);
    d->deadline.expires_after(std::chrono::seconds(5));
    d->deadline.async_wait([d](error_code ec) {
        if (ec || d->done) return;  // while not done, the read below holds the session (and socket)
        error_code ignore;
        d->sock.close(ignore);  // the read completes with operation_aborted
    });
    constexpr std::size_t drain_limit = 64u << 20;
    net::async_compose<Handler, void(error_code)>(
        [d, started = false](auto& self, error_code ec = {}, std::size_t n = 0) mutable {
            d->total += n;
            if (!started || (!ec && d->total < drain_limit)) {
                started = true;
                static thread_local std::array<char, 4096> scratch;  // reads complete on this loop's thread
                d->sock.async_read_some(net::buffer(scratch), std::move(self));
                return;
            }
            d->done = true;
            d->deadline.cancel();
            error_code ignore;
            d->sock.close(ignore);
            self.complete(ec == net::error::eof ? error_code{} : ec);
        },
        handler, d->sock);
}

template <class Next, class Handler>
void async_teardown(beast::role_type role, gate_stream<Next>& s, Handler&& handler) {
    using websocket::async_teardown;
    async_teardown(role, s.next_layer(), std::forward<Handler>(handler));
}

// Quiet on the ways a connection is expected to end.
inline bool expected_ending(error_code const& ec) {
    return ec == net::error::operation_aborted || ec == websocket::error::closed || ec == beast::http::error::end_of_stream ||
           ec == net::error::eof || ec == net::error::connection_reset || ec == net::error::broken_pipe ||
           ec == net::ssl::error::stream_truncated || ec == beast::error::timeout ||
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
    return epoll_socket(loop, ec ? -1 : fd, ec);
}
template <class Tls>
Tls&& to_ws_transport(event_loop&, Tls&& s) { return std::move(s); }
template <class Stream>
using ws_transport_t =
    std::remove_cvref_t<decltype(to_ws_transport(std::declval<event_loop&>(), std::declval<Stream>()))>;

// The TCP socket under a transport.
inline epoll_socket& tcp_socket(epoll_socket& s) noexcept { return s; }
template <class Stream>
auto& tcp_socket(Stream& s) noexcept { return beast::get_lowest_layer(s).socket(); }

template <class Stream>
class ws_session final : public live_session,
                         public gate_owner,
                         public flushable,
                         public std::enable_shared_from_this<ws_session<Stream>> {
public:
    ws_session(server_state& st, event_loop& loop, Stream&& stream, std::string leftover, upgrade_plan plan)
        : st_(st), loop_(loop), ws_(std::move(stream)), kind_(plan.kind), info_(std::move(plan.info)),
          ping_timer_(ws_.get_executor()) {
        exec_ = std::move(plan.exec);
        process_slot_ = std::move(plan.process_slot);
        ws_.next_layer().set_prefix(std::move(leftover));
    }

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
        t.handshake_timeout = std::chrono::seconds(10);  // bounds both the 101 write and a close handshake
        t.idle_timeout = websocket::stream_base::none();  // our own ping timer finds dead peers
        t.keep_alive_pings = false;
        ws_.set_option(t);
        ws_.read_message_max(kind_ == session_kind::echo ? st_.opts.echo_max_message_size
                                                         : st_.opts.max_message_size);
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
    void send(message_ptr const& m) override {
        auto const size = m->frame().size();
        std::size_t reserve = 0;
        bool mark = false, flush_here = false;
        {
            std::lock_guard lock(mutex_);
            if (closing_) return;
            if (in_flight_ && refused_ + pending_.bytes() + size > st_.opts.send_queue) {
                ++st_.stats.messages_dropped;
                if (st_.opts.slow_client == slow_client_policy::drop) return;
                drop_pending_and_close_locked(1008, "too slow", "send queue full");
                return;
            }
            pending_.push(m);
            queued_bytes_ += size;
            reserve = reserve_locked();
            flush_here = !in_flight_ && pending_.bytes() >= early_flush_bytes && loop_.running_here();
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
    }

    holding held() override {
        std::lock_guard lock(mutex_);
        return {queued_bytes_ + receiving_bytes_, closing_};
    }

    void shed() override {
        std::lock_guard lock(mutex_);
        if (closing_) return;
        drop_pending_and_close_locked(1008, "server memory budget", "memory budget");
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
        net::post(ws_.get_executor(),
                  [self = this->shared_from_this(), code, r = std::move(reason)]() mutable { self->do_close(code, std::move(r)); });
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
        if (!open_ || close_frame_sent_) return false;
        std::lock_guard lock(mutex_);
        return !pending_.empty();
    }

    void beast_parked() override {
        auto& gate = ws_.next_layer();
        if (gate.raw_busy) {
            // What was queued before this control frame goes after the write in flight, then the frame.
            std::lock_guard lock(mutex_);
            flush_before_beast_ = !pending_.empty();
            return;
        }
        flush_before_beast_ = false;
        if (!start_raw_write()) gate.run_parked();
    }

    void beast_write_done() override {
        if (open_ && !ws_.is_open()) close_frame_sent_ = true;  // nothing may follow a close frame
        do_flush();
    }

    // At exit, after the loop stopped: a parked Beast write or a read waiting for its socket holds
    // the session; let it go.
    void release_parked() override {
        ws_.next_layer().drop_parked();
        if constexpr (!is_tls_v<Stream>) sock().drop_waiting();
    }

    void warn(std::string message) override { warnings_.log(st_.log, severity::warning, info_.remote, message); }

private:
    auto& sock() noexcept { return tcp_socket(ws_.next_layer().next_layer()); }

    // A round's queue is written before it grows past this, even before the round ends: 64 KiB is
    // what a loopback socket's send buffer takes at once, and the most the round can hold back.
    static constexpr std::size_t early_flush_bytes = 64 * 1024;

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

    // Under mutex_: what is not yet being written goes (counted as dropped); the close follows what
    // is in flight. Nothing is sent after it.
    void drop_pending_and_close_locked(std::uint16_t code, char const* reason, char const* why) {
        st_.stats.messages_dropped += pending_.messages();
        queued_bytes_ -= pending_.bytes();
        pending_.clear();
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
        std::size_t before;
        {
            std::lock_guard lock(mutex_);
            before = std::exchange(receiving_bytes_, bytes);
        }
        if (bytes > before) st_.hold(bytes - before);
        else if (before > bytes) st_.release(before - bytes);
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
        open_ = true;
        req_ = {};
        st_.log.log(severity::debug, fmt::format("connected {} name={} group={} clientId={}", info_.remote,
                                                 log_value(info_.name), log_value(info_.group),
                                                 redact_id(info_.client_id)));
        if (kind_ != session_kind::echo && st_.commands) st_.commands->on_connect(info_);
        if (!exec_.empty()) {
            // A local route: this connection's own process; its exit closes the socket.
            // What it logs (a dropped message, its stderr lines: both may echo the client) counts
            // against this connection's limit; once the session is gone, the server's log takes it.
            command_logger log = [weak = this->weak_from_this(), plain = command_logger_for(st_)](
                                     command_log level, std::string message) {
                auto self = weak.lock();
                if (!self) return plain(level, std::move(message));
                self->warnings_.log(self->st_.log, to_severity(level), self->info_.remote, message);
            };
            auto p = local_process::start(ws_.get_executor(), exec_, this->weak_from_this(), info_,
                                          st_.opts.send_queue, st_.opts.max_message_size, std::move(log),
                                          std::move(process_slot_));
            if (!p) {
                st_.log.log(severity::error,
                            fmt::format("local route {}: {}", log_value(info_.path), p.error().message));
                do_close(1011, "handler failed to start");
            } else {
                local_ = std::move(*p);
            }
        }
        if (close_requested_) {
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
        constexpr std::size_t piece_limit = 64 * 1024;
        ws_.async_read_some(buffer_, piece_limit,
                            beast::bind_front_handler(&ws_session::on_read, this->shared_from_this()));
    }

    void on_read(error_code ec, std::size_t n) {
        if (ec) {
            set_receiving(0);
            unsigned code = 1006;
            if (ec == websocket::error::closed) code = ws_.reason().code;
            else if (ec == websocket::error::message_too_big) code = 1009;
            else if (ec == websocket::error::bad_frame_payload) code = 1007;
            else if (ec.category() == websocket::make_error_code(websocket::error::bad_opcode).category()) code = 1002;
            else if (close_code_) code = close_code_;
            fail(ec, "read");
            finish(code);
            return;
        }
        activity_ = true;
        st_.stats.bytes_received += n;
        if (!ws_.is_message_done()) {
            if (close_requested_) buffer_.consume(buffer_.size());  // closing: the rest of it is not wanted
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
        if (buffer_.capacity() > 64 * 1024) buffer_.shrink_to_fit();
        do_read();
    }

    // The read loop is over: the connection leaves the registry and stops its timer.
    void finish(unsigned code) {
        if (finished_) return;
        finished_ = true;
        {
            std::lock_guard lock(mutex_);
            closing_ = true;
        }
        st_.stats.count_close(code);
        ping_timer_.cancel();
        st_.reg.remove(*this);
        if (local_) local_->on_client_gone();
        // Before ws_count drops: a shutdown waits for the hooks it starts.
        if (open_ && kind_ != session_kind::echo && st_.commands)
            st_.commands->on_disconnect(info_, static_cast<std::uint16_t>(code),
                                        close_reason_.empty() ? std::string(ws_.reason().reason.data(),
                                                                            ws_.reason().reason.size())
                                                              : close_reason_);
        --st_.ws_count;
        warnings_.summarize(st_.log, severity::warning, info_.remote);
        st_.log.log(severity::debug, fmt::format("disconnected {} name={} clientId={} code={}", info_.remote,
                                                 log_value(info_.name), redact_id(info_.client_id), code));
    }

    // Takes everything queued and writes it in one gathered write: on plain TCP first as one
    // non-blocking sendmsg (the kernel buffer almost always has room), and only what is left
    // through async_write. True when an asynchronous write is now in flight.
    bool start_raw_write() {
        auto& gate = ws_.next_layer();
        if (close_frame_sent_) return false;
        {
            std::lock_guard lock(mutex_);
            if (pending_.empty()) return false;
            pending_.take(writing_);
        }
        buffers_.clear();
        for (auto const& c : writing_.chunks()) buffers_.emplace_back(c.bytes().data(), c.bytes().size());
        std::size_t const total = writing_.bytes();
        if constexpr (!is_tls_v<Stream>) {
            error_code ec;
            auto n = sock().write_some(buffers_, ec);
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
            // Skip what the kernel took; the rest goes asynchronously.
            auto it = buffers_.begin();
            while (n >= it->size()) {
                n -= it->size();
                ++it;
            }
            *it += n;
            buffers_.erase(buffers_.begin(), it);
        } else {
            // TLS writes are asynchronous: what the kernel refused is not known, so only what is
            // queued behind the write in flight counts against --send-queue.
            std::lock_guard lock(mutex_);
            in_flight_ = true;
            refused_ = 0;
        }
        gate.raw_busy = true;
        net::async_write(gate.next_layer(), buffers_,
                         beast::bind_front_handler(&ws_session::on_raw_write, this->shared_from_this()));
        return true;
    }

    // The frames in writing_ are done with (written or failed): release them and account.
    void complete_write(error_code ec) {
        auto const bytes = writing_.bytes();
        auto const count = writing_.messages();
        writing_.clear();  // the frames are released only now that the socket is done with them
        std::size_t give;
        {
            std::lock_guard lock(mutex_);
            queued_bytes_ -= bytes;
            in_flight_ = false;
            refused_ = 0;
            give = release_reserve_locked();
            pending_.adopt_spare(writing_);
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
        auto& gate = ws_.next_layer();
        if (!open_ || gate.raw_busy || gate.beast_busy() || finished_) return;
        if (gate.has_parked()) {
            gate.run_parked();
            return;
        }
        if (!ws_.is_open()) return;  // after Beast starts a close, no data may follow it
        start_raw_write();
    }

    void on_raw_write(error_code ec, std::size_t) {
        auto& gate = ws_.next_layer();
        gate.raw_busy = false;
        complete_write(ec);
        if (ec) {
            if (gate.has_parked()) gate.run_parked();
            return;
        }
        if (gate.has_parked()) {
            if (flush_before_beast_) {
                flush_before_beast_ = false;
                if (start_raw_write()) return;
            }
            gate.run_parked();
            return;
        }
        do_flush();
    }

    void do_close(std::uint16_t code, std::string reason) {
        if (close_requested_ || finished_) return;
        close_requested_ = true;
        // A closing connection is no longer addressable (and no longer listed).
        if (kind_ != session_kind::echo) st_.reg.remove(*this);
        close_code_ = code;
        close_reason_ = std::move(reason);
        if (open_) start_close();
    }

    void start_close() {
        if (close_started_ || !ws_.is_open()) return;
        if (ping_in_flight_) return;  // on_ping starts it: Beast allows one ping/close at a time
        close_started_ = true;
        ping_timer_.cancel();
        websocket::close_reason cr(close_code_);
        cr.reason = close_reason_;
        ws_.async_close(cr, [self = this->shared_from_this()](error_code ec) {
            if (ec) self->fail(ec, "close");
        });
    }

    void arm_ping() {
        if (st_.opts.ping_interval.count() <= 0) return;
        ping_timer_.expires_after(st_.opts.ping_interval);
        ping_timer_.async_wait(beast::bind_front_handler(&ws_session::on_ping_timer, this->shared_from_this()));
    }

    void on_ping_timer(error_code ec) {
        if (ec || finished_ || close_requested_) return;
        missed_ = activity_ ? 0 : missed_ + 1;
        activity_ = false;
        if (missed_ >= 2) {
            st_.log.log(severity::info, fmt::format("closing {} ({}): missed two pongs", info_.remote,
                                                    redact_id(info_.client_id)));
            error_code ignored;
            sock().close(ignored);
            return;
        }
        if (!ping_in_flight_ && ws_.is_open()) {
            ping_in_flight_ = true;
            ws_.async_ping({}, [self = this->shared_from_this()](error_code e) {
                self->ping_in_flight_ = false;
                if (e) self->fail(e, "ping");
                if (self->close_requested_) self->start_close();
            });
        }
        arm_ping();
    }

    server_state& st_;
    event_loop& loop_;
    websocket::stream<gate_stream<Stream>> ws_;
    session_kind kind_;
    connection_info info_;
    request req_;
    beast::flat_buffer buffer_;
    net::steady_timer ping_timer_;

    // Shared with other threads (send/close), under mutex_.
    std::mutex mutex_;
    send_queue pending_;
    std::size_t queued_bytes_ = 0;     // pending plus in flight
    std::size_t reserved_ = 0;         // of the memory budget, for queued_bytes_ (whole blocks)
    std::size_t receiving_bytes_ = 0;  // of a message not yet complete, also in the budget
    std::size_t refused_ = 0;          // of the write in flight, what the kernel did not take at once
    bool in_flight_ = false;           // an asynchronous write is in flight
    bool flush_scheduled_ = false;     // marked dirty on the loop (or on its way there)
    bool closing_ = false;             // no more sends accepted

    // Only on the session's loop.
    send_queue writing_;                      // in flight: kept alive until the write completes
    std::vector<net::const_buffer> buffers_;
    bool open_ = false;
    bool finished_ = false;
    std::string exec_;                      // a local route's command
    std::shared_ptr<void> process_slot_;    // its --max-processes slot, handed to the process at start
    log_limiter warnings_;  // this connection's per-message warnings (warn) and its process's lines
    std::shared_ptr<local_process> local_;  // its process, while the connection lives
    bool flush_before_beast_ = false;
    bool close_requested_ = false;
    bool close_started_ = false;
    bool ping_in_flight_ = false;
    bool close_frame_sent_ = false;
    bool activity_ = false;
    int missed_ = 0;
    std::uint16_t close_code_ = 0;
    std::string close_reason_;
};

// A response body read from a file_part as the serializer asks for it, one chunk at a time: a
// response holds one chunk of memory whatever the file's size, and each chunk is one pread (from the
// page cache, a few microseconds) between two socket writes, so the loop runs other work in between.
struct file_part_body {
    using value_type = file_part;
    // 64 KiB: fewer syscalls than Beast's file_body's 4 KiB, and still small beside a socket's buffer
    static constexpr std::size_t chunk_size = 64 * 1024;

    static std::uint64_t size(value_type const& part) { return part.length; }

    class writer {
    public:
        using const_buffers_type = net::const_buffer;

        template <bool isRequest, class Fields>
        writer(beast::http::header<isRequest, Fields>&, value_type& part)
            : part_(part), offset_(part.offset), remain_(part.length) {}

        void init(error_code& ec) { ec = {}; }

        boost::optional<std::pair<const_buffers_type, bool>> get(error_code& ec) {
            ec = {};
            if (remain_ == 0) return boost::none;
            if (!buffer_) buffer_ = std::make_unique<char[]>(chunk_size);
            auto want = static_cast<std::size_t>(std::min<std::uint64_t>(remain_, chunk_size));
            ssize_t n;
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
        parser_->header_limit(16 * 1024);  // 16 KiB of headers is plenty; bounded memory
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
        beast::http::async_write_some(stream_, file_res_->serializer,
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
