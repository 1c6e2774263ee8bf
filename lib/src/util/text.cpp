#include "util/text.hpp"

#include <algorithm>

namespace wsig {

std::string to_lower(std::string_view s) {
    std::string out(s);
    for (auto& c : out) c = ascii_lower(c);
    return out;
}

bool iequals(std::string_view a, std::string_view b) noexcept {
    return a.size() == b.size() &&
           std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return ascii_lower(x) == ascii_lower(y); });
}

std::string_view trim(std::string_view s) noexcept {
    auto const b = s.find_first_not_of(" \t");
    if (b == std::string_view::npos) return {};
    return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

bool list_contains(std::string_view list, std::string_view token) noexcept {
    bool found = false;
    for_each_list_member(list, [&](std::string_view member) { found = found || iequals(member, token); });
    return found;
}

std::optional<std::string> percent_decode(std::string_view text, percent_rules const& rules) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (c == '+' && rules.plus_is_space) {
            c = ' ';
        } else if (c == '%') {
            int const high = i + 2 < text.size() ? hex_value(text[i + 1]) : -1;
            int const low = i + 2 < text.size() ? hex_value(text[i + 2]) : -1;
            if (high >= 0 && low >= 0) {
                c = static_cast<char>(high * 16 + low);
                if (rules.refused.find(c) != std::string_view::npos) return std::nullopt;
                i += 2;
            } else if (rules.strict) {
                return std::nullopt;
            }
        }
        out.push_back(c);
    }
    return out;
}

bool is_token(std::string_view s) noexcept {
    auto const tchar = [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
    };
    return !s.empty() && std::all_of(s.begin(), s.end(), tchar);
}

}  // namespace wsig
