// wire/frame_reader: the one incremental RFC 6455 reader (the server's sessions and the bench client).
#include "catch.hpp"

#include "wire/frame.hpp"
#include "wire/frame_reader.hpp"

#include <wsig/message.hpp>

#include <cstdint>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

using namespace std::string_literals;
using wsig::opcode;
using wsig::wire::frame_reader;
using wsig::wire::reader_role;

namespace {

constexpr std::uint64_t mib = 1024 * 1024;

// One frame as a peer writes it: `b0` is the first byte (FIN, RSV, opcode), the length in its
// shortest form unless `len_form` forces 126 or 127, masked with `key` when `masked`.
std::string frame(std::uint8_t b0, std::string_view payload, bool masked, std::uint32_t key = 0x9C2E4F17u,
                  int len_form = 0) {
    std::string out(1, static_cast<char>(b0));
    unsigned char const mask_bit = masked ? 0x80 : 0x00;
    std::uint64_t const n = payload.size();
    if ((n < 126 && len_form == 0) || len_form == 1) {
        out.push_back(static_cast<char>(mask_bit | n));
    } else if ((n <= 0xFFFF && len_form == 0) || len_form == 126) {
        out.push_back(static_cast<char>(mask_bit | 126));
        out.push_back(static_cast<char>(n >> 8));
        out.push_back(static_cast<char>(n & 0xFF));
    } else {
        out.push_back(static_cast<char>(mask_bit | 127));
        for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xFF));
    }
    std::string body(payload);
    if (masked) {
        out.append(reinterpret_cast<char const*>(&key), 4);
        wsig::wire::mask_payload(body.data(), body.size(), key);
    }
    return out + body;
}

// A header alone, announcing `n` bytes in the 64-bit form (what a huge or hostile frame starts with).
std::string header64(std::uint8_t b0, std::uint64_t n, bool masked) {
    std::string out(1, static_cast<char>(b0));
    out.push_back(static_cast<char>((masked ? 0x80 : 0x00) | 127));
    for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xFF));
    if (masked) out.append("\x01\x02\x03\x04", 4);
    return out;
}

constexpr std::uint8_t fin = 0x80;
constexpr std::uint8_t text = 0x1, binary = 0x2, cont = 0x0, close_op = 0x8, ping = 0x9, pong = 0xA;

std::string close_frame(unsigned code, std::string_view reason, bool masked) {
    std::string p;
    p.push_back(static_cast<char>(code >> 8));
    p.push_back(static_cast<char>(code & 0xFF));
    p.append(reason);
    return frame(fin | close_op, p, masked);
}

struct event {
    std::string kind;  // text, binary, ping, pong, close
    std::string payload;
    unsigned code = 0;
    bool operator==(event const&) const = default;
};

std::ostream& operator<<(std::ostream& os, event const& e) {
    return os << e.kind << "(" << e.payload.size() << " bytes" << (e.code ? ", " + std::to_string(e.code) : "") << ")";
}

struct recorder : wsig::wire::frame_handler {
    std::vector<event> events;
    std::vector<char const*> views;  // where each message's payload was
    void on_message(opcode op, std::string_view payload) override {
        events.push_back({op == opcode::text ? "text" : op == opcode::binary ? "binary" : "?", std::string(payload)});
        views.push_back(payload.data());
    }
    void on_ping(std::string_view payload) override { events.push_back({"ping", std::string(payload)}); }
    void on_pong(std::string_view payload) override { events.push_back({"pong", std::string(payload)}); }
    void on_close(std::uint16_t code, std::string_view reason) override {
        events.push_back({"close", std::string(reason), code});
    }
};

struct outcome {
    std::vector<event> events;
    bool last_feed = true;
    std::uint16_t code = 0;
    bool done = false;
    bool operator==(outcome const&) const = default;
};

// Feeds `bytes` in pieces cut at `cuts` (increasing offsets), each piece from a fresh copy as a
// socket read would hand it over, until the reader refuses.
outcome feed_cut(reader_role role, std::string const& bytes, std::vector<std::size_t> const& cuts,
                 std::uint64_t max_message = 64 * mib) {
    frame_reader r(role, max_message);
    recorder rec;
    outcome o;
    std::size_t at = 0;
    auto piece = [&](std::size_t to) {
        std::string buf = bytes.substr(at, to - at);
        at = to;
        o.last_feed = r.feed(buf.data(), buf.size(), rec);
        return o.last_feed;
    };
    bool go = true;
    for (auto c : cuts)
        if (go) go = piece(c);
    if (go) piece(bytes.size());
    o.events = rec.events;
    o.code = r.failure().code;
    o.done = r.done();
    return o;
}

