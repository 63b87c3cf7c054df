// Batch normalization: folded into a dense / conv layer (QDenseBatchNorm, QConv1dBatchNorm,
// QConv2dBatchNorm), and stand-alone per-channel scale and offset (QBatchNorm).
//
// Conventions (Keras): moving = momentum * moving + (1 - momentum) * batch, momentum 0.99,
// eps 1e-3; the batch variance is the biased one (mean of squared deviations), for the
// normalization and for the moving variance alike. Channels are the last axis.
//
// Folded layers: with the float layer output z = linear/conv(iq(x), W) + b, the statistics
// mu, var (per output channel: the batch in training, the moving ones in eval) and
// s = gamma / sqrt(var + eps), the layer computes with
//     W_f = W * s (per output channel, the kernel's last axis),
//     b_f = (b - mu) * s + beta
// y = oq(act(linear/conv(iq(x), kq(W_f)) + bq(b_f))). In training the gradients flow through
// mu and var into W, as in ordinary batch-norm training. The kernel and bias quantizers govern
// W_f and b_f; the bias quantizer is always present (b_f is nonzero in general).
#pragma once

#include <optional>
#include <utility>

#include "hgqt/nn/conv.h"

namespace hgqt::nn {

/// The folding of batch norm into a kernel and bias: s = gamma / sqrt(var + eps),
/// W_f = w * s (broadcast over w's last axis), b_f = (b - mean) * s + beta (b undefined: 0).
/// Differentiable in every argument.
std::pair<torch::Tensor, torch::Tensor> fold_batchnorm(
    const torch::Tensor& w, const torch::Tensor& b, const torch::Tensor& gamma,
    const torch::Tensor& beta, const torch::Tensor& mean, const torch::Tensor& var, double eps);

// ------------------------------------------------------------------------- QDenseBatchNorm

/// Options of QDenseBatchNorm. Example: `QDenseBatchNorm d(QDenseBatchNormOptions(16, 32));`
struct QDenseBatchNormOptions {
  QDenseBatchNormOptions(int64_t in_features, int64_t out_features)
      : in_features_(in_features), out_features_(out_features) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  /// Per-sample input shape [..., in_features] (as QDenseOptions::input_shape); empty:
  /// [in_features]. The statistics are per output feature, over the batch and every position.
  TORCH_ARG(std::vector<int64_t>, input_shape) = {};
  TORCH_ARG(bool, bias) = true;  ///< the unfolded layer's own bias b
  TORCH_ARG(Activation, activation) = Activation::Linear;
  TORCH_ARG(double, momentum) = 0.99;
  TORCH_ARG(double, eps) = 1e-3;
  /// Quantizer options; their shapes are set by the layer. Unset: defaults of the place.
  TORCH_ARG(std::optional<quant::QuantizerOptions>, input_quantizer) = std::nullopt;
  TORCH_ARG(std::optional<quant::QuantizerOptions>, kernel_quantizer) = std::nullopt;  ///< of W_f
  TORCH_ARG(std::optional<quant::QuantizerOptions>, bias_quantizer) = std::nullopt;    ///< of b_f
  /// The optional output quantizer (after the activation); none when unset.
  TORCH_ARG(std::optional<quant::QuantizerOptions>, output_quantizer) = std::nullopt;
};

/// Dense layer with folded batch norm (see the top of this file). W is [in, out].
class QDenseBatchNormImpl : public torch::nn::Cloneable<QDenseBatchNormImpl>, public QLayer {
 public:
  explicit QDenseBatchNormImpl(QDenseBatchNormOptions options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  torch::Tensor forward(const torch::Tensor& x) override;
  /// As the unfolded dense layer: sum_{j,o} b_in[j] b_w[j,o] + mean(b_bias) * n_out.
  torch::Tensor ebops() const override;
  /// kernel / bias entries carry the folded eval-mode W_f, b_f (folded(true)).
  std::vector<NamedQuantizer> quantizers() const override;
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override;
  std::string type_name() const override { return "dense_bn"; }

  /// Float (unquantized) W_f, b_f, without gradient: with the moving statistics (eval mode), or
  /// with the statistics of the last training batch (use_moving = false; throws before one).
  std::pair<torch::Tensor, torch::Tensor> folded(bool use_moving = true) const;

  QDenseBatchNormOptions options;
  torch::Tensor kernel;                 ///< [in, out]
  torch::Tensor bias;                   ///< [out] (undefined without bias)
  torch::Tensor gamma;                  ///< [out], init 1
  torch::Tensor beta;                   ///< [out], init 0
  torch::Tensor moving_mean;            ///< buffer [out], init 0
  torch::Tensor moving_var;             ///< buffer [out], init 1
  torch::Tensor batch_mean, batch_var;  ///< statistics of the last training batch (not saved)
  quant::FixedQuantizer iq{nullptr}, kq{nullptr}, bq{nullptr}, oq{nullptr};
};
TORCH_MODULE(QDenseBatchNorm);

// ------------------------------------------------------------------------- QConv{1,2}dBatchNorm

/// Options of QConv1dBatchNorm / QConv2dBatchNorm: those of QConvOptions plus momentum and eps.
/// Example: `QConv2dBatchNorm c(QConvBatchNormOptions(3, 8, {3, 3}, {16, 16, 3}).padding("same"));`
struct QConvBatchNormOptions {
  QConvBatchNormOptions(int64_t in_channels, int64_t filters, std::vector<int64_t> kernel_size,
                        std::vector<int64_t> input_shape = {})
      : in_channels_(in_channels),
        filters_(filters),
        kernel_size_(std::move(kernel_size)),
        input_shape_(std::move(input_shape)) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, filters);
  TORCH_ARG(std::vector<int64_t>, kernel_size);   ///< spatial: 1 entry (conv1d) or 2 (conv2d)
  TORCH_ARG(std::vector<int64_t>, input_shape);   ///< per sample, channels-last; required
  TORCH_ARG(std::vector<int64_t>, strides) = {};  ///< empty = all 1 (filled in by the layer)
  TORCH_ARG(std::string, padding) = "valid";      ///< valid | same
  TORCH_ARG(bool, bias) = true;                   ///< the unfolded layer's own bias b
  TORCH_ARG(Activation, activation) = Activation::Linear;
  TORCH_ARG(double, momentum) = 0.99;
  TORCH_ARG(double, eps) = 1e-3;
  TORCH_ARG(std::optional<quant::QuantizerOptions>, input_quantizer) = std::nullopt;
  TORCH_ARG(std::optional<quant::QuantizerOptions>, kernel_quantizer) = std::nullopt;  ///< of W_f
  TORCH_ARG(std::optional<quant::QuantizerOptions>, bias_quantizer) = std::nullopt;    ///< of b_f
  TORCH_ARG(std::optional<quant::QuantizerOptions>, output_quantizer) = std::nullopt;

