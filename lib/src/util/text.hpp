// ASCII text helpers for protocol text (HTTP fields, URLs, Names): case folding, OWS trimming,
// hex digits, percent-decoding. ASCII only on purpose: HTTP names and tokens are ASCII, and a
// locale must never change what a header means.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace wsig {

constexpr char ascii_lower(char c) noexcept {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string to_lower(std::string_view s);

// ASCII case-insensitive equality (header names, schemes, groups, tokens).
bool iequals(std::string_view a, std::string_view b) noexcept;

// `s` without leading and trailing SP and HTAB (RFC 9110 OWS); CR and LF are not white space here.
std::string_view trim(std::string_view s) noexcept;

// The members of a comma-separated list (RFC 9110 5.6.1), trimmed, empty members skipped.
template <class F>
void for_each_list_member(std::string_view list, F&& f) {
    while (!list.empty()) {
        auto const comma = list.find(',');
        auto const member = trim(list.substr(0, comma));
        if (!member.empty()) f(member);
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 1);
    }
}

// True when `token` is a member of the list, compared case-insensitively (Connection: Upgrade).
bool list_contains(std::string_view list, std::string_view token) noexcept;

inline constexpr char hex_digits[] = "0123456789abcdef";

// The value of one hex digit (either case); -1 when it is not one.
constexpr int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// How percent_decode treats what is not a plain byte.
struct percent_rules {
    bool plus_is_space = false;     // application/x-www-form-urlencoded: '+' is ' '
    bool strict = false;            // a '%' not followed by two hex digits fails (else it stays as it is)
    std::string_view refused = {};  // bytes that fail when they come from an escape (e.g. "%2F" in a path)
};

// `text` with %XX escapes decoded; nullopt only when a rule of `rules` refuses it.
std::optional<std::string> percent_decode(std::string_view text, percent_rules const& rules = {});

// An RFC 9110 token (a header name, a method): one or more tchar.
bool is_token(std::string_view s) noexcept;

}  // namespace wsig
