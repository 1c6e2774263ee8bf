// The server's TLS context: protocol versions, cipher suites and its certificate (PEM or PKCS#12).
#pragma once

#include <wsig/error.hpp>

#include <boost/asio/ssl/context.hpp>

#include <string>

namespace wsig::detail {

struct server_tls_settings {
    std::string cert_file, key_file;     // PEM: the chain and its private key
    std::string pfx_file, pfx_password;  // or PKCS#12 (used when pfx_file is set)
    bool tls13_only = false;             // false: TLS 1.2 and 1.3
};

// Every call is checked: a context OpenSSL did not take as asked is a configuration error (exit 78),
// never a server that runs with weaker settings than it says.
result<void> setup_server_tls(boost::asio::ssl::context& ctx, server_tls_settings const& o);

}  // namespace wsig::detail
