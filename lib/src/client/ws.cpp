// The WebSocket client: one connection type for ws and wss, the `listen` loop around it
// (output, --count/--until, timers, signals, stdin, reconnects) and `send ws://`.
#include "client/detail.hpp"

#include <wsig/envelope.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include <fmt/format.h>
#include <openssl/ssl.h>

#include <unistd.h>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>

namespace wsig::detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

// 30 s for TCP connect plus the TLS handshake: the kernel's own SYN retries take minutes.
constexpr auto connect_timeout = std::chrono::seconds(30);

bool is_protocol_close(int code) {
    // 1002 protocol error, 1003 unacceptable data, 1007 bad payload, 1009 too big, 1010 extension
    return code == 1002 || code == 1003 || code == 1007 || code == 1009 || code == 1010;
}

bool is_server_failure_close(int code) {
    // 1011 internal error, 1012 restart, 1013 try again later, 1014 bad gateway: the 5xx of closes
    return code >= 1011 && code <= 1014;
}

bool is_normal_close(int code) {
    // 1005 (no status): Pode's own close frames carry no code.
    return code == 1000 || code == 1001 || code == 1005;
}

bool is_connection_loss(error_code const& ec) {
    return ec == asio::error::eof || ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
           ec == asio::error::connection_aborted || ec == asio::error::not_connected ||
           ec == asio::ssl::error::stream_truncated || ec == beast::error::timeout || ec == asio::error::timed_out;
}

std::string header_value(http::fields const& f, std::string_view name) {
    return std::string(f[name]);
}

template <bool Tls>
class ws_conn final : public ws_client, public std::enable_shared_from_this<ws_conn<Tls>> {
    using next_layer = std::conditional_t<Tls, beast::ssl_stream<beast::tcp_stream>, beast::tcp_stream>;

public:
    template <class... Args>
    ws_conn(asio::io_context& ioc, url_parts url, ws_connect_options opts, ws_events events, Args&&... args)
        : resolver_(ioc),
          ws_(std::forward<Args>(args)...),
          url_(std::move(url)),
          opts_(std::move(opts)),
          events_(std::move(events)) {}

    void start() override {
        resolver_.async_resolve(url_.host, url_.port,
                                [self = this->shared_from_this()](error_code ec, tcp::resolver::results_type r) {
                                    self->on_resolve(ec, std::move(r));
                                });
    }

    void send(std::string data, bool binary) override {
        if (ended_ || close_requested_) return;
        queued_bytes_ += data.size();
        outbox_.emplace_back(std::move(data), binary);
        if (open_ && !writing_) do_write();
    }

    void close(std::uint16_t code, std::string reason, bool flush) override {
        if (ended_ || close_requested_) return;
        if (!open_) return abort();
        close_requested_ = true;
        close_want_.code = code;
        close_want_.reason.assign(reason.data(), std::min(reason.size(), close_want_.reason.max_size()));
        if (!flush && outbox_.size() > (writing_ ? 1u : 0u)) {
            outbox_.resize(writing_ ? 1 : 0);
            queued_bytes_ = outbox_.empty() ? 0 : outbox_.front().first.size();
        }
        if (!writing_ && outbox_.empty()) do_close();
    }

    void abort() override {
        if (ended_) return;
        conn_end e = base_end();
        e.code = exit_code::unavailable;
        e.message = "connection dropped";
        finish(e);
    }

    bool is_open() const override { return open_ && !ended_; }

private:
    conn_end base_end() const {
        conn_end e;
        e.opened = open_;
        e.all_sent = outbox_.empty() && !writing_;
        return e;
    }

    void fail(exit_code code, std::string message) {
        if (ended_) return;
        conn_end e = base_end();
        e.code = code;
        e.message = std::move(message);
        finish(e);
    }

    // Every path ends here once: the socket is shut so pending operations complete and release us.
    void finish(conn_end const& e) {
        if (ended_) return;
        ended_ = true;
        resolver_.cancel();
        error_code ignored;
        beast::get_lowest_layer(ws_).socket().shutdown(tcp::socket::shutdown_both, ignored);
        beast::get_lowest_layer(ws_).socket().close(ignored);
        if (events_.on_end) {
            auto on_end = std::move(events_.on_end);  // the callback may drop its last reference to us
            events_ = {};
            on_end(e);
        }
    }

