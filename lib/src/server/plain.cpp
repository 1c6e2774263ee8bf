// Plain HTTP + WS sessions: the session templates instantiated for a TCP stream.
#include "server/sessions.hpp"

namespace wsig::detail {

void start_plain_session(server_state& st, event_loop& loop, socket_type socket) {
    error_code ec;
    auto remote = socket.remote_endpoint(ec);
    if (ec) return;  // the peer is already gone
    std::make_shared<http_session<plain_stream>>(st, loop, remote, std::move(socket))->run();
}

}  // namespace wsig::detail
