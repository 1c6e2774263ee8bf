// Whole writes and atomic file replacement (file_io.hpp).
#include "util/file_io.hpp"

#include <fmt/format.h>
#include <openssl/rand.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace wsig::detail {

bool write_all(int fd, std::string_view data) {
    while (!data.empty()) {
        ssize_t const n = ::write(fd, data.data(), data.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
}

namespace {

// "PATH.tmp-" and 16 random hex digits: no other process can guess it in advance (O_EXCL would
// refuse a planted one anyway; the randomness keeps a planted name from blocking the write).
result<std::string> temporary_name(std::string const& path) {
    unsigned char raw[8];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return make_error(errc::io, "the system's random generator failed (no temporary file name)");
    std::string name = path + ".tmp-";
    for (unsigned char b : raw) name += fmt::format("{:02x}", b);
    return name;
}

}  // namespace

result<void> write_file_atomically(std::string const& path, std::string_view text, mode_t mode) {
    auto const failed = [&](std::string const& what, int err) {
        return make_error(errc::io, fmt::format("cannot write '{}': {}: {}", path, what, std::strerror(err)));
    };
    // A collision with an existing name (ours from an earlier crash, or planted) just draws again.
    constexpr int attempts = 8;
    std::string tmp;
    int fd = -1;
    for (int i = 0; i < attempts && fd < 0; ++i) {
        auto name = temporary_name(path);
        if (!name) return name.error();
        tmp = std::move(*name);
        fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
        if (fd < 0 && errno != EEXIST) return failed(fmt::format("cannot create '{}'", tmp), errno);
    }
    if (fd < 0) return failed(fmt::format("cannot create a temporary file beside it ('{}')", tmp), EEXIST);
    auto const abandon = [&](std::string const& what) {
        int const err = errno;
        if (fd >= 0) ::close(fd);
        ::unlink(tmp.c_str());
        return failed(what, err);
    };
    if (!write_all(fd, text)) return abandon(fmt::format("write to '{}'", tmp));
    if (::fsync(fd) != 0) return abandon(fmt::format("fsync of '{}'", tmp));
    int const closed = ::close(fd);
    fd = -1;
    if (closed != 0) return abandon(fmt::format("close of '{}'", tmp));
    // rename(2) replaces a symlink at path itself and refuses a directory (EISDIR).
    if (std::rename(tmp.c_str(), path.c_str()) != 0) return abandon(fmt::format("rename of '{}' over it", tmp));
    return {};
}

}  // namespace wsig::detail
