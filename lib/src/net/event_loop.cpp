// The event loop's own epoll set (event_loop.hpp): registration and the Asio wait that hands its
// edges to the watchers.
#include "net/event_loop.hpp"

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <array>
#include <cerrno>
#include <system_error>

#include <sys/epoll.h>
#include <unistd.h>

namespace wsig::detail {

namespace net = boost::asio;

class event_loop::watch_wait {
public:
    watch_wait(net::io_context& ioc, int fd) : desc(ioc, fd) {}
    watch_wait(watch_wait const&) = delete;
    watch_wait& operator=(watch_wait const&) = delete;
    watch_wait(watch_wait&&) = delete;
    watch_wait& operator=(watch_wait&&) = delete;
    ~watch_wait() { desc.release(); }  // the loop closes the epoll descriptor, after the io_context is gone
    net::posix::stream_descriptor desc;
};

class event_loop::sweep_timer {
public:
    explicit sweep_timer(net::io_context& ioc) : timer(ioc) {}
    net::steady_timer timer;
};

event_loop::owned_fd::~owned_fd() {
    if (fd >= 0) ::close(fd);
}

event_loop::event_loop() : ioc_(1), work_(ioc_.get_executor()) {
    epfd_.fd = ::epoll_create1(EPOLL_CLOEXEC);
    if (epfd_.fd < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
    wait_ = std::make_unique<watch_wait>(ioc_, epfd_.fd);
    sweep_ = std::make_unique<sweep_timer>(ioc_);
}

event_loop::~event_loop() {
    drop_members();
    sweep_.reset();
    wait_.reset();
}

void event_loop::drop_members() noexcept {
    auto members = std::move(members_);
    members_.clear();
    left_.clear();
    members.clear();
}

void event_loop::join(std::shared_ptr<loop_member> m) {
    m->member_index_ = static_cast<std::uint32_t>(members_.size());
    members_.push_back(std::move(m));
    if (!sweep_armed_) arm_sweep();
}

void event_loop::leave(loop_member& m) {
    auto const i = m.member_index_;
    if (i >= members_.size() || members_[i].get() != &m) return;  // not a member (any more)
    left_.push_back(std::move(members_[i]));
    if (i + 1 != members_.size()) {
        members_[i] = std::move(members_.back());
        members_[i]->member_index_ = i;
    }
    members_.pop_back();
}

// One timer for every member of the loop: each sweep tells them the time. Backwards, so that a
// member leaving during its sweep (the last one takes its place) skips no one.
void event_loop::arm_sweep() {
    sweep_armed_ = true;
    sweep_->timer.expires_after(sweep_period_);
    sweep_->timer.async_wait([this](boost::system::error_code ec) {
        sweep_armed_ = false;
        if (ec) return;
        auto const now = std::chrono::steady_clock::now();
        for (auto i = members_.size(); i-- > 0;) {
            if (i < members_.size()) members_[i]->on_sweep(now);
        }
        if (!members_.empty()) arm_sweep();
    });
}

void event_loop::watch(int fd, loop_member* w, boost::system::error_code& ec) {
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = w;
    if (::epoll_ctl(epfd_.fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        ec.assign(errno, boost::system::system_category());
        return;
    }
    ec = {};
    if (!watches_armed_) arm_watches();
}

// NOLINTNEXTLINE(readability-make-member-function-const): it changes the loop's epoll set
void event_loop::unwatch(int fd) noexcept {
    // Explicit: a descriptor a child process inherited would otherwise stay in the set.
    epoll_event ev{};
    ::epoll_ctl(epfd_.fd, EPOLL_CTL_DEL, fd, &ev);
}

void event_loop::arm_watches() {
    watches_armed_ = true;
    wait_->desc.async_wait(net::posix::descriptor_base::wait_read, [this](boost::system::error_code ec) {
        watches_armed_ = false;
        if (ec) return;  // the loop is going away
        on_watches();
    });
}

// The edges since the last wait (at most 256: other handlers and the round's flush run before the
// next batch) go to their watchers. A watcher's handler may end other watchers of the same batch:
// they are unwatched but alive until the round ends (leave), and ignore the edges left for them.
void event_loop::on_watches() {
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): epoll_wait fills it; zeroing 3 KiB a round costs
    std::array<epoll_event, 256> events;
    int const n = ::epoll_wait(epfd_.fd, events.data(), static_cast<int>(events.size()), 0);
    for (int i = 0; i < n; ++i) {
        auto const& e = events[static_cast<std::size_t>(i)];
        static_cast<loop_member*>(e.data.ptr)->on_io(e.events);
    }
    arm_watches();  // fires again at once when edges are left
}

}  // namespace wsig::detail
