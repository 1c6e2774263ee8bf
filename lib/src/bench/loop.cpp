// One event loop of `wsig bench`: non-blocking sockets on epoll, the HTTP upgrade, RFC 6455 client
// framing (masked frames written through wire/frame.hpp, the server's frames read by
// wire/frame_reader: fragments, ping -> pong, close), and what each mode does with a message.
#include "bench/engine.hpp"

#include <fmt/format.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>

namespace wsig::bench::detail {
namespace {

constexpr std::uint32_t max_handshakes_in_flight = 256;  // per loop: keeps the server's accept queue sane
constexpr std::int64_t ms = 1'000'000;
constexpr std::int64_t close_grace = 1000 * ms;
constexpr std::int64_t retry_delay = 100 * ms;
constexpr std::uint64_t wake_key = ~0ull;
constexpr std::size_t scratch_size = std::size_t{256} * 1024;

constexpr std::uint8_t op_text = 0x1, op_binary = 0x2, op_close = 0x8, op_pong = 0xA;

}  // namespace

std::int64_t now_ns() {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

char const* fail_name(fail f) {
    switch (f) {
        case fail::refused: return "connection refused";
        case fail::reset: return "connection reset";
        case fail::timeout: return "handshake timeout";
        case fail::status: return "upgrade not 101";
        case fail::accept: return "bad Sec-WebSocket-Accept";
        case fail::protocol: return "protocol error";
        case fail::closed: return "closed by server";
        case fail::push_status: return "push not 2xx";
        case fail::bad_message: return "unexpected message";
        case fail::lost: return "broadcast lost";
        case fail::local: return "local socket error";
        case fail::count_: break;
    }
    return "error";
}

void shared::set_fatal(exit_code code, std::string message) {
    std::lock_guard lock(fatal_mutex);
    if (fatal.load()) return;
    fatal_code = code;
    fatal_message = std::move(message);
    fatal.store(true);
    stop.store(true);
}

loop::loop(shared& sh, unsigned index)
    : sh_(sh),
      ep_(epoll_create1(EPOLL_CLOEXEC)),
      wake_fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)),
      scratch_(scratch_size),
      rng_(0x9E3779B97F4A7C15ull ^ (static_cast<std::uint64_t>(now_ns()) + index * 7919ull)) {
    if (ep_ < 0 || wake_fd_ < 0) throw failure(exit_code::config, fmt::format("epoll: {}", std::strerror(errno)));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = wake_key;
    epoll_ctl(ep_, EPOLL_CTL_ADD, wake_fd_, &ev);
    payload_.assign(sh_.o.size, 'x');
    for (int i = 0; i < 4; ++i) next_random(rng_);
}

loop::~loop() {
    for (auto& c : conns_) close_fd(c);
    if (wake_fd_ >= 0) ::close(wake_fd_);
    if (ep_ >= 0) ::close(ep_);
}

void loop::add(role r) {
    load_connection c;
    c.r = r;
    c.in_setup = r != role::connector;
    if (r == role::pub || r == role::push) publishers_.push_back(static_cast<std::uint32_t>(conns_.size()));
    conns_.push_back(std::move(c));
}

