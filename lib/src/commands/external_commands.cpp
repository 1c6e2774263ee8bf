// Signal routes, hooks, local-route processes and schedules: external commands driving the server.
#include "commands/external_commands.hpp"

#include "util/utf8.hpp"

#include <wsig/message.hpp>
#include <wsig/units.hpp>

#include <boost/asio/post.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <regex>

namespace wsig::detail {
namespace asio = boost::asio;
using json = nlohmann::json;

namespace {

constexpr std::size_t recent_senders = 4096;  // events whose sender a later {"reply","id"} can still find

// Text frames must hold UTF-8; a command's bytes that are not go out as one binary frame instead.
message_ptr frame_for(std::string_view payload) {
    return valid_utf8(payload) ? outgoing_message::text(payload) : outgoing_message::binary(payload);
}

json ids_json(std::vector<std::string> const& v) {
    if (v.empty()) return nullptr;
    if (v.size() == 1) return v.front();
    return v;
}

json connection_json(connection_info const& info) {
    return {{"name", info.name},
            {"group", info.group.empty() ? json(nullptr) : json(info.group)},
            {"clientId", info.client_id},
            {"scope", std::string(to_string(info.scope))}};
}

// A string or an array of strings from an action object; absent or null gives none.
result<std::vector<std::string>> strings_of(json const& obj, char const* key) {
    std::vector<std::string> out;
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return out;
    if (it->is_string()) {
        out.push_back(it->get<std::string>());
        return out;
    }
    if (it->is_array()) {
        for (auto const& v : *it) {
            if (!v.is_string()) return make_error(errc::invalid_argument, fmt::format("'{}' must hold strings", key));
            out.push_back(v.get<std::string>());
        }
        return out;
    }
    return make_error(errc::invalid_argument, fmt::format("'{}' must be a string or an array of strings", key));
}

result<target> target_of(json const& obj) {
    target t;
    for (auto [key, list] : {std::pair{"name", &t.names}, {"group", &t.groups}, {"clientId", &t.client_ids}}) {
        auto v = strings_of(obj, key);
        if (!v) return v.error();
        *list = std::move(*v);
    }
    return t;
}

}  // namespace

}  // namespace wsig::detail

namespace wsig {

result<signal_route_spec> parse_signal_route(std::string_view spec) {
    auto eq = spec.find('=');
    if (eq == std::string_view::npos || eq == 0 || spec.front() != '/' || eq + 1 >= spec.size())
        return make_error(errc::invalid_argument,
                          fmt::format("--signal-route '{}': expected PATH=CMD with PATH starting with '/'", spec));
    return signal_route_spec{std::string(spec.substr(0, eq)), std::string(spec.substr(eq + 1))};
}

result<schedule_spec> parse_schedule(std::string_view spec) {
    auto c1 = spec.find(':');
    auto c2 = c1 == std::string_view::npos ? c1 : spec.find(':', c1 + 1);
    if (c2 == std::string_view::npos || c2 == c1 + 1 || c2 + 1 >= spec.size())
        return make_error(errc::invalid_argument, fmt::format("--every '{}': expected DURATION:NAME:CMD", spec));
    auto period = parse_duration(spec.substr(0, c1));
    if (!period)
        return make_error(errc::invalid_argument, fmt::format("--every '{}': {}", spec, period.error().message));
    if (period->count() < 10)
        return make_error(errc::invalid_argument, fmt::format("--every '{}': the period must be at least 10ms", spec));
    return schedule_spec{*period, std::string(spec.substr(c1 + 1, c2 - c1 - 1)), std::string(spec.substr(c2 + 1))};
}

}  // namespace wsig

