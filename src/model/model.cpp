// Building an HGQModel from its spec.
#include "hgqt/model/model.h"

#include "hgqt/nn/batchnorm.h"
#include "hgqt/nn/conv.h"
#include "hgqt/nn/einsum.h"
#include "hgqt/nn/lut.h"
#include "hgqt/nn/merge.h"
#include "hgqt/nn/pool.h"
#include "hgqt/nn/softmax.h"
#include "hgqt/util/shape.h"

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
    case Place::Weight:
      return "weight";
    case Place::Bias:
      return "bias";
    case Place::Datalane:
      return "datalane";
  }
  return "";
}

std::string layer_where(const config::LayerSpec& l, size_t index) {
  // The YAML's index (what --set takes): a block's layers share their block's.
  std::string w = "model.layers[" + std::to_string(l.yaml_index >= 0 ? l.yaml_index : index) + "]";
  if (!l.name.empty()) w += " '" + l.name + "'";
  if (l.line > 0) w += " (line " + std::to_string(l.line) + ")";
  return w;
}

// `o` with a config spec applied (none: unchanged); errors name `where`.
quant::QuantizerOptions with_spec(quant::QuantizerOptions o, const config::QuantizerSpec* spec,
                                  const std::string& where) {
  if (!spec) return o;
  try {
    apply_spec(o, *spec);
  } catch (const std::invalid_argument& e) {
    throw ConfigError(where + ": " + e.what());
  }
  return o;
}
}  // namespace

quant::QuantizerOptions resolve_quantizer(Place place, std::vector<int64_t> shape,
                                          const config::ModelSpec& model,
                                          const config::QuantizerSpec* layer_spec,
                                          const std::string& where) {
  auto o = quant::default_quantizer_options(place, shape);
  auto it = model.defaults.find(place_key(place));
  if (it != model.defaults.end()) o = with_spec(o, &it->second, where);
  o = with_spec(o, layer_spec, where);
  o.shape(std::move(shape));
  return o;
}

namespace {
template <class M>
void set_module(HGQModelImpl::Entry& e, M m) {
  e.layer = m.get();
  e.module = m.ptr();
  e.dense = dynamic_cast<nn::QDenseImpl*>(m.get());
}

// A size list from the config broadcast to `rank` spatial axes ("3" -> {3, 3}).
std::vector<int64_t> per_axis(const std::vector<int64_t>& v, size_t rank, const std::string& key) {
  if (v.empty() || v.size() == rank) return v;
  if (v.size() == 1) return std::vector<int64_t>(rank, v[0]);
  throw ConfigError(key + ": has " + std::to_string(v.size()) + " entries, expected 1 or " +
                    std::to_string(rank) + " (one per spatial axis)");
}

std::string shape_text(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t n = 0; n < s.size(); ++n) out += (n ? ", " : "") + std::to_string(s[n]);
  return out + "]";
}
}  // namespace

