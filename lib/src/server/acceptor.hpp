// Where a connection is accepted: the listening socket, bound to --address and --port, handing
// each accepted socket to the event loops in turn as a plain or TLS HTTP session.
#pragma once

#include "net/event_loop.hpp"
#include "server/state.hpp"

#include <wsig/error.hpp>
#include <wsig/server.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace wsig::detail {

class acceptor {
public:
    // Accepts on the first loop and hands the connections to the loops in turn.
    acceptor(std::vector<std::unique_ptr<event_loop>>& loops, server_state& st, boost::asio::ssl::context* tls);

    result<tcp::endpoint> open(tcp::endpoint const& ep);  // binds and listens; the port in use is exit 78
    void start();
    void stop();

private:
    void do_accept();

    std::vector<std::unique_ptr<event_loop>>& loops_;
    std::size_t next_ = 0;
    server_state& st_;
    boost::asio::ssl::context* tls_;
    tcp::acceptor acceptor_;
    boost::asio::steady_timer retry_;
};

// --address (with "*", "localhost" and "[v6]" as the user writes them) and --port.
result<tcp::endpoint> bind_endpoint(server_options const& o);

// The URL a client uses to reach `ep` (an unspecified address as loopback).
std::string url_for(tcp::endpoint const& ep, bool tls);

}  // namespace wsig::detail
