// Entry point: parses the command line, dispatches to a subcommand, maps every failure to an exit code.
#include "commands.hpp"

#include <wsig/exit_code.hpp>

#include <fmt/format.h>

#include <csignal>
#include <exception>
#include <string>

namespace {

constexpr char const* examples = R"~(Examples:
  wsig serve                                  the demo: open http://127.0.0.1:8091/
  wsig serve -p 0 --route /ws=Chat --ready-file url
  wsig listen ws://127.0.0.1:8091/msg --count 1 --id-file id
  wsig send http://127.0.0.1:8091/signal hello --name Msg --client-id "$(cat id)"
  wsig sign --new --secret-file secret
  wsig verify "s:12345.zgyE7UM25VQqgsXZg+Ncg1byFeChtn/4Xsrnt6rumwQ=" --secret-file secret

Exit codes: 0 ok, 1 negative answer, 2 usage, 65 bad data, 66 no input, 67 unknown addressee,
69 unavailable, 76 protocol, 77 permission, 78 configuration, 99 threshold, 124 timeout,
130/143 signal.
`wsig help exit-codes` explains each one.)~";

std::string exit_code_text() {
    std::string out = "Exit codes of wsig (stable):\n";
    for (auto const& doc : wsig::exit_code_table)
        out += fmt::format("  {:>3}  {}\n", wsig::to_int(doc.code), doc.meaning);
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    // A closed stdout (`wsig listen | head -1`) must end quietly, not kill the process mid-write.
    std::signal(SIGPIPE, SIG_IGN);

    CLI::App app{"wsig: run and test WebSocket servers, Pode-style signal servers first", "wsig"};
    app.footer(examples);
    app.set_version_flag("-V,--version", std::string("wsig ") + WSIG_VERSION);
    app.require_subcommand(0, 1);
    app.fallthrough(false);

    wsig::cli::command const commands[] = {
        wsig::cli::setup_serve(app), wsig::cli::setup_send(app),   wsig::cli::setup_listen(app),
        wsig::cli::setup_sign(app),  wsig::cli::setup_verify(app), wsig::cli::setup_bench(app),
    };

    std::string help_topic;
    auto* help = app.add_subcommand("help", "Show help on a topic: exit-codes, or a subcommand");
    help->add_option("topic", help_topic, "exit-codes or a subcommand name");

    try {
        app.parse(argc, argv);
    } catch (CLI::CallForHelp const& e) {
        return app.exit(e);
    } catch (CLI::CallForAllHelp const& e) {
        return app.exit(e);
    } catch (CLI::CallForVersion const& e) {
        return app.exit(e);
    } catch (CLI::ParseError const& e) {
        app.exit(e);
        return wsig::to_int(wsig::exit_code::usage);
    }

    if (help->parsed()) {
        if (help_topic.empty()) {
            fmt::print("{}", app.help());
            return 0;
        }
        if (help_topic == "exit-codes") {
            fmt::print("{}", exit_code_text());
            return 0;
        }
        for (auto const& cmd : commands)
            if (cmd.app->get_name() == help_topic) {
                fmt::print("{}", cmd.app->help("wsig"));
                return 0;
            }
        wsig::cli::print_error(
            fmt::format("no help topic '{}': try exit-codes, serve, send, listen, sign, verify, bench", help_topic));
        return wsig::to_int(wsig::exit_code::usage);
    }

    for (auto const& cmd : commands) {
        if (!cmd.app->parsed()) continue;
        try {
            return cmd.run();
        } catch (wsig::cli::exit_error const& e) {
            wsig::cli::print_error(e.what());
            return e.code;
        } catch (std::exception const& e) {
            wsig::cli::print_error(e.what());
            return wsig::to_int(wsig::exit_code::config);
        }
    }
    fmt::print(stderr, "{}", app.help());
    return wsig::to_int(wsig::exit_code::usage);
}