HGQModelImpl::HGQModelImpl(config::ModelSpec spec) : spec_(std::move(spec)) {
  if (spec_.input_shape.empty()) throw ConfigError("model.input_shape: must not be empty");
  if (spec_.layers.empty()) throw ConfigError("model.layers: the model has no layers");
  for (size_t n = 0; n < spec_.layers.size(); ++n) {
    const auto& l = spec_.layers[n];
    const std::string where = layer_where(l, n);
    auto q = [&](const char* role) -> const config::QuantizerSpec* {
      auto it = l.quantizers.find(role);
      return it == l.quantizers.end() ? nullptr : &it->second;
    };
    auto qwhere = [&](const char* role) { return where + "." + role + "_quantizer"; };
    auto resolve = [&](Place place, std::vector<int64_t> shape, const char* role) {
      return resolve_quantizer(place, std::move(shape), spec_, q(role), qwhere(role));
    };
    Entry e;
    e.name = l.name.empty() ? l.type + "_" + std::to_string(n) : l.name;
    // The layers it reads.
    if (l.inputs.empty()) {
      e.inputs.push_back(static_cast<int64_t>(n) - 1);
    } else {
      for (const auto& in : l.inputs) {
        if (in == "input") {
          e.inputs.push_back(-1);
          continue;
        }
        int64_t found = -2;
        for (size_t j = 0; j < layers_.size(); ++j)
          if (layers_[j].name == in) found = static_cast<int64_t>(j);
        if (found == -2) {
          bool later = false;
          for (size_t j = n; j < spec_.layers.size(); ++j)
            if (spec_.layers[j].name == in) later = true;
          throw ConfigError(where + ".inputs: '" + in + "' " +
                            (later ? "comes later in model.layers; list layers in the order they "
                                     "are evaluated"
                                   : "is not the name of a layer (or 'input', the model input)"));
        }
        e.inputs.push_back(found);
      }
    }
    for (int64_t src : e.inputs)
      e.input_shapes.push_back(src < 0 ? spec_.input_shape : layers_[src].output_shape);
    const std::vector<int64_t> shape = e.input_shapes[0];
    e.input_shape = shape;
    const bool conv = l.type == "conv1d" || l.type == "conv2d";
    const size_t rank = l.type == "conv1d" ? 1 : 2;
    try {
      const bool block_start = l.block >= 0 && (n == 0 || spec_.layers[n - 1].block != l.block);
      const bool lut_block = l.block >= 0 && spec_.blocks.at(l.block).type == "lut_dense";
      if (block_start && lut_block && shape.size() != 1)
        throw ConfigError(where + ": a lut_dense block takes a flat input [features], got " +
                          shape_text(shape) +
                          " (flatten it first; a per-particle lut_dense is not done)");
      if (block_start && !lut_block && shape.size() != 2)
        throw ConfigError(where + ": an attention block reads particle lists [P, C], got " +
                          shape_text(shape));
      if (l.type == "dense" && l.units == 0) {
        // An attention block's output projection: as many features as its query has.
        if (l.units_from.empty())
          throw ConfigError(where + ".units: expected a positive integer, got 0");
        std::vector<int64_t> query = spec_.input_shape;
        for (const auto& prev : layers_)
          if (prev.name == l.units_from) query = prev.output_shape;
        if (query.empty())
          throw ConfigError(where + ": the attention block's query '" + l.units_from +
                            "' has no feature axis");
        spec_.layers[n].units = query.back();
      }
      if (l.type == "dense") {
        // On [S..., F] the layer applies along the last axis at every position S.
        const int64_t in = shape.back();
        const std::vector<int64_t> out_shape = nn::dense_output_shape(shape, l.units);
        auto fill = [&](auto& o) {
          o.input_shape(shape).bias(l.use_bias).activation(nn::parse_activation(l.activation));
          o.input_quantizer(resolve(Place::Datalane, shape, "input"));
          o.kernel_quantizer(resolve(Place::Weight, {in, l.units}, "kernel"));
          if (q("output")) o.output_quantizer(resolve(Place::Datalane, out_shape, "output"));
        };
        if (l.batchnorm) {
          nn::QDenseBatchNormOptions o(in, l.units);
          fill(o);
          o.momentum(l.momentum).eps(l.epsilon);
          o.bias_quantizer(resolve(Place::Bias, {l.units}, "bias"));
          set_module(e, nn::QDenseBatchNorm(o));
        } else {
          nn::QDenseOptions o(in, l.units);
          fill(o);
          if (l.use_bias) o.bias_quantizer(resolve(Place::Bias, {l.units}, "bias"));
          set_module(e, nn::QDense(o));
        }
      } else if (conv) {
        if (shape.size() != rank + 1)
          throw ConfigError(where + ": " + l.type + " needs a per-sample input of " +
                            std::to_string(rank + 1) + " axes (" +
                            (rank == 1 ? "[length, channels]" : "[height, width, channels]") +
                            ", channels last), got " + shape_text(shape) +
                            (rank == 2 && shape.size() == 2
                                 ? " (add {type: reshape, shape: [" + std::to_string(shape[0]) +
                                       ", " + std::to_string(shape[1]) + ", 1]} before it)"
                                 : ""));
        const auto ks = per_axis(l.kernel_size, rank, where + ".kernel_size");
        const auto st = per_axis(l.strides, rank, where + ".strides");
        const int64_t c = shape.back(), f = l.filters;
        std::vector<int64_t> kshape = ks;
        kshape.push_back(c);
        kshape.push_back(f);
        const auto geo =
            nn::conv_geometry({shape.begin(), shape.end() - 1}, ks,
                              st.empty() ? std::vector<int64_t>(rank, 1) : st, l.padding);
        std::vector<int64_t> oshape = geo.out;
        oshape.push_back(f);
        auto fill = [&](auto& o) {
          o.strides(st).padding(l.padding).bias(l.use_bias);
          o.activation(nn::parse_activation(l.activation));
          o.input_quantizer(resolve(Place::Datalane, shape, "input"));
          o.kernel_quantizer(resolve(Place::Weight, kshape, "kernel"));
          o.bias_quantizer(resolve(Place::Bias, {f}, "bias"));
          if (q("output")) o.output_quantizer(resolve(Place::Datalane, oshape, "output"));
        };
        if (l.batchnorm) {
          nn::QConvBatchNormOptions o(c, f, ks, shape);
          fill(o);
          o.momentum(l.momentum).eps(l.epsilon);
          if (rank == 1)
            set_module(e, nn::QConv1dBatchNorm(o));
          else
            set_module(e, nn::QConv2dBatchNorm(o));
        } else {
          nn::QConvOptions o(c, f, ks, shape);
          fill(o);
          if (rank == 1)
            set_module(e, nn::QConv1d(o));
          else
            set_module(e, nn::QConv2d(o));
        }
      } else if (l.type == "batchnorm") {
        nn::QBatchNormOptions o(shape);
        o.momentum(l.momentum).eps(l.epsilon);
        o.input_quantizer(resolve(Place::Datalane, shape, "input"));
        o.kernel_quantizer(resolve(Place::Weight, {shape.back()}, "kernel"));
        o.bias_quantizer(resolve(Place::Bias, {shape.back()}, "bias"));
        if (q("output")) o.output_quantizer(resolve(Place::Datalane, shape, "output"));
        set_module(e, nn::QBatchNorm(o));
      } else if (l.type == "max_pool" || l.type == "avg_pool" || l.type == "sum_pool" ||
                 l.type == "global_max_pool" || l.type == "global_avg_pool" ||
                 l.type == "global_sum_pool") {
        const bool global = l.type.rfind("global_", 0) == 0;
        if (shape.size() != 2 && shape.size() != 3)
          throw ConfigError(where + ": " + l.type +
                            " needs a per-sample input [length, channels] or [height, width, "
                            "channels], got " +
                            shape_text(shape));
        nn::PoolOptions o(global ? std::vector<int64_t>{}
                                 : per_axis(l.pool_size, shape.size() - 1, where + ".pool_size"));
        o.global_pool(global);
        o.scale_bits(l.scale_bits);
        if (!global) o.strides(per_axis(l.strides, shape.size() - 1, where + ".strides"));
        if (l.type.find("max") != std::string::npos)
          set_module(e, nn::MaxPool(o));
        else if (l.type.find("sum") != std::string::npos)
          set_module(e, nn::SumPool(o));
        else
          set_module(e, nn::AvgPool(o));
      } else if (l.type == "reshape") {
        set_module(e, nn::Reshape(nn::ReshapeOptions(l.shape)));
      } else if (l.type == "add") {
        const auto out = util::broadcast_shape(e.input_shapes);
        if (!out) {
          std::string got;
          for (const auto& in : e.input_shapes) got += (got.empty() ? "" : ", ") + shape_text(in);
          throw ConfigError(where +
                            ": add needs inputs whose shapes broadcast (numpy rules, from "
                            "the last axis), got " +
                            got);
        }
        nn::QAddOptions o(*out);
        o.activation(nn::parse_activation(l.activation));
        if (q("output")) o.output_quantizer(resolve(Place::Datalane, *out, "output"));
        set_module(e, nn::QAdd(o));
      } else if (l.type == "einsum_dense") {
        // The kernel's axes: sized by the input where they meet it, else by output_shape.
        std::vector<int64_t> ks, out;
        try {
          const util::EinsumEquation eq = util::parse_einsum(l.equation);
          if (shape.size() != eq.a.size())
            throw std::invalid_argument("the input " + shape_text(shape) + " has " +
                                        std::to_string(shape.size()) + " axes, the equation '" +
                                        eq.a + "' " + std::to_string(eq.a.size()));
          for (char c : eq.b) {
            const size_t pa = eq.a.find(c);
            ks.push_back(pa != std::string::npos ? shape[pa] : l.output_shape.at(eq.out.find(c)));
          }
          out = util::einsum_output_shape(eq, shape, ks);
        } catch (const std::invalid_argument& ex) {
          throw ConfigError(where + ".equation: " + ex.what());
        }
        if (out != l.output_shape)
          throw ConfigError(where + ".output_shape: " + shape_text(l.output_shape) + ", but " +
                            l.equation + " of the input " + shape_text(shape) + " gives " +
                            shape_text(out));
        nn::QEinsumDenseOptions o(l.equation, shape, ks);
        o.bias(l.use_bias).activation(nn::parse_activation(l.activation));
        o.input_quantizer(resolve(Place::Datalane, shape, "input"));
        o.kernel_quantizer(resolve(Place::Weight, ks, "kernel"));
        if (l.use_bias) o.bias_quantizer(resolve(Place::Bias, {out.back()}, "bias"));
        if (q("output")) o.output_quantizer(resolve(Place::Datalane, out, "output"));
        set_module(e, nn::QEinsumDense(o));
      } else if (l.type == "einsum") {
        if (e.input_shapes.size() != 2)
          throw ConfigError(where + ".inputs: an einsum layer takes two inputs");
        // Its operands must be fixed-point already (the hardware's input is one quantizer's).
        for (int64_t src : e.inputs) {
          while (src >= 0 && (layers_[src].layer->type_name() == "flatten" ||
                              layers_[src].layer->type_name() == "reshape"))
            src = layers_[src].inputs[0];
          if (src < 0)
            throw ConfigError(where +
                              ".inputs: an einsum multiplies quantized activations, not the "
                              "raw model input; put a quantize layer before it");
        }
        std::vector<int64_t> out;
        try {
          out = util::einsum_output_shape(util::parse_einsum(l.equation), e.input_shapes[0],
                                          e.input_shapes[1]);
        } catch (const std::invalid_argument& ex) {
          throw ConfigError(where + ".equation: " + ex.what());
        }
        nn::QEinsumOptions o(l.equation, e.input_shapes[0], e.input_shapes[1]);
        o.input_quantizer(resolve(Place::Datalane, e.input_shapes[0], "input"));
        o.input2_quantizer(resolve(Place::Datalane, e.input_shapes[1], "input2"));
        if (q("output")) o.output_quantizer(resolve(Place::Datalane, out, "output"));
        set_module(e, nn::QEinsum(o));
      } else if (l.type == "concatenate") {
        set_module(e, nn::QConcatenate(nn::QConcatenateOptions(l.axis)));
      } else if (l.type == "learned_lut") {
        nn::QLearnedLUTOptions o(shape);
        o.hidden(l.hidden).hidden_layers(l.hidden_layers).max_table_bits(l.max_table_bits);
        o.input_quantizer(resolve(Place::Datalane, shape, "input"));
        o.output_quantizer(resolve(Place::Datalane, shape, "output"));
        set_module(e, nn::QLearnedLUT(o));
      } else if (l.type == "lut") {
        nn::QUnaryLUTOptions o(shape, l.function);
        o.input_quantizer(resolve(Place::Datalane, shape, "input"));
        o.output_quantizer(resolve(Place::Datalane, shape, "output"));
        set_module(e, nn::QUnaryLUT(o));
      } else if (l.type == "softmax") {
        nn::QSoftmaxOptions o(shape);
        o.input_scale(l.input_scale);
        o.input_quantizer(resolve(Place::Datalane, shape, "input"));
        // The stage and output quantizers start from their own defaults, not the datalane ones.
        auto own = [&](quant::QuantizerOptions so, const char* role) {
          return with_spec(std::move(so), q(role), qwhere(role));
        };
        auto stage = [&](nn::SoftmaxStage s, const char* role) {
          return own(nn::softmax_stage_defaults(s, shape.back()), role);
        };
        o.output_quantizer(own(nn::softmax_output_defaults(shape), "output"));
        o.exp_input_quantizer(stage(nn::SoftmaxStage::ExpInput, "exp_input"));
        o.exp_output_quantizer(stage(nn::SoftmaxStage::ExpOutput, "exp_output"));
        o.inv_input_quantizer(stage(nn::SoftmaxStage::InvInput, "inv_input"));
        o.inv_output_quantizer(stage(nn::SoftmaxStage::InvOutput, "inv_output"));
        set_module(e, nn::QSoftmax(o));
      } else if (l.type == "activation") {
        nn::QActivationOptions o(shape);
        o.activation(nn::parse_activation(l.activation));
        o.quantizer(resolve(Place::Datalane, shape, "output"));
        set_module(e, nn::QActivation(o));
      } else if (l.type == "flatten") {
        set_module(e, nn::Flatten());
      } else if (l.type == "quantize") {
        set_module(e, nn::Quantize(resolve(Place::Datalane, shape, "input")));
      } else {
        throw ConfigError(where + ".type: unknown layer type '" + l.type + "'");
      }
      e.output_shape = e.layer->output_shape_many(e.input_shapes);
    } catch (const ConfigError&) {
      throw;
    } catch (const c10::Error& ex) {
      // LibTorch's own failures (e.g. a kernel too large to allocate): its message without the
      // backtrace, and without the "[enforce fail at file:line] cond." prefix.
      std::string msg = ex.what_without_backtrace();
      const auto enforce =
          msg.rfind("[enforce fail at", 0) == 0 ? msg.find(". ") : std::string::npos;
      if (enforce != std::string::npos) msg = msg.substr(enforce + 2);
      throw ConfigError(where + ": cannot build the layer: " + msg);
    } catch (const std::exception& ex) {
      throw ConfigError(where + ": " + ex.what());
    }
    for (const auto& other : layers_)
      if (other.name == e.name)
        throw ConfigError(where + ": duplicate layer name '" + e.name + "'");
    register_module(e.name, e.module);
    layers_.push_back(std::move(e));
  }
  // Chains of dense layers (nn/fused.h): a ReLU dense layer without output quantizer, read only
  // by one dense layer, hands its ReLU to that reader in training.
  const size_t n = layers_.size();
  std::vector<std::vector<size_t>> readers(n);
  for (size_t li = 0; li < n; ++li)
    for (int64_t src : layers_[li].inputs)
      if (src >= 0) readers[static_cast<size_t>(src)].push_back(li);
  for (size_t li = 0; li + 1 < n; ++li) {
    auto* d = layers_[li].dense;
    if (!d || d->per_position() || d->options.activation() != nn::Activation::ReLU || d->oq ||
        readers[li].size() != 1)
      continue;
    auto& reader = layers_[readers[li][0]];
    if (!reader.dense || reader.dense->per_position()) continue;
    layers_[li].chain.defer_relu = true;
    reader.chain.relu_input = true;
  }
}

