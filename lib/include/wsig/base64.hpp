// Base64 (RFC 4648, standard alphabet, padded) through OpenSSL, for every part of wsig that needs it.
#pragma once

#include <string>
#include <string_view>

namespace wsig {

// Any length: OpenSSL's int-sized lengths are never reached (the input goes in bounded pieces).
std::string base64_encode(std::string_view data);

}  // namespace wsig
