// Client IDs: .NET Guid byte order, lowercase, random, well-formed.
#include "catch.hpp"

#include <wsig/client_id.hpp>

#include <set>

TEST_CASE("client id: sixteen 0x0a bytes format as Pode's unit test expects") {
    std::array<std::uint8_t, 16> bytes{};
    bytes.fill(0x0a);
    CHECK(wsig::format_guid(bytes) == "0a0a0a0a-0a0a-0a0a-0a0a-0a0a0a0a0a0a");
}

TEST_CASE("client id: the first three groups are little-endian, as .NET's Guid(byte[])") {
    std::array<std::uint8_t, 16> bytes{};
    for (std::size_t i = 0; i < 16; ++i) bytes[i] = static_cast<std::uint8_t>(i);
    CHECK(wsig::format_guid(bytes) == "03020100-0504-0706-0809-0a0b0c0d0e0f");
}

TEST_CASE("client id: new IDs are lowercase GUIDs and do not repeat") {
    std::set<std::string> seen;
    for (int i = 0; i < 1000; ++i) {
        auto id = wsig::new_client_id().value();
        REQUIRE(wsig::looks_like_guid(id));
        for (char c : id) CHECK_FALSE((c >= 'A' && c <= 'Z'));
        seen.insert(id);
    }
    CHECK(seen.size() == 1000);
}

TEST_CASE("client id: looks_like_guid refuses near misses") {
    CHECK(wsig::looks_like_guid("5d12f974-7b1a-4524-ab93-6afbf42c4ffa"));
    CHECK_FALSE(wsig::looks_like_guid("5d12f974-7b1a-4524-ab93-6afbf42c4ff"));
    CHECK_FALSE(wsig::looks_like_guid("5d12f974x7b1a-4524-ab93-6afbf42c4ffa"));
    CHECK_FALSE(wsig::looks_like_guid("5d12f974-7b1a-4524-ab93-6afbf42c4ffg"));
}
