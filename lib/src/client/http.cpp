// `wsig send`: the request-header push over http(s) (POST with X-Pode-Signal-*), and the
// dispatch to the ws(s) envelope sender; HTTP statuses become exit codes here.
#include "client/detail.hpp"

#include <wsig/json.hpp>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>

#include <fmt/format.h>
#include <openssl/ssl.h>

#include <csignal>
#include <type_traits>

namespace wsig::detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using boost::system::error_code;

namespace {

// The answer of a push is a short JSON object; 1 MiB bounds a misbehaving server.
constexpr std::uint64_t max_response_body = std::uint64_t{1024} * 1024;

// NOLINTNEXTLINE(bugprone-exception-escape): Beast's fields move without throwing with std::allocator
struct http_outcome {
    exit_code code = exit_code::unavailable;
    std::string message;
    std::optional<http::response<http::string_body>> response;
};

// One request and its response over a plain or TLS stream; the caller's timer aborts it.
template <bool Tls>
class http_call : public std::enable_shared_from_this<http_call<Tls>> {
    using stream_type = std::conditional_t<Tls, beast::ssl_stream<beast::tcp_stream>, beast::tcp_stream>;

public:
    template <class... Args>
    http_call(asio::io_context& ioc, url_parts url, bool insecure, http::request<http::string_body> req,
              std::function<void(http_outcome)> done, Args&&... args)
        : resolver_(ioc),
          stream_(std::forward<Args>(args)...),
          url_(std::move(url)),
          insecure_(insecure),
          req_(std::move(req)),
          done_(std::move(done)) {}

    void start() {
        resolver_.async_resolve(url_.host, url_.port,
                                [self = this->shared_from_this()](error_code ec, tcp::resolver::results_type r) {
                                    self->on_resolve(ec, std::move(r));
                                });
    }

    void abort() {
        resolver_.cancel();
        error_code ignored;
        beast::get_lowest_layer(stream_).socket().close(ignored);
    }

private:
    void finish(http_outcome o) {
        if (!done_) return;
        auto done = std::move(done_);
        done_ = nullptr;
        done(std::move(o));
    }

    void fail(exit_code code, std::string message) { finish({code, std::move(message), std::nullopt}); }

    void on_resolve(error_code ec, tcp::resolver::results_type results) {
        if (ec) return fail(exit_code::unavailable, fmt::format("cannot resolve {}: {}", url_.host, ec.message()));
        beast::get_lowest_layer(stream_).async_connect(
            results, [self = this->shared_from_this()](error_code e, tcp::endpoint const&) { self->on_connect(e); });
    }

    void on_connect(error_code ec) {
        if (ec)
            return fail(exit_code::unavailable,
                        fmt::format("cannot connect to {}:{}: {}", url_.host, url_.port, ec.message()));
        if constexpr (Tls) {
            if (!set_sni(stream_.native_handle(), url_.host))
                return fail(exit_code::protocol, "TLS: cannot set the server name");
            if (!insecure_) {
                error_code verify_ec;
                stream_.set_verify_callback(asio::ssl::host_name_verification(url_.host), verify_ec);
                if (verify_ec)
                    return fail(exit_code::protocol,
                                fmt::format("TLS: cannot check the host name: {}", verify_ec.message()));
            }
            stream_.async_handshake(asio::ssl::stream_base::client, [self = this->shared_from_this()](error_code e) {
                if (e)
                    return self->fail(exit_code::protocol,
                                      fmt::format("TLS handshake with {} failed: {}", self->url_.host, e.message()));
                self->do_write();
            });
        } else {
            do_write();
        }
    }

    void do_write() {
        http::async_write(stream_, req_, [self = this->shared_from_this()](error_code ec, std::size_t) {
            if (ec)
                return self->fail(exit_code::unavailable, fmt::format("sending the request failed: {}", ec.message()));
            self->do_read();
        });
    }

    void do_read() {
        parser_.body_limit(max_response_body);
        http::async_read(stream_, buffer_, parser_, [self = this->shared_from_this()](error_code ec, std::size_t) {
            if (ec == asio::error::eof || ec == asio::error::connection_reset)
                return self->fail(exit_code::unavailable, fmt::format("no answer from the server: {}", ec.message()));
            if (ec) return self->fail(exit_code::protocol, fmt::format("bad HTTP answer: {}", ec.message()));
            self->finish({exit_code::ok, {}, self->parser_.release()});
            // No TLS shutdown or lingering: the answer is all we wanted.
            error_code ignored;
            beast::get_lowest_layer(self->stream_).socket().shutdown(tcp::socket::shutdown_both, ignored);
        });
    }

