// Writes to descriptors and files that a reader or an attacker cannot catch half done: a whole
// write through EINTR and short writes, and a file replaced atomically without following symlinks.
#pragma once

#include <wsig/error.hpp>

#include <sys/types.h>

#include <string>
#include <string_view>

namespace wsig::detail {

// Writes all of data to fd (retrying short writes and EINTR); false with errno set on failure.
bool write_all(int fd, std::string_view data);

// Replaces the file at `path` with `text` so that a reader sees the old content or the new one,
// never a part: writes a temporary file beside it (same directory, so the rename is atomic),
// fsyncs it and renames it over `path`. The temporary is created with O_CREAT | O_EXCL | O_NOFOLLOW
// | O_CLOEXEC under a random name, so a file or symlink planted at any name beforehand is never
// opened, followed or truncated; it gets `mode` less the umask (0600 stays 0600 under any umask that
// leaves the owner alone). A symlink at `path` itself is replaced, not followed. On any failure the
// temporary is removed and errc::io says which step failed and why (a directory at `path`, say).
result<void> write_file_atomically(std::string const& path, std::string_view text, mode_t mode);

}  // namespace wsig::detail
