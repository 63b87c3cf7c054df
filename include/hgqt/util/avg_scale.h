// The scale of an average pool as an exact fixed-point constant, one definition for training
// (nn::PoolImpl), the archive (pool_map) and therefore every back end. Header-only; no LibTorch.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace hgqt::util {

/// Significant bits of the quantized 1 / count of an average over a count that is not a power of
/// two: the default, and the range a config or archive may ask for.
constexpr int kDefaultAvgScaleBits = 8;
constexpr int kMinAvgScaleBits = 2;
constexpr int kMaxAvgScaleBits = 16;

/// An average over `count` elements is (exact sum) * mult * 2^-shift.
struct AvgScale {
  int64_t mult = 1;
  int shift = 0;
  double value() const {
    return static_cast<double>(mult) / static_cast<double>(int64_t{1} << shift);
  }
};

/// count = 2^s: mult 1, shift s (the exact average, a shift). Any other count: 1 / count rounded
/// to nearest (ties up) with `bits` significant bits: shift = floor(log2 count) + bits, mult =
/// round(2^shift / count), in [2^(bits - 1), 2^bits], then mult's trailing zero bits dropped
/// from mult and shift (the same value: 228 2^-11 becomes 57 2^-9, so that no constant zero bits
/// reach the hardware); the relative error |mult 2^-shift count - 1| is at most 2^-bits. Throws
/// std::invalid_argument for count < 1 or bits outside [kMinAvgScaleBits, kMaxAvgScaleBits].
inline AvgScale avg_scale(int64_t count, int bits) {
  if (count < 1 || count > (int64_t{1} << 40))
    throw std::invalid_argument("average over " + std::to_string(count) +
                                " elements: the count must be in [1, 2^40]");
  int k = 0;
  while ((int64_t{2} << k) <= count) ++k;  // floor(log2 count)
  if ((int64_t{1} << k) == count) return {1, k};
  if (bits < kMinAvgScaleBits || bits > kMaxAvgScaleBits)
    throw std::invalid_argument("scale_bits " + std::to_string(bits) + " outside [" +
                                std::to_string(kMinAvgScaleBits) + ", " +
                                std::to_string(kMaxAvgScaleBits) + "]");
  AvgScale s;
  s.shift = k + bits;
  s.mult = ((int64_t{1} << (s.shift + 1)) + count) / (2 * count);
  while (s.mult % 2 == 0 && s.shift > 0) {
    s.mult /= 2;
    --s.shift;
  }
  return s;
}

inline bool is_power_of_two(int64_t n) {
  return n > 0 && (n & (n - 1)) == 0;
}

}  // namespace hgqt::util
