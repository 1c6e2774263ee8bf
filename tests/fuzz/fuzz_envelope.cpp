// Fuzzes the client message envelope parser: any bytes give a value or an error, never a crash or throw.
#include <wsig/envelope.hpp>

#include <cstddef>
#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(std::uint8_t const* data, std::size_t size) {
    std::string_view text(reinterpret_cast<char const*>(data), size);
    auto env = wsig::parse_envelope(text);
    if (env) {
        auto payload = wsig::payload_text(env->message);
        // Whatever parsed must survive a round trip through the builder.
        auto again = wsig::parse_envelope(
            wsig::make_envelope(env->message, env->path, env->client_ids, env->groups, env->direct));
        if (!again || again->client_ids != env->client_ids || again->groups != env->groups ||
            again->direct != env->direct || wsig::payload_text(again->message) != payload)
            __builtin_trap();
    }
    (void)wsig::url_decode(text);
    return 0;
}