outcome feed_whole(reader_role role, std::string const& bytes, std::uint64_t max_message = 64 * mib) {
    return feed_cut(role, bytes, {}, max_message);
}

outcome feed_bytewise(reader_role role, std::string const& bytes, std::uint64_t max_message = 64 * mib) {
    std::vector<std::size_t> cuts;
    for (std::size_t i = 1; i < bytes.size(); ++i) cuts.push_back(i);
    return feed_cut(role, bytes, cuts, max_message);
}

// The close code a reader of `role` fails `bytes` with (0 when it does not).
std::uint16_t refusal(reader_role role, std::string const& bytes, std::uint64_t max_message = 64 * mib) {
    auto const o = feed_whole(role, bytes, max_message);
    if (o.code != 0) CHECK_FALSE(o.last_feed);
    CHECK(feed_bytewise(role, bytes, max_message).code == o.code);
    return o.code;
}

bool masked_for(reader_role role) {
    return role == reader_role::server;
}

}  // namespace

TEST_CASE("frame_reader: every length encoding, both roles, whole and a byte at a time") {
    for (auto role : {reader_role::server, reader_role::client}) {
        for (std::size_t n : {0u, 1u, 125u, 126u, 127u, 128u, 65535u, 65536u, 70000u}) {
            INFO((role == reader_role::server ? "server " : "client ") << n);
            std::string payload(n, 'x');
            for (std::size_t i = 0; i < n; ++i) payload[i] = static_cast<char>('a' + i % 26);
            auto const bytes = frame(fin | text, payload, masked_for(role));
            auto const o = feed_whole(role, bytes);
            REQUIRE(o.events.size() == 1);
            CHECK(o.events[0] == event{"text", payload});
            CHECK(o.last_feed);
            CHECK_FALSE(o.done);
            if (n <= 128) CHECK(feed_bytewise(role, bytes) == o);
            auto const bin = feed_whole(role, frame(fin | binary, payload, masked_for(role)));
            REQUIRE(bin.events.size() == 1);
            CHECK(bin.events[0] == event{"binary", payload});
        }
    }
}

TEST_CASE("frame_reader: lengths in a longer form than needed are read too") {
    auto const o = feed_whole(reader_role::client,
                              frame(fin | text, "hi", false, 0, 127) + frame(fin | binary, "yo", false, 0, 126));
    CHECK(o.events == std::vector<event>{{"text", "hi"}, {"binary", "yo"}});
}

TEST_CASE("frame_reader: a message whole in the buffer is handed over in place, unmasked") {
    std::string buf = frame(fin | text, "hello", true) + frame(fin | binary, std::string(300, 'b'), true) +
                      frame(fin | ping, "p", true);
    frame_reader r(reader_role::server, 1024);
    recorder rec;
    REQUIRE(r.feed(buf.data(), buf.size(), rec));
    REQUIRE(rec.events.size() == 3);
    CHECK(rec.events[0] == event{"text", "hello"});
    CHECK(rec.events[1] == event{"binary", std::string(300, 'b')});
    CHECK(rec.events[2] == event{"ping", "p"});
    REQUIRE(rec.views.size() == 2);
    for (auto const* v : rec.views) {
        CHECK(v >= buf.data());
        CHECK(v < buf.data() + buf.size());
    }
    CHECK(rec.views[0] == buf.data() + 6);  // after 2 header bytes and the masking key
    CHECK(std::string_view(rec.views[0], 5) == "hello");
    CHECK_FALSE(r.in_message());
    CHECK(r.buffered() == 0);  // nothing allocated
}

