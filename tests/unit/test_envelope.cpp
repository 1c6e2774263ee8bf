// The client message envelope: fields, case-insensitive names, string or array, direct, bad input.
#include "catch.hpp"

#include <wsig/envelope.hpp>
#include <wsig/json.hpp>

#include <fmt/format.h>

TEST_CASE("envelope: all fields parse") {
    auto env = wsig::parse_envelope(R"({"message":"hi","path":"Msg","clientId":"abc","group":"G1","direct":true})");
    REQUIRE(env.has_value());
    CHECK(env->message == "hi");
    CHECK(env->path == "Msg");
    CHECK(env->client_ids == std::vector<std::string>{"abc"});
    CHECK(env->groups == std::vector<std::string>{"G1"});
    CHECK(env->direct);
}

TEST_CASE("envelope: field names are case-insensitive") {
    auto env =
        wsig::parse_envelope(R"({"MESSAGE":{"a":1},"Path":"Msg","CLIENTID":["a","b"],"gRoUp":["x"],"Direct":false})");
    REQUIRE(env.has_value());
    CHECK(env->message == nlohmann::json{{"a", 1}});
    CHECK(env->path == "Msg");
    CHECK(env->client_ids == std::vector<std::string>{"a", "b"});
    CHECK(env->groups == std::vector<std::string>{"x"});
    CHECK_FALSE(env->direct);
}

TEST_CASE("envelope: only the message is required") {
    auto env = wsig::parse_envelope(R"({"message":42})");
    REQUIRE(env.has_value());
    CHECK_FALSE(env->path.has_value());
    CHECK(env->client_ids.empty());
    CHECK(env->groups.empty());
    CHECK_FALSE(env->direct);
}

TEST_CASE("envelope: the path is URL-decoded as Pode does") {
    CHECK(wsig::parse_envelope(R"({"message":"x","path":"/a%20b+c"})")->path == "/a b c");
    CHECK(wsig::url_decode("100%") == "100%");
    CHECK(wsig::url_decode("%4") == "%4");
    CHECK(wsig::url_decode("%zz") == "%zz");
    CHECK(wsig::url_decode("%C3%A9") == "\xC3\xA9");
}

TEST_CASE("envelope: bad envelopes are error values, never exceptions") {
    for (auto text : {"", "not json", "{", "[]", "\"message\"", "42", "{}", R"({"message":null})", R"({"message":""})",
                      R"({"path":"Msg"})", R"({"message":"x","direct":"true"})", R"({"message":"x","direct":1})",
                      R"({"message":"x","clientId":5})", R"({"message":"x","group":[1]})",
                      R"({"message":"x","path":3})", R"({"message":"x","Message":"y"})", "{\"message\":\"\xff\"}"}) {
        INFO(text);
        auto env = wsig::parse_envelope(text);
        REQUIRE_FALSE(env.has_value());
        CHECK(env.error().code == wsig::errc::bad_envelope);
        CHECK(env.error().message.starts_with("envelope: "));
    }
}

TEST_CASE("envelope: payload_text sends strings raw and everything else as compact JSON") {
    CHECK(wsig::payload_text("hi \"there\"") == "hi \"there\"");
    CHECK(wsig::payload_text(nlohmann::json::parse(R"({ "a" : [1, 2] })")) == R"({"a":[1,2]})");
    CHECK(wsig::payload_text(42) == "42");
    CHECK(wsig::payload_text(true) == "true");
}

TEST_CASE("envelope: make_envelope writes message first and omits what is unset") {
    CHECK(wsig::make_envelope("hi", std::nullopt, {}, {}, false) == R"({"message":"hi"})");
    CHECK(wsig::make_envelope(nlohmann::json{{"a", 1}}, std::string("Msg"), {"id1"}, {"g1", "g2"}, true) ==
          R"({"message":{"a":1},"path":"Msg","clientId":"id1","group":["g1","g2"],"direct":true})");
    auto round = wsig::parse_envelope(wsig::make_envelope("x", std::string("P"), {"a", "b"}, {"g"}, false));
    REQUIRE(round.has_value());
    CHECK(round->client_ids == std::vector<std::string>{"a", "b"});
}

namespace {
std::string nested(std::size_t depth, std::string_view inner = "1") {
    return std::string(depth, '[') + std::string(inner) + std::string(depth, ']');
}
}  // namespace

TEST_CASE("json: nesting up to the limit parses, one level more is refused while parsing") {
    REQUIRE(wsig::parse_json(nested(64)).has_value());
    auto deep = wsig::parse_json(nested(65));
    REQUIRE_FALSE(deep.has_value());
    CHECK(deep.error().message == "JSON nested deeper than 64 levels");
    CHECK(wsig::parse_json(nested(3), 3).has_value());
    CHECK_FALSE(wsig::parse_json(R"({"a":{"b":{"c":1}}})", 2).has_value());
    CHECK(wsig::parse_json("{\"a\":").error().message == "not valid JSON");
    CHECK(wsig::parse_json("1 2").error().message == "not valid JSON");  // one value, nothing after it
}

TEST_CASE("json: a value 100,000 deep (the crash of issue 13) is refused without recursion") {
    auto text = "{\"message\":" + nested(100000) + "}";
    auto env = wsig::parse_envelope(text);
    REQUIRE_FALSE(env.has_value());
    CHECK(env.error().message == "envelope: JSON nested deeper than 64 levels");
    // The same text never gets built unbounded either way: a deep but unclosed prefix is refused too.
    CHECK_FALSE(wsig::parse_envelope("{\"message\":" + std::string(500000, '[')).has_value());
}

TEST_CASE("envelope: the depth limit counts the envelope itself") {
    CHECK(wsig::parse_envelope("{\"message\":" + nested(63) + "}").has_value());
    CHECK_FALSE(wsig::parse_envelope("{\"message\":" + nested(64) + "}").has_value());
    CHECK(wsig::parse_envelope("{\"message\":" + nested(100) + "}", {.max_depth = 101}).has_value());
}

TEST_CASE("envelope: at most 256 groups and 256 client IDs") {
    auto list = [](std::size_t n) {
        nlohmann::json a = nlohmann::json::array();
        for (std::size_t i = 0; i < n; ++i) a.push_back("g" + std::to_string(i));
        return a.dump();
    };
    auto with = [&](char const* field, std::size_t n) {
        return wsig::parse_envelope(fmt::format(R"({{"message":"m","{}":{}}})", field, list(n)));
    };
    REQUIRE(with("group", 256).has_value());
    CHECK(with("group", 256)->groups.size() == 256);
    CHECK(with("group", 257).error().message == "envelope: 'group' holds 257 entries, more than 256");
    REQUIRE(with("clientId", 256).has_value());
    CHECK(with("clientId", 257).error().message == "envelope: 'clientId' holds 257 entries, more than 256");
    CHECK(wsig::parse_envelope(R"({"message":"m","group":["a","b"]})", {.max_groups = 1}).error().message ==
          "envelope: 'group' holds 2 entries, more than 1");
}

TEST_CASE("envelope: the message value is moved out, whole") {
    auto env = wsig::parse_envelope(R"({"message":{"a":[1,{"b":"c"}]},"group":["x","y"]})");
    REQUIRE(env.has_value());
    CHECK(env->message == nlohmann::json::parse(R"({"a":[1,{"b":"c"}]})"));
    CHECK(env->groups == std::vector<std::string>{"x", "y"});
}
