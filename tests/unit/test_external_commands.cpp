// External commands with real child processes and fake connections: signal-route events and actions,
// restarts, hooks, schedules and local-route processes.
#include "catch.hpp"

#include "commands/external_commands.hpp"

#include <boost/asio/io_context.hpp>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>

namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using wsig::detail::external_commands;

struct fake_connection : wsig::connection {
    wsig::connection_info info_;
    std::vector<std::string> received;
    std::uint16_t closed = 0;
    fake_connection(std::string name, std::string id, std::string group = {}) {
        info_.name = std::move(name);
        info_.client_id = std::move(id);
        info_.group = std::move(group);
        info_.path = "/ws";
    }
    wsig::connection_info const& info() const noexcept override { return info_; }
    wsig::send_status send(wsig::message_ptr const& m) override {
        received.emplace_back(m->payload());
        return wsig::send_status::queued;
    }
    void close(std::uint16_t code, std::string) override { closed = code; }
};

template <class Pred>
bool run_until(boost::asio::io_context& io, Pred done, std::chrono::milliseconds limit = 10s) {
    auto end = std::chrono::steady_clock::now() + limit;
    while (!done() && std::chrono::steady_clock::now() < end) io.run_one_for(20ms);
    return done();
}

std::vector<std::string> logs;
wsig::detail::command_logger logger() {
    return [](wsig::detail::command_log, std::string m) { logs.push_back(std::move(m)); };
}

wsig::envelope env_of(std::string_view text) {
    return wsig::parse_envelope(text).value();
}

// A signal-route command in Python: answers every event with the actions its message asks for.
constexpr char const* echo_actions =
    "/usr/bin/python3 -u -c 'import sys, json\n"
    "for line in sys.stdin:\n"
    "    e = json.loads(line)\n"
    "    m = e[\"data\"][\"message\"]\n"
    "    if m == \"crash\": sys.exit(3)\n"
    "    if isinstance(m, dict): print(json.dumps(m)); continue\n"
    "    print(\"this is not json\"); print(json.dumps({\"unknown\": 1}))\n"
    "    print(json.dumps({\"reply\": e, \"id\": e[\"id\"]}))\n'";

}  // namespace

TEST_CASE("external commands: a signal route gets each message as a JSON event and its reply reaches the sender") {
    boost::asio::io_context io;
    wsig::registry reg;
    wsig::broadcast_levels levels;
    auto sender = std::make_shared<fake_connection>("Chat", "id-1", "G");
    reg.add(sender);
    auto h = std::make_shared<external_commands>(
        io.get_executor(), reg, levels, wsig::detail::command_options{.signal_routes = {{"/ws", echo_actions}}},
        logger());
    h->start();
    CHECK(h->routes("/ws"));
    CHECK(h->routes("/WS"));  // Pode: ^PATH$ case-insensitively after the exact match
    CHECK_FALSE(h->routes("/other"));
    h->on_message(sender, "/ws", env_of(R"({"message":"hi","path":"Chat","clientId":["a","b"],"direct":true})"));
    REQUIRE(run_until(io, [&] { return !sender->received.empty(); }));
    auto event = json::parse(sender->received.at(0));
    CHECK(event["event"] == "message");
    CHECK(event["id"] == 1);
    CHECK(event["name"] == "Chat");
    CHECK(event["group"] == "G");
    CHECK(event["clientId"] == "id-1");
    CHECK(event["path"] == "/ws");
    CHECK(event["ts"].get<std::string>().size() == 24);
    CHECK(event["data"] ==
          json::parse(R"({"message":"hi","path":"Chat","clientId":["a","b"],"group":null,"direct":true})"));
    h->stop();
    run_until(
        io, [] { return false; }, 200ms);
}

