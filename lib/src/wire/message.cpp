// Framing of outgoing messages: one unmasked frame per message, built once.
#include <wsig/message.hpp>

#include "wire/frame.hpp"

namespace wsig {

std::shared_ptr<outgoing_message const> outgoing_message::make(opcode op, std::string_view payload) {
    unsigned char header[wire::max_frame_header];
    auto header_size = wire::encode_frame_header(header, static_cast<std::uint8_t>(op), payload.size());
    std::string bytes;
    bytes.reserve(header_size + payload.size());
    bytes.append(reinterpret_cast<char const*>(header), header_size);
    bytes.append(payload);
    return std::make_shared<outgoing_message const>(op, std::move(bytes), header_size);
}

}  // namespace wsig
