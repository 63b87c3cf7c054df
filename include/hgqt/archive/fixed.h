// Exact integer fixed-point arithmetic and type inference over an archive; no LibTorch.
// A value is an integer mantissa m times 2^-frac. The emulator, the HLS and Verilog generators
// and the exact EBOPs all take their types from here, so they agree by construction.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hgqt/archive/archive.h"
#include "hgqt/util/einsum.h"

namespace hgqt::archive {

using int128 = __int128;

/// The type of an exact fixed-point value: a `width`-bit integer (two's complement when
/// `is_signed`) times 2^-frac. `width == 0` means the value is the constant 0.
/// In ap_fixed terms: ap_fixed<width, width - frac> (signed) or ap_ufixed<width, width - frac>.
struct FixedType {
  bool is_signed = false;
  int width = 0;
  int frac = 0;
  int int_bits() const { return width - frac; }  ///< ap_fixed's I (sign included)
  bool operator==(const FixedType& o) const {
    return is_signed == o.is_signed && width == o.width && frac == o.frac;
  }
  bool operator!=(const FixedType& o) const { return !(*this == o); }
  /// "ap_fixed<8,3>", "ap_ufixed<4,-1>", or "zero".
  std::string to_string() const;
  /// Smallest and largest mantissa.
  int128 min_mantissa() const;
  int128 max_mantissa() const;
};

/// The type of a quantizer's output element n: {k, k+i+f, f}; width 0 when pruned (W <= 0).
FixedType quantizer_type(const QuantSpec& q, int64_t n);
/// The smallest type holding every mantissa in [lo, hi] at `frac` (frac kept as given).
FixedType type_of_range(int128 lo, int128 hi, int frac);

/// The mantissa of an exact value (m, from_frac) re-expressed at `to_frac` >= from_frac.
int128 align(int128 m, int from_frac, int to_frac);  ///< throws ArchiveError on overflow

/// Q of quantization.md section 2 on an exact value m * 2^-frac, in integers: returns the
/// mantissa at the quantizer's f of element n (0 when pruned). Rounding before overflow.
/// `clipped`, when given, is set when overflow changed the rounded value (wrapped or saturated).
int128 quantize_exact(int128 m, int frac, const QuantSpec& q, int64_t n, bool* clipped = nullptr);
/// Q of an input element given as a double (finite, |x * 2^f| < 2^120; else ArchiveError):
/// x * 2^f is exact in double, rounded there, then overflowed in integers.
int128 quantize_double(double x, const QuantSpec& q, int64_t n, bool* clipped = nullptr);
/// Rounding of m * 2^-shift to an integer (shift may be <= 0: exact left shift).
int128 round_shift(int128 m, int shift, quant::RoundingMode mode);
/// Overflow of section 2 on an integer mantissa with width W = k + i + f > 0.
int128 overflow_int(int128 m, int k, int i, int f, quant::OverflowMode mode);

/// Number of bits between the most and least significant nonzero bits of |m|, both included
/// (binary 001xx1000 counts 4; 0 counts 0): the width of a constant for exact EBOPs.
int bit_span(int128 m);

/// The products of a linear layer (dense, conv1d, conv2d, scale), as a sparse matrix by output:
/// output o (row-major over output_shape) sums x[input[t]] * W[weight[t]] for t in
/// [begin[o], begin[o + 1]) (x: the quantized input, row-major over input_shape; W: the kernel's
/// elements, row-major), plus bias element bias[o] when bias[o] >= 0. Products that fall into
/// conv zero padding are absent; zero weights are present (consumers skip them).
struct LinearMap {
  std::vector<int64_t> begin;  ///< n_out + 1 offsets into input / weight
  std::vector<int64_t> input, weight;
  std::vector<int64_t> bias;  ///< per output: bias element, or -1 (no bias)
  int64_t n_out() const { return static_cast<int64_t>(begin.size()) - 1; }
};
/// The map of a linear layer (throws ArchiveError for another type or inconsistent attributes).
LinearMap linear_map(const Layer& l);

/// The windows of a pool layer: output o reads input[t] for t in [begin[o], begin[o + 1]).
struct PoolMap {
  std::vector<int64_t> begin, input;
  bool max = true;  ///< max, else avg or sum
  /// avg: the average is sum * mult * 2^-shift (util::avg_scale: mult 1 for a window of 2^shift
  /// elements); sum: mult 1, shift 0
  int shift = 0;
  int64_t mult = 1;
  int64_t n_out() const { return static_cast<int64_t>(begin.size()) - 1; }
};
PoolMap pool_map(const Layer& l);

/// Where each output element of a concatenate layer comes from: input slot and element.
struct ConcatMap {
  std::vector<int32_t> slot;
  std::vector<int64_t> element;
};
/// `input_shapes`: the shapes of the layer's inputs, in order.
ConcatMap concat_map(const Layer& l, const std::vector<std::vector<int64_t>>& input_shapes);
/// The map of concatenate layer `li` of `a` (its inputs' shapes from the graph).
ConcatMap concat_map(const Archive& a, size_t li);

/// Where each output element of an add layer reads its inputs: element[s][o] is input s's element
/// added into output element o (util::broadcast_shape's rules).
struct AddMap {
  std::vector<std::vector<int64_t>> element;
};
/// `input_shapes`: the shapes of the layer's inputs, in order.
AddMap add_map(const Layer& l, const std::vector<std::vector<int64_t>>& input_shapes);
/// The map of add layer `li` of `a` (its inputs' shapes from the graph).
AddMap add_map(const Archive& a, size_t li);

/// The products of einsum layer `li` of `a` (util::einsum_map over its inputs' shapes; throws
/// ArchiveError naming the layer).
util::EinsumMap einsum_map(const Archive& a, size_t li);

/// The reciprocal table's input is taken as at least this (1/0 would be infinite): 2^-30.
constexpr double kSoftmaxMinSum = 0x1p-30;

/// The stages of a softmax layer (archive.h), one type each for the whole layer. The input is
/// taken as `rows` rows of `n` elements (n: the last axis).
struct SoftmaxTypes {
  int64_t rows = 0, n = 0;
  FixedType max;      ///< every quantized input re-read at one frac (the largest), and the row max
  FixedType diff;     ///< d_j = x_j - max (<= 0), at max.frac
  FixedType exp_in;   ///< u = Q_ei(d): the exp table's index
  FixedType exp_out;  ///< e = EXP[u] = Q_eo(exp(min(u, 0)))
  FixedType sum;      ///< the exact sum of a row's e, at exp_out.frac
  FixedType inv_in;   ///< s = Q_ii(sum): the reciprocal table's index
  FixedType inv_out;  ///< r = INV[s] = Q_io(1 / max(s, 2^-30))
  FixedType product;  ///< e * r exactly, at exp_out.frac + inv_out.frac (before Q_out)
  int128 product_lo = 0, product_hi = 0;  ///< its range (the tables' extremes multiplied)
  /// Table entries (mantissas at exp_out.frac / inv_out.frac), indexed by the index's mantissa
  /// minus its smallest mantissa (a width-0 index has one entry: the value at 0).
  std::vector<int64_t> exp_table, inv_table;
  /// Entry of a table for an index mantissa `m` of type `index`.
  static int64_t entry(const std::vector<int64_t>& table, const FixedType& index, int128 m) {
    return table[index.width == 0 ? 0 : static_cast<size_t>(m - index.min_mantissa())];
  }
};
/// The softmax stages of layer `l` whose quantized input has `types` with mantissa ranges
/// [lo, hi] per element (throws ArchiveError for a table index wider than kMaxLutInputBits).
SoftmaxTypes softmax_types(const Layer& l, const std::vector<FixedType>& types,
                           const std::vector<int128>& lo, const std::vector<int128>& hi);

/// Types along the data flow of one layer, per element.
struct LayerTypes {
  std::vector<FixedType> input;  ///< what the layer receives (its first input)
  /// After the layer's input quantizer (linear layers with one, quantize); else = input.
  std::vector<FixedType> quantized_input;
  /// einsum: its second operand after input2_quantizer; else empty.
  std::vector<FixedType> quantized_input2;
  /// Linear layers, add and einsum: the exact sum before the activation (einsum: of products);
  /// pool: the exact result (avg: the sum re-read at frac + shift); softmax: the product e * r
  /// before Q_out; else empty.
  std::vector<FixedType> accumulator;
  std::vector<FixedType> output;  ///< what the layer passes on
  /// Exact value range of each accumulator element (mantissas at accumulator[o].frac).
  std::vector<int128> acc_lo, acc_hi;
  /// Exact value range of each output element (mantissas at output[o].frac).
  std::vector<int128> out_lo, out_hi;
  SoftmaxTypes softmax;  ///< softmax layers only
};

/// Infers the exact types of every layer. The model input is float: every path from it must be
/// quantized before any arithmetic (by a quantize layer or a linear layer's input quantizer;
/// flatten and reshape pass it on), otherwise ArchiveError. Accumulator widths are derived from the
/// weights and input ranges so that the exact sum cannot overflow; relu drops the sign where the
/// range allows.
std::vector<LayerTypes> infer_types(const Archive& a);

/// Exact EBOPs of each layer (quantization.md section 6): for the linear layers, the sum over
/// every product of bits(input) * span(weight), plus span(bias) once per output element that adds
/// it; input bits exclude the sign. softmax: one product e * r per element, bits(e) * bits(r)
/// (signs excluded); einsum: the sum over every product of bits(a) * bits(b) (signs excluded);
/// lut with learned tables: the LUT cost of each element, util::lut_connection_cost of its input
/// and output widths (k + i + f). Other layers: 0.
std::vector<double> exact_ebops(const Archive& a);

/// Decimal text of a 128-bit integer (for messages and generated code).
std::string to_string(int128 v);

}  // namespace hgqt::archive