    void on_resolve(error_code ec, tcp::resolver::results_type results) {
        if (ended_) return;
        if (ec) return fail(exit_code::unavailable, fmt::format("cannot resolve {}: {}", url_.host, ec.message()));
        beast::get_lowest_layer(ws_).expires_after(connect_timeout);
        beast::get_lowest_layer(ws_).async_connect(
            results, [self = this->shared_from_this()](error_code e, tcp::endpoint const&) { self->on_connect(e); });
    }

    void on_connect(error_code ec) {
        if (ended_) return;
        if (ec)
            return fail(exit_code::unavailable,
                        fmt::format("cannot connect to {}:{}: {}", url_.host, url_.port, ec.message()));
        if constexpr (Tls) {
            auto& tls = ws_.next_layer();
            // SNI: virtual hosts pick their certificate by it.
            if (!set_sni(tls.native_handle(), url_.host))
                return fail(exit_code::protocol, "TLS: cannot set the server name");
            if (!opts_.insecure) {
                error_code verify_ec;
                tls.set_verify_callback(asio::ssl::host_name_verification(url_.host), verify_ec);
                if (verify_ec)
                    return fail(exit_code::protocol,
                                fmt::format("TLS: cannot check the host name: {}", verify_ec.message()));
            }
            tls.async_handshake(asio::ssl::stream_base::client,
                                [self = this->shared_from_this()](error_code e) { self->on_tls(e); });
        } else {
            do_handshake();
        }
    }

    void on_tls(error_code ec) {
        if (ended_) return;
        if (ec)
            return fail(exit_code::protocol, fmt::format("TLS handshake with {} failed: {}", url_.host, ec.message()));
        do_handshake();
    }

    void do_handshake() {
        beast::get_lowest_layer(ws_).expires_never();  // the websocket stream keeps its own timeouts now
        ws_.set_option(websocket::stream_base::timeout::suggested(beast::role_type::client));
        ws_.set_option(websocket::stream_base::decorator([o = opts_](websocket::request_type& req) {
            req.set(http::field::user_agent, user_agent());
            if (!o.origin.empty()) req.set(http::field::origin, o.origin);
            if (!o.api_key.empty()) req.set(http::field::authorization, "Bearer " + o.api_key);
            apply_headers(req, o.headers);
        }));
        ws_.read_message_max(opts_.max_message_size);
        // Beast 1.81's secure PRNG (core/detail/chacha.hpp) uses ctr_/16 as the block counter while
        // ctr_ counts blocks, so masking keys repeat every 16 frames (RFC 6455 5.3 wants a fresh key
        // per frame). Its PCG, seeded from std::random_device, gives a fresh key per frame; it is
        // not a CSPRNG, which matters for a browser running hostile scripts, not for this client.
        ws_.secure_prng(false);
        ws_.control_callback([this](websocket::frame_type kind, std::string_view) {
            if (kind == websocket::frame_type::close) got_close_frame_ = true;
        });
        // Pode loses frames of a fragmented message with pings in between: one frame per message.
        ws_.auto_fragment(false);
        ws_.async_handshake(res_, url_.host_header(), url_.target,
                            [self = this->shared_from_this()](error_code ec) { self->on_handshake(ec); });
    }