void loop::wake() {
    if (!wake_pending_.exchange(true, std::memory_order_acq_rel)) {
        std::uint64_t one = 1;
        [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
    }
}

void loop::count_error(fail kind) {
    ++errors[static_cast<std::size_t>(kind)];
    ++total_errors_;
    progress_errors.store(total_errors_, std::memory_order_relaxed);
}

void loop::set_open(load_connection& c, bool open) {
    if (c.counted_open == open) return;
    c.counted_open = open;
    open_ += open ? 1 : -1;
    progress_open.store(open_, std::memory_order_relaxed);
    if (c.r == role::sub) sh_.subscribers.fetch_add(open ? 1 : -1, std::memory_order_acq_rel);
}

void loop::close_fd(load_connection& c) {
    if (c.fd >= 0) {
        ::close(c.fd);  // also removes it from the epoll set
        c.fd = -1;
    }
    c.s = state::off;
    c.out_armed = false;
    c.close_sent = false;
    c.push_busy = false;
    c.in_flight = 0;
    c.deadline = 0;
    c.wbuf.clear();
    c.woff = 0;
    c.rbuf.clear();
    c.reader = wire::frame_reader(wire::reader_role::client, max_message);
    c.sent.clear();
    if (c.wbuf.capacity() > (1u << 20)) c.wbuf.shrink_to_fit();
    if (c.rbuf.capacity() > (1u << 20)) c.rbuf.shrink_to_fit();
}

// Once its handshake request is written, a socket is edge-triggered: level-triggered epoll polls
// every reported socket again on the next wait only to drop it (measured: 3% more echo round trips
// per load-generator thread without it). A read stops at a short read (drained) or leaves the
// socket in more_ (on_readable), so no data is left behind without an edge to come; after a FIN
// (EPOLLRDHUP) a short read is not the end: the FIN is read after the data.
void loop::arm(load_connection& c, bool out) {
    if (c.out_armed == out || c.fd < 0) return;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET | (out ? EPOLLOUT : 0u);
    ev.data.u64 = key(static_cast<std::uint32_t>(&c - conns_.data()));
    epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &ev);
    c.out_armed = out;
}

void loop::handshake_ended(load_connection& c) {
    bool const was_pending = c.s == state::connecting || c.s == state::upgrading;
    if (was_pending && pending_ > 0) --pending_;
    if (c.in_setup) {
        c.in_setup = false;
        sh_.setup_pending.fetch_sub(1, std::memory_order_acq_rel);
    }
    // Start queued connections; a start that fails at once ends up here again, so only the
    // outermost call drains (no recursion as deep as the queue).
    if (!was_pending || draining_) return;
    draining_ = true;
    while (pending_ < max_handshakes_in_flight && !queue_.empty() && !stopping_) {
        auto const next = queue_.front();
        queue_.pop_front();
        start_connect(next);
    }
    draining_ = false;
}

void loop::connect_or_queue(std::uint32_t i) {
    if (pending_ >= max_handshakes_in_flight) {
        conns_[i].s = state::queued;
        queue_.push_back(i);
        return;
    }
    start_connect(i);
}

void loop::start_connect(std::uint32_t i) {
    load_connection& c = conns_[i];
    close_fd(c);
    ++c.gen;
    c.retry_at = 0;
    c.t_start = now_ns();
    c.deadline = c.t_start + sh_.o.connect_timeout.count() * ms;
    ++pending_;
    c.s = state::connecting;
    int const fd = ::socket(sh_.ep.addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        failed(i, fail::local,
               fmt::format("cannot open a socket: {} (raise the file limit: ulimit -n)", std::strerror(errno)),
               exit_code::config);
        return;
    }
    c.fd = fd;
    c.hung_up = false;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT;
    ev.data.u64 = key(i);
    epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
    c.out_armed = true;
    int const rc = ::connect(fd, reinterpret_cast<sockaddr const*>(&sh_.ep.addr), sh_.ep.addr_len);
    if (rc < 0 && errno != EINPROGRESS) {
        int const e = errno;
        if (e == EADDRNOTAVAIL || e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
            failed(i, fail::local, fmt::format("cannot connect: {} (out of local ports or memory)", std::strerror(e)),
                   exit_code::config);
            return;
        }
        failed(i, e == ECONNREFUSED ? fail::refused : fail::reset,
               fmt::format("cannot connect to {}:{}: {}", sh_.ep.host, sh_.ep.port, std::strerror(e)),
               exit_code::unavailable);
    }
}

void loop::failed(std::uint32_t i, fail kind, std::string const& message, exit_code code) {
    load_connection& c = conns_[i];
    count_error(kind);
    handshake_ended(c);
    set_open(c, false);
    close_fd(c);
    bool const publisher = c.r == role::pub || c.r == role::push;
    if (!stopping_ && (publisher || !sh_.any_open.load(std::memory_order_acquire))) {
        sh_.set_fatal(code, publisher ? fmt::format("publisher: {}", message) : message);
        return;
    }
    if (stopping_) return;
    switch (c.r) {
        case role::echo:
        case role::connector: c.retry_at = now_ns() + retry_delay; break;
        case role::pub:
        case role::push:
        case role::sub:
        case role::idle: break;
    }
}

