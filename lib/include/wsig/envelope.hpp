// The client message envelope of Pode's signal model: {"message","path","clientId","group","direct"}.
#pragma once

#include <wsig/error.hpp>

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace wsig {

struct envelope {
    nlohmann::json message;           // never null: a missing, null or empty message is an error
    std::optional<std::string> path;  // the target Name, URL-decoded as Pode does
    std::vector<std::string> client_ids;
    std::vector<std::string> groups;
    bool direct = false;  // only a JSON `true` sets it
};

// Field names are matched case-insensitively; clientId and group take a string or an array of
// strings. Never throws: a bad envelope is an error value with a reason fit for a log line.
result<envelope> parse_envelope(std::string_view text);

// What goes on the wire for a message value: a JSON string raw (no quotes), anything else as
// compact JSON.
std::string payload_text(nlohmann::json const& message);

// Builds the envelope that `wsig send ws://` and `wsig listen --send` put on the wire.
std::string make_envelope(nlohmann::json const& message, std::optional<std::string> const& path,
                          std::vector<std::string> const& client_ids, std::vector<std::string> const& groups,
                          bool direct);

// Percent-decoding with '+' as space (.NET's HttpUtility.UrlDecode, which Pode applies to paths).
std::string url_decode(std::string_view text);

}  // namespace wsig
