// Client-ID generation: a random lowercase GUID, formatted as .NET's Guid(byte[]) does.
#pragma once

#include <wsig/error.hpp>

#include <array>
#include <cstdint>
#include <string>

namespace wsig {

// Formats 16 bytes the way .NET's new Guid(bytes).ToString() does (first three groups little-endian).
std::string format_guid(std::array<std::uint8_t, 16> const& bytes);

// 16 bytes from OpenSSL's CSPRNG, formatted by format_guid; errc::crypto when RAND_bytes fails.
result<std::string> new_client_id();

// True for a lowercase or uppercase 8-4-4-4-12 hex GUID.
bool looks_like_guid(std::string const& text);

}  // namespace wsig
