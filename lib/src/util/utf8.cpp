#include "util/utf8.hpp"

#include <cstring>

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

// A byte at a time, as RFC 3629's table reads: the lead byte says how many continuation bytes
// follow and narrows the range of the first (E0: A0-BF against overlongs, ED: 80-9F against
// surrogates, F0: 90-BF against overlongs, F4: 80-8F against code points above U+10FFFF). ASCII,
// most of any text message, is skipped 8 bytes at a time. A failure is kept (need_ = 0xFF), so
// every later piece fails too and complete() is false.
bool utf8_stream::feed(std::string_view piece) noexcept {
    static constexpr std::uint8_t failed = 0xFF;
    if (need_ == failed) return false;
    auto const* p = reinterpret_cast<unsigned char const*>(piece.data());
    auto const* const end = p + piece.size();
    unsigned need = need_;
    unsigned low = low_;
    unsigned high = high_;
    while (p != end) {
        if (need != 0) {
            unsigned const c = *p++;
            if (c < low || c > high) {
                need_ = failed;
                return false;
            }
            low = 0x80;
            high = 0xBF;
            --need;
            continue;
        }
        while (end - p >= 8) {
            std::uint64_t w = 0;
            std::memcpy(&w, p, 8);
            if ((w & 0x8080808080808080ull) != 0) break;
            p += 8;
        }
        if (p == end) break;
        unsigned const c = *p++;
        if (c < 0x80) continue;
        if (c < 0xC2) {  // a continuation byte with no lead, or C0/C1 (always overlong)
            need_ = failed;
            return false;
        }
        if (c < 0xE0) {
            need = 1;
        } else if (c < 0xF0) {
            need = 2;
            if (c == 0xE0) low = 0xA0;
            if (c == 0xED) high = 0x9F;
        } else if (c < 0xF5) {
            need = 3;
            if (c == 0xF0) low = 0x90;
            if (c == 0xF4) high = 0x8F;
        } else {
            need_ = failed;
            return false;
        }
    }
    need_ = static_cast<std::uint8_t>(need);
    low_ = static_cast<std::uint8_t>(low);
    high_ = static_cast<std::uint8_t>(high);
    return true;
}

}  // namespace wsig
