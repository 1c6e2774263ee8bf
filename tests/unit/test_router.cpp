// The router: each kind of client message reaches the one place it should, and only that place.
#include "catch.hpp"

#include "signal/router.hpp"

#include <wsig/message.hpp>
#include <wsig/registry.hpp>

#include <memory>
#include <string>
#include <vector>

namespace {

struct fake_source : wsig::message_source, std::enable_shared_from_this<fake_source> {
    wsig::connection_info info_;
    std::vector<std::string> received;
    std::vector<wsig::opcode> opcodes;
    std::vector<std::string> warnings;

    fake_source(std::string name, std::string id, std::string group = {}, std::string path = "/ws") {
        info_.name = std::move(name);
        info_.client_id = std::move(id);
        info_.group = std::move(group);
        info_.path = std::move(path);
    }
    wsig::connection_info const& info() const noexcept override { return info_; }
    wsig::send_status send(wsig::message_ptr const& m) override {
        received.emplace_back(m->payload());
        opcodes.push_back(m->op());
        return wsig::send_status::queued;
    }
    void close(std::uint16_t, std::string) override {}
    wsig::connection_ptr self() override { return shared_from_this(); }
    void warn(std::string message) override { warnings.push_back(std::move(message)); }
};

struct fake_process : wsig::local_route_target {
    std::vector<std::string> got;
    void on_client_message(std::string_view text) override { got.emplace_back(text); }
};

struct fake_signal_routes : wsig::signal_route_target {
    std::string path;
    std::vector<std::string> messages;
    bool routes(std::string_view socket_path) const override { return socket_path == path; }
    void on_message(wsig::connection_ptr const& sender, std::string_view, wsig::envelope env) override {
        messages.push_back(sender->info().client_id + ":" + wsig::payload_text(env.message));
    }
};

void report(wsig::message_source& from, wsig::unrouted why, std::string_view detail) {
    from.warn(std::to_string(static_cast<int>(why)) + " " + std::string(detail));
}

struct fixture {
    wsig::registry reg;
    wsig::broadcast_levels levels;
    wsig::router router{reg, levels, 32, report};
    std::shared_ptr<fake_source> a = std::make_shared<fake_source>("Msg", "a", "red");
    std::shared_ptr<fake_source> b = std::make_shared<fake_source>("Msg", "b");
    std::shared_ptr<fake_source> c = std::make_shared<fake_source>("Chat", "c");

    fixture() {
        reg.add(a);
        reg.add(b);
        reg.add(c);
    }
    void route(wsig::session_kind kind, std::string_view data, bool binary = false) {
        router.route(*a, kind, nullptr, data, binary);
    }
};

using strings = std::vector<std::string>;

}  // namespace

TEST_CASE("router: echo sends the message back as it came, text or binary, unparsed") {
    fixture f;
    f.route(wsig::session_kind::echo, "not json");
    f.route(wsig::session_kind::echo, std::string("\x00\xff", 2), true);
    CHECK(f.a->received == strings{"not json", std::string("\x00\xff", 2)});
    CHECK(f.a->opcodes == std::vector{wsig::opcode::text, wsig::opcode::binary});
    CHECK(f.b->received.empty());
}

TEST_CASE("router: a local route's process gets every message, nothing else does") {
    fixture f;
    fake_process p;
    f.router.route(*f.a, wsig::session_kind::signal, &p, R"({"message":"hi","path":"Msg"})", false);
    f.router.route(*f.a, wsig::session_kind::signal, &p, "not json", false);
    CHECK(p.got == strings{R"({"message":"hi","path":"Msg"})", "not json"});
    CHECK(f.a->received.empty());
    CHECK(f.b->received.empty());
    CHECK(f.a->warnings.empty());
}

TEST_CASE("router: an envelope goes to the recipients it names, direct back to the sender") {
    fixture f;
    f.route(wsig::session_kind::signal, R"({"message":"all","path":"Msg"})");
    f.route(wsig::session_kind::signal, R"({"message":"red","path":"Msg","group":"RED"})");
    f.route(wsig::session_kind::signal, R"({"message":"to c","clientId":"c"})");
    f.route(wsig::session_kind::signal, R"({"message":{"k":1},"path":"Msg","direct":true})");
    CHECK(f.a->received == strings{"all", "red", R"({"k":1})"});
    CHECK(f.b->received == strings{"all"});
    CHECK(f.c->received == strings{"to c"});
}

