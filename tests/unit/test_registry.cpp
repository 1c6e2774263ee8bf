// The registry: add, replace, remove, target selection, scopes, and broadcast levels.
#include "catch.hpp"

#include <wsig/message.hpp>
#include <wsig/registry.hpp>

#include <fmt/format.h>

#include <algorithm>

namespace {

struct fake_connection : wsig::connection {
    wsig::connection_info info_;
    std::vector<std::string> received;
    std::uint16_t closed_code = 0;
    std::string closed_reason;

    explicit fake_connection(std::string name, std::string id, std::string group = {},
                             wsig::scope s = wsig::scope::global) {
        info_.name = std::move(name);
        info_.client_id = std::move(id);
        info_.group = std::move(group);
        info_.scope = s;
    }
    wsig::connection_info const& info() const noexcept override { return info_; }
    wsig::send_status send(wsig::message_ptr const& m) override {
        received.emplace_back(m->payload());
        return wsig::send_status::queued;
    }
    void close(std::uint16_t code, std::string reason) override {
        closed_code = code;
        closed_reason = std::move(reason);
    }
};

auto make(std::string name, std::string id, std::string group = {}, wsig::scope s = wsig::scope::global) {
    return std::make_shared<fake_connection>(std::move(name), std::move(id), std::move(group), s);
}

template <class Connections>
std::vector<std::string> ids(Connections const& cs) {
    std::vector<std::string> out;
    for (auto const& c : cs) out.push_back(c->info().client_id);
    std::sort(out.begin(), out.end());
    return out;
}

using strings = std::vector<std::string>;

// The selections the server makes, each through registry::select: a send, a lookup of one
// ClientId (POST /signal with an ID), the admin API's (locals too), and a send checking levels.
wsig::recipients select(wsig::registry const& reg, wsig::target const& t) {
    return reg.select(t).value();
}
wsig::connection_ptr find(wsig::registry const& reg, std::string name, std::string id, strings groups = {}) {
    auto got = reg.select({.names = {std::move(name)}, .groups = std::move(groups), .client_ids = {std::move(id)}});
    return got.value().empty() ? nullptr : got.value().items().front();
}
wsig::recipients list(wsig::registry const& reg, wsig::target const& t = {}) {
    return reg.select(t, {.with_locals = true}).value();
}
wsig::result<wsig::recipients> resolve(wsig::registry const& reg, wsig::broadcast_levels const& levels,
                                       wsig::target const& t) {
    return reg.select(t, {.levels = &levels});
}

}  // namespace

TEST_CASE("registry: add, find and remove by Name and ClientId, case-sensitive") {
    wsig::registry reg;
    auto a = make("Msg", "a");
    CHECK(reg.add(a) == nullptr);
    CHECK(reg.size() == 1);
    CHECK(find(reg, "Msg", "a") == a);
    CHECK(find(reg, "msg", "a") == nullptr);
    CHECK(find(reg, "Msg", "A") == nullptr);
    reg.remove(*a);
    CHECK(reg.size() == 0);
    CHECK(find(reg, "Msg", "a") == nullptr);
    CHECK(reg.names().empty());
}

TEST_CASE("registry: a replaced client ID returns the old connection, and its removal keeps the new one") {
    wsig::registry reg;
    auto old_conn = make("Msg", "a");
    auto new_conn = make("Msg", "a");
    reg.add(old_conn);
    CHECK(reg.add(new_conn) == old_conn);
    CHECK(reg.size() == 1);
    reg.remove(*old_conn);  // the old session's teardown must not unregister its replacement
    CHECK(find(reg, "Msg", "a") == new_conn);
    // The same ClientId under another Name is another connection.
    CHECK(reg.add(make("Other", "a")) == nullptr);
    CHECK(reg.size() == 2);
}

TEST_CASE("registry: an entry keeps no connection alive; a Name's cached list does until it is dropped") {
    wsig::registry reg;
    std::weak_ptr<fake_connection> watch;
    {
        auto a = make("Msg", "a");
        watch = a;
        reg.add(a);
    }
    CHECK(watch.expired());
    CHECK(find(reg, "Msg", "a") == nullptr);
    CHECK(select(reg, {}).empty());
    {
        auto b = make("Msg", "b");
        watch = b;
        reg.add(b);
        CHECK(select(reg, {.names = {"Msg"}}).size() == 1);  // builds the Name's cached list
    }
    CHECK_FALSE(watch.expired());  // the cached list holds it (until the Name changes, or at exit:)
    reg.drop_cached_lists();
    CHECK(watch.expired());
}

