// QUnaryLUT: an element-wise function (tanh, sigmoid, or one a user registers by name) that the
// hardware realises as a lookup table over every value its input quantizer can give.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "hgqt/nn/layer.h"
#include "hgqt/util/lut_cost.h"

namespace hgqt::nn {

/// A tabulated function: differentiable LibTorch ops (used in training, in eval, and in double to
/// fill the exported table, so that the float64 reference and the table agree).
using LutFunction = std::function<torch::Tensor(const torch::Tensor&)>;

/// Registers `fn` under `name` for `{type: lut, function: name}` layers (replaces an earlier
/// registration of the name). Built in: tanh, sigmoid, exp, softplus, sin, cos, gelu, square, abs.
void register_lut_function(const std::string& name, LutFunction fn);
/// The function registered as `name`; throws std::invalid_argument listing the known names.
const LutFunction& lut_function(const std::string& name);
/// The registered names, sorted.
std::vector<std::string> lut_function_names();

/// Options of QUnaryLUT. Example: `QUnaryLUT t(QUnaryLUTOptions({16, 3}, "tanh"));`
struct QUnaryLUTOptions {
  QUnaryLUTOptions(std::vector<int64_t> shape, std::string function)
      : shape_(std::move(shape)), function_(std::move(function)) {}
  TORCH_ARG(std::vector<int64_t>, shape);  ///< per-sample shape
  TORCH_ARG(std::string, function);
  /// The table's domain (datalane; default of the place when unset) and its output quantizer.
  TORCH_ARG(std::optional<quant::QuantizerOptions>, input_quantizer) = std::nullopt;
  TORCH_ARG(std::optional<quant::QuantizerOptions>, output_quantizer) = std::nullopt;
};

/// y = oq(fn(iq(x))). No products: EBOPs 0 (a table costs LUTs that EBOPs do not model).
class QUnaryLUTImpl : public torch::nn::Cloneable<QUnaryLUTImpl>, public QLayer {
 public:
  explicit QUnaryLUTImpl(QUnaryLUTOptions options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  torch::Tensor forward(const torch::Tensor& x) override;
  std::vector<NamedQuantizer> quantizers() const override;
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override;
  std::string type_name() const override { return "lut"; }

  QUnaryLUTOptions options;
  LutFunction fn;
  quant::FixedQuantizer iq{nullptr}, oq{nullptr};
};
TORCH_MODULE(QUnaryLUT);

/// Options of QLearnedLUT. Example: `QLearnedLUT t(QLearnedLUTOptions({16, 8}));` (16 inputs fanned
/// out to 8 outputs: 128 connections).
struct QLearnedLUTOptions {
  QLearnedLUTOptions(std::vector<int64_t> shape) : shape_(std::move(shape)) {}
  TORCH_ARG(std::vector<int64_t>, shape);  ///< per-sample shape: one element per connection
  TORCH_ARG(int64_t, hidden) = 8;          ///< width of the hidden layer of each function
  TORCH_ARG(int64_t, hidden_layers) = 1;   ///< 1 (tanh hidden layer) or 0 (g(u) = w u + b)
  /// The widest input quantizer (k + i + f) a connection's exported table may have: the trace
  /// refuses wider ones, naming the connection (training does not clamp them).
  TORCH_ARG(int64_t, max_table_bits) = 12;
  /// Each connection's own input quantizer (0 bits prunes it) and table output quantizer.
  TORCH_ARG(std::optional<quant::QuantizerOptions>, input_quantizer) = std::nullopt;
  TORCH_ARG(std::optional<quant::QuantizerOptions>, output_quantizer) = std::nullopt;
};

/// Learned lookup tables, element-wise (HGQ-LUT's connections; the `lut_dense` config block fans
/// its input out to [I, O] and sums this layer's output over I): y[e] = oq(g_e(iq(x)[e])), g_e a
/// small MLP of its own, u -> b2 + sum_j w2[j] tanh(w1[j] u + b1[j]) (the terms added in order
/// of j, so that the exported tables, evaluated with the same ops in double, equal the float64
/// forward bit for bit), or w u + b without a hidden layer. The hardware realises each element
/// as a table over every value of its input quantizer (archive `lut`, function "learned").
/// Cost (differentiable, in place of EBOPs): per element with input width b_in = k + i + f and
/// output width b_out, c(b_in) * b_out / 2 + b_out, c(b) = 2^(b - 5) for b >= 5 (exponent clamped
/// at 16) and b / 5 below: LUT6 equivalents of the table plus the adder-tree bits; 0 for a pruned
/// element (b_in = 0).
class QLearnedLUTImpl : public torch::nn::Cloneable<QLearnedLUTImpl>, public QLayer {
 public:
  explicit QLearnedLUTImpl(QLearnedLUTOptions options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  torch::Tensor forward(const torch::Tensor& x) override;
  torch::Tensor ebops() const override;
  std::vector<NamedQuantizer> quantizers() const override;
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override;
  std::string type_name() const override { return "learned_lut"; }

  /// g_e(u) for u broadcastable against the per-sample shape (the functions before the output
  /// quantizer), in u's dtype; `element` selects elements by flat index for a flat u of the same
  /// length (the exported tables), undefined for the forward's [B, shape...] input.
  torch::Tensor functions(const torch::Tensor& u, const torch::Tensor& element = {}) const;

  /// Replaces the functions by their tables (an archive's; model::from_archive): afterwards the
  /// forward looks y up at iq(x). `values`: every element's table, element after element, each
  /// from the smallest input mantissa `min_mantissa[e]` up, `offsets` (n_elements + 1 entries)
  /// where each starts. The quantizers must already hold the archive's widths.
  void freeze(const std::vector<double>& values, const std::vector<int64_t>& offsets,
              const std::vector<int64_t>& min_mantissa);
  bool frozen() const { return frozen_values_.defined(); }
  /// Freezes this layer with `other`'s tables (a copy of a frozen model; the tables are not
  /// parameters or buffers, so that checkpoints keep their shape).
  void freeze_like(const QLearnedLUTImpl& other);

  QLearnedLUTOptions options;
  torch::Tensor w1, b1, w2, b2;  ///< [shape..., H] x3 and [shape...]; 0 hidden layers: w2, b2
  quant::FixedQuantizer iq{nullptr}, oq{nullptr};

 private:
  torch::Tensor frozen_values_, frozen_offsets_, frozen_min_;
};
TORCH_MODULE(QLearnedLUT);

}  // namespace hgqt::nn
