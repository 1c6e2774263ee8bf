#include "util/utf8.hpp"

namespace wsig {

std::size_t utf8_sequence(std::string_view s, std::uint32_t& cp) noexcept {
    auto const* p = reinterpret_cast<unsigned char const*>(s.data());
    unsigned const c = p[0];
    std::size_t n = 0;
    if (c < 0x80) {
        cp = c;
        return 1;
    }
    if ((c & 0xE0) == 0xC0)
        n = 2, cp = c & 0x1F;
    else if ((c & 0xF0) == 0xE0)
        n = 3, cp = c & 0x0F;
    else if ((c & 0xF8) == 0xF0)
        n = 4, cp = c & 0x07;
    else
        return 0;
    if (s.size() < n) return 0;
    for (std::size_t i = 1; i < n; ++i) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

bool valid_utf8(std::string_view s) noexcept {
    std::uint32_t cp = 0;
    while (!s.empty()) {
        auto const n = utf8_sequence(s, cp);
        if (n == 0) return false;
        s.remove_prefix(n);
    }
    return true;
}

std::string_view cut_utf8(std::string_view s, std::size_t max) noexcept {
    if (s.size() <= max) return s;
    auto end = max;
    // s[end] is the first byte left out: back up over continuation bytes to the start of its sequence.
    for (int i = 0; i < 3 && end > 0 && (static_cast<unsigned char>(s[end]) & 0xC0) == 0x80; ++i) --end;
    return s.substr(0, end);
}

}  // namespace wsig
