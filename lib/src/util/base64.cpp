// Base64 encoding with OpenSSL's EVP_EncodeBlock, its int lengths kept in range.
#include <wsig/base64.hpp>

#include <openssl/evp.h>

#include <algorithm>

namespace wsig {

std::string base64_encode(std::string_view data) {
    // 3 MiB of input (a multiple of 3, so the pieces join without padding between them) gives 4 MiB of
    // output per call: far from INT_MAX whatever the input's size.
    constexpr std::size_t piece = 3u << 20;
    std::string out((data.size() + 2) / 3 * 4, '\0');
    std::size_t in_pos = 0, out_pos = 0;
    while (in_pos < data.size()) {
        std::size_t const n = std::min(piece, data.size() - in_pos);
        // +1: EVP_EncodeBlock writes a terminating NUL; the string's own terminator takes the last one.
        int const written =
            EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data() + out_pos),
                            reinterpret_cast<unsigned char const*>(data.data() + in_pos), static_cast<int>(n));
        // EVP_EncodeBlock has no failure but a negative length, which the pieces rule out; a result
        // shorter than promised is kept short rather than padded with NULs.
        if (written <= 0) break;
        in_pos += n;
        out_pos += static_cast<std::size_t>(written);
    }
    out.resize(out_pos);
    return out;
}

}  // namespace wsig