  /// The options of the plain convolution with the same geometry and quantizers.
  QConvOptions conv() const;
};
using QConv1dBatchNormOptions = QConvBatchNormOptions;
using QConv2dBatchNormOptions = QConvBatchNormOptions;

/// Convolution (D = 1 or 2 spatial axes) with folded batch norm (see the top of this file).
/// Use QConv1dBatchNorm / QConv2dBatchNorm.
template <int64_t D>
class QConvBatchNormImpl : public torch::nn::Cloneable<QConvBatchNormImpl<D>>, public QLayer {
 public:
  explicit QConvBatchNormImpl(QConvBatchNormOptions options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  torch::Tensor forward(const torch::Tensor& x) override;
  /// As the unfolded convolution: conv_ebops + mean(bias bits) * (output positions * F).
  torch::Tensor ebops() const override;
  /// kernel / bias entries carry the folded eval-mode W_f, b_f (folded(true)).
  std::vector<NamedQuantizer> quantizers() const override;
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override;
  std::string type_name() const override { return D == 1 ? "conv1d_bn" : "conv2d_bn"; }

  /// Zero padding before each spatial axis for a per-sample input shape (channels-last).
  std::vector<int64_t> pad_before(const std::vector<int64_t>& input_shape) const;
  /// Kernel shape [K..., C, F].
  std::vector<int64_t> kernel_shape() const;
  /// Float (unquantized) W_f, b_f, without gradient: with the moving statistics (eval mode), or
  /// with the statistics of the last training batch (use_moving = false; throws before one).
  std::pair<torch::Tensor, torch::Tensor> folded(bool use_moving = true) const;

  QConvBatchNormOptions options;
  torch::Tensor kernel;                 ///< [K..., C, F]
  torch::Tensor bias;                   ///< [F] (undefined without bias)
  torch::Tensor gamma;                  ///< [F], init 1
  torch::Tensor beta;                   ///< [F], init 0
  torch::Tensor moving_mean;            ///< buffer [F], init 0
  torch::Tensor moving_var;             ///< buffer [F], init 1
  torch::Tensor batch_mean, batch_var;  ///< statistics of the last training batch (not saved)
  quant::FixedQuantizer iq{nullptr}, kq{nullptr}, bq{nullptr}, oq{nullptr};
};

using QConv1dBatchNormImpl = QConvBatchNormImpl<1>;
using QConv2dBatchNormImpl = QConvBatchNormImpl<2>;
TORCH_MODULE(QConv1dBatchNorm);
TORCH_MODULE(QConv2dBatchNorm);

extern template class QConvBatchNormImpl<1>;
extern template class QConvBatchNormImpl<2>;

// ------------------------------------------------------------------------- QBatchNorm

/// Options of QBatchNorm. Example: `QBatchNorm bn(QBatchNormOptions({8, 8, 16}));`
struct QBatchNormOptions {
  explicit QBatchNormOptions(std::vector<int64_t> shape) : shape_(std::move(shape)) {}
  TORCH_ARG(std::vector<int64_t>, shape);  ///< per-sample shape; channels = last axis
  TORCH_ARG(Activation, activation) = Activation::Linear;
  TORCH_ARG(double, momentum) = 0.99;
  TORCH_ARG(double, eps) = 1e-3;
  /// The input quantizer (Datalane over `shape`) is on by default.
  TORCH_ARG(bool, quantize_input) = true;
  TORCH_ARG(std::optional<quant::QuantizerOptions>, input_quantizer) = std::nullopt;
  TORCH_ARG(std::optional<quant::QuantizerOptions>, kernel_quantizer) = std::nullopt;  ///< of s [C]
  TORCH_ARG(std::optional<quant::QuantizerOptions>, bias_quantizer) = std::nullopt;    ///< of o [C]
  /// The optional output quantizer (after the activation); none when unset.
  TORCH_ARG(std::optional<quant::QuantizerOptions>, output_quantizer) = std::nullopt;
};

/// Per-channel batch norm as scale and offset: y = oq(act(iq(x) * kq(s) + bq(o))) with
/// s = gamma / sqrt(var + eps), o = beta - mean * s; batch statistics of iq(x) in training
/// (updating the moving ones), moving statistics in eval.
class QBatchNormImpl : public torch::nn::Cloneable<QBatchNormImpl>, public QLayer {
 public:
  explicit QBatchNormImpl(QBatchNormOptions options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  torch::Tensor forward(const torch::Tensor& x) override;
  /// sum over elements of b_in(element) * b_s(channel) + mean(b_bias) * n_elements. Without an
  /// input quantizer the input width is unknown and counted as 1 bit per element.
  torch::Tensor ebops() const override;
  /// kernel / bias entries carry the eval-mode s, o (folded()).
  std::vector<NamedQuantizer> quantizers() const override;
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override;
  std::string type_name() const override { return "batchnorm"; }

  /// Float (unquantized) scale s and offset o [C] of eval mode (moving statistics), or of the
  /// last training batch (use_moving = false; throws before one), without gradient.
  std::pair<torch::Tensor, torch::Tensor> folded(bool use_moving = true) const;
  int64_t channels() const { return options.shape().back(); }

  QBatchNormOptions options;
  torch::Tensor gamma;                  ///< [C], init 1
  torch::Tensor beta;                   ///< [C], init 0
  torch::Tensor moving_mean;            ///< buffer [C], init 0
  torch::Tensor moving_var;             ///< buffer [C], init 1
  torch::Tensor batch_mean, batch_var;  ///< statistics of the last training batch (not saved)
  quant::FixedQuantizer iq{nullptr}, kq{nullptr}, bq{nullptr}, oq{nullptr};
};
TORCH_MODULE(QBatchNorm);

}  // namespace hgqt::nn