torch::Tensor HGQModelImpl::forward(torch::Tensor x) {
  TORCH_CHECK(x.dim() == static_cast<int64_t>(spec_.input_shape.size()) + 1 &&
                  x.sizes().slice(1).vec() == spec_.input_shape,
              "model expects input [batch, ", c10::IntArrayRef(spec_.input_shape), "], got ",
              x.sizes());
  // A chain keeps only the running tensor; a graph keeps each output until its last reader.
  const size_t n = layers_.size();
  std::vector<torch::Tensor> outs(n);
  std::vector<size_t> last_use(n, 0);
  for (size_t li = 0; li < n; ++li)
    for (int64_t src : layers_[li].inputs)
      if (src >= 0) last_use[src] = li;
  for (size_t li = 0; li < n; ++li) {
    const Entry& e = layers_[li];
    std::vector<torch::Tensor> ins;
    ins.reserve(e.inputs.size());
    for (int64_t src : e.inputs) ins.push_back(src < 0 ? x : outs[src]);
    if (e.dense && is_training() && !e.dense->per_position())
      outs[li] = e.dense->forward_chained(ins[0], e.chain);
    else
      outs[li] = ins.size() == 1 ? e.layer->forward(ins[0]) : e.layer->forward_many(ins);
    for (int64_t src : e.inputs)
      if (src >= 0 && last_use[src] == li && static_cast<size_t>(src) != n - 1)
        outs[src] = torch::Tensor();
  }
  return outs[n - 1];
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
