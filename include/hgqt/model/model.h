// HGQModel: a sequential stack of quantized layers built from the config's `model:` section.
#pragma once

#include <torch/torch.h>

#include "hgqt/config/config.h"
#include "hgqt/nn/fused.h"
#include "hgqt/nn/layers.h"

namespace hgqt::model {

/// Options of a quantizer of `place` governing `shape`: the place's defaults, then the model's
/// `quantizer_defaults` for the place, then the layer's own spec. Throws config::ConfigError.
quant::QuantizerOptions resolve_quantizer(quant::Place place, std::vector<int64_t> shape,
                                          const config::ModelSpec& model,
                                          const config::QuantizerSpec* layer_spec,
                                          const std::string& where);

/// An HGQ model: layers in evaluation order, each reading the model input or earlier layers
/// (a chain by default; `inputs` in the config makes a graph). The last layer is the output.
class HGQModelImpl : public torch::nn::Module {
 public:
  /// One layer with its shapes.
  struct Entry {
    std::string name;
    std::shared_ptr<torch::nn::Module> module;
    nn::QLayer* layer = nullptr;
    std::vector<int64_t> input_shape, output_shape;  ///< per sample (input: the first input's)
    std::vector<int64_t> inputs;  ///< indices of the layers it reads; -1 is the model input
    std::vector<std::vector<int64_t>> input_shapes;  ///< per sample, one per input
    nn::QDenseImpl* dense = nullptr;                 ///< the layer when it is a QDense
    nn::DenseChain chain;  ///< its place in a chain of dense layers (training)
  };

  /// Builds the layers; throws config::ConfigError naming the layer and its line.
  explicit HGQModelImpl(config::ModelSpec spec);

  torch::Tensor forward(torch::Tensor x);
  /// Sum of the layers' differentiable EBOPs.
  torch::Tensor ebops() const;
  /// Sum of the quantizers' bit widths (gamma term).
  torch::Tensor bits_l1() const;
  /// Projects every quantizer's bit parameters into bounds.
  void constrain();
  /// Every quantizer of the model with its layer name.
  std::vector<std::pair<std::string, nn::NamedQuantizer>> quantizers() const;

  const config::ModelSpec& spec() const { return spec_; }
  const std::vector<Entry>& layers() const { return layers_; }
  /// True when the last layer is a softmax: the output holds probabilities, not logits.
  bool outputs_probabilities() const {
    return !layers_.empty() && layers_.back().layer->type_name() == "softmax";
  }
  const std::vector<int64_t>& input_shape() const { return spec_.input_shape; }
  const std::vector<int64_t>& output_shape() const { return layers_.back().output_shape; }

 private:
  config::ModelSpec spec_;
  std::vector<Entry> layers_;
};
TORCH_MODULE(HGQModel);

}  // namespace hgqt::model
