// Quantized 1-D and 2-D convolutions (channels-last, Keras kernel layout) and the shared
// convolution / EBOPs helpers that the folded batch-norm layers reuse.
//
// Per-sample shapes are channels-last: conv1d input [L, C], conv2d input [H, W, C]; a batch is
// [B, L, C] / [B, H, W, C]. Kernels: conv1d [K, C, F], conv2d [KH, KW, C, F]; bias [F].
// Padding "valid" or "same" with TensorFlow semantics: out = ceil(L / s), total padding
// max((out - 1) * s + K - L, 0), pad_before = floor(total / 2), pad_after = total - pad_before,
// zeros. No dilation, no groups.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "hgqt/nn/layer.h"

namespace hgqt::nn {

// ------------------------------------------------------------------------- helpers

/// Spatial geometry of a convolution / window op along every spatial axis.
struct ConvGeometry {
  std::vector<int64_t> in;          ///< spatial input extent
  std::vector<int64_t> out;         ///< spatial output extent
  std::vector<int64_t> pad_before;  ///< zero padding before each spatial axis
  std::vector<int64_t> pad_after;   ///< zero padding after each spatial axis
};

/// Geometry for spatial input extent `in`, window `kernel_size`, `strides` and `padding`
/// ("valid" or "same"). Throws std::invalid_argument for mismatched ranks, non-positive sizes,
/// an unknown padding, or a "valid" window larger than the input.
ConvGeometry conv_geometry(const std::vector<int64_t>& in, const std::vector<int64_t>& kernel_size,
                           const std::vector<int64_t>& strides, const std::string& padding);

/// Convolution of a channels-last batch `x` [B, S..., C] with a Keras-layout kernel `w`
/// [K..., C, F] plus the optional bias `b` [F] (undefined: none), result [B, O..., F].
/// The number of spatial axes is w.dim() - 2; with none (w [C, F]) it is a dense layer on the last
/// axis of x [B, C] or [B, S..., C] (the same kernel at every position S).
/// Differentiable in x, w and b.
torch::Tensor conv_nd(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                      const std::vector<int64_t>& strides, const std::string& padding);

/// Differentiable EBOPs of the products of conv_nd (quantization.md section 6), counted over every
/// multiplication of the unrolled layer (every output position): the convolution of the input bits
/// `b_in` (broadcastable to the per-sample input shape [S..., C], zero-padded like the data) with
/// the kernel bits `b_w` (broadcastable to the kernel shape [K..., C, F]), summed over all outputs.
/// With no spatial kernel axes (b_w [C, F]) it is a dense layer at every position S.
/// Bias adds are not included (see bias_ebops).
torch::Tensor conv_ebops(const torch::Tensor& b_in, const std::vector<int64_t>& input_shape,
                         const torch::Tensor& b_w, const std::vector<int64_t>& kernel_shape,
                         const std::vector<int64_t>& strides, const std::string& padding);

/// Per-sample output shape [O..., F] of a D-axis convolution (D = kernel_size.size()) of the
/// per-sample input `in` [S..., C]; throws std::invalid_argument naming `layer` when `in` does not
/// have D + 1 axes and `in_channels` channels.
std::vector<int64_t> conv_output_shape(const std::string& layer, int64_t in_channels,
                                       int64_t filters, const std::vector<int64_t>& kernel_size,
                                       const std::vector<int64_t>& strides,
                                       const std::string& padding, const std::vector<int64_t>& in);
/// Checks a D-axis convolution's options: positive channels and filters, D kernel sizes, a
/// channels-last per-sample input of D + 1 axes ending in in_channels. Throws
/// std::invalid_argument naming `layer`.
void check_conv_options(const std::string& layer, int64_t d, int64_t in_channels, int64_t filters,
                        const std::vector<int64_t>& kernel_size,
                        const std::vector<int64_t>& input_shape);
/// The Keras kernel shape [K..., C, F].
std::vector<int64_t> conv_kernel_shape(const std::vector<int64_t>& kernel_size, int64_t in_channels,
                                       int64_t filters);

/// Zero padding before each spatial axis of that convolution.
std::vector<int64_t> conv_pad_before(const std::string& layer,
                                     const std::vector<int64_t>& kernel_size,
                                     const std::vector<int64_t>& strides,
                                     const std::string& padding, const std::vector<int64_t>& in);

/// One bias add per output element: mean(b_bias) * n_outputs.
torch::Tensor bias_ebops(const torch::Tensor& b_bias, int64_t n_outputs);

// ------------------------------------------------------------------------- QConv1d / QConv2d

/// Options of QConv1d / QConv2d. Example:
/// `QConv2d c(QConvOptions(3, 8, {3, 3}).input_shape({28, 28, 3}).padding("same").strides({2,
/// 2}));`
struct QConvOptions {
  QConvOptions(int64_t in_channels, int64_t filters, std::vector<int64_t> kernel_size,
               std::vector<int64_t> input_shape = {})
      : in_channels_(in_channels),
        filters_(filters),
        kernel_size_(std::move(kernel_size)),
        input_shape_(std::move(input_shape)) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, filters);
  /// Spatial kernel size: 1 entry for conv1d, 2 for conv2d.
  TORCH_ARG(std::vector<int64_t>, kernel_size);
  /// Per-sample channels-last input shape ([L, C] or [H, W, C]); required (sizes the input
  /// quantizer).
  TORCH_ARG(std::vector<int64_t>, input_shape);
  /// Strides per spatial axis; empty = all 1 (the layer stores the filled-in vector).
  TORCH_ARG(std::vector<int64_t>, strides) = {};
  /// "valid" or "same".
  TORCH_ARG(std::string, padding) = "valid";
  TORCH_ARG(bool, bias) = true;
  TORCH_ARG(Activation, activation) = Activation::Linear;
  /// Quantizer options; their shapes are set by the layer. Unset: defaults of the place.
  TORCH_ARG(std::optional<quant::QuantizerOptions>, input_quantizer) = std::nullopt;
  TORCH_ARG(std::optional<quant::QuantizerOptions>, kernel_quantizer) = std::nullopt;
  TORCH_ARG(std::optional<quant::QuantizerOptions>, bias_quantizer) = std::nullopt;
  /// The optional output quantizer (after the activation); none when unset.
  TORCH_ARG(std::optional<quant::QuantizerOptions>, output_quantizer) = std::nullopt;
};
using QConv1dOptions = QConvOptions;
using QConv2dOptions = QConvOptions;

