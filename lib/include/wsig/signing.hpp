// Signed client IDs, byte-compatible with Pode's Invoke-PodeValueSign / Invoke-PodeValueUnsign.
#pragma once

#include <wsig/error.hpp>

#include <cstddef>
#include <string>
#include <string_view>

namespace wsig {

// The length of a signature: base64 of a 32-byte digest.
inline constexpr std::size_t signature_length = 44;

// Base64 (standard alphabet, padded) of HMAC-SHA256(key, message); errc::crypto when OpenSSL fails
// (or the key is over 2 GiB), never a short or empty value.
result<std::string> hmac_sha256_base64(std::string_view key, std::string_view message);

// The key used in strict mode: secret;UserAgent;IP (Pode's ConvertTo-PodeStrictSecret).
std::string strict_secret(std::string_view secret, std::string_view user_agent, std::string_view ip);

// "s:" + value + "." + base64(HMAC-SHA256(secret, value)); errc::crypto when the HMAC fails.
result<std::string> sign(std::string_view value, std::string_view secret);

// The unsigned value when `signed_value` carries a valid signature; the reason otherwise (errc::crypto
// when the HMAC cannot be computed: then nothing verifies). Splits at the last '.', compares in constant time.
result<std::string> unsign(std::string_view signed_value, std::string_view secret);

bool is_signed_form(std::string_view value);  // starts with "s:"

// How a server signs: off, or a secret with the strict flag. The key for one peer is
// derived per request (strict binds it to that peer's User-Agent and IP).
struct signing_config {
    bool enabled = false;
    std::string secret;
    bool strict = false;

    std::string key_for(std::string_view user_agent, std::string_view ip) const;
};

// Reads a secret, password or key file: one trailing newline (LF or CRLF) is not part of it.
result<std::string> read_secret_file(std::string const& path);

}  // namespace wsig
