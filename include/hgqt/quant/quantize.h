// The differentiable fixed-point quantization op: forward and surrogate backward in one
// autograd function (quantization.md sections 2 and 3).
#pragma once

#include <torch/torch.h>

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
