// The subcommands of wsig: each file cmd_<name>.cpp adds its options to the app and returns how to run it.
#pragma once

#include <CLI/CLI.hpp>

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

namespace wsig::cli {

// Runs the parsed subcommand and returns the process exit code (SPEC.md section 8).
// Where a signing secret comes from: --secret-file, then WSIG_SECRET, then --secret.
struct secret_options {
    std::string secret_file;
    std::string secret;  // --secret: visible in `ps`, documented as such
    bool strict = false;
};
using runner = std::function<int()>;

struct command {
    CLI::App* app;  // the subcommand, owned by the root app
    runner run;
};

command setup_serve(CLI::App& root);
command setup_send(CLI::App& root);
command setup_listen(CLI::App& root);
command setup_sign(CLI::App& root);
command setup_verify(CLI::App& root);
command setup_bench(CLI::App& root);

// The signing secret from the options: --secret-file, else WSIG_SECRET, else --secret.
// Returns nullopt when none is given; throws config_error when the file cannot be read.
std::optional<std::string> resolve_secret(secret_options const& opts);

// A failure that maps to a specific exit code; main() prints its message.
struct exit_error : std::runtime_error {
    int code;
    exit_error(int c, std::string const& message) : std::runtime_error(message), code(c) {}
};

void add_secret_options(CLI::App& app, secret_options& opts);

// Prints "wsig: <message>" on stderr (in red on a TTY unless NO_COLOR is set).
void print_error(std::string const& message);
void print_warning(std::string const& message);

}  // namespace wsig::cli
