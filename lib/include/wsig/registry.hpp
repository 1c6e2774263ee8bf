// The registry of signal connections (Name -> ClientId -> connection), target selection and
// broadcast levels: registry::select is where every send path asks "who gets this?".
#pragma once

#include <wsig/error.hpp>
#include <wsig/message.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace wsig {

enum class scope { global, local };
std::string_view to_string(scope s) noexcept;
result<scope> parse_scope(std::string_view text);

struct connection_info {
    std::string name = {};
    std::string group = {};      // empty: no group
    std::string client_id = {};  // signed form when signing is on
    wsig::scope scope = scope::global;
    std::string path = {};    // the URL path the socket connected on
    std::string remote = {};  // peer "ip:port"
    std::chrono::system_clock::time_point since = {};
};

// What send() did with a message (as uWebSockets' SendStatus). Only `queued` counts as delivered:
// the message is in the connection's queue, ahead of any close. A queued message can still be
// dropped later, when the connection is closed as too slow or for the memory budget (counted by
// /metrics, wsig_send_dropped_total, not here).
enum class send_status : std::uint8_t {
    queued,
    dropped_backpressure,  // the client is behind by more than --send-queue (--slow-client applies)
    dropped_closing,       // the connection is closing: nothing more is sent to it
};

// What the registry needs of a live connection; a server session implements it.
class connection {
public:
    virtual ~connection() = default;
    // Fixed once the connection is registered; readable from any thread.
    virtual connection_info const& info() const noexcept = 0;
    // Thread-safe. Messages sent by one thread reach the peer in the order of the calls.
    virtual send_status send(message_ptr const& message) = 0;
    // Thread-safe. Starts the closing handshake with `code` and `reason`.
    virtual void close(std::uint16_t code, std::string reason) = 0;
};

using connection_ptr = std::shared_ptr<connection>;

// Who a send is for. Empty lists mean "no filter" (every name, any group, every client).
struct target {
    std::vector<std::string> names = {};
    std::vector<std::string> groups = {};      // matched case-insensitively
    std::vector<std::string> client_ids = {};  // matched exactly (signed form when signing is on)
};

// Who a send goes to: an immutable list of connections, shared. A send to every connection of one
// Name gets the registry's cached list for that Name, rebuilt only after that Name's connections
// change, so a broadcast neither builds a list nor takes a reference to each recipient.
class recipients {
public:
    using list = std::vector<connection_ptr>;

    recipients() = default;
    explicit recipients(std::shared_ptr<list const> l) noexcept : list_(std::move(l)) {}

    list const& items() const noexcept { return list_ ? *list_ : empty_; }
    list::const_iterator begin() const noexcept { return items().begin(); }
    list::const_iterator end() const noexcept { return items().end(); }
    std::size_t size() const noexcept { return items().size(); }
    bool empty() const noexcept { return items().empty(); }
    // Both are the same shared list (a Name's cached one), so the same connections.
    bool same_list(recipients const& other) const noexcept { return list_ && list_ == other.list_; }

private:
    std::shared_ptr<list const> list_;
    static inline list const empty_{};
};

class broadcast_levels;

// How registry::select treats broadcast levels and the local scope.
struct selection {
    // Checked for every targeted Name; null: not checked (a close, the admin API, a lookup).
    broadcast_levels const* levels = nullptr;
    // Local connections too: the admin API and the upgrade's in-use check only. A send never
    // reaches a local connection (Pode's rule).
    bool with_locals = false;
};

class registry {
public:
    // Registers `c` under its Name and ClientId. Returns the connection it replaced (same Name and
    // ClientId), which the caller closes with 1000 "replaced"; null when there was none.
    connection_ptr add(connection_ptr const& c);

    // Removes `c` if it is still the connection registered under its Name and ClientId
    // (a replaced connection must not remove its replacement).
    void remove(connection const& c);

    // Who a send (or a close) goes to, the one selection every path makes: envelope routing and
    // the demo's [date], POST /signal (to a Name or to one ClientId), a signal route's send and
    // close actions, schedules, and the admin API (listing, DELETE /signal/connections). Only a
    // reply to the sender (`direct`, a signal route's reply) selects no one: it has its sender.
    // Global connections only unless `how.with_locals`; with `how.levels`, refuses the whole
    // selection when the broadcast level of a targeted Name (of every Name in the registry when
    // `t.names` is empty) is broken. A send to every connection of one Name gets the cached list.
    result<recipients> select(target const& t, selection how = {}) const;

    // Lets go of the cached recipient lists (and so of the connections only they still hold):
    // the server calls it at exit, before its event loops go.
    void drop_cached_lists();

    std::vector<std::string> names() const;  // names with at least one global connection
    std::size_t size() const;
    std::map<std::string, std::size_t> count_by_name() const;

private:
    struct entry {
        std::weak_ptr<connection> conn;
        std::string group;
        wsig::scope scope;
    };
    using client_map = std::unordered_map<std::string, entry>;
    struct name_entry {
        client_map clients;
        // Every global connection of the Name, built by the first select after a change; reset
        // (and released outside the lock) by add and remove.
        mutable std::shared_ptr<recipients::list const> globals;
    };

    class group_filter;
    template <class F>
    void visit(target const& t, group_filter const& groups, bool globals_only, F&& f) const;
    recipients matching(target const& t, bool with_locals) const;
    recipients whole_name(std::string_view name) const;

    mutable std::shared_mutex mutex_;
    mutable std::mutex cache_mutex_;  // a name_entry's `globals`, between readers of mutex_
    std::map<std::string, name_entry, std::less<>> by_name_;
    std::size_t size_ = 0;
};

enum class broadcast_level { name, group, client_id };
std::string_view to_string(broadcast_level l) noexcept;
result<broadcast_level> parse_broadcast_level(std::string_view text);  // name|group|clientid

// Broadcast level per Name (matched case-insensitively, as Pode's hashtable) with a default.
class broadcast_levels {
public:
    void set_default(broadcast_level l) { default_ = l; }
    void set(std::string name, broadcast_level l);
    broadcast_level level_for(std::string_view name) const;

    // Parses "[NAME=]name|group|clientid" (the --broadcast-level flag) and applies it.
    result<void> apply_spec(std::string_view spec);

    // Refuses a send to `name` that names no group/client ID where the level requires one.
    result<void> check(std::string_view name, bool has_group, bool has_client_id) const;

private:
    std::vector<std::pair<std::string, broadcast_level>> levels_;
    broadcast_level default_ = broadcast_level::name;
};

}  // namespace wsig
