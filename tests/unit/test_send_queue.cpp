// The session's send queue (small frames copied into runs, big ones shared, order kept) and
// the write gate that takes it into the write in flight.
#include "catch.hpp"

#include "server/send_queue.hpp"
#include "server/write_gate.hpp"

#include <string>

using wsig::outgoing_message;
using wsig::detail::send_queue;

namespace {

std::string joined(send_queue const& q) {
    std::string out;
    for (auto const& c : q.chunks()) out.append(c.bytes());
    return out;
}

}  // namespace

TEST_CASE("send queue: small frames share one run, in order, counted one by one", "[send_queue]") {
    send_queue q;
    auto a = outgoing_message::text("a");
    auto b = outgoing_message::text("bb");
    q.push(a);
    q.push(b);
    q.push(a);
    REQUIRE(q.chunks().size() == 1);
    CHECK(q.chunks()[0].shared == nullptr);
    CHECK(q.messages() == 3);
    CHECK(q.bytes() == 3 + 4 + 3);
    CHECK(joined(q) == std::string(a->frame()) + std::string(b->frame()) + std::string(a->frame()));
    CHECK(a.use_count() == 1);  // copied, not referenced
}

TEST_CASE("send queue: a frame over the copy limit is shared and splits the runs around it", "[send_queue]") {
    send_queue q;
    auto small = outgoing_message::text("x");
    auto big = outgoing_message::binary(std::string(send_queue::copy_limit, 'B'));
    REQUIRE(big->frame().size() > send_queue::copy_limit);
    q.push(small);
    q.push(big);
    q.push(small);
    REQUIRE(q.chunks().size() == 3);
    CHECK(q.chunks()[1].shared == big);
    CHECK(big.use_count() == 2);
    CHECK(q.messages() == 3);
    CHECK(joined(q) == std::string(small->frame()) + std::string(big->frame()) + std::string(small->frame()));
    q.clear();
    CHECK(big.use_count() == 1);
    CHECK(q.empty());
    CHECK(q.bytes() == 0);
    CHECK(q.messages() == 0);
}

TEST_CASE("send queue: a run stops at the run limit", "[send_queue]") {
    send_queue q;
    auto m = outgoing_message::text(std::string(1000, 'm'));
    auto const per_run = send_queue::run_limit / m->frame().size();
    for (std::size_t i = 0; i < per_run + 1; ++i) q.push(m);
    REQUIRE(q.chunks().size() == 2);
    CHECK(q.chunks()[0].messages == per_run);
    CHECK(q.chunks()[1].messages == 1);
    CHECK(q.chunks()[0].run.size() <= send_queue::run_limit);
}

TEST_CASE("send queue: take moves everything; the drained buffer comes back for the next run", "[send_queue]") {
    send_queue pending, writing;
    auto m = outgoing_message::text(std::string(100, 'h'));  // beyond the short-string buffer
    pending.push(m);
    pending.push(m);
    pending.take(writing);
    CHECK(pending.empty());
    CHECK(pending.bytes() == 0);
    CHECK(writing.messages() == 2);
    CHECK(joined(writing) == std::string(m->frame()) + std::string(m->frame()));
    auto const* buffer = writing.chunks()[0].run.data();
    writing.clear();
    pending.adopt_spare(writing);
    pending.push(m);
    CHECK(pending.chunks()[0].run.data() == buffer);  // no new allocation
    CHECK(joined(pending) == std::string(m->frame()));
}

// The write gate's half of the write path: what it takes from pending and how a partial write
// leaves the rest. (Its order against Beast's writes is tested end to end: test_rfc6455_server.py,
// the close-after-data tests of test_serve_badinput.py.)
TEST_CASE("write gate: pending becomes the write in flight; a partial write leaves exactly the rest", "[write_gate]") {
    wsig::detail::write_gate gate;
    auto big = outgoing_message::text(std::string(2000, 'b'));  // shared, its own chunk
    gate.pending().push(outgoing_message::text("a"));
    gate.pending().push(big);
    gate.pending().push(outgoing_message::text("c"));
    gate.take_pending();
    CHECK(gate.pending().empty());
    CHECK(gate.writing().messages() == 3);
    auto const& all = gate.gather();
    REQUIRE(all.size() == 3);  // a run, the shared frame, a run: one iovec each
    std::size_t const total = gate.writing().bytes();
    CHECK(all[0].size() + all[1].size() + all[2].size() == total);

    auto const first = all[0].size();
    auto const& rest = gate.skip(first + 10);  // the kernel took the first run and 10 bytes of the frame
    REQUIRE(rest.size() == 2);
    CHECK(rest[0].size() == big->frame().size() - 10);
    CHECK(static_cast<char const*>(rest[0].data()) == big->frame().data() + 10);
    CHECK(rest[1].size() == total - first - big->frame().size());

    gate.pending().push(outgoing_message::text("d"));  // queued while the write is in flight
    gate.release_writing();
    gate.recycle_spare();
    CHECK(gate.writing().messages() == 0);
    CHECK(gate.pending().messages() == 1);
}

TEST_CASE("write gate: a parked Beast write runs once, and a dropped one never", "[write_gate]") {
    wsig::detail::write_gate gate;
    int runs = 0;
    gate.park([&] { ++runs; });
    CHECK(gate.has_parked());
    gate.run_parked();
    CHECK(runs == 1);
    CHECK_FALSE(gate.has_parked());
    gate.park([&] { ++runs; });
    gate.drop_parked();
    CHECK_FALSE(gate.has_parked());
    CHECK(runs == 1);
}