TEST_CASE("frame_reader: a stream split at every point reads the same as whole") {
    for (auto role : {reader_role::server, reader_role::client}) {
        INFO((role == reader_role::server ? "server" : "client"));
        bool const m = masked_for(role);
        // "€" split between fragments, a ping and a pong between fragments, an empty fragment, an
        // empty message, a 200-byte binary message (16-bit length), a close, and a frame after it.
        std::string const bytes = frame(text, "caf\xE2\x82", m) + frame(fin | ping, "are you", m) + frame(cont, "", m) +
                                  frame(fin | pong, "here", m) + frame(fin | cont, "\xAC!", m) +
                                  frame(fin | text, "", m) + frame(fin | binary, std::string(200, '\x80'), m) +
                                  frame(binary, "ab", m) + frame(fin | cont, "cd", m) + close_frame(1000, "bye", m) +
                                  frame(fin | text, "after the close", m);
        auto const whole = feed_whole(role, bytes);
        std::vector<event> const expected{{"ping", "are you"},
                                          {"pong", "here"},
                                          {"text", "caf\xE2\x82\xAC!"},
                                          {"text", ""},
                                          {"binary", std::string(200, '\x80')},
                                          {"binary", "abcd"},
                                          {"close", "bye", 1000}};
        CHECK(whole.events == expected);
        CHECK_FALSE(whole.last_feed);
        CHECK(whole.done);
        CHECK(whole.code == 0);
        CHECK(feed_bytewise(role, bytes) == whole);
        for (std::size_t i = 1; i < bytes.size(); ++i) {
            INFO("split at " << i);
            CHECK(feed_cut(role, bytes, {i}) == whole);
        }
        for (std::size_t i = 1; i < bytes.size(); i += 7)
            for (std::size_t j = i + 1; j < bytes.size(); j += 5) {
                INFO("split at " << i << " and " << j);
                CHECK(feed_cut(role, bytes, {i, j}) == whole);
            }
    }
}

TEST_CASE("frame_reader: a masked payload unmasked in pieces resumes the key where it stopped") {
    std::string payload;
    for (int i = 0; i < 1000; ++i) payload.push_back(static_cast<char>(i * 7));
    auto const bytes = frame(fin | binary, payload, true, 0xDEADBEEFu);
    for (std::size_t step : {1u, 2u, 3u, 5u, 8u, 13u, 64u, 999u}) {
        std::vector<std::size_t> cuts;
        for (std::size_t c = step; c < bytes.size(); c += step) cuts.push_back(c);
        auto const o = feed_cut(reader_role::server, bytes, cuts);
        REQUIRE(o.events.size() == 1);
        CHECK(o.events[0].payload == payload);
    }
}

TEST_CASE("frame_reader: fragmented messages with control frames between, in_message between") {
    frame_reader r(reader_role::server, 1024);
    recorder rec;
    std::string a = frame(binary, "one ", true) + frame(fin | ping, "1", true);
    REQUIRE(r.feed(a.data(), a.size(), rec));
    CHECK(r.in_message());
    CHECK(rec.events == std::vector<event>{{"ping", "1"}});
    std::string b = frame(cont, "two ", true) + frame(fin | pong, "2", true) + frame(fin | cont, "three", true);
    REQUIRE(r.feed(b.data(), b.size(), rec));
    CHECK_FALSE(r.in_message());
    CHECK(rec.events == std::vector<event>{{"ping", "1"}, {"pong", "2"}, {"binary", "one two three"}});
    CHECK(r.buffered() == 0);  // the message's buffer freed
    // A whole message split between reads is in a message from its header until its last byte.
    std::string c = frame(fin | text, "split", true);
    REQUIRE(r.feed(c.data(), 8, rec));  // the header (6 bytes) and 2 of the payload
    CHECK(r.in_message());
    REQUIRE(r.feed(c.data() + 8, c.size() - 8, rec));
    CHECK_FALSE(r.in_message());
    CHECK(rec.events.back() == event{"text", "split"});
}

