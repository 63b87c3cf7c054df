// QEinsum: the product of two activations (attention's Q K^T and P V), exact in hardware.
// QEinsumDense: the einsum of an activation and a kernel (Keras EinsumDense), e.g. Linformer's
// projection of a particle list along the particle axis, "phd,pk->khd".
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "hgqt/nn/layer.h"
#include "hgqt/util/einsum.h"

namespace hgqt::nn {

/// Options of QEinsum: the equation over per-sample axes (util/einsum.h, e.g. "qhd,khd->hqk")
/// and the per-sample shapes of its two operands.
struct QEinsumOptions {
  QEinsumOptions(std::string equation, std::vector<int64_t> shape_a, std::vector<int64_t> shape_b)
      : equation_(std::move(equation)),
        shape_a_(std::move(shape_a)),
        shape_b_(std::move(shape_b)) {}
  TORCH_ARG(std::string, equation);
  TORCH_ARG(std::vector<int64_t>, shape_a);
  TORCH_ARG(std::vector<int64_t>, shape_b);
  /// Datalane defaults over each operand's shape when unset.
  TORCH_ARG(std::optional<quant::QuantizerOptions>, input_quantizer) = std::nullopt;
  TORCH_ARG(std::optional<quant::QuantizerOptions>, input2_quantizer) = std::nullopt;
  /// Optional (none: the exact sums pass on, as attention's scores do into the softmax).
  TORCH_ARG(std::optional<quant::QuantizerOptions>, output_quantizer) = std::nullopt;
};

/// y = oq(einsum(eq, iq(a), iq2(b))): every product of two quantized activations, summed exactly.
/// EBOPs: the sum over every product of bits(a) * bits(b) (quantization.md section 6 with two
/// data operands), differentiable in both operands' bit widths: einsum(eq, bits_a, bits_b).sum().
class QEinsumImpl : public torch::nn::Cloneable<QEinsumImpl>, public QLayer {
 public:
  explicit QEinsumImpl(QEinsumOptions options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  /// Throws std::invalid_argument: einsum takes two inputs (use forward_many).
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor forward_many(const std::vector<torch::Tensor>& xs) override;
  torch::Tensor ebops() const override;
  std::vector<NamedQuantizer> quantizers() const override;
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override;
  /// The equation's output shape; throws std::invalid_argument when the shapes differ from the
  /// ones the layer was built for.
  std::vector<int64_t> output_shape_many(
      const std::vector<std::vector<int64_t>>& input_shapes) const override;
  std::string type_name() const override { return "einsum"; }
  int num_inputs() const override { return 2; }

  QEinsumOptions options;
  util::EinsumEquation equation;
  quant::FixedQuantizer iq{nullptr}, iq2{nullptr}, oq{nullptr};

 private:
  std::string torch_equation_;  ///< with the batch axis: "...qhd,...khd->...hqk"
};
TORCH_MODULE(QEinsum);

/// Options of QEinsumDense: the equation (operand b is the kernel), the per-sample input shape and
/// the kernel's shape.
struct QEinsumDenseOptions {
  QEinsumDenseOptions(std::string equation, std::vector<int64_t> input_shape,
                      std::vector<int64_t> kernel_shape)
      : equation_(std::move(equation)),
        input_shape_(std::move(input_shape)),
        kernel_shape_(std::move(kernel_shape)) {}
  TORCH_ARG(std::string, equation);
  TORCH_ARG(std::vector<int64_t>, input_shape);
  TORCH_ARG(std::vector<int64_t>, kernel_shape);
  TORCH_ARG(bool, bias) = false;  ///< along the output's last axis
  TORCH_ARG(Activation, activation) = Activation::Linear;
  TORCH_ARG(std::optional<quant::QuantizerOptions>, input_quantizer) = std::nullopt;
  TORCH_ARG(std::optional<quant::QuantizerOptions>, kernel_quantizer) = std::nullopt;
  TORCH_ARG(std::optional<quant::QuantizerOptions>, bias_quantizer) = std::nullopt;
  /// Optional.
  TORCH_ARG(std::optional<quant::QuantizerOptions>, output_quantizer) = std::nullopt;
};

/// y = oq(act(einsum(eq, iq(x), kq(W)) + bq(b))). A linear layer: the archive writes it as
/// `einsum_dense` and every back end takes its products from archive::linear_map. EBOPs:
/// einsum(eq, bits(x), bits(W)).sum() + mean(bits(b)) * outputs.
class QEinsumDenseImpl : public torch::nn::Cloneable<QEinsumDenseImpl>, public QLayer {
 public:
  explicit QEinsumDenseImpl(QEinsumDenseOptions options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor ebops() const override;
  std::vector<NamedQuantizer> quantizers() const override;
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override;
  std::string type_name() const override { return "einsum_dense"; }

  QEinsumDenseOptions options;
  util::EinsumEquation equation;
  torch::Tensor kernel, bias;
  quant::FixedQuantizer iq{nullptr}, kq{nullptr}, bq{nullptr}, oq{nullptr};

 private:
  std::vector<int64_t> out_shape_;
  std::string torch_equation_;  ///< "...phd,pk->...khd"
};
TORCH_MODULE(QEinsumDense);

}  // namespace hgqt::nn
