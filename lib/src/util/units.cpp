// Parsing and formatting of durations and byte sizes, validated before anything starts.
#include <wsig/units.hpp>

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <ctime>

#include <charconv>
#include <limits>

namespace wsig {
namespace {

struct number_and_unit {
    std::uint64_t number = 0;
    std::string_view unit;
};

result<number_and_unit> split_number(std::string_view text, std::string_view what) {
    if (text.empty()) return make_error(errc::invalid_argument, fmt::format("empty {}", what));
    std::uint64_t n = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
    if (ec == std::errc::result_out_of_range)
        return make_error(errc::invalid_argument, fmt::format("{} '{}' is too large", what, text));
    if (ec != std::errc{} || end == text.data())
        return make_error(errc::invalid_argument, fmt::format("{} '{}' does not start with a number", what, text));
    return number_and_unit{n, text.substr(static_cast<std::size_t>(end - text.data()))};
}

result<std::uint64_t> scaled(std::uint64_t n, std::uint64_t factor, std::string_view text, std::string_view what) {
    if (factor != 0 && n > std::numeric_limits<std::uint64_t>::max() / factor)
        return make_error(errc::invalid_argument, fmt::format("{} '{}' is too large", what, text));
    return n * factor;
}

}  // namespace

result<std::chrono::milliseconds> parse_duration(std::string_view text) {
    auto parts = split_number(text, "duration");
    if (!parts) return parts.error();
    auto [n, unit] = *parts;
    std::uint64_t factor = 0;
    if (unit == "ms" || (unit.empty() && n == 0))  // "0" is unambiguous
        factor = 1;
    else if (unit == "s")
        factor = 1000;
    else if (unit == "m")
        factor = 60'000;
    else if (unit == "h")
        factor = 3'600'000;
    else
        return make_error(errc::invalid_argument,
                          fmt::format("duration '{}' needs a unit: ms, s, m or h (e.g. 500ms, 10s, 2m)", text));
    auto ms = scaled(n, factor, text, "duration");
    if (!ms) return ms.error();
    if (*ms > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        return make_error(errc::invalid_argument, fmt::format("duration '{}' is too large", text));
    return std::chrono::milliseconds(static_cast<std::int64_t>(*ms));
}

result<std::uint64_t> parse_size(std::string_view text) {
    auto parts = split_number(text, "size");
    if (!parts) return parts.error();
    auto [n, unit] = *parts;
    std::uint64_t factor = 0;
    if (unit.empty() || unit == "B")
        factor = 1;
    else if (unit == "KiB")
        factor = 1024;
    else if (unit == "MiB")
        factor = 1024ull * 1024;
    else if (unit == "GiB")
        factor = 1024ull * 1024 * 1024;
    else if (unit == "KB" || unit == "kB")
        factor = 1000;
    else if (unit == "MB")
        factor = 1000ull * 1000;
    else if (unit == "GB")
        factor = 1000ull * 1000 * 1000;
    else
        return make_error(errc::invalid_argument,
                          fmt::format("size '{}' has an unknown unit: use B, KiB, MiB, GiB, KB, MB or GB", text));
    return scaled(n, factor, text, "size");
}

std::string format_duration(std::chrono::milliseconds d) {
    auto ms = d.count();
    if (ms != 0 && ms % 3'600'000 == 0) return fmt::format("{}h", ms / 3'600'000);
    if (ms != 0 && ms % 60'000 == 0) return fmt::format("{}m", ms / 60'000);
    if (ms != 0 && ms % 1000 == 0) return fmt::format("{}s", ms / 1000);
    return fmt::format("{}ms", ms);
}

std::string rfc3339(std::chrono::system_clock::time_point t, bool milliseconds) {
    auto secs = std::chrono::system_clock::to_time_t(t);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    if (!milliseconds) return fmt::format("{:%Y-%m-%dT%H:%M:%S}Z", tm);
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count() % 1000;
    return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03}Z", tm, ms);
}

std::string format_size(std::uint64_t bytes) {
    if (bytes != 0 && bytes % (1024ull * 1024 * 1024) == 0) return fmt::format("{}GiB", bytes >> 30);
    if (bytes != 0 && bytes % (1024ull * 1024) == 0) return fmt::format("{}MiB", bytes >> 20);
    if (bytes != 0 && bytes % 1024 == 0) return fmt::format("{}KiB", bytes >> 10);
    return fmt::format("{}B", bytes);
}

}  // namespace wsig