void loop::run() {
    std::vector<epoll_event> events(1024);
    now_ = now_ns();
    for (std::uint32_t i = 0; i < conns_.size(); ++i)
        if (conns_[i].r != role::connector) connect_or_queue(i);
    for (;;) {
        now_ = now_ns();
        if (!started_) {
            if (sh_.start_ns.load(std::memory_order_acquire) != 0) begin_traffic();
        }
        if (!stopping_ && (sh_.stop.load(std::memory_order_relaxed) || (started_ && now_ >= sh_.end_ns))) begin_stop();
        if (stopping_) {
            bool any = false;
            for (auto const& c : conns_) any = any || c.fd >= 0;
            if (!any || now_ >= stop_deadline_) break;
        }
        if (now_ >= next_sweep_) sweep();
        if (started_ && !stopping_ && !publishers_.empty()) pump_publisher();

        int timeout = started_ ? 20 : 5;
        if (started_ && !stopping_) {
            auto const left = (sh_.end_ns - now_) / ms + 1;
            timeout = static_cast<int>(std::clamp<std::int64_t>(left, 0, 20));
        }
        if (!more_.empty()) timeout = 0;
        int const n = epoll_wait(ep_, events.data(), static_cast<int>(events.size()), timeout);
        if (n < 0) {
            if (errno == EINTR) continue;
            sh_.set_fatal(exit_code::config, fmt::format("epoll_wait: {}", std::strerror(errno)));
            break;
        }
        now_ = now_ns();
        for (int k = 0; k < n; ++k) {
            auto const data = events[static_cast<std::size_t>(k)].data.u64;
            if (data == wake_key) {
                std::uint64_t v = 0;
                [[maybe_unused]] auto r = ::read(wake_fd_, &v, sizeof v);
                wake_pending_.store(false, std::memory_order_release);
                continue;
            }
            if (load_connection* c = live(data))
                on_event(static_cast<std::uint32_t>(c - conns_.data()), events[static_cast<std::size_t>(k)].events);
        }
        if (!more_.empty()) {
            auto again = std::move(more_);
            more_.clear();
            for (auto const data : again)
                if (load_connection* c = live(data)) on_readable(static_cast<std::uint32_t>(c - conns_.data()));
        }
        progress_messages.store(traffic_, std::memory_order_relaxed);
    }
    for (auto& c : conns_) {
        set_open(c, false);
        close_fd(c);
    }
    progress_messages.store(traffic_, std::memory_order_relaxed);
}

void loop::begin_traffic() {
    started_ = true;
    if (sh_.o.mode == mode::connect) {
        for (std::uint32_t i = 0; i < conns_.size(); ++i) connect_or_queue(i);
        return;
    }
    if (sh_.o.mode == mode::echo) {
        for (std::uint32_t i = 0; i < conns_.size(); ++i) {
            load_connection& c = conns_[i];
            if (c.s != state::open) continue;
            while (c.in_flight < sh_.o.in_flight) send_echo(c);
            flush(i);
        }
    }
}

void loop::begin_stop() {
    stopping_ = true;
    stop_deadline_ = now_ + close_grace;
    open_at_end = 0;
    for (std::uint32_t i = 0; i < conns_.size(); ++i) {
        load_connection& c = conns_[i];
        if (c.s == state::open) {
            if (c.r != role::push && c.r != role::pub) ++open_at_end;
            if (c.r == role::push) {
                close_fd(c);
                continue;
            }
            send_close(c);
            c.s = state::closing;
            flush(i);
        } else if (c.s != state::closing) {
            if (c.s == state::connecting || c.s == state::upgrading) handshake_ended(c);
            close_fd(c);
        }
    }
    queue_.clear();
}

