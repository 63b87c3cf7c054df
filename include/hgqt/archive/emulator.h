// The integer emulator: runs an archive with integers only (quantization.md section 8).
// No LibTorch. Its outputs are the reference every back end is compared with.
#pragma once

#include <cstdint>
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

/// Runs an archive sample by sample with exact integer arithmetic (__int128, overflow-checked).
class Emulator {
 public:
  /// Validates the archive and infers its types; throws ArchiveError.
  explicit Emulator(Archive a);

  /// One sample: `x` holds input_size() doubles (the model's input, after any preprocessing);
  /// `y` receives output_size() mantissas, element o at output_types()[o].frac.
  void run_exact(const double* x, int128* y, EmulatorStats* stats = nullptr) const;
  /// One sample with outputs as doubles (exact: throws ArchiveError when an output is wider than
  /// the 53 bits a double holds; use run_exact then).
  void run(const double* x, double* y, EmulatorStats* stats = nullptr) const;
  /// `n` samples, row-major [n, input_size] -> [n, output_size].
  std::vector<double> run_batch(const std::vector<double>& x, int64_t n,
                                EmulatorStats* stats = nullptr) const;

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
    std::vector<int64_t> lut_offsets;
  };
  Archive a_;
  std::vector<LayerTypes> types_;
  std::vector<Plan> plans_;
  int widest_output_ = 0;  ///< widest output type, for run()'s exactness check
};

/// Applies the archive's preprocessing (feature_mean / feature_std) to float32 rows in place,
/// in float32 exactly as training did; no-op when the archive has none.
void preprocess(const Archive& a, std::vector<float>& x, int64_t n);

}  // namespace hgqt::archive
