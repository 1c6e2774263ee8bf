// Private to the server: what a WebSocket session has queued for its socket, in order.
//
// A frame of at most `copy_limit` bytes is copied into a run of contiguous bytes; a bigger one is
// shared with every other recipient (a broadcast never copies it). So the 15 small broadcasts a
// subscriber collects in one round leave as one buffer: no reference count per recipient and
// message, and one iovec for the kernel instead of 15 (measured in scripts/bench's fan-out).
// Not thread-safe: the session guards it.
#pragma once

#include <wsig/message.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace wsig::detail {

class send_queue {
public:
    static constexpr std::size_t copy_limit = 1024;                   // bytes of frame copied rather than shared
    static constexpr std::size_t run_limit = std::size_t{64} * 1024;  // bytes in one run
    static constexpr std::size_t spare_limit = 4096;                  // capacity a drained queue keeps for the next run

    // One buffer of the queue: a run of copied frames, or one shared frame.
    struct chunk {
        message_ptr shared;  // null for a run
        std::string run;
        std::size_t messages = 0;
        std::string_view bytes() const noexcept { return shared ? shared->frame() : std::string_view(run); }
    };

    bool empty() const noexcept { return chunks_.empty(); }
    std::size_t bytes() const noexcept { return bytes_; }
    std::size_t messages() const noexcept { return messages_; }
    std::vector<chunk> const& chunks() const noexcept { return chunks_; }

    void push(message_ptr const& m) {
        auto const frame = m->frame();
        bytes_ += frame.size();
        messages_ += m->messages();
        if (frame.size() > copy_limit) {
            chunks_.push_back(chunk{m, {}, m->messages()});
            return;
        }
        if (chunks_.empty() || chunks_.back().shared || chunks_.back().run.size() + frame.size() > run_limit) {
            chunks_.push_back(chunk{nullptr, std::move(spare_), 0});
            spare_.clear();
        }
        chunks_.back().run.append(frame);
        chunks_.back().messages += m->messages();
    }

    // Moves everything into `out` (empty) and leaves this queue empty.
    void take(send_queue& out) noexcept {
        out.chunks_.swap(chunks_);
        std::swap(out.bytes_, bytes_);
        std::swap(out.messages_, messages_);
    }

    // Empties the queue; a run's buffer is kept for the next one when it is small.
    void clear() noexcept {
        for (auto& c : chunks_) {
            if (!c.shared && !has_buffer(spare_) && c.run.capacity() <= spare_limit) {
                c.run.clear();
                spare_ = std::move(c.run);
            }
        }
        chunks_.clear();
        bytes_ = 0;
        messages_ = 0;
    }

    // The spare buffer of `from`, when this queue has none (the queue that drains hands it back to
    // the one that fills).
    void adopt_spare(send_queue& from) noexcept {
        if (!has_buffer(spare_)) std::swap(spare_, from.spare_);
    }

private:
    static bool has_buffer(std::string const& s) noexcept { return s.capacity() > std::string().capacity(); }

    std::vector<chunk> chunks_;
    std::string spare_;
    std::size_t bytes_ = 0;
    std::size_t messages_ = 0;
};

}  // namespace wsig::detail