void loop::sweep() {
    next_sweep_ = now_ + 10 * ms;
    for (std::uint32_t i = 0; i < conns_.size(); ++i) {
        load_connection& c = conns_[i];
        if (c.deadline != 0 && now_ >= c.deadline) {
            if (c.s == state::connecting || c.s == state::upgrading) {
                failed(i, fail::timeout,
                       fmt::format("no WebSocket upgrade from {}:{} within {}", sh_.ep.host, sh_.ep.port,
                                   format_latency(static_cast<std::uint64_t>(sh_.o.connect_timeout.count() * ms))),
                       exit_code::unavailable);
            } else if (c.s == state::closing) {
                bool const restart = c.r == role::connector && !stopping_;
                set_open(c, false);
                close_fd(c);
                if (restart) connect_or_queue(i);
            }
        } else if (c.retry_at != 0 && now_ >= c.retry_at && !stopping_ && started_ && c.s == state::off) {
            c.retry_at = 0;
            connect_or_queue(i);
        }
    }
}

void loop::on_event(std::uint32_t i, std::uint32_t events) {
    load_connection& c = conns_[i];
    auto const gen = c.gen;
    if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
        on_writable(i);
        if (c.gen != gen || c.fd < 0) return;
    }
    if (events & (EPOLLRDHUP | EPOLLERR | EPOLLHUP)) c.hung_up = true;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) on_readable(i);
}

void loop::on_writable(std::uint32_t i) {
    load_connection& c = conns_[i];
    if (c.s == state::connecting) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            failed(i, err == ECONNREFUSED ? fail::refused : fail::reset,
                   fmt::format("cannot connect to {}:{}: {}", sh_.ep.host, sh_.ep.port, std::strerror(err)),
                   exit_code::unavailable);
            return;
        }
        if (c.r == role::push) {
            // A plain HTTP keep-alive connection: ready once TCP is up.
            handshake_ended(c);
            c.s = state::open;
            c.deadline = 0;
            set_open(c, true);
            arm(c, false);
            return;
        }
        std::string const ws_key = new_ws_key(rng_);
        c.accept = wire::accept_key(ws_key);
        std::string const& target = c.r == role::pub ? sh_.pub_target : sh_.sub_target;
        c.wbuf = upgrade_request(sh_.ep, target, ws_key, sh_.o.headers);
        c.woff = 0;
        c.s = state::upgrading;
    }
    flush(i);
}

void loop::flush(std::uint32_t i) {
    load_connection& c = conns_[i];
    if (c.fd < 0) return;
    while (c.woff < c.wbuf.size()) {
        ssize_t const n = ::send(c.fd, c.wbuf.data() + c.woff, c.wbuf.size() - c.woff, MSG_NOSIGNAL);
        if (n > 0) {
            c.woff += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            arm(c, true);
            return;
        }
        if (n < 0 && errno == EINTR) continue;
        int const e = errno;
        if (c.s == state::closing || stopping_) {
            set_open(c, false);
            close_fd(c);
            return;
        }
        failed(i, e == ECONNREFUSED ? fail::refused : (c.s == state::open ? fail::closed : fail::reset),
               fmt::format("send to {}:{}: {}", sh_.ep.host, sh_.ep.port, std::strerror(e)), exit_code::unavailable);
        return;
    }
    c.wbuf.clear();
    c.woff = 0;
    if (c.s != state::connecting) arm(c, false);
}

