// Signing and verification: Pode's vectors, RFC 4231 for the HMAC, tampering, dots, non-ASCII, strict mode.
#include "catch.hpp"

#include <wsig/signing.hpp>

#include <nlohmann/json.hpp>

#include <unistd.h>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

namespace {

nlohmann::json load_vectors() {
    std::ifstream in(std::string(WSIG_TEST_VECTORS) + "/signing.json");
    REQUIRE(in.good());
    return nlohmann::json::parse(in);
}

std::string repeat(char c, std::size_t n) {
    return std::string(n, c);
}

// The value of a computation that must succeed here (value() throws, and Catch2 reports it).
std::string hmac(std::string_view key, std::string_view message) {
    return wsig::hmac_sha256_base64(key, message).value();
}
std::string sign(std::string_view value, std::string_view secret) {
    return wsig::sign(value, secret).value();
}

}  // namespace

TEST_CASE("signing: every vector of tests/vectors/signing.json (Pode's) signs and verifies") {
    auto doc = load_vectors();
    REQUIRE(doc["vectors"].size() == 3);
    for (auto const& v : doc["vectors"]) {
        auto value = v["value"].get<std::string>();
        auto secret = v["secret"].get<std::string>();
        if (v["strict"].get<bool>())
            secret = wsig::strict_secret(secret, v["userAgent"].get<std::string>(), v["ip"].get<std::string>());
        INFO(v.dump());
        CHECK(sign(value, secret) == v["signed"].get<std::string>());
        auto back = wsig::unsign(v["signed"].get<std::string>(), secret);
        REQUIRE(back.has_value());
        CHECK(*back == value);
    }
}

TEST_CASE("signing: every invalid vector is refused with the secret s3cr3t") {
    auto doc = load_vectors();
    REQUIRE(doc["invalid"].size() == 5);
    for (auto const& v : doc["invalid"]) {
        INFO(v.get<std::string>());
        CHECK_FALSE(wsig::unsign(v.get<std::string>(), "s3cr3t").has_value());
    }
}

TEST_CASE("signing: the HMAC matches RFC 4231 test cases 1-4, 6 and 7") {
    // Expected digests are RFC 4231's hex values in base64 (the form signatures use).
    CHECK(hmac(repeat('\x0b', 20), "Hi There") == "sDRMYdjbOFNcqK/OrwvxK4gdwgDJgz2nJuk3bC4yz/c=");
    CHECK(hmac("Jefe", "what do ya want for nothing?") == "W9zBRr9gdU5qBCQmCJV1x1oAPwidJzmDnexYuWTsOEM=");
    CHECK(hmac(repeat('\xaa', 20), repeat('\xdd', 50)) == "dz6pHjaADkaFTbjr0JGBpylZCYs++MEi2WNVFM7VZf4=");
    std::string key4;
    for (char c = 1; c <= 25; ++c) key4.push_back(c);
    CHECK(hmac(key4, repeat('\xcd', 50)) == "glWKOJpEPA6kzIGYmfIIOoXw+qPlePgHei4/9GcpZls=");
    CHECK(hmac(repeat('\xaa', 131), "Test Using Larger Than Block-Size Key - Hash Key First") ==
          "YOQxWR7gtn8Niiaqy/W3f44LxiE3KMUUBUYEDw7jf1Q=");
    CHECK(hmac(repeat('\xaa', 131),
               "This is a test using a larger than block-size key and a larger than block-size "
               "data. The key needs to be hashed before being used by the HMAC algorithm.") ==
          "mwn/pxuUL8snY1+81bDpRL/cY2RPBxOTin9RU1w6NeI=");
}

TEST_CASE("signing: a signature is always 44 characters of padded standard base64") {
    for (auto value : {"", "x", "12345", "5d12f974-7b1a-4524-ab93-6afbf42c4ffa"}) {
        auto s = sign(value, "key");
        auto sig = s.substr(s.rfind('.') + 1);
        CHECK(sig.size() == 44);
        CHECK(sig.back() == '=');
    }
}

TEST_CASE("signing: a value containing dots splits at the last dot") {
    auto s = sign("a.b.c", "sécret✓");
    CHECK(s == "s:a.b.c.THH7+8ifX2k3XpyDnuLYDlJ8x+MBcSZ9Dfg83+ENoI4=");  // computed independently (Python hmac)
    auto back = wsig::unsign(s, "sécret✓");
    REQUIRE(back.has_value());
    CHECK(*back == "a.b.c");
}

