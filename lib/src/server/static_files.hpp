// Static files for `wsig serve --static DIR`: URL path -> file inside DIR, never outside it; the file
// opened for streaming; validators (ETag, Last-Modified), conditional requests and byte ranges.
#pragma once

#include <cstdint>
#include <ctime>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace wsig::detail {

struct static_file {
    int status = 200;  // 200, or 403/404 (the body then is a short reason)
    std::filesystem::path path = {};
    std::string content_type = {};
};

// Maps a request target (path and query, percent-encoded) to a file in `root` (canonical). "/" and
// directories serve their index.html. A path that leaves root, by "..", an encoded slash or a
// symlink pointing outside, is refused with 404 (nothing about the outside is revealed). So is a
// dotfile or anything under a dot-directory (`/.env`, `/.git/config`, also reached through a symlink)
// unless `serve_dotfiles`: those hold credentials and history far more often than web content.
static_file resolve_static(std::filesystem::path const& root, std::string_view target, bool serve_dotfiles = false);

// The Content-Type for a file name, by extension; application/octet-stream when unknown.
std::string_view content_type_for(std::filesystem::path const& file);

// A file descriptor closed by its destructor.
class unique_fd {
public:
    unique_fd() = default;
    explicit unique_fd(int fd) noexcept : fd_(fd) {}
    unique_fd(unique_fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
    unique_fd& operator=(unique_fd&& o) noexcept;
    unique_fd(unique_fd const&) = delete;
    unique_fd& operator=(unique_fd const&) = delete;
    ~unique_fd();
    int get() const noexcept { return fd_; }

private:
    int fd_ = -1;
};

// The bytes of an open file a response sends: `length` bytes from `offset`.
struct file_part {
    unique_fd fd;
    std::uint64_t offset = 0;
    std::uint64_t length = 0;
};

// A regular file open for reading, with what its validators are made of.
struct open_file {
    unique_fd fd;
    std::uint64_t size = 0;
    std::int64_t mtime_ns = 0;  // modification time, ns since the epoch
};

// Opens a path from resolve_static for reading; nullopt unless it is a regular file. The last
// component is not followed should it have become a symlink since resolve_static, and a FIFO put
// there does not block the open (O_NONBLOCK; fstat then refuses it).
std::optional<open_file> open_regular_file(std::filesystem::path const& path);

// A strong entity tag made of the size and the modification time (ns), quoted: "<size>-<mtime>"
// in hex, as nginx and Apache do. Strong, so that If-Range can use it (RFC 9110 13.1.5).
std::string entity_tag(std::uint64_t size, std::int64_t mtime_ns);

// An HTTP-date in the IMF-fixdate form: "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 9110 5.6.7).
std::string http_date(std::time_t t);

// An HTTP-date in any of its three forms (IMF-fixdate, RFC 850, asctime); nullopt when invalid.
std::optional<std::time_t> parse_http_date(std::string_view text);

// True when an If-None-Match value (a list of entity tags, or "*") holds `etag` by the weak
// comparison (RFC 9110 13.1.2: W/ prefixes do not matter).
bool if_none_match_holds(std::string_view if_none_match, std::string_view etag);

// The request headers that decide what of a file is sent; nullopt where the header is absent.
struct file_conditions {
    bool ranges_apply = true;  // GET: true; HEAD: false (RFC 9110 14.2 defines Range for GET only)
    std::optional<std::string_view> if_none_match = {};
    std::optional<std::string_view> if_modified_since = {};
    std::optional<std::string_view> range = {};
    std::optional<std::string_view> if_range = {};
};

// What to answer a GET or HEAD of a file: 200 (the whole file), 206 (bytes first..first+length-1),
// 304 (not modified, no body) or 416 (the range is past the end).
struct file_answer {
    int status = 200;
    std::uint64_t first = 0;
    std::uint64_t length = 0;
};

// RFC 9110 13.2.2's order: If-None-Match (then If-Modified-Since is ignored), else If-Modified-Since;
// then Range, honoured when If-Range is absent or names the current ETag or Last-Modified.
// A malformed Range is ignored (200), and so are several ranges (200 with the whole file, which
// RFC 9110 14.2 allows: multipart/byteranges is not worth its code for a signal server's files).
file_answer answer_for(file_conditions const& c, std::uint64_t size, std::string_view etag, std::time_t mtime);

}  // namespace wsig::detail
