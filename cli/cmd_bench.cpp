// `wsig bench`: not built yet (placeholder until the performance issue lands).
#include "commands.hpp"

#include <wsig/exit_code.hpp>

namespace wsig::cli {

command setup_bench(CLI::App& root) {
    auto* app = root.add_subcommand("bench", "(not built yet)");
    return {app, [] {
                print_error("'bench' is not built yet");
                return to_int(exit_code::usage);
            }};
}

}  // namespace wsig::cli
