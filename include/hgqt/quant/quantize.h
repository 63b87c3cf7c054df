// The differentiable fixed-point quantization op: forward and surrogate backward in one
// autograd function (quantization.md sections 2 and 3).
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "hgqt/quant/fixed_point.h"

namespace hgqt::quant {

/// Modes of one quantize call.
struct QuantizeSettings {
  Parameterization param = Parameterization::KIF;
  RoundingMode round = RoundingMode::RND;
  OverflowMode overflow = OverflowMode::WRAP;
  bool training = false;   ///< WRAP is not applied and S_RND draws noise only in training
  bool batch_axis = true;  ///< x carries a leading batch axis shared by every parameter
};

/// Effective integer (k, i, f) of the forward pass from the stored parameters: bit parameters
/// are rounded half to even, and clamped so that i + f <= kMaxMagnitudeBits (values exact in
/// float32). `a`, `c` are (i, f) for KIF and (b, i) for KBI. Returns tensors of the broadcast
/// shape of k, a, c.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> effective_kif(const torch::Tensor& k,
                                                                      const torch::Tensor& a,
                                                                      const torch::Tensor& c,
                                                                      Parameterization param);

/// x_hat = Q(x; k, a, c) with the surrogate gradients of section 3 flowing to x, a and c
/// (k gets none). `k`, `a`, `c` broadcast against the per-sample shape of x (all of x when
/// `batch_axis` is false). When `absmax` is given it receives, per element of the per-sample
/// shape, max over the batch of |R(x 2^f) 2^-f| (before overflow), for integer-bit tracking.
/// Example: `auto xq = fixed_quantize(x, k, i, f, {Parameterization::KIF}, nullptr);`
torch::Tensor fixed_quantize(const torch::Tensor& x, const torch::Tensor& k, const torch::Tensor& a,
                             const torch::Tensor& c, const QuantizeSettings& settings,
                             torch::Tensor* absmax = nullptr);

/// The same op composed of plain ATen calls (any device, no custom kernel): the reference the
/// fused CPU kernel is tested against, and the path taken on CUDA.
torch::Tensor fixed_quantize_reference(const torch::Tensor& x, const torch::Tensor& k,
                                       const torch::Tensor& a, const torch::Tensor& c,
                                       const QuantizeSettings& settings,
                                       torch::Tensor* absmax = nullptr);

/// One application of a quantizer's parameters to inputs of one per-sample shape, prepared once:
/// the effective per-element parameters in the form the fused CPU kernel or the ATen path reads.
/// A fused layer keeps it from its forward to its backward pass (the parameters may change in
/// between: integer-bit tracking rewrites i after the forward).
struct QuantPlan;
using QuantPlanPtr = std::shared_ptr<const QuantPlan>;

/// Prepares Q(.; k, a, c) for inputs like `x` (its per-sample shape, device and dtype). `reference`
/// selects the ATen path also where the fused kernel applies (CPU float and double).
QuantPlanPtr make_quant_plan(const torch::Tensor& k, const torch::Tensor& a, const torch::Tensor& c,
                             const QuantizeSettings& settings, const torch::Tensor& x,
                             bool reference = false);

/// x_hat = Q(x) without autograd. When `absmax` is defined (float64, per-sample shape) it
/// receives max over the batch of |R(x 2^f) 2^-f|, as fixed_quantize's. With `relu_input`,
/// x_hat = Q(relu(x)), the ReLU of the layer before taken as x is read (a chain of dense layers).
/// With `calib` (eval of float32 CPU inputs: records_calibration), it also receives per element
/// the min and max over the batch of the value before WRAP (pruned elements: 0), float64 in the
/// per-sample shape: FixedQuantizer's calibration record, computed in the same pass.
struct QuantCalibration {
  torch::Tensor min, max;
};
torch::Tensor quant_forward(const QuantPlan& plan, const torch::Tensor& x,
                            const torch::Tensor& absmax = {}, bool relu_input = false,
                            QuantCalibration* calib = nullptr);
/// Whether quant_forward records calibration with this plan.
bool records_calibration(const QuantPlan& plan);

/// The surrogate gradients of section 3 for upstream gradient `g` at (x, x_hat): dx when
/// `need_dx`, and d/da, d/dc in the shapes and dtypes of a and c when `need_params`.
struct QuantGrads {
  torch::Tensor dx, da, dc;
};
/// With `relu_input` (as in the forward pass), dx is the gradient with respect to the
/// pre-activation x: zero where x <= 0.
QuantGrads quant_backward(const QuantPlan& plan, const torch::Tensor& g, const torch::Tensor& x,
                          const torch::Tensor& xh, bool need_dx, bool need_params,
                          bool relu_input = false);

/// For each element of `full` (row-major), the flat index of the element of a tensor of shape
/// `param` broadcast to it; empty when the shapes are equal.
std::vector<int64_t> broadcast_index(c10::IntArrayRef param, c10::IntArrayRef full);

/// Whether the fused CPU kernel is switched off (set_force_reference_path).
bool force_reference_path();

/// Integer-bit tracking of a WRAP quantizer in training (section 4):
/// i <- clamp(max(i - decay, ceil(log2(max|x_hat| + 2^-f))), i_min, i_max), the max taken over the
/// elements sharing each entry of `i`. `absmax` is per element of the per-sample shape, as
/// returned by fixed_quantize; (k, a, c) are the quantizer's parameters as passed to it.
void update_integer_bits(torch::Tensor& i, const torch::Tensor& k, const torch::Tensor& a,
                         const torch::Tensor& c, Parameterization param,
                         const torch::Tensor& absmax, double decay, double i_min, double i_max);

/// Forces the generic ATen path also on CPU (for tests and benchmarks).
void set_force_reference_path(bool force);

}  // namespace hgqt::quant
