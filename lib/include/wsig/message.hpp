// An outgoing WebSocket message framed once: header and payload in one immutable block for every
// recipient. A recipient's send queue copies a small frame (up to 1 KiB) next to the others it
// holds and shares a bigger one (lib/src/server/send_queue.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace wsig {

enum class opcode : std::uint8_t { continuation = 0x0, text = 0x1, binary = 0x2, close = 0x8, ping = 0x9, pong = 0xA };

class outgoing_message {
public:
    // One unmasked, final frame (server to client) holding `payload`.
    static std::shared_ptr<outgoing_message const> make(opcode op, std::string_view payload);
    static std::shared_ptr<outgoing_message const> text(std::string_view payload) {
        return make(opcode::text, payload);
    }
    static std::shared_ptr<outgoing_message const> binary(std::string_view payload) {
        return make(opcode::binary, payload);
    }

    // Frames already built, back to back, sent as one block: `count` messages (a batch of
    // broadcasts, router.hpp) or the bytes of a handshake (count 0). payload() is all of it.
    static std::shared_ptr<outgoing_message const> frames(std::string bytes, std::size_t count) {
        return std::make_shared<outgoing_message const>(opcode::text, std::move(bytes), 0, count);
    }

    std::string_view frame() const noexcept { return bytes_; }  // ready for the socket
    std::string_view payload() const noexcept { return std::string_view(bytes_).substr(header_size_); }
    opcode op() const noexcept { return op_; }
    std::size_t messages() const noexcept { return messages_; }  // the messages frame() holds

    outgoing_message(opcode op, std::string bytes, std::size_t header_size, std::size_t messages = 1)
        : bytes_(std::move(bytes)), header_size_(header_size), messages_(messages), op_(op) {}

private:
    std::string bytes_;
    std::size_t header_size_;
    std::size_t messages_;
    opcode op_;
};

using message_ptr = std::shared_ptr<outgoing_message const>;

}  // namespace wsig
