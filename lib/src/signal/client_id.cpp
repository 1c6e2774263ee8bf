// Random client IDs: 16 bytes from OpenSSL's CSPRNG, in .NET Guid text form (as Pode's New-PodeGuid -Secure).
#include <wsig/client_id.hpp>

#include "util/text.hpp"

#include <openssl/rand.h>

namespace wsig {

std::string format_guid(std::array<std::uint8_t, 16> const& b) {
    // .NET's Guid(byte[]): Data1 (4 bytes), Data2 and Data3 (2 bytes each) are little-endian.
    static constexpr int order[16] = {3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15};
    std::string out;
    out.reserve(36);
    for (int i = 0; i < 16; ++i) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
        auto v = b[static_cast<std::size_t>(order[i])];
        out.push_back(hex_digits[v >> 4]);
        out.push_back(hex_digits[v & 0xF]);
    }
    return out;
}

result<std::string> new_client_id() {
    std::array<std::uint8_t, 16> bytes{};
    // An error value, not an exception: the server calls this inside an upgrade's handler.
    if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1)
        return make_error(errc::crypto, "the system's random generator failed (RAND_bytes)");
    return format_guid(bytes);
}

bool looks_like_guid(std::string const& t) {
    if (t.size() != 36) return false;
    for (std::size_t i = 0; i < t.size(); ++i) {
        char c = t[i];
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash != (c == '-')) return false;
        if (!dash && hex_value(c) < 0) return false;
    }
    return true;
}

}  // namespace wsig
