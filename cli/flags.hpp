// The flag types every subcommand shares: durations, sizes, -H headers, secrets, keys, TLS. Each
// turns the flag's text into its value or throws exit_error: usage (64) for a malformed value,
// config (78) for a file that cannot be read. Every message starts with the flag's name.
#pragma once

#include <wsig/client.hpp>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wsig::cli {

// A failure that maps to a specific exit code; main() prints its message.
struct exit_error : std::runtime_error {
    int code;
    exit_error(int c, std::string const& message) : std::runtime_error(message), code(c) {}
};

[[noreturn]] void usage_error(std::string const& message);   // exit 64
[[noreturn]] void config_error(std::string const& message);  // exit 78

// 500ms, 10s, 2m, 1h (parse_duration).
std::chrono::milliseconds duration_flag(std::string_view flag, std::string_view text);
// The same for a flag where 0 means none: an unset flag ("") and "off" are 0 too.
std::chrono::milliseconds duration_or_off_flag(std::string_view flag, std::string_view text);

// 64, 64KiB, 1MB (parse_size); positive: 0 is refused.
std::uint64_t size_flag(std::string_view flag, std::string_view text);
std::uint64_t positive_size_flag(std::string_view flag, std::string_view text);

// -H 'Name: value', in order (util/header.hpp: a token name, no CR, LF or NUL in the value).
std::vector<std::pair<std::string, std::string>> header_flags(std::vector<std::string> const& texts);

// A secret read from a file (one trailing newline dropped; read_secret_file).
std::string secret_file_flag(std::string_view flag, std::string const& path);

// The API key: --api-key-file, else WSIG_API_KEY (never a flag's value: argv is visible in `ps`);
// empty when neither is given.
std::string api_key_flag(std::string const& api_key_file);

// Where a signing secret comes from: --secret-file, then WSIG_SECRET, then --secret.
struct secret_options {
    std::string secret_file;
    std::string secret;  // --secret: visible in `ps`, documented as such
    bool strict = false;
};

void add_secret_options(CLI::App& app, secret_options& opts);

// The signing secret from the options: --secret-file, else WSIG_SECRET, else --secret; nullopt
// when none is given.
std::optional<std::string> resolve_secret(secret_options const& opts);

// --insecure and --cacert of a client; `schemes` starts their help ("wss", "https/wss").
void add_tls_flags(CLI::App& app, tls_options& tls, std::string_view schemes);

}  // namespace wsig::cli
