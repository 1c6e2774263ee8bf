// Private to the server: the TCP socket of a plain WebSocket session, watched by its event loop's
// own edge-triggered epoll set instead of Asio's reactor.
//
// Why: Asio's reactor starts every read with a speculative recvmsg, and after a small message that
// recvmsg always fails with EAGAIN. For an echo that is one syscall in three. Here a read that
// comes back short (or with EAGAIN) marks the socket drained, and the next read waits for the next
// edge without a syscall, as nginx does. A short read means the receive queue was empty at that
// moment; whatever arrives after it raises a new edge.
//
// The interface is the part of an Asio stream socket that Beast and the session use: an
// AsyncReadStream and AsyncWriteStream, a non-blocking write_some, shutdown and close.
// Everything happens on the loop's thread.
#pragma once

#include "net/event_loop.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/socket_base.hpp>
#include <boost/beast/core/bind_handler.hpp>

#include <array>
#include <cerrno>
#include <cstddef>
#include <memory>
#include <utility>
#include <vector>

#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

namespace wsig::detail {

class epoll_socket {
    using error_code = boost::system::error_code;
    using handler = boost::asio::any_completion_handler<void(error_code, std::size_t)>;
    enum direction : std::size_t { in = 0, out = 1 };

    // The outcome of one recvmsg/sendmsg attempt; `done` is false when the socket had nothing
    // (EAGAIN): the operation waits for the next edge.
    struct attempt {
        bool done = false;
        error_code ec;
        std::size_t n = 0;
    };

    // Heap-allocated so the socket moves freely while the loop holds a weak reference to the state.
    class state final : public io_watch {
    public:
        state(event_loop& l, int socket) : loop(l), fd(socket) {}
        // The last owner may be another thread (a broadcast's copy of the session): the epoll set
        // is only touched on the loop's thread, and until then its weak reference finds nothing.
        state(state const&) = delete;  // pinned: the loop's watch and pending handlers point at it
        state& operator=(state const&) = delete;
        state(state&&) = delete;
        state& operator=(state&&) = delete;
        // NOLINTNEXTLINE(bugprone-exception-escape): post throws only if it cannot allocate: terminate then
        ~state() override {
            if (fd < 0) return;
            if (loop.running_here()) {
                close();
                return;
            }
            boost::asio::post(loop.get_executor(), [l = &loop, socket = fd, k = key] {
                l->unwatch(socket, k);
                ::close(socket);
            });
        }

        event_loop& loop;
        int fd;
        std::uint64_t key = 0;
        std::array<bool, 2> ready{true, true};  // may have data / room: try the syscall first
        bool hung_up = false;                   // the peer's FIN (or an error) was seen: no edge will follow it
        std::array<handler, 2> waiting;         // parked until the next edge
        std::array<std::vector<iovec>, 2> iov;
        std::array<std::size_t, 2> total{0, 0};

        template <class Buffers>
        void set_buffers(direction d, Buffers const& buffers) {
            auto& v = iov[d];
            v.clear();
            total[d] = 0;
            // NOLINTNEXTLINE(readability-qualified-auto): a pointer for one buffer, an iterator for a sequence
            for (auto it = boost::asio::buffer_sequence_begin(buffers); it != boost::asio::buffer_sequence_end(buffers);
                 ++it) {
                boost::asio::const_buffer b(*it);
                if (b.size() == 0) continue;
                if (v.size() == IOV_MAX) break;  // a shorter write_some is allowed
                // NOLINTNEXTLINE(cppcoreguidelines-pro-type-const-cast): iovec is non-const for reads and writes
                v.push_back(iovec{const_cast<void*>(b.data()), b.size()});
                total[d] += b.size();
            }
        }

        // One buffer (a read, and nearly every write): recv/send, which copy no msghdr and import
        // no iovec array from user space (measured: about 1.5% of an echo's kernel time).
        ssize_t call(direction d, msghdr& msg) const {
            if (msg.msg_iovlen == 1) {
                auto const& b = msg.msg_iov[0];
                return d == in ? ::recv(fd, b.iov_base, b.iov_len, 0) : ::send(fd, b.iov_base, b.iov_len, MSG_NOSIGNAL);
            }
            return d == in ? ::recvmsg(fd, &msg, 0) : ::sendmsg(fd, &msg, MSG_NOSIGNAL);
        }

        attempt perform(direction d) {
            msghdr msg{};
            msg.msg_iov = iov[d].data();
            msg.msg_iovlen = iov[d].size();
            for (;;) {
                ssize_t const r = call(d, msg);
                if (r >= 0) {
                    auto const n = static_cast<std::size_t>(r);
                    if (d == in && n == 0) return {true, boost::asio::error::eof, 0};
                    // Short: drained (in) or full (out) until the next edge. Not after a hang-up: a
                    // FIN that came with the data is read after it, and no edge announces it again.
                    ready[d] = n == total[d] || hung_up;
                    return {true, {}, n};
                }
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    ready[d] = false;
                    return {false, {}, 0};
                }
                return {true, error_code(errno, boost::system::system_category()), 0};
            }
        }

