// Quantized layers: QDense, QActivation, Flatten and the input Quantize layer.
#pragma once

#include <optional>

#include "hgqt/nn/fused.h"
#include "hgqt/nn/layer.h"

namespace hgqt::nn {

/// Options of QDense. Example: `QDense d(QDenseOptions(16, 64).activation(Activation::ReLU));`
struct QDenseOptions {
  QDenseOptions(int64_t in_features, int64_t out_features)
      : in_features_(in_features), out_features_(out_features) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  /// Per-sample input shape [..., in_features]: a dense layer applies along the last axis with
  /// one kernel shared by every position (per-particle dense on [P, F]). Empty: [in_features]
  /// (the layer stores the filled-in shape).
  TORCH_ARG(std::vector<int64_t>, input_shape) = {};
  TORCH_ARG(bool, bias) = true;
  TORCH_ARG(Activation, activation) = Activation::Linear;
  /// Quantizer options; their shapes are set by the layer. Unset: defaults of the place.
  TORCH_ARG(std::optional<quant::QuantizerOptions>, input_quantizer) = std::nullopt;
  TORCH_ARG(std::optional<quant::QuantizerOptions>, kernel_quantizer) = std::nullopt;
  TORCH_ARG(std::optional<quant::QuantizerOptions>, bias_quantizer) = std::nullopt;
  /// The optional output quantizer (after the activation); none when unset.
  TORCH_ARG(std::optional<quant::QuantizerOptions>, output_quantizer) = std::nullopt;
};

/// The per-sample input shape of a dense layer: `input_shape` ([..., in_features]) or, when empty,
/// [in_features]. Throws std::invalid_argument naming `layer` when its last axis is not
/// in_features or a size is not positive.
std::vector<int64_t> dense_input_shape(const std::string& layer, int64_t in_features,
                                       const std::vector<int64_t>& input_shape);
/// The per-sample output shape of a dense layer on `input_shape`: [..., out_features].
std::vector<int64_t> dense_output_shape(const std::vector<int64_t>& input_shape,
                                        int64_t out_features);

/// y = act(iq(x) @ kq(W) + bq(b)), then the optional output quantizer. W is [in, out]; on an
/// input [B, S..., in] the product is taken at every position S (the kernel is shared), and the
/// quantizers have the per-sample shapes [S..., in] / [S..., out] (granularity `channel` shares
/// one width per feature across the positions, so the hardware does not depend on their order).
class QDenseImpl : public torch::nn::Cloneable<QDenseImpl>, public QLayer {
 public:
  explicit QDenseImpl(QDenseOptions options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  /// In training one fused autograd node (nn/fused.h) for a flat input, else forward_composed.
  torch::Tensor forward(const torch::Tensor& x) override;
  /// The training forward pass in a chain of dense layers (HGQModel; nn/fused.h).
  torch::Tensor forward_chained(const torch::Tensor& x, DenseChain chain);
  /// The same computation as composed ops: one node per quantizer, the product, the activation.
  torch::Tensor forward_composed(const torch::Tensor& x);
  /// sum_{j,o} b_in[j] b_w[j,o] + mean(b_bias) * n_out, as one node (fused_dense_ebops); on an
  /// input with positions, summed over every position (full unroll).
  torch::Tensor ebops() const override;
  /// True when the input has positions (per-sample rank > 1): no fused training node.
  bool per_position() const { return options.input_shape().size() > 1; }
  /// The same as composed ops on FixedQuantizer::bits().
  torch::Tensor ebops_composed() const;
  std::vector<NamedQuantizer> quantizers() const override;
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override;
  std::string type_name() const override { return "dense"; }

  QDenseOptions options;
  torch::Tensor kernel;  ///< [in, out]
  torch::Tensor bias;    ///< [out] (undefined without bias)
  quant::FixedQuantizer iq{nullptr}, kq{nullptr}, bq{nullptr}, oq{nullptr};
};
TORCH_MODULE(QDense);

/// Options of QActivation.
struct QActivationOptions {
  explicit QActivationOptions(std::vector<int64_t> shape) : shape_(std::move(shape)) {}
  TORCH_ARG(std::vector<int64_t>, shape);  ///< per-sample shape
  TORCH_ARG(Activation, activation) = Activation::ReLU;
  TORCH_ARG(std::optional<quant::QuantizerOptions>, quantizer) = std::nullopt;
};

/// y = q(act(x)).
class QActivationImpl : public torch::nn::Cloneable<QActivationImpl>, public QLayer {
 public:
  explicit QActivationImpl(QActivationOptions options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x) override;
  std::vector<NamedQuantizer> quantizers() const override;
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override;
  std::string type_name() const override { return "activation"; }

  QActivationOptions options;
  quant::FixedQuantizer q{nullptr};
};
TORCH_MODULE(QActivation);

/// Flattens every axis but the batch axis.
class FlattenImpl : public torch::nn::Cloneable<FlattenImpl>, public QLayer {
 public:
  FlattenImpl() = default;
  void reset() override {}
  torch::Tensor forward(const torch::Tensor& x) override;
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override;
  std::string type_name() const override { return "flatten"; }
};
TORCH_MODULE(Flatten);

/// A bare quantizer on the data path (e.g. the model input).
class QuantizeImpl : public torch::nn::Cloneable<QuantizeImpl>, public QLayer {
 public:
  explicit QuantizeImpl(quant::QuantizerOptions options);
  void reset() override;
  torch::Tensor forward(const torch::Tensor& x) override;
  std::vector<NamedQuantizer> quantizers() const override;
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override;
  std::string type_name() const override { return "quantize"; }

  quant::QuantizerOptions options;
  quant::FixedQuantizer q{nullptr};
};
TORCH_MODULE(Quantize);

}  // namespace hgqt::nn