TEST_CASE("registry: the list of a whole Name is shared until the Name changes, and lets go on removal") {
    wsig::registry reg;
    auto a = make("Msg", "a");
    std::weak_ptr<fake_connection> watch_b;
    reg.add(a);
    auto first = select(reg, {.names = {"Msg"}});
    CHECK(&select(reg, {.names = {"Msg"}}).items() == &first.items());  // no list built per send
    {
        auto b = make("Msg", "b");
        watch_b = b;
        reg.add(b);
        CHECK(ids(first) == strings{"a"});  // a list already handed out does not change
        CHECK(ids(select(reg, {.names = {"Msg"}})) == strings{"a", "b"});
        CHECK(ids(select(reg, {.names = {"Msg"}, .groups = {"x"}})).empty());
        reg.add(make("Other", "c"));  // another Name's change keeps this list
        auto again = select(reg, {.names = {"Msg"}});
        CHECK(&select(reg, {.names = {"Msg"}}).items() == &again.items());
        reg.remove(*b);
    }
    CHECK(watch_b.expired());  // the cached list let go of b when b was removed
    CHECK(ids(select(reg, {.names = {"Msg"}})) == strings{"a"});
    CHECK(ids(select(reg, {.names = {"Other"}})).empty());  // expired: its only owner is gone

    auto c = make("Cached", "c");
    std::weak_ptr<fake_connection> watch_c = c;
    reg.add(c);
    CHECK(select(reg, {.names = {"Cached"}}).size() == 1);
    c.reset();
    CHECK_FALSE(watch_c.expired());  // held by the cached list until the Name changes or the cache is dropped
    reg.drop_cached_lists();
    CHECK(watch_c.expired());
}

TEST_CASE("registry: select by names, groups (case-insensitive) and client IDs") {
    wsig::registry reg;
    std::vector<std::shared_ptr<fake_connection>> keep = {make("Msg", "a", "Red"), make("Msg", "b", "blue"),
                                                          make("Msg", "c"), make("Chat", "d", "RED"),
                                                          make("Chat", "e", "", wsig::scope::local)};
    for (auto& c : keep) reg.add(c);

    CHECK(ids(select(reg, {})) == strings{"a", "b", "c", "d"});  // every global connection, locals never
    CHECK(ids(select(reg, {.names = {"Msg"}})) == strings{"a", "b", "c"});
    CHECK(ids(select(reg, {.names = {"Nope"}})).empty());
    CHECK(ids(select(reg, {.groups = {"red"}})) == strings{"a", "d"});
    CHECK(ids(select(reg, {.names = {"Msg"}, .groups = {"BLUE", "red"}})) == strings{"a", "b"});
    CHECK(ids(select(reg, {.client_ids = {"c", "d", "zz"}})) == strings{"c", "d"});
    CHECK(ids(select(reg, {.names = {"Msg"}, .client_ids = {"d"}})).empty());
    CHECK(ids(select(reg, {.names = {"Msg", "Msg"}})) == strings{"a", "b", "c"});  // never twice
    CHECK(ids(select(reg, {.client_ids = {"a", "a"}})) == strings{"a"});
    CHECK(find(reg, "Chat", "e") == nullptr);  // a local connection is not reachable
    CHECK(ids(list(reg)) == strings{"a", "b", "c", "d", "e"});
    CHECK(reg.names() == strings{"Chat", "Msg"});
    CHECK(find(reg, "Msg", "a", {"RED"}) != nullptr);
    CHECK(find(reg, "Msg", "a", {"blue"}) == nullptr);
}

