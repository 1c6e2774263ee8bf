// The incremental RFC 6455 reader: headers (split across reads or not), unmasking, text validated
// as it arrives, fragments and the control frames between them, and the refusals of
// frame_reader.hpp. A frame that is whole in the caller's buffer and is a message by itself (or a
// control frame) is unmasked in place and handed over as a view: the echo path copies nothing.
#include "wire/frame_reader.hpp"

#include "wire/frame.hpp"

#include <algorithm>
#include <cstring>

namespace wsig::wire {

namespace {

constexpr std::uint8_t op_continuation = 0x0;
constexpr std::uint8_t op_text = 0x1;
constexpr std::uint8_t op_binary = 0x2;
constexpr std::uint8_t op_close = 0x8;
constexpr std::uint8_t op_ping = 0x9;
constexpr std::uint8_t op_pong = 0xA;
constexpr std::size_t max_control_payload = 125;  // RFC 6455 5.5

constexpr bool is_control(std::uint8_t op) noexcept {
    return (op & 0x8) != 0;
}

// The whole header's length from its second byte: 2, plus 2 or 8 for an extended length, plus 4
// for a masking key.
constexpr std::size_t header_length(unsigned char b1) noexcept {
    std::size_t n = 2;
    unsigned const len = b1 & 0x7Fu;
    if (len == 126) n += 2;
    if (len == 127) n += 8;
    if ((b1 & 0x80u) != 0) n += 4;
    return n;
}

// The masking key as it applies from byte `offset` of it on: a payload unmasked in pieces resumes
// where the last piece stopped.
std::uint32_t rotated_key(std::uint32_t key, unsigned offset) noexcept {
    if (offset == 0) return key;
    unsigned char m[4];
    unsigned char r[4];
    std::memcpy(m, &key, 4);
    for (unsigned i = 0; i < 4; ++i) r[i] = m[(i + offset) & 3u];
    std::memcpy(&key, r, 4);
    return key;
}

// RFC 6455 7.4.1/7.4.2: the codes a peer may send in a close frame (1004-1006 and 1015 are
// reserved, 1016-2999 unassigned, 3000-4999 registered or private).
constexpr bool valid_close_code(unsigned code) noexcept {
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

}  // namespace

bool frame_reader::fail(std::uint16_t code, char const* reason) noexcept {
    failure_ = {code, reason};
    finish();
    return false;
}

void frame_reader::finish() noexcept {
    state_ = state::done;
    split_.reset();
}

// The first two bytes of a header, checked as soon as they are in (fail-fast: before the rest of
// the header or any payload).
bool frame_reader::check_start(unsigned char b0, unsigned char b1) noexcept {
    bool const fin = (b0 & 0x80u) != 0;
    auto const op = static_cast<std::uint8_t>(b0 & 0x0Fu);
    if ((b0 & 0x70u) != 0) return fail(1002, "reserved bits set");
    switch (op) {
        case op_continuation:
            if (message_op_ == 0) return fail(1002, "continuation with no message");
            break;
        case op_text:
        case op_binary:
            if (message_op_ != 0) return fail(1002, "new message inside a fragmented one");
            break;
        case op_close:
        case op_ping:
        case op_pong:
            if (!fin) return fail(1002, "fragmented control frame");
            if ((b1 & 0x7Fu) > max_control_payload) return fail(1002, "control frame over 125 bytes");
            break;
        default: return fail(1002, "reserved opcode");
    }
    bool const masked = (b1 & 0x80u) != 0;
    if (role_ == reader_role::server && !masked) return fail(1002, "unmasked frame from a client");
    if (role_ == reader_role::client && masked) return fail(1002, "masked frame from a server");
    return true;
}

// A whole header (checked by check_start): the frame's state, and for a data frame the message's.
bool frame_reader::begin_frame(unsigned char const* header) noexcept {
    frame_header fh;
    decode_frame_header(header, header_length(header[1]), fh);
    if ((fh.payload_size >> 63) != 0) return fail(1002, "64-bit length with its top bit set");
    frame_op_ = fh.opcode;
    frame_fin_ = fh.fin;
    frame_left_ = fh.payload_size;
    mask_key_ = fh.mask_key;
    mask_offset_ = 0;
    if (is_control(frame_op_)) return true;
    if (frame_op_ != op_continuation) {
        message_op_ = frame_op_;
        message_size_ = 0;
        utf8_.reset();
    }
    // Refused on the header, before any of its payload is buffered.
    if (message_size_ > max_message_ || frame_left_ > max_message_ - message_size_)
        return fail(1009, "message too big");
    message_size_ += frame_left_;
    return true;
}

// Right after a header: a frame whose payload is all in [p, end) and that needs nothing from
// another frame (a control frame, or a final frame starting a message) is unmasked where it lies
// and handed over; any other goes through read_payload, a piece at a time.
bool frame_reader::start_payload(char*& p, char* end, frame_handler& h) {
    auto const avail = static_cast<std::size_t>(end - p);
    bool const alone = is_control(frame_op_) || (frame_fin_ && frame_op_ != op_continuation);
    if (!alone || frame_left_ > avail) {
        state_ = state::payload;
        return read_payload(p, end, h);
    }
    auto const n = static_cast<std::size_t>(frame_left_);
    if (role_ == reader_role::server) mask_payload(p, n, mask_key_);
    std::string_view const payload(p, n);
    p += n;
    frame_left_ = 0;
    if (is_control(frame_op_)) return control_frame(payload, h);
    if (frame_op_ == op_text && !(utf8_.feed(payload) && utf8_.complete())) return fail(1007, "invalid UTF-8");
    auto const op = static_cast<opcode>(message_op_);
    message_op_ = 0;
    message_size_ = 0;
    h.on_message(op, payload);
    return true;
}

// What of the current frame's payload is in [p, end): unmasked, text validated, copied into the
// message (or control frame) being assembled; the frame handled when its last byte is in.
bool frame_reader::read_payload(char*& p, char* end, frame_handler& h) {
    auto const n = static_cast<std::size_t>(std::min<std::uint64_t>(frame_left_, static_cast<std::size_t>(end - p)));
    if (n != 0) {
        if (role_ == reader_role::server) {
            mask_payload(p, n, rotated_key(mask_key_, mask_offset_));
            mask_offset_ = static_cast<std::uint8_t>((mask_offset_ + n) & 3u);
        }
        if (is_control(frame_op_)) {
            auto& control = split().control;
            if (control.capacity() < max_control_payload) control.reserve(max_control_payload);
            control.append(p, n);
        } else {
            if (message_op_ == op_text && !utf8_.feed(std::string_view(p, n))) return fail(1007, "invalid UTF-8");
            append_partial(p, n);
        }
        p += n;
        frame_left_ -= n;
    }
    if (frame_left_ != 0) return true;
    state_ = state::header;
    if (is_control(frame_op_)) {
        // A close: the reader may be gone after it. (No split block: the payload was empty.)
        if (!control_frame(split_ ? std::string_view(split_->control) : std::string_view(), h)) return false;
        if (split_) std::string().swap(split_->control);
        drop_split_if_empty();
        return true;
    }
    if (!frame_fin_) return true;
    if (message_op_ == op_text && !utf8_.complete()) return fail(1007, "invalid UTF-8");
    auto const op = static_cast<opcode>(message_op_);
    message_op_ = 0;
    message_size_ = 0;
    h.on_message(op, split_ ? std::string_view(split_->message) : std::string_view());  // none: empty
    if (split_) std::string().swap(split_->message);
    drop_split_if_empty();
    return true;
}

// Geometric growth, but never past what can still arrive: within the message's last frame its
// size is known (message_size_), otherwise the limit bounds it. So a header announcing 16 MiB
// reserves nothing, and a message at the limit holds no more than the limit.
void frame_reader::append_partial(char const* p, std::size_t n) {
    auto& partial = split().message;
    std::size_t const need = partial.size() + n;
    if (need > partial.capacity()) {
        std::uint64_t const bound = frame_fin_ ? message_size_ : max_message_;
        std::uint64_t const grown =
            std::min<std::uint64_t>(std::max<std::uint64_t>(need, 2 * partial.capacity()), bound);
        // std::string::reserve itself doubles a request below twice the capacity: a new string
        // reserves exactly what is asked.
        std::string bigger;
        bigger.reserve(std::max<std::size_t>(need, static_cast<std::size_t>(grown)));
        bigger.append(partial);
        partial.swap(bigger);
    }
    partial.append(p, n);
}

// A whole control frame: a ping or pong handed over, a close checked (RFC 6455 5.5.1, 7.1.5) and
// the end of the reader.
bool frame_reader::control_frame(std::string_view payload, frame_handler& h) {
    if (frame_op_ == op_ping) {
        h.on_ping(payload);
        return true;
    }
    if (frame_op_ == op_pong) {
        h.on_pong(payload);
        return true;
    }
    if (payload.empty()) {
        finish();
        h.on_close(1005, {});
        return false;
    }
    if (payload.size() == 1) return fail(1002, "close payload of 1 byte");
    unsigned const code =
        (static_cast<unsigned>(static_cast<unsigned char>(payload[0])) << 8) | static_cast<unsigned char>(payload[1]);
    if (!valid_close_code(code)) return fail(1002, "invalid close code");
    std::string_view const reason = payload.substr(2);
    if (!valid_utf8(reason)) return fail(1007, "invalid UTF-8 in close reason");
    // The reader is finished before the handler hears of the close, and touches nothing of itself
    // after it: the handler may reset or destroy it there. So the reason is held on the stack.
    char held[max_control_payload - 2];
    std::memcpy(held, reason.data(), reason.size());
    finish();
    h.on_close(static_cast<std::uint16_t>(code), std::string_view(held, reason.size()));
    return false;
}

bool frame_reader::feed(char* data, std::size_t n, frame_handler& h) {
    if (state_ == state::done) return false;
    char* p = data;
    char* const end = data + n;
    while (p != end) {
        if (state_ == state::payload) {
            if (!read_payload(p, end, h)) return false;
            continue;
        }
        auto const avail = static_cast<std::size_t>(end - p);
        auto const* u = reinterpret_cast<unsigned char const*>(p);
        if (header_size_ == 0 && avail >= 2 && header_length(u[1]) <= avail) {
            // The usual case: the whole header is here, read where it lies.
            if (!check_start(u[0], u[1])) return false;
            p += header_length(u[1]);
            if (!begin_frame(u) || !start_payload(p, end, h)) return false;
            continue;
        }
        // A header split across reads: up to its first two bytes (checked at once), then the rest.
        std::size_t const before = header_size_;
        std::size_t const want = before < 2 ? 2 : header_length(header_[1]);
        std::size_t const k = std::min(want - before, avail);
        std::memcpy(header_ + before, p, k);
        p += k;
        header_size_ = static_cast<std::uint8_t>(before + k);
        if (header_size_ < 2) continue;
        if (before < 2 && !check_start(header_[0], header_[1])) return false;
        if (header_size_ < header_length(header_[1])) continue;
        header_size_ = 0;
        if (!begin_frame(header_) || !start_payload(p, end, h)) return false;
    }
    return state_ != state::done;
}

std::string close_payload(std::uint16_t code, std::string_view reason) {
    if (code == 1005) return {};
    std::string out;
    std::string_view const cut = cut_utf8(reason, 123);  // 125 bytes of a control frame, less the code
    out.reserve(2 + cut.size());
    out.push_back(static_cast<char>(code >> 8));
    out.push_back(static_cast<char>(code & 0xFF));
    out.append(cut);
    return out;
}

}  // namespace wsig::wire
