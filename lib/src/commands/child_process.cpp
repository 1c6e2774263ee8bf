// Spawning and supervising line-speaking child processes with posix_spawn and Asio descriptors.
#include "commands/child_process.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/write.hpp>

#include <fmt/format.h>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <map>
#include <mutex>
#include <string_view>

namespace wsig::detail {
namespace asio = boost::asio;

namespace {

struct fd_pair {
    int read = -1;
    int write = -1;
};

void close_fd(int& fd) {
    if (fd >= 0) ::close(fd);
    fd = -1;
}

// The secrets wsig itself reads from its environment (cli/): a command we start never sees them, so
// a hook that dumps its environment or a third-party handler cannot leak the signing secret, the API
// key or the PKCS#12 password. A handler that needs one reads it from the file it is kept in.
constexpr std::array<std::string_view, 3> secret_variables{"WSIG_SECRET", "WSIG_API_KEY", "WSIG_PFX_PASSWORD"};

// Our environment less the secrets, with `extra` added or replacing, as the "K=V" strings execve wants.
std::vector<std::string> merged_environment(environment const& extra) {
    std::map<std::string, std::string> vars;
    for (char** e = environ; e && *e; ++e) {
        std::string_view kv(*e);
        auto eq = kv.find('=');
        if (eq == std::string_view::npos) continue;
        auto name = kv.substr(0, eq);
        if (std::find(secret_variables.begin(), secret_variables.end(), name) != secret_variables.end()) continue;
        vars[std::string(name)] = std::string(kv.substr(eq + 1));
    }
    for (auto const& [k, v] : extra) vars[k] = v;
    std::vector<std::string> out;
    out.reserve(vars.size());
    for (auto const& [k, v] : vars) {
        std::string kv = k;
        kv += '=';
        kv += v;
        out.push_back(std::move(kv));
    }
    return out;
}

}  // namespace

std::string describe_status(int status) {
    if (WIFEXITED(status)) return fmt::format("exited with {}", WEXITSTATUS(status));
    if (WIFSIGNALED(status)) return fmt::format("killed by signal {}", WTERMSIG(status));
    return fmt::format("ended (status {})", status);
}

result<std::shared_ptr<child_process>> child_process::start(asio::any_io_executor const& executor,
                                                            child_options options, child_callbacks callbacks) {
    // A child that exits while we write to its stdin must give EPIPE, not kill the server.
    static std::once_flag ignore_sigpipe;
    std::call_once(ignore_sigpipe, [] { ::signal(SIGPIPE, SIG_IGN); });
    fd_pair in, out, err;
    auto fail = [&](std::string what) -> result<std::shared_ptr<child_process>> {
        int saved = errno;
        close_fd(in.read), close_fd(in.write), close_fd(out.read), close_fd(out.write);
        close_fd(err.read), close_fd(err.write);
        return make_error(errc::io,
                          fmt::format("cannot start '{}': {}: {}", options.command, what, std::strerror(saved)));
    };
    int fds[2];
    if (options.feed_stdin) {
        if (::pipe2(fds, O_CLOEXEC) != 0) return fail("pipe");
        in = {fds[0], fds[1]};
    }
    bool pipe_out = options.output != child_stdout::to_stderr;
    if (pipe_out) {
        if (::pipe2(fds, O_CLOEXEC) != 0) return fail("pipe");
        out = {fds[0], fds[1]};
    }
    if (callbacks.on_stderr_line) {
        if (::pipe2(fds, O_CLOEXEC) != 0) return fail("pipe");
        err = {fds[0], fds[1]};
    }

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    if (in.read >= 0)
        posix_spawn_file_actions_adddup2(&actions, in.read, STDIN_FILENO);
    else
        posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    if (err.write >= 0) posix_spawn_file_actions_adddup2(&actions, err.write, STDERR_FILENO);
    if (out.write >= 0)
        posix_spawn_file_actions_adddup2(&actions, out.write, STDOUT_FILENO);
    else
        posix_spawn_file_actions_adddup2(&actions, STDERR_FILENO, STDOUT_FILENO);  // the new stderr
    // The server's sockets must not live on in a child: a client's connection would outlast its close.
    posix_spawn_file_actions_addclosefrom_np(&actions, 3);

    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attr, &all);  // SIGPIPE is ignored here, not in the child
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setpgroup(&attr, 0);  // its own group: terminate() reaches everything sh started
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP);

    auto env = merged_environment(options.env);
    std::vector<char*> envp;
    envp.reserve(env.size() + 1);
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    std::string sh = "/bin/sh", dash_c = "-c";
    char* argv[] = {sh.data(), dash_c.data(), options.command.data(), nullptr};

    pid_t pid = -1;
    int rc = ::posix_spawn(&pid, "/bin/sh", &actions, &attr, argv, envp.data());
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        errno = rc;
        return fail("posix_spawn");
    }
    close_fd(in.read);
    close_fd(out.write);
    close_fd(err.write);
    if (in.write >= 0) ::fcntl(in.write, F_SETFL, ::fcntl(in.write, F_GETFL) | O_NONBLOCK);
    if (out.read >= 0) ::fcntl(out.read, F_SETFL, ::fcntl(out.read, F_GETFL) | O_NONBLOCK);
    if (err.read >= 0) ::fcntl(err.read, F_SETFL, ::fcntl(err.read, F_GETFL) | O_NONBLOCK);

    auto self = std::make_shared<child_process>(executor, std::move(options), std::move(callbacks), pid, in.write,
                                                out.read, err.read);
    if (self->stderr_.is_open()) self->do_read_stderr();
    if (self->stdout_.is_open())
        self->do_read();
    else
        self->poll_exit();
    return self;
}

