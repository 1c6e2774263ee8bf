// Static files: safe resolution (percent-decoding, no escape from the root, no dotfiles), content
// types, opening, validators and the conditional and range logic of RFC 9110.
#include "server/static_files.hpp"

#include <wsig/registry.hpp>

#include "util/text.hpp"

#include <fmt/format.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <charconv>
#include <limits>
#include <utility>

namespace wsig::detail {
namespace fs = std::filesystem;

namespace {

// Percent-decodes a path; nullopt when it holds a NUL, an encoded '/' or '\', or a bad escape.
std::optional<std::string> decode_path(std::string_view p) {
    if (p.find('\0') != std::string_view::npos) return std::nullopt;
    return percent_decode(p, {.strict = true, .refused = std::string_view("/\\\0", 3)});
}

bool inside(fs::path const& root, fs::path const& p) {
    auto r = root.begin(), q = p.begin();
    for (; r != root.end(); ++r, ++q)
        if (q == p.end() || *r != *q) return false;
    return true;
}

bool is_dot_name(std::string_view segment) {
    return !segment.empty() && segment.front() == '.';
}

// True when a path below root (canonical, inside it) has a segment starting with '.'.
bool has_dot_segment_below(fs::path const& root, fs::path const& p) {
    auto q = p.begin();
    for (auto r = root.begin(); r != root.end(); ++r) ++q;
    for (; q != p.end(); ++q)
        if (is_dot_name(q->native())) return true;
    return false;
}

// Digits only, saturating at the largest value: a position past any file is past this one too.
std::optional<std::uint64_t> parse_position(std::string_view digits) {
    if (digits.empty()) return std::nullopt;
    std::uint64_t v = 0;
    for (char c : digits) {
        if (c < '0' || c > '9') return std::nullopt;
        auto d = static_cast<std::uint64_t>(c - '0');
        v = v > (std::numeric_limits<std::uint64_t>::max() - d) / 10 ? std::numeric_limits<std::uint64_t>::max()
                                                                     : v * 10 + d;
    }
    return v;
}

enum class range_parse { ignored, unsatisfiable, satisfiable };

// One "bytes=" range of a file of `size` bytes (RFC 9110 14.1.2): a-b, a- or -n. Anything else,
// including several ranges, is ignored: the whole file is sent.
range_parse parse_range(std::string_view header, std::uint64_t size, std::uint64_t& first, std::uint64_t& last) {
    auto eq = header.find('=');
    if (eq == std::string_view::npos || !iequals(trim(header.substr(0, eq)), "bytes")) return range_parse::ignored;
    std::string_view spec;
    int count = 0;
    for_each_list_member(header.substr(eq + 1), [&](std::string_view m) {
        spec = m;
        ++count;
    });
    if (count != 1) return range_parse::ignored;  // none, or several: the whole file (see answer_for)
    auto dash = spec.find('-');
    if (dash == std::string_view::npos) return range_parse::ignored;
    auto a = spec.substr(0, dash), b = spec.substr(dash + 1);
    if (a.empty()) {  // -n: the last n bytes
        auto n = parse_position(b);
        if (!n) return range_parse::ignored;
        if (*n == 0 || size == 0) return range_parse::unsatisfiable;
        first = size - std::min(*n, size);
        last = size - 1;
        return range_parse::satisfiable;
    }
    auto from = parse_position(a);
    if (!from) return range_parse::ignored;
    std::uint64_t to = std::numeric_limits<std::uint64_t>::max();
    if (!b.empty()) {
        auto t = parse_position(b);
        if (!t || *t < *from) return range_parse::ignored;  // invalid: RFC 9110 14.1.1
        to = *t;
    }
    if (*from >= size) return range_parse::unsatisfiable;
    first = *from;
    last = std::min(to, size - 1);
    return range_parse::satisfiable;
}

std::string_view opaque_tag(std::string_view tag) {
    if (tag.size() >= 2 && tag[0] == 'W' && tag[1] == '/') tag.remove_prefix(2);
    return tag;
}

}  // namespace

std::string_view content_type_for(fs::path const& file) {
    static constexpr std::array<std::pair<std::string_view, std::string_view>, 22> types{{
        {".html", "text/html; charset=utf-8"},
        {".htm", "text/html; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".json", "application/json"},
        {".txt", "text/plain; charset=utf-8"},
        {".md", "text/markdown; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".jpg", "image/jpeg"},
        {".jpeg", "image/jpeg"},
        {".gif", "image/gif"},
        {".webp", "image/webp"},
        {".ico", "image/x-icon"},
        {".wasm", "application/wasm"},
        {".woff", "font/woff"},
        {".woff2", "font/woff2"},
        {".xml", "application/xml"},
        {".pdf", "application/pdf"},
        {".csv", "text/csv; charset=utf-8"},
        {".map", "application/json"},
    }};
    auto const ext = to_lower(file.extension().string());
    for (auto const& [e, t] : types)
        if (e == ext) return t;
    return "application/octet-stream";
}

static_file resolve_static(fs::path const& root, std::string_view target, bool serve_dotfiles) {
    static_file not_found{404, {}, "text/plain; charset=utf-8"};
    auto path_part = target.substr(0, target.find_first_of("?#"));
    if (path_part.empty() || path_part.front() != '/') return not_found;
    auto decoded = decode_path(path_part);
    if (!decoded) return not_found;

    fs::path relative;
    for (std::size_t pos = 1; pos <= decoded->size();) {
        auto next = decoded->find('/', pos);
        if (next == std::string::npos) next = decoded->size();
        auto seg = std::string_view(*decoded).substr(pos, next - pos);
        pos = next + 1;
        if (seg.empty() || seg == ".") continue;
        if (seg == "..") return not_found;  // never climb, even when it would stay inside
        if (!serve_dotfiles && is_dot_name(seg)) return not_found;
        relative /= std::string(seg);
    }

    std::error_code ec;
    auto candidate = fs::weakly_canonical(root / relative, ec);  // follows symlinks
    if (ec || !inside(root, candidate)) return not_found;
    if (fs::is_directory(candidate, ec)) candidate /= "index.html";
    auto real = fs::canonical(candidate, ec);
    if (ec || !inside(root, real) || !fs::is_regular_file(real, ec)) return not_found;
    if (!serve_dotfiles && has_dot_segment_below(root, real)) return not_found;  // a symlink to a dotfile
    return {200, real, std::string(content_type_for(real))};
}

unique_fd& unique_fd::operator=(unique_fd&& o) noexcept {
    if (this != &o) {
        if (fd_ >= 0) ::close(fd_);
        fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
}

unique_fd::~unique_fd() {
    if (fd_ >= 0) ::close(fd_);
}

std::optional<open_file> open_regular_file(fs::path const& path) {
    unique_fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
    if (fd.get() < 0) return std::nullopt;
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) return std::nullopt;
    auto mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
    return open_file{std::move(fd), static_cast<std::uint64_t>(st.st_size), mtime_ns};
}

std::string entity_tag(std::uint64_t size, std::int64_t mtime_ns) {
    return fmt::format("\"{:x}-{:x}\"", size, static_cast<std::uint64_t>(mtime_ns));
}

std::string http_date(std::time_t t) {
    std::tm tm{};
    gmtime_r(&t, &tm);
    // Not strftime's %a and %b: those follow the locale, and HTTP's names are English.
    static constexpr char const* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr char const* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    return fmt::format("{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT", days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon],
                       tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

std::optional<std::time_t> parse_http_date(std::string_view text) {
    static constexpr std::string_view months = "JanFebMarAprMayJunJulAugSepOctNovDec";
    // Every form names the month in English, then day, year and time are numbers: pull them out by
    // position after splitting on the separators each form uses.
    std::string s(trim(text));
    std::array<std::string_view, 8> f{};
    std::size_t n = 0;
    std::string_view rest(s);
    while (!rest.empty() && n < f.size()) {
        auto b = rest.find_first_not_of(" ,-:");
        if (b == std::string_view::npos) break;
        rest.remove_prefix(b);
        auto e = rest.find_first_of(" ,-:");
        f[n++] = rest.substr(0, e);
        rest = e == std::string_view::npos ? std::string_view() : rest.substr(e);
    }
    if (!rest.empty() && rest.find_first_not_of(" ,-:") != std::string_view::npos) return std::nullopt;
    // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT   -> wday day mon year h m s GMT
    // RFC 850:     Sunday, 06-Nov-94 08:49:37 GMT  -> wday day mon yy   h m s GMT
    // asctime:     Sun Nov  6 08:49:37 1994        -> wday mon day h m s year
    std::string_view day, mon, year, hh, mm, ss;
    if (n == 8 && f[7] == "GMT") {
        day = f[1], mon = f[2], year = f[3], hh = f[4], mm = f[5], ss = f[6];
    } else if (n == 7) {
        mon = f[1], day = f[2], hh = f[3], mm = f[4], ss = f[5], year = f[6];
    } else {
        return std::nullopt;
    }
    auto num = [](std::string_view v, int& out) {
        auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), out);
        return ec == std::errc() && p == v.data() + v.size();
    };
    std::tm tm{};
    int y = 0;
    auto m = months.find(mon);
    if (mon.size() != 3 || m == std::string_view::npos || m % 3 != 0) return std::nullopt;
    if (!num(day, tm.tm_mday) || !num(year, y) || !num(hh, tm.tm_hour) || !num(mm, tm.tm_min) || !num(ss, tm.tm_sec))
        return std::nullopt;
    if (year.size() == 2) y += y < 70 ? 2000 : 1900;  // RFC 850's two digits (RFC 9110 5.6.7: 50 years ahead)
    if (tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60 || y < 1900)
        return std::nullopt;
    tm.tm_mon = static_cast<int>(m / 3);
    tm.tm_year = y - 1900;
    return timegm(&tm);
}

bool if_none_match_holds(std::string_view if_none_match, std::string_view etag) {
    if (trim(if_none_match) == "*") return true;  // any current representation
    bool held = false;
    for_each_list_member(if_none_match,
                         [&](std::string_view tag) { held = held || opaque_tag(tag) == opaque_tag(etag); });
    return held;
}

file_answer answer_for(file_conditions const& c, std::uint64_t size, std::string_view etag, std::time_t mtime) {
    file_answer whole{200, 0, size};
    if (c.if_none_match) {
        if (if_none_match_holds(*c.if_none_match, etag)) return {304, 0, 0};
    } else if (c.if_modified_since) {
        auto since = parse_http_date(*c.if_modified_since);
        if (since && mtime <= *since) return {304, 0, 0};
    }
    if (!c.ranges_apply || !c.range) return whole;
    if (c.if_range) {
        // An entity tag must match strongly (a weak one never does); a date must be Last-Modified.
        auto v = trim(*c.if_range);
        bool holds = v.starts_with('"') ? v == etag : (!v.starts_with("W/") && parse_http_date(v) == mtime);
        if (!holds) return whole;  // the client's copy is stale: send it the whole new file
    }
    std::uint64_t first = 0, last = 0;
    switch (parse_range(*c.range, size, first, last)) {
        case range_parse::ignored: return whole;
        case range_parse::unsatisfiable: return {416, 0, 0};
        case range_parse::satisfiable: break;
    }
    return {206, first, last - first + 1};
}

}  // namespace wsig::detail
