// util/utf8: the one UTF-8 decoder (text frames, push bodies, log lines).
#include "catch.hpp"

#include "util/utf8.hpp"

#include <cstdint>
#include <string>

using namespace std::string_literals;

TEST_CASE("utf8: one sequence and its code point") {
    std::uint32_t cp = 0;
    CHECK(wsig::utf8_sequence("a", cp) == 1);
    CHECK(cp == 'a');
    CHECK(wsig::utf8_sequence("\xC3\xA9x", cp) == 2);
    CHECK(cp == 0xE9);
    CHECK(wsig::utf8_sequence("\xE2\x82\xAC", cp) == 3);
    CHECK(cp == 0x20AC);
    CHECK(wsig::utf8_sequence("\xF0\x9F\x98\x80", cp) == 4);
    CHECK(cp == 0x1F600);
    CHECK(wsig::utf8_sequence("\0"s, cp) == 1);
}

TEST_CASE("utf8: what is not UTF-8") {
    std::uint32_t cp = 0;
    CHECK(wsig::utf8_sequence("\x80", cp) == 0);              // a stray continuation byte
    CHECK(wsig::utf8_sequence("\xC3", cp) == 0);              // truncated
    CHECK(wsig::utf8_sequence("\xC3(", cp) == 0);             // not a continuation
    CHECK(wsig::utf8_sequence("\xC0\xAF", cp) == 0);          // overlong '/'
    CHECK(wsig::utf8_sequence("\xE0\x80\xAF", cp) == 0);      // overlong, 3 bytes
    CHECK(wsig::utf8_sequence("\xF0\x80\x80\xAF", cp) == 0);  // overlong, 4 bytes
    CHECK(wsig::utf8_sequence("\xED\xA0\x80", cp) == 0);      // U+D800, a surrogate
    CHECK(wsig::utf8_sequence("\xED\xBF\xBF", cp) == 0);      // U+DFFF
    CHECK(wsig::utf8_sequence("\xF4\x90\x80\x80", cp) == 0);  // U+110000
    CHECK(wsig::utf8_sequence("\xF8\x88\x80\x80\x80", cp) == 0);
    CHECK(wsig::utf8_sequence("\xFF", cp) == 0);
}

TEST_CASE("utf8: whole strings") {
    CHECK(wsig::valid_utf8(""));
    CHECK(wsig::valid_utf8("plain ASCII"));
    CHECK(wsig::valid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF4\x8F\xBF\xBF"));  // U+10FFFF is the last
    CHECK(wsig::valid_utf8("nul \0 inside"s));
    CHECK_FALSE(wsig::valid_utf8("caf\xC3"));
    CHECK_FALSE(wsig::valid_utf8("\xED\xA0\x80"));
    CHECK_FALSE(wsig::valid_utf8("ok \xFF ok"));
}

TEST_CASE("utf8: a cut never splits a sequence") {
    CHECK(wsig::cut_utf8("abc", 5) == "abc");
    CHECK(wsig::cut_utf8("abc", 2) == "ab");
    CHECK(wsig::cut_utf8("a\xC3\xA9", 2) == "a");  // would split é
    CHECK(wsig::cut_utf8("a\xC3\xA9", 3) == "a\xC3\xA9");
    CHECK(wsig::cut_utf8("\xF0\x9F\x98\x80z", 3).empty());  // would split the emoji
    CHECK(wsig::cut_utf8("\xF0\x9F\x98\x80z", 4) == "\xF0\x9F\x98\x80");
    CHECK(wsig::cut_utf8("ab", 0).empty());
    for (std::size_t max = 0; max < 12; ++max)
        CHECK(wsig::valid_utf8(wsig::cut_utf8("\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80", max)));
}
