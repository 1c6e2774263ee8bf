// The one URL parser: ws://, wss://, http:// and https:// split into what a connection needs.
#pragma once

#include <wsig/error.hpp>

#include <string>

namespace wsig {

struct url_parts {
    std::string scheme;  // lowercase: ws, wss, http, https
    std::string host;    // without the brackets of an IPv6 literal
    std::string port;    // decimal without leading zeros; the scheme's default when the URL has none
    std::string target;  // path and query, at least "/"; no fragment
    bool tls = false;
    std::string host_header() const;  // host[:port], the port only when not the scheme's default
};

// Accepts ws, wss, http and https only; anything else (no scheme, user info, no host, a port
// outside 1-65535) is errc::invalid_argument.
result<url_parts> parse_url(std::string const& url);

}  // namespace wsig
