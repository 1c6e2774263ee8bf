// Private to the server: one event loop per server thread, with a flush step after each round of
// ready handlers. A send only queues the frame and marks its session dirty; every dirty session is
// flushed once per round, so all the broadcasts that arrived in one round leave in one gathered
// write per socket (doc/design/write-path.md, design c).
#pragma once

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <chrono>
#include <cstdint>

#include <memory>
#include <utility>
#include <vector>

namespace wsig::detail {

// What a loop holds: a WebSocket session. The loop owns it (a strong reference) from join()
// until leave(); it hears the epoll edges of the descriptor it watches, writes at the end of a
// round it was marked dirty in, and once a second or so (the sweep) is told the time, for its
// deadlines (the 101, pings, the close handshake, the drain), so no connection has a timer.
class loop_member {
public:
    virtual ~loop_member() = default;
    virtual void on_io(std::uint32_t events) = 0;  // an edge (epoll events) of its watched descriptor
    virtual void flush_now() = 0;                  // the end of a round it was marked dirty in
    virtual void on_sweep(std::chrono::steady_clock::time_point now) = 0;

private:
    friend class event_loop;
    std::uint32_t member_index_ = 0;  // where the loop's table holds it
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
    // `w` hears its events until unwatch(). `w` must stay alive until then, and until the end of
    // the round it is unwatched in: a loop member does (leave() keeps it until the round's end).
    void watch(int fd, loop_member* w, boost::system::error_code& ec);
    // Only on this loop's thread. Removes `fd` (still open) from the set.
    void unwatch(int fd) noexcept;

    // Only on this loop's thread: `m` is held and swept until leave(m), which lets it go at the
    // end of the round (an edge already taken for it may still be delivered in this round).
    void join(std::shared_ptr<loop_member> m);
    void leave(loop_member& m);
    // How often members are swept (at most once a second; the server makes it finer for short
    // ping intervals). Any thread, before run().
    void set_sweep_period(std::chrono::milliseconds p) noexcept { sweep_period_ = p; }

    // The loop's read buffer: a socket read on this loop's thread lands here and is parsed before
    // the next read, so 10,000 connections hold no read buffer between messages.
    static constexpr std::size_t scratch_size = std::size_t{64} * 1024;
    char* scratch() noexcept { return scratch_.get(); }

    boost::asio::io_context& context() noexcept { return ioc_; }
    executor_type get_executor() noexcept { return ioc_.get_executor(); }

    // The loop running on this thread, or null.
    static event_loop* current() noexcept { return current_; }
    bool running_here() const noexcept { return current_ == this; }

    // Only on this loop's thread: `s` is flushed at the end of the current round. `s` is a member
    // of this loop (alive until the end of the round it leaves in), so no reference is taken.
    void mark_dirty(loop_member* s) { dirty_.push_back(s); }

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
            left_.clear();
        }
        flush_dirty();
        left_.clear();
        current_ = nullptr;
    }

    // From any thread: run() returns after the handler it is running.
    void stop() {
        work_.reset();
        ioc_.stop();
    }

    // After run() returned, on the thread that ran it: lets every member go (their destructors
    // may need the server's state, which outlives the loop).
    void drop_members() noexcept;

private:
    class watch_wait;   // the Asio wait on the epoll set (event_loop.cpp)
    class sweep_timer;  // the one timer of the loop's members

    void arm_watches();
    void on_watches();
    void arm_sweep();

    void flush_dirty() {
        while (!dirty_.empty()) {
            flushing_.swap(dirty_);
            for (auto* s : flushing_) s->flush_now();
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
    bool watches_armed_ = false;
    bool sweep_armed_ = false;
    std::chrono::milliseconds sweep_period_{1000};
    std::unique_ptr<char[]> scratch_ = std::make_unique<char[]>(scratch_size);
    std::vector<std::shared_ptr<loop_member>> members_;
    std::vector<std::shared_ptr<loop_member>> left_;  // let go at the end of the round

    boost::asio::io_context ioc_;
    boost::asio::executor_work_guard<executor_type> work_;
    std::unique_ptr<watch_wait> wait_;
    std::unique_ptr<sweep_timer> sweep_;
    std::vector<loop_member*> dirty_;
    std::vector<loop_member*> flushing_;
    // NOLINTNEXTLINE(cppcoreguidelines-avoid-non-const-global-variables): private, per thread, set only by run()
    static inline thread_local event_loop* current_ = nullptr;
};

}  // namespace wsig::detail
