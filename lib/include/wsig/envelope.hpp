// The client message envelope of Pode's signal model: {"message","path","clientId","group","direct"}.
#pragma once

#include <wsig/error.hpp>
#include <wsig/json.hpp>

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace wsig {

// NOLINTNEXTLINE(bugprone-exception-escape): its implicit moves do not throw (nlohmann::json's are noexcept)
struct envelope {
    nlohmann::json message;           // never null: a missing, null or empty message is an error
    std::optional<std::string> path;  // the target Name, URL-decoded as Pode does
    std::vector<std::string> client_ids;
    std::vector<std::string> groups;
    bool direct = false;  // only a JSON `true` sets it
};

// What a client may put in one envelope. Past a limit the envelope is bad (dropped and logged, the
// connection stays): a client cannot make one message cost the server more than a bounded amount.
struct envelope_limits {
    std::size_t max_depth = default_max_json_depth;  // arrays and objects nested, the envelope included
    std::size_t max_groups = 256;                    // entries of "group"
    std::size_t max_client_ids = 256;                // entries of "clientId"
};

// Field names are matched case-insensitively; clientId and group take a string or an array of
// strings. Never throws: a bad envelope is an error value with a reason fit for a log line.
result<envelope> parse_envelope(std::string_view text, envelope_limits const& limits = {});

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
