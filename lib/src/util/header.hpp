// One "-H 'Name: value'" argument of send, listen and bench.
#pragma once

#include <wsig/error.hpp>

#include <string>
#include <utility>

namespace wsig {

// The name must be an RFC 9110 token; the value is trimmed of SP and HTAB and may hold no CR, LF
// or NUL (each would end or split the header on the wire). errc::invalid_argument otherwise.
result<std::pair<std::string, std::string>> parse_header(std::string_view text);

}  // namespace wsig
