// HTTPS + WSS sessions: the session templates instantiated for a TLS stream over TCP.
#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket/ssl.hpp>

#include "server_session.hpp"

namespace wsig::detail {

void start_tls_session(server_state& st, boost::asio::ssl::context& ctx, tcp::socket socket) {
    error_code ec;
    auto remote = socket.remote_endpoint(ec);
    if (ec) return;  // the peer is already gone
    std::make_shared<http_session<net::ssl::stream<beast::tcp_stream>>>(st, remote, std::move(socket), ctx)->run();
}

}  // namespace wsig::detail