void loop::on_readable(std::uint32_t i) {
    load_connection& c = conns_[i];
    auto const gen = c.gen;
    constexpr int max_rounds = 8;  // reads per socket before the others get their turn
    for (int round = 0; round < max_rounds; ++round) {
        bool const use_rbuf = !c.rbuf.empty();
        std::size_t old = 0;
        char* buf = nullptr;
        std::size_t cap = 0;
        if (use_rbuf) {
            old = c.rbuf.size();
            cap = std::max<std::size_t>(scratch_size, std::min<std::size_t>(old, 16u << 20));
            c.rbuf.resize(old + cap);
            buf = c.rbuf.data() + old;
        } else {
            buf = scratch_.data();
            cap = scratch_.size();
        }
        ssize_t const n = ::recv(c.fd, buf, cap, 0);
        if (n <= 0) {
            if (use_rbuf) c.rbuf.resize(old);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
            if (n == 0) {
                on_eof(i);
                return;
            }
            int const e = errno;
            if (c.s == state::closing || stopping_) {
                set_open(c, false);
                close_fd(c);
                if (c.r == role::connector && !stopping_) connect_or_queue(i);
                return;
            }
            if (c.s == state::connecting) {
                on_writable(i);  // reports the connect error
                return;
            }
            failed(i, e == ECONNREFUSED ? fail::refused : (c.s == state::open ? fail::closed : fail::reset),
                   fmt::format("receive from {}:{}: {}", sh_.ep.host, sh_.ep.port, std::strerror(e)),
                   exit_code::unavailable);
            return;
        }
        now_ = now_ns();
        char* data = nullptr;
        std::size_t len = 0;
        if (use_rbuf) {
            c.rbuf.resize(old + static_cast<std::size_t>(n));
            data = c.rbuf.data();
            len = c.rbuf.size();
        } else {
            data = buf;
            len = static_cast<std::size_t>(n);
        }
        std::size_t const used = process(i, data, len);
        if (c.gen != gen || c.fd < 0) return;
        if (use_rbuf) {
            c.rbuf.erase(0, used);
        } else if (used < len) {
            c.rbuf.assign(data + used, len - used);
        }
        if (static_cast<std::size_t>(n) < cap && !c.hung_up) break;
        if (round == max_rounds - 1) more_.push_back(key(i));  // not drained: its turn comes again
    }
    flush(i);
}

void loop::on_eof(std::uint32_t i) {
    load_connection& c = conns_[i];
    if (c.s == state::closing || stopping_) {
        bool const restart = c.r == role::connector && !stopping_;
        set_open(c, false);
        close_fd(c);
        if (restart) connect_or_queue(i);
        return;
    }
    if (c.r == role::push && !c.push_busy) {  // an idle keep-alive connection the server closed
        set_open(c, false);
        close_fd(c);
        start_connect(i);
        return;
    }
    if (c.s == state::connecting) {
        on_writable(i);
        if (c.fd < 0) return;
    }
    bool const open = c.s == state::open;
    failed(i, open ? fail::closed : fail::reset,
           fmt::format("{}:{} closed the connection{}", sh_.ep.host, sh_.ep.port, open ? "" : " during the upgrade"),
           exit_code::unavailable);
}

std::size_t loop::process(std::uint32_t i, char* data, std::size_t n) {
    load_connection& c = conns_[i];
    if (c.r == role::push) return process_push(i, data, n);
    std::size_t used = 0;
    if (c.s == state::upgrading) {
        used = process_upgrade(i, data, n);
        if (c.s != state::open) return used;
    }
    if (c.s == state::open || c.s == state::closing) used += process_frames(i, data + used, n - used);
    return used;
}

std::size_t loop::process_upgrade(std::uint32_t i, char* data, std::size_t n) {
    load_connection& c = conns_[i];
    response_head head;
    auto const r = parse_response_head(std::string_view(data, n), head);
    if (r.incomplete()) return 0;
    std::string const& target = c.r == role::pub ? sh_.pub_target : sh_.sub_target;
    if (r.malformed()) {
        failed(i, fail::protocol, fmt::format("the upgrade response of {} is not valid HTTP: {}", target, r.why),
               exit_code::protocol);
        return n;
    }
    if (head.status != 101) {
        failed(i, fail::status,
               fmt::format("the upgrade to {} was answered {} {} (expected 101 Switching Protocols)", target,
                           head.status, head.reason),
               head.status >= 500 ? exit_code::unavailable : exit_code::protocol);
        return n;
    }
    if (head.accept != c.accept || !iequals(head.upgrade, "websocket") || !list_contains(head.connection, "upgrade")) {
        failed(
            i, fail::accept,
            fmt::format("the 101 response of {} has a bad Sec-WebSocket-Accept, Upgrade or Connection header", target),
            exit_code::protocol);
        return n;
    }
    handshake_ended(c);
    c.s = state::open;
    c.deadline = 0;
    on_open(i);
    return head.head_len;
}