child_process::child_process(asio::any_io_executor const& executor, child_options options, child_callbacks callbacks,
                             pid_t pid, int stdin_fd, int stdout_fd, int stderr_fd)
    : executor_(executor),
      options_(std::move(options)),
      callbacks_(std::move(callbacks)),
      pid_(pid),
      stdin_(executor),
      stdout_(executor),
      read_buffer_(options_.max_line + 1),
      stderr_(executor),
      stderr_buffer_(options_.max_line + 1),
      reap_timer_(executor),
      kill_timer_(executor) {
    if (stdin_fd >= 0) stdin_.assign(stdin_fd);
    if (stdout_fd >= 0) stdout_.assign(stdout_fd);
    if (stderr_fd >= 0) stderr_.assign(stderr_fd);
}

child_process::~child_process() {
    // Never leave a zombie: a child still running when its owner is gone is ended and reaped.
    if (!exited_ && pid_ > 0) {
        ::kill(-pid_, SIGKILL);
        int status = 0;
        ::waitpid(pid_, &status, 0);
    }
}

bool child_process::write_line(std::string_view line) {
    if (exited_ || stdin_closing_ || !stdin_.is_open() || queued_bytes_ + line.size() + 1 > options_.max_stdin_queue) {
        ++dropped_;
        return false;
    }
    std::string item;
    item.reserve(line.size() + 1);
    item.append(line).push_back('\n');
    queued_bytes_ += item.size();
    queue_.push_back(std::move(item));
    if (!writing_) do_write();
    return true;
}

void child_process::do_write() {
    if (queue_.empty() && stdin_closing_) {
        boost::system::error_code ignored;
        stdin_.close(ignored);
        return;
    }
    if (queue_.empty() || !stdin_.is_open()) return;
    writing_ = true;
    asio::async_write(stdin_, asio::buffer(queue_.front()),
                      [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                          self->writing_ = false;
                          self->queued_bytes_ -= self->queue_.front().size();
                          self->queue_.pop_front();
                          if (self->exited_) return;
                          if (ec) {  // the child closed its stdin or died: what is queued cannot go anywhere
                              self->dropped_ += self->queue_.size() + 1;
                              self->queue_.clear();
                              self->queued_bytes_ = 0;
                              boost::system::error_code ignored;
                              self->stdin_.close(ignored);
                              return;
                          }
                          self->do_write();
                      });
}

