// JSON from outside the process (client envelopes, signal-route action lines, a server's answers),
// parsed with a nesting limit that is enforced while parsing: a value deeper than the limit is
// never built. nlohmann's parser and destructor are iterative, but copying, comparing and dumping a
// value recurse once per level: a 200 KB text nested 100,000 deep overflows the stack.
#pragma once

#include <wsig/error.hpp>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <string_view>

namespace wsig {

// 64 levels: far more than any envelope or action needs, and a few KiB of stack for every
// recursive operation on the value.
inline constexpr std::size_t default_max_json_depth = 64;

// Parses `text` as one JSON value, refusing it (errc::bad_envelope, with a reason fit for a log
// line) when it is not valid JSON or nests more than `max_depth` arrays and objects. Never throws.
result<nlohmann::json> parse_json(std::string_view text, std::size_t max_depth = default_max_json_depth);

}  // namespace wsig
