// Child processes that speak lines (signal routes, local routes, hooks, schedules): spawned with
// /bin/sh -c, stdin fed from a bounded queue, stdout read line by line, reaped without blocking.
#pragma once

#include <wsig/error.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/streambuf.hpp>

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace wsig::detail {

using environment = std::vector<std::pair<std::string, std::string>>;

enum class child_stdout {
    lines,      // read line by line into on_line
    whole,      // collected (bounded) and handed to on_exit
    to_stderr,  // the child's stdout goes where its stderr goes (hooks: their output is log material)
};

struct child_options {
    std::string command;   // run as /bin/sh -c COMMAND
    environment env = {};  // added to (or replacing in) our environment
    child_stdout output = child_stdout::lines;
    bool feed_stdin = true;  // a pipe to the child's stdin; otherwise /dev/null
    // Bytes queued for the child's stdin before further lines are dropped (and counted): a child
    // that stops reading must never grow the server's memory or block it.
    std::size_t max_stdin_queue = std::size_t{1024} * 1024;
    // Longest stdout line (or whole output) kept; longer lines are cut there and flagged (on_line's
    // `truncated`), a longer whole output is cut there.
    std::size_t max_line = std::size_t{1024} * 1024;
    // After terminate(): SIGTERM to the process group, then SIGKILL this much later.
    std::chrono::milliseconds kill_grace = std::chrono::milliseconds(2000);
};

struct child_callbacks {
    std::function<void(std::string line, bool truncated)> on_line = {};
    // Exit status as from waitpid (use WIFEXITED etc.); `output` is the whole stdout for child_stdout::whole.
    std::function<void(int status, std::string output)> on_exit = {};
    // When set, the child's stderr (and a to_stderr stdout) is read line by line into this, so the
    // server logs it (escaped, one record per line) instead of the child writing to our stderr.
    // Lines are cut at max_line; they may still arrive after on_exit (a grandchild holding stderr).
    std::function<void(std::string line)> on_stderr_line = {};
};

// One running child. Every member is called on `executor` (a strand for multi-threaded servers);
// callbacks run there too. Destroying the last reference does not stop the child: call terminate().
class child_process : public std::enable_shared_from_this<child_process> {
public:
    static result<std::shared_ptr<child_process>> start(boost::asio::any_io_executor const& executor,
                                                        child_options options, child_callbacks callbacks);

    // Queues `line` plus a newline for the child's stdin. False when it was dropped: the queue is
    // full, stdin is closed, or the child has exited.
    bool write_line(std::string_view line);
    // Closes the child's stdin once what is queued has been written.
    void close_stdin();
    // SIGTERM to the child's process group, SIGKILL after kill_grace if it is still there.
    void terminate();

    pid_t pid() const noexcept { return pid_; }
    std::uint64_t dropped_lines() const noexcept { return dropped_; }
    std::size_t queued_bytes() const noexcept { return queued_bytes_; }

    child_process(boost::asio::any_io_executor const& executor, child_options options, child_callbacks callbacks,
                  pid_t pid, int stdin_fd, int stdout_fd, int stderr_fd = -1);
    ~child_process();
    child_process(child_process const&) = delete;
    child_process& operator=(child_process const&) = delete;
    child_process(child_process&&) = delete;  // pinned: shared, its pending operations hold it
    child_process& operator=(child_process&&) = delete;

private:
    void do_read();
    void on_read(boost::system::error_code ec, std::size_t n);
    void do_write();
    void do_read_stderr();
    void poll_exit();
    void finish(int status);

    boost::asio::any_io_executor executor_;
    child_options options_;
    child_callbacks callbacks_;
    pid_t pid_;
    boost::asio::posix::stream_descriptor stdin_;
    boost::asio::posix::stream_descriptor stdout_;
    boost::asio::streambuf read_buffer_;
    boost::asio::posix::stream_descriptor stderr_;
    boost::asio::streambuf stderr_buffer_;
    std::string whole_;
    std::deque<std::string> queue_;
    std::size_t queued_bytes_ = 0;
    bool writing_ = false;
    bool stdin_closing_ = false;
    bool stdout_done_ = false;
    bool exited_ = false;
    int poll_round_ = 0;
    std::uint64_t dropped_ = 0;
    boost::asio::steady_timer reap_timer_;
    boost::asio::steady_timer kill_timer_;
};

// A one-line description of a waitpid status: "exited with 3", "killed by signal 9".
std::string describe_status(int status);

}  // namespace wsig::detail