TEST_CASE("signing: a tampered or truncated signature is refused") {
    auto s = sign("12345", "s3cr3t");
    auto flip = s;
    flip[flip.size() - 3] = flip[flip.size() - 3] == 'A' ? 'B' : 'A';
    CHECK(wsig::unsign(flip, "s3cr3t").error().code == wsig::errc::bad_signature);
    CHECK(wsig::unsign(s.substr(0, s.size() - 1), "s3cr3t").error().code == wsig::errc::bad_signature);
    CHECK(wsig::unsign(s.substr(0, s.rfind('.') + 1), "s3cr3t").error().code == wsig::errc::bad_signature);
    CHECK(wsig::unsign(s + "A", "s3cr3t").error().code == wsig::errc::bad_signature);
    // Pode compares case-insensitively; wsig compares the exact bytes.
    auto lower = s;
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    CHECK_FALSE(wsig::unsign("s:12345" + lower.substr(7), "s3cr3t").has_value());
    CHECK_FALSE(wsig::unsign(s, "s3cr3T").has_value());
}

TEST_CASE("signing: malformed values say why") {
    CHECK(wsig::unsign("12345", "k").error().code == wsig::errc::not_signed);
    CHECK(wsig::unsign("", "k").error().code == wsig::errc::not_signed);
    CHECK(wsig::unsign("S:12345.abc", "k").error().code == wsig::errc::not_signed);
    CHECK(wsig::unsign("s:12345", "k").error().code == wsig::errc::malformed_signature);
    CHECK(wsig::unsign("s:", "k").error().code == wsig::errc::malformed_signature);
}

TEST_CASE("signing: when the HMAC cannot be computed, nothing is signed and nothing verifies") {
    // HMAC() takes an int key length: a key over 2 GiB is refused before OpenSSL sees it (the view
    // is never read, so no memory stands behind it).
    std::string_view const huge_key("k", std::size_t{1} << 31);
    auto mac = wsig::hmac_sha256_base64(huge_key, "12345");
    REQUIRE_FALSE(mac.has_value());
    CHECK(mac.error().code == wsig::errc::crypto);
    auto signed_value = wsig::sign("12345", huge_key);
    REQUIRE_FALSE(signed_value.has_value());
    CHECK(signed_value.error().code == wsig::errc::crypto);
    // Not a signature over an empty MAC: "s:12345." and any other value are refused.
    for (auto const& candidate :
         {std::string("s:12345."), sign("12345", "k"), std::string("s:12345.") + repeat('A', 44)}) {
        auto back = wsig::unsign(candidate, huge_key);
        REQUIRE_FALSE(back.has_value());
        CHECK(back.error().code == wsig::errc::crypto);
    }
}

TEST_CASE("signing: strict mode keys on secret;UserAgent;IP, IPv6 included") {
    CHECK(wsig::strict_secret("k", "Mozilla/5.0 (X11)", "::1") == "k;Mozilla/5.0 (X11);::1");
    CHECK(wsig::strict_secret("k", "", "127.0.0.1") == "k;;127.0.0.1");
    auto key = wsig::strict_secret("k", "Mozilla/5.0 (X11)", "::1");
    CHECK(sign("abc", key) == "s:abc.fHFeU8GH9E3yx5S4Fjdz6J3FWS20RYAmgOp9Uuanrfc=");  // Python hmac
    CHECK_FALSE(wsig::unsign(sign("abc", key), wsig::strict_secret("k", "Mozilla/5.0 (X11)", "::2")));
    CHECK_FALSE(wsig::unsign(sign("abc", key), "k"));

    wsig::signing_config cfg{.enabled = true, .secret = "k", .strict = true};
    CHECK(cfg.key_for("Mozilla/5.0 (X11)", "::1") == key);
    cfg.strict = false;
    CHECK(cfg.key_for("Mozilla/5.0 (X11)", "::1") == "k");
}

TEST_CASE("signing: a secret file loses one trailing newline, not more") {
    char name[] = "/tmp/wsig-secret-XXXXXX";
    int fd = ::mkstemp(name);
    REQUIRE(fd >= 0);
    ::close(fd);
    std::string path = name;
    auto write = [&](std::string const& text) { std::ofstream(path, std::ios::binary) << text; };
    write("s3cr3t\n");
    CHECK(wsig::read_secret_file(path).value() == "s3cr3t");
    write("s3cr3t\r\n");
    CHECK(wsig::read_secret_file(path).value() == "s3cr3t");
    write("s3cr3t\n\n");
    CHECK(wsig::read_secret_file(path).value() == "s3cr3t\n");
    write("s3cr3t");
    CHECK(wsig::read_secret_file(path).value() == "s3cr3t");
    std::remove(path.c_str());
    auto missing = wsig::read_secret_file(path);
    REQUIRE_FALSE(missing.has_value());
    CHECK(missing.error().code == wsig::errc::io);
}