/// y = oq(act(conv(iq(x), kq(W)) + bq(b))), D spatial axes (1 or 2). Use QConv1d / QConv2d.
template <int64_t D>
class QConvImpl : public torch::nn::Cloneable<QConvImpl<D>>, public QLayer {
 public:
  explicit QConvImpl(QConvOptions options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  torch::Tensor forward(const torch::Tensor& x) override;
  /// conv_ebops(input bits, kernel bits) + mean(bias bits) * (output positions * F).
  torch::Tensor ebops() const override;
  std::vector<NamedQuantizer> quantizers() const override;
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override;
  std::string type_name() const override { return D == 1 ? "conv1d" : "conv2d"; }

  /// Zero padding before each spatial axis for a per-sample input shape (channels-last).
  std::vector<int64_t> pad_before(const std::vector<int64_t>& input_shape) const;
  /// Kernel shape [K..., C, F].
  std::vector<int64_t> kernel_shape() const;

  QConvOptions options;
  torch::Tensor kernel;  ///< [K..., C, F]
  torch::Tensor bias;    ///< [F] (undefined without bias)
  quant::FixedQuantizer iq{nullptr}, kq{nullptr}, bq{nullptr}, oq{nullptr};
};

using QConv1dImpl = QConvImpl<1>;
using QConv2dImpl = QConvImpl<2>;
TORCH_MODULE(QConv1d);
TORCH_MODULE(QConv2d);

extern template class QConvImpl<1>;
extern template class QConvImpl<2>;

}  // namespace hgqt::nn
