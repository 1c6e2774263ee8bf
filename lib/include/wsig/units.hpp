// Parsing of durations ("500ms", "10s", "2m", "1h") and byte sizes ("512", "16KiB", "1MiB").
#pragma once

#include <wsig/error.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace wsig {

result<std::chrono::milliseconds> parse_duration(std::string_view text);
result<std::uint64_t> parse_size(std::string_view text);

std::string format_duration(std::chrono::milliseconds d);

// RFC 3339 in UTC: 2026-11-28T07:31:45.123Z (or ...:45Z without milliseconds).
std::string rfc3339(std::chrono::system_clock::time_point t, bool milliseconds = true);
inline std::string rfc3339_now() {
    return rfc3339(std::chrono::system_clock::now());
}
std::string format_size(std::uint64_t bytes);

}  // namespace wsig
