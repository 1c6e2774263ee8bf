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
std::string format_size(std::uint64_t bytes);

}  // namespace wsig
