// What the HTTP API (http_api.cpp) and the upgrade policy (upgrade.cpp) share: the request
// target split into path and query, the route a path upgrades to, the Host policy, and the glob
// and peer helpers server.cpp defines.
#pragma once

#include "server/state.hpp"
#include "util/text.hpp"
#include "util/utf8.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wsig::detail {

// The peer as a log line shows it: "ip:port", a v6 address in brackets.
std::string peer_string(tcp::endpoint const& ep);

// Glob with '*' (any run) and '?' (one character), case-insensitive: origins are case-insensitive.
bool glob_match(std::string_view pattern, std::string_view text);

// A request target's path and its query, percent-decoded; query keys match case-insensitively.
struct split_target {
    std::string path;
    std::vector<std::pair<std::string, std::string>> query;

    std::optional<std::string> get(std::string_view key) const {
        for (auto const& [k, v] : query)
            if (iequals(k, key)) return v;
        return std::nullopt;
    }
};

// Where an upgrade on `path` goes; nullopt when nothing is there.
struct route_match {
    session_kind kind;
    std::string name;
    std::string group;
    wsig::scope scope;
    std::string exec = {};
};
split_target parse_target(std::string_view raw_target);

// Without `with_auto`, --auto-upgrade does not count: a plain GET of any path is not an upgrade path.
std::optional<route_match> match_route(server_state const& st, std::string_view path, bool with_auto = true);

// Nullopt when the request may be answered; otherwise the 421 (or 400) refusing its Host.
std::optional<response> refuse_host(server_state& st, request const& req, tcp::endpoint const& remote);

}  // namespace wsig::detail
