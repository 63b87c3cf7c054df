// The LUT cost of a learned lookup-table connection (HGQ-LUT), one definition for the exact cost
// after the trace (archive::exact_ebops) and the training cost (nn::QLearnedLUT, the same
// formula on tensors). Header-only; no LibTorch.
#pragma once

#include <algorithm>
#include <cmath>

namespace hgqt::util {

/// c(b) = 2^(b - 5) is clamped at this exponent, so that the cost stays finite.
constexpr double kMaxLutCostExponent = 16;

/// LUT6 equivalents of a table over b_in input bits: 2^(b_in - 5) for b_in >= 5, b_in / 5 below.
inline double lut_table_luts(double b_in) {
  return b_in >= 5 ? std::exp2(std::min(b_in - 5, kMaxLutCostExponent)) : b_in / 5;
}

/// One connection with input width b_in and table output width b_out (k + i + f each): the table,
/// c(b_in) * b_out / 2, plus its b_out bits into the adder tree; 0 when it is pruned (b_in = 0)
/// or its table is empty (b_out = 0).
inline double lut_connection_cost(double b_in, double b_out) {
  if (b_in <= 0 || b_out <= 0) return 0;
  return lut_table_luts(b_in) * b_out / 2 + b_out;
}

}  // namespace hgqt::util