TEST_CASE("frame_reader: refusals and their close codes") {
    using R = reader_role;
    auto const s = R::server;
    SECTION("1002") {
        CHECK(refusal(s, frame(fin | 0x40 | text, "x", true)) == 1002);  // RSV1
        CHECK(refusal(s, frame(fin | 0x20 | text, "x", true)) == 1002);  // RSV2
        CHECK(refusal(s, frame(fin | 0x10 | text, "x", true)) == 1002);  // RSV3
        for (std::uint8_t op : {3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF}) {
            INFO("opcode " << int(op));
            CHECK(refusal(s, frame(fin | op, "", true)) == 1002);
        }
        CHECK(refusal(s, frame(ping, "x", true)) == 1002);                          // a fragmented ping
        CHECK(refusal(s, frame(close_op, "", true)) == 1002);                       // a fragmented close
        CHECK(refusal(s, frame(fin | ping, std::string(126, 'p'), true)) == 1002);  // a ping over 125 bytes
        CHECK(refusal(s, frame(fin | pong, std::string(125, 'p'), true)) == 0);
        CHECK(refusal(s, frame(fin | cont, "x", true)) == 1002);                             // nothing to continue
        CHECK(refusal(s, frame(text, "x", true) + frame(fin | text, "y", true)) == 1002);    // new inside
        CHECK(refusal(s, frame(text, "x", true) + frame(fin | binary, "y", true)) == 1002);  // new inside
        CHECK(refusal(s, frame(fin | text, "x", false)) == 1002);         // a client's frame unmasked
        CHECK(refusal(R::client, frame(fin | text, "x", true)) == 1002);  // a server's frame masked
        CHECK(refusal(s, frame(fin | close_op, "\x03", true)) == 1002);   // a close payload of 1 byte
        CHECK(refusal(s, header64(fin | binary, 1ull << 63, true)) == 1002);
        CHECK(refusal(s, header64(fin | binary, ~0ull, true)) == 1002);
    }
    SECTION("1007") {
        CHECK(refusal(s, frame(fin | text, "caf\xC3", true)) == 1007);
        CHECK(refusal(s, frame(fin | text, "\xED\xA0\x80", true)) == 1007);
        CHECK(refusal(s, frame(text, "ok\xE2\x82", true) + frame(fin | cont, "", true)) == 1007);  // truncated
        CHECK(refusal(s, close_frame(1000, "\xFF", true)) == 1007);
        CHECK(refusal(s, frame(fin | binary, "\xFF\xFE", true)) == 0);  // binary is not checked
    }
    SECTION("1009") {
        CHECK(refusal(s, frame(fin | binary, std::string(100, 'x'), true), 100) == 0);
        CHECK(refusal(s, frame(fin | binary, std::string(101, 'x'), true), 100) == 1009);
        CHECK(refusal(s, frame(binary, std::string(60, 'x'), true) + frame(fin | cont, std::string(40, 'x'), true),
                      100) == 0);
        CHECK(refusal(s, frame(binary, std::string(60, 'x'), true) + frame(fin | cont, std::string(41, 'x'), true),
                      100) == 1009);
        CHECK(refusal(s, header64(fin | binary, (1ull << 63) - 1, true), ~0ull) == 0);  // only announced
        CHECK(refusal(s, header64(fin | binary, (1ull << 63) - 1, true), 64 * mib) == 1009);
        // Control frames do not count toward a message.
        CHECK(refusal(s,
                      frame(binary, std::string(60, 'x'), true) + frame(fin | ping, std::string(100, 'p'), true) +
                          frame(fin | cont, std::string(40, 'x'), true),
                      100) == 0);
    }
}

TEST_CASE("frame_reader: 1009 on the header alone, before the payload arrives") {
    frame_reader r(reader_role::server, 1000);
    recorder rec;
    std::string h = header64(fin | binary, 1001, true);
    CHECK_FALSE(r.feed(h.data(), h.size(), rec));
    CHECK(r.failure().code == 1009);
    CHECK(std::string_view(r.failure().reason) == "message too big");
    CHECK(rec.events.empty());
}

TEST_CASE("frame_reader: refusals come with a reason and stop the reader") {
    frame_reader r(reader_role::server, 1000);
    recorder rec;
    CHECK(r.failure().code == 0);
    std::string bytes =
        frame(fin | text, "fine", true) + frame(fin | 0x40 | text, "x", true) + frame(fin | text, "never read", true);
    CHECK_FALSE(r.feed(bytes.data(), bytes.size(), rec));
    CHECK(r.done());
    CHECK(r.failure().code == 1002);
    CHECK(std::string_view(r.failure().reason) == "reserved bits set");
    CHECK(rec.events == std::vector<event>{{"text", "fine"}});
    std::string more = frame(fin | text, "later", true);
    CHECK_FALSE(r.feed(more.data(), more.size(), rec));
    CHECK_FALSE(r.feed(nullptr, 0, rec));
    CHECK(rec.events.size() == 1);
    CHECK(r.failure().code == 1002);
}

