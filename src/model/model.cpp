// Building an HGQModel from its spec.
#include "hgqt/model/model.h"

namespace hgqt::model {

using config::ConfigError;
using quant::Place;

namespace {
void apply_spec(quant::QuantizerOptions& o, const config::QuantizerSpec& s) {
  if (s.param) o.param(quant::parse_parameterization(*s.param));
  if (s.k) o.k(*s.k);
  if (s.b) o.b(*s.b);
  if (s.i) o.i(*s.i);
  if (s.f) o.f(*s.f);
  if (s.round) o.round(quant::parse_rounding(*s.round));
  if (s.overflow) o.overflow(quant::parse_overflow(*s.overflow));
  if (s.granularity) o.granularity(quant::parse_granularity(*s.granularity));
  if (s.i_decay) o.i_decay(*s.i_decay);
  if (s.trainable) o.trainable(*s.trainable);
}

const char* place_key(Place p) {
  switch (p) {
    case Place::Weight: return "weight";
    case Place::Bias: return "bias";
    case Place::Datalane: return "datalane";
  }
  return "";
}

std::string layer_where(const config::LayerSpec& l, size_t index) {
  std::string w = "model.layers[" + std::to_string(index) + "]";
  if (!l.name.empty()) w += " '" + l.name + "'";
  if (l.line > 0) w += " (line " + std::to_string(l.line) + ")";
  return w;
}
}  // namespace

quant::QuantizerOptions resolve_quantizer(Place place, std::vector<int64_t> shape,
                                          const config::ModelSpec& model,
                                          const config::QuantizerSpec* layer_spec,
                                          const std::string& where) {
  auto o = quant::default_quantizer_options(place, shape);
  try {
    auto it = model.defaults.find(place_key(place));
    if (it != model.defaults.end()) apply_spec(o, it->second);
    if (layer_spec) apply_spec(o, *layer_spec);
  } catch (const std::invalid_argument& e) {
    throw ConfigError(where + ": " + e.what());
  }
  o.shape(std::move(shape));
  return o;
}

HGQModelImpl::HGQModelImpl(config::ModelSpec spec) : spec_(std::move(spec)) {
  if (spec_.input_shape.empty()) throw ConfigError("model.input_shape: must not be empty");
  if (spec_.layers.empty()) throw ConfigError("model.layers: the model has no layers");
  std::vector<int64_t> shape = spec_.input_shape;
  for (size_t n = 0; n < spec_.layers.size(); ++n) {
    const auto& l = spec_.layers[n];
    const std::string where = layer_where(l, n);
    auto q = [&](const char* role) -> const config::QuantizerSpec* {
      auto it = l.quantizers.find(role);
      return it == l.quantizers.end() ? nullptr : &it->second;
    };
    auto qwhere = [&](const char* role) { return where + "." + role + "_quantizer"; };
    Entry e;
    e.name = l.name.empty() ? l.type + "_" + std::to_string(n) : l.name;
    e.input_shape = shape;
    try {
      if (l.type == "dense") {
        if (shape.size() != 1)
          throw ConfigError(where + ": dense layer needs a flat input, got a per-sample shape of " +
                            std::to_string(shape.size()) + " axes (add {type: flatten} before it)");
        nn::QDenseOptions o(shape[0], l.units);
        o.bias(l.use_bias).activation(nn::parse_activation(l.activation));
        o.input_quantizer(resolve_quantizer(Place::Datalane, {shape[0]}, spec_, q("input"), qwhere("input")));
        o.kernel_quantizer(resolve_quantizer(Place::Weight, {shape[0], l.units}, spec_, q("kernel"), qwhere("kernel")));
        if (l.use_bias)
          o.bias_quantizer(resolve_quantizer(Place::Bias, {l.units}, spec_, q("bias"), qwhere("bias")));
        if (q("output"))
          o.output_quantizer(resolve_quantizer(Place::Datalane, {l.units}, spec_, q("output"), qwhere("output")));
        auto m = nn::QDense(o);
        e.layer = m.get();
        e.module = m.ptr();
      } else if (l.type == "activation") {
        nn::QActivationOptions o(shape);
        o.activation(nn::parse_activation(l.activation));
        o.quantizer(resolve_quantizer(Place::Datalane, shape, spec_, q("output"), qwhere("output")));
        auto m = nn::QActivation(o);
        e.layer = m.get();
        e.module = m.ptr();
      } else if (l.type == "flatten") {
        auto m = nn::Flatten();
        e.layer = m.get();
        e.module = m.ptr();
      } else if (l.type == "quantize") {
        auto m = nn::Quantize(resolve_quantizer(Place::Datalane, shape, spec_, q("input"), qwhere("input")));
        e.layer = m.get();
        e.module = m.ptr();
      } else {
        throw ConfigError(where + ".type: unknown layer type '" + l.type +
                          "' (expected dense, activation, flatten or quantize)");
      }
      e.output_shape = e.layer->output_shape(shape);
    } catch (const ConfigError&) {
      throw;
    } catch (const std::exception& ex) {
      throw ConfigError(where + ": " + ex.what());
    }
    for (const auto& other : layers_)
      if (other.name == e.name) throw ConfigError(where + ": duplicate layer name '" + e.name + "'");
    register_module(e.name, e.module);
    shape = e.output_shape;
    layers_.push_back(std::move(e));
  }
}

torch::Tensor HGQModelImpl::forward(torch::Tensor x) {
  TORCH_CHECK(x.dim() == static_cast<int64_t>(spec_.input_shape.size()) + 1 &&
                  x.sizes().slice(1).vec() == spec_.input_shape,
              "model expects input [batch, ", c10::IntArrayRef(spec_.input_shape), "], got ",
              x.sizes());
  for (auto& e : layers_) x = e.layer->forward(x);
  return x;
}

torch::Tensor HGQModelImpl::ebops() const {
  torch::Tensor total;
  for (const auto& e : layers_) {
    auto v = e.layer->ebops();
    total = total.defined() ? total + v : v;
  }
  return total;
}

torch::Tensor HGQModelImpl::bits_l1() const {
  torch::Tensor total = torch::zeros({});
  for (const auto& [name, q] : quantizers()) total = total + q.quantizer->bits_l1();
  return total;
}

void HGQModelImpl::constrain() {
  for (auto& [name, q] : quantizers()) q.quantizer->constrain();
}

std::vector<std::pair<std::string, nn::NamedQuantizer>> HGQModelImpl::quantizers() const {
  std::vector<std::pair<std::string, nn::NamedQuantizer>> out;
  for (const auto& e : layers_)
    for (auto& q : e.layer->quantizers()) out.emplace_back(e.name, q);
  return out;
}

}  // namespace hgqt::model