void loop::on_open(std::uint32_t i) {
    load_connection& c = conns_[i];
    sh_.any_open.store(true, std::memory_order_release);
    set_open(c, true);
    auto const latency = static_cast<std::uint64_t>(now_ - c.t_start);
    if (!c.ever_open && c.r != role::connector && c.r != role::pub && c.r != role::push) ++connected;
    c.ever_open = true;
    switch (c.r) {
        case role::connector:
            ++traffic_;
            if (in_window()) {
                hist.record(latency);
                ++messages;
            }
            ++connected;
            send_close(c);
            c.s = state::closing;
            c.deadline = now_ + close_grace;
            break;
        case role::idle: hist.record(latency); break;
        case role::echo:
            if (started_ && !stopping_) {
                while (c.in_flight < sh_.o.in_flight) send_echo(c);
            }
            break;
        case role::sub:
        case role::pub:
        case role::push: break;
    }
}

void loop::send_close(load_connection& c) {
    char const code[2] = {static_cast<char>(0x03), static_cast<char>(0xE8)};  // 1000
    wire::append_masked_frame(c.wbuf, op_close, code, 2, static_cast<std::uint32_t>(next_random(rng_)));
    c.close_sent = true;
}

// What the frame reader finds on connection `i`, handed to the loop. Once the connection is gone
// (a handler closed it, or it is a new connection under the same index) the rest is ignored.
struct loop::frame_events final : wire::frame_handler {
    loop& l;
    std::uint32_t i;
    std::uint32_t gen;

    frame_events(loop& owner, std::uint32_t index) : l(owner), i(index), gen(owner.conns_[index].gen) {}
    bool gone() const { return l.conns_[i].gen != gen || l.conns_[i].fd < 0; }

    void on_message(opcode, std::string_view payload) override {
        if (!gone()) l.on_message(l.conns_[i], payload.data(), payload.size());
    }
    void on_ping(std::string_view payload) override {
        load_connection& c = l.conns_[i];
        if (!gone() && c.s == state::open)
            wire::append_masked_frame(c.wbuf, op_pong, payload.data(), payload.size(),
                                      static_cast<std::uint32_t>(next_random(l.rng_)));
    }
    void on_pong(std::string_view) override {}
    void on_close(std::uint16_t code, std::string_view reason) override {
        if (!gone()) l.on_server_close(i, code, reason);
    }
};

std::size_t loop::process_frames(std::uint32_t i, char* data, std::size_t n) {
    load_connection& c = conns_[i];
    frame_events events(*this, i);
    if (c.reader.feed(data, n, events) || events.gone()) return n;
    auto const f = c.reader.failure();
    if (f.code == 0) return n;  // the server's close, answered by on_server_close
    // The server broke RFC 6455: say why in a close frame (7.1.7) unless ours is out, then drop it.
    if (!c.close_sent) {
        std::string const payload = wire::close_payload(f.code, f.reason);
        wire::append_masked_frame(c.wbuf, op_close, payload.data(), payload.size(),
                                  static_cast<std::uint32_t>(next_random(rng_)));
        c.close_sent = true;
        flush(i);
        if (events.gone()) return n;
    }
    failed(i, fail::protocol, fmt::format("the server broke RFC 6455: {} (closed with {})", f.reason, f.code),
           exit_code::protocol);
    return n;
}

