// QUnaryLUT: an element-wise function (tanh, sigmoid, or one a user registers by name) that the
// hardware realises as a lookup table over every value its input quantizer can give.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "hgqt/nn/layer.h"

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

}  // namespace hgqt::nn