TEST_CASE("frame_reader: invalid UTF-8 fails fast, inside a frame not yet whole") {
    SECTION("in the part of a frame that has arrived") {
        frame_reader r(reader_role::server, 64 * mib);
        recorder rec;
        std::string payload = "good text " + "\xC0\xAF"s + std::string(10000, 'z');
        std::string bytes = frame(fin | text, payload, true);
        CHECK_FALSE(r.feed(bytes.data(), 8 + 4 + 20, rec));  // the header and 20 bytes: the bad byte is in
        CHECK(r.failure().code == 1007);
        CHECK(std::string_view(r.failure().reason) == "invalid UTF-8");
        CHECK(rec.events.empty());
    }
    SECTION("on the first invalid fragment, before the message ends") {
        frame_reader r(reader_role::client, 64 * mib);
        recorder rec;
        std::string bytes = frame(text, "ok", false) + frame(cont, "\xF4\x90\x80\x80", false);  // above U+10FFFF
        CHECK_FALSE(r.feed(bytes.data(), bytes.size(), rec));
        CHECK(r.failure().code == 1007);
    }
    SECTION("a sequence split between fragments and reads is fine") {
        std::string bytes =
            frame(text, "\xF0", false) + frame(cont, "\x9F\x98", false) + frame(fin | cont, "\x80", false);
        auto const o = feed_bytewise(reader_role::client, bytes);
        CHECK(o.events == std::vector<event>{{"text", "\xF0\x9F\x98\x80"}});
    }
    SECTION("a message whose last fragment ends inside a sequence") {
        std::string bytes = frame(text, "\xF0\x9F", false) + frame(fin | cont, "\x98", false);
        CHECK(feed_whole(reader_role::client, bytes).code == 1007);
        CHECK(feed_bytewise(reader_role::client, bytes).code == 1007);
    }
}

