// Two-operand einsum equations over per-sample axes, shared by the layer (nn::QEinsum), the
// archive's einsum layer and every back end (no LibTorch).
//
// An equation "qhd,khd->hqk" names each axis of the two operands and of the output with one
// letter (a-z, A-Z). Per operand every letter appears at most once. A letter in the output must
// appear in an operand; a letter in no output axis is summed over and must appear in both
// operands (a product of two activations, Q K^T or P V: no sums over one operand alone). A letter
// shared by the operands has one size. The batch axis is not written; the output keeps at least
// one axis. At most 2^26 products per sample (einsum_map).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hgqt::util {

struct EinsumEquation {
  std::string a, b, out;  ///< the axis letters of operand a, operand b and the output
  std::string summed;     ///< the letters summed over, in order of first appearance in a
  std::string text() const { return a + "," + b + "->" + out; }
};

/// Parses "ab,bc->ac" (spaces ignored). Throws std::invalid_argument naming what is wrong.
EinsumEquation parse_einsum(const std::string& equation);

/// The output shape for operand shapes `a` and `b`. Throws std::invalid_argument naming the
/// operand and axis whose rank or size does not fit the equation.
std::vector<int64_t> einsum_output_shape(const EinsumEquation& eq, const std::vector<int64_t>& a,
                                         const std::vector<int64_t>& b);

/// The products of an einsum, by output element (row-major over the output shape): output o sums
/// a[first[t]] * b[second[t]] for t in [begin[o], begin[o + 1]) (row-major element indices), in
/// the order of the summed letters (row-major over them).
struct EinsumMap {
  std::vector<int64_t> begin;  ///< n_out + 1 offsets
  std::vector<int64_t> first, second;
  int64_t n_out() const { return static_cast<int64_t>(begin.size()) - 1; }
};
/// Throws as einsum_output_shape does.
EinsumMap einsum_map(const EinsumEquation& eq, const std::vector<int64_t>& a,
                     const std::vector<int64_t>& b);

}  // namespace hgqt::util
