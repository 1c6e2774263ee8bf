// What both clients share without a connection: JSON data, the TLS context, -H headers on a
// request, --until, the User-Agent (URLs: util/url.cpp; -H parsing: util/header.cpp).
#include "client/detail.hpp"

#include "util/text.hpp"

#include <wsig/json.hpp>

#include <boost/asio/ssl.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/regex.hpp>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <openssl/ssl.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <set>

namespace wsig {

result<nlohmann::json> parse_json_data(std::string const& text) {
    // Bounded like every JSON from outside: the value is dumped again, and dumping recurses.
    auto j = parse_json(text);
    if (!j) return make_error(errc::invalid_argument, j.error().message);
    return j;
}

namespace detail {

result<std::shared_ptr<boost::asio::ssl::context>> make_tls_context(tls_options const& tls) {
    namespace ssl = boost::asio::ssl;
    // The clients keep OpenSSL's default suites (they may talk to older servers) over TLS 1.2 or
    // newer; every setting is checked, so a client never runs with less than it says.
    auto const refused = [](std::string const& what, std::string const& why) {
        return make_error(errc::io, fmt::format("TLS settings: {}: {}", what, why));
    };
    auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
    boost::system::error_code ec;
    ctx->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                         ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1,
                     ec);
    if (ec) return refused("the context options", ec.message());
    if (SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION) != 1)
        return refused("TLS 1.2 as the minimum", "OpenSSL refused it");
    if (tls.insecure) {
        ctx->set_verify_mode(ssl::verify_none, ec);
        if (ec) return refused("--insecure", ec.message());
        return ctx;
    }
    if (!tls.cacert.empty()) {
        ctx->load_verify_file(tls.cacert, ec);
        if (ec) return make_error(errc::io, fmt::format("--cacert {}: cannot use it: {}", tls.cacert, ec.message()));
    } else {
        ctx->set_default_verify_paths(ec);
        if (ec) return make_error(errc::io, fmt::format("the system CA store cannot be loaded: {}", ec.message()));
    }
    ctx->set_verify_mode(ssl::verify_peer, ec);
    if (ec) return refused("peer verification", ec.message());
    return ctx;
}

void apply_headers(boost::beast::http::fields& fields,
                   std::vector<std::pair<std::string, std::string>> const& headers) {
    std::set<std::string> replaced;  // lowercase names already cleared of the defaults
    for (auto const& [name, value] : headers) {
        if (replaced.insert(to_lower(name)).second) fields.erase(name);
        fields.insert(name, value);
    }
}

result<message_matcher> make_matcher(std::string const& pattern) {
    std::shared_ptr<boost::regex const> re;
    try {
        re = std::make_shared<boost::regex const>(pattern, boost::regex::ECMAScript);
    } catch (std::exception const& e) {
        return make_error(errc::invalid_argument, e.what());
    }
    return message_matcher([re](std::string_view text) {
        try {
            return boost::regex_search(text.begin(), text.end(), *re);
        } catch (std::exception const& e) {  // boost's bound on backtracking: say so, do not crash
            std::fprintf(stderr, "wsig: warning: --until gave up on a %zu-byte message: %s\n", text.size(), e.what());
            return false;
        }
    });
}

bool set_sni(SSL* ssl, std::string const& host) {
    // SSL_set_tlsext_host_name is this call behind a C cast (-Wold-style-cast); OpenSSL only reads the name.
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-const-cast): SSL_ctrl takes the name as void*, read-only
    return SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, const_cast<char*>(host.c_str())) == 1;
}

std::string user_agent() {
    return std::string("wsig/") + WSIG_VERSION;
}

}  // namespace detail
}  // namespace wsig
