// HGQModel <-> archive, and the calibration trace.
#include "hgqt/model/archive_bridge.h"

#include <cmath>

#include "hgqt/archive/fixed.h"
#include "hgqt/nn/batchnorm.h"
#include "hgqt/nn/conv.h"
#include "hgqt/nn/einsum.h"
#include "hgqt/nn/lut.h"
#include "hgqt/nn/merge.h"
#include "hgqt/nn/pool.h"
#include "hgqt/nn/softmax.h"

namespace hgqt::model {

using archive::ArchiveError;
using archive::LayerKind;
using quant::FixedQuantizer;
using quant::OverflowMode;
using quant::RoundingMode;

namespace {

std::vector<int32_t> to_int_vector(const torch::Tensor& t) {
  auto c = t.to(torch::kCPU, torch::kDouble).contiguous();
  std::vector<int32_t> out(c.numel());
  const double* p = c.data_ptr<double>();
  for (int64_t n = 0; n < c.numel(); ++n) out[n] = static_cast<int32_t>(std::lrint(p[n]));
  return out;
}

// The quantizer's effective integer k, i, f expanded to `shape`.
archive::QuantSpec quant_spec(const FixedQuantizer& q, const std::vector<int64_t>& shape) {
  archive::QuantSpec s;
  s.shape = shape;
  auto [k, i, f] = q->kif();
  // One parameter (granularity tensor) fits any shape, also one of lower rank ([1]).
  auto fit = [&](const torch::Tensor& t) {
    return to_int_vector(t.numel() == 1 ? t.reshape({1}).expand(shape) : t.expand(shape));
  };
  s.k = fit(k);
  s.i = fit(i);
  s.f = fit(f);
  s.round = q->options.round() == RoundingMode::S_RND ? RoundingMode::RND : q->options.round();
  s.overflow = q->options.overflow();
  return s;
}

// A constant tensor quantized by q (eval semantics), as exact mantissas.
archive::Constant constant(const FixedQuantizer& q, const torch::Tensor& value) {
  archive::Constant c;
  c.shape = value.sizes().vec();
  c.quantizer = quant_spec(q, c.shape);
  auto v = value.detach().to(torch::kCPU, torch::kDouble).contiguous();
  const double* p = v.data_ptr<double>();
  const auto& qs = c.quantizer;
  c.mantissa.resize(v.numel());
  c.exponent.resize(v.numel());
  for (int64_t n = 0; n < v.numel(); ++n) {
    const double xq = qs.apply(p[n], n);
    c.mantissa[n] = static_cast<int64_t>(std::ldexp(xq, qs.f[n]));
    c.exponent[n] = -qs.f[n];
  }
  return c;
}

// Copies `full` (the per-element values of an archive) into a parameter tensor of a smaller,
// broadcastable shape, checking that the elements sharing a parameter agree.
void assign_param(torch::Tensor& param, const std::vector<int32_t>& full,
                  const std::vector<int64_t>& shape, const std::string& what) {
  auto t = torch::tensor(std::vector<int64_t>(full.begin(), full.end()), torch::kLong)
               .to(torch::kDouble)
               .view(shape);
  auto narrowed = t;
  const auto ps = param.sizes();
  for (int64_t d = 0; d < static_cast<int64_t>(shape.size()); ++d)
    if (ps[d] == 1 && shape[d] > 1) narrowed = narrowed.narrow(d, 0, 1);
  if (!torch::equal(narrowed.expand(shape), t))
    throw ArchiveError(what +
                       ": per-element values differ where the model shares one parameter "
                       "(its granularity is coarser than the archive's values)");
  torch::NoGradGuard no_grad;
  param.copy_(narrowed.to(param.options()));
}

void set_quantizer(FixedQuantizer& q, const archive::QuantSpec& s, const std::string& what) {
  if (q->options.round() != s.round &&
      !(q->options.round() == RoundingMode::S_RND && s.round == RoundingMode::RND))
    throw ArchiveError(what + ": rounding " + quant::to_string(s.round) + " in the archive, " +
                       quant::to_string(q->options.round()) + " in the model config");
  if (q->options.overflow() != s.overflow)
    throw ArchiveError(what + ": overflow " + std::string(quant::to_string(s.overflow)) +
                       " in the archive, " + quant::to_string(q->options.overflow()) +
                       " in the model config");
  assign_param(q->k, s.k, s.shape, what + ".k");
  assign_param(q->i, s.i, s.shape, what + ".i");
  if (q->f.defined()) {
    assign_param(q->f, s.f, s.shape, what + ".f");
  } else {
    std::vector<int32_t> b(s.size());
    for (int64_t n = 0; n < s.size(); ++n) b[n] = s.i[n] + s.f[n];
    assign_param(q->b, b, s.shape, what + ".b");
  }
}

void set_constant(torch::Tensor& param, FixedQuantizer& q, const archive::Constant& c,
                  const std::string& what) {
  set_quantizer(q, c.quantizer, what + ".quantizer");
  std::vector<double> values(c.size());
  for (int64_t n = 0; n < c.size(); ++n) values[n] = c.value(n);
  torch::NoGradGuard no_grad;
  param.copy_(torch::tensor(values, torch::kDouble).view(c.shape).to(param.options()));
}

// The smallest input mantissa of each element of a lut layer's input quantizer (0 when pruned).
std::vector<int64_t> lut_min_mantissas(const archive::QuantSpec& iq) {
  std::vector<int64_t> lo(iq.size());
  for (int64_t n = 0; n < iq.size(); ++n) {
    const auto t = archive::quantizer_type(iq, n);
    lo[n] = t.width == 0 ? 0 : static_cast<int64_t>(t.min_mantissa());
  }
  return lo;
}

// The table of a lut layer: for every element, its function of every value its input quantizer
// can give (in double, with the layer's own LibTorch ops: `fn(xs, element)` for flat xs and the
// element of each), quantized by the output quantizer. `what` names the function in errors.
template <class Fn>
std::vector<int64_t> lut_table(Fn&& fn, const archive::QuantSpec& iq, const archive::QuantSpec& oq,
                               const std::string& name, const std::string& what) {
  archive::Layer probe;
  probe.name = name;
  probe.input_quantizer = iq;
  const std::vector<int64_t> off = archive::lut_offsets(probe);
  const std::vector<int64_t> lo = lut_min_mantissas(iq);
  std::vector<double> xs(off.back());
  std::vector<int64_t> element(off.back());
  for (int64_t n = 0; n < iq.size(); ++n)
    for (int64_t e = off[n]; e < off[n + 1]; ++e) {
      xs[e] = std::ldexp(static_cast<double>(lo[n] + (e - off[n])), -iq.f[n]);
      element[e] = n;
    }
  torch::NoGradGuard no_grad;
  const int64_t total = static_cast<int64_t>(xs.size());
  const auto all_x = torch::from_blob(xs.data(), {total}, torch::kDouble);
  const auto all_el = torch::from_blob(element.data(), {total}, torch::kLong);
  std::vector<int64_t> table(xs.size());
  constexpr int64_t kChunk = int64_t{1} << 18;  // entries evaluated at once
  for (int64_t c0 = 0; c0 < total; c0 += kChunk) {
    const int64_t c1 = std::min(c0 + kChunk, total);
    const torch::Tensor ys = fn(all_x.narrow(0, c0, c1 - c0), all_el.narrow(0, c0, c1 - c0))
                                 .to(torch::kDouble)
                                 .contiguous();
    const double* y = ys.data_ptr<double>();
    for (int64_t e = c0; e < c1; ++e) {
      const int64_t n = element[e];
      if (!std::isfinite(y[e - c0]))
        throw ArchiveError("lut layer '" + name + "': " + what + "(" + std::to_string(xs[e]) +
                           ") of element " + std::to_string(n) +
                           " is not finite; narrow its input quantizer");
      table[e] =
          oq.width(n) <= 0 ? 0 : static_cast<int64_t>(std::ldexp(oq.apply(y[e - c0], n), oq.f[n]));
    }
  }
  return table;
}

// The archive kind a model layer is written as; std::nullopt when it has none.
std::optional<LayerKind> archive_kind(const HGQModelImpl::Entry& e) {
  const std::string t = e.layer->type_name();
  if (t == "dense_bn") return LayerKind::Dense;
  if (t == "conv1d_bn") return LayerKind::Conv1d;
  if (t == "conv2d_bn") return LayerKind::Conv2d;
  if (t == "batchnorm") return LayerKind::Scale;
  if (t == "learned_lut") return LayerKind::Lut;
  if (t.find("pool") != std::string::npos) return LayerKind::Pool;
  return archive::parse_kind(t);
}

}  // namespace

archive::Archive to_archive(HGQModel& model, const CheckpointMeta* meta, const std::string& name) {
  archive::Archive a;
  a.producer = std::string("hgqt ") + HGQT_VERSION;
  a.name = name;
  a.input_shape = model->input_shape();
  a.output_shape = model->output_shape();
  a.model_yaml = config::model_to_yaml(model->spec());
  if (meta) {
    a.loss = meta->loss;
    a.feature_mean = meta->feature_mean;
    a.feature_std = meta->feature_std;
  }
  const auto& entries = model->layers();
  for (size_t li = 0; li < entries.size(); ++li) {
    const auto& e = entries[li];
    archive::Layer l;
    l.name = e.name;
    const std::optional<LayerKind> kind = archive_kind(e);
    if (!kind)
      throw ArchiveError("layer '" + e.name + "' of type " + e.layer->type_name() +
                         " has no archive form yet");
    l.kind = *kind;
    l.input_shape = e.input_shape;
    l.output_shape = e.output_shape;
    if (!(e.inputs.size() == 1 && e.inputs[0] == static_cast<int64_t>(li) - 1))
      for (int64_t src : e.inputs)
        l.inputs.push_back(src < 0 ? std::string(archive::kModelInput) : entries[src].name);
    auto* m = e.module.get();
    // The parts every linear layer shares.
    auto linear = [&](nn::Activation act, const FixedQuantizer& iq, const FixedQuantizer& kq,
                      const torch::Tensor& w, const FixedQuantizer& bq, const torch::Tensor& b,
                      const FixedQuantizer& oq) {
      l.activation = nn::to_string(act);
      if (iq) l.input_quantizer = quant_spec(iq, e.input_shape);
      l.kernel = constant(kq, w);
      if (bq && b.defined()) l.bias = constant(bq, b);
      if (oq) l.output_quantizer = quant_spec(oq, e.output_shape);
    };
    auto conv_attrs = [&](std::vector<int64_t> ks, std::vector<int64_t> strides,
                          std::vector<int64_t> pad) {
      if (strides.empty()) strides.assign(ks.size(), 1);  // the default: 1 per axis
      l.kernel_size = std::move(ks);
      l.strides = std::move(strides);
      l.pad_before = std::move(pad);
    };
    if (auto* d = dynamic_cast<nn::QDenseImpl*>(m)) {
      linear(d->options.activation(), d->iq, d->kq, d->kernel, d->bq, d->bias, d->oq);
    } else if (auto* d = dynamic_cast<nn::QDenseBatchNormImpl*>(m)) {
      auto [w, b] = d->folded(true);
      linear(d->options.activation(), d->iq, d->kq, w, d->bq, b, d->oq);
    } else if (auto* c = dynamic_cast<nn::QConv1dImpl*>(m)) {
      conv_attrs(c->options.kernel_size(), c->options.strides(), c->pad_before(e.input_shape));
      linear(c->options.activation(), c->iq, c->kq, c->kernel, c->bq, c->bias, c->oq);
    } else if (auto* c = dynamic_cast<nn::QConv2dImpl*>(m)) {
      conv_attrs(c->options.kernel_size(), c->options.strides(), c->pad_before(e.input_shape));
      linear(c->options.activation(), c->iq, c->kq, c->kernel, c->bq, c->bias, c->oq);
    } else if (auto* c = dynamic_cast<nn::QConv1dBatchNormImpl*>(m)) {
      auto [w, b] = c->folded(true);
      conv_attrs(c->options.kernel_size(), c->options.strides(), c->pad_before(e.input_shape));
      linear(c->options.activation(), c->iq, c->kq, w, c->bq, b, c->oq);
    } else if (auto* c = dynamic_cast<nn::QConv2dBatchNormImpl*>(m)) {
      auto [w, b] = c->folded(true);
      conv_attrs(c->options.kernel_size(), c->options.strides(), c->pad_before(e.input_shape));
      linear(c->options.activation(), c->iq, c->kq, w, c->bq, b, c->oq);
    } else if (auto* bn = dynamic_cast<nn::QBatchNormImpl*>(m)) {
      auto [sc, off] = bn->folded(true);
      linear(bn->options.activation(), bn->iq, bn->kq, sc, bn->bq, off, bn->oq);
    } else if (auto* p = dynamic_cast<nn::PoolImpl*>(m)) {
      l.pool = p->kind == nn::PoolImpl::Kind::Max   ? "max"
               : p->kind == nn::PoolImpl::Kind::Sum ? "sum"
                                                    : "avg";
      l.kernel_size = p->window(e.input_shape);
      l.strides = p->window_strides(e.input_shape);
      l.scale_bits = p->options.scale_bits();
    } else if (auto* add = dynamic_cast<nn::QAddImpl*>(m)) {
      l.activation = nn::to_string(add->options.activation());
      if (add->oq) l.output_quantizer = quant_spec(add->oq, e.output_shape);
    } else if (auto* cat = dynamic_cast<nn::QConcatenateImpl*>(m)) {
      l.axis = cat->resolved_axis(static_cast<int64_t>(e.output_shape.size()));
    } else if (auto* lut = dynamic_cast<nn::QUnaryLUTImpl*>(m)) {
      l.function = lut->options.function();
      l.input_quantizer = quant_spec(lut->iq, e.input_shape);
      l.output_quantizer = quant_spec(lut->oq, e.output_shape);
      l.table = lut_table([&](const torch::Tensor& x, const torch::Tensor&) { return lut->fn(x); },
                          *l.input_quantizer, *l.output_quantizer, e.name, l.function);
    } else if (auto* lt = dynamic_cast<nn::QLearnedLUTImpl*>(m)) {
      l.function = archive::kLearnedLutFunction;
      l.input_quantizer = quant_spec(lt->iq, e.input_shape);
      l.output_quantizer = quant_spec(lt->oq, e.output_shape);
      // Each connection's table has 2^(k + i + f) entries: refuse one above the block's limit.
      const int64_t limit = lt->options.max_table_bits();
      for (int64_t n = 0; n < l.input_quantizer->size(); ++n) {
        const int w = l.input_quantizer->width(n);
        if (w > limit) {
          const int64_t cols = e.input_shape.back();
          throw ArchiveError("layer '" + e.name + "': connection " + std::to_string(n / cols) +
                             " -> " + std::to_string(n % cols) + " has a " + std::to_string(w) +
                             "-bit input quantizer; its table would have 2^" + std::to_string(w) +
                             " entries, above max_table_bits " + std::to_string(limit) +
                             " (narrow its input quantizer, or raise max_table_bits)");
        }
      }
      l.table = lut_table(
          [&](const torch::Tensor& x, const torch::Tensor& el) { return lt->functions(x, el); },
          *l.input_quantizer, *l.output_quantizer, e.name, "learned function");
    } else if (auto* sm = dynamic_cast<nn::QSoftmaxImpl*>(m)) {
      l.input_quantizer = quant_spec(sm->iq, e.input_shape);
      l.exp_input_quantizer = quant_spec(sm->eiq, {1});
      l.exp_output_quantizer = quant_spec(sm->eoq, {1});
      l.inv_input_quantizer = quant_spec(sm->iiq, {1});
      l.inv_output_quantizer = quant_spec(sm->ioq, {1});
      l.output_quantizer = quant_spec(sm->oq, e.output_shape);
      l.input_scale = sm->options.input_scale();
    } else if (auto* ed = dynamic_cast<nn::QEinsumDenseImpl*>(m)) {
      l.equation = ed->equation.text();
      linear(ed->options.activation(), ed->iq, ed->kq, ed->kernel, ed->bq, ed->bias, ed->oq);
    } else if (auto* es = dynamic_cast<nn::QEinsumImpl*>(m)) {
      l.equation = es->equation.text();
      l.input_quantizer = quant_spec(es->iq, e.input_shapes.at(0));
      l.input2_quantizer = quant_spec(es->iq2, e.input_shapes.at(1));
      if (es->oq) l.output_quantizer = quant_spec(es->oq, e.output_shape);
    } else if (auto* act = dynamic_cast<nn::QActivationImpl*>(m)) {
      l.activation = nn::to_string(act->options.activation());
      l.output_quantizer = quant_spec(act->q, e.output_shape);
    } else if (auto* q = dynamic_cast<nn::QuantizeImpl*>(m)) {
      l.input_quantizer = quant_spec(q->q, e.input_shape);
    } else if (l.kind != LayerKind::Flatten && l.kind != LayerKind::Reshape) {
      throw ArchiveError("layer '" + e.name + "' of type " + e.layer->type_name() +
                         " has no archive form yet");
    }
    a.layers.push_back(std::move(l));
  }
  archive::validate(a, "archive of model '" + name + "'");
  return a;
}

HGQModel from_archive(const archive::Archive& a) {
  if (a.model_yaml.empty())
    throw ArchiveError("archive '" + a.name +
                       "' has no model_yaml: it cannot be rebuilt as a trainable model");
  HGQModel model(config::parse_model_yaml(a.model_yaml, "archive '" + a.name + "' model_yaml"));
  const auto& layers = model->layers();
  if (layers.size() != a.layers.size())
    throw ArchiveError("archive '" + a.name + "': " + std::to_string(a.layers.size()) +
                       " layers, but its model_yaml builds " + std::to_string(layers.size()));
  for (size_t n = 0; n < layers.size(); ++n) {
    const auto& e = layers[n];
    const auto& l = a.layers[n];
    const std::string what = "archive layers[" + std::to_string(n) + "] '" + l.name + "'";
    const std::optional<LayerKind> built = archive_kind(e);
    if (built != l.kind)
      throw ArchiveError(what + ": type " + archive::kind_name(l.kind) + ", model_yaml builds " +
                         (built ? archive::kind_name(*built) : e.layer->type_name()));
    auto* m = e.module.get();
    auto linear = [&](FixedQuantizer& iq, torch::Tensor& w, FixedQuantizer& kq,
                      FixedQuantizer& oq) {
      if (iq && l.input_quantizer) set_quantizer(iq, *l.input_quantizer, what + ".input_quantizer");
      set_constant(w, kq, *l.kernel, what + ".kernel");
      if (oq && l.output_quantizer)
        set_quantizer(oq, *l.output_quantizer, what + ".output_quantizer");
    };
    // Folded batch norm: the archive holds W_f and b_f. Rebuild with statistics that make the
    // folding the identity up to rounding (s = gamma / sqrt(var + eps) ~ 1, mean 0, beta = b_f);
    // the kernel and bias quantizers snap the values back onto the archive's exact constants.
    auto unfold = [&](torch::Tensor& gamma, torch::Tensor& beta, torch::Tensor& mean,
                      torch::Tensor& var, torch::Tensor& bias, FixedQuantizer& bq, double eps) {
      torch::NoGradGuard no_grad;
      gamma.fill_(1.0);
      mean.zero_();
      var.fill_(1.0 - eps);
      if (bias.defined()) bias.zero_();
      if (l.bias)
        set_constant(beta, bq, *l.bias, what + ".bias");
      else
        beta.zero_();
    };
    if (auto* d = dynamic_cast<nn::QDenseImpl*>(m)) {
      linear(d->iq, d->kernel, d->kq, d->oq);
      if (d->bq && l.bias) set_constant(d->bias, d->bq, *l.bias, what + ".bias");
    } else if (auto* c = dynamic_cast<nn::QConv1dImpl*>(m)) {
      linear(c->iq, c->kernel, c->kq, c->oq);
      if (c->bq && l.bias) set_constant(c->bias, c->bq, *l.bias, what + ".bias");
    } else if (auto* c = dynamic_cast<nn::QConv2dImpl*>(m)) {
      linear(c->iq, c->kernel, c->kq, c->oq);
      if (c->bq && l.bias) set_constant(c->bias, c->bq, *l.bias, what + ".bias");
    } else if (auto* d = dynamic_cast<nn::QDenseBatchNormImpl*>(m)) {
      linear(d->iq, d->kernel, d->kq, d->oq);
      unfold(d->gamma, d->beta, d->moving_mean, d->moving_var, d->bias, d->bq, d->options.eps());
    } else if (auto* c = dynamic_cast<nn::QConv1dBatchNormImpl*>(m)) {
      linear(c->iq, c->kernel, c->kq, c->oq);
      unfold(c->gamma, c->beta, c->moving_mean, c->moving_var, c->bias, c->bq, c->options.eps());
    } else if (auto* c = dynamic_cast<nn::QConv2dBatchNormImpl*>(m)) {
      linear(c->iq, c->kernel, c->kq, c->oq);
      unfold(c->gamma, c->beta, c->moving_mean, c->moving_var, c->bias, c->bq, c->options.eps());
    } else if (auto* bn = dynamic_cast<nn::QBatchNormImpl*>(m)) {
      // s = gamma / sqrt(var + eps) with var + eps ~ 1; o = beta - mean * s with mean 0.
      torch::NoGradGuard no_grad;
      if (bn->iq && l.input_quantizer)
        set_quantizer(bn->iq, *l.input_quantizer, what + ".input_quantizer");
      set_constant(bn->gamma, bn->kq, *l.kernel, what + ".kernel");
      bn->moving_mean.zero_();
      bn->moving_var.fill_(1.0 - bn->options.eps());
      if (l.bias) set_constant(bn->beta, bn->bq, *l.bias, what + ".bias");
      if (bn->oq && l.output_quantizer)
        set_quantizer(bn->oq, *l.output_quantizer, what + ".output_quantizer");
    } else if (auto* p = dynamic_cast<nn::PoolImpl*>(m)) {
      // The scale of an average over a window that is not a power of two is the archive's.
      if (archive::has_avg_scale(l) && p->options.scale_bits() != l.scale_bits)
        throw ArchiveError(what + ": scale_bits " + std::to_string(l.scale_bits) +
                           " in the archive, " + std::to_string(p->options.scale_bits()) +
                           " in model_yaml");
    } else if (auto* add = dynamic_cast<nn::QAddImpl*>(m)) {
      if (add->oq && l.output_quantizer)
        set_quantizer(add->oq, *l.output_quantizer, what + ".output_quantizer");
    } else if (auto* lt = dynamic_cast<nn::QLearnedLUTImpl*>(m)) {
      // The archive holds the tables, not the functions: the rebuilt layer looks them up.
      if (l.function != archive::kLearnedLutFunction)
        throw ArchiveError(what + ": function " + l.function +
                           " in the archive, learned tables in model_yaml");
      set_quantizer(lt->iq, *l.input_quantizer, what + ".input_quantizer");
      set_quantizer(lt->oq, *l.output_quantizer, what + ".output_quantizer");
      const std::vector<int64_t> off = archive::lut_offsets(l);
      std::vector<double> values(l.table.size());
      for (int64_t n = 0; n < l.output_quantizer->size(); ++n)
        for (int64_t k = off[n]; k < off[n + 1]; ++k)
          values[k] = std::ldexp(static_cast<double>(l.table[k]), -l.output_quantizer->f[n]);
      lt->freeze(values, off, lut_min_mantissas(*l.input_quantizer));
    } else if (auto* lut = dynamic_cast<nn::QUnaryLUTImpl*>(m)) {
      if (lut->options.function() != l.function)
        throw ArchiveError(what + ": function " + l.function + " in the archive, " +
                           lut->options.function() + " in model_yaml");
      set_quantizer(lut->iq, *l.input_quantizer, what + ".input_quantizer");
      set_quantizer(lut->oq, *l.output_quantizer, what + ".output_quantizer");
    } else if (auto* sm = dynamic_cast<nn::QSoftmaxImpl*>(m)) {
      set_quantizer(sm->iq, *l.input_quantizer, what + ".input_quantizer");
      set_quantizer(sm->eiq, *l.exp_input_quantizer, what + ".exp_input_quantizer");
      set_quantizer(sm->eoq, *l.exp_output_quantizer, what + ".exp_output_quantizer");
      set_quantizer(sm->iiq, *l.inv_input_quantizer, what + ".inv_input_quantizer");
      set_quantizer(sm->ioq, *l.inv_output_quantizer, what + ".inv_output_quantizer");
      set_quantizer(sm->oq, *l.output_quantizer, what + ".output_quantizer");
      if (sm->options.input_scale() != l.input_scale)
        throw ArchiveError(what + ": input_scale " + std::to_string(l.input_scale) +
                           " in the archive, " + std::to_string(sm->options.input_scale()) +
                           " in model_yaml");
    } else if (auto* ed = dynamic_cast<nn::QEinsumDenseImpl*>(m)) {
      if (ed->equation.text() != l.equation)
        throw ArchiveError(what + ": equation " + l.equation + " in the archive, " +
                           ed->equation.text() + " in model_yaml");
      linear(ed->iq, ed->kernel, ed->kq, ed->oq);
      if (ed->bq && l.bias) set_constant(ed->bias, ed->bq, *l.bias, what + ".bias");
    } else if (auto* es = dynamic_cast<nn::QEinsumImpl*>(m)) {
      if (es->equation.text() != l.equation)
        throw ArchiveError(what + ": equation " + l.equation + " in the archive, " +
                           es->equation.text() + " in model_yaml");
      set_quantizer(es->iq, *l.input_quantizer, what + ".input_quantizer");
      set_quantizer(es->iq2, *l.input2_quantizer, what + ".input2_quantizer");
      if (es->oq && l.output_quantizer)
        set_quantizer(es->oq, *l.output_quantizer, what + ".output_quantizer");
    } else if (auto* act = dynamic_cast<nn::QActivationImpl*>(m)) {
      set_quantizer(act->q, *l.output_quantizer, what + ".output_quantizer");
    } else if (auto* q = dynamic_cast<nn::QuantizeImpl*>(m)) {
      set_quantizer(q->q, *l.input_quantizer, what + ".input_quantizer");
    }
  }
  model->eval();
  return model;
}

// ------------------------------------------------------------------------- trace
namespace {
// Activation quantizers: those on the data path (batch axis), not on constants.
std::vector<FixedQuantizer> activation_quantizers(HGQModel& model) {
  std::vector<FixedQuantizer> out;
  for (const auto& [layer, nq] : model->quantizers())
    if (!nq.constant.defined()) out.push_back(nq.quantizer);
  return out;
}

// Reduces a per-sample record to the parameter shape (elements sharing a parameter).
torch::Tensor reduce_to(torch::Tensor t, const std::vector<int64_t>& param_shape, bool max) {
  for (int64_t d = 0; d < static_cast<int64_t>(param_shape.size()); ++d)
    if (param_shape[d] == 1 && t.size(d) > 1) t = max ? t.amax({d}, true) : t.amin({d}, true);
  return t;
}
}  // namespace

TraceResult trace(HGQModel& model, const torch::Tensor& x, int64_t batch_size) {
  TraceResult r;
  r.samples = x.size(0);
  if (r.samples == 0) throw std::invalid_argument("trace: the calibration data has no samples");
  if (!torch::isfinite(x).all().item<bool>())
    throw std::invalid_argument("trace: the calibration data holds NaN or Inf values");
  r.ebops_before = model->ebops().item<double>();
  model->eval();
  auto qs = activation_quantizers(model);
  r.quantizers = static_cast<int64_t>(qs.size());
  const auto device = model->parameters().empty() ? torch::Device(torch::kCPU)
                                                  : model->parameters().front().device();
  // Snapshot of the starting (k, i, f) for the change counts.
  std::vector<std::tuple<torch::Tensor, torch::Tensor, torch::Tensor>> start;
  for (auto& q : qs) {
    auto [k, i, f] = q->kif();
    start.emplace_back(k.clone(), i.clone(), f.clone());
  }
  torch::NoGradGuard no_grad;
  const int64_t max_passes = r.quantizers + 2;
  for (bool changed = true; changed && r.passes < max_passes;) {
    ++r.passes;
    for (auto& q : qs) q->set_calibration(true);
    for (int64_t s = 0; s < r.samples; s += batch_size)
      (void)model->forward(
          x.narrow(0, s, std::min(batch_size, r.samples - s)).to(device, torch::kFloat));
    changed = false;
    for (auto& q : qs) {
      q->set_calibration(false);
      auto [lo_t, hi_t] = q->calibration_range();
      auto [k0, i0, f0] = q->kif();
      const auto pshape = q->param_shape();
      auto lo = reduce_to(lo_t, pshape, false).to(torch::kCPU, torch::kDouble).contiguous();
      auto hi = reduce_to(hi_t, pshape, true).to(torch::kCPU, torch::kDouble).contiguous();
      auto kc = k0.to(torch::kCPU, torch::kDouble).contiguous();
      auto ic = i0.to(torch::kCPU, torch::kDouble).contiguous();
      auto fc = f0.to(torch::kCPU, torch::kDouble).contiguous();
      auto k_new = kc.clone(), i_new = ic.clone();
      for (int64_t n = 0; n < kc.numel(); ++n) {
        const double k = kc.data_ptr<double>()[n], i = ic.data_ptr<double>()[n];
        const double f = fc.data_ptr<double>()[n];
        double kn, in;
        if (k + i + f <= 0) {  // pruned stays pruned
          kn = 0;
          in = -f;
        } else {
          // The smallest type holding the recorded mantissas gives k and i (section 4).
          const auto m_lo = static_cast<archive::int128>(
              std::ldexp(lo.data_ptr<double>()[n], static_cast<int>(f)));
          const auto m_hi = static_cast<archive::int128>(
              std::ldexp(hi.data_ptr<double>()[n], static_cast<int>(f)));
          const auto t = archive::type_of_range(m_lo, m_hi, static_cast<int>(f));
          kn = t.is_signed ? 1 : 0;
          in = t.width - kn - f;
        }
        if (kn != k || in != i) changed = true;
        k_new.data_ptr<double>()[n] = kn;
        i_new.data_ptr<double>()[n] = in;
      }
      q->k.copy_(k_new.to(q->k.options()));
      q->i.copy_(i_new.to(q->i.options()));
      if (q->b.defined()) q->b.copy_((i_new + fc).to(q->b.options()));  // KBI: keep f = b - i
    }
  }
  for (size_t n = 0; n < qs.size(); ++n) {
    auto [k, i, f] = qs[n]->kif();
    const auto& [k0, i0, f0] = start[n];
    r.elements += k.numel();
    r.widened += (i > i0).sum().item<int64_t>();
    r.narrowed += ((k + i + f) < (k0 + i0 + f0)).sum().item<int64_t>();
    r.sign_dropped += ((k0 > 0) & (k == 0)).sum().item<int64_t>();
  }
  auto a = to_archive(model);
  for (double e : archive::exact_ebops(a)) r.exact_ebops += e;
  return r;
}

HGQModel copy_model(HGQModel& model) {
  HGQModel copy(model->spec());
  torch::NoGradGuard no_grad;
  auto src_p = model->named_parameters(true), dst_p = copy->named_parameters(true);
  for (const auto& item : src_p) dst_p[item.key()].copy_(item.value());
  auto src_b = model->named_buffers(true), dst_b = copy->named_buffers(true);
  for (const auto& item : src_b) dst_b[item.key()].copy_(item.value());
  // Learned tables rebuilt from an archive are looked up, not computed: take the tables too.
  const auto& from = model->layers();
  const auto& to = copy->layers();
  for (size_t n = 0; n < from.size(); ++n) {
    const auto* src = dynamic_cast<const nn::QLearnedLUTImpl*>(from[n].module.get());
    auto* dst = dynamic_cast<nn::QLearnedLUTImpl*>(to[n].module.get());
    if (src && dst && src->frozen()) dst->freeze_like(*src);
  }
  return copy;
}

torch::Tensor forward_float64(HGQModel& model, const torch::Tensor& x, int64_t batch_size) {
  auto copy = copy_model(model);
  copy->to(torch::kCPU, torch::kDouble);
  copy->eval();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> outs;
  const auto xd = x.to(torch::kCPU, torch::kDouble);
  for (int64_t s = 0; s < xd.size(0); s += batch_size)
    outs.push_back(copy->forward(xd.narrow(0, s, std::min(batch_size, xd.size(0) - s))));
  return torch::cat(outs);
}

}  // namespace hgqt::model
