// Private pieces shared by the client TUs: TLS context, error-to-exit-code mapping, and one
// WebSocket client connection (plain or TLS) behind a small virtual interface.
#pragma once

#include "util/file_io.hpp"
#include "util/url.hpp"

#include <wsig/base64.hpp>
#include <wsig/client.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/http/fields.hpp>

#include <openssl/ssl.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace wsig::detail {

// The TLS client context for --insecure/--cacert: errc::io (exit 78) when the bundle cannot be used.
result<std::shared_ptr<boost::asio::ssl::context>> make_tls_context(tls_options const& tls);

// Sets the -H headers on a request: the first of a name replaces what is there, later ones add.
void apply_headers(boost::beast::http::fields& fields, std::vector<std::pair<std::string, std::string>> const& headers);

// SNI for a TLS client (SSL_set_tlsext_host_name is a macro with a C cast).
bool set_sni(SSL* ssl, std::string const& host);

// --until: an ECMAScript regex searched in each message. Boost.Regex, not std::regex: libstdc++'s
// matcher recurses per character and overflows the stack on a 1 MB message with `a.*b`; Boost's is
// iterative and bounded (a search too complex to finish counts as no match, with a warning).
using message_matcher = std::function<bool(std::string_view)>;
result<message_matcher> make_matcher(std::string const& pattern);

// The User-Agent of both clients.
std::string user_agent();

// What the 101 carried (Pode's X-Pode-Signal-* headers; X-Pode-ClientId on Pode <= 2.12).
struct handshake_info {
    std::optional<std::string> client_id;
    std::optional<std::string> name;
    std::optional<std::string> group;
};

// How one connection ended; on_end is called exactly once per connection.
struct conn_end {
    bool opened = false;         // the 101 arrived
    bool close_frame = false;    // a close handshake happened (ours or the server's)
    bool server_closed = false;  // the server sent the first close frame
    bool all_sent = false;       // every queued message was written before the end
    int close_code = 1006;       // 1006: no close frame (RFC 6455 7.1.5)
    std::string reason;
    exit_code code = exit_code::unavailable;  // the failure class when close_frame is false
    std::string message;
};

struct ws_connect_options {
    std::string origin;
    std::string api_key;
    std::vector<std::pair<std::string, std::string>> headers;
    std::uint64_t max_message_size = 64ull * 1024 * 1024;
    bool insecure = false;
};

struct ws_events {
    std::function<void(handshake_info const&)> on_open;
    std::function<void(std::string&&, bool binary)> on_message;
    std::function<void(conn_end const&)> on_end;
};

class ws_client {
public:
    virtual ~ws_client() = default;
    virtual void start() = 0;
    // Queued; written one at a time in order once open.
    virtual void send(std::string data, bool binary) = 0;
    // Close handshake with code (after the queued messages when flush, else at once).
    virtual void close(std::uint16_t code, std::string reason, bool flush) = 0;
    // Drops the TCP connection now; on_end follows (unless it already ran).
    virtual void abort() = 0;
    virtual bool is_open() const = 0;
};

// tls_ctx must be non-null for wss and outlive the connection.
std::shared_ptr<ws_client> make_ws_connection(boost::asio::io_context& ioc, boost::asio::ssl::context* tls_ctx,
                                              url_parts const& url, ws_connect_options const& opts, ws_events events);

// ws(s):// branch of run_send (client_ws.cpp).
client_result run_ws_send(send_options const& opts, url_parts const& url);

}  // namespace wsig::detail
