// The router: one client message, one decision (see router.hpp for the order they are taken in).
#include "signal/router.hpp"
#include "util/text.hpp"

#include <wsig/message.hpp>

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <chrono>
#include <utility>

namespace wsig {

void broadcast_batch::add(recipients to, message_ptr const& m) {
    if (count_ > 0 && (!to.same_list(to_) || bytes_ + m->frame().size() > max_bytes_)) flush();
    if (count_ == 0) {
        to_ = std::move(to);
        first_ = m;
    } else {
        if (count_ == 1) frames_.assign(first_->frame());
        frames_.append(m->frame());
        first_.reset();
    }
    count_ += m->messages();
    bytes_ += m->frame().size();
}

void broadcast_batch::flush() {
    if (count_ == 0) return;
    auto const m = first_ ? std::move(first_) : outgoing_message::frames(std::move(frames_), count_);
    for (auto const& c : to_) c->send(m);
    to_ = {};
    first_.reset();
    frames_ = {};
    count_ = 0;
    bytes_ = 0;
}

void router::route(message_source& from, session_kind kind, local_route_target* local, std::string_view data,
                   bool binary, broadcast_batch* batch) const {
    // What this message does goes after what the batch holds; only a broadcast may join it.
    auto const flush = [batch] {
        if (batch) batch->flush();
    };
    if (local) {  // a local route's messages go to its process only
        local->on_client_message(data);
        return;
    }
    if (kind == session_kind::echo) {
        flush();
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
        flush();
        signal_routes_->on_message(from.self(), info.path, std::move(*env));
        return;
    }
    if (kind == session_kind::demo && !env->direct && env->message.is_string() &&
        iequals(env->message.get_ref<std::string const&>(), "[date]")) {
        flush();
        send_date(from);
        return;
    }
    auto msg = outgoing_message::text(payload_text(env->message));
    if (env->direct) {
        flush();
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
    if (batch) return batch->add(std::move(*targets), msg);
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