namespace wsig::detail {

struct external_commands::route_runner {
    signal_route_spec spec;
    std::optional<std::regex> pattern;  // Pode: exact match first, then ^PATH$ case-insensitively
    std::shared_ptr<child_process> child;
    std::uint64_t next_id = 0;
    std::deque<std::uint64_t> recent;  // ids, oldest first
    std::unordered_map<std::uint64_t, std::weak_ptr<connection>> senders;
    std::uint64_t latest = 0;
    std::chrono::milliseconds backoff{0};
    std::chrono::steady_clock::time_point started;
    std::unique_ptr<asio::steady_timer> restart_timer;
    std::uint64_t drops_logged = 0;
};

external_commands::external_commands(asio::any_io_executor const& executor, registry& reg,
                                     broadcast_levels const& levels, command_options options, command_logger log)
    : strand_(asio::make_strand(executor)),
      registry_(reg),
      levels_(levels),
      options_(std::move(options)),
      log_(std::move(log)) {
    for (auto const& spec : options_.signal_routes) {
        auto r = std::make_shared<route_runner>();
        r->spec = spec;
        try {
            r->pattern.emplace("^" + spec.path + "$", std::regex::ECMAScript | std::regex::icase);
        } catch (std::regex_error const&) {
            // Not a pattern: exact matching only.
        }
        r->restart_timer = std::make_unique<asio::steady_timer>(strand_);
        routes_.push_back(std::move(r));
    }
}

void external_commands::log(command_log level, std::string message) const {
    if (log_) log_(level, std::move(message));
}

void external_commands::start() {
    asio::post(strand_, [self = shared_from_this()] {
        for (std::size_t i = 0; i < self->routes_.size(); ++i) self->start_route(i);
        for (std::size_t i = 0; i < self->options_.schedules.size(); ++i) {
            self->schedule_timers_.push_back(std::make_unique<asio::steady_timer>(self->strand_));
            self->schedule_children_.push_back(nullptr);
            self->arm_schedule(i);
        }
    });
}

void external_commands::stop() {
    asio::post(strand_, [self = shared_from_this()] {
        self->stopped_ = true;
        for (auto& r : self->routes_) {
            r->restart_timer->cancel();
            if (r->child) r->child->terminate();
        }
        for (auto& t : self->schedule_timers_) t->cancel();
        for (auto& c : self->schedule_children_)
            if (c) c->terminate();
    });
}

bool external_commands::routes(std::string_view socket_path) const {
    return std::ranges::any_of(routes_, [&](auto const& r) { return r->spec.path == socket_path; }) ||
           std::ranges::any_of(routes_, [&](auto const& r) {
               return r->pattern && std::regex_match(socket_path.begin(), socket_path.end(), *r->pattern);
           });
}

namespace {

// A command's stderr lines (and a hook's stdout) as log records: escaped and cut by the logger like
// every other line, so what a command prints (or echoes of a client's data) cannot forge a record
// or drive the terminal. Info level: it is the command's own output, not the server's warning.
std::function<void(std::string)> output_to_log(command_logger const& log, std::string source) {
    if (!log) return {};
    return [log, source = std::move(source)](std::string line) {
        log(command_log::info, fmt::format("{}: {}", source, line));
    };
}

}  // namespace

void external_commands::start_route(std::size_t index) {
    auto& r = *routes_[index];
    auto weak = weak_from_this();
    auto child = child_process::start(
        strand_,
        {.command = r.spec.command, .max_stdin_queue = options_.max_queue, .max_line = options_.max_output_line},
        {.on_line =
             [weak, index](std::string const& line, bool truncated) {
                 if (auto self = weak.lock()) self->on_action(index, line, truncated);
             },
         .on_exit =
             [weak, index](int status, std::string const&) {
                 auto self = weak.lock();
                 if (!self) return;
                 auto& run = *self->routes_[index];
                 run.child.reset();
                 --self->running_;
                 if (self->stopped_) return;
                 // Back off only when it keeps crashing; a command that ran a while restarts at once.
                 auto ran = std::chrono::steady_clock::now() - run.started;
                 run.backoff =
                     ran > std::chrono::seconds(10)
                         ? self->options_.restart_min
                         : std::min(self->options_.restart_max, std::max(self->options_.restart_min, run.backoff * 2));
                 self->restarts_++;
                 self->log(command_log::error,
                           fmt::format("signal route {}: command {}; restarting in {}", run.spec.path,
                                       describe_status(status), format_duration(run.backoff)));
                 run.restart_timer->expires_after(run.backoff);
                 run.restart_timer->async_wait([weak, index](boost::system::error_code ec) {
                     auto s = weak.lock();
                     if (!ec && s && !s->stopped_) s->start_route(index);
                 });
             },
         .on_stderr_line = output_to_log(log_, fmt::format("signal route {}", r.spec.path))});
    r.started = std::chrono::steady_clock::now();
    if (!child) {
        log(command_log::error, fmt::format("signal route {}: {}", r.spec.path, child.error().message));
        r.backoff = std::min(options_.restart_max, std::max(options_.restart_min, r.backoff * 2));
        r.restart_timer->expires_after(r.backoff);
        r.restart_timer->async_wait([weak, index](boost::system::error_code ec) {
            auto s = weak.lock();
            if (!ec && s && !s->stopped_) s->start_route(index);
        });
        return;
    }
    r.child = *child;
    ++running_;
    log(command_log::info,
        fmt::format("signal route {}: started '{}' (pid {})", r.spec.path, r.spec.command, r.child->pid()));
}

void external_commands::on_message(connection_ptr const& sender, std::string_view socket_path, envelope env) {
    json event = {{"event", "message"},
                  {"id", 0},
                  {"ts", rfc3339_now()},
                  {"name", sender->info().name},
                  {"group", sender->info().group.empty() ? json(nullptr) : json(sender->info().group)},
                  {"clientId", sender->info().client_id},
                  {"path", socket_path},
                  {"data",
                   {{"message", std::move(env.message)},
                    {"path", env.path ? json(*env.path) : json(nullptr)},
                    {"clientId", ids_json(env.client_ids)},
                    {"group", ids_json(env.groups)},
                    {"direct", env.direct}}}};
    asio::post(strand_, [self = shared_from_this(), weak = std::weak_ptr<connection>(sender),
                         path = std::string(socket_path), event = std::move(event)]() mutable {
        std::shared_ptr<route_runner> run;
        for (auto const& r : self->routes_)
            if (r->spec.path == path) run = r;
        if (!run)
            for (auto const& r : self->routes_)
                if (r->pattern && std::regex_match(path, *r->pattern)) {
                    run = r;
                    break;
                }
        if (!run) return;
        auto id = ++run->next_id;
        event["id"] = id;
        auto line = event.dump(-1, ' ', false, json::error_handler_t::replace);
        if (!run->child || !run->child->write_line(line)) {
            auto dropped = ++self->dropped_events_;
            if (run->drops_logged++ % 1000 == 0)
                self->log(command_log::warning,
                          fmt::format("signal route {}: command {}; event {} dropped ({} dropped in all)", path,
                                      run->child ? "is not reading fast enough" : "is not running", id, dropped));
            return;
        }
        run->latest = id;
        run->senders.emplace(id, std::move(weak));
        run->recent.push_back(id);
        if (run->recent.size() > recent_senders) {
            run->senders.erase(run->recent.front());
            run->recent.pop_front();
        }
    });
}

result<signal_action> parse_action_line(std::string_view line, std::size_t max_depth) {
    auto bad = [](std::string why) { return make_error(errc::invalid_argument, std::move(why)); };
    auto parsed = parse_json(line, max_depth);
    if (!parsed) return bad(parsed.error().message);
    json& action = *parsed;
    if (!action.is_object()) return bad("not a JSON object");
    signal_action out;
    if (auto it = action.find("send"); it != action.end()) {
        if (!it->is_object() || !it->contains("data") || (*it)["data"].is_null()) return bad("send needs {\"data\":…}");
        auto t = target_of(*it);
        if (!t) return bad(fmt::format("send: {}", t.error().message));
        out.send = signal_action::send_to{std::move(*t), payload_text((*it)["data"])};
    }
    if (auto it = action.find("reply"); it != action.end()) {
        if (it->is_null()) return bad("reply needs data");
        std::optional<std::uint64_t> id;
        if (auto idv = action.find("id"); idv != action.end()) {
            if (!idv->is_number_unsigned()) return bad("id must be an event id");
            id = idv->get<std::uint64_t>();
        }
        out.reply = signal_action::reply_to{payload_text(*it), id};
    }
    if (auto it = action.find("close"); it != action.end()) {
        if (!it->is_object()) return bad("close needs {\"name\":…,\"clientId\":…}");
        auto t = target_of(*it);
        if (!t) return bad(fmt::format("close: {}", t.error().message));
        if (t->names.empty() && t->client_ids.empty() && t->groups.empty())
            return bad("close needs a name, group or clientId (refusing to close everyone)");
        out.close = std::move(*t);
    }
    if (!out.send && !out.reply && !out.close) return bad("no send, reply or close");
    return out;
}

void external_commands::on_action(std::size_t index, std::string const& line, bool truncated) {
    auto& run = *routes_[index];
    auto bad = [&](std::string_view why) {
        log(command_log::warning, fmt::format("signal route {}: action line skipped: {}", run.spec.path, why));
    };
    if (truncated) return bad("longer than the output limit");
    if (line.find_first_not_of(" \t") == std::string::npos) return;  // blank lines are not actions
    auto action = parse_action_line(line, options_.max_json_depth);
    if (!action) return bad(action.error().message);
    if (auto const& send = action->send) {
        auto recipients = registry_.select(send->to, {.levels = &levels_});
        if (!recipients) {
            log(command_log::warning,
                fmt::format("signal route {}: send refused: {}", run.spec.path, recipients.error().message));
        } else {
            auto message = frame_for(send->payload);
            for (auto const& c : *recipients) c->send(message);
        }
    }
    if (auto const& reply = action->reply) {
        std::uint64_t id = reply->event_id.value_or(run.latest);
        auto sender = run.senders.find(id);
        auto conn = sender == run.senders.end() ? nullptr : sender->second.lock();
        if (!conn) {
            log(command_log::debug,
                fmt::format("signal route {}: reply to event {} dropped: its sender is gone", run.spec.path, id));
        } else {
            conn->send(frame_for(reply->payload));
        }
    }
    if (auto const& close = action->close)
        for (auto const& c : *registry_.select(*close)) c->close(1000, "closed by handler");
}

void external_commands::on_connect(connection_info const& info) {
    if (!options_.on_connect.empty()) run_hook(options_.on_connect, info, "connect", 0, {});
}

void external_commands::on_disconnect(connection_info const& info, std::uint16_t code, std::string_view reason) {
    if (!options_.on_disconnect.empty()) run_hook(options_.on_disconnect, info, "disconnect", code, reason);
}

void external_commands::run_hook(std::string const& command, connection_info const& info, std::string_view type,
                                 std::uint16_t code, std::string_view reason) {
    json event = {{"type", type}, {"name", info.name}, {"ts", rfc3339_now()}, {"connection", connection_json(info)}};
    environment env = {{"WSIG_EVENT", std::string(type)},
                       {"WSIG_NAME", info.name},
                       {"WSIG_GROUP", info.group},
                       {"WSIG_CLIENT_ID", info.client_id},
                       {"WSIG_SCOPE", std::string(to_string(info.scope))}};
    if (type == "disconnect") {
        event["code"] = code;
        event["reason"] = reason;
        env.emplace_back("WSIG_CLOSE_CODE", std::to_string(code));
        env.emplace_back("WSIG_CLOSE_REASON", std::string(reason));
    }
    pending_hook hook{command, event.dump(-1, ' ', false, json::error_handler_t::replace), std::move(env)};
    asio::post(strand_, [self = shared_from_this(), hook = std::move(hook)]() mutable {
        if (self->stopped_) return;
        if (self->pending_hooks_.size() >= self->options_.max_pending_hooks) {
            auto dropped = ++self->dropped_hooks_;
            if (dropped % 1000 == 1)
                self->log(command_log::warning,
                          fmt::format("hooks: too many waiting; event dropped ({} dropped in all)", dropped));
            return;
        }
        self->pending_hooks_.push_back(std::move(hook));
        ++self->running_;  // a waiting hook counts as running: shutdown waits for it
        self->launch_hooks();
    });
}

void external_commands::launch_hooks() {
    // Hooks queued before stop() still run: they report the disconnects of a shutdown.
    while (running_hooks_ < options_.max_running_hooks && !pending_hooks_.empty()) {
        auto hook = std::move(pending_hooks_.front());
        pending_hooks_.pop_front();
        struct run_state {
            std::weak_ptr<child_process> child;  // weak: the child's own callback holds this state
            std::unique_ptr<asio::steady_timer> timeout;
        };
        auto state = std::make_shared<run_state>();
        state->timeout = std::make_unique<asio::steady_timer>(strand_, options_.hook_timeout);
        auto weak = weak_from_this();
        auto child = child_process::start(
            strand_, {.command = hook.command, .env = std::move(hook.env), .output = child_stdout::to_stderr},
            {.on_exit =
                 [weak, state, command = hook.command](int status, std::string const&) {
                     state->timeout->cancel();
                     auto self = weak.lock();
                     if (!self) return;
                     std::erase(self->hook_children_, state->child.lock());
                     --self->running_hooks_;
                     --self->running_;
                     if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0))
                         self->log(command_log::warning, fmt::format("hook '{}' {}", command, describe_status(status)));
                     self->launch_hooks();
                 },
             .on_stderr_line = output_to_log(log_, fmt::format("hook '{}'", hook.command))});
        if (!child) {
            log(command_log::error, fmt::format("hook: {}", child.error().message));
            --running_;
            continue;
        }
        ++running_hooks_;
        state->child = *child;
        hook_children_.push_back(*child);
        (*child)->write_line(hook.input);
        (*child)->close_stdin();
        state->timeout->async_wait([state, weak, command = hook.command](boost::system::error_code ec) {
            auto running = state->child.lock();
            if (ec || !running) return;
            if (auto self = weak.lock())
                self->log(command_log::warning, fmt::format("hook '{}' still running after {}: ending it", command,
                                                            format_duration(self->options_.hook_timeout)));
            running->terminate();
        });
    }
}

