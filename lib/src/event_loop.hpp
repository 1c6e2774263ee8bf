// Private to the server: one event loop per server thread, with a flush step after each round of
// ready handlers. A send only queues the frame and marks its session dirty; every dirty session is
// flushed once per round, so all the broadcasts that arrived in one round leave in one gathered
// write per socket (shared/notes/write-path.md, design c).
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

class event_loop {
public:
    using executor_type = boost::asio::io_context::executor_type;

    event_loop() : ioc_(1), work_(ioc_.get_executor()) {}
    event_loop(event_loop const&) = delete;
    event_loop& operator=(event_loop const&) = delete;

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
    void flush_dirty() {
        while (!dirty_.empty()) {
            flushing_.swap(dirty_);
            for (auto& s : flushing_) s->flush_now();
            flushing_.clear();
        }
    }

    boost::asio::io_context ioc_;
    boost::asio::executor_work_guard<executor_type> work_;
    std::vector<std::shared_ptr<flushable>> dirty_;
    std::vector<std::shared_ptr<flushable>> flushing_;
    static inline thread_local event_loop* current_ = nullptr;
};

}  // namespace wsig::detail
