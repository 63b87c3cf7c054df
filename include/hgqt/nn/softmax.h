// QSoftmax: a softmax over the last axis that hardware computes exactly with two lookup tables
// (archive.h, `softmax`): x = iq(x); d = x - max(x) (the stable form); u = Q_ei(d);
// e = Q_eo(exp(c * min(u, 0))) (the exp table; c the input scale, default 1); s = Q_ii(sum e); r =
// Q_io(1 / max(s, 2^-30)) (the reciprocal table); y = oq(e * r).
#pragma once

#include <optional>
#include <vector>

#include "hgqt/nn/layer.h"

namespace hgqt::nn {

/// The four quantizers inside QSoftmax.
enum class SoftmaxStage { ExpInput, ExpOutput, InvInput, InvOutput };

/// Defaults of a stage quantizer for rows of `n` elements: one type for the whole layer
/// (granularity tensor), RND and SAT, widths bounded so that each table has at most 2^16 entries.
/// exp input: k=1, i=3, f=3 (d in [-8, 0]); exp output: k=0, i=1, f=7 (exp(0) = 1 is exact);
/// reciprocal input: k=0, i = bits of n, f=3 (the sum is at most n); output: k=0, i=1, f=7.
quant::QuantizerOptions softmax_stage_defaults(SoftmaxStage stage, int64_t n);

/// Default output quantizer of QSoftmax for a per-sample `shape`: probabilities in [0, 1], so
/// unsigned and saturating, per element: k=0, i=1, f=7, RND, SAT.
quant::QuantizerOptions softmax_output_defaults(std::vector<int64_t> shape);

/// Options of QSoftmax. `shape`: the per-sample input shape; the softmax runs over its last axis.
struct QSoftmaxOptions {
  explicit QSoftmaxOptions(std::vector<int64_t> shape) : shape_(std::move(shape)) {}
  TORCH_ARG(std::vector<int64_t>, shape);
  /// c > 0: the layer is the softmax of c * x (attention's 1 / sqrt(key_dim)), folded into the
  /// exp table: e = Q_eo(exp(c * min(u, 0))).
  TORCH_ARG(double, input_scale) = 1.0;
  /// Datalane defaults of the place when unset.
  TORCH_ARG(std::optional<quant::QuantizerOptions>, input_quantizer) = std::nullopt;
  /// softmax_output_defaults when unset.
  TORCH_ARG(std::optional<quant::QuantizerOptions>, output_quantizer) = std::nullopt;
  /// softmax_stage_defaults when unset (their shapes are set by the layer).
  TORCH_ARG(std::optional<quant::QuantizerOptions>, exp_input_quantizer) = std::nullopt;
  TORCH_ARG(std::optional<quant::QuantizerOptions>, exp_output_quantizer) = std::nullopt;
  TORCH_ARG(std::optional<quant::QuantizerOptions>, inv_input_quantizer) = std::nullopt;
  TORCH_ARG(std::optional<quant::QuantizerOptions>, inv_output_quantizer) = std::nullopt;
};

/// Table softmax. EBOPs: one product e * r per element, bits(e) * bits(r); the tables cost LUTs
/// that EBOPs do not model.
class QSoftmaxImpl : public torch::nn::Cloneable<QSoftmaxImpl>, public QLayer {
 public:
  explicit QSoftmaxImpl(QSoftmaxOptions options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor ebops() const override;
  std::vector<NamedQuantizer> quantizers() const override;
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override;
  std::string type_name() const override { return "softmax"; }

  QSoftmaxOptions options;
  quant::FixedQuantizer iq{nullptr}, eiq{nullptr}, eoq{nullptr}, iiq{nullptr}, ioq{nullptr},
      oq{nullptr};
};
TORCH_MODULE(QSoftmax);

}  // namespace hgqt::nn
