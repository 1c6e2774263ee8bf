// `wsig send`: not built yet (placeholder until its issue lands).
#include "commands.hpp"

#include <wsig/exit_code.hpp>

namespace wsig::cli {

command setup_send(CLI::App& root) {
    auto* app = root.add_subcommand("send", "(not built yet)");
    return {app, [] {
                print_error("'send' is not built yet");
                return to_int(exit_code::usage);
            }};
}

}  // namespace wsig::cli