TEST_CASE("router: a bad envelope and a send the broadcast level refuses reach no one, with a warning") {
    fixture f;
    REQUIRE(f.levels.apply_spec("Msg=clientid"));
    f.route(wsig::session_kind::signal, "not json");
    f.route(wsig::session_kind::signal, R"({"message":"x","path":"Msg"})");
    CHECK(f.a->received.empty());
    CHECK(f.b->received.empty());
    REQUIRE(f.a->warnings.size() == 2);
    CHECK(f.a->warnings[0].starts_with(std::to_string(static_cast<int>(wsig::unrouted::bad_envelope))));
    CHECK(f.a->warnings[1].starts_with(std::to_string(static_cast<int>(wsig::unrouted::refused))));
    CHECK(f.a->warnings[1].find("Msg") != std::string::npos);
}

TEST_CASE("router: a signal route takes every parsed message of its path, nothing is auto-routed") {
    fixture f;
    fake_signal_routes routes;
    routes.path = "/ws";
    f.router.attach(&routes);
    f.route(wsig::session_kind::signal, R"({"message":"to all","path":"Msg"})");
    f.route(wsig::session_kind::signal, R"({"message":"me","direct":true})");
    f.route(wsig::session_kind::signal, "not json");  // still dropped before any route sees it
    CHECK(routes.messages == strings{"a:to all", "a:me"});
    CHECK(f.a->received.empty());
    CHECK(f.b->received.empty());
    CHECK(f.a->warnings.size() == 1);
    routes.path = "/other";
    f.route(wsig::session_kind::signal, R"({"message":"routed","path":"Chat"})");
    CHECK(f.c->received == strings{"routed"});
}

TEST_CASE("router: the demo's [date] goes to everyone on Msg, only on the demo socket and not direct") {
    fixture f;
    f.route(wsig::session_kind::demo, R"({"message":"[DATE]"})");
    REQUIRE(f.b->received.size() == 1);
    CHECK(f.b->received[0].ends_with(" UTC"));
    CHECK(f.a->received.size() == 1);
    CHECK(f.c->received.empty());
    f.route(wsig::session_kind::signal, R"({"message":"[date]","path":"Chat"})");
    CHECK(f.c->received == strings{"[date]"});
    f.route(wsig::session_kind::demo, R"({"message":"[date]","direct":true})");
    CHECK(f.a->received.back() == "[date]");
}

TEST_CASE("router: a read's broadcasts to one Name are corked into one block, in order") {
    fixture f;
    {
        wsig::broadcast_batch batch(64 * 1024);
        for (auto const* m : {"1", "2", "3"})
            f.router.route(*f.a, wsig::session_kind::signal, nullptr,
                           std::string(R"({"message":")") + m + R"(","path":"Msg"})", false, &batch);
        CHECK(f.b->received.empty());  // waiting in the batch
        batch.flush();
    }
    // One block of three frames, each a whole unmasked text frame.
    REQUIRE(f.b->received.size() == 1);
    auto const& block = f.b->received[0];
    CHECK(block == std::string("\x81\x01"
                               "1"
                               "\x81\x01"
                               "2"
                               "\x81\x01"
                               "3",
                               9));
    CHECK(f.a->received == f.b->received);  // the sender is of the Name: it gets them too
    CHECK(f.c->received.empty());
}

TEST_CASE("router: anything else a read does sends the batch first, so order holds") {
    fixture f;
    wsig::broadcast_batch batch(64 * 1024);
    auto route = [&](std::string_view data) {
        f.router.route(*f.a, wsig::session_kind::signal, nullptr, data, false, &batch);
    };
    route(R"({"message":"to all","path":"Msg"})");
    route(R"({"message":"to me","direct":true})");  // direct: the batch goes first
    CHECK(f.a->received == strings{"to all", "to me"});
    route(R"({"message":"red only","path":"Msg","group":"red"})");  // a filtered list: a batch of its own
    route(R"({"message":"chat","path":"Chat"})");                   // another Name: the batch goes
    batch.flush();
    CHECK(f.a->received == strings{"to all", "to me", "red only"});
    CHECK(f.b->received == strings{"to all"});
    CHECK(f.c->received == strings{"chat"});
}
