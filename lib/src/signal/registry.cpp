// The connection registry, target selection and broadcast levels.
#include <wsig/registry.hpp>

#include "util/text.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <unordered_set>

namespace wsig {

std::string_view to_string(scope s) noexcept {
    return s == scope::local ? "local" : "global";
}

result<scope> parse_scope(std::string_view text) {
    if (iequals(text, "global")) return scope::global;
    if (iequals(text, "local")) return scope::local;
    return make_error(errc::invalid_argument, fmt::format("scope '{}' is not 'global' or 'local'", text));
}

namespace {

struct ihash {
    std::size_t operator()(std::string_view s) const noexcept {
        std::size_t h = 14695981039346656037ull;  // FNV-1a over the lower-cased bytes
        for (char c : s) h = (h ^ static_cast<unsigned char>(ascii_lower(c))) * 1099511628211ull;
        return h;
    }
};
struct iequal_to {
    bool operator()(std::string_view a, std::string_view b) const noexcept { return iequals(a, b); }
};

}  // namespace

// The groups of a target, matched case-insensitively through a hashed set built before the
// registry's lock is taken: a send naming many groups costs one lookup per connection, never
// connections x groups comparisons under the lock. Views into the target, which outlives it.
class registry::group_filter {
public:
    explicit group_filter(std::vector<std::string> const& groups) : set_(groups.begin(), groups.end()) {}
    bool matches(std::string_view group) const { return set_.empty() || set_.contains(group); }

private:
    std::unordered_set<std::string_view, ihash, iequal_to> set_;
};

connection_ptr registry::add(connection_ptr const& c) {
    auto const& info = c->info();
    std::shared_ptr<recipients::list const> stale;  // released after the lock: it may hold the last references
    std::unique_lock lock(mutex_);
    auto& by = by_name_[info.name];
    stale = std::move(by.globals);
    auto& clients = by.clients;
    auto [it, inserted] = clients.try_emplace(info.client_id, entry{c, info.group, info.scope});
    if (inserted) {
        ++size_;
        return nullptr;
    }
    auto old = it->second.conn.lock();
    it->second = entry{c, info.group, info.scope};
    return old;
}

void registry::remove(connection const& c) {
    auto const& info = c.info();
    std::shared_ptr<recipients::list const> stale;  // released after the lock: it may hold the last references
    std::unique_lock lock(mutex_);
    auto by = by_name_.find(info.name);
    if (by == by_name_.end()) return;
    auto& clients = by->second.clients;
    auto it = clients.find(info.client_id);
    if (it == clients.end()) return;
    auto current = it->second.conn.lock();
    // Expired entries belong to a connection being destroyed: that may be `c` itself.
    if (current && current.get() != &c) return;
    stale = std::move(by->second.globals);
    clients.erase(it);
    --size_;
    if (clients.empty()) by_name_.erase(by);
}

void registry::drop_cached_lists() {
    std::vector<std::shared_ptr<recipients::list const>> stale;
    std::unique_lock lock(mutex_);
    for (auto& [name, by] : by_name_)
        if (by.globals) stale.push_back(std::move(by.globals));
}

template <class F>
void registry::visit(target const& t, group_filter const& groups, bool globals_only, F&& f) const {
    auto visit_clients = [&](client_map const& cs) {
        auto take = [&](entry const& e) {
            if (globals_only && e.scope != scope::global) return;
            if (!groups.matches(e.group)) return;
            if (auto c = e.conn.lock()) f(std::move(c));
        };
        if (t.client_ids.empty()) {
            for (auto const& [id, e] : cs) take(e);
        } else {
            for (auto const& id : t.client_ids)
                if (auto it = cs.find(id); it != cs.end()) take(it->second);
        }
    };
    if (t.names.empty()) {
        for (auto const& [name, by] : by_name_) visit_clients(by.clients);
    } else {
        for (auto const& name : t.names)
            if (auto by = by_name_.find(name); by != by_name_.end()) visit_clients(by->second.clients);
    }
}

result<recipients> registry::select(target const& t, selection how) const {
    if (how.levels) {
        bool has_group = !t.groups.empty(), has_id = !t.client_ids.empty();
        auto check_all = [&](auto const& names) -> result<void> {
            for (auto const& name : names)
                if (auto ok = how.levels->check(name, has_group, has_id); !ok) return ok.error();
            return {};
        };
        if (auto ok = t.names.empty() ? check_all(names()) : check_all(t.names); !ok) return ok.error();
    }
    return matching(t, how.with_locals);
}

recipients registry::matching(target const& t, bool with_locals) const {
    // The common broadcast, to everyone of one Name: the cached list (of its global connections).
    if (!with_locals && t.names.size() == 1 && t.groups.empty() && t.client_ids.empty())
        return whole_name(t.names.front());
    recipients::list out;
    group_filter const groups(t.groups);
    std::shared_lock lock(mutex_);
    out.reserve(t.client_ids.empty() ? size_ : t.client_ids.size());
    visit(t, groups, !with_locals, [&](connection_ptr c) { out.push_back(std::move(c)); });
    lock.unlock();
    // A Name or ClientId listed twice must not deliver twice.
    if (t.names.size() > 1 || t.client_ids.size() > 1) {
        std::sort(out.begin(), out.end());
        out.erase(std::unique(out.begin(), out.end()), out.end());
    }
    return recipients(std::make_shared<recipients::list const>(std::move(out)));
}

recipients registry::whole_name(std::string_view name) const {
    std::shared_lock lock(mutex_);
    auto by = by_name_.find(name);
    if (by == by_name_.end()) return {};
    std::lock_guard cache_lock(cache_mutex_);  // readers share mutex_: one of them builds the list
    auto& cached = by->second.globals;
    if (!cached) {
        auto l = std::make_shared<recipients::list>();
        l->reserve(by->second.clients.size());
        for (auto const& [id, e] : by->second.clients) {
            if (e.scope != scope::global) continue;
            if (auto c = e.conn.lock()) l->push_back(std::move(c));
        }
        cached = std::move(l);
    }
    return recipients(cached);
}

std::vector<std::string> registry::names() const {
    std::vector<std::string> out;
    std::shared_lock lock(mutex_);
    for (auto const& [name, by] : by_name_)
        if (std::any_of(by.clients.begin(), by.clients.end(),
                        [](auto const& kv) { return kv.second.scope == scope::global; }))
            out.push_back(name);
    return out;
}

std::size_t registry::size() const {
    std::shared_lock lock(mutex_);
    return size_;
}

std::map<std::string, std::size_t> registry::count_by_name() const {
    std::map<std::string, std::size_t> out;
    std::shared_lock lock(mutex_);
    for (auto const& [name, by] : by_name_) out[name] = by.clients.size();
    return out;
}

std::string_view to_string(broadcast_level l) noexcept {
    switch (l) {
        case broadcast_level::name: return "name";
        case broadcast_level::group: return "group";
        case broadcast_level::client_id: return "clientid";
    }
    return "name";
}

result<broadcast_level> parse_broadcast_level(std::string_view text) {
    if (iequals(text, "name")) return broadcast_level::name;
    if (iequals(text, "group")) return broadcast_level::group;
    if (iequals(text, "clientid")) return broadcast_level::client_id;
    return make_error(errc::invalid_argument,
                      fmt::format("broadcast level '{}' is not one of name, group, clientid", text));
}

void broadcast_levels::set(std::string name, broadcast_level l) {
    for (auto& [n, level] : levels_)
        if (iequals(n, name)) {
            level = l;
            return;
        }
    levels_.emplace_back(std::move(name), l);
}

broadcast_level broadcast_levels::level_for(std::string_view name) const {
    for (auto const& [n, level] : levels_)
        if (iequals(n, name)) return level;
    return default_;
}

result<void> broadcast_levels::apply_spec(std::string_view spec) {
    auto eq = spec.rfind('=');
    auto level = parse_broadcast_level(eq == std::string_view::npos ? spec : spec.substr(eq + 1));
    if (!level) return level.error();
    if (eq == std::string_view::npos) {
        set_default(*level);
    } else {
        if (eq == 0) return make_error(errc::invalid_argument, fmt::format("broadcast level '{}': empty NAME", spec));
        set(std::string(spec.substr(0, eq)), *level);
    }
    return {};
}

result<void> broadcast_levels::check(std::string_view name, bool has_group, bool has_client_id) const {
    auto level = level_for(name);
    bool ok = level == broadcast_level::name || (level == broadcast_level::group && (has_group || has_client_id)) ||
              (level == broadcast_level::client_id && has_client_id);
    if (ok) return {};
    return make_error(errc::broadcast_level,
                      fmt::format("the broadcast level of '{}' is '{}': a {} is required", name, to_string(level),
                                  level == broadcast_level::group ? "group or client ID" : "client ID"));
}

}  // namespace wsig
