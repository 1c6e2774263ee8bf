// `wsig verify`: checks a signed client ID; prints the value and exits 0, or says why and exits 1.
#include "commands.hpp"

#include <wsig/exit_code.hpp>
#include <wsig/signing.hpp>

#include <fmt/format.h>

#include <memory>

namespace wsig::cli {

std::string signing_key(secret_options const& secret, std::string const& user_agent, std::string const& ip);
void add_strict_peer_options(CLI::App& app, std::string& user_agent, std::string& ip);

struct verify_options {
    std::string signed_value;
    secret_options secret;
    std::string user_agent;
    std::string ip;
};

command setup_verify(CLI::App& root) {
    auto opts = std::make_shared<verify_options>();
    auto* app = root.add_subcommand("verify", "Verify a signed client ID: prints the value, exit 0, or why, exit 1");
    app->footer(R"~(Examples:
  wsig verify "$(wsig sign 12345 --secret-file secret)" --secret-file secret
  wsig verify "$id" --secret-file secret --strict --user-agent 'Mozilla/5.0' --ip ::1

Exit codes: 0 valid (the value is printed), 1 invalid or malformed (the reason is on stderr),
2 usage, 78 unreadable secret file.)~");
    app->add_option("signed", opts->signed_value, "The signed value, s:<value>.<signature>")->required();
    add_secret_options(*app, opts->secret);
    add_strict_peer_options(*app, opts->user_agent, opts->ip);
    return {app, [opts] {
                auto key = signing_key(opts->secret, opts->user_agent, opts->ip);
                auto value = unsign(opts->signed_value, key);
                if (!value) {
                    print_error(fmt::format("invalid: {}", value.error().message));
                    return to_int(exit_code::negative);
                }
                fmt::print("{}\n", *value);
                return to_int(exit_code::ok);
            }};
}

}  // namespace wsig::cli
