// `wsig serve`: parses and validates the flags into server_options, then runs the signal server.
#include "commands.hpp"

#include <wsig/exit_code.hpp>
#include <wsig/json.hpp>
#include <wsig/server.hpp>
#include <wsig/signing.hpp>
#include <wsig/units.hpp>

#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>

namespace wsig::cli {

namespace {

struct serve_options {
    std::string address = "127.0.0.1";
    int port = 8091;
    std::vector<std::string> routes, echo, levels, origins, hosts;
    bool accept_client_id = false, auto_upgrade = false;
    std::string default_scope = "global";
    secret_options secret;
    std::string tls_cert, tls_key, pfx, pfx_password_file, api_key_file;
    std::string tls_min_version = "1.2";
    std::string max_message_size, send_queue = "1MiB", slow_client = "close";  // empty: the defaults
    std::string max_queued_total = "256MiB";
    std::size_t max_json_depth = default_max_json_depth;
    std::size_t max_connections = 0;
    std::size_t max_processes = 64;
    std::string ping_interval = "30s", shutdown_timeout = "5s";
    unsigned threads = 0;
    std::string log_format = "text";
    bool quiet = false, verbose = false;
    std::string ready_file;
    std::vector<std::string> signal_routes, every;
    std::string on_connect, on_disconnect, static_dir;
    bool static_dotfiles = false;
};

void must_be_readable(char const* what, std::string const& path) {
    std::ifstream in(path);
    if (!in) config_error(fmt::format("{} '{}' cannot be read", what, path));
}

// Only this machine can reach a server bound here (what bind_endpoint accepts as a loopback address).
bool loopback_address(std::string_view a) {
    return a == "localhost" || a == "::1" || a == "[::1]" || a.starts_with("127.");
}

server_options to_server_options(serve_options const& in) {
    server_options o;
    o.address = in.address;
    o.port = static_cast<std::uint16_t>(in.port);
    for (auto const& r : in.routes) {
        auto spec = parse_route_spec(r);
        if (!spec) usage_error(fmt::format("--route: {}", spec.error().message));
        for (auto const& other : o.routes)
            if (other.path == spec->path) usage_error(fmt::format("--route: path '{}' given twice", spec->path));
        o.routes.push_back(std::move(*spec));
    }
    for (auto const& e : in.echo) {
        if (e.empty() || e[0] != '/') usage_error(fmt::format("--echo '{}': PATH must start with '/'", e));
        for (auto const& r : o.routes)
            if (r.path == e) usage_error(fmt::format("--echo '{}': the path is already a --route", e));
        o.echo_paths.push_back(e);
    }
    o.accept_client_id = in.accept_client_id;
    o.auto_upgrade = in.auto_upgrade;
    auto scope = parse_scope(in.default_scope);
    if (!scope) usage_error(fmt::format("--default-scope: {}", scope.error().message));
    o.default_scope = *scope;
    for (auto const& l : in.levels)
        if (auto ok = o.levels.apply_spec(l); !ok)
            usage_error(fmt::format("--broadcast-level: {}", ok.error().message));
    if (auto s = resolve_secret(in.secret)) {
        if (s->find_first_not_of(" \t\r\n") == std::string::npos) config_error("the signing secret is empty");
        o.signing = signing_config{.enabled = true, .secret = *s, .strict = in.secret.strict};
    } else if (in.secret.strict) {
        usage_error("--strict needs a secret: --secret-file FILE or WSIG_SECRET");
    }
    if (!in.tls_cert.empty() || !in.tls_key.empty()) {
        if (in.tls_cert.empty() || in.tls_key.empty()) usage_error("--tls-cert and --tls-key go together");
        if (!in.pfx.empty()) usage_error("give --tls-cert/--tls-key or --pfx, not both");
        must_be_readable("certificate", in.tls_cert);
        must_be_readable("private key", in.tls_key);
        o.tls_cert = in.tls_cert;
        o.tls_key = in.tls_key;
    }
    if (!in.pfx.empty()) {
        must_be_readable("PKCS#12 file", in.pfx);
        o.pfx = in.pfx;
        if (!in.pfx_password_file.empty())
            o.pfx_password = secret_file_flag("--pfx-password-file", in.pfx_password_file);
        else if (char const* env = std::getenv("WSIG_PFX_PASSWORD"))
            o.pfx_password = env;
    } else if (!in.pfx_password_file.empty()) {
        usage_error("--pfx-password-file needs --pfx");
    }
    o.allow_origins = in.origins;
    o.api_key = api_key_flag(in.api_key_file);
    if (!in.api_key_file.empty() && o.api_key.empty()) config_error("the API key file is empty");
    if (!in.max_message_size.empty()) {
        o.max_message_size = positive_size_flag("--max-message-size", in.max_message_size);
        o.echo_max_message_size = o.max_message_size;
    }
    // A push body becomes one message: the same limit applies.
    o.max_body_size = o.max_message_size;
    o.max_connections = in.max_connections;
    o.max_processes = in.max_processes;
    for (auto const& h : in.hosts) {
        if (h.empty() || h.find_first_of(":/[] \t") != std::string::npos)
            usage_error(fmt::format("--allow-host '{}': give a host name or a *.pattern, without port or scheme", h));
        o.allow_hosts.push_back(h);
    }
    o.send_queue = positive_size_flag("--send-queue", in.send_queue);
    o.slow_client = in.slow_client == "drop" ? slow_client_policy::drop : slow_client_policy::close;
    o.max_queued_total = size_flag("--max-queued-total", in.max_queued_total);
    if (o.max_queued_total < o.send_queue) usage_error("--max-queued-total must be at least --send-queue");
    if (in.max_json_depth == 0) usage_error("--max-json-depth must be greater than 0");
    o.max_json_depth = in.max_json_depth;
    o.ping_interval = duration_or_off_flag("--ping-interval", in.ping_interval);
    o.threads = in.threads;
    o.shutdown_timeout = duration_or_off_flag("--shutdown-timeout", in.shutdown_timeout);
    o.log_format = in.log_format == "json" ? log_format::json : log_format::text;
    o.log_level = in.quiet ? log_level::quiet : in.verbose ? log_level::debug : log_level::info;
    o.ready_file = in.ready_file;
    o.tls_min_version = in.tls_min_version == "1.3" ? tls_version::v1_3 : tls_version::v1_2;
    for (auto const& r : o.routes)
        if (!r.exec.empty() && r.scope.value_or(o.default_scope) != scope::local)
            usage_error(fmt::format("--route {}: exec= needs scope=local (a process per connection)", r.path));
    for (auto const& spec : in.signal_routes) {
        auto r = parse_signal_route(spec);
        if (!r) usage_error(r.error().message);
        o.signal_routes.push_back(std::move(*r));
    }
    for (auto const& spec : in.every) {
        auto s = parse_schedule(spec);
        if (!s) usage_error(s.error().message);
        o.schedules.push_back(std::move(*s));
    }
    o.on_connect = in.on_connect;
    o.on_disconnect = in.on_disconnect;
    if (!in.static_dir.empty()) {
        std::error_code ec;
        if (!std::filesystem::is_directory(in.static_dir, ec))
            usage_error(fmt::format("--static '{}' is not a directory", in.static_dir));
        o.static_dir = in.static_dir;
    }
    o.static_dotfiles = in.static_dotfiles;
    o.demo = o.routes.empty() && o.echo_paths.empty() && !o.auto_upgrade && o.static_dir.empty();
    return o;
}

}  // namespace

command setup_serve(CLI::App& root) {
    auto opts = std::make_shared<serve_options>();
    auto* app = root.add_subcommand("serve", "Run a Pode-style signal server (HTTP + WebSocket on one port)");
    app->footer(R"~(Examples:
  wsig serve                                   the demo: open http://127.0.0.1:8091/
  wsig serve -p 0 --route /ws=Chat --ready-file url
  wsig serve --route /ws=Chat,group=ops --accept-client-id --secret-file secret --strict
  wsig serve --echo /echo --max-message-size 16MiB
  wsig serve -a 0.0.0.0 --tls-cert cert.pem --tls-key key.pem --api-key-file key
  wsig serve --route /chat=Chat --signal-route '/chat=python3 bot.py' --on-connect 'logger -t wsig'
  wsig serve --route '/log=Log,scope=local,exec=tail -f /var/log/syslog' --static ./www
  wsig serve --route /times=Times --every '1m:Times:date -u' 

The first line on stdout is the server's URL. Every option also reads WSIG_<NAME>
(e.g. WSIG_PORT, WSIG_ROUTE); the secret comes from --secret-file or WSIG_SECRET.
HTTP API: POST /signal (push), GET|DELETE /signal/connections, GET /healthz, GET /metrics.

Exit codes: 0 stopped by SIGINT/SIGTERM, 2 usage (bad flag, duration, size or route),
78 configuration (unreadable certificate, key or secret, port in use).)~");

    app->add_option("-a,--address", opts->address, "Address to bind: 127.0.0.1 (default), 0.0.0.0, ::, * for all")
        ->envname("WSIG_ADDRESS")
        ->capture_default_str();
    app->add_option("-p,--port", opts->port, "Port (default 8091); 0 picks a free one")
        ->envname("WSIG_PORT")
        ->check(CLI::Range(0, 65535));
    app->add_option("--route", opts->routes,
                    "PATH=NAME[,group=G][,scope=local|global][,exec=CMD]: upgrades on PATH become signal "
                    "connections under NAME; exec= (scope=local, last) runs CMD per connection, its stdout lines "
                    "to the client, the client's messages to its stdin (repeatable)")
        ->envname("WSIG_ROUTE")
        ->type_name("SPEC");
    app->add_option("--echo", opts->echo, "Sockets on PATH echo every data frame verbatim (repeatable)")
        ->envname("WSIG_ECHO")
        ->type_name("PATH");
    app->add_flag("--accept-client-id", opts->accept_client_id,
                  "Clients may choose their ID with ?clientId= (a duplicate replaces the old connection)")
        ->envname("WSIG_ACCEPT_CLIENT_ID");
    app->add_flag("--auto-upgrade", opts->auto_upgrade,
                  "Legacy Pode mode: an upgrade on any path becomes a global connection named by the path")
        ->envname("WSIG_AUTO_UPGRADE");
    app->add_option("--default-scope", opts->default_scope, "Scope of routes that give none: global (default) or local")
        ->envname("WSIG_DEFAULT_SCOPE")
        ->check(CLI::IsMember({"global", "local"}, CLI::ignore_case));
    app->add_option("--broadcast-level", opts->levels,
                    "[NAME=]name|group|clientid: what a broadcast must name (repeatable; no NAME: the default)")
        ->envname("WSIG_BROADCAST_LEVEL")
        ->type_name("[NAME=]LEVEL");
    add_secret_options(*app, opts->secret);
    app->get_option("--secret-file")->envname("WSIG_SECRET_FILE");
    app->get_option("--strict")->envname("WSIG_STRICT");
    app->add_option("--tls-cert", opts->tls_cert, "PEM certificate (chain): serve HTTPS + WSS")
        ->envname("WSIG_TLS_CERT")
        ->type_name("FILE");
    app->add_option("--tls-key", opts->tls_key, "PEM private key for --tls-cert")
        ->envname("WSIG_TLS_KEY")
        ->type_name("FILE");
    app->add_option("--pfx", opts->pfx, "PKCS#12 certificate and key: serve HTTPS + WSS")
        ->envname("WSIG_PFX")
        ->type_name("FILE");
    app->add_option("--pfx-password-file", opts->pfx_password_file,
                    "File holding the --pfx password (or WSIG_PFX_PASSWORD)")
        ->envname("WSIG_PFX_PASSWORD_FILE")
        ->type_name("FILE");
    app->add_option("--tls-min-version", opts->tls_min_version,
                    "Oldest TLS version served: 1.2 (ECDHE with AES-GCM or ChaCha20-Poly1305 only) or 1.3")
        ->envname("WSIG_TLS_MIN_VERSION")
        ->check(CLI::IsMember({"1.2", "1.3"}))
        ->capture_default_str();
    app->add_option("--allow-origin", opts->origins,
                    "Upgrades whose Origin matches no PATTERN (* and ? globs) get 403 (repeatable); without it, "
                    "exec= routes take only their own origin")
        ->envname("WSIG_ALLOW_ORIGIN")
        ->type_name("PATTERN");
    app->add_option("--allow-host", opts->hosts,
                    "Also answer requests whose Host is NAME (* and ? globs, e.g. *.example.com; repeatable). "
                    "A loopback server answers only loopback names and IP literals (DNS rebinding), others "
                    "421; on another address, once given, only these names and IP literals")
        ->envname("WSIG_ALLOW_HOST")
        ->type_name("NAME");
    app->add_option(
           "--api-key-file", opts->api_key_file,
           "Require 'Authorization: Bearer KEY' on /signal, /signal/connections and /metrics (or WSIG_API_KEY)")
        ->envname("WSIG_API_KEY_FILE")
        ->type_name("FILE");
    app->add_option("--max-message-size", opts->max_message_size,
                    "Largest client message (and push body), default 1MiB (16MiB on --echo paths, for "
                    "conformance suites); larger closes with 1009 / answers 413")
        ->envname("WSIG_MAX_MESSAGE_SIZE")
        ->type_name("SIZE");
    app->add_option("--max-connections", opts->max_connections, "Upgrades beyond N get 503 (0: no limit)")
        ->envname("WSIG_MAX_CONNECTIONS")
        ->type_name("N");
    app->add_option("--max-processes", opts->max_processes,
                    "Live exec= route processes; upgrades beyond N get 503 (0: no limit)")
        ->envname("WSIG_MAX_PROCESSES")
        ->type_name("N")
        ->capture_default_str();
    app->add_option("--send-queue", opts->send_queue, "Bytes queued per client before --slow-client applies")
        ->envname("WSIG_SEND_QUEUE")
        ->type_name("SIZE")
        ->capture_default_str();
    app->add_option("--slow-client", opts->slow_client,
                    "When a client's queue is full: drop the message, or close it with 1008 'too slow'")
        ->envname("WSIG_SLOW_CLIENT")
        ->check(CLI::IsMember({"drop", "close"}))
        ->capture_default_str();
    app->add_option("--max-queued-total", opts->max_queued_total,
                    "Bytes held for all clients together (send queues and messages being received); past it the "
                    "clients furthest behind go first")
        ->envname("WSIG_MAX_QUEUED_TOTAL")
        ->type_name("SIZE")
        ->capture_default_str();
    app->add_option("--max-json-depth", opts->max_json_depth,
                    "Deepest nesting of arrays and objects in an envelope or action line; deeper ones are dropped")
        ->envname("WSIG_MAX_JSON_DEPTH")
        ->type_name("N")
        ->capture_default_str();
    app->add_option("--ping-interval", opts->ping_interval,
                    "Ping every DURATION; a peer silent for two pings is dropped (0: off)")
        ->envname("WSIG_PING_INTERVAL")
        ->type_name("DURATION")
        ->capture_default_str();
    app->add_option("--threads", opts->threads, "I/O threads (default: one per core)")
        ->envname("WSIG_THREADS")
        ->check(CLI::Range(0u, 1024u));
    app->add_option("--shutdown-timeout", opts->shutdown_timeout,
                    "On SIGINT/SIGTERM, wait this long for clients to close")
        ->envname("WSIG_SHUTDOWN_TIMEOUT")
        ->type_name("DURATION")
        ->capture_default_str();
    app->add_option("--log-format", opts->log_format, "Logs on stderr as text or json lines")
        ->envname("WSIG_LOG_FORMAT")
        ->check(CLI::IsMember({"text", "json"}))
        ->capture_default_str();
    auto* quiet = app->add_flag("-q,--quiet", opts->quiet, "Log only warnings and errors")->envname("WSIG_QUIET");
    app->add_flag("-v,--verbose", opts->verbose, "Log every connection and request failure")
        ->envname("WSIG_VERBOSE")
        ->excludes(quiet);
    app->add_option("--ready-file", opts->ready_file, "Write the URL to FILE once accepting")
        ->envname("WSIG_READY_FILE")
        ->type_name("FILE");
    app->add_option("--signal-route", opts->signal_routes,
                    "PATH=CMD: messages on sockets of PATH go to CMD as JSON lines; its JSON lines are actions "
                    "(send, reply, close); no default routing there (repeatable)")
        ->envname("WSIG_SIGNAL_ROUTE")
        ->type_name("PATH=CMD");
    app->add_option("--on-connect", opts->on_connect,
                    "Run CMD per connection, with the event JSON on stdin and WSIG_* variables")
        ->envname("WSIG_ON_CONNECT")
        ->type_name("CMD");
    app->add_option("--on-disconnect", opts->on_disconnect,
                    "Run CMD per disconnection (every cause), with the event JSON on stdin and WSIG_* variables")
        ->envname("WSIG_ON_DISCONNECT")
        ->type_name("CMD");
    app->add_option("--every", opts->every,
                    "DURATION:NAME:CMD: run CMD every DURATION and broadcast its output to NAME (repeatable)")
        ->envname("WSIG_EVERY")
        ->type_name("DUR:NAME:CMD");
    app->add_option("--static", opts->static_dir,
                    "Serve the files of DIR (/ is DIR/index.html), replacing the demo page")
        ->envname("WSIG_STATIC")
        ->type_name("DIR");
    app->add_flag("--static-dotfiles", opts->static_dotfiles,
                  "Also serve names starting with '.' under --static (.env, .git/); by default they are 404")
        ->envname("WSIG_STATIC_DOTFILES");

    return {app, [opts] {
                auto o = to_server_options(*opts);
                if (o.api_key.empty() && !loopback_address(o.address))
                    print_warning(
                        fmt::format("--address {}: the push and admin API (POST /signal, /signal/connections, "
                                    "which lists every client ID) answers anyone who reaches this port; "
                                    "set --api-key-file or WSIG_API_KEY",
                                    o.address));
                return run_server(std::move(o));
            }};
}

}  // namespace wsig::cli