TEST_CASE("frame_reader: close codes a peer may send, and those it may not") {
    for (unsigned code = 0; code < 5100; ++code) {
        bool const valid =
            (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
        auto const o = feed_whole(reader_role::server, close_frame(code, "", true));
        if (valid) {
            if (o.events != std::vector<event>{{"close", "", code}}) FAIL("code " << code << " refused");
            if (o.code != 0) FAIL("code " << code);
        } else if (o.code != 1002 || !o.events.empty()) {
            FAIL("code " << code << " accepted");
        }
    }
    CHECK(feed_whole(reader_role::server, close_frame(65535, "", true)).code == 1002);
    auto const empty = feed_whole(reader_role::client, frame(fin | close_op, "", false));
    CHECK(empty.events == std::vector<event>{{"close", "", 1005}});
    CHECK(empty.done);
    CHECK(empty.code == 0);
    auto const reason = feed_whole(reader_role::client, close_frame(4000, "caf\xC3\xA9", false));
    CHECK(reason.events == std::vector<event>{{"close", "caf\xC3\xA9", 4000}});
}

TEST_CASE("frame_reader: nothing is delivered after a close") {
    frame_reader r(reader_role::server, 1024);
    recorder rec;
    std::string bytes =
        frame(binary, "part", true) + close_frame(1001, "going", true) + frame(fin | cont, "rest", true);
    CHECK_FALSE(r.feed(bytes.data(), bytes.size(), rec));
    CHECK(r.done());
    CHECK(r.failure().code == 0);
    CHECK(rec.events == std::vector<event>{{"close", "going", 1001}});
    CHECK(r.buffered() == 0);  // the fragment freed
    std::string more = frame(fin | text, "x", true);
    CHECK_FALSE(r.feed(more.data(), more.size(), rec));
    CHECK(rec.events.size() == 1);
}

TEST_CASE("frame_reader: a 16 MiB announcement allocates nothing until its bytes arrive") {
    frame_reader r(reader_role::server, 64 * mib);
    recorder rec;
    std::string head = header64(fin | binary, 16 * mib, true);
    REQUIRE(r.feed(head.data(), head.size(), rec));
    CHECK(r.in_message());
    CHECK(r.buffered() < 1024);
    std::string chunk(1000, 'x');
    REQUIRE(r.feed(chunk.data(), chunk.size(), rec));
    CHECK(r.buffered() < 4096);
    // Geometric growth: 16 MiB in 64 KiB reads, never more than twice what has arrived, and never
    // more than the message.
    std::uint64_t got = 1000;
    std::string big(64 * 1024, 'y');
    while (got + big.size() <= 16 * mib) {
        REQUIRE(r.feed(big.data(), big.size(), rec));
        got += big.size();
        REQUIRE(r.buffered() <= 2 * got + 2 * sizeof(std::string));
        REQUIRE(r.buffered() <= 16 * mib + 2 * sizeof(std::string));
    }
    std::string rest(16 * mib - got, 'z');
    REQUIRE(r.feed(rest.data(), rest.size(), rec));
    REQUIRE(rec.events.size() == 1);
    CHECK(rec.events[0].payload.size() == 16 * mib);
    CHECK(r.buffered() == 0);
}

TEST_CASE("frame_reader: empty data frames and empty fragments") {
    auto const o = feed_whole(reader_role::server, frame(fin | binary, "", true) + frame(text, "", true) +
                                                       frame(cont, "", true) + frame(fin | cont, "", true));
    CHECK(o.events == std::vector<event>{{"binary", ""}, {"text", ""}});
    CHECK(o.last_feed);
    // An empty final fragment at the very end of a read completes the message in that read.
    frame_reader r(reader_role::client, 100);
    recorder rec;
    std::string a = frame(text, "abc", false) + frame(fin | cont, "", false);
    REQUIRE(r.feed(a.data(), a.size(), rec));
    CHECK(rec.events == std::vector<event>{{"text", "abc"}});
    CHECK_FALSE(r.in_message());
}

TEST_CASE("frame_reader: a header split across reads, every cut") {
    for (auto role : {reader_role::server, reader_role::client}) {
        std::string const bytes = frame(fin | binary, std::string(70000, 'q'), masked_for(role)) +
                                  frame(fin | text, "tail", masked_for(role));
        auto const whole = feed_whole(role, bytes);
        REQUIRE(whole.events.size() == 2);
        for (std::size_t i = 1; i <= 14; ++i) CHECK(feed_cut(role, bytes, {i}) == whole);
        for (std::size_t i = 1; i <= 14; ++i) CHECK(feed_cut(role, bytes, {i, i + 1, i + 2}) == whole);
    }
}

TEST_CASE("frame_reader: close_payload") {
    CHECK(wsig::wire::close_payload(1005, "ignored").empty());
    CHECK(wsig::wire::close_payload(1000, "") == "\x03\xE8"s);
    CHECK(wsig::wire::close_payload(4001, "bye") ==
          "\x0F\xA1"
          "bye"s);
    std::string const long_reason = std::string(122, 'a') + "\xC3\xA9" + "more";  // é at bytes 122-123
    auto const p = wsig::wire::close_payload(1009, long_reason);
    CHECK(p.size() == 2 + 122);
    CHECK(p.substr(2) == std::string(122, 'a'));
    auto const q = wsig::wire::close_payload(1009, std::string(200, 'b'));
    CHECK(q.size() == 125);
    // What close_payload writes, the reader reads back.
    auto const o =
        feed_whole(reader_role::client, frame(fin | close_op, wsig::wire::close_payload(1011, "oops"), false));
    CHECK(o.events == std::vector<event>{{"close", "oops", 1011}});
}

TEST_CASE("frame_reader: the handler may reset the reader when it hears the close") {
    struct resetter : recorder {
        frame_reader* r = nullptr;
        void on_close(std::uint16_t code, std::string_view reason) override {
            recorder::on_close(code, reason);
            *r = frame_reader(reader_role::client, 1024);  // a new connection under the same object
        }
    };
    for (bool split : {false, true}) {
        frame_reader r(reader_role::client, 1024);
        resetter rec;
        rec.r = &r;
        std::string bytes = close_frame(1001, "a reason held past the reset", false) + frame(fin | text, "old", false);
        if (split) {
            REQUIRE(r.feed(bytes.data(), 5, rec));
            CHECK_FALSE(r.feed(bytes.data() + 5, bytes.size() - 5, rec));
        } else {
            CHECK_FALSE(r.feed(bytes.data(), bytes.size(), rec));
        }
        CHECK(rec.events == std::vector<event>{{"close", "a reason held past the reset", 1001}});
        CHECK_FALSE(r.done());  // the new reader, untouched by the old one's close
        std::string next = frame(fin | text, "new", false);
        CHECK(r.feed(next.data(), next.size(), rec));
        CHECK(rec.events.back() == event{"text", "new"});
    }
}
