// The engine of `wsig bench`: one epoll event loop per thread, each owning a share of the
// connections, and the state the loops share (start/end times, fan-out broadcast slots, errors).
#pragma once

#include "bench/histogram.hpp"
#include "bench/wire.hpp"
#include "wire/frame_reader.hpp"

#include <wsig/bench.hpp>
#include <wsig/exit_code.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace wsig::bench::detail {

std::int64_t now_ns();

enum class fail : std::uint8_t {
    refused,
    reset,
    timeout,
    status,
    accept,
    protocol,
    closed,
    push_status,
    bad_message,
    lost,
    local,
    count_
};
inline constexpr std::size_t fail_kinds = static_cast<std::size_t>(fail::count_);
char const* fail_name(fail f);

// One fan-out broadcast in flight: written by the publisher, counted down by subscribers.
struct slot {
    std::atomic<std::uint64_t> seq{~0ull};
    std::atomic<std::int64_t> remaining{0};
    std::atomic<std::int64_t> t_pub{0};
};

class loop;

struct shared {
    options o;
    endpoint ep;
    std::string sub_target, pub_target, push_target;
    std::string pub_template;  // the publisher's frame payload, with 16 hex digits at pub_hex_offset
    std::size_t pub_hex_offset = 0;
    std::string push_head;  // the POST request head, Content-Length included

    std::atomic<std::int64_t> start_ns{0};     // traffic starts; 0 until set-up is done
    std::atomic<std::int64_t> warm_end_ns{0};  // written before start_ns
    std::atomic<std::int64_t> end_ns{0};
    std::atomic<bool> stop{false};
    std::atomic<bool> any_open{false};
    std::atomic<std::int64_t> setup_pending{0};
    std::atomic<std::int64_t> subscribers{0};  // open subscribers: receipts expected per broadcast

    std::mutex fatal_mutex;
    std::atomic<bool> fatal{false};
    exit_code fatal_code = exit_code::ok;
    std::string fatal_message;
    void set_fatal(exit_code code, std::string message);

    std::unique_ptr<slot[]> slots;
    std::uint64_t slot_mask = 0;
    loop* publisher = nullptr;
};

// The longest message a server's reply may be: far above any benchmark payload, and what the
// reader holds for a reply split across reads is only what has arrived.
inline constexpr std::uint64_t max_message = 64ull << 20;

enum class role : std::uint8_t { echo, sub, pub, push, connector, idle };
enum class state : std::uint8_t { off, queued, connecting, upgrading, open, closing };

struct load_connection {
    int fd = -1;
    std::uint32_t gen = 0;
    role r = role::echo;
    state s = state::off;
    bool out_armed = false;
    bool hung_up = false;  // the peer's FIN (or an error) was seen: read to the end, no edge follows
    bool in_setup = true;  // counted in setup_pending until its first handshake ends
    bool close_sent = false;
    bool counted_open = false;
    bool ever_open = false;
    bool push_busy = false;
    std::uint32_t in_flight = 0;
    std::int64_t t_start = 0;   // when the current connection attempt started
    std::int64_t deadline = 0;  // handshake or close deadline (0: none)
    std::int64_t retry_at = 0;  // reconnect time (0: none)
    std::uint64_t push_seq = 0;
    std::string accept;  // the expected Sec-WebSocket-Accept
    std::string wbuf;
    std::size_t woff = 0;
    std::string rbuf;  // an upgrade or push response head split across reads
    wire::frame_reader reader{wire::reader_role::client, max_message};  // the server's frames, anew per connection
    std::deque<std::int64_t> sent;  // echo send times when the payload is too short to carry one
};

class loop {
public:
    loop(shared& sh, unsigned index);
    ~loop();
    loop(loop const&) = delete;
    loop& operator=(loop const&) = delete;
    loop(loop&&) = delete;
    loop& operator=(loop&&) = delete;

    void add(role r);  // before run()
    void run();
    void wake();

