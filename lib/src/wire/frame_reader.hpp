// RFC 6455 frames read incrementally, the one reader of the project: the server's WebSocket
// sessions (a client's masked frames) and the load generator (a server's unmasked frames).
//
// The caller hands over whatever bytes a read brought, in a buffer it may reuse at once (the
// server reads every socket of a loop into one scratch buffer). A message whose frames are all in
// that buffer is unmasked in place and handed over as a view of it, with no copy; only a message
// (or a control frame) split across reads is copied, into a buffer of the reader that is freed
// when the message completes. Text is validated as it arrives (fail-fast: the first invalid byte
// fails the connection, before the rest of its frame has arrived).
//
// What it refuses, with the close code the endpoint fails the connection with (RFC 6455 7.4.1):
//   1002  reserved bits set (no extension is negotiated), a reserved opcode, a control frame that
//         is fragmented or carries more than 125 bytes, a continuation with no message to continue,
//         a new data frame inside a fragmented message, a frame masked the wrong way for the role,
//         a close payload of 1 byte or with a code that may not be sent (RFC 6455 7.4.1/7.4.2:
//         valid are 1000-1003, 1007-1014 and 3000-4999), a 64-bit length with its top bit set;
//   1007  a text message (or a close reason) that is not UTF-8;
//   1009  a message longer than the limit, refused as soon as a frame header announces it.
// After a close frame, or after a refusal, the reader takes nothing more.
#pragma once

#include "util/utf8.hpp"

#include <wsig/message.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace wsig::wire {

// Which side reads: a server reads masked frames, a client unmasked ones (RFC 6455 5.1).
enum class reader_role : std::uint8_t { server, client };

// What the reader found, in order. A payload view is valid only during the call (it points into
// the caller's buffer or the reader's own).
class frame_handler {
public:
    virtual ~frame_handler() = default;
    // A whole data message: `op` is text or binary; text is valid UTF-8.
    virtual void on_message(opcode op, std::string_view payload) = 0;
    // A ping or pong (payload of at most 125 bytes).
    virtual void on_ping(std::string_view payload) = 0;
    virtual void on_pong(std::string_view payload) = 0;
    // The peer's close frame: `code` is 1005 when it carried no payload (RFC 6455 7.1.5); `reason`
    // is valid UTF-8. The reader takes nothing after it, and touches nothing of itself once it has
    // called on_close: the handler may reset or destroy the reader there (and only there).
    virtual void on_close(std::uint16_t code, std::string_view reason) = 0;
};

// Why the reader refused the input: the close code to fail the connection with, and a short
// reason for the close frame and the log.
struct read_failure {
    std::uint16_t code = 0;  // 1002, 1007 or 1009; 0: no failure
    char const* reason = "";
};

class frame_reader {
public:
    explicit frame_reader(reader_role role, std::uint64_t max_message) noexcept
        : max_message_(max_message), role_(role) {}

    // Parses `n` bytes at `data`, which it may modify (unmasking in place). Calls `h` for each
    // complete message and control frame, in order. Returns false when the bytes break RFC 6455
    // (failure() says how) or when a close frame was read; the bytes after either are not looked
    // at, and every later call returns false at once.
    bool feed(char* data, std::size_t n, frame_handler& h);

    bool done() const noexcept { return state_ == state::done; }
    read_failure failure() const noexcept { return failure_; }

    // A message is being received (some of its frames or bytes are in, not all).
    bool in_message() const noexcept { return message_op_ != 0 || (split_ && !split_->message.empty()); }
    // The bytes the reader holds for a message split across reads (for the server's memory budget).
    std::size_t buffered() const noexcept {
        return split_ ? heap_bytes(split_->message) + heap_bytes(split_->control) : 0;
    }

    void set_max_message(std::uint64_t max_message) noexcept { max_message_ = max_message; }

private:
    enum class state : std::uint8_t { header, payload, done };

    // What a string holds beyond its own object (none while its text fits inside it).
    static std::size_t heap_bytes(std::string const& s) noexcept {
        return s.capacity() > std::string().capacity() ? s.capacity() : 0;
    }
    bool check_start(unsigned char b0, unsigned char b1) noexcept;
    bool begin_frame(unsigned char const* header) noexcept;
    bool start_payload(char*& p, char* end, frame_handler& h);
    bool read_payload(char*& p, char* end, frame_handler& h);
    void append_partial(char const* p, std::size_t n);
    bool control_frame(std::string_view payload, frame_handler& h);
    bool fail(std::uint16_t code, char const* reason) noexcept;
    void finish() noexcept;

    // Implementation state; see frame_reader.cpp.
    // What arrived split across reads, in a block of its own that only such a reader holds (an idle
    // connection's reader has none).
    struct split_bytes {
        std::string message;  // a data message split across reads (empty and freed otherwise)
        std::string control;  // a control frame's payload split across reads (at most 125 bytes)
    };
    std::unique_ptr<split_bytes> split_;
    split_bytes& split() {
        if (!split_) split_ = std::make_unique<split_bytes>();
        return *split_;
    }
    void drop_split_if_empty() noexcept {
        if (split_ && split_->message.empty() && split_->control.empty()) split_.reset();
    }
    std::uint64_t max_message_;       // bytes of payload per message
    std::uint64_t message_size_ = 0;  // payload bytes of the current message so far
    std::uint64_t frame_left_ = 0;    // payload bytes of the current frame not yet read
    utf8_stream utf8_;                // the text message's validation, across frames and reads
    read_failure failure_;
    std::uint32_t mask_key_ = 0;
    std::uint8_t mask_offset_ = 0;  // where in the masking key the next payload byte is
    std::uint8_t header_[14] = {};  // a frame header split across reads
    std::uint8_t header_size_ = 0;
    std::uint8_t frame_op_ = 0;    // the current frame's opcode
    std::uint8_t message_op_ = 0;  // the data message in progress (text or binary), 0 between messages
    bool frame_fin_ = false;
    state state_ = state::header;
    reader_role role_;
};

// The payload of a close frame with `code` and `reason` (cut to the 123 bytes a close frame
// holds, at a character boundary); empty for code 1005 (no status).
std::string close_payload(std::uint16_t code, std::string_view reason);

}  // namespace wsig::wire
