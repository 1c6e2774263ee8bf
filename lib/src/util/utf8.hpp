// UTF-8 as RFC 3629 defines it: no overlong forms, no surrogates, nothing above U+10FFFF.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace wsig {

// The length of the UTF-8 sequence at the start of `s` (not empty) and its code point in `cp`;
// 0 when it is not valid UTF-8 (a stray continuation byte, a truncated or overlong sequence, a
// surrogate, a code point above U+10FFFF).
std::size_t utf8_sequence(std::string_view s, std::uint32_t& cp) noexcept;

// True when all of `s` is valid UTF-8 (what a text frame must hold).
bool valid_utf8(std::string_view s) noexcept;

// `s` cut to at most `max` bytes without splitting a UTF-8 sequence.
std::string_view cut_utf8(std::string_view s, std::size_t max) noexcept;

}  // namespace wsig
