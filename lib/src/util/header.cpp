#include "util/header.hpp"

#include "util/text.hpp"

#include <fmt/format.h>

namespace wsig {

result<std::pair<std::string, std::string>> parse_header(std::string_view text) {
    auto const colon = text.find(':');
    if (colon == std::string_view::npos || colon == 0)
        return make_error(errc::invalid_argument, fmt::format("bad header '{}': expected 'Name: value'", text));
    std::string name(text.substr(0, colon));
    if (!is_token(name)) return make_error(errc::invalid_argument, fmt::format("bad header name '{}'", name));
    std::string value(trim(text.substr(colon + 1)));
    if (value.find_first_of(std::string_view("\r\n\0", 3)) != std::string::npos)
        return make_error(errc::invalid_argument, fmt::format("header '{}' holds a line break or a NUL", name));
    return std::pair{std::move(name), std::move(value)};
}

}  // namespace wsig
