#include "flags.hpp"

#include "util/header.hpp"

#include <wsig/exit_code.hpp>
#include <wsig/signing.hpp>
#include <wsig/units.hpp>

#include <fmt/format.h>

#include <cstdlib>

namespace wsig::cli {

void usage_error(std::string const& message) {
    throw exit_error(to_int(exit_code::usage), message);
}
void config_error(std::string const& message) {
    throw exit_error(to_int(exit_code::config), message);
}

std::chrono::milliseconds duration_flag(std::string_view flag, std::string_view text) {
    auto d = parse_duration(text);
    if (!d) usage_error(fmt::format("{}: {}", flag, d.error().message));
    return *d;
}

std::chrono::milliseconds duration_or_off_flag(std::string_view flag, std::string_view text) {
    if (text.empty() || text == "off") return std::chrono::milliseconds{0};
    return duration_flag(flag, text);
}

std::uint64_t size_flag(std::string_view flag, std::string_view text) {
    auto v = parse_size(text);
    if (!v) usage_error(fmt::format("{}: {}", flag, v.error().message));
    return *v;
}

std::uint64_t positive_size_flag(std::string_view flag, std::string_view text) {
    auto const v = size_flag(flag, text);
    if (v == 0) usage_error(fmt::format("{} must be greater than 0", flag));
    return v;
}

std::vector<std::pair<std::string, std::string>> header_flags(std::vector<std::string> const& texts) {
    std::vector<std::pair<std::string, std::string>> out;
    out.reserve(texts.size());
    for (auto const& text : texts) {
        auto parsed = parse_header(text);
        if (!parsed) usage_error(fmt::format("-H: {}", parsed.error().message));
        out.push_back(std::move(*parsed));
    }
    return out;
}

std::string secret_file_flag(std::string_view flag, std::string const& path) {
    auto v = read_secret_file(path);
    if (!v) config_error(fmt::format("{}: {}", flag, v.error().message));
    return *v;
}

std::string api_key_flag(std::string const& api_key_file) {
    if (!api_key_file.empty()) return secret_file_flag("--api-key-file", api_key_file);
    if (char const* env = std::getenv("WSIG_API_KEY"); env && *env) return env;
    return {};
}

void add_secret_options(CLI::App& app, secret_options& opts) {
    app.add_option("--secret-file", opts.secret_file,
                   "Read the signing secret from FILE (one trailing newline ignored)")
        ->type_name("FILE");
    app.add_option("--secret", opts.secret,
                   "The signing secret itself (visible in `ps`: prefer --secret-file or WSIG_SECRET)")
        ->type_name("SECRET");
    app.add_flag("--strict", opts.strict, "Strict signing: bind the signature to the User-Agent and IP");
}

std::optional<std::string> resolve_secret(secret_options const& opts) {
    if (!opts.secret_file.empty()) return secret_file_flag("--secret-file", opts.secret_file);
    if (char const* env = std::getenv("WSIG_SECRET"); env && *env) return std::string(env);
    if (!opts.secret.empty()) return opts.secret;
    return std::nullopt;
}

void add_tls_flags(CLI::App& app, tls_options& tls, std::string_view schemes) {
    app.add_flag("--insecure", tls.insecure, fmt::format("{}: accept any certificate and host name", schemes));
    app.add_option("--cacert", tls.cacert, fmt::format("{}: trust the CA certificates in this PEM file", schemes))
        ->type_name("FILE");
}

}  // namespace wsig::cli
