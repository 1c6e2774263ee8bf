// Fuzzes the parser of signal-route action lines (what a handler command prints, often built from
// client data): any bytes give an action or an error, never a crash, a throw or a deep value.
#include "commands/external_commands.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size) {
    std::string_view line(reinterpret_cast<char const*>(data), size);
    auto action = wsig::detail::parse_action_line(line);
    if (action) {
        // Close never means everyone; something is always asked for.
        if (action->close && action->close->names.empty() && action->close->groups.empty() &&
            action->close->client_ids.empty())
            __builtin_trap();
        if (!action->send && !action->reply && !action->close) __builtin_trap();
    }
    return 0;
}
