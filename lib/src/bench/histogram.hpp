// A log-linear latency histogram in the style of HdrHistogram: fixed memory (60 KiB), values in
// nanoseconds from 0 to 2^63, relative error below 0.8 % (256 sub-buckets per power of two).
#pragma once

#include <wsig/bench.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace wsig::bench::detail {

class histogram {
public:
    static constexpr unsigned sub_bits = 8;
    static constexpr std::uint64_t sub_count = 1u << sub_bits;  // 256
    static constexpr std::uint64_t half = sub_count / 2;        // 128
    static constexpr std::size_t buckets = (64 - sub_bits + 1) * half + half;

    void record(std::uint64_t v) {
        ++counts_[index(v)];
        ++count_;
        sum_ += static_cast<double>(v);
        min_ = std::min(min_, v);
        max_ = std::max(max_, v);
    }

    void merge(histogram const& o) {
        for (std::size_t i = 0; i < buckets; ++i) counts_[i] += o.counts_[i];
        count_ += o.count_;
        sum_ += o.sum_;
        min_ = std::min(min_, o.min_);
        max_ = std::max(max_, o.max_);
    }

    std::uint64_t count() const { return count_; }

    // The highest value equivalent to the bucket holding the q-th quantile (q in [0,1]), capped
    // by the exact maximum, as HdrHistogram's valueAtPercentile.
    std::uint64_t quantile(double q) const {
        if (count_ == 0) return 0;
        auto rank = static_cast<std::uint64_t>(std::ceil(q * static_cast<double>(count_)));
        rank = std::clamp<std::uint64_t>(rank, 1, count_);
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < buckets; ++i) {
            seen += counts_[i];
            if (seen >= rank) return std::clamp(highest(i), min_, max_);
        }
        return max_;
    }

    bench::latency summary() const {
        bench::latency l;
        l.count = count_;
        if (count_ == 0) return l;
        l.min = min_;
        l.max = max_;
        l.mean = sum_ / static_cast<double>(count_);
        l.p50 = quantile(0.50);
        l.p90 = quantile(0.90);
        l.p99 = quantile(0.99);
        l.p99_9 = quantile(0.999);
        return l;
    }

    static std::size_t index(std::uint64_t v) {
        if (v < sub_count) return static_cast<std::size_t>(v);
        unsigned const msb = 63u - static_cast<unsigned>(std::countl_zero(v));
        unsigned const shift = msb - (sub_bits - 1);  // >= 1
        return static_cast<std::size_t>(shift * half + (v >> shift));
    }

    static std::uint64_t highest(std::size_t i) {
        if (i < sub_count) return i;
        std::uint64_t const shift = (i - half) / half;  // i = shift*half + sub, sub in [half, sub_count)
        std::uint64_t const sub = i - shift * half;
        if (shift >= 63) return std::numeric_limits<std::uint64_t>::max();
        return ((sub + 1) << shift) - 1;
    }

private:
    std::array<std::uint64_t, buckets> counts_{};
    std::uint64_t count_ = 0;
    double sum_ = 0;
    std::uint64_t min_ = std::numeric_limits<std::uint64_t>::max();
    std::uint64_t max_ = 0;
};

}  // namespace wsig::bench::detail
