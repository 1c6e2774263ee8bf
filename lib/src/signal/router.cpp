// The router: one client message, one decision (see router.hpp for the order they are taken in).
#include "signal/router.hpp"
#include "util/text.hpp"

#include <wsig/message.hpp>

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <chrono>
#include <utility>

namespace wsig {

void router::route(message_source& from, session_kind kind, local_route_target* local, std::string_view data,
                   bool binary) const {
    if (local) {  // a local route's messages go to its process only
        local->on_client_message(data);
        return;
    }
    if (kind == session_kind::echo) {
        from.send(outgoing_message::make(binary ? opcode::binary : opcode::text, data));
        return;
    }
    auto const& info = from.info();
    auto env = parse_envelope(data, envelope_limits{.max_depth = max_json_depth_});
    if (!env) {
        report_(from, unrouted::bad_envelope, env.error().message);
        return;
    }
    // A signal route takes every message of its sockets: nothing is auto-routed (Pode's rule).
    if (signal_routes_ && signal_routes_->routes(info.path)) {
        signal_routes_->on_message(from.self(), info.path, std::move(*env));
        return;
    }
    if (kind == session_kind::demo && !env->direct && env->message.is_string() &&
        iequals(env->message.get_ref<std::string const&>(), "[date]")) {
        send_date(from);
        return;
    }
    auto msg = outgoing_message::text(payload_text(env->message));
    if (env->direct) {
        from.send(msg);
        return;
    }
    target t;
    if (env->path) t.names.push_back(std::move(*env->path));
    t.groups = std::move(env->groups);
    t.client_ids = std::move(env->client_ids);
    auto targets = reg_.select(t, {.levels = &levels_});
    if (!targets) {
        report_(from, unrouted::refused, targets.error().message);
        return;
    }
    for (auto const& c : *targets) c->send(msg);
}

// The demo page's "[date]": the server's UTC time to everyone on /msg.
void router::send_date(message_source& from) const {
    auto targets = reg_.select({.names = {"Msg"}}, {.levels = &levels_});
    if (!targets) {
        report_(from, unrouted::date_refused, targets.error().message);
        return;
    }
    auto now = std::chrono::system_clock::now();
    auto msg = outgoing_message::text(
        fmt::format("{:%Y-%m-%d %H:%M:%S} UTC", fmt::gmtime(std::chrono::system_clock::to_time_t(now))));
    for (auto const& c : *targets) c->send(msg);
}

}  // namespace wsig
