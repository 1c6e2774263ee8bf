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

// UTF-8 checked piece by piece, for a text message that arrives in fragments and reads: a
// sequence may be split between two pieces. Fail-fast: feed() is false from the first byte that
// cannot be part of valid UTF-8, whatever follows it.
class utf8_stream {
public:
    bool feed(std::string_view piece) noexcept;
    // No sequence is left open: the text so far is whole UTF-8.
    bool complete() const noexcept { return need_ == 0; }
    void reset() noexcept { *this = utf8_stream(); }

private:
    std::uint8_t need_ = 0;    // continuation bytes still expected; 0xFF once the text failed
    std::uint8_t low_ = 0x80;  // the range of the next continuation byte (narrower after E0, ED, F0, F4)
    std::uint8_t high_ = 0xBF;
};

}  // namespace wsig
