// The batched path of archive::Emulator (emulator_batch.cpp); private to src/archive.
//
// Every value is held as the double of its exact value m * 2^-frac (the archive's types are at
// most 53 bits wide, or there is no batched path). Each layer runs over a block of samples:
// quantizers in double arithmetic (RowQuantizer), linear layers as BLAS matrix products
// (BatchLayer::precision), pools, adds, concatenations and lookup tables elementwise, and
// whatever no proof covers through the exact path's Emulator::exact_layer, sample by sample.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hgqt/archive/emulator.h"

namespace hgqt::archive {

/// One quantizer applied to rows of doubles. `fast`: the double kernel (x * 2^f, floor / rint,
/// clamp or wrap on the integer, all exact below 2^52) covers every element; otherwise each
/// element goes through quantize_exact (or quantize_double for the raw model input).
struct RowQuantizer {
  QuantSpec spec;  ///< a copy (copies of an Emulator share its plan)
  int64_t size = 0;
  bool raw = false;   ///< the source is the float model input (checked element by element)
  bool fast = false;  ///< the double kernel is exact for every element (raw: every width <= 52)
  /// Per element: 2^f and 2^-f (0 when pruned), the overflow bounds of the mantissa, 2^W, 2^-W.
  std::vector<double> scale, unscale, lo, hi, span, inv_span;
  std::vector<double> to_source;  ///< 2^frac of each source value (the exact fallback)
  std::vector<int> source_frac;
  using Kernel = int64_t (*)(const RowQuantizer&, const double*, double*, int64_t*);
  Kernel kernel = nullptr;
  /// Quantizes `rows` rows of `size` values (`in` may equal `out`); returns how many clipped.
  /// Throws ArchiveError for a raw input quantize_double rejects.
  int64_t apply(const double* in, int64_t in_stride, double* out, int64_t out_stride,
                int64_t rows) const;
};

/// A contiguous run of an im2col row: A[row + k] = x[input + k] for k < length.
struct GatherRun {
  int64_t row = 0, input = 0, length = 0;
};

/// How the batched path runs one layer.
struct BatchLayer {
  enum class Kind { Alias, Quantize, Activation, Lut, Linear, Pool, Add, Concat, Exact };
  Kind kind = Kind::Exact;
  std::string why_exact;  ///< Kind::Exact: the reason (for describe)
  int64_t n_in = 0, n_out = 0;
  bool relu = false;
  std::optional<RowQuantizer> in_q, out_q;

  bool linear = false;  ///< a linear layer (its sums: `precision` when Kind::Linear, else int128)
  // Linear: output o = p * F + f sums A[p, r] * W[r, f] over the K kernel rows r, where A is the
  // im2col matrix of position p (runs[run_begin[p] .. run_begin[p + 1]]); `identity`: A is the
  // input itself (dense). Without that shared-weight structure: sparse sums over `terms`.
  LinearPrecision precision = LinearPrecision::Int128;
  bool gemm = false, identity = false;
  int64_t P = 0, F = 0, K = 0;
  std::vector<int64_t> run_begin;
  std::vector<GatherRun> runs;
  std::vector<float> w32;
  std::vector<double> w64;
  std::vector<double> bias;    ///< per output (0 without a bias)
  std::vector<double> term_w;  ///< sparse: the weight of each term of the layer's LinearMap
  double bound_log2 = 0;       ///< log2 of the bound S (describe)

  // Pool: windows per position (channel-contiguous) or per output (PoolMap).
  bool pool_max = true, pool_channels = false;
  double pool_scale = 1;  ///< avg: mult * 2^-shift (PoolMap)
  int64_t channels = 0;
  std::vector<int64_t> window_begin, window;  ///< per position: input positions

  // Lut: per element 2^f of the quantized input, its smallest mantissa, its table's offset, and
  // 2^-frac of the output.
  std::vector<double> lut_in_scale, lut_min, lut_out_unscale;
  std::vector<int64_t> lut_offset;
  std::vector<double> table;

  // Exact layers: 2^frac of every output (to mantissas for readers) and 2^-frac (back).
  std::vector<double> to_mantissa, from_mantissa;
};

struct BatchWorkspace;

/// The batched path of an Emulator.
struct BatchPlan {
  std::vector<BatchLayer> layers;
  /// The layer whose buffer holds layer li's output (itself, or what an alias reads);
  /// -1: the float model input.
  std::vector<int64_t> storage;
  int64_t values_per_sample = 0;  ///< doubles and floats a block holds per sample
  int64_t matrix_per_sample = 1;  ///< the largest GEMM operand per sample (BLAS takes int sizes)

  /// Null when some value of the archive is not an exact double (wider than 53 bits).
  static std::shared_ptr<const BatchPlan> build(const Emulator& e);
  /// Runs `n` samples; false when some sample must go through the exact path (for its error).
  bool run(const Emulator& e, const double* x, int64_t n, double* y, EmulatorStats& stats) const;
  std::optional<LinearPrecision> linear_precision(size_t layer) const;
  std::string describe(const Emulator& e) const;

 private:
  void run_block(const Emulator& e, const double* x, int64_t rows, double* y,
                 BatchWorkspace& ws) const;
};

}  // namespace hgqt::archive
