// Helpers shared by the subcommands: secret options and diagnostics on stderr.
#include "commands.hpp"

#include <wsig/exit_code.hpp>
#include <wsig/signing.hpp>

#include <fmt/color.h>
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <unistd.h>

namespace wsig::cli {

void add_secret_options(CLI::App& app, secret_options& opts) {
    app.add_option("--secret-file", opts.secret_file, "Read the signing secret from FILE (one trailing newline ignored)")
        ->type_name("FILE");
    app.add_option("--secret", opts.secret,
                   "The signing secret itself (visible in `ps`: prefer --secret-file or WSIG_SECRET)")
        ->type_name("SECRET");
    app.add_flag("--strict", opts.strict, "Strict signing: bind the signature to the User-Agent and IP");
}

namespace {
bool stderr_colour() {
    static bool const colour = std::getenv("NO_COLOR") == nullptr && isatty(STDERR_FILENO) == 1;
    return colour;
}
}  // namespace

void print_error(std::string const& message) {
    if (stderr_colour())
        fmt::print(stderr, "{} {}\n", fmt::styled("wsig: error:", fmt::fg(fmt::terminal_color::red)), message);
    else
        fmt::print(stderr, "wsig: error: {}\n", message);
}

void print_warning(std::string const& message) {
    if (stderr_colour())
        fmt::print(stderr, "{} {}\n", fmt::styled("wsig: warning:", fmt::fg(fmt::terminal_color::yellow)), message);
    else
        fmt::print(stderr, "wsig: warning: {}\n", message);
}

}  // namespace wsig::cli

namespace wsig::cli {

std::optional<std::string> resolve_secret(secret_options const& opts) {
    if (!opts.secret_file.empty()) {
        auto text = read_secret_file(opts.secret_file);
        if (!text) throw exit_error(to_int(exit_code::config), fmt::format("secret file: {}", text.error().message));
        return *text;
    }
    if (char const* env = std::getenv("WSIG_SECRET"); env && *env) return std::string(env);
    if (!opts.secret.empty()) return opts.secret;
    return std::nullopt;
}

}  // namespace wsig::cli