TEST_CASE("external commands: send and close actions go through target selection and broadcast levels") {
    boost::asio::io_context io;
    wsig::registry reg;
    wsig::broadcast_levels levels;
    REQUIRE(levels.apply_spec("Locked=clientid"));
    auto sender = std::make_shared<fake_connection>("Chat", "s");
    auto red = std::make_shared<fake_connection>("Room", "r", "red");
    auto blue = std::make_shared<fake_connection>("Room", "b", "blue");
    auto locked = std::make_shared<fake_connection>("Locked", "l");
    for (auto c : {sender, red, blue, locked}) reg.add(c);
    auto h = std::make_shared<external_commands>(
        io.get_executor(), reg, levels, wsig::detail::command_options{.signal_routes = {{"/ws", echo_actions}}},
        logger());
    h->start();
    h->on_message(sender, "/ws", env_of(R"({"message":{"send":{"name":"Room","group":"RED","data":{"x":1}}}})"));
    h->on_message(sender, "/ws", env_of(R"({"message":{"send":{"name":"Locked","data":"nope"}}})"));
    h->on_message(sender, "/ws", env_of(R"({"message":{"close":{"name":"Room","clientId":"b"}}})"));
    h->on_message(sender, "/ws", env_of(R"({"message":{"reply":"last"}})"));
    REQUIRE(run_until(io, [&] { return !sender->received.empty(); }));
    CHECK(red->received == std::vector<std::string>{R"({"x":1})"});
    CHECK(blue->received.empty());
    CHECK(locked->received.empty());  // refused by its broadcast level
    CHECK(blue->closed == 1000);
    CHECK(red->closed == 0);
    CHECK(sender->received == std::vector<std::string>{"last"});
    h->stop();
    run_until(
        io, [] { return false; }, 200ms);
}

TEST_CASE("external commands: a crashing signal-route command is restarted and later events reach the new one") {
    boost::asio::io_context io;
    wsig::registry reg;
    wsig::broadcast_levels levels;
    auto sender = std::make_shared<fake_connection>("Chat", "s");
    reg.add(sender);
    logs.clear();
    auto h = std::make_shared<external_commands>(
        io.get_executor(), reg, levels,
        wsig::detail::command_options{.signal_routes = {{"/ws", echo_actions}}, .restart_min = 50ms}, logger());
    h->start();
    h->on_message(sender, "/ws", env_of(R"({"message":"crash"})"));
    REQUIRE(run_until(io, [&] { return h->restarts() == 1; }));
    bool logged = false;
    for (auto const& l : logs) logged = logged || l.find("exited with 3; restarting in") != std::string::npos;
    CHECK(logged);
    // Events sent while it restarts are dropped and counted; once it is back they flow again.
    REQUIRE(run_until(io, [&] {
        if (sender->received.empty()) h->on_message(sender, "/ws", env_of(R"({"message":{"reply":"back"}})"));
        return !sender->received.empty();
    }));
    CHECK(sender->received.front() == "back");
    h->stop();
    run_until(
        io, [] { return false; }, 200ms);
}

TEST_CASE("external commands: connect and disconnect hooks get the event on stdin and in WSIG_* variables") {
    boost::asio::io_context io;
    wsig::registry reg;
    wsig::broadcast_levels levels;
    auto dir = std::filesystem::temp_directory_path() / ("wsig-hooks-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    auto cmd = fmt::format(
        "cat > {0}/$WSIG_EVENT.json; echo \"$WSIG_NAME|$WSIG_GROUP|$WSIG_CLIENT_ID|$WSIG_SCOPE\" > "
        "{0}/$WSIG_EVENT.env",
        dir.string());
    auto h = std::make_shared<external_commands>(io.get_executor(), reg, levels,
                                                 wsig::detail::command_options{.on_connect = cmd, .on_disconnect = cmd},
                                                 logger());
    h->start();
    wsig::connection_info info{.name = "Msg", .group = "g", .client_id = "abc", .scope = wsig::scope::global};
    h->on_connect(info);
    h->on_disconnect(info, 1001, "going away");
    auto read = [&](std::string f) {
        std::ifstream in(dir / f);
        return std::string(std::istreambuf_iterator<char>(in), {});
    };
    REQUIRE(run_until(io, [&] { return read("disconnect.env").size() > 0 && read("connect.env").size() > 0; }));
    CHECK(read("connect.env") == "Msg|g|abc|global\n");
    auto ev = json::parse(read("disconnect.json"));
    CHECK(ev["type"] == "disconnect");
    CHECK(ev["name"] == "Msg");
    CHECK(ev["code"] == 1001);
    CHECK(ev["reason"] == "going away");
    CHECK(ev["connection"] == json::parse(R"({"name":"Msg","group":"g","clientId":"abc","scope":"global"})"));
    CHECK(json::parse(read("connect.json"))["type"] == "connect");
    std::filesystem::remove_all(dir);
    h->stop();
    run_until(
        io, [] { return false; }, 200ms);
}

