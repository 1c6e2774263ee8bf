// Safe resolution of static files: percent-decoding, no escape from the root, content types.
#include "static_files.hpp"

#include <array>
#include <utility>

namespace wsig::detail {
namespace fs = std::filesystem;

namespace {

int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Percent-decodes a path; nullopt when it holds a NUL, an encoded '/' or '\', or a bad escape.
std::optional<std::string> decode_path(std::string_view p) {
    std::string out;
    for (std::size_t i = 0; i < p.size(); ++i) {
        char c = p[i];
        if (c == '%') {
            if (i + 2 >= p.size()) return std::nullopt;
            int h = hex(p[i + 1]), l = hex(p[i + 2]);
            if (h < 0 || l < 0) return std::nullopt;
            c = static_cast<char>(h * 16 + l);
            if (c == '/' || c == '\\' || c == '\0') return std::nullopt;
            i += 2;
        } else if (c == '\0') {
            return std::nullopt;
        }
        out.push_back(c);
    }
    return out;
}

bool inside(fs::path const& root, fs::path const& p) {
    auto r = root.begin(), q = p.begin();
    for (; r != root.end(); ++r, ++q)
        if (q == p.end() || *r != *q) return false;
    return true;
}

}  // namespace

std::string_view content_type_for(fs::path const& file) {
    static constexpr std::array<std::pair<std::string_view, std::string_view>, 22> types{{
        {".html", "text/html; charset=utf-8"},   {".htm", "text/html; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},     {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"}, {".json", "application/json"},
        {".txt", "text/plain; charset=utf-8"},   {".md", "text/markdown; charset=utf-8"},
        {".svg", "image/svg+xml"},               {".png", "image/png"},
        {".jpg", "image/jpeg"},                  {".jpeg", "image/jpeg"},
        {".gif", "image/gif"},                   {".webp", "image/webp"},
        {".ico", "image/x-icon"},                {".wasm", "application/wasm"},
        {".woff", "font/woff"},                  {".woff2", "font/woff2"},
        {".xml", "application/xml"},             {".pdf", "application/pdf"},
        {".csv", "text/csv; charset=utf-8"},     {".map", "application/json"},
    }};
    auto ext = file.extension().string();
    for (auto& c : ext) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c);
    for (auto const& [e, t] : types)
        if (e == ext) return t;
    return "application/octet-stream";
}

static_file resolve_static(fs::path const& root, std::string_view target) {
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
        relative /= std::string(seg);
    }

    std::error_code ec;
    auto candidate = fs::weakly_canonical(root / relative, ec);  // follows symlinks
    if (ec || !inside(root, candidate)) return not_found;
    if (fs::is_directory(candidate, ec)) candidate /= "index.html";
    auto real = fs::canonical(candidate, ec);
    if (ec || !inside(root, real) || !fs::is_regular_file(real, ec)) return not_found;
    return {200, real, std::string(content_type_for(real))};
}

}  // namespace wsig::detail
