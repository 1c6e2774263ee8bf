// HTTPS + WSS sessions: the session templates instantiated for a TLS stream over TCP.
#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>

#include "server/sessions.hpp"

namespace wsig::detail {

void start_tls_session(server_state& st, event_loop& loop, boost::asio::ssl::context& ctx, socket_type socket) {
    error_code ec;
    auto remote = socket.remote_endpoint(ec);
    if (ec) return;  // the peer is already gone
    std::make_shared<http_session<net::ssl::stream<plain_stream>>>(st, loop, remote, std::move(socket), ctx)->run();
}

}  // namespace wsig::detail