    // Results, read after the thread is joined.
    histogram hist;
    std::uint64_t messages = 0;
    std::uint64_t broadcasts = 0;
    std::uint32_t open_at_end = 0;
    std::uint32_t connected = 0;
    std::array<std::uint64_t, fail_kinds> errors{};

    // Progress, read while running.
    std::atomic<std::uint64_t> progress_messages{0};
    std::atomic<std::uint64_t> progress_errors{0};
    std::atomic<std::int64_t> progress_open{0};

private:
    struct frame_events;  // the frame reader's handler for one connection (loop.cpp)

    shared& sh_;
    int ep_ = -1;
    int wake_fd_ = -1;
    std::atomic<bool> wake_pending_{false};
    std::vector<load_connection> conns_;
    std::deque<std::uint32_t> queue_;  // waiting to connect (bounded handshakes in flight)
    std::vector<std::uint64_t> more_;  // keys of open sockets whose read stopped with data left
    std::uint32_t pending_ = 0;        // handshakes in flight
    std::vector<char> scratch_;
    std::string payload_;  // echo payload template
    std::uint64_t rng_;
    std::int64_t now_ = 0;
    bool started_ = false;
    bool stopping_ = false;
    bool draining_ = false;
    std::int64_t stop_deadline_ = 0;
    std::int64_t next_sweep_ = 0;
    std::uint64_t total_errors_ = 0;
    std::uint64_t traffic_ = 0;  // completions including the warm-up (for progress)
    std::int64_t open_ = 0;

    // Fan-out publisher state (loop 0 only).
    std::vector<std::uint32_t> publishers_;
    std::vector<std::uint64_t> outstanding_;
    std::uint64_t next_seq_ = 1;
    bool push_ok_ = false;

    bool in_window() const {
        return now_ >= sh_.warm_end_ns.load(std::memory_order_relaxed) &&
               now_ < sh_.end_ns.load(std::memory_order_relaxed);
    }
    std::uint64_t key(std::uint32_t i) const { return (static_cast<std::uint64_t>(conns_[i].gen) << 32) | i; }
    // The connection a key was made for, if it is still that connection and open.
    load_connection* live(std::uint64_t k) {
        auto const i = static_cast<std::uint32_t>(k & 0xFFFFFFFFu);
        if (i >= conns_.size() || conns_[i].gen != static_cast<std::uint32_t>(k >> 32) || conns_[i].fd < 0)
            return nullptr;
        return &conns_[i];
    }

    void start_connect(std::uint32_t i);
    void connect_or_queue(std::uint32_t i);
    void handshake_ended(load_connection& c);
    void on_event(std::uint32_t i, std::uint32_t events);
    void on_writable(std::uint32_t i);
    void on_readable(std::uint32_t i);
    std::size_t process(std::uint32_t i, char* data, std::size_t n);
    std::size_t process_upgrade(std::uint32_t i, char* data, std::size_t n);
    std::size_t process_push(std::uint32_t i, char const* data, std::size_t n);
    std::size_t process_frames(std::uint32_t i, char* data, std::size_t n);
    void on_open(std::uint32_t i);
    void on_message(load_connection& c, char const* p, std::size_t n);
    void on_server_close(std::uint32_t i, std::uint16_t code, std::string_view reason);
    void on_eof(std::uint32_t i);
    void flush(std::uint32_t i);
    void arm(load_connection& c, bool out);
    static void close_fd(load_connection& c);
    void failed(std::uint32_t i, fail kind, std::string const& message, exit_code code);
    void count_error(fail kind);
    void set_open(load_connection& c, bool open);

    void begin_traffic();
    void begin_stop();
    void sweep();
    void send_echo(load_connection& c);
    void pump_publisher();
    void begin_broadcast(std::uint64_t seq);
    void publish_ws(load_connection& c, std::uint64_t seq);
    void publish_push(load_connection& c, std::uint64_t seq);
    void send_close(load_connection& c);
};

}  // namespace wsig::bench::detail