    void on_handshake(error_code ec) {
        if (ended_) return;
        if (ec == websocket::error::upgrade_declined) {
            int const status = res_.result_int();
            std::string body = res_.body().substr(0, 200);
            while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
            auto msg = fmt::format("upgrade of {}{} answered {} {}{}{}", url_.host_header(), url_.target, status,
                                   std::string(res_.reason()), body.empty() ? "" : ": ", body);
            if (status == 401 || status == 403) return fail(exit_code::no_permission, std::move(msg));
            if (status >= 500) return fail(exit_code::unavailable, std::move(msg));
            return fail(exit_code::protocol, std::move(msg));
        }
        if (ec == asio::error::connection_reset || ec == asio::error::eof || ec == beast::error::timeout ||
            ec == asio::ssl::error::stream_truncated)
            return fail(exit_code::unavailable, fmt::format("the server dropped the upgrade: {}", ec.message()));
        if (ec) return fail(exit_code::protocol, fmt::format("WebSocket handshake failed: {}", ec.message()));
        open_ = true;
        handshake_info info;
        if (auto id = header_value(res_, "X-Pode-Signal-Client-Id"); !id.empty())
            info.client_id = id;
        else if (auto legacy = header_value(res_, "X-Pode-ClientId"); !legacy.empty())
            info.client_id = legacy;
        if (auto n = header_value(res_, "X-Pode-Signal-Name"); !n.empty()) info.name = n;
        if (auto g = header_value(res_, "X-Pode-Signal-Group"); !g.empty()) info.group = g;
        res_ = {};
        auto self = this->shared_from_this();  // on_open may abort us
        if (events_.on_open) events_.on_open(info);
        if (ended_) return;
        do_read();
        if (!writing_ && !outbox_.empty())
            do_write();
        else if (close_requested_ && !writing_ && outbox_.empty())
            do_close();
    }

    void do_read() {
        ws_.async_read(buffer_, [self = this->shared_from_this()](error_code ec, std::size_t) { self->on_read(ec); });
    }

    void on_read(error_code ec) {
        if (ended_) return;
        if (ec) return on_read_error(ec);
        std::string data = beast::buffers_to_string(buffer_.data());
        buffer_.consume(buffer_.size());
        bool const binary = !ws_.got_text();
        auto self = this->shared_from_this();
        if (events_.on_message) events_.on_message(std::move(data), binary);
        if (ended_) return;
        // Backpressure (--echo, --stdin): a peer that sends but does not read is not read either,
        // so the outbox stays bounded by about one --max-message-size.
        if (queued_bytes_ >= opts_.max_message_size) {
            read_paused_ = true;
            return;
        }
        do_read();
    }

    void on_read_error(error_code ec) {
        // Pode sends an empty close frame and drops TCP at once: Beast's reply then fails with
        // ENOTCONN/EPIPE, but the server did close properly, so that counts as its close.
        if (ec == websocket::error::closed || (got_close_frame_ && is_connection_loss(ec))) {
            conn_end e = base_end();
            e.close_frame = true;
            e.server_closed = !closing_;
            e.close_code = ws_.reason().code == websocket::close_code::none ? 1005 : ws_.reason().code;
            e.reason = std::string(ws_.reason().reason.c_str());
            e.code = exit_code::ok;
            return finish(e);
        }
        if (ec == asio::error::operation_aborted && closing_) return;  // on_close reports
        if (ec == websocket::error::message_too_big)
            return fail(exit_code::protocol,
                        fmt::format("a message exceeded --max-message-size ({} bytes): closed with 1009",
                                    opts_.max_message_size));
        if (is_connection_loss(ec))
            return fail(exit_code::unavailable, fmt::format("connection lost without a close frame: {}", ec.message()));
        if (ec.category() == make_error_code(websocket::error::closed).category() ||
            ec == websocket::condition::protocol_violation)
            return fail(exit_code::protocol, fmt::format("protocol error from the server: {}", ec.message()));
        fail(exit_code::unavailable, fmt::format("read failed: {}", ec.message()));
    }

    void do_write() {
        writing_ = true;
        ws_.text(!outbox_.front().second);
        ws_.async_write(asio::buffer(outbox_.front().first),
                        [self = this->shared_from_this()](error_code ec, std::size_t) { self->on_write(ec); });
    }

    void on_write(error_code ec) {
        writing_ = false;
        if (ended_) return;
        if (ec) {
            if (ec == websocket::error::closed || ec == asio::error::operation_aborted) return;  // the read reports
            return fail(exit_code::unavailable, fmt::format("write failed: {}", ec.message()));
        }
        queued_bytes_ -= outbox_.front().first.size();
        outbox_.pop_front();
        if (read_paused_ && queued_bytes_ < opts_.max_message_size) {
            read_paused_ = false;
            do_read();
        }
        if (!outbox_.empty())
            do_write();
        else if (close_requested_)
            do_close();
    }