TEST_CASE("registry: a send naming many groups matches each connection's group case-insensitively") {
    wsig::registry reg;
    std::vector<std::shared_ptr<fake_connection>> keep;
    for (int i = 0; i < 200; ++i) keep.push_back(make("Msg", fmt::format("c{}", i), fmt::format("Group{}", i)));
    keep.push_back(make("Msg", "none"));
    for (auto& c : keep) reg.add(c);
    wsig::target t{.names = {"Msg"}};
    for (int i = 0; i < 256; ++i) t.groups.push_back("GROUP" + std::to_string(i * 2));  // the even ones, and 200 absent
    auto got = select(reg, t);
    CHECK(got.size() == 100);
    CHECK(std::all_of(got.begin(), got.end(),
                      [](auto const& c) { return std::stoi(c->info().group.substr(5)) % 2 == 0; }));
    CHECK(list(reg, {.groups = {"group7", "GrOuP9"}}).size() == 2);
    CHECK(find(reg, "Msg", "c7", {"x", "GROUP7"}) != nullptr);
    CHECK(find(reg, "Msg", "none", {"x"}) == nullptr);  // no group matches no listed group
}

TEST_CASE("broadcast levels: name allows all, group needs a group or client ID, clientid needs a client ID") {
    wsig::broadcast_levels levels;
    CHECK(levels.check("Msg", false, false));
    REQUIRE(levels.apply_spec("Msg=group"));
    REQUIRE(levels.apply_spec("Secret=clientid"));
    CHECK_FALSE(levels.check("Msg", false, false));
    CHECK(levels.check("msg", true, false));  // names match case-insensitively, as Pode's hashtable
    CHECK(levels.check("Msg", false, true));
    CHECK_FALSE(levels.check("Secret", true, false));
    CHECK(levels.check("Secret", false, true));
    CHECK(levels.check("Other", false, false));
    REQUIRE(levels.apply_spec("clientid"));  // the default for every other name
    CHECK_FALSE(levels.check("Other", true, false));
    CHECK(levels.check("Msg", true, false));
    auto refused = levels.check("Secret", true, false);
    REQUIRE_FALSE(refused);
    CHECK(refused.error().code == wsig::errc::broadcast_level);
    CHECK(refused.error().message.find("Secret") != std::string::npos);
}

TEST_CASE("broadcast levels: bad specs are refused") {
    wsig::broadcast_levels levels;
    CHECK_FALSE(levels.apply_spec("everyone"));
    CHECK_FALSE(levels.apply_spec("Msg=everyone"));
    CHECK_FALSE(levels.apply_spec("=group"));
    CHECK(levels.apply_spec("Msg=GROUP"));
    CHECK(levels.level_for("MSG") == wsig::broadcast_level::group);
}

TEST_CASE("select with levels: checks the level of every targeted Name, all names when none are given") {
    wsig::registry reg;
    auto a = make("Msg", "a", "g");
    auto b = make("Open", "b");
    reg.add(a);
    reg.add(b);
    wsig::broadcast_levels levels;
    REQUIRE(levels.apply_spec("Msg=group"));

    auto all = resolve(reg, levels, {});
    REQUIRE_FALSE(all.has_value());  // all names includes Msg, whose level needs a group
    CHECK(all.error().code == wsig::errc::broadcast_level);
    CHECK(ids(resolve(reg, levels, {.names = {"Open"}}).value()) == strings{"b"});
    CHECK(ids(resolve(reg, levels, {.groups = {"G"}}).value()) == strings{"a"});
    CHECK_FALSE(resolve(reg, levels, {.names = {"Msg"}}).has_value());
}

TEST_CASE("message: a frame is built once with the right header for each length class") {
    auto small = wsig::outgoing_message::text("hi");
    CHECK(small->frame() == std::string("\x81\x02hi", 4));
    CHECK(small->payload() == "hi");
    auto medium = wsig::outgoing_message::binary(std::string(300, 'x'));
    CHECK(medium->frame().substr(0, 4) == std::string("\x82\x7e\x01\x2c", 4));
    CHECK(medium->payload().size() == 300);
    auto large = wsig::outgoing_message::text(std::string(70000, 'y'));
    CHECK(large->frame().substr(0, 10) == std::string("\x81\x7f\x00\x00\x00\x00\x00\x01\x11\x70", 10));
    CHECK(large->frame().size() == 70010);
    CHECK(wsig::outgoing_message::text("")->frame() == std::string("\x81\x00", 2));
}
