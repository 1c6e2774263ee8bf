// wire/frame: the RFC 6455 frame headers of the server and bench, masking and the accept key.
#include "catch.hpp"

#include "wire/frame.hpp"

#include <wsig/message.hpp>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace {

std::vector<unsigned> header_bytes(std::uint8_t op, std::uint64_t n, bool masked = false, std::uint32_t key = 0) {
    unsigned char out[wsig::wire::max_frame_header];
    auto const size = wsig::wire::encode_frame_header(out, op, n, masked, key);
    return {out, out + size};
}

}  // namespace

TEST_CASE("frame: header lengths at the 7-, 16- and 64-bit boundaries") {
    CHECK(header_bytes(0x1, 0) == std::vector<unsigned>{0x81, 0x00});
    CHECK(header_bytes(0x2, 125) == std::vector<unsigned>{0x82, 125});
    CHECK(header_bytes(0x1, 126) == std::vector<unsigned>{0x81, 126, 0x00, 126});
    CHECK(header_bytes(0x1, 0xFFFF) == std::vector<unsigned>{0x81, 126, 0xFF, 0xFF});
    CHECK(header_bytes(0x1, 0x10000) == std::vector<unsigned>{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0});
    CHECK(header_bytes(0x8, 0x0102030405060708ull) == std::vector<unsigned>{0x88, 127, 1, 2, 3, 4, 5, 6, 7, 8});
    auto const masked = header_bytes(0x1, 5, true, 0x04030201u);
    REQUIRE(masked.size() == 6);
    CHECK(masked[1] == (0x80 | 5));
}

TEST_CASE("frame: what is written is read back") {
    for (std::uint64_t n : {0ull, 1ull, 125ull, 126ull, 127ull, 0xFFFFull, 0x10000ull, 1ull << 40}) {
        for (bool masked : {false, true}) {
            INFO(n << (masked ? " masked" : ""));
            unsigned char out[wsig::wire::max_frame_header];
            auto const size = wsig::wire::encode_frame_header(out, 0x2, n, masked, 0xA1B2C3D4u);
            wsig::wire::frame_header h;
            for (std::size_t avail = 2; avail < size; ++avail)
                CHECK_FALSE(wsig::wire::decode_frame_header(out, avail, h));
            REQUIRE(wsig::wire::decode_frame_header(out, size, h));
            CHECK(h.fin);
            CHECK(h.rsv == 0);
            CHECK(h.opcode == 0x2);
            CHECK(h.masked == masked);
            CHECK(h.payload_size == n);
            CHECK(h.size == size);
            if (masked) CHECK(h.mask_key == 0xA1B2C3D4u);
        }
    }
    unsigned char const rsv[2] = {0x41, 0x00};  // RSV1, not final: reported before the rest arrives
    wsig::wire::frame_header h;
    CHECK(wsig::wire::decode_frame_header(rsv, 2, h));
    CHECK(h.rsv == 0x40);
    CHECK_FALSE(h.fin);
}

TEST_CASE("frame: a masked client frame unmasks to its payload") {
    std::string const payload = "Hello, masked world: longer than eight bytes";
    std::string out = "prefix";
    wsig::wire::append_masked_frame(out, 0x1, payload.data(), payload.size(), 0x37FA213Du);
    wsig::wire::frame_header h;
    REQUIRE(wsig::wire::decode_frame_header(reinterpret_cast<unsigned char const*>(out.data() + 6), out.size() - 6, h));
    REQUIRE(h.masked);
    REQUIRE(out.size() == 6 + h.size + payload.size());
    std::string body = out.substr(6 + h.size);
    CHECK(body != payload);
    wsig::wire::mask_payload(body.data(), body.size(), h.mask_key);
    CHECK(body == payload);
}

TEST_CASE("frame: RFC 6455's mask example and accept key") {
    // RFC 6455 5.7: a masked "Hello" with key 37 fa 21 3d.
    std::string const hello = "Hello";
    unsigned char const key_bytes[4] = {0x37, 0xfa, 0x21, 0x3d};
    std::uint32_t key;
    std::memcpy(&key, key_bytes, 4);
    std::string out;
    wsig::wire::append_masked_frame(out, 0x1, hello.data(), hello.size(), key);
    CHECK(out == std::string("\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", 11));
    // RFC 6455 1.3.
    CHECK(wsig::wire::accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST_CASE("frame: the server's frames use the same header") {
    auto m = wsig::outgoing_message::text(std::string(300, 'x'));
    wsig::wire::frame_header h;
    REQUIRE(wsig::wire::decode_frame_header(reinterpret_cast<unsigned char const*>(m->frame().data()),
                                            m->frame().size(), h));
    CHECK(h.opcode == 0x1);
    CHECK_FALSE(h.masked);
    CHECK(h.payload_size == 300);
    CHECK(m->payload() == std::string(300, 'x'));
}