void loop::on_server_close(std::uint32_t i, std::uint16_t code, std::string_view reason) {
    load_connection& c = conns_[i];
    if (c.close_sent || stopping_) {
        // Our close was answered (or we are ending): the server closes TCP next; wait for it briefly.
        bool const restart = c.r == role::connector && !stopping_;
        if (c.r == role::connector && !stopping_) {
            c.s = state::closing;
            if (c.deadline == 0) c.deadline = now_ + close_grace;
            return;
        }
        set_open(c, false);
        close_fd(c);
        if (restart) connect_or_queue(i);
        return;
    }
    std::string const what =
        fmt::format("the server closed the connection ({}{}{})", code, reason.empty() ? "" : " ", reason);
    // Answer the close (echo the code), then drop the connection.
    std::string const answer = wire::close_payload(code, {});
    wire::append_masked_frame(c.wbuf, op_close, answer.data(), answer.size(),
                              static_cast<std::uint32_t>(next_random(rng_)));
    flush(i);
    if (c.fd < 0) return;
    failed(i, fail::closed, what,
           code == 1002 || code == 1007 || code == 1009 ? exit_code::protocol : exit_code::unavailable);
}

void loop::send_echo(load_connection& c) {
    char* p = payload_.data();
    std::size_t const size = payload_.size();
    if (size >= 16)
        put_hex16(p, static_cast<std::uint64_t>(now_));
    else
        c.sent.push_back(now_);
    wire::append_masked_frame(c.wbuf, sh_.o.binary ? op_binary : op_text, p, size,
                              static_cast<std::uint32_t>(next_random(rng_)));
    ++c.in_flight;
}

void loop::on_message(load_connection& c, char const* p, std::size_t n) {
    switch (c.r) {
        case role::echo: {
            if (c.in_flight == 0) {
                count_error(fail::bad_message);
                return;
            }
            --c.in_flight;
            std::int64_t sent_at = 0;
            bool ok = n == payload_.size();
            if (payload_.size() >= 16) {
                std::uint64_t v = 0;
                ok = ok && get_hex16(p, v);
                sent_at = static_cast<std::int64_t>(v);
            } else if (!c.sent.empty()) {
                sent_at = c.sent.front();
                c.sent.pop_front();
            }
            ok = ok && sent_at > 0 && sent_at <= now_;
            ++traffic_;
            if (!ok)
                count_error(fail::bad_message);
            else if (in_window()) {
                hist.record(static_cast<std::uint64_t>(now_ - sent_at));
                ++messages;
            }
            if (c.s == state::open && !stopping_ && started_) send_echo(c);
            return;
        }
        case role::sub: {
            auto const* hash = static_cast<char const*>(std::memchr(p, '#', n));
            std::uint64_t seq = 0;
            if (!hash) return;  // not one of ours (a greeting, another publisher): ignored
            if (static_cast<std::size_t>(p + n - hash) < 17 || !get_hex16(hash + 1, seq)) {
                count_error(fail::bad_message);
                return;
            }
            slot& s = sh_.slots[seq & sh_.slot_mask];
            if (s.seq.load(std::memory_order_acquire) != seq) return;  // a broadcast already given up
            bool const window = in_window();
            ++traffic_;
            if (window) ++messages;
            if (s.remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
                if (window) {
                    auto const t = s.t_pub.load(std::memory_order_relaxed);
                    hist.record(static_cast<std::uint64_t>(std::max<std::int64_t>(0, now_ - t)));
                    ++broadcasts;
                }
                if (sh_.publisher != this) sh_.publisher->wake();
            }
            return;
        }
        case role::pub:
        case role::push:
        case role::connector:
        case role::idle: return;
    }
}

void loop::pump_publisher() {
    // Drop what completed; give up on what timed out.
    auto const timeout = sh_.o.broadcast_timeout.count() * ms;
    std::size_t keep = 0;
    for (auto const seq : outstanding_) {  // writes only at keep <= the element read
        slot& s = sh_.slots[seq & sh_.slot_mask];
        if (s.seq.load(std::memory_order_relaxed) != seq) continue;  // failed push: already released
        if (s.remaining.load(std::memory_order_acquire) <= 0) {
            s.seq.store(~0ull, std::memory_order_relaxed);
            continue;
        }
        if (now_ - s.t_pub.load(std::memory_order_relaxed) > timeout) {
            s.seq.store(~0ull, std::memory_order_release);
            if (now_ < sh_.end_ns) count_error(fail::lost);
            continue;
        }
        outstanding_[keep++] = seq;
    }
    outstanding_.resize(keep);
    if (sh_.subscribers.load(std::memory_order_acquire) <= 0) return;
    for (std::size_t k = 0; k < publishers_.size() && outstanding_.size() < sh_.o.in_flight; ++k) {
        auto const i = publishers_[k];
        load_connection& c = conns_[i];
        if (c.s != state::open) continue;
        if (c.r == role::pub) {
            while (outstanding_.size() < sh_.o.in_flight) publish_ws(c, next_seq_++);
            flush(i);
        } else if (c.r == role::push && !c.push_busy) {
            publish_push(c, next_seq_++);
            flush(i);
        }
    }
}