void external_commands::arm_schedule(std::size_t index) {
    auto& timer = *schedule_timers_[index];
    timer.expires_after(options_.schedules[index].period);
    timer.async_wait([weak = weak_from_this(), index](boost::system::error_code ec) {
        auto self = weak.lock();
        if (ec || !self || self->stopped_) return;
        self->run_schedule(index);
        self->arm_schedule(index);
    });
}

void external_commands::run_schedule(std::size_t index) {
    auto const& spec = options_.schedules[index];
    if (schedule_children_[index]) {
        log(command_log::warning, fmt::format("every {} for {}: the previous run of '{}' is still going; skipped",
                                              format_duration(spec.period), spec.name, spec.command));
        return;
    }
    auto weak = weak_from_this();
    auto child = child_process::start(
        strand_,
        {.command = spec.command,
         .output = child_stdout::whole,
         .feed_stdin = false,
         .max_line = options_.max_output_line},
        {.on_exit =
             [weak, index](int status, std::string output) {
                 auto self = weak.lock();
                 if (!self) return;
                 self->schedule_children_[index].reset();
                 --self->running_;
                 auto const& s = self->options_.schedules[index];
                 if (!(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
                     self->log(command_log::warning,
                               fmt::format("every {} for {}: '{}' {}; nothing sent", format_duration(s.period), s.name,
                                           s.command, describe_status(status)));
                     return;
                 }
                 if (output.ends_with('\n')) output.pop_back();
                 if (output.empty()) return;  // as Pode: an empty message is not sent
                 auto recipients = self->registry_.select({.names = {s.name}}, {.levels = &self->levels_});
                 if (!recipients) {
                     self->log(command_log::warning,
                               fmt::format("every {}: {}", format_duration(s.period), recipients.error().message));
                     return;
                 }
                 auto message = frame_for(output);
                 for (auto const& c : *recipients) c->send(message);
             },
         .on_stderr_line = output_to_log(log_, fmt::format("every {}", format_duration(spec.period)))});
    if (!child) {
        log(command_log::error, fmt::format("every {}: {}", format_duration(spec.period), child.error().message));
        return;
    }
    schedule_children_[index] = *child;
    ++running_;
}

local_process::local_process(asio::any_io_executor const& executor, std::weak_ptr<connection> conn, command_logger log)
    : strand_(asio::make_strand(executor)), conn_(std::move(conn)), log_(std::move(log)) {}

result<std::shared_ptr<local_process>> local_process::start(asio::any_io_executor const& executor, std::string command,
                                                            std::weak_ptr<connection> conn, connection_info const& info,
                                                            std::size_t max_queue, std::size_t max_line,
                                                            command_logger const& log, std::shared_ptr<void> slot) {
    auto self = std::make_shared<local_process>(executor, std::move(conn), log);
    environment env = {{"WSIG_EVENT", "local"},
                       {"WSIG_NAME", info.name},
                       {"WSIG_GROUP", info.group},
                       {"WSIG_CLIENT_ID", info.client_id},
                       {"WSIG_SCOPE", "local"}};
    std::weak_ptr<local_process> weak = self;
    auto child = child_process::start(
        self->strand_, {.command = command, .env = std::move(env), .max_stdin_queue = max_queue, .max_line = max_line},
        {.on_line =
             [weak](std::string const& line, bool) {
                 auto s = weak.lock();
                 if (!s) return;
                 if (auto c = s->conn_.lock()) c->send(frame_for(line));
             },
         .on_exit =
             [weak, command, slot = std::move(slot)](int status, std::string const&) mutable {
                 slot.reset();  // reaped: its --max-processes slot is free (also when the start fails)
                 auto s = weak.lock();
                 if (!s) return;
                 if (!s->gone_) {
                     if (s->log_)
                         s->log_(command_log::debug, fmt::format("local route '{}' {}: closing its connection", command,
                                                                 describe_status(status)));
                     if (auto c = s->conn_.lock()) c->close(1000, "handler exited");
                 }
                 s->child_.reset();
             },
         .on_stderr_line = output_to_log(log, fmt::format("local route '{}'", command))});
    if (!child) return child.error();
    self->child_ = *child;
    return self;
}

void local_process::on_client_message(std::string_view text) {
    asio::post(strand_, [self = shared_from_this(), text = std::string(text)] {
        if (self->child_ && !self->child_->write_line(text) && self->log_)
            self->log_(command_log::warning, "local route: the command is not reading; message dropped");
    });
}

void local_process::on_client_gone() {
    asio::post(strand_, [self = shared_from_this()] {
        self->gone_ = true;
        if (self->child_) {
            self->child_->close_stdin();
            self->child_->terminate();
        }
    });
}

}  // namespace wsig::detail
