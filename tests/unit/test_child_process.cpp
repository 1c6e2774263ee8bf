// Child processes: lines both ways, whole output, environment, bounded stdin, termination, no fd leaks.
#include "catch.hpp"

#include "commands/child_process.hpp"

#include <boost/asio/io_context.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>

namespace {

using wsig::detail::child_options;
using wsig::detail::child_process;
using wsig::detail::child_stdout;

struct outcome {
    std::vector<std::string> lines;
    bool exited = false;
    int status = -1;
    std::string output;
};

std::shared_ptr<child_process> start(boost::asio::io_context& io, child_options opts, outcome& out) {
    auto child = child_process::start(io.get_executor(), std::move(opts),
                                      {.on_line = [&](std::string line, bool) { out.lines.push_back(std::move(line)); },
                                       .on_exit =
                                           [&](int status, std::string output) {
                                               out.exited = true;
                                               out.status = status;
                                               out.output = std::move(output);
                                           }});
    REQUIRE(child.has_value());
    return *child;
}

// Runs the loop until the child has exited, with a deadline so a broken test fails instead of hanging.
void run_until_exit(boost::asio::io_context& io, outcome const& out) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!out.exited && std::chrono::steady_clock::now() < deadline) io.run_one_for(std::chrono::milliseconds(100));
    REQUIRE(out.exited);
}

}  // namespace

TEST_CASE("child process: lines written to stdin come back from cat in order, and it exits 0 on EOF") {
    boost::asio::io_context io;
    outcome out;
    auto child = start(io, {.command = "cat"}, out);
    for (auto line : {"one", "two", "three with spaces"}) CHECK(child->write_line(line));
    child->close_stdin();
    run_until_exit(io, out);
    CHECK(out.lines == std::vector<std::string>{"one", "two", "three with spaces"});
    CHECK(WIFEXITED(out.status));
    CHECK(WEXITSTATUS(out.status) == 0);
    CHECK_FALSE(child->write_line("late"));  // the child is gone: dropped, not queued
}

TEST_CASE("child process: whole output and the exit code are handed over at exit") {
    boost::asio::io_context io;
    outcome out;
    start(io, {.command = "printf 'a\\nb\\n'; exit 3", .output = child_stdout::whole, .feed_stdin = false}, out);
    run_until_exit(io, out);
    CHECK(out.output == "a\nb\n");
    CHECK(wsig::detail::describe_status(out.status) == "exited with 3");
    CHECK(out.lines.empty());
}

TEST_CASE("child process: extra environment variables reach the command") {
    boost::asio::io_context io;
    outcome out;
    start(io, {.command = "echo \"$WSIG_NAME/$WSIG_GROUP\"", .env = {{"WSIG_NAME", "Msg"}, {"WSIG_GROUP", "g 1"}}},
          out);
    run_until_exit(io, out);
    CHECK(out.lines == std::vector<std::string>{"Msg/g 1"});
}

TEST_CASE("child process: a child that never reads cannot grow the queue past its bound") {
    boost::asio::io_context io;
    outcome out;
    auto child = start(io, {.command = "exec sleep 30", .max_stdin_queue = 4096}, out);
    std::string line(100, 'x');
    int accepted = 0;
    for (int i = 0; i < 10000; ++i) accepted += child->write_line(line) ? 1 : 0;
    for (int i = 0; i < 50; ++i) io.poll();
    CHECK(child->queued_bytes() <= 4096);
    CHECK(child->dropped_lines() > 0);
    CHECK(accepted < 10000);
    child->terminate();
    run_until_exit(io, out);
    CHECK(wsig::detail::describe_status(out.status) == "killed by signal 15");
}

TEST_CASE("child process: terminate ends a child that ignores SIGTERM with SIGKILL after the grace period") {
    boost::asio::io_context io;
    outcome out;
    auto child = start(io,
                       {.command = "trap '' TERM; echo ready; while :; do sleep 1; done",
                        .kill_grace = std::chrono::milliseconds(200)},
                       out);
    while (out.lines.empty()) io.run_one_for(std::chrono::milliseconds(100));
    child->terminate();
    run_until_exit(io, out);
    CHECK(WIFSIGNALED(out.status));
    CHECK(WTERMSIG(out.status) == SIGKILL);
}

TEST_CASE("child process: our file descriptors beyond stdio are not inherited") {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);  // deliberately without O_CLOEXEC, as a socket of the server might be
    boost::asio::io_context io;
    outcome out;
    start(io, {.command = "ls /proc/self/fd", .feed_stdin = false}, out);
    run_until_exit(io, out);
    ::close(fds[0]);
    ::close(fds[1]);
    // ls itself opens one descriptor to read the directory; nothing else beyond 0, 1, 2.
    CHECK(out.lines.size() <= 4);
    for (auto const& l : out.lines) CHECK((l == "0" || l == "1" || l == "2" || l == "3"));
}

TEST_CASE("child process: an overlong line is cut at max_line") {
    boost::asio::io_context io;
    outcome out;
    std::vector<bool> truncated;
    auto child = child_process::start(
        io.get_executor(),
        {.command = "head -c 300 /dev/zero | tr '\\0' y; echo; echo short", .feed_stdin = false, .max_line = 100},
        {.on_line =
             [&](std::string line, bool cut) {
                 out.lines.push_back(std::move(line));
                 truncated.push_back(cut);
             },
         .on_exit =
             [&](int status, std::string) {
                 out.exited = true;
                 out.status = status;
             }});
    REQUIRE(child.has_value());
    run_until_exit(io, out);
    REQUIRE(out.lines.size() >= 2);
    CHECK(out.lines.front().size() <= 101);
    CHECK(truncated.front());
    CHECK(out.lines.back() == "short");
}

TEST_CASE("child process: with on_stderr_line, stderr (and a to_stderr stdout) arrives as lines, not on ours") {
    boost::asio::io_context io;
    bool exited = false;
    std::vector<std::string> lines;
    auto child = child_process::start(io.get_executor(),
                                      {.command = "printf 'one\\r\\n' >&2; echo two; printf 'three' >&2",
                                       .output = child_stdout::to_stderr,
                                       .feed_stdin = false},
                                      {.on_exit = [&](int, std::string) { exited = true; },
                                       .on_stderr_line = [&](std::string line) { lines.push_back(std::move(line)); }});
    REQUIRE(child.has_value());
    // Lines may follow the exit: wait for both.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while ((!exited || lines.size() < 3) && std::chrono::steady_clock::now() < deadline)
        io.run_one_for(std::chrono::milliseconds(100));
    CHECK(exited);
    CHECK(lines == std::vector<std::string>{"one", "two", "three"});
}
