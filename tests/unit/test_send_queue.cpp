// The session's send queue: small frames copied into runs, big ones shared, order kept.
#include "catch.hpp"

#include "server/send_queue.hpp"

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
