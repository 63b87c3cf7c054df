// FixedQuantizer: a module holding trainable per-element fixed-point bit widths.
#pragma once

#include <torch/torch.h>

#include "hgqt/quant/fixed_point.h"
#include "hgqt/quant/quantize.h"

namespace hgqt::quant {

/// Where a quantizer sits; selects the defaults (quantization.md section 1, HGQ2's table).
enum class Place { Weight, Datalane, Bias };

/// Options of a FixedQuantizer.
/// Example: `FixedQuantizer q(QuantizerOptions({64}).f(4).overflow(OverflowMode::SAT));`
struct QuantizerOptions {
  /// `shape` is the per-sample shape of what is quantized (batch axis excluded when
  /// `batch_axis` is true, e.g. {784} for a flattened image; the whole weight shape otherwise).
  explicit QuantizerOptions(std::vector<int64_t> shape) : shape_(std::move(shape)) {}
  TORCH_ARG(std::vector<int64_t>, shape);
  TORCH_ARG(Parameterization, param) = Parameterization::KIF;
  TORCH_ARG(int, k) = 1;       ///< initial sign bit
  TORCH_ARG(double, b) = 8.0;  ///< KBI initial bits (sign excluded)
  TORCH_ARG(double, i) = 2.0;  ///< initial integer bits
  TORCH_ARG(double, f) = 6.0;  ///< KIF initial fractional bits
  TORCH_ARG(RoundingMode, round) = RoundingMode::RND;
  TORCH_ARG(OverflowMode, overflow) = OverflowMode::WRAP;
  TORCH_ARG(Granularity, granularity) = Granularity::Element;
  TORCH_ARG(bool, batch_axis) = true;  ///< inputs carry a leading batch axis
  TORCH_ARG(double, i_decay) = 0.01;   ///< WRAP: integer-bit decay per training step
  TORCH_ARG(bool, trainable) = true;   ///< bit widths receive gradients
  TORCH_ARG(double, b_min) = 0.0;      ///< projection bounds applied by constrain()
  TORCH_ARG(double, b_max) = kMaxMagnitudeBits;
  TORCH_ARG(double, i_min) = -16.0;
  TORCH_ARG(double, i_max) = 16.0;
  TORCH_ARG(double, f_min) = -16.0;
  TORCH_ARG(double, f_max) = kMaxMagnitudeBits;
};

/// The defaults of a place (HGQ2): weight KBI b=8 i=2 RND SAT_SYM; datalane KIF i=2 f=6 RND
/// WRAP; bias like datalane. All per element.
QuantizerOptions default_quantizer_options(Place place, std::vector<int64_t> shape);

/// A fixed-point quantizer with trainable bit widths (KIF or KBI), surrogate gradients, and
/// integer-bit tracking for WRAP quantizers in training (quantization.md section 4).
class FixedQuantizerImpl : public torch::nn::Cloneable<FixedQuantizerImpl> {
 public:
  explicit FixedQuantizerImpl(QuantizerOptions options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  /// Quantizes x; in training mode a WRAP quantizer first widens/decays its integer bits.
  torch::Tensor forward(const torch::Tensor& x);
  /// Quantizes x with eval semantics (WRAP applied, no noise, no state change).
  torch::Tensor apply_eval(const torch::Tensor& x) const;

  /// Bits per parameter element without the sign (KIF: relu(i + f), KBI: relu(b)), rounded with
  /// a straight-through gradient: the differentiable width used by EBOPs.
  torch::Tensor bits() const;
  /// The integer (k, i, f) the forward pass uses, in the parameter shape.
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> kif() const;
  /// Sum of the bit parameters' widths, for the gamma L1 term.
  torch::Tensor bits_l1() const;
  /// Clamps the bit parameters into their bounds (call after each optimizer step).
  void constrain();
  /// The tensors in the (a, c) slots of fixed_quantize: (i, f) for KIF, (b, i) for KBI.
  const torch::Tensor& param_a() const { return options.param() == Parameterization::KIF ? i : b; }
  const torch::Tensor& param_c() const { return options.param() == Parameterization::KIF ? f : i; }
  /// The prepared quantization of inputs like `x` with the current bit widths, for layers that
  /// call quant_forward / quant_backward inside an autograd node of their own.
  QuantPlanPtr plan_for(const torch::Tensor& x, bool training) const;
  /// Whether a training forward pass updates the integer bits from max |x_hat| (WRAP).
  bool tracks_integer_bits() const { return options.overflow() == OverflowMode::WRAP; }
  /// The integer-bit update of section 4 from `absmax` (float64, per-sample shape), as
  /// forward() applies it in training.
  void track_integer_bits(const torch::Tensor& absmax);
  /// bits() without autograd, with its derivatives d bits / d a and d bits / d c, all in the
  /// parameter shape; a slope is undefined where that parameter takes no gradient.
  struct BitsAndSlopes {
    torch::Tensor bits, da, dc;
  };
  BitsAndSlopes bits_and_slopes() const;
  /// Shape of k, i, f / b tensors (broadcastable to the per-sample shape).
  const std::vector<int64_t>& param_shape() const { return param_shape_; }
  /// Number of parameter elements sharing nothing (for summaries).
  int64_t param_count() const;

  /// Calibration (quantization.md section 4): while on, each eval forward records, per element of
  /// the per-sample shape, the min and max over the batch of the quantized value as it would be
  /// without WRAP (rounded only; SAT modes clip). Pruned elements record 0. Turning it on clears
  /// the record; turning it off keeps it.
  void set_calibration(bool on);
  bool calibrating() const { return calibrating_; }
  /// The record: {min, max} in the per-sample shape (undefined before any forward).
  std::pair<torch::Tensor, torch::Tensor> calibration_range() const {
    return {calib_min_, calib_max_};
  }

  QuantizerOptions options;
  torch::Tensor k;  ///< buffer: sign bit per parameter element
  torch::Tensor i;  ///< integer bits (parameter for SAT modes, buffer for WRAP)
  torch::Tensor f;  ///< KIF: fractional bits (parameter); undefined for KBI
  torch::Tensor b;  ///< KBI: bits without sign (parameter); undefined for KIF

 private:
  QuantizeSettings settings(bool training) const;
  torch::Tensor quantize(const torch::Tensor& x, bool training, torch::Tensor* absmax) const;
  void record_calibration(const torch::Tensor& x);
  std::vector<int64_t> param_shape_;
  bool calibrating_ = false;
  torch::Tensor calib_min_, calib_max_;
};
TORCH_MODULE(FixedQuantizer);

/// Straight-through rounding: round(x) forward, identity backward.
torch::Tensor round_ste(const torch::Tensor& x);

}  // namespace hgqt::quant
