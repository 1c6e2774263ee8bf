// The acceptor: binds, listens, and hands accepted sockets to the event loops in turn.
#include "server/acceptor.hpp"

#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/v6_only.hpp>

#include <fmt/format.h>

#include <chrono>
#include <utility>

namespace wsig::detail {

namespace net = boost::asio;
using error_code = boost::system::error_code;

acceptor::acceptor(std::vector<std::unique_ptr<event_loop>>& loops, server_state& st, boost::asio::ssl::context* tls)
    : loops_(loops), st_(st), tls_(tls), acceptor_(loops.front()->context()), retry_(loops.front()->context()) {}

result<tcp::endpoint> acceptor::open(tcp::endpoint const& ep) {
    error_code ec;
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec && ep.address().is_v6()) acceptor_.set_option(net::ip::v6_only(false), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (ec == net::error::address_in_use)
        return make_error(errc::io, fmt::format("port {} on {} is in use", ep.port(), ep.address().to_string()));
    if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec) return make_error(errc::io, fmt::format("cannot listen on {}: {}", ep.address().to_string(), ec.message()));
    auto local = acceptor_.local_endpoint(ec);
    if (ec) return make_error(errc::io, ec.message());
    return local;
}

void acceptor::start() {
    do_accept();
}

void acceptor::stop() {
    error_code ignored;
    acceptor_.close(ignored);
    retry_.cancel();
}

void acceptor::do_accept() {
    auto& loop = *loops_[next_++ % loops_.size()];
    acceptor_.async_accept(loop.context(), [this, &loop](error_code ec, socket_type socket) {
        if (ec == net::error::operation_aborted || !acceptor_.is_open()) return;
        if (ec) {
            // Out of descriptors and the like: wait a little instead of spinning.
            st_.log.log(severity::warning, fmt::format("accept: {}", ec.message()));
            retry_.expires_after(std::chrono::milliseconds(100));
            retry_.async_wait([this](error_code e) {
                if (!e) do_accept();
            });
            return;
        }
        error_code ignored;
        socket.set_option(tcp::no_delay(true), ignored);
        if (tls_)
            start_tls_session(st_, loop, *tls_, std::move(socket));
        else
            start_plain_session(st_, loop, std::move(socket));
        do_accept();
    });
}

result<tcp::endpoint> bind_endpoint(server_options const& o) {
    std::string addr = o.address;
    if (addr == "*") addr = "0.0.0.0";
    if (addr == "localhost") addr = "127.0.0.1";
    if (addr.size() > 2 && addr.front() == '[' && addr.back() == ']') addr = addr.substr(1, addr.size() - 2);
    error_code ec;
    auto a = net::ip::make_address(addr, ec);
    if (ec) return make_error(errc::invalid_argument, fmt::format("address '{}' is not an IP address", o.address));
    return tcp::endpoint(a, o.port);
}

std::string url_for(tcp::endpoint const& ep, bool tls) {
    auto a = ep.address();
    std::string host;
    if (a.is_unspecified())
        host = a.is_v6() ? "[::1]" : "127.0.0.1";
    else if (a.is_v6())
        host = fmt::format("[{}]", a.to_string());
    else
        host = a.to_string();
    return fmt::format("{}://{}:{}", tls ? "https" : "http", host, ep.port());
}

}  // namespace wsig::detail
