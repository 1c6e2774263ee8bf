// HMAC-SHA256 signing of client IDs with OpenSSL, byte-compatible with Pode.
#include <wsig/signing.hpp>

#include <wsig/base64.hpp>

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <fstream>
#include <limits>

namespace wsig {

result<std::string> hmac_sha256_base64(std::string_view key, std::string_view message) {
    auto const failed = [](char const* why) {
        return make_error(errc::crypto, fmt::format("cannot compute HMAC-SHA256: {}", why));
    };
    // HMAC() takes the key length as an int: a longer key would be cut, silently, to another key.
    if (key.size() > static_cast<std::size_t>(std::numeric_limits<int>::max())) return failed("the key is over 2 GiB");
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    // An empty key is legal for HMAC; OpenSSL wants a non-null pointer for it.
    static unsigned char const empty = 0;
    auto const* key_ptr = key.empty() ? &empty : reinterpret_cast<unsigned char const*>(key.data());
    unsigned char const* const mac =
        HMAC(EVP_sha256(), key_ptr, static_cast<int>(key.size()),
             reinterpret_cast<unsigned char const*>(message.data()), message.size(), digest, &digest_len);
    // A null result or a short digest is a failure, never a signature (an empty one would verify "s:X.").
    if (mac == nullptr) return failed("OpenSSL's HMAC() failed");
    if (digest_len != SHA256_DIGEST_LENGTH) return failed("OpenSSL's HMAC() returned a digest of the wrong length");
    auto out = base64_encode(std::string_view(reinterpret_cast<char const*>(digest), digest_len));
    if (out.size() != signature_length) return failed("the base64 of the digest has the wrong length");
    return out;
}

std::string strict_secret(std::string_view secret, std::string_view user_agent, std::string_view ip) {
    return fmt::format("{};{};{}", secret, user_agent, ip);
}

result<std::string> sign(std::string_view value, std::string_view secret) {
    auto mac = hmac_sha256_base64(secret, value);
    if (!mac) return mac.error();
    return fmt::format("s:{}.{}", value, *mac);
}

bool is_signed_form(std::string_view value) {
    return value.starts_with("s:");
}

result<std::string> unsign(std::string_view signed_value, std::string_view secret) {
    if (!is_signed_form(signed_value))
        return make_error(errc::not_signed, "not a signed value: it does not start with 's:'");
    auto body = signed_value.substr(2);
    auto dot = body.rfind('.');
    if (dot == std::string_view::npos)
        return make_error(errc::malformed_signature, "malformed signed value: no '.' before the signature");
    auto value = body.substr(0, dot);
    auto given = body.substr(dot + 1);
    auto expected = hmac_sha256_base64(secret, value);
    if (!expected) return expected.error();  // no HMAC: nothing verifies
    // Length is public (always 44); the bytes are compared in constant time.
    if (given.size() != expected->size() || CRYPTO_memcmp(given.data(), expected->data(), expected->size()) != 0)
        return make_error(errc::bad_signature, "signature does not match (wrong secret, or the value was changed)");
    return std::string(value);
}

std::string signing_config::key_for(std::string_view user_agent, std::string_view ip) const {
    return strict ? strict_secret(secret, user_agent, ip) : secret;
}

result<std::string> read_secret_file(std::string const& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return make_error(errc::io, fmt::format("cannot read '{}'", path));
    std::string text;
    char chunk[4096];
    while (in.read(chunk, sizeof chunk) || in.gcount() > 0) text.append(chunk, static_cast<std::size_t>(in.gcount()));
    if (in.bad()) return make_error(errc::io, fmt::format("cannot read '{}'", path));
    if (text.ends_with("\r\n"))
        text.resize(text.size() - 2);
    else if (text.ends_with('\n'))
        text.pop_back();
    return text;
}

}  // namespace wsig
