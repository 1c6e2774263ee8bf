// Private to the server: the HTTP side of a connection, templated on the stream (plain TCP or TLS).
// http_session reads requests with Beast, answers them, and hands an accepted upgrade to a
// ws_session (ws_session.hpp) with the 101 to write.
#pragma once

#include "server/state.hpp"
#include "server/ws_session.hpp"

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

#include <fmt/format.h>

#include <sys/ioctl.h>
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

// The HTTP side of a plain connection (Beast's timeouts bound requests); a WebSocket takes its
// descriptor alone, out of Asio's reactor into its loop's epoll set (ws_session.hpp).
using plain_stream = beast::basic_stream<tcp, net::io_context::executor_type>;

template <class Stream>
constexpr bool is_tls_v = !std::is_same_v<Stream, plain_stream>;

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
        if (expected_socket_ending(ec) || ec == beast::http::error::end_of_stream) {
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
            auto& accepted = std::get<upgrade_plan>(plan);
            auto handshake = switching_protocols(req, accepted.info);
            if constexpr (is_tls_v<Stream>) {
                std::make_shared<ws_session<Stream>>(st_, loop_, std::move(stream_), std::move(accepted))
                    ->run(std::move(handshake), leftover);
            } else {
                // The descriptor leaves Asio for the loop's epoll set; one that cannot is closed.
                error_code released;
                int fd = std::move(stream_).release_socket().release(released);
                int one = 1;
                if (!released && ::ioctl(fd, FIONBIO, &one) != 0)
                    released.assign(errno, boost::system::system_category());
                if (released) {
                    if (fd >= 0) ::close(fd);
                    --st_.ws_count;  // plan_upgrade's reservation
                    return fail(released, "upgrade");
                }
                std::make_shared<ws_session<plain_tcp>>(st_, loop_, plain_tcp{fd}, std::move(accepted))
                    ->run(std::move(handshake), leftover);
            }
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
