// The subcommands of wsig: each file cmd_<name>.cpp adds its options to the app and returns how to run it.
#pragma once

#include "flags.hpp"

#include <CLI/CLI.hpp>

#include <functional>
#include <string>

namespace wsig::cli {

// Runs the parsed subcommand and returns the process exit code (SPEC.md section 8).
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

// Prints "wsig: <message>" on stderr (in red on a TTY unless NO_COLOR is set).
void print_error(std::string const& message);
void print_warning(std::string const& message);

}  // namespace wsig::cli