    void do_close() {
        if (closing_) return;
        closing_ = true;
        ws_.async_close(close_want_, [self = this->shared_from_this()](error_code ec) { self->on_close(ec); });
    }

    void on_close(error_code ec) {
        if (ended_) return;
        conn_end e = base_end();
        if (!ec || ec == websocket::error::closed) {
            e.close_frame = true;
            e.close_code = close_want_.code;
            e.reason = std::string(close_want_.reason.c_str());
            e.code = exit_code::ok;
            return finish(e);
        }
        e.code = exit_code::unavailable;
        e.message = fmt::format("close handshake failed: {}", ec.message());
        finish(e);
    }

    tcp::resolver resolver_;
    websocket::stream<next_layer> ws_;
    url_parts url_;
    ws_connect_options opts_;
    ws_events events_;
    websocket::response_type res_;
    beast::flat_buffer buffer_;
    std::deque<std::pair<std::string, bool>> outbox_;  // (payload, binary); front is being written
    websocket::close_reason close_want_;
    bool open_ = false;
    bool writing_ = false;
    bool close_requested_ = false;
    bool closing_ = false;
    bool ended_ = false;
    bool got_close_frame_ = false;
    bool read_paused_ = false;  // backpressure: no read until the outbox drains
    std::size_t queued_bytes_ =
        0;  // payload bytes in outbox_  // the server's close frame arrived (even if the TCP teardown failed)
};

}  // namespace

std::shared_ptr<ws_client> make_ws_connection(asio::io_context& ioc, asio::ssl::context* tls_ctx, url_parts const& url,
                                              ws_connect_options const& opts, ws_events events) {
    if (url.tls) return std::make_shared<ws_conn<true>>(ioc, url, opts, std::move(events), ioc, *tls_ctx);
    return std::make_shared<ws_conn<false>>(ioc, url, opts, std::move(events), ioc);
}

namespace {

// Lines of stdin, read by a thread (stdin may be a file or /dev/null, which epoll refuses) and
// posted to the I/O loop; close() guarantees nothing is posted after it returns.
class stdin_reader {
public:
    using line_fn = std::function<void(std::string)>;
    using eof_fn = std::function<void()>;

    static std::shared_ptr<stdin_reader> start(asio::io_context& ioc, std::size_t max_line, line_fn on_line,
                                               eof_fn on_eof) {
        auto r = std::shared_ptr<stdin_reader>(new stdin_reader(ioc, std::move(on_line), std::move(on_eof)));
        r->max_line_ = max_line;
        std::thread([r] { r->loop(); }).detach();
        return r;
    }

    void close() {
        std::lock_guard lock(mutex_);
        closed_ = true;
    }

private:
    stdin_reader(asio::io_context& ioc, line_fn on_line, eof_fn on_eof)
        : ioc_(ioc), on_line_(std::move(on_line)), on_eof_(std::move(on_eof)) {}

    bool post(std::function<void()> fn) {
        std::lock_guard lock(mutex_);
        if (closed_) return false;
        asio::post(ioc_, std::move(fn));
        return true;
    }

    void loop() {
        std::string pending;
        bool discarding = false;
        char buf[65536];
        for (;;) {
            ssize_t const n = ::read(STDIN_FILENO, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            pending.append(buf, static_cast<std::size_t>(n));
            std::size_t start = 0;
            for (auto nl = pending.find('\n'); nl != std::string::npos; nl = pending.find('\n', start)) {
                std::string line = pending.substr(start, nl - start);
                if (!line.empty() && line.back() == '\r') line.pop_back();
                start = nl + 1;
                if (std::exchange(discarding, false)) continue;  // the tail of a dropped line
                if (!post([fn = on_line_, l = std::move(line)]() mutable { fn(std::move(l)); })) return;
            }
            pending.erase(0, start);
            if (pending.size() > max_line_) {  // a line longer than a message may be: dropped, memory bounded
                if (!discarding)
                    std::fputs("wsig: warning: a stdin line over --max-message-size was dropped\n", stderr);
                discarding = true;
                pending.clear();
            }
        }
        if (!pending.empty() && !discarding &&
            !post([fn = on_line_, l = std::move(pending)]() mutable { fn(std::move(l)); }))
            return;
        post(on_eof_);
    }

    asio::io_context& ioc_;
    line_fn on_line_;
    eof_fn on_eof_;
    std::mutex mutex_;
    bool closed_ = false;
    std::size_t max_line_ = 0;
};

nlohmann::json json_or_null(std::optional<std::string> const& v) {
    return v ? nlohmann::json(*v) : nlohmann::json();
}

// The most queued stdin lines kept while disconnected: a bound, not a buffer for hours of input.
constexpr std::size_t max_pending_lines = 10000;
// How long a close handshake may take at the end before the TCP connection is dropped.
constexpr auto close_grace = std::chrono::seconds(2);

class listen_session {
public:
    explicit listen_session(listen_options const& opts)
        : opts_(opts), signals_(ioc_), deadline_(ioc_), idle_(ioc_), grace_(ioc_), retry_(ioc_) {}

