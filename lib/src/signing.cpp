// HMAC-SHA256 signing of client IDs with OpenSSL, byte-compatible with Pode.
#include <wsig/signing.hpp>

#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <fstream>

namespace wsig {

std::string hmac_sha256_base64(std::string_view key, std::string_view message) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    // An empty key is legal for HMAC; OpenSSL wants a non-null pointer for it.
    static unsigned char const empty = 0;
    auto const* key_ptr = key.empty() ? &empty : reinterpret_cast<unsigned char const*>(key.data());
    HMAC(EVP_sha256(), key_ptr, static_cast<int>(key.size()), reinterpret_cast<unsigned char const*>(message.data()),
         message.size(), digest, &digest_len);
    std::string out(4 * ((digest_len + 2) / 3), '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), digest, static_cast<int>(digest_len));
    out.resize(static_cast<std::size_t>(n));
    return out;
}

std::string strict_secret(std::string_view secret, std::string_view user_agent, std::string_view ip) {
    return fmt::format("{};{};{}", secret, user_agent, ip);
}

std::string sign(std::string_view value, std::string_view secret) {
    return fmt::format("s:{}.{}", value, hmac_sha256_base64(secret, value));
}

bool is_signed_form(std::string_view value) { return value.starts_with("s:"); }

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
    // Length is public (always 44); the bytes are compared in constant time.
    if (given.size() != expected.size() || CRYPTO_memcmp(given.data(), expected.data(), expected.size()) != 0)
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
    if (text.ends_with("\r\n")) text.resize(text.size() - 2);
    else if (text.ends_with('\n')) text.pop_back();
    return text;
}

}  // namespace wsig
