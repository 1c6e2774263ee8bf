// util/utf8: the one UTF-8 decoder (text frames, push bodies, log lines) and its streaming check.
#include "catch.hpp"

#include "util/utf8.hpp"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

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

namespace {

// utf8_stream over `s` cut at `cuts`: false as soon as a piece fails, else whether it is complete.
bool stream_valid(std::string const& s, std::vector<std::size_t> const& cuts) {
    wsig::utf8_stream u;
    std::size_t at = 0;
    for (auto c : cuts) {
        if (!u.feed(std::string_view(s).substr(at, c - at))) return false;
        at = c;
    }
    return u.feed(std::string_view(s).substr(at)) && u.complete();
}

std::vector<std::string> const utf8_samples{
    "",
    "plain ASCII, longer than eight bytes at a time",
    "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xF4\x8F\xBF\xBF \xEF\xBF\xBF \xED\x9F\xBF \xEE\x80\x80",
    "\xC2\x80\xDF\xBF\xE0\xA0\x80\xF0\x90\x80\x80",  // the first code point of each length
    "nul \0 inside"s,
    "\x80",                  // a stray continuation byte
    "abcdefgh\xBF",          // after an ASCII run
    "\xC0\xAF",              // overlong '/'
    "\xC1\xBF",              // overlong
    "\xE0\x80\xAF",          // overlong, 3 bytes
    "\xE0\x9F\xBF",          // overlong, the last 3-byte one
    "\xF0\x80\x80\xAF",      // overlong, 4 bytes
    "\xF0\x8F\xBF\xBF",      // overlong, the last 4-byte one
    "\xED\xA0\x80",          // U+D800
    "\xED\xBF\xBF",          // U+DFFF
    "\xF4\x90\x80\x80",      // U+110000
    "\xF5\x80\x80\x80",      // no code point starts with F5
    "\xF8\x88\x80\x80\x80",  // 5 bytes
    "\xFF",
    "caf\xC3",       // truncated
    "\xE2\x82",      // truncated
    "\xF0\x9F\x98",  // truncated
    "\xE2(\xAC",     // not a continuation
    "\xC3\xA9\xC3",  // truncated after a good one
};

}  // namespace

TEST_CASE("utf8: a stream agrees with the whole-string check at every split point") {
    for (auto const& s : utf8_samples) {
        INFO(s);
        bool const whole = wsig::valid_utf8(s);
        CHECK(stream_valid(s, {}) == whole);
        for (std::size_t i = 0; i <= s.size(); ++i) {
            CHECK(stream_valid(s, {i}) == whole);
            for (std::size_t j = i; j <= s.size(); ++j) CHECK(stream_valid(s, {i, j}) == whole);
        }
        std::vector<std::size_t> every;
        for (std::size_t i = 1; i < s.size(); ++i) every.push_back(i);
        CHECK(stream_valid(s, every) == whole);
    }
}

TEST_CASE("utf8: a stream fails fast and stays failed") {
    wsig::utf8_stream u;
    CHECK(u.feed("ok \xE2"));
    CHECK_FALSE(u.complete());  // inside the euro sign
    CHECK(u.feed("\x82"));
    CHECK(u.feed("\xAC"));
    CHECK(u.complete());
    CHECK_FALSE(u.feed("\xED\xA0"));  // a surrogate is refused on its second byte
    CHECK_FALSE(u.feed("fine"));      // and the stream stays failed
    CHECK_FALSE(u.complete());
    u.reset();
    CHECK(u.feed("fine"));
    CHECK(u.complete());
    wsig::utf8_stream v;
    CHECK_FALSE(v.feed("\xF4\x90"));  // above U+10FFFF, known on the second byte
    wsig::utf8_stream w;
    CHECK_FALSE(w.feed("\xE0\x80"));  // overlong, known on the second byte
    wsig::utf8_stream x;
    CHECK_FALSE(x.feed(std::string(1000, 'a') + "\xFF" + std::string(1000, 'b')));
}