// Registers broadcast `seq` (publish time, subscribers still to receive it) and stamps it into the template.
void loop::begin_broadcast(std::uint64_t seq) {
    slot& s = sh_.slots[seq & sh_.slot_mask];
    now_ = now_ns();
    s.t_pub.store(now_, std::memory_order_relaxed);
    s.remaining.store(sh_.subscribers.load(std::memory_order_acquire), std::memory_order_relaxed);
    s.seq.store(seq, std::memory_order_release);
    outstanding_.push_back(seq);
    put_hex16(sh_.pub_template.data() + sh_.pub_hex_offset, seq);
}

void loop::publish_ws(load_connection& c, std::uint64_t seq) {
    begin_broadcast(seq);
    wire::append_masked_frame(c.wbuf, sh_.o.binary ? op_binary : op_text, sh_.pub_template.data(),
                              sh_.pub_template.size(), static_cast<std::uint32_t>(next_random(rng_)));
}

void loop::publish_push(load_connection& c, std::uint64_t seq) {
    begin_broadcast(seq);
    c.wbuf += sh_.push_head;
    c.wbuf += sh_.pub_template;
    c.push_busy = true;
    c.push_seq = seq;
}

std::size_t loop::process_push(std::uint32_t i, char const* data, std::size_t n) {
    load_connection& c = conns_[i];
    std::size_t pos = 0;
    while (pos < n) {
        response_head head;
        std::string_view const rest(data + pos, n - pos);
        auto const r = parse_response_head(rest, head);
        if (r.incomplete()) break;
        if (r.malformed()) {
            failed(i, fail::protocol, fmt::format("the push response is not valid HTTP: {}", r.why),
                   exit_code::protocol);
            return n;
        }
        std::size_t body = 0;  // at most max_body_length (the parsers refuse more): the sum below cannot overflow
        if (head.chunked) {
            auto const b = chunked_body_length(rest.substr(head.head_len), body);
            if (b.incomplete()) break;
            if (b.malformed()) {
                failed(i, fail::protocol, fmt::format("the push response has a bad chunked body: {}", b.why),
                       exit_code::protocol);
                return n;
            }
        } else if (head.content_length > 0) {
            body = static_cast<std::size_t>(head.content_length);
        }
        if (rest.size() < head.head_len + body) break;
        pos += head.head_len + body;
        if (!c.push_busy) continue;
        c.push_busy = false;
        if (head.status >= 200 && head.status < 300) {
            push_ok_ = true;
        } else {
            slot& s = sh_.slots[c.push_seq & sh_.slot_mask];
            s.seq.store(~0ull, std::memory_order_release);
            count_error(fail::push_status);
            if (!push_ok_ && !stopping_) {
                exit_code const code = head.status == 401 || head.status == 403 ? exit_code::no_permission
                                       : head.status == 404                     ? exit_code::no_user
                                       : head.status >= 500                     ? exit_code::unavailable
                                                                                : exit_code::protocol;
                sh_.set_fatal(
                    code, fmt::format("the push to {} was answered {} {}", sh_.push_target, head.status, head.reason));
                return n;
            }
        }
        if (list_contains(head.connection, "close")) {
            set_open(c, false);
            close_fd(c);
            start_connect(i);
            return n;
        }
    }
    return pos;
}

}  // namespace wsig::bench::detail
