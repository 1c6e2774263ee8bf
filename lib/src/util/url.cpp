#include "util/url.hpp"

#include "util/text.hpp"

#include <fmt/format.h>

#include <charconv>

namespace wsig {

std::string url_parts::host_header() const {
    bool const default_port = (port == "80" && (scheme == "ws" || scheme == "http")) ||
                              (port == "443" && (scheme == "wss" || scheme == "https"));
    // Appends one piece at a time (g++ 12 -O3 reports a false -Wrestrict on "[" + host + "]").
    std::string h;
    bool const v6 = host.find(':') != std::string::npos;
    if (v6) h.push_back('[');
    h.append(host);
    if (v6) h.push_back(']');
    if (!default_port) {
        h.push_back(':');
        h.append(port);
    }
    return h;
}

result<url_parts> parse_url(std::string const& url) {
    auto bad = [&](std::string_view why) {
        return make_error(errc::invalid_argument, fmt::format("bad URL '{}': {}", url, why));
    };
    auto const sep = url.find("://");
    if (sep == std::string::npos) return bad("expected scheme://host[:port][/path]");
    url_parts u;
    u.scheme = to_lower(std::string_view(url).substr(0, sep));
    std::string_view port = u.scheme == "ws" || u.scheme == "http" ? "80" : "443";
    if (u.scheme == "wss" || u.scheme == "https")
        u.tls = true;
    else if (u.scheme != "ws" && u.scheme != "http")
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
            port = after.substr(1);
        }
    } else {
        auto colon = authority.rfind(':');
        u.host = std::string(authority.substr(0, colon));
        if (colon != std::string_view::npos) port = authority.substr(colon + 1);
    }
    if (u.host.empty()) return bad("no host");
    unsigned number = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
    if (port.empty() || ec != std::errc{} || end != port.data() + port.size() || number == 0 || number > 65535)
        return bad("the port must be 1-65535");
    u.port = std::to_string(number);
    if (target.empty() || target.front() == '?') u.target.push_back('/');
    u.target.append(target);
    return u;
}

}  // namespace wsig
