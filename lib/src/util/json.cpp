// The bounded JSON parser: nlohmann's DOM builder behind a SAX filter that stops at the first
// array or object past the depth limit.
#include <wsig/json.hpp>

#include <fmt/format.h>

#include <string>

namespace wsig {
namespace {

using json = nlohmann::json;

class bounded_dom {
public:
    bounded_dom(json& out, std::size_t max_depth) : dom_(out, /*allow_exceptions=*/false), max_depth_(max_depth) {}

    bool null() { return dom_.null(); }
    bool boolean(bool v) { return dom_.boolean(v); }
    bool number_integer(json::number_integer_t v) { return dom_.number_integer(v); }
    bool number_unsigned(json::number_unsigned_t v) { return dom_.number_unsigned(v); }
    bool number_float(json::number_float_t v, json::string_t const& s) { return dom_.number_float(v, s); }
    bool string(json::string_t& v) { return dom_.string(v); }
    bool binary(json::binary_t& v) { return dom_.binary(v); }
    bool key(json::string_t& v) { return dom_.key(v); }
    bool start_object(std::size_t n) { return enter() && dom_.start_object(n); }
    bool end_object() {
        --depth_;
        return dom_.end_object();
    }
    bool start_array(std::size_t n) { return enter() && dom_.start_array(n); }
    bool end_array() {
        --depth_;
        return dom_.end_array();
    }
    bool parse_error(std::size_t pos, std::string const& token, nlohmann::detail::exception const& e) {
        return dom_.parse_error(pos, token, e);
    }

    bool too_deep() const noexcept { return too_deep_; }

private:
    bool enter() {
        if (++depth_ <= max_depth_) return true;
        too_deep_ = true;  // returning false ends the parse here: nothing deeper is read or built
        return false;
    }

    nlohmann::detail::json_sax_dom_parser<json> dom_;
    std::size_t max_depth_;
    std::size_t depth_ = 0;
    bool too_deep_ = false;
};

}  // namespace

result<nlohmann::json> parse_json(std::string_view text, std::size_t max_depth) {
    json out;
    bounded_dom sax(out, max_depth);
    bool const ok = json::sax_parse(text, &sax, nlohmann::detail::input_format_t::json, /*strict=*/true);
    if (sax.too_deep())
        return make_error(errc::bad_envelope, fmt::format("JSON nested deeper than {} levels", max_depth));
    if (!ok) return make_error(errc::bad_envelope, "not valid JSON");
    // In place: json converts from almost anything, so result's converting constructor is ambiguous.
    return {boost::system::in_place_value, std::move(out)};
}

}  // namespace wsig
