// Private to the server: one event loop per server thread, with a flush step after each round of
// ready handlers. A send only queues the frame and marks its session dirty; every dirty session is
// flushed once per round, so all the broadcasts that arrived in one round leave in one gathered
// write per socket (doc/design/write-path.md, design c).
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <memory>
#include <utility>
#include <vector>

namespace wsig::detail {

// A session whose queued frames the loop writes out at the end of the round.
class flushable {
public:
    virtual ~flushable() = default;
    virtual void flush_now() = 0;
};

// A descriptor in the loop's own epoll set: told the epoll events of each edge, on the loop's thread.
class io_watch {
public:
    virtual ~io_watch() = default;
    virtual void on_io(std::uint32_t events) = 0;
};

class event_loop {
public:
    using executor_type = boost::asio::io_context::executor_type;

    event_loop();
    ~event_loop();
    event_loop(event_loop const&) = delete;
    event_loop& operator=(event_loop const&) = delete;
    event_loop(event_loop&&) = delete;  // pinned: sockets and current_ point at it
    event_loop& operator=(event_loop&&) = delete;

    // Only on this loop's thread. Adds `fd` to the loop's epoll set (edge-triggered, in and out);
    // `w` hears its events until unwatch() or until it is gone. Returns the key to unwatch it with.
    std::uint64_t watch(int fd, std::weak_ptr<io_watch> w, boost::system::error_code& ec);
    // Only on this loop's thread. Removes `fd` (still open) from the set; events already taken
    // for it are not delivered.
    void unwatch(int fd, std::uint64_t key) noexcept;

    boost::asio::io_context& context() noexcept { return ioc_; }
    executor_type get_executor() noexcept { return ioc_.get_executor(); }

    // The loop running on this thread, or null.
    static event_loop* current() noexcept { return current_; }
    bool running_here() const noexcept { return current_ == this; }

    // Only on this loop's thread: `s` is flushed at the end of the current round.
    void mark_dirty(std::shared_ptr<flushable> s) { dirty_.push_back(std::move(s)); }

    // Runs until stop(). A round is one handler (waiting for it if none is ready), then up to
    // `round_limit` more that are ready without waiting, then the flush of every dirty session.
    // Beast completes a read whose data is already buffered through a posted handler, so the
    // messages that arrived together are read in one round.
    void run() {
        current_ = this;
        constexpr int round_limit = 64;
        while (ioc_.run_one() > 0) {
            for (int i = 0; i < round_limit && ioc_.poll_one() > 0; ++i) {
            }
            flush_dirty();
        }
        flush_dirty();
        current_ = nullptr;
    }

    // From any thread: run() returns after the handler it is running.
    void stop() {
        work_.reset();
        ioc_.stop();
    }

private:
    struct watch_slot {
        std::weak_ptr<io_watch> w;  // weak: a watcher may die on another thread (see epoll_socket)
        std::uint32_t gen = 0;
    };
    class watch_wait;  // the Asio wait on the epoll set (event_loop.cpp)

    void arm_watches();
    void on_watches();

    void flush_dirty() {
        while (!dirty_.empty()) {
            flushing_.swap(dirty_);
            for (auto& s : flushing_) s->flush_now();
            flushing_.clear();
        }
    }

    // Declared before ioc_, so destroyed after it: the handlers ioc_ destroys may still close
    // sockets in the set.
    struct owned_fd {
        int fd = -1;
        owned_fd() = default;
        owned_fd(owned_fd const&) = delete;
        owned_fd& operator=(owned_fd const&) = delete;
        owned_fd(owned_fd&&) = delete;
        owned_fd& operator=(owned_fd&&) = delete;
        ~owned_fd();
    };
    owned_fd epfd_;
    std::vector<watch_slot> slots_;
    std::vector<std::uint32_t> free_slots_;
    bool watches_armed_ = false;

    boost::asio::io_context ioc_;
    boost::asio::executor_work_guard<executor_type> work_;
    std::unique_ptr<watch_wait> wait_;
    std::vector<std::shared_ptr<flushable>> dirty_;
    std::vector<std::shared_ptr<flushable>> flushing_;
    // NOLINTNEXTLINE(cppcoreguidelines-avoid-non-const-global-variables): private, per thread, set only by run()
    static inline thread_local event_loop* current_ = nullptr;
};

}  // namespace wsig::detail
