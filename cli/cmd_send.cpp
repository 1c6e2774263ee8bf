// `wsig send`: the flags of the one-shot push (http(s) request-header mechanism or ws(s) envelope);
// reads DATA, '-' or @FILE, and leaves the work to wsig::run_send.
#include "commands.hpp"

#include "util/url.hpp"

#include <wsig/client.hpp>
#include <wsig/exit_code.hpp>
#include <wsig/signing.hpp>
#include <wsig/units.hpp>

#include <fmt/format.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <memory>
#include <sstream>

namespace wsig::cli {

namespace {

struct send_cli {
    std::string url;
    std::string data;
    bool data_given = false;
    std::string client_id;
    std::string name;
    std::vector<std::string> groups;
    bool json = false;
    std::vector<std::string> headers;
    std::string api_key_file;
    std::string timeout = "10s";
    std::string path;
    bool direct = false;
    bool allow_none = false;
    tls_options tls;
};

// DATA as given, '-' for all of stdin, @FILE for a file's bytes; both verbatim (no newline stripped).
std::string read_data(std::string const& arg) {
    if (arg == "-") {
        std::ostringstream all;
        all << std::cin.rdbuf();
        return all.str();
    }
    if (!arg.empty() && arg.front() == '@') {
        std::string const file = arg.substr(1);
        std::ifstream in(file, std::ios::binary);
        if (!in) throw exit_error(to_int(exit_code::no_input), fmt::format("{}: {}", file, std::strerror(errno)));
        std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
        if (in.bad()) throw exit_error(to_int(exit_code::no_input), fmt::format("{}: read error", file));
        return text;
    }
    return arg;
}

int run(send_cli const& c) {
    send_options o;
    o.url = c.url;
    o.timeout = duration_flag("--timeout", c.timeout);
    o.headers = header_flags(c.headers);
    if (auto u = parse_url(c.url); !u) usage_error(u.error().message);
    o.api_key = api_key_flag(c.api_key_file);
    o.data = read_data(c.data);
    o.json = c.json;
    if (c.json) {
        auto j = parse_json_data(o.data);
        if (!j) throw exit_error(to_int(exit_code::data_error), fmt::format("--json: DATA is {}", j.error().message));
    }
    o.client_id = c.client_id;
    o.name = c.name;
    o.groups = c.groups;
    if (!c.path.empty()) o.path = c.path;
    o.direct = c.direct;
    o.allow_none = c.allow_none;
    o.tls = c.tls;
    auto r = run_send(o);
    if (!r.message.empty() && r.code != exit_code::ok) print_error(r.message);
    return to_int(r.code);
}

}  // namespace

command setup_send(CLI::App& root) {
    auto c = std::make_shared<send_cli>();
    auto* app =
        root.add_subcommand("send", "Push one message: POST with X-Pode-Signal-* headers (http) or an envelope (ws)");
    app->footer(R"~(Examples:
  wsig send http://127.0.0.1:8091/signal hello --name Msg --client-id "$(cat id)"
  wsig send http://127.0.0.1:8091/signal '{"n":1}' --json --name Msg --group admins
  wsig send ws://127.0.0.1:8091/msg hello --path Msg
  date | wsig send http://127.0.0.1:8091/signal - --name Msg --allow-none

DATA: the message itself, '-' for all of stdin, @FILE for a file's bytes (sent verbatim).
http(s): prints the server's answer ({"delivered":N}) on stdout.
Exit codes: 0 delivered (ws: sent and closed with 1000), 1 delivered to nobody,
2 usage, 65 --json DATA invalid or the server answered 400 (or another 4xx),
66 @FILE unreadable, 67 answered 404, 69 refused/reset/5xx, 76 protocol (3xx,
no 101, TLS), 77 answered 401/403, 78 --api-key-file or --cacert unusable,
124 --timeout, 130/143 interrupted.)~");
    app->add_option("url", c->url, "http(s):// push URL (e.g. .../signal) or ws(s):// socket URL")
        ->required()
        ->type_name("URL");
    app->add_option("data", c->data, "The message: DATA, '-' (stdin) or @FILE")->required()->type_name("DATA");
    app->add_option("--client-id", c->client_id,
                    "http: X-Pode-Signal-Client-Id (the listener to reach); ws: envelope clientId")
        ->type_name("ID");
    app->add_option("--name", c->name, "http: X-Pode-Signal-Name; ws: envelope path when --path is not given")
        ->type_name("NAME");
    app->add_option("--group", c->groups, "http: X-Pode-Signal-Group (repeatable, joined with ','); ws: envelope group")
        ->type_name("GROUP");
    app->add_flag("--json", c->json, "DATA is JSON (exit 65 when invalid) and is sent as JSON");
    app->add_option("-H,--header", c->headers, "Add a request header (repeatable)")->type_name("'K: V'");
    app->add_option("--api-key-file", c->api_key_file,
                    "Send 'Authorization: Bearer KEY' with KEY from FILE (or WSIG_API_KEY)")
        ->type_name("FILE");
    app->add_option("--timeout", c->timeout, "Give up after this long (exit 124), default 10s")->type_name("DURATION");
    app->add_option("--path", c->path, "ws: envelope path, the Name to send to")->type_name("NAME");
    app->add_flag("--direct", c->direct, "ws: envelope direct: the server sends it back to this sender only");
    app->add_flag("--allow-none", c->allow_none, "http: exit 0 even when {\"delivered\":0}");
    add_tls_flags(*app, c->tls, "https/wss");
    return {app, [c] { return run(*c); }};
}

}  // namespace wsig::cli