    client_result run() {
        auto u = parse_url(opts_.url);
        if (!u) return {exit_code::usage, u.error().message};
        url_ = *u;
        if (url_.scheme != "ws" && url_.scheme != "wss")
            return {exit_code::usage, fmt::format("listen needs a ws:// or wss:// URL, not '{}'", opts_.url)};
        if (opts_.until) {
            auto m = make_matcher(*opts_.until);
            if (!m) return {exit_code::usage, fmt::format("--until '{}': {}", *opts_.until, m.error().message)};
            until_ = std::move(*m);
        }
        if (url_.tls) {
            auto ctx = make_tls_context(opts_.tls);
            if (!ctx) return {exit_code::config, ctx.error().message};
            tls_ctx_ = *ctx;
        }
        for (auto const& data : opts_.send) {
            auto p = payload(data);
            if (!p) return {exit_code::data_error, fmt::format("--send '{}': {}", data, p.error().message)};
            initial_.push_back(std::move(*p));
        }
        if (opts_.handle_signals) {
            signals_.add(SIGINT);
            signals_.add(SIGTERM);
            wait_signal();
        }
        if (opts_.timeout.count() > 0) {
            deadline_.expires_after(opts_.timeout);
            deadline_.async_wait([this](error_code ec) {
                if (ec) return;
                end(exit_code::timeout,
                    fmt::format("--timeout {} ms expired after {} message(s)", opts_.timeout.count(), received_));
            });
        }
        if (opts_.read_stdin)
            stdin_ = stdin_reader::start(
                ioc_, opts_.max_message_size, [this](std::string const& line) { on_stdin_line(line); },
                [this] { on_stdin_eof(); });
        connect();
        ioc_.run();
        if (stdin_) stdin_->close();
        return result_;
    }

private:
    result<std::string> payload(std::string const& data) const {
        nlohmann::json message = data;
        if (opts_.json) {
            auto j = parse_json_data(data);
            if (!j) return j.error();
            if (opts_.raw) return j->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
            message = std::move(*j);
        } else if (opts_.raw) {
            return data;
        }
        auto const& t = opts_.target;
        return make_envelope(message, t.path, t.client_ids, t.groups, t.direct);
    }

    void wait_signal() {
        signals_.async_wait([this](error_code ec, int sig) {
            if (ec) return;
            exit_code const code = sig == SIGINT ? exit_code::sigint : exit_code::sigterm;
            if (finishing_) {  // a second signal: no more waiting for the close handshake
                result_ = {code, fmt::format("interrupted by {}", sig == SIGINT ? "SIGINT" : "SIGTERM")};
                return stop();
            }
            wait_signal();
            end(code, fmt::format("interrupted by {}", sig == SIGINT ? "SIGINT" : "SIGTERM"));
        });
    }

    void connect() {
        ++generation_;
        ws_connect_options co{.origin = opts_.origin,
                              .api_key = {},
                              .headers = opts_.headers,
                              .max_message_size = opts_.max_message_size,
                              .insecure = opts_.tls.insecure};
        auto const gen = generation_;
        ws_events ev{
            .on_open =
                [this, gen](handshake_info const& info) {
                    if (gen == generation_) on_open(info);
                },
            .on_message =
                [this, gen](std::string&& data, bool binary) {
                    if (gen == generation_) on_message(std::move(data), binary);
                },
            .on_end =
                [this, gen](conn_end const& e) {
                    if (gen == generation_) on_end(e);
                },
        };
        conn_ = make_ws_connection(ioc_, tls_ctx_.get(), url_, co, std::move(ev));
        conn_->start();
    }

