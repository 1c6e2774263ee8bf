// `wsig sign`: prints a signed client ID, byte-for-byte what Pode's Invoke-PodeValueSign produces.
#include "commands.hpp"

#include <wsig/client_id.hpp>
#include <wsig/exit_code.hpp>
#include <wsig/signing.hpp>

#include <fmt/format.h>

#include <memory>

namespace wsig::cli {

struct sign_options {
    std::string value;
    bool fresh = false;
    secret_options secret;
    std::string user_agent;
    std::string ip;
};

// The signing key from the secret options, shared by sign and verify.
std::string signing_key(secret_options const& secret, std::string const& user_agent, std::string const& ip) {
    auto s = resolve_secret(secret);
    if (!s) throw exit_error(to_int(exit_code::usage), "no secret: give --secret-file FILE, WSIG_SECRET or --secret");
    if (s->find_first_not_of(" \t\r\n") == std::string::npos)
        throw exit_error(to_int(exit_code::config), "the secret is empty or only whitespace");
    return secret.strict ? strict_secret(*s, user_agent, ip) : *s;
}

void add_strict_peer_options(CLI::App& app, std::string& user_agent, std::string& ip) {
    auto* strict = app.get_option("--strict");
    app.add_option("--user-agent", user_agent, "With --strict: the client's User-Agent, trimmed (empty if absent)")
        ->type_name("UA")
        ->needs(strict);
    app.add_option("--ip", ip, "With --strict: the client's IP as the server sees it (127.0.0.1, ::1)")
        ->type_name("IP")
        ->needs(strict);
}

command setup_sign(CLI::App& root) {
    auto opts = std::make_shared<sign_options>();
    auto* app = root.add_subcommand("sign", "Sign a client ID: prints s:<value>.<base64 HMAC-SHA256>");
    app->footer(R"~(Examples:
  wsig sign 12345 --secret-file secret
  WSIG_SECRET=s3cr3t wsig sign --new
  wsig sign 12345 --secret-file secret --strict --user-agent 'curl/8.0' --ip 127.0.0.1

Exit codes: 0 printed, 2 usage (no value, no secret), 78 unreadable secret file (or OpenSSL failed).)~");
    auto* value = app->add_option("value", opts->value, "The value to sign (a client ID)");
    auto* fresh = app->add_flag("--new", opts->fresh, "Sign a fresh random client ID (a lowercase GUID)");
    value->excludes(fresh);
    add_secret_options(*app, opts->secret);
    add_strict_peer_options(*app, opts->user_agent, opts->ip);
    return {app, [opts] {
                if (!opts->fresh && opts->value.empty())
                    throw exit_error(to_int(exit_code::usage), "sign: give a VALUE or --new");
                auto key = signing_key(opts->secret, opts->user_agent, opts->ip);
                auto id = opts->fresh ? new_client_id() : result<std::string>(opts->value);
                if (id) id = sign(*id, key);
                if (!id) throw exit_error(to_int(exit_code::config), id.error().message);  // OpenSSL failed
                fmt::print("{}\n", *id);
                return to_int(exit_code::ok);
            }};
}

}  // namespace wsig::cli
