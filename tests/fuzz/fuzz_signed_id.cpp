// Fuzzes the signed-ID verifier: no crash on any input, and sign/unsign agree on every value.
#include <wsig/signing.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size) {
    std::string_view text(reinterpret_cast<char const*>(data), size);
    auto split = text.find('\n');
    auto secret = split == std::string_view::npos ? std::string_view("s3cr3t") : text.substr(0, split);
    auto rest = split == std::string_view::npos ? text : text.substr(split + 1);
    (void)wsig::unsign(rest, secret);
    auto signed_value = wsig::sign(rest, secret);
    if (!signed_value) __builtin_trap();  // an HMAC failure here is a bug in the build, not in the input
    auto back = wsig::unsign(*signed_value, secret);
    if (!back || *back != rest) __builtin_trap();
    return 0;
}