    void emit(nlohmann::ordered_json event) {
        if (opts_.output != output_format::jsonl || pipe_closed_) return;
        nlohmann::ordered_json line;
        line["event"] = event["event"];
        line["ts"] = rfc3339_now();
        for (auto const& [k, v] : event.items())
            if (k != "event") line[k] = v;
        write_out(line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
    }

    // false when stdout is gone (EPIPE: `| head -1`): the listener then ends quietly with 0.
    bool write_out(std::string const& text) {
        if (pipe_closed_) return false;
        if (write_all(opts_.out_fd, text)) return true;
        pipe_closed_ = true;
        int const err = errno;
        if (err == EPIPE)
            end(exit_code::ok, "");
        else
            end(exit_code::negative, fmt::format("cannot write the output: {}", std::strerror(err)));
        return false;
    }

    void on_open(handshake_info const& info) {
        backoff_ = opts_.reconnect_delay;
        std::string note = fmt::format("wsig: connected to {}\n", opts_.url);
        if (info.client_id) note += fmt::format("X-Pode-Signal-Client-Id: {}\n", *info.client_id);
        if (info.name) note += fmt::format("X-Pode-Signal-Name: {}\n", *info.name);
        if (info.group) note += fmt::format("X-Pode-Signal-Group: {}\n", *info.group);
        std::fputs(note.c_str(), stderr);
        if (!opts_.id_file.empty()) {
            // The client ID is a bearer credential (it lets anyone push to this listener): owner only.
            if (auto w = write_file_atomically(opts_.id_file, info.client_id.value_or("") + "\n", 0600); !w)
                return end(exit_code::config, fmt::format("--id-file: {}", w.error().message));
        }
        emit({{"event", "open"},
              {"url", opts_.url},
              {"client_id", json_or_null(info.client_id)},
              {"name", json_or_null(info.name)},
              {"group", json_or_null(info.group)}});
        if (finishing_) return;
        for (auto const& p : initial_) conn_->send(p, false);
        while (!pending_.empty()) {
            conn_->send(std::move(pending_.front()), false);
            pending_.pop_front();
        }
        if (stdin_eof_ && opts_.exit_on_eof) return end(exit_code::ok, "", true);
        arm_idle();
    }

    void arm_idle() {
        if (opts_.idle_timeout.count() <= 0) return;
        idle_.expires_after(opts_.idle_timeout);
        idle_.async_wait([this](error_code ec) {
            if (ec) return;
            end(exit_code::timeout, fmt::format("--idle-timeout: no message for {} ms after {} message(s)",
                                                opts_.idle_timeout.count(), received_));
        });
    }

    void on_message(std::string&& data, bool binary) {
        if (finishing_) return;
        ++received_;
        bool const matched = until_ && until_(data);
        if (opts_.output == output_format::text) {
            std::string line;
            line.reserve(data.size() + 1);
            line.append(data).push_back('\n');
            if (!write_out(line)) return;
        } else {
            nlohmann::ordered_json ev{{"event", "message"}, {"opcode", binary ? "binary" : "text"}};
            if (binary)
                ev["data_b64"] = base64_encode(data);
            else
                ev["data"] = data;
            ev["len"] = data.size();
            emit(std::move(ev));
            if (pipe_closed_) return;
        }
        if (opts_.echo) conn_->send(std::move(data), binary);
        if (matched || (opts_.count > 0 && received_ >= opts_.count)) return end(exit_code::ok, "");
        arm_idle();
    }

    void on_stdin_line(std::string const& line) {
        if (finishing_ || line.empty()) return;
        auto p = payload(line);
        if (!p) {
            std::fputs(fmt::format("wsig: warning: stdin line skipped: {}\n", p.error().message).c_str(), stderr);
            return;
        }
        if (conn_ && conn_->is_open()) return conn_->send(std::move(*p), false);
        if (pending_.size() >= max_pending_lines) {
            pending_.pop_front();
            std::fputs("wsig: warning: not connected: the oldest queued stdin line was dropped\n", stderr);
        }
        pending_.push_back(std::move(*p));
    }

    void on_stdin_eof() {
        stdin_eof_ = true;
        if (!opts_.exit_on_eof || finishing_) return;
        if (conn_ && conn_->is_open()) end(exit_code::ok, "", true);
    }

    // The listener's end: a close handshake with 1000 when connected (bounded by close_grace).
    void end(exit_code code, std::string message, bool flush = false) {
        if (finishing_) return;
        finishing_ = true;
        result_ = {code, std::move(message)};
        if (code != exit_code::ok) emit_error();
        deadline_.cancel();
        idle_.cancel();
        retry_.cancel();
        if (conn_ && conn_->is_open()) {
            conn_->close(1000, "", flush);
            grace_.expires_after(close_grace);
            grace_.async_wait([this](error_code ec) {
                if (!ec && conn_) conn_->abort();
            });
        } else if (conn_) {
            conn_->abort();
        } else {
            stop();
        }
    }

    void emit_error() { emit({{"event", "error"}, {"message", result_.message}, {"exit_code", to_int(result_.code)}}); }

    void stop() {
        grace_.cancel();
        deadline_.cancel();
        idle_.cancel();
        retry_.cancel();
        error_code ignored;
        signals_.cancel(ignored);
        if (stdin_) stdin_->close();
        ioc_.stop();
    }

    void on_end(conn_end const& e) {
        if (e.opened)
            emit({{"event", "close"},
                  {"code", e.close_code},
                  {"reason", e.reason},
                  {"by", e.server_closed ? "server" : "client"}});
        if (finishing_) {
            conn_.reset();
            return stop();
        }
        idle_.cancel();
        client_result r;
        bool const until_or_count = until_ || opts_.count > 0;
        if (e.close_frame) {
            auto const what = fmt::format("the server closed the connection with {}{}{}", e.close_code,
                                          e.reason.empty() ? "" : " ", e.reason);
            if (is_protocol_close(e.close_code))
                r = {exit_code::protocol, what};
            else if (is_server_failure_close(e.close_code))
                r = {exit_code::unavailable, what};
            else if (until_or_count)
                r = {exit_code::negative, fmt::format("{} before {} was met ({} message(s))", what,
                                                      until_ ? "--until" : "--count", received_)};
            else if (is_normal_close(e.close_code))
                r = {exit_code::ok, ""};
            else
                r = {exit_code::negative, what};
        } else {
            r = {e.code, e.message};
        }
        conn_.reset();
        bool const may_retry = opts_.reconnect != 0 && r.code != exit_code::no_permission &&
                               r.code != exit_code::config && (opts_.reconnect < 0 || reconnects_ < opts_.reconnect);
        if (may_retry) {
            ++reconnects_;
            auto const delay = backoff_;
            backoff_ = std::min(backoff_ * 2, opts_.reconnect_max_delay);
            std::fputs(fmt::format("wsig: {}; reconnecting in {} ms (attempt {})\n",
                                   r.message.empty() ? "connection closed" : r.message, delay.count(), reconnects_)
                           .c_str(),
                       stderr);
            emit({{"event", "error"},
                  {"message", r.message.empty() ? "connection closed" : r.message},
                  {"exit_code", to_int(r.code)},
                  {"reconnect_in_ms", delay.count()}});
            retry_.expires_after(delay);
            retry_.async_wait([this](error_code ec) {
                if (!ec && !finishing_) connect();
            });
            return;
        }
        finishing_ = true;
        result_ = r;
        if (r.code != exit_code::ok) emit_error();
        stop();
    }

    listen_options const& opts_;
    asio::io_context ioc_;
    asio::signal_set signals_;
    asio::steady_timer deadline_;  // --timeout
    asio::steady_timer idle_;      // --idle-timeout
    asio::steady_timer grace_;     // the closing handshake's bound
    asio::steady_timer retry_;     // --reconnect back-off
    url_parts url_;
    std::shared_ptr<asio::ssl::context> tls_ctx_;
    message_matcher until_;
    std::vector<std::string> initial_;  // --send payloads, ready to go
    std::deque<std::string> pending_;   // stdin lines waiting for a connection
    std::shared_ptr<stdin_reader> stdin_;
    std::shared_ptr<ws_client> conn_;
    std::uint64_t generation_ = 0;  // events of an older connection are ignored
    std::uint64_t received_ = 0;
    int reconnects_ = 0;
    std::chrono::milliseconds backoff_{opts_.reconnect_delay};
    bool finishing_ = false;
    bool pipe_closed_ = false;
    bool stdin_eof_ = false;
    client_result result_;
};

}  // namespace

client_result run_ws_send(send_options const& opts, url_parts const& url) {
    std::shared_ptr<asio::ssl::context> tls_ctx;
    if (url.tls) {
        auto ctx = make_tls_context(opts.tls);
        if (!ctx) return {exit_code::config, ctx.error().message};
        tls_ctx = *ctx;
    }
    nlohmann::json message = opts.data;
    if (opts.json) {
        auto j = parse_json_data(opts.data);
        if (!j) return {exit_code::data_error, j.error().message};
        message = std::move(*j);
    }
    std::optional<std::string> path = opts.path;
    if (!path && !opts.name.empty()) path = opts.name;
    std::vector<std::string> ids;
    if (!opts.client_id.empty()) ids.push_back(opts.client_id);
    std::string const env = make_envelope(message, path, ids, opts.groups, opts.direct);

    asio::io_context ioc;
    client_result result{exit_code::unavailable, "the connection ended early"};
    std::shared_ptr<ws_client> conn;
    asio::steady_timer timer(ioc);
    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    bool timed_out = false;
    int interrupted = 0;
    ws_events ev{
        .on_open =
            [&](handshake_info const&) {
                conn->send(env, false);
                conn->close(1000, "", true);
            },
        .on_message = [](std::string&&, bool) {},
        .on_end =
            [&](conn_end const& e) {
                timer.cancel();
                ioc.stop();  // the stream's own handshake timer may still be pending
                if (interrupted) {
                    result = {interrupted == SIGINT ? exit_code::sigint : exit_code::sigterm,
                              interrupted == SIGINT ? "interrupted by SIGINT" : "interrupted by SIGTERM"};
                } else if (timed_out) {
                    result = {exit_code::timeout, fmt::format("--timeout {} ms expired", opts.timeout.count())};
                } else if (e.close_frame && !e.server_closed) {
                    result = {exit_code::ok, ""};
                } else if (e.close_frame) {
                    auto what = fmt::format("the server closed the connection with {}{}{}", e.close_code,
                                            e.reason.empty() ? "" : " ", e.reason);
                    if (is_protocol_close(e.close_code))
                        result = {exit_code::protocol, what};
                    else if (is_normal_close(e.close_code) && e.all_sent)
                        result = {exit_code::ok, ""};
                    else
                        result = {exit_code::unavailable, what + (e.all_sent ? "" : " before the message was sent")};
                } else {
                    result = {e.code, e.message};
                }
            },
    };
    ws_connect_options co{.origin = {},
                          .api_key = opts.api_key,
                          .headers = opts.headers,
                          .max_message_size = 64ull * 1024 * 1024,
                          .insecure = opts.tls.insecure};
    conn = make_ws_connection(ioc, tls_ctx.get(), url, co, std::move(ev));
    if (opts.timeout.count() > 0) {
        timer.expires_after(opts.timeout);
        timer.async_wait([&](error_code ec) {
            if (ec) return;
            timed_out = true;
            conn->abort();
        });
    }
    signals.async_wait([&](error_code ec, int sig) {
        if (ec) return;
        interrupted = sig;
        conn->abort();
    });
    conn->start();
    ioc.run();
    conn.reset();
    return result;
}

}  // namespace wsig::detail

namespace wsig {

client_result run_listen(listen_options const& opts) {
    try {
        detail::listen_session l(opts);
        return l.run();
    } catch (std::exception const& e) {  // allocation failure or a thread that cannot start
        return {exit_code::unavailable, e.what()};
    }
}

}  // namespace wsig