        // An edge: complete what waits for it (the loop holds this state through the call).
        void on_io(std::uint32_t events) override {
            if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) hung_up = true;
            if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
                ready[in] = true;
                resume(in);
            }
            if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) {
                ready[out] = true;
                resume(out);
            }
        }

        void resume(direction d) {
            if (!waiting[d] || fd < 0) return;
            auto r = perform(d);
            if (!r.done) return;
            auto h = std::move(waiting[d]);
            // On the loop's thread, outside any initiating function: the handler runs here.
            std::move(h)(r.ec, r.n);
        }

        // NOLINTNEXTLINE(bugprone-exception-escape): post throws only if it cannot allocate: terminate then
        void close() noexcept {
            if (fd < 0) return;
            loop.unwatch(fd, key);
            ::close(fd);
            fd = -1;
            for (auto d : {in, out}) {
                if (!waiting[d]) continue;
                boost::asio::post(loop.get_executor(), [h = std::move(waiting[d])]() mutable {
                    std::move(h)(boost::asio::error::operation_aborted, 0);
                });
                waiting[d] = nullptr;
            }
        }
    };

public:
    using executor_type = event_loop::executor_type;

    // Takes `fd` (a connected TCP socket) into the loop's epoll set; `ec` says if that failed
    // (the socket is then closed).
    epoll_socket(event_loop& loop, int fd, error_code& ec) : st_(std::make_shared<state>(loop, fd)) {
        int one = 1;
        if (::ioctl(fd, FIONBIO, &one) != 0) {
            ec.assign(errno, boost::system::system_category());
        } else {
            st_->key = loop.watch(fd, st_, ec);
        }
        if (ec) {
            ::close(fd);
            st_->fd = -1;
        }
    }

    executor_type get_executor() const noexcept { return st_->loop.get_executor(); }
    bool is_open() const noexcept { return st_->fd >= 0; }

    template <class MutableBuffers, class Token>
    auto async_read_some(MutableBuffers const& buffers, Token&& token) {
        return start<MutableBuffers>(in, buffers, std::forward<Token>(token));
    }

    template <class ConstBuffers, class Token>
    auto async_write_some(ConstBuffers const& buffers, Token&& token) {
        return start<ConstBuffers>(out, buffers, std::forward<Token>(token));
    }

    // Writes what the socket takes now (0 with would_block when it takes nothing).
    template <class ConstBuffers>
    std::size_t write_some(ConstBuffers const& buffers, error_code& ec) {
        auto& s = *st_;
        if (s.fd < 0) {
            ec = boost::asio::error::bad_descriptor;
            return 0;
        }
        if (s.waiting[out]) {  // an asynchronous write is in flight: nothing may overtake it
            ec = boost::asio::error::would_block;
            return 0;
        }
        s.set_buffers(out, buffers);
        if (s.total[out] == 0) {
            ec = {};
            return 0;
        }
        auto r = s.perform(out);
        ec = r.done ? r.ec : make_error_code(boost::asio::error::would_block);
        return r.n;
    }

    void shutdown(boost::asio::socket_base::shutdown_type what, error_code& ec) {
        if (st_->fd < 0) {
            ec = boost::asio::error::bad_descriptor;
            return;
        }
        ec = {};
        if (::shutdown(st_->fd, static_cast<int>(what)) != 0) ec.assign(errno, boost::system::system_category());
    }

    // Closes the socket; waiting operations complete with operation_aborted.
    void close(error_code& ec) {
        ec = {};
        st_->close();
    }

    // At exit, after the loop stopped: waiting handlers (they hold their session) are dropped.
    void drop_waiting() noexcept {
        for (auto& h : st_->waiting) h = nullptr;
    }

private:
    template <class Buffers, class Token>
    auto start(direction d, Buffers const& buffers, Token&& token) {
        return boost::asio::async_initiate<Token, void(error_code, std::size_t)>(
            [st = st_, d](auto h, Buffers const& bufs) {
                auto& s = *st;
                auto complete_soon = [&](error_code ec, std::size_t n) {
                    boost::asio::post(s.loop.get_executor(), boost::beast::bind_front_handler(std::move(h), ec, n));
                };
                if (s.fd < 0) return complete_soon(boost::asio::error::bad_descriptor, 0);
                if (s.waiting[d]) return complete_soon(boost::asio::error::in_progress, 0);
                s.set_buffers(d, bufs);
                if (s.total[d] == 0) return complete_soon({}, 0);
                if (s.ready[d]) {
                    auto r = s.perform(d);
                    if (r.done) return complete_soon(r.ec, r.n);
                }
                // Boost 1.81's any_completion_handler move-assignment recurses (it copies from an
                // lvalue through its converting constructor): construct, then swap.
                handler parked(std::move(h));
                s.waiting[d].swap(parked);
            },
            token, buffers);
    }

    std::shared_ptr<state> st_;
};

// Beast's close_socket (used when a WebSocket handshake or close times out).
inline void beast_close_socket(epoll_socket& s) {
    boost::system::error_code ignored;
    s.close(ignored);
}

}  // namespace wsig::detail
