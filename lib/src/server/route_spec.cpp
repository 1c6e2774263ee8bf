// --route PATH=NAME[,group=G][,scope=local|global][,exec=CMD] as the server's options hold it.
#include <wsig/server.hpp>

#include <fmt/format.h>

namespace wsig {

result<route_spec> parse_route_spec(std::string_view spec) {
    auto bad = [&](std::string_view why) {
        return make_error(errc::invalid_argument, fmt::format("route '{}': {}", spec, why));
    };
    auto comma = spec.find(',');
    auto head = spec.substr(0, comma);
    auto eq = head.find('=');
    if (eq == std::string_view::npos) return bad("expected PATH=NAME");
    route_spec r;
    r.path = std::string(head.substr(0, eq));
    r.name = std::string(head.substr(eq + 1));
    if (r.path.empty() || r.path[0] != '/') return bad("PATH must start with '/'");
    if (r.path.find_first_of("?# \t") != std::string::npos)
        return bad("PATH must be a plain path (no query, no spaces)");
    if (r.name.empty()) return bad("NAME is empty");
    while (comma != std::string_view::npos) {
        auto rest = spec.substr(comma + 1);
        auto next = rest.find(',');
        auto item = rest.substr(0, next);
        comma = next == std::string_view::npos ? next : comma + 1 + next;
        auto ieq = item.find('=');
        if (ieq == std::string_view::npos) return bad(fmt::format("'{}' is not key=value", item));
        auto key = item.substr(0, ieq), value = item.substr(ieq + 1);
        if (key == "exec") {
            // The command takes the rest of the spec, commas included.
            r.exec = std::string(rest.substr(ieq + 1));
            if (r.exec.find_first_not_of(" \t") == std::string::npos) return bad("exec= is empty");
            break;
        }
        if (key == "group") {
            if (value.empty()) return bad("group= is empty");
            r.group = std::string(value);
        } else if (key == "scope") {
            auto s = parse_scope(value);
            if (!s) return bad(s.error().message);
            r.scope = *s;
        } else {
            return bad(fmt::format("unknown key '{}' (known: group, scope, exec)", key));
        }
    }
    return r;
}

}  // namespace wsig
