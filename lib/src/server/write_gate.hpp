// Private to the server: the write side of one WebSocket session. Two writers share its socket:
// the session's gathered write of its send queue (pre-framed messages, "raw"), and Beast's own
// writes (the 101, pongs, pings, the close frame). The gate lets exactly one of them write at a
// time, so a control frame never lands inside a data frame, and holds what each side needs kept
// alive while it waits or writes:
//
//   pending   frames queued by send() on any thread, under the session's mutex
//   writing   the frames of the raw write in flight, with their iovecs; freed only at its completion
//   parked    a Beast write that arrived while raw data was in flight or queued before it
//
// The session decides when to write (end of round, early flush, after a Beast write); the gate
// only keeps the order: raw data queued before a control frame goes first, then the frame.
#pragma once

#include "net/epoll_socket.hpp"
#include "server/send_queue.hpp"

#include <boost/asio/buffer.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>

#include <array>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace wsig::detail {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
using error_code = boost::system::error_code;

// The session behind a gate: says whether raw data may go before a Beast write and hears about
// Beast's writes. All on the session's loop.
class gate_owner {
public:
    virtual ~gate_owner() = default;
    virtual bool raw_pending() = 0;       // raw frames queued and allowed to go before a Beast write
    virtual void beast_parked() = 0;      // a Beast write waits: flush what is queued first
    virtual void beast_write_done() = 0;  // a Beast write completed: raw writes may resume
};

class write_gate {
public:
    // Any thread, under the session's mutex: what send() queued and no write has taken yet.
    send_queue& pending() noexcept { return pending_; }
    send_queue const& pending() const noexcept { return pending_; }

    // The rest only on the session's loop.
    bool raw_busy() const noexcept { return raw_busy_; }
    bool beast_busy() const noexcept { return beast_busy_; }

    // Under the session's mutex: pending becomes the write in flight (writing() was empty).
    void take_pending() noexcept { pending_.take(writing_); }
    // The iovecs of what take_pending took: one per chunk, built into a buffer kept between rounds.
    std::vector<net::const_buffer> const& gather() {
        buffers_.clear();
        for (auto const& c : writing_.chunks()) buffers_.emplace_back(c.bytes().data(), c.bytes().size());
        return buffers_;
    }
    // The kernel took the first `n` bytes (fewer than all) at once: the rest is what is left to write.
    std::vector<net::const_buffer> const& skip(std::size_t n) {
        auto it = buffers_.begin();
        while (n >= it->size()) {
            n -= it->size();
            ++it;
        }
        *it += n;
        buffers_.erase(buffers_.begin(), it);
        return buffers_;
    }
    send_queue const& writing() const noexcept { return writing_; }
    // The raw write is done with its frames (written or failed): they are released now, and the
    // spare run buffer goes back to pending (call under the session's mutex).
    void release_writing() noexcept { writing_.clear(); }
    void recycle_spare() noexcept { pending_.adopt_spare(writing_); }

    void raw_started() noexcept { raw_busy_ = true; }
    void raw_finished() noexcept { raw_busy_ = false; }
    void beast_started() noexcept { beast_busy_ = true; }
    void beast_finished() noexcept { beast_busy_ = false; }

    // A Beast write waiting for the raw side (one at a time: Beast has one write in flight).
    void park(std::function<void()> write) { parked_ = std::move(write); }
    bool has_parked() const noexcept { return static_cast<bool>(parked_); }
    void drop_parked() { parked_ = nullptr; }
    void run_parked() {
        auto p = std::move(parked_);
        parked_ = nullptr;
        p();
    }

    // Raw data queued before the parked Beast write goes after the raw write in flight, before it.
    bool flush_before_beast = false;

private:
    send_queue pending_;
    send_queue writing_;
    std::vector<net::const_buffer> buffers_;
    std::function<void()> parked_;
    bool raw_busy_ = false;
    bool beast_busy_ = false;
};

// The next layer of the websocket::stream: every byte Beast writes passes here and waits at the
// gate while a raw write is in flight or raw data queued before it is pending; raw writes in turn
// wait while Beast writes. It also replays bytes that arrived after the upgrade request in the
// same read (they belong to the WebSocket).
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

    write_gate& gate() noexcept { return gate_; }
    void set_owner(std::weak_ptr<gate_owner> owner) { owner_ = std::move(owner); }
    void set_prefix(std::string bytes) { prefix_ = std::move(bytes); }

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
                if (gate_.raw_busy() || (owner && owner->raw_pending())) {
                    auto hp = std::make_shared<decltype(handler)>(std::move(handler));
                    gate_.park([this, hp, bufs] { start_beast(std::move(*hp), bufs); });
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
        gate_.beast_started();
        next_.async_write_some(bufs, [this, h = std::move(handler)](error_code ec, std::size_t n) mutable {
            gate_.beast_finished();
            // Keeps the session (and this gate) alive past the handler, which may drop the last reference.
            auto owner = owner_.lock();
            std::move(h)(ec, n);
            if (owner) owner->beast_write_done();
        });
    }

    Next next_;
    write_gate gate_;
    std::weak_ptr<gate_owner> owner_;
    std::string prefix_;
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

}  // namespace wsig::detail
