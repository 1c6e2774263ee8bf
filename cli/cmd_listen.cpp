// `wsig listen`: not built yet (placeholder until its issue lands).
#include "commands.hpp"

#include <wsig/exit_code.hpp>

namespace wsig::cli {

command setup_listen(CLI::App& root) {
    auto* app = root.add_subcommand("listen", "(not built yet)");
    return {app, [] {
                print_error("'listen' is not built yet");
                return to_int(exit_code::usage);
            }};
}

}  // namespace wsig::cli
