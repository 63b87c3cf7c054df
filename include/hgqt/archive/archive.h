// The model archive: hgqt's own interchange format between training and every back end
// (emulator, HLS, Verilog, QONNX). No LibTorch here. Specified in docs/model-format.md.
//
// Data flow (quantization.md section 8), layer by layer, per sample:
//   quantize:   y = Q_in(x)
//   flatten:    y = x (row-major, shape changes only)
//   dense:      xq = Q_in(x) (when it has an input quantizer); acc[o] = sum_j xq[j] * W[j,o] + b[o]
//               exactly; y = act(acc); y = Q_out(y) when it has an output quantizer
//   activation: y = Q_out(act(x))
// act is linear or relu (exact). Q applies per element k, i, f, rounding, then overflow.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "hgqt/quant/fixed_point.h"

namespace hgqt::archive {

/// The format version this build writes and reads.
constexpr int kFormatVersion = 1;

/// A malformed or unreadable archive: names the file and the field.
class ArchiveError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A quantizer expanded to one (k, i, f) per element of `shape` (row-major).
/// Width W = k + i + f; W <= 0 means the element is pruned (always 0).
struct QuantSpec {
  std::vector<int64_t> shape;  ///< per-sample shape (activations) or the constant's shape
  std::vector<int32_t> k, i, f;
  quant::RoundingMode round = quant::RoundingMode::RND;
  quant::OverflowMode overflow = quant::OverflowMode::WRAP;

  int64_t size() const { return static_cast<int64_t>(k.size()); }
  int width(int64_t n) const { return k[n] + i[n] + f[n]; }
  /// Q(x) of element n in double (quantization.md section 2, eval semantics).
  double apply(double x, int64_t n) const {
    return quant::quantize_fixed(x, k[n], i[n], f[n], round, overflow);
  }
};

/// An exact constant tensor (kernel or bias): element n is mantissa[n] * 2^exponent[n].
struct Constant {
  std::vector<int64_t> shape;
  std::vector<int64_t> mantissa;
  std::vector<int32_t> exponent;  ///< -f of the element's quantizer
  QuantSpec quantizer;            ///< the weight quantizer the values came from
  int64_t size() const { return static_cast<int64_t>(mantissa.size()); }
  double value(int64_t n) const;  ///< exact in double
};

/// One layer. Which optional fields are set depends on `type` (see the data flow above).
struct Layer {
  std::string name;
  std::string type;  ///< quantize, flatten, dense, activation
  std::vector<int64_t> input_shape, output_shape;  ///< per sample
  std::string activation = "linear";               ///< dense, activation: linear | relu
  std::optional<QuantSpec> input_quantizer;        ///< quantize (required), dense (optional)
  std::optional<Constant> kernel;                  ///< dense: [in, out]
  std::optional<Constant> bias;                    ///< dense: [out] (optional)
  std::optional<QuantSpec> output_quantizer;       ///< activation (required), dense (optional)
};

/// Calibration record written by the trace.
struct TraceInfo {
  bool traced = false;
  int64_t samples = 0;     ///< calibration samples
  std::string data;        ///< where they came from (file name)
  double exact_ebops = 0;  ///< after the trace
};

/// A whole model.
struct Archive {
  int format_version = kFormatVersion;
  std::string producer;  ///< "hgqt <version>"
  std::string name = "model";
  std::vector<int64_t> input_shape, output_shape;  ///< per sample
  std::vector<Layer> layers;
  TraceInfo trace;
  /// Preprocessing applied to raw features before the model (float32, as in training):
  /// x = (x - mean) / std per feature. Empty when none.
  std::vector<float> feature_mean, feature_std;
  /// The model section of the training config (YAML), to rebuild a trainable model; may be empty.
  std::string model_yaml;
  /// Loss the model was trained with (cross_entropy: outputs are logits; mse: regression).
  std::string loss = "cross_entropy";

  int64_t input_size() const;
  int64_t output_size() const;
};

/// Checks the archive's internal consistency (shapes chain, array sizes, required quantizers,
/// widths within 62 bits, k in {0,1}). Throws ArchiveError naming `where`, the layer and field.
void validate(const Archive& a, const std::string& where = "archive");

/// Writes the archive as a directory `dir` holding model.json and tensors.h5 (replaced
/// atomically when it exists). Throws ArchiveError.
/// Validates first; writes into `dir.tmp-<pid>` and renames it into place, so a failure leaves a
/// previous archive intact. An existing `dir` is replaced only when it is empty, holds only
/// model.json / tensors.h5, or its model.json says "format": "hgqt-archive". An empty `producer`
/// is written as "hgqt <version>".
void write_archive(const Archive& a, const std::string& dir);
/// Reads and validates an archive directory (or its model.json). Errors name the file, the
/// field and what was expected: missing fields, wrong format version, truncated HDF5.
Archive read_archive(const std::string& path);

/// Product of a shape ("[]" is 1). Throws ArchiveError on a negative dimension or more than
/// 2^40 elements.
int64_t shape_size(const std::vector<int64_t>& shape);

}  // namespace hgqt::archive
