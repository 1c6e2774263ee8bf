// What both clients share without a connection: URL and header parsing, the TLS context,
// timestamps (whole writes to stdout: file_io.cpp; base64: wsig/base64.hpp).
#include "client/detail.hpp"

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

namespace {

std::string lower(std::string s) {
    for (auto& c : s)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return s;
}

bool is_token_char(char c) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
    return s;
}

}  // namespace

std::string url_parts::host_header() const {
    bool const default_port = (port == "80" && (scheme == "ws" || scheme == "http")) ||
                              (port == "443" && (scheme == "wss" || scheme == "https"));
    std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    return default_port ? h : h + ":" + port;
}

result<url_parts> parse_url(std::string const& url) {
    auto bad = [&](std::string_view why) {
        return make_error(errc::invalid_argument, fmt::format("bad URL '{}': {}", url, why));
    };
    auto const sep = url.find("://");
    if (sep == std::string::npos) return bad("expected scheme://host[:port][/path]");
    url_parts u;
    u.scheme = lower(url.substr(0, sep));
    if (u.scheme == "ws" || u.scheme == "http")
        u.port = "80";
    else if (u.scheme == "wss" || u.scheme == "https")
        u.port = "443", u.tls = true;
    else
        return bad("the scheme must be ws, wss, http or https");

    std::string_view rest = std::string_view(url).substr(sep + 3);
    auto const path_at = rest.find_first_of("/?#");
    std::string_view authority = rest.substr(0, path_at);
    std::string_view target = path_at == std::string_view::npos ? std::string_view{} : rest.substr(path_at);
    if (auto hash = target.find('#'); hash != std::string_view::npos) target = target.substr(0, hash);
    if (authority.find('@') != std::string_view::npos) return bad("user info is not supported (use -H)");
    if (!authority.empty() && authority.front() == '[') {
        auto close = authority.find(']');
        if (close == std::string_view::npos) return bad("unclosed IPv6 literal");
        u.host = std::string(authority.substr(1, close - 1));
        auto after = authority.substr(close + 1);
        if (!after.empty()) {
            if (after.front() != ':') return bad("junk after the IPv6 literal");
            u.port = std::string(after.substr(1));
        }
    } else {
        auto colon = authority.rfind(':');
        u.host = std::string(authority.substr(0, colon));
        if (colon != std::string_view::npos) u.port = std::string(authority.substr(colon + 1));
    }
    if (u.host.empty()) return bad("no host");
    if (u.port.empty() || u.port.size() > 5 || u.port.find_first_not_of("0123456789") != std::string::npos ||
        std::stoul(u.port) > 65535 || std::stoul(u.port) == 0)
        return bad("the port must be 1-65535");
    u.target = target.empty() ? "/" : std::string(target);
    if (u.target.front() == '?') u.target.insert(0, "/");
    return u;
}

result<std::pair<std::string, std::string>> parse_header(std::string const& text) {
    auto colon = text.find(':');
    if (colon == std::string::npos || colon == 0)
        return make_error(errc::invalid_argument, fmt::format("bad header '{}': expected 'Name: value'", text));
    std::string name = text.substr(0, colon);
    for (char c : name)
        if (!is_token_char(c)) return make_error(errc::invalid_argument, fmt::format("bad header name '{}'", name));
    std::string value(trim(std::string_view(text).substr(colon + 1)));
    if (value.find_first_of("\r\n") != std::string::npos)
        return make_error(errc::invalid_argument, fmt::format("header '{}' holds a line break", name));
    return std::pair{std::move(name), std::move(value)};
}

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
        if (replaced.insert(lower(name)).second) fields.erase(name);
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
    return SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name, const_cast<char*>(host.c_str())) == 1;
}

std::string user_agent() {
    return std::string("wsig/") + WSIG_VERSION;
}

}  // namespace detail
}  // namespace wsig
