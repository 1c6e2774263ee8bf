// Diagnostics on stderr, shared by the subcommands (their flags: flags.cpp).
#include "commands.hpp"

#include <fmt/color.h>
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>

#include <unistd.h>

namespace wsig::cli {

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
