// The interface every quantized layer implements, next to torch::nn::Module.
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "hgqt/quant/quantizer.h"

namespace hgqt::nn {

/// A quantizer of a layer, with its role ("input", "kernel", "bias", "output").
struct NamedQuantizer {
  std::string role;
  quant::FixedQuantizer quantizer;
  /// The tensor it quantizes when that is a layer constant (kernel, bias); undefined otherwise.
  torch::Tensor constant;
};

/// What every hgqt layer offers beyond torch::nn::Module.
class QLayer {
 public:
  virtual ~QLayer() = default;
  /// The layer's computation on a batch.
  virtual torch::Tensor forward(const torch::Tensor& x) = 0;
  /// Differentiable EBOPs of the layer (quantization.md section 6); 0 for layers without products.
  virtual torch::Tensor ebops() const;
  /// The layer's quantizers, in data-flow order.
  virtual std::vector<NamedQuantizer> quantizers() const { return {}; }
  /// Per-sample output shape for a per-sample input shape (throws std::invalid_argument).
  virtual std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const = 0;
  /// Short type name (dense, activation, flatten, quantize, conv2d, add, ...).
  virtual std::string type_name() const = 0;

  /// Number of inputs the layer takes: 1, or 0 for "two or more" (add, concatenate).
  virtual int num_inputs() const { return 1; }
  /// The computation on several inputs (graph models). The default takes exactly one input and
  /// calls forward(); merge layers override it.
  virtual torch::Tensor forward_many(const std::vector<torch::Tensor>& xs);
  /// Output shape for several per-sample input shapes; the default takes exactly one.
  virtual std::vector<int64_t> output_shape_many(
      const std::vector<std::vector<int64_t>>& input_shapes) const;
};

/// Options for a layer's quantizer of `place` governing `shape`: the given options (shape
/// replaced) or the place's defaults; datalane quantizers have a batch axis, constants none.
quant::QuantizerOptions quantizer_for(const std::optional<quant::QuantizerOptions>& given,
                                      quant::Place place, std::vector<int64_t> shape);

/// A Glorot-uniform kernel (the Keras default) of Keras layout [K..., in, out]: limits
/// +-sqrt(6 / (fan_in + fan_out)) with fan_in = prod(K) * in, fan_out = prod(K) * out.
torch::Tensor glorot_uniform(const std::vector<int64_t>& kernel_shape);

/// "[2, 3]": a shape for messages and pretty_print.
std::string shape_string(const std::vector<int64_t>& s);
/// Number of elements of a per-sample shape (1 for []).
int64_t shape_numel(const std::vector<int64_t>& s);

/// Activation functions available to layers.
enum class Activation { Linear, ReLU };
Activation parse_activation(const std::string& s);  ///< throws std::invalid_argument
const char* to_string(Activation a);
torch::Tensor apply_activation(const torch::Tensor& x, Activation a);

}  // namespace hgqt::nn