TEST_CASE("external commands: a schedule broadcasts its output, less one trailing newline, to its Name") {
    boost::asio::io_context io;
    wsig::registry reg;
    wsig::broadcast_levels levels;
    auto a = std::make_shared<fake_connection>("Times", "a");
    auto other = std::make_shared<fake_connection>("Other", "o");
    reg.add(a);
    reg.add(other);
    auto h = std::make_shared<external_commands>(
        io.get_executor(), reg, levels,
        wsig::detail::command_options{.schedules = {wsig::parse_schedule("50ms:Times:printf 'a\\nb\\n\\n'").value()}},
        logger());
    h->start();
    REQUIRE(run_until(io, [&] { return a->received.size() >= 2; }));
    CHECK(a->received[0] == "a\nb\n");
    CHECK(other->received.empty());
    h->stop();
    run_until(
        io, [] { return false; }, 200ms);
}

TEST_CASE("external commands: flag specs parse and bad ones are refused") {
    CHECK(wsig::parse_signal_route("/chat=python3 bot.py --x=1").value().command == "python3 bot.py --x=1");
    CHECK_FALSE(wsig::parse_signal_route("chat=cmd").has_value());
    CHECK_FALSE(wsig::parse_signal_route("/chat=").has_value());
    auto s = wsig::parse_schedule("1m:Times:date +%H:%M").value();
    CHECK(s.period == std::chrono::minutes(1));
    CHECK(s.name == "Times");
    CHECK(s.command == "date +%H:%M");
    CHECK_FALSE(wsig::parse_schedule("1x:Times:date").has_value());
    CHECK_FALSE(wsig::parse_schedule("1m::date").has_value());
    CHECK_FALSE(wsig::parse_schedule("1m:Times").has_value());
    CHECK_FALSE(wsig::parse_schedule("1ms:Times:date").has_value());
}

TEST_CASE("external commands: a local process echoes client messages and closes its connection when it exits") {
    boost::asio::io_context io;
    auto conn = std::make_shared<fake_connection>("Tail", "t");
    auto p = wsig::detail::local_process::start(io.get_executor(), "head -n 2", conn, conn->info(), 1 << 20, 1 << 20,
                                                logger());
    REQUIRE(p.has_value());
    (*p)->on_client_message("one");
    (*p)->on_client_message("two");
    REQUIRE(run_until(io, [&] { return conn->closed != 0; }));
    CHECK(conn->received == std::vector<std::string>{"one", "two"});
    CHECK(conn->closed == 1000);
}

TEST_CASE("external commands: a local process is ended when its client leaves") {
    boost::asio::io_context io;
    auto conn = std::make_shared<fake_connection>("Tail", "t");
    auto p = wsig::detail::local_process::start(io.get_executor(), "echo started; exec sleep 30", conn, conn->info(),
                                                1 << 20, 1 << 20, logger());
    REQUIRE(p.has_value());
    REQUIRE(run_until(io, [&] { return !conn->received.empty(); }));
    (*p)->on_client_gone();
    // Ended by us: the connection is not closed a second time by the exit.
    run_until(
        io, [] { return false; }, 500ms);
    CHECK(conn->closed == 0);
}

TEST_CASE("external commands: an action line is checked whole before any of it runs") {
    using wsig::detail::parse_action_line;
    auto a = parse_action_line(R"({"send":{"name":"Chat","group":["a","b"],"data":{"n":1}},"reply":"r","id":7})");
    REQUIRE(a.has_value());
    REQUIRE(a->send);
    CHECK(a->send->to.names == std::vector<std::string>{"Chat"});
    CHECK(a->send->to.groups == std::vector<std::string>{"a", "b"});
    CHECK(a->send->payload == R"({"n":1})");
    REQUIRE(a->reply);
    CHECK(a->reply->payload == "r");
    CHECK(a->reply->event_id == 7u);
    CHECK_FALSE(a->close);
    CHECK(parse_action_line(R"({"close":{}})").error().message ==
          "close needs a name, group or clientId (refusing to close everyone)");
    CHECK(parse_action_line(R"({"send":{"data":"x"},"reply":null})").error().message == "reply needs data");
    CHECK(parse_action_line(R"({"other":1})").error().message == "no send, reply or close");
    CHECK(parse_action_line("[1]").error().message == "not a JSON object");
    CHECK(parse_action_line(R"({"send":{"data":[[1]]}})", 3).error().message == "JSON nested deeper than 3 levels");
}
