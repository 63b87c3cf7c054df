// Adder graphs for constant matrix-vector products (CMVM); no LibTorch.
//
// A linear layer with constant weights computes, for every output o,
//
//   y_o = konst_o + sum_t sign_t * x_{input_t} * 2^{shift_t}
//
// over the signed digits of its weights (canonical signed digits: one term per nonzero digit of
// every product). The hardware of such a sum is a set of two-operand adders. Written one tree per
// output, an adder computes a partial sum of one output only. The shared form (the common
// subexpression elimination of the distributed-arithmetic literature: Hartley 1996; da4ml, Sun et
// al. 2025) repeatedly takes the two-term pattern `(x_a << ka) +/- (x_b << kb)` that occurs most
// often over all outputs (weighted by the adder's width), computes it once as a shared adder and
// substitutes it into every output where it occurs, as long as no output's adder depth grows by
// more than `extra_depth` levels over its minimal tree. What is left of each output is summed by
// a depth-first (Huffman) tree over the shared values.
//
// Every node carries the exact range of its value (from its linear form over the inputs, which
// are independent), so the widths of the adders are exact by construction. The graph is
// evaluated exactly by evaluate() (the tests' interpreter) and printed by the Verilog generator.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace hgqt::exporters {

using adder_int = __int128;

/// One signed digit of a product: (neg ? -1 : 1) * x_input * 2^shift.
struct DigitTerm {
  int64_t input = 0;
  int shift = 0;
  bool neg = false;
};

/// A constant matrix-vector product in signed digits.
struct CmvmProblem {
  /// The integer range [lo, hi] of every input (lo <= hi).
  std::vector<adder_int> input_lo, input_hi;
  /// Each output's signed digits and constant.
  std::vector<std::vector<DigitTerm>> outputs;
  std::vector<adder_int> konst;  ///< empty, or one per output
};

struct AdderGraphOptions {
  /// Share two-term patterns across outputs (false: one independent tree per output).
  bool share = true;
  /// The most adder levels any output may gain over its minimal tree by sharing.
  int extra_depth = 2;
  /// Above this many digit pairs (the size of the pattern table) the layer is not shared: the
  /// optimizer's memory and time grow with it. The result says so in `note`.
  int64_t max_pairs = 40'000'000;
};

struct AdderNode {
  enum class Kind { Input, Const, Add };
  Kind kind = Kind::Input;
  int64_t input = -1;   ///< Input: the input index
  adder_int value = 0;  ///< Const: the value
  int a = -1, b = -1;   ///< Add: value = (v_a << ka) + (sub ? -1 : 1) * (v_b << kb)
  int ka = 0, kb = 0;   ///< one of them is 0
  bool sub = false;
  adder_int lo = 0, hi = 0;  ///< the exact range of the value
  int width = 0;             ///< signed width holding [lo, hi] (Add and Const nodes)
  int depth = 0;             ///< adder levels from the inputs
  int logic_bits = 0;        ///< Add: the estimated bits that need logic (see logic_bits())
  int uses = 0;              ///< how many adders and outputs read it
};

/// Output o is (neg ? -1 : 1) * v_node * 2^shift; node -1: the output is 0.
struct AdderOutput {
  int node = -1;
  int shift = 0;
  bool neg = false;
};

struct AdderGraph {
  std::vector<AdderNode> nodes;  ///< topological order: operands before the adders reading them
  std::vector<AdderOutput> outputs;
  int64_t adders = 0;         ///< Add nodes
  int64_t shared_adders = 0;  ///< Add nodes read more than once
  int depth = 0;              ///< the deepest output, in adder levels
  int64_t adder_bits = 0;     ///< sum of the Add nodes' widths
  int64_t logic_bits = 0;     ///< sum of the Add nodes' logic bits (a proxy for LUTs)
  std::string note;           ///< why sharing was not applied, when it was not
};

/// The bits of the adder (v_a << ka) +/- (v_b << kb) of result width `width` that need logic:
/// the positions where both operands may hold a nonzero bit (a never-negative operand is zero
/// above its magnitude, a signed one extends its sign up to `width`; below the larger shift one
/// operand is zero). An estimate of its LUTs on an FPGA (one LUT per bit of a carry chain).
int logic_bits(const AdderNode& a, int ka, const AdderNode& b, int kb, int width);

/// The signed width holding every integer of [lo, hi] (at least 1).
int adder_signed_width(adder_int lo, adder_int hi);

/// Builds the adder graph of `p`. Throws std::invalid_argument for a malformed problem (an input
/// index out of range, lo > hi, a shift outside [0, 126]) and std::overflow_error when a value
/// needs more than 127 bits; `what` prefixes the messages.
AdderGraph build_adder_graph(const CmvmProblem& p, const AdderGraphOptions& options,
                             const std::string& what = "adder graph");

/// The outputs for one input vector, computed exactly by walking the graph (the interpreter the
/// tests compare with the direct sums); throws std::invalid_argument when x is outside a range.
std::vector<adder_int> evaluate(const AdderGraph& g, const std::vector<adder_int>& x);

/// The canonical signed digits (non-adjacent form) of m: (position, +1 or -1), lowest first.
std::vector<std::pair<int, int>> naf_digits(adder_int m);

}  // namespace hgqt::exporters
