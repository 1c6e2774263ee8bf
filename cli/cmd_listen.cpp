// `wsig listen`: the flags of the WebSocket client for scripts and CI; the work is wsig::run_listen.
#include "commands.hpp"

#include <wsig/client.hpp>
#include <wsig/exit_code.hpp>
#include <wsig/units.hpp>

#include <fmt/format.h>

#include <memory>

namespace wsig::cli {

namespace {

struct listen_cli {
    std::string url;
    std::vector<std::string> headers;
    std::string origin;
    tls_options tls;
    std::string output = "text";
    std::uint64_t count = 0;
    std::string until;
    std::string timeout;
    std::string idle_timeout;
    std::vector<std::string> send;
    bool read_stdin = false;
    bool exit_on_eof = false;
    bool json = false;
    bool raw = false;
    std::string path;
    std::vector<std::string> groups;
    std::vector<std::string> to;
    bool direct = false;
    bool echo = false;
    std::string max_message_size = "64MiB";
    std::string id_file;
    std::string reconnect;  // "" not given, "true" bare --reconnect, else --reconnect=N
};

listen_options to_options(listen_cli const& c) {
    listen_options o;
    o.url = c.url;
    o.headers = header_flags(c.headers);
    o.origin = c.origin;
    o.tls = c.tls;
    o.output = c.output == "jsonl" ? output_format::jsonl : output_format::text;
    o.count = c.count;
    if (!c.until.empty()) o.until = c.until;
    o.timeout = duration_or_off_flag("--timeout", c.timeout);
    o.idle_timeout = duration_or_off_flag("--idle-timeout", c.idle_timeout);
    o.send = c.send;
    o.read_stdin = c.read_stdin;
    o.exit_on_eof = c.exit_on_eof;
    o.json = c.json;
    o.raw = c.raw;
    if (!c.path.empty()) o.target.path = c.path;
    o.target.groups = c.groups;
    o.target.client_ids = c.to;
    o.target.direct = c.direct;
    o.echo = c.echo;
    o.max_message_size = positive_size_flag("--max-message-size", c.max_message_size);
    o.id_file = c.id_file;
    if (c.reconnect == "true") {
        o.reconnect = -1;
    } else if (!c.reconnect.empty()) {
        try {
            std::size_t used = 0;
            o.reconnect = std::stoi(c.reconnect, &used);
            if (used != c.reconnect.size() || o.reconnect < -1) throw std::invalid_argument("range");
        } catch (std::exception const&) {
            throw exit_error(
                to_int(exit_code::usage),
                fmt::format("--reconnect={}: give a count of reconnects (or --reconnect alone for no limit)",
                            c.reconnect));
        }
    }
    return o;
}

}  // namespace

command setup_listen(CLI::App& root) {
    auto c = std::make_shared<listen_cli>();
    auto* app = root.add_subcommand("listen", "Connect to a WebSocket server and print what it sends");
    app->footer(R"~(Examples:
  wsig listen ws://127.0.0.1:8091/msg --count 1 --id-file id
  wsig listen wss://example.org/ws --output jsonl --timeout 30s
  wsig listen ws://127.0.0.1:8091/msg --send hello --path Msg --until '^bye$'
  tail -f events | wsig listen ws://127.0.0.1:8091/msg --stdin --path Msg
  wsig listen ws://127.0.0.1:9001/runCase?case=1 --echo --raw

Output: text prints each message and a newline; jsonl prints one object per event
(open, message, close, error) with "ts". Client ID, name and group go to stderr.
Exit codes: 0 done (--count/--until met, or without them a 1000/1001 close),
1 closed before --count/--until was met, 2 usage, 65 --send not JSON with --json,
69 refused/reset/5xx/1011-1014, 76 protocol (no 101, bad accept key, TLS, close
1002/1003/1007/1009/1010), 77 upgrade answered 401/403, 78 --cacert or --id-file
unusable, 124 --timeout or --idle-timeout, 130 SIGINT, 143 SIGTERM.)~");
    app->add_option("url", c->url, "ws:// or wss:// URL to connect to")->required()->type_name("URL");
    app->add_option("-H,--header", c->headers, "Add a header to the upgrade request (repeatable)")->type_name("'K: V'");
    app->add_option("--origin", c->origin, "Send this Origin header with the upgrade")->type_name("ORIGIN");
    add_tls_flags(*app, c->tls, "wss");
    app->add_option("-o,--output", c->output, "Output format: text (payload + newline) or jsonl (one event per line)")
        ->check(CLI::IsMember({"text", "jsonl"}))
        ->type_name("FORMAT");
    app->add_option("-n,--count", c->count, "Exit 0 after N messages")->type_name("N");
    app->add_option("--until", c->until, "Exit 0 after a message matching this ECMAScript regex (printed)")
        ->type_name("REGEX");
    app->add_option("--timeout", c->timeout, "Exit 124 when the whole run takes longer (e.g. 30s)")
        ->type_name("DURATION");
    app->add_option("--idle-timeout", c->idle_timeout, "Exit 124 when no message arrives for this long")
        ->type_name("DURATION");
    app->add_option("--send", c->send, "Send DATA after connecting, as a Pode envelope (repeatable)")
        ->type_name("DATA");
    app->add_flag("--stdin", c->read_stdin, "Send each stdin line as a Pode envelope (EOF does not end listening)");
    app->add_flag("--exit-on-eof", c->exit_on_eof, "With --stdin: close with 1000 and exit 0 at stdin EOF")
        ->needs(app->get_option("--stdin"));
    app->add_flag("--json", c->json, "--send and stdin data are JSON values (sent as JSON, not as strings)");
    app->add_flag("--raw", c->raw, "Send --send and stdin data verbatim, without a Pode envelope");
    app->add_option("--path", c->path, "Envelope 'path': the Name to send to")->type_name("NAME");
    app->add_option("--group", c->groups, "Envelope 'group': target group (repeatable)")->type_name("GROUP");
    app->add_option("--to", c->to, "Envelope 'clientId': target client ID (repeatable)")->type_name("CLIENTID");
    app->add_flag("--direct", c->direct, "Envelope 'direct': the server sends the message back to this client only");
    app->add_flag("--echo", c->echo, "Send every received data frame back verbatim (text as text, binary as binary)");
    app->add_option("--max-message-size", c->max_message_size,
                    "Largest message accepted, default 64MiB; larger ones close with 1009 (exit 76)")
        ->type_name("SIZE");
    app->add_option("--id-file", c->id_file, "Write the client ID (one line) to FILE at connect, atomically")
        ->type_name("FILE");
    // A flag, not an option: a bare --reconnect must not swallow the URL after it.
    app->add_flag("--reconnect", c->reconnect,
                  "Reconnect after a lost or closed connection, with back-off from 250ms to 10s; --reconnect=N: at "
                  "most N times")
        ->type_name("[=N]");
    return {app, [c] {
                auto opts = to_options(*c);
                auto r = run_listen(opts);
                if (!r.message.empty() && r.code != exit_code::ok) print_error(r.message);
                return to_int(r.code);
            }};
}

}  // namespace wsig::cli
