// The event loop's own epoll set (event_loop.hpp): registration and the Asio wait that hands its
// edges to the watchers.
#include "net/event_loop.hpp"

#include <boost/asio/posix/stream_descriptor.hpp>

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

event_loop::owned_fd::~owned_fd() {
    if (fd >= 0) ::close(fd);
}

event_loop::event_loop() : ioc_(1), work_(ioc_.get_executor()) {
    epfd_.fd = ::epoll_create1(EPOLL_CLOEXEC);
    if (epfd_.fd < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
    wait_ = std::make_unique<watch_wait>(ioc_, epfd_.fd);
}

event_loop::~event_loop() {
    wait_.reset();
}

std::uint64_t event_loop::watch(int fd, std::weak_ptr<io_watch> w, boost::system::error_code& ec) {
    std::uint32_t index = 0;
    if (!free_slots_.empty()) {
        index = free_slots_.back();
        free_slots_.pop_back();
    } else {
        index = static_cast<std::uint32_t>(slots_.size());
        slots_.emplace_back();
    }
    auto& slot = slots_[index];
    slot.w = std::move(w);
    auto const key = (std::uint64_t{slot.gen} << 32) | index;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = key;
    if (::epoll_ctl(epfd_.fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        ec.assign(errno, boost::system::system_category());
        slot.w.reset();
        ++slot.gen;
        free_slots_.push_back(index);
        return 0;
    }
    ec = {};
    if (!watches_armed_) arm_watches();
    return key;
}

void event_loop::unwatch(int fd, std::uint64_t key) noexcept {
    auto const index = static_cast<std::uint32_t>(key & 0xFFFFFFFFu);
    if (index >= slots_.size() || slots_[index].gen != static_cast<std::uint32_t>(key >> 32)) return;
    // Explicit: a descriptor a child process inherited would otherwise stay in the set.
    epoll_event ev{};
    ::epoll_ctl(epfd_.fd, EPOLL_CTL_DEL, fd, &ev);
    slots_[index].w.reset();
    ++slots_[index].gen;  // edges already taken for the old key are dropped
    free_slots_.push_back(index);
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
// next batch) go to their watchers. A watcher's handler may close other sockets of the same
// batch: their slots then have a new generation, so their edges are dropped.
void event_loop::on_watches() {
    // NOLINTNEXTLINE(cppcoreguidelines-pro-type-member-init): epoll_wait fills it; zeroing 3 KiB a round costs
    std::array<epoll_event, 256> events;
    int const n = ::epoll_wait(epfd_.fd, events.data(), static_cast<int>(events.size()), 0);
    for (int i = 0; i < n; ++i) {
        auto const key = events[static_cast<std::size_t>(i)].data.u64;
        auto const index = static_cast<std::uint32_t>(key & 0xFFFFFFFFu);
        if (index >= slots_.size() || slots_[index].gen != static_cast<std::uint32_t>(key >> 32)) continue;
        // Held for the call: the watcher's handlers may end the session that owns it.
        if (auto w = slots_[index].w.lock()) w->on_io(events[static_cast<std::size_t>(i)].events);
    }
    arm_watches();  // fires again at once when edges are left
}

}  // namespace wsig::detail
