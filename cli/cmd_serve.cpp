// `wsig serve`: not built yet (placeholder until its issue lands).
#include "commands.hpp"

#include <wsig/exit_code.hpp>

namespace wsig::cli {

command setup_serve(CLI::App& root) {
    auto* app = root.add_subcommand("serve", "(not built yet)");
    return {app, [] {
                print_error("'serve' is not built yet");
                return to_int(exit_code::usage);
            }};
}

}  // namespace wsig::cli
