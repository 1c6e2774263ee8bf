// RFC 6455 framing shared by the server (wire/message.cpp), the bench client and the tests: frame
// headers written and read, payload masking, and the Sec-WebSocket-Accept of a key. Header-only
// and allocation-free where it runs per message; the bench writes every frame through here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace wsig::wire {

inline constexpr std::size_t max_frame_header = 14;  // 2 + 8 (64-bit length) + 4 (masking key)

// Writes the header of a final frame carrying `payload_size` bytes with `opcode` into `out` (at
// least max_frame_header bytes): 2, 4 or 10 bytes, and 4 more holding `mask_key` when `masked`
// (a client's frame). Returns its size.
inline std::size_t encode_frame_header(unsigned char* out, std::uint8_t opcode, std::uint64_t payload_size,
                                       bool masked = false, std::uint32_t mask_key = 0) noexcept {
    unsigned char const mask_bit = masked ? 0x80 : 0x00;
    std::size_t h = 0;
    out[h++] = static_cast<unsigned char>(0x80 | opcode);
    if (payload_size < 126) {
        out[h++] = static_cast<unsigned char>(mask_bit | payload_size);
    } else if (payload_size <= 0xFFFF) {
        out[h++] = static_cast<unsigned char>(mask_bit | 126);
        out[h++] = static_cast<unsigned char>(payload_size >> 8);
        out[h++] = static_cast<unsigned char>(payload_size);
    } else {
        out[h++] = static_cast<unsigned char>(mask_bit | 127);
        for (int i = 7; i >= 0; --i) out[h++] = static_cast<unsigned char>(payload_size >> (8 * i));
    }
    if (masked) {
        std::memcpy(out + h, &mask_key, 4);
        h += 4;
    }
    return h;
}

// XORs `n` bytes with the 4 bytes of `mask_key` as they stand in memory (as encode_frame_header
// wrote them): 8 bytes at a time, then the tail.
inline void mask_payload(char* p, std::size_t n, std::uint32_t mask_key) noexcept {
    unsigned char mask[4];
    std::memcpy(mask, &mask_key, 4);
    unsigned char const m8b[8] = {mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3]};
    std::uint64_t m8 = 0;
    std::memcpy(&m8, m8b, 8);
    std::size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        std::uint64_t w = 0;
        std::memcpy(&w, p + i, 8);
        w ^= m8;
        std::memcpy(p + i, &w, 8);
    }
    for (; i < n; ++i) p[i] = static_cast<char>(static_cast<unsigned char>(p[i]) ^ mask[i & 3]);
}

// Appends one masked client frame (FIN set) to `out`.
inline void append_masked_frame(std::string& out, std::uint8_t opcode, char const* payload, std::size_t n,
                                std::uint32_t mask_key) {
    unsigned char head[max_frame_header];
    std::size_t const h = encode_frame_header(head, opcode, n, true, mask_key);
    std::size_t const start = out.size();
    out.resize(start + h + n);
    char* dst = out.data() + start;
    std::memcpy(dst, head, h);
    dst += h;
    if (n) std::memcpy(dst, payload, n);
    mask_payload(dst, n, mask_key);
}

struct frame_header {
    bool fin = false;
    std::uint8_t rsv = 0;  // the three reserved bits (0x70 of the first byte); no extension sets them here
    std::uint8_t opcode = 0;
    bool masked = false;
    std::uint64_t payload_size = 0;
    std::size_t size = 0;  // the header's bytes, masking key included
    std::uint32_t mask_key = 0;
};

// Reads the frame header at the start of `p` (`available` bytes, at least 2). fin, rsv, opcode
// and masked are set from the first two bytes whatever follows; false when the rest of the header
// has not arrived yet (payload_size and size are then not set).
inline bool decode_frame_header(unsigned char const* p, std::size_t available, frame_header& h) noexcept {
    h.fin = (p[0] & 0x80) != 0;
    h.rsv = static_cast<std::uint8_t>(p[0] & 0x70);
    h.opcode = static_cast<std::uint8_t>(p[0] & 0x0F);
    h.masked = (p[1] & 0x80) != 0;
    std::uint64_t len = p[1] & 0x7F;
    std::size_t size = 2;
    if (len == 126) {
        if (available < 4) return false;
        len = (static_cast<std::uint64_t>(p[2]) << 8) | p[3];
        size = 4;
    } else if (len == 127) {
        if (available < 10) return false;
        len = 0;
        for (int k = 0; k < 8; ++k) len = (len << 8) | p[2 + k];
        size = 10;
    }
    if (h.masked) {
        if (available < size + 4) return false;
        std::memcpy(&h.mask_key, p + size, 4);
        size += 4;
    }
    h.payload_size = len;
    h.size = size;
    return true;
}

// The Sec-WebSocket-Accept a server answers to `key` (RFC 6455 4.2.2): base64(SHA-1(key + GUID)).
// Empty when SHA-1 fails: an empty value matches no server's answer, so that upgrade fails.
std::string accept_key(std::string_view key);

}  // namespace wsig::wire
