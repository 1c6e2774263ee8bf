// Fuzzes the duration and size parsers: never a crash, and what parses formats back to the same amount.
#include <wsig/units.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size) {
    std::string_view text(reinterpret_cast<char const*>(data), size);
    if (auto d = wsig::parse_duration(text)) {
        auto again = wsig::parse_duration(wsig::format_duration(*d));
        if (!again || *again != *d) __builtin_trap();
    }
    if (auto s = wsig::parse_size(text)) {
        auto again = wsig::parse_size(wsig::format_size(*s));
        if (!again || *again != *s) __builtin_trap();
    }
    return 0;
}
