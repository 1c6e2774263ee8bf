// The process exit codes of every wsig subcommand (the README's "Exit codes" table); stable, documented.
#pragma once

#include <string_view>

namespace wsig {

enum class exit_code : int {
    ok = 0,
    negative = 1,        // verify invalid, --count/--until not met, send delivered to nobody
    usage = 2,           // unknown flag, bad duration or size, no subcommand
    data_error = 65,     // invalid JSON with --json
    no_input = 66,       // an input file cannot be read
    no_user = 67,        // addressee unknown (push answered 404)
    unavailable = 69,    // connection refused or reset, 5xx
    protocol = 76,       // upgrade not 101, bad accept key, TLS failure, close 1002/1007/1009
    no_permission = 77,  // 401/403, bad signature
    config = 78,         // bad certificate, unreadable secret or key file, port in use
    threshold = 99,      // bench: the run finished but a --threshold did not hold (as k6)
    timeout = 124,       // --timeout expired
    sigint = 130,
    sigterm = 143,
};

struct exit_code_doc {
    exit_code code;
    std::string_view meaning;
};

// The table printed by `wsig help exit-codes` and used in --help; one source for both.
extern exit_code_doc const exit_code_table[14];

constexpr int to_int(exit_code c) {
    return static_cast<int>(c);
}

}  // namespace wsig