void child_process::close_stdin() {
    // What is queued still goes out; EOF follows it. Lines written after this are dropped.
    stdin_closing_ = true;
    if (!writing_) do_write();
}

void child_process::terminate() {
    if (exited_) return;
    ::kill(-pid_, SIGTERM);
    kill_timer_.expires_after(options_.kill_grace);
    kill_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
        if (!ec && !self->exited_) ::kill(-self->pid_, SIGKILL);
    });
    if (stdout_done_ || !stdout_.is_open()) poll_exit();
}

void child_process::do_read() {
    asio::async_read_until(
        stdout_, read_buffer_, '\n',
        [self = shared_from_this()](boost::system::error_code ec, std::size_t n) { self->on_read(ec, n); });
}

void child_process::on_read(boost::system::error_code ec, std::size_t n) {
    auto take = [&](std::size_t count) {
        std::string chunk(asio::buffers_begin(read_buffer_.data()),
                          asio::buffers_begin(read_buffer_.data()) + static_cast<std::ptrdiff_t>(count));
        read_buffer_.consume(count);
        return chunk;
    };
    auto deliver = [&](std::string line, bool truncated) {
        if (options_.output == child_stdout::whole) {
            // bounded: what passes max_line is dropped, unflagged (a schedule sends the first max_line bytes)
            whole_.append(line, 0, options_.max_line - std::min(whole_.size(), options_.max_line));
            return;
        }
        if (!line.empty() && line.back() == '\n') line.pop_back();
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (callbacks_.on_line) callbacks_.on_line(std::move(line), truncated);
    };
    if (!ec) {
        deliver(take(n), false);
        return do_read();
    }
    if (ec == asio::error::not_found) {  // a line longer than max_line: cut it there
        deliver(take(read_buffer_.size()), true);
        return do_read();
    }
    if (read_buffer_.size() > 0) deliver(take(read_buffer_.size()), false);  // a last line without newline
    stdout_done_ = true;
    boost::system::error_code ignored;
    stdout_.close(ignored);
    poll_exit();
}

void child_process::do_read_stderr() {
    asio::async_read_until(
        stderr_, stderr_buffer_, '\n', [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
            auto& buf = self->stderr_buffer_;
            // A line, a line longer than max_line (cut there), or the last bytes before the end.
            std::size_t take = !ec ? n : buf.size();
            if (take > 0) {
                std::string line(asio::buffers_begin(buf.data()),
                                 asio::buffers_begin(buf.data()) + static_cast<std::ptrdiff_t>(take));
                buf.consume(take);
                if (!line.empty() && line.back() == '\n') line.pop_back();
                if (!line.empty() && line.back() == '\r') line.pop_back();
                self->callbacks_.on_stderr_line(std::move(line));
            }
            if (!ec || ec == asio::error::not_found) return self->do_read_stderr();
            boost::system::error_code ignored;
            self->stderr_.close(ignored);
        });
}

void child_process::poll_exit() {
    if (exited_) return;
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_ || (r < 0 && errno == ECHILD)) return finish(status);
    // Stdout is closed but the process lives on (or has no stdout pipe): look again, less often.
    auto delay = std::chrono::milliseconds(std::min(5 << std::min(poll_round_++, 6), 200));
    reap_timer_.expires_after(delay);
    reap_timer_.async_wait([self = shared_from_this()](boost::system::error_code ec) {
        if (!ec) self->poll_exit();
    });
}

void child_process::finish(int status) {
    auto keep = shared_from_this();  // on_exit may drop its owner's last reference to us
    exited_ = true;
    kill_timer_.cancel();
    boost::system::error_code ignored;
    stdin_.close(ignored);
    // The line being written stays alive until its handler runs; the rest is dropped.
    while (queue_.size() > (writing_ ? 1u : 0u)) {
        queued_bytes_ -= queue_.back().size();
        queue_.pop_back();
    }
    if (callbacks_.on_exit) {
        auto output = std::move(whole_);
        callbacks_.on_exit(status, std::move(output));
    }
}

}  // namespace wsig::detail