    tcp::resolver resolver_;
    stream_type stream_;
    url_parts url_;
    bool insecure_;
    http::request<http::string_body> req_;
    std::function<void(http_outcome)> done_;
    beast::flat_buffer buffer_;
    http::response_parser<http::string_body> parser_;
};

// Status -> exit code of a push (SPEC.md section 8; 400 is "bad data": the server refused our input).
exit_code status_exit_code(unsigned status) {
    if (status == 401 || status == 403) return exit_code::no_permission;
    if (status == 404 || status == 410) return exit_code::no_user;
    if (status >= 500) return exit_code::unavailable;
    if (status >= 400) return exit_code::data_error;
    return exit_code::protocol;  // 1xx/3xx: redirects are not followed
}

client_result run_http_send(send_options const& opts, url_parts const& url) {
    std::shared_ptr<asio::ssl::context> tls_ctx;
    if (url.tls) {
        auto ctx = make_tls_context(opts.tls);
        if (!ctx) return {exit_code::config, ctx.error().message};
        tls_ctx = *ctx;
    }
    http::request<http::string_body> req{http::verb::post, url.target, 11};
    req.set(http::field::host, url.host_header());
    req.set(http::field::user_agent, user_agent());
    req.set(http::field::accept, "application/json, */*");
    if (opts.json) {
        auto j = parse_json_data(opts.data);
        if (!j) return {exit_code::data_error, j.error().message};
        req.set(http::field::content_type, "application/json");
        req.body() = j->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    } else {
        req.set(http::field::content_type, "text/plain; charset=utf-8");
        req.body() = opts.data;
    }
    if (!opts.client_id.empty()) req.set("X-Pode-Signal-Client-Id", opts.client_id);
    if (!opts.name.empty()) req.set("X-Pode-Signal-Name", opts.name);
    if (!opts.groups.empty()) {
        std::string joined;  // Pode splits on ',' without trimming
        for (auto const& g : opts.groups) joined += (joined.empty() ? "" : ",") + g;
        req.set("X-Pode-Signal-Group", joined);
    }
    if (!opts.api_key.empty()) req.set(http::field::authorization, "Bearer " + opts.api_key);
    req.set(http::field::connection, "close");
    apply_headers(req, opts.headers);
    req.prepare_payload();

    asio::io_context ioc;
    http_outcome outcome;
    bool timed_out = false;
    auto done = [&](http_outcome o) { outcome = std::move(o); };
    std::function<void()> abort;
    if (url.tls) {
        auto call = std::make_shared<http_call<true>>(ioc, url, opts.tls.insecure, std::move(req), done, ioc, *tls_ctx);
        abort = [call] { call->abort(); };
        call->start();
    } else {
        auto call = std::make_shared<http_call<false>>(ioc, url, opts.tls.insecure, std::move(req), done, ioc);
        abort = [call] { call->abort(); };
        call->start();
    }
    asio::steady_timer timer(ioc);
    if (opts.timeout.count() > 0) {
        timer.expires_after(opts.timeout);
        timer.async_wait([&](error_code ec) {
            if (ec) return;
            timed_out = true;
            abort();
        });
    }
    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    int interrupted = 0;
    signals.async_wait([&](error_code ec, int sig) {
        if (ec) return;
        interrupted = sig;
        abort();
    });
    // The timer is the only thing left once the call is done: stop rather than wait for it.
    while (!outcome.response && outcome.message.empty() && ioc.run_one() > 0) {
    }
    abort = nullptr;
    if (interrupted)
        return {interrupted == SIGINT ? exit_code::sigint : exit_code::sigterm,
                interrupted == SIGINT ? "interrupted by SIGINT" : "interrupted by SIGTERM"};
    if (timed_out) return {exit_code::timeout, fmt::format("--timeout {} ms expired", opts.timeout.count())};
    if (!outcome.response) return {outcome.code, outcome.message};

    auto const& res = *outcome.response;
    unsigned const status = res.result_int();
    std::string body = res.body();
    if (status >= 200 && status < 300) {
        if (!body.empty() && body.back() != '\n') body.push_back('\n');
        if (!write_all(opts.out_fd, body) && errno != EPIPE) return {exit_code::negative, "cannot write the answer"};
        auto parsed = parse_json(res.body());  // a server's answer: bounded like any JSON from outside
        auto const& j = parsed ? *parsed : nlohmann::json();
        if (!opts.allow_none && j.is_object() && j.contains("delivered") && j["delivered"].is_number() &&
            j["delivered"].get<double>() <= 0)
            return {exit_code::negative, "delivered to nobody (--allow-none accepts that)"};
        return {exit_code::ok, ""};
    }
    while (!body.empty() && (body.back() == '\n' || body.back() == '\r')) body.pop_back();
    if (body.size() > 500) body = body.substr(0, 500) + "...";
    return {status_exit_code(status), fmt::format("POST {}{} answered {} {}{}{}", url.host_header(), url.target, status,
                                                  std::string(res.reason()), body.empty() ? "" : ": ", body)};
}

}  // namespace
}  // namespace wsig::detail

namespace wsig {

client_result run_send(send_options const& opts) {
    try {
        auto u = parse_url(opts.url);
        if (!u) return {exit_code::usage, u.error().message};
        if (u->scheme == "ws" || u->scheme == "wss") return detail::run_ws_send(opts, *u);
        if (opts.path || opts.direct) return {exit_code::usage, "--path and --direct apply to ws:// and wss:// only"};
        return detail::run_http_send(opts, *u);
    } catch (std::exception const& e) {
        return {exit_code::unavailable, e.what()};
    }
}

}  // namespace wsig
