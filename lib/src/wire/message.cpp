// Framing of outgoing messages: one unmasked frame per message, built once.
#include <wsig/message.hpp>

namespace wsig {

std::size_t write_frame_header(opcode op, std::uint64_t n, unsigned char* out) noexcept {
    out[0] = static_cast<unsigned char>(0x80 | static_cast<unsigned>(op));
    if (n < 126) {
        out[1] = static_cast<unsigned char>(n);
        return 2;
    }
    if (n <= 0xFFFF) {
        out[1] = 126;
        out[2] = static_cast<unsigned char>(n >> 8);
        out[3] = static_cast<unsigned char>(n);
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; ++i) out[2 + i] = static_cast<unsigned char>(n >> (56 - 8 * i));
    return 10;
}

std::shared_ptr<outgoing_message const> outgoing_message::make(opcode op, std::string_view payload) {
    unsigned char header[10];
    auto header_size = write_frame_header(op, payload.size(), header);
    std::string bytes;
    bytes.reserve(header_size + payload.size());
    bytes.append(reinterpret_cast<char const*>(header), header_size);
    bytes.append(payload);
    return std::make_shared<outgoing_message const>(op, std::move(bytes), header_size);
}

}  // namespace wsig
