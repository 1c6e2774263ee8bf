// Static files for `wsig serve --static DIR`: URL path -> file inside DIR, never outside it.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

namespace wsig::detail {

struct static_file {
    int status = 200;               // 200, or 403/404 (the body then is a short reason)
    std::filesystem::path path = {};
    std::string content_type = {};
};

// Maps a request target (path and query, percent-encoded) to a file in `root` (canonical). "/" and
// directories serve their index.html. A path that leaves root, by "..", an encoded slash or a
// symlink pointing outside, is refused with 404 (nothing about the outside is revealed).
static_file resolve_static(std::filesystem::path const& root, std::string_view target);

// The Content-Type for a file name, by extension; application/octet-stream when unknown.
std::string_view content_type_for(std::filesystem::path const& file);

}  // namespace wsig::detail
