// Fuzzes the RFC 6455 frame reader (wire/frame_reader): the same bytes fed whole, in pieces cut
// where the input says, and (when short) a byte at a time give the same messages and the same
// ending; what is handed over obeys RFC 6455; what the reader holds stays within its limit.
//
// Input: byte 0 picks the role (bit 0) and the message limit (bits 1-2); byte 1 holds how many
// cuts follow (low 4 bits), each 2 bytes (an offset into the stream, taken modulo its size); the
// rest is the stream.
#include "util/utf8.hpp"
#include "wire/frame_reader.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

using wsig::wire::frame_reader;
using wsig::wire::reader_role;

struct event {
    int kind = 0;  // the opcode, or 0x100 + the close code
    std::string payload;
    bool operator==(event const&) const = default;
};

struct outcome {
    std::vector<event> events;
    std::uint16_t code = 0;
    std::string reason;
    bool done = false;
    bool in_message = false;
    bool operator==(outcome const&) const = default;
};

bool valid_close_code(unsigned code) {
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

struct checker : wsig::wire::frame_handler {
    std::uint64_t max_message = 0;
    std::vector<event>* events = nullptr;
    void on_message(wsig::opcode op, std::string_view payload) override {
        if (op != wsig::opcode::text && op != wsig::opcode::binary) __builtin_trap();
        if (payload.size() > max_message) __builtin_trap();
        if (op == wsig::opcode::text && !wsig::valid_utf8(payload)) __builtin_trap();
        events->push_back({static_cast<int>(op), std::string(payload)});
    }
    void on_ping(std::string_view payload) override {
        if (payload.size() > 125) __builtin_trap();
        events->push_back({0x9, std::string(payload)});
    }
    void on_pong(std::string_view payload) override {
        if (payload.size() > 125) __builtin_trap();
        events->push_back({0xA, std::string(payload)});
    }
    void on_close(std::uint16_t code, std::string_view reason) override {
        if (code != 1005 && !valid_close_code(code)) __builtin_trap();
        if (code == 1005 && !reason.empty()) __builtin_trap();
        if (reason.size() > 123 || !wsig::valid_utf8(reason)) __builtin_trap();
        events->push_back({0x100 + code, std::string(reason)});
    }
};

// Feeds `stream` cut at `cuts` (sorted offsets), each piece from a fresh copy as a read would
// hand it over; checks the reader's promises after every piece.
outcome run(reader_role role, std::uint64_t max_message, std::string_view stream,
            std::vector<std::size_t> const& cuts) {
    frame_reader r(role, max_message);
    outcome o;
    checker h;
    h.max_message = max_message;
    h.events = &o.events;
    // What the reader may hold: a message's buffer up to the limit (30 bytes at least: a string's
    // smallest allocation) and a control frame's 125 bytes.
    std::uint64_t const bound = std::max<std::uint64_t>(max_message, 30) + 125;
    std::size_t at = 0;
    bool open = true;
    auto piece = [&](std::size_t to) {
        std::string buf(stream.substr(at, to - at));
        at = to;
        auto const before = o.events.size();
        bool const more = r.feed(buf.data(), buf.size(), h);
        if (!open && (more || o.events.size() != before)) __builtin_trap();  // nothing after the end
        if (more == r.done()) __builtin_trap();
        if (r.buffered() > bound) __builtin_trap();
        open = open && more;
    };
    for (auto c : cuts) piece(c);
    piece(stream.size());
    if (r.failure().code != 0 && r.failure().code != 1002 && r.failure().code != 1007 && r.failure().code != 1009)
        __builtin_trap();
    if (r.failure().code != 0 && (r.failure().reason == nullptr || *r.failure().reason == '\0')) __builtin_trap();
    o.code = r.failure().code;
    o.reason = r.failure().reason;
    o.done = r.done();
    o.in_message = r.in_message();
    return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size) {
    if (size < 2) return 0;
    static constexpr std::uint64_t limits[4] = {64ull << 20, 1000, 125, 70000};
    auto const role = (data[0] & 1) != 0 ? reader_role::client : reader_role::server;
    std::uint64_t const max_message = limits[(data[0] >> 1) & 3];
    std::size_t const ncuts = data[1] & 0x0F;
    std::size_t const head = 2 + 2 * ncuts;
    if (size < head) return 0;
    std::string_view const stream(reinterpret_cast<char const*>(data + head), size - head);
    std::vector<std::size_t> cuts;
    if (!stream.empty()) {
        for (std::size_t i = 0; i < ncuts; ++i) {
            std::size_t const c = (static_cast<std::size_t>(data[2 + 2 * i]) << 8) | data[3 + 2 * i];
            cuts.push_back(c % (stream.size() + 1));
        }
    }
    std::sort(cuts.begin(), cuts.end());

    auto const whole = run(role, max_message, stream, {});
    if (!(run(role, max_message, stream, cuts) == whole)) __builtin_trap();
    if (stream.size() <= 2048) {
        std::vector<std::size_t> every(stream.size() > 0 ? stream.size() - 1 : 0);
        for (std::size_t i = 0; i < every.size(); ++i) every[i] = i + 1;
        if (!(run(role, max_message, stream, every) == whole)) __builtin_trap();
    }
    return 0;
}
