// The library's error values: a category of failure plus a human-readable detail.
#pragma once

#include <boost/system/result.hpp>

#include <ostream>
#include <string>
#include <utility>

namespace wsig {

enum class errc {
    invalid_argument = 1,  // a value given by the user does not parse (duration, size, flag spec)
    bad_envelope,          // a client message that is not a valid Pode envelope
    not_signed,            // a value without the "s:" prefix where a signed one is required
    malformed_signature,   // "s:" present but no '.' separating value and signature
    bad_signature,         // the HMAC does not match
    broadcast_level,       // a send refused by the broadcast level of its Name
    io,                    // a file or socket operation failed
    crypto,                // an OpenSSL primitive failed (HMAC, random bytes): never the input's fault
};

struct error {
    errc code{};
    std::string message;
};

// Called by result<T, error>::value() when it holds an error.
[[noreturn]] void throw_exception_from_error(error const& e, boost::source_location const& loc);

template <class T>
using result = boost::system::result<T, error>;

inline std::ostream& operator<<(std::ostream& os, error const& e) {
    return os << e.message;
}

inline error make_error(errc code, std::string message) {
    return error{code, std::move(message)};
}

}  // namespace wsig
