// Parsing and building of Pode's client message envelope; nlohmann/json exceptions stop here.
#include <wsig/envelope.hpp>
#include <wsig/registry.hpp>

#include "util/text.hpp"

#include <fmt/format.h>

namespace wsig {
namespace {

// The strings are moved out of `v`, which the caller owns.
result<std::vector<std::string>> string_or_array(nlohmann::json& v, std::string_view field, std::size_t max_items) {
    std::vector<std::string> out;
    if (v.is_null()) return out;
    if (v.is_string()) {
        if (!v.get_ref<std::string const&>().empty()) out.push_back(std::move(v.get_ref<std::string&>()));
        return out;
    }
    if (v.is_array()) {
        if (v.size() > max_items)
            return make_error(errc::bad_envelope,
                              fmt::format("envelope: '{}' holds {} entries, more than {}", field, v.size(), max_items));
        out.reserve(v.size());
        for (auto& item : v) {
            if (!item.is_string())
                return make_error(errc::bad_envelope, fmt::format("envelope: '{}' must hold only strings", field));
            out.push_back(std::move(item.get_ref<std::string&>()));
        }
        return out;
    }
    return make_error(errc::bad_envelope, fmt::format("envelope: '{}' must be a string or an array of strings", field));
}

}  // namespace

std::string url_decode(std::string_view text) {
    // .NET's UrlDecode: '+' is a space and a stray '%' stays, so nothing is refused.
    return *percent_decode(text, {.plus_is_space = true});
}

result<envelope> parse_envelope(std::string_view text, envelope_limits const& limits) {
    auto parsed = parse_json(text, limits.max_depth);
    if (!parsed) return make_error(errc::bad_envelope, fmt::format("envelope: {}", parsed.error().message));
    auto& doc = *parsed;
    if (!doc.is_object()) return make_error(errc::bad_envelope, "envelope: not a JSON object");

    // Pointers into `doc`, whose values are moved into the envelope: a client's value is never copied.
    nlohmann::json* fields[5] = {};
    static constexpr std::string_view names[5] = {"message", "path", "clientId", "group", "direct"};
    for (auto const& [key, value] : doc.items()) {
        for (std::size_t i = 0; i < 5; ++i) {
            if (!iequals(key, names[i])) continue;
            if (fields[i])
                return make_error(errc::bad_envelope, fmt::format("envelope: field '{}' appears twice", names[i]));
            fields[i] = &value;
        }
    }
    auto* message = fields[0];
    if (!message || message->is_null()) return make_error(errc::bad_envelope, "envelope: no 'message'");
    if (message->is_string() && message->get_ref<std::string const&>().empty())
        return make_error(errc::bad_envelope, "envelope: 'message' is empty");

    envelope env;
    env.message = std::move(*message);
    if (auto const* p = fields[1]; p && !p->is_null()) {
        if (!p->is_string()) return make_error(errc::bad_envelope, "envelope: 'path' must be a string");
        if (!p->get_ref<std::string const&>().empty()) env.path = url_decode(p->get_ref<std::string const&>());
    }
    if (fields[2]) {
        auto ids = string_or_array(*fields[2], "clientId", limits.max_client_ids);
        if (!ids) return ids.error();
        env.client_ids = std::move(*ids);
    }
    if (fields[3]) {
        auto groups = string_or_array(*fields[3], "group", limits.max_groups);
        if (!groups) return groups.error();
        env.groups = std::move(*groups);
    }
    if (auto const* d = fields[4]; d && !d->is_null()) {
        if (!d->is_boolean()) return make_error(errc::bad_envelope, "envelope: 'direct' must be true or false");
        env.direct = d->get<bool>();
    }
    return env;
}

std::string payload_text(nlohmann::json const& message) {
    if (message.is_string()) return message.get<std::string>();
    // Invalid UTF-8 cannot reach here from parse(); replace rather than throw for built values.
    return message.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string make_envelope(nlohmann::json const& message, std::optional<std::string> const& path,
                          std::vector<std::string> const& client_ids, std::vector<std::string> const& groups,
                          bool direct) {
    nlohmann::ordered_json env;
    env["message"] = message;
    if (path) env["path"] = *path;
    if (client_ids.size() == 1)
        env["clientId"] = client_ids.front();
    else if (!client_ids.empty())
        env["clientId"] = client_ids;
    if (groups.size() == 1)
        env["group"] = groups.front();
    else if (!groups.empty())
        env["group"] = groups;
    if (direct) env["direct"] = true;
    return env.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace wsig
