// The integer emulator: runs an archive with exact arithmetic (quantization.md section 8).
// No LibTorch. Its outputs are the reference every back end is compared with.
//
// Two paths give identical outputs and overflow counts:
// - the exact path (run_exact): one sample at a time, mantissas in __int128, overflow-checked;
// - the batched path (run_batch, run): layer by layer over blocks of samples, blocks in parallel
//   (OpenMP). Every value is held as an exact double, quantizers are applied in double arithmetic
//   where the inferred ranges prove it exact, and linear layers are matrix products through BLAS
//   in float32 or float64 where the bound on every partial sum proves them exact (see
//   LinearPrecision); whatever the proofs do not cover runs the exact path's code.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hgqt/archive/fixed.h"

namespace hgqt::archive {

/// What one run counted: values that overflowed a WRAP quantizer (wrapped) or were clipped by a
/// SAT/SAT_SYM quantizer, over all quantizers and samples.
struct EmulatorStats {
  int64_t samples = 0;
  int64_t wrapped = 0;
  int64_t saturated = 0;
};

/// How run_batch and run work. The outputs and counts never depend on these.
///
/// Example: `EmulatorOptions o; o.threads = 1; Emulator emu(a, o);`
struct EmulatorOptions {
  /// Threads of the batched path (0: all cores, omp_get_max_threads()).
  int threads = 0;
  /// Run every sample through run_exact (int128, one sample at a time, one thread): the
  /// reference path.
  bool exact = false;
  /// Samples per block of the batched path (0: chosen from the layer sizes).
  int64_t block = 0;
};

/// The arithmetic of a linear layer in the batched path, chosen per layer from the bound
/// S = max over outputs of (sum of |x| * |w| over the output's products, plus |bias|), taken at
/// the accumulator's fractional bits. Every partial sum, in any order, is a multiple of the
/// accumulator's step no larger than S in magnitude, so it is exact in a float with that many
/// mantissa bits:
enum class LinearPrecision {
  Float32,  ///< S < 2^24: float32 matrix product (sgemm)
  Float64,  ///< S < 2^53: float64 (dgemm, or a sparse sum when the layer shares no weights)
  Int128,   ///< otherwise: the exact path's __int128 sums, sample by sample
};
const char* to_string(LinearPrecision p);

struct BatchPlan;  // src/archive/emulator_batch.h: the batched path's per-layer kernels

/// Runs an archive exactly; see the file comment for the two paths.
class Emulator {
 public:
  /// Validates the archive and infers its types; throws ArchiveError.
  explicit Emulator(Archive a, EmulatorOptions options = {});

  /// One sample on the exact path: `x` holds input_size() doubles (the model's input, after any
  /// preprocessing); `y` receives output_size() mantissas, element o at output_types()[o].frac.
  void run_exact(const double* x, int128* y, EmulatorStats* stats = nullptr) const;
  /// One sample with outputs as doubles (exact: throws ArchiveError when an output is wider than
  /// the 53 bits a double holds; use run_exact then).
  void run(const double* x, double* y, EmulatorStats* stats = nullptr) const;
  /// `n` samples, row-major [n, input_size] -> [n, output_size] (throws like run).
  std::vector<double> run_batch(const std::vector<double>& x, int64_t n,
                                EmulatorStats* stats = nullptr) const;
  /// The same into `y` (n * output_size doubles).
  void run_batch(const double* x, int64_t n, double* y, EmulatorStats* stats = nullptr) const;

  const EmulatorOptions& options() const { return options_; }
  void set_options(const EmulatorOptions& options) { options_ = options; }
  /// Whether run_batch can take the batched path for this archive (every value it stores is an
  /// exact double: at most 53 bits wide); otherwise it runs the exact path sample by sample.
  bool batched() const { return batch_ != nullptr; }
  /// The precision of linear layer `layer` in the batched path (nullopt: not a linear layer, or
  /// no batched path).
  std::optional<LinearPrecision> linear_precision(size_t layer) const;
  /// One line per layer: how the batched path runs it (for benchmarks and logs).
  std::string describe_plan() const;

  const Archive& archive() const { return a_; }
  const std::vector<LayerTypes>& types() const { return types_; }
  const std::vector<FixedType>& output_types() const { return types_.back().output; }
  int64_t input_size() const { return a_.input_size(); }
  int64_t output_size() const { return a_.output_size(); }

 private:
  /// What each layer reads and its precomputed maps.
  struct Plan {
    std::vector<int64_t> inputs;  ///< layer indices, -1 the model input
    LinearMap linear;
    PoolMap pool;
    ConcatMap concat;
    AddMap add;              ///< add layers: each input's element per output element
    util::EinsumMap einsum;  ///< einsum layers: the products of each output element
    std::vector<int64_t> lut_offsets;
    bool float_output = false;  ///< flatten / reshape of the float model input
  };
  /// Layer `li` of one sample on the exact path: reads the mantissas `vals` of its inputs (or the
  /// float model input `x`) and writes its output mantissas (at types()[li].output fracs) to `v`.
  void exact_layer(size_t li, const std::vector<std::vector<int128>>& vals, const double* x,
                   std::vector<int128>& v, int64_t sample, EmulatorStats* stats) const;
  void check_output_width() const;
  void run_batch_exact(const double* x, int64_t n, double* y, EmulatorStats* stats) const;
  /// The batched path; returns false (stats untouched) when a sample needs the exact path's
  /// error message (a non-finite or too large input).
  bool run_batch_fast(const double* x, int64_t n, double* y, EmulatorStats* stats) const;

  friend struct BatchPlan;
  Archive a_;
  EmulatorOptions options_;
  std::vector<LayerTypes> types_;
  std::vector<Plan> plans_;
  int widest_output_ = 0;                   ///< widest output type, for run()'s exactness check
  std::shared_ptr<const BatchPlan> batch_;  ///< null when the batched path cannot run the archive
};

/// Applies the archive's preprocessing (feature_mean / feature_std) to float32 rows in place,
/// in float32 exactly as training did; no-op when the archive has none.
void preprocess(const Archive& a, std::vector<float>& x, int64_t n);

/// Rows of `dataset` in the HDF5 `file` as the emulator takes them: checked against the model's
/// input size (data::DataError naming file, dataset and both sizes), at most `limit` rows
/// (0: all), preprocessed. `rows` receives the number of rows.
std::vector<double> load_model_inputs(const Archive& a, const std::string& file,
                                      const std::string& dataset, int64_t limit, int64_t& rows);

}  // namespace hgqt::archive
