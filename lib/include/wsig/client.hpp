// The WebSocket/HTTP clients behind `wsig listen` and `wsig send`: options in, exit code out.
#pragma once

#include <wsig/error.hpp>
#include <wsig/exit_code.hpp>
#include <wsig/units.hpp>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace wsig {

struct tls_options {
    bool insecure = false;  // --insecure: no certificate or host name check (tests, self-signed)
    std::string cacert;     // --cacert: PEM bundle to trust instead of the system store
};

// Where a client message goes: the fields of Pode's envelope besides "message".
struct envelope_target {
    std::optional<std::string> path;      // the target Name
    std::vector<std::string> client_ids;  // target client IDs
    std::vector<std::string> groups;      // target groups
    bool direct = false;                  // back to the sender only
};

enum class output_format { text, jsonl };

struct listen_options {
    std::string url;
    std::vector<std::pair<std::string, std::string>> headers;  // -H, in order
    std::string origin;                                        // empty: no Origin header
    tls_options tls;
    output_format output = output_format::text;
    std::uint64_t count = 0;                    // 0: no limit
    std::optional<std::string> until;           // ECMAScript regex searched in every message
    std::chrono::milliseconds timeout{0};       // 0: none; whole run, reconnects included
    std::chrono::milliseconds idle_timeout{0};  // 0: none; since the open or the last message
    std::vector<std::string> send;              // --send payloads, sent after every open
    bool read_stdin = false;                    // --stdin: each line is one message
    bool exit_on_eof = false;                   // with read_stdin: close 1000 and exit 0 at EOF
    bool json = false;                          // payloads are JSON values (invalid stdin lines are skipped)
    bool raw = false;                           // payloads go out verbatim, not in an envelope
    envelope_target target;
    bool echo = false;  // send every received data frame back verbatim
    // 64 MiB: conformance suites send 16 MiB messages in thousands of fragments.
    std::uint64_t max_message_size = 64ull * 1024 * 1024;
    std::string id_file;  // written atomically (temp + rename) at every open
    int reconnect = 0;    // 0: never; -1: without limit; N: at most N reconnects
    // First back-off after a lost connection; doubled per failed attempt up to reconnect_max_delay.
    std::chrono::milliseconds reconnect_delay{250};
    std::chrono::milliseconds reconnect_max_delay{10000};
    bool handle_signals = true;  // SIGINT/SIGTERM: close 1000, then exit 130/143
    int out_fd = 1;              // data (text or JSONL) goes here, flushed per message
};

struct client_result {
    exit_code code = exit_code::ok;
    std::string message;  // why, for stderr; empty on success
};

// Runs `wsig listen` to its end: never throws, every failure is an exit code with a message.
client_result run_listen(listen_options const& opts);

struct send_options {
    std::string url;
    std::string data;                 // the message (already read from DATA, '-' or @FILE)
    bool json = false;                // data holds JSON (checked with parse_json_data beforehand)
    std::string client_id;            // http: X-Pode-Signal-Client-Id; ws: the envelope's clientId
    std::string name;                 // http: X-Pode-Signal-Name; ws: the envelope's path when path is unset
    std::vector<std::string> groups;  // http: X-Pode-Signal-Group (comma-joined); ws: envelope group
    std::optional<std::string> path;  // ws only: the envelope's path
    bool direct = false;              // ws only
    bool allow_none = false;          // http: {"delivered":0} exits 0, not 1
    std::vector<std::pair<std::string, std::string>> headers;  // -H, in order
    std::string api_key;  // non-empty: Authorization: Bearer KEY (http and the ws upgrade)
    tls_options tls;
    // 10 s: long enough for a loaded CI runner, short enough that a hung server fails the job.
    std::chrono::milliseconds timeout{10000};
    int out_fd = 1;  // the server's answer (http) goes here
};

// Runs `wsig send` once: never throws.
client_result run_send(send_options const& opts);

// DATA as JSON for --json: errc::invalid_argument with the parser's reason when it is not JSON.
result<nlohmann::json> parse_json_data(std::string const& text);

}  // namespace wsig
