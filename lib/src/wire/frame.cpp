#include "wire/frame.hpp"

#include <wsig/base64.hpp>

#include <openssl/sha.h>

namespace wsig::wire {

std::string accept_key(std::string_view key) {
    static constexpr std::string_view guid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    std::string in;
    in.reserve(key.size() + guid.size());
    in.append(key);
    in.append(guid);
    unsigned char digest[SHA_DIGEST_LENGTH];
    if (SHA1(reinterpret_cast<unsigned char const*>(in.data()), in.size(), digest) == nullptr) return {};
    return base64_encode(std::string_view(reinterpret_cast<char const*>(digest), sizeof digest));
}

}  // namespace wsig::wire
