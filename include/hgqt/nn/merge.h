// Merge layers of graph models: QAdd (elementwise sum) and QConcatenate. Both take two or more
// inputs (num_inputs() == 0) through forward_many(); forward(x) alone throws.
#pragma once

#include <optional>
#include <vector>

#include "hgqt/nn/layer.h"

namespace hgqt::nn {

/// Options of QAdd. `shape` is the per-sample shape of the output (the inputs broadcast to it); it
/// sizes the output quantizer and is required with one. Empty: any shapes that broadcast.
struct QAddOptions {
  QAddOptions(std::vector<int64_t> shape = {}) : shape_(std::move(shape)) {}
  TORCH_ARG(std::vector<int64_t>, shape);
  TORCH_ARG(Activation, activation) = Activation::Linear;
  /// The optional output quantizer (Datalane over `shape`, after the activation).
  TORCH_ARG(std::optional<quant::QuantizerOptions>, output_quantizer) = std::nullopt;
};

/// y = oq(act(x_1 + ... + x_n)), n >= 2, per-sample shapes broadcast with numpy rules aligned at
/// the last axis (a pooled [C] added to every particle of a [P, C] list, as JEDI-linear does).
/// Additions cost no EBOPs.
class QAddImpl : public torch::nn::Cloneable<QAddImpl>, public QLayer {
 public:
  explicit QAddImpl(QAddOptions options = {});
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  /// Throws std::invalid_argument: add takes two or more inputs (use forward_many).
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor forward_many(const std::vector<torch::Tensor>& xs) override;
  std::vector<NamedQuantizer> quantizers() const override;
  /// Throws std::invalid_argument (one input); see output_shape_many.
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override;
  /// The broadcast shape; throws std::invalid_argument naming the shapes when they do not
  /// broadcast (or differ from `shape`).
  std::vector<int64_t> output_shape_many(
      const std::vector<std::vector<int64_t>>& input_shapes) const override;
  std::string type_name() const override { return "add"; }
  int num_inputs() const override { return 0; }

  QAddOptions options;
  quant::FixedQuantizer oq{nullptr};
};
TORCH_MODULE(QAdd);

/// Options of QConcatenate.
struct QConcatenateOptions {
  QConcatenateOptions(int64_t axis = -1) : axis_(axis) {}
  /// Per-sample axis (batch excluded); negative counts from the end (-1 = channels).
  TORCH_ARG(int64_t, axis);
};

/// Joins two or more inputs along a per-sample axis; the other axes must match. No quantizer.
class QConcatenateImpl : public torch::nn::Cloneable<QConcatenateImpl>, public QLayer {
 public:
  explicit QConcatenateImpl(QConcatenateOptions options = {});
  void reset() override {}
  void pretty_print(std::ostream& stream) const override;
  /// Throws std::invalid_argument: concatenate takes two or more inputs (use forward_many).
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor forward_many(const std::vector<torch::Tensor>& xs) override;
  /// Throws std::invalid_argument (one input); see output_shape_many.
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override;
  std::vector<int64_t> output_shape_many(
      const std::vector<std::vector<int64_t>>& input_shapes) const override;
  std::string type_name() const override { return "concatenate"; }
  int num_inputs() const override { return 0; }

  /// The axis as a non-negative per-sample axis for inputs of `rank` per-sample axes (throws
  /// std::invalid_argument when out of range).
  int64_t resolved_axis(int64_t rank) const;

  QConcatenateOptions options;
};
TORCH_MODULE(QConcatenate);

}  // namespace hgqt::nn
