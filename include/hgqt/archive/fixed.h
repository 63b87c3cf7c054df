// Exact integer fixed-point arithmetic and type inference over an archive; no LibTorch.
// A value is an integer mantissa m times 2^-frac. The emulator, the HLS and Verilog generators
// and the exact EBOPs all take their types from here, so they agree by construction.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hgqt/archive/archive.h"

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

/// Types along the data flow of one layer, per element.
struct LayerTypes {
  std::vector<FixedType> input;  ///< what the layer receives (after the previous layer)
  /// After the layer's input quantizer (dense with an input quantizer, quantize); else = input.
  std::vector<FixedType> quantized_input;
  std::vector<FixedType> accumulator;  ///< dense: exact sum before the activation; else empty
  std::vector<FixedType> output;       ///< what the layer passes on
  /// dense: exact value range of each accumulator (mantissas at accumulator[o].frac).
  std::vector<int128> acc_lo, acc_hi;
};

/// Infers the exact types of every layer. The model input is float: the first layer with
/// arithmetic must quantize it (a quantize layer or a dense layer with an input quantizer),
/// otherwise ArchiveError. Accumulator widths are derived from the weights and input ranges so
/// that the exact sum cannot overflow; relu drops the sign where the range allows.
std::vector<LayerTypes> infer_types(const Archive& a);

/// Exact EBOPs of each layer (quantization.md section 6): for dense,
/// sum_{j,o} bits(input j) * span(W[j,o]) + sum_o span(b[o]); input bits exclude the sign.
std::vector<double> exact_ebops(const Archive& a);

/// Decimal text of a 128-bit integer (for messages and generated code).
std::string to_string(int128 v);

}  // namespace hgqt::archive
