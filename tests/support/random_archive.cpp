// Random dense archives for the back-end tests.
#include "support/random_archive.h"

#include <random>
#include <string>

namespace hgqt::testing {

using archive::Archive;
using archive::Constant;
using archive::Layer;
using archive::QuantSpec;
using quant::OverflowMode;
using quant::RoundingMode;

namespace {
struct Gen {
  std::mt19937_64 rng;
  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }
  double real() { return std::uniform_real_distribution<double>(0, 1)(rng); }
};

RoundingMode pick_round(Gen& g, bool mixed) {
  if (!mixed) return RoundingMode::RND;
  const RoundingMode r[] = {RoundingMode::RND, RoundingMode::TRN, RoundingMode::RND_CONV};
  return r[g.uniform(0, 2)];
}

QuantSpec activation_quantizer(Gen& g, std::vector<int64_t> shape, const RandomArchiveOptions& o) {
  QuantSpec q;
  q.shape = std::move(shape);
  if (o.per_tensor) {
    q.round = g.uniform(0, 1) ? RoundingMode::TRN : RoundingMode::RND_CONV;
    q.overflow = g.uniform(0, 1) ? OverflowMode::SAT : OverflowMode::SAT_SYM;
    const int k = g.uniform(0, 1), i = g.uniform(-1, 3);
    const int f = std::max(g.uniform(-1, 5), 1 - i);  // i + f >= 1
    const size_t n = static_cast<size_t>(archive::shape_size(q.shape));
    q.k.assign(n, k);
    q.i.assign(n, i);
    q.f.assign(n, f);
    return q;
  }
  q.round = pick_round(g, o.mixed_modes);
  const OverflowMode ov[] = {OverflowMode::WRAP, OverflowMode::SAT, OverflowMode::SAT_SYM};
  q.overflow = o.mixed_modes ? ov[g.uniform(0, 2)] : OverflowMode::WRAP;
  const int64_t n = archive::shape_size(q.shape);
  for (int64_t e = 0; e < n; ++e) {
    int k = g.uniform(0, 1), i = g.uniform(-1, 3), f = g.uniform(-1, 5);
    if (k + i + f <= 0) f = 1 - k - i;  // keep most elements alive...
    if (g.real() < o.pruned_inputs) f = -k - i;  // ...and prune some explicitly
    q.k.push_back(k);
    q.i.push_back(i);
    q.f.push_back(f);
  }
  return q;
}

Constant constant(Gen& g, std::vector<int64_t> shape, const RandomArchiveOptions& o) {
  Constant c;
  c.shape = shape;
  c.quantizer.shape = shape;
  c.quantizer.round = RoundingMode::RND;
  c.quantizer.overflow = OverflowMode::SAT_SYM;
  const int64_t n = archive::shape_size(shape);
  for (int64_t e = 0; e < n; ++e) {
    const int k = 1, i = g.uniform(-2, 1), f = g.uniform(1, 5);
    const int b = i + f;
    int64_t m = 0;
    if (k + b > 0 && g.real() >= o.zero_weights) {
      const int64_t lim = (int64_t{1} << std::max(b, 0)) - 1;
      m = std::uniform_int_distribution<int64_t>(-lim, lim)(g.rng);
    }
    c.quantizer.k.push_back(k);
    c.quantizer.i.push_back(i);
    c.quantizer.f.push_back(f);
    c.mantissa.push_back(m);
    c.exponent.push_back(-f);
  }
  return c;
}
}  // namespace

Archive random_mlp_archive(const RandomArchiveOptions& o) {
  Gen g{std::mt19937_64(o.seed)};
  Archive a;
  a.producer = "hgqt tests";
  a.name = "random_mlp";
  a.input_shape = {o.sizes.front()};
  a.output_shape = {o.sizes.back()};
  a.trace.traced = true;
  std::vector<int64_t> shape = a.input_shape;
  if (o.quantize_layer) {
    Layer q;
    q.name = "input_q";
    q.type = "quantize";
    q.input_shape = q.output_shape = shape;
    q.input_quantizer = activation_quantizer(g, shape, o);
    a.layers.push_back(q);
  }
  const size_t n_dense = o.sizes.size() - 1;
  for (size_t d = 0; d < n_dense; ++d) {
    const int64_t in = o.sizes[d], out = o.sizes[d + 1];
    const bool last = d + 1 == n_dense;
    Layer l;
    l.name = "dense_" + std::to_string(d);
    l.type = "dense";
    l.input_shape = {in};
    l.output_shape = {out};
    if (!(o.quantize_layer && d == 0)) l.input_quantizer = activation_quantizer(g, {in}, o);
    l.kernel = constant(g, {in, out}, o);
    l.bias = constant(g, {out}, o);
    const bool act_layer = o.activation_layer && d == 0 && !last;
    l.activation = last || act_layer ? "linear" : "relu";
    if (o.output_quantizer && !last && d + 2 == n_dense) l.output_quantizer = activation_quantizer(g, {out}, o);
    a.layers.push_back(l);
    if (act_layer) {
      Layer act;
      act.name = "relu_" + std::to_string(d);
      act.type = "activation";
      act.activation = "relu";
      act.input_shape = act.output_shape = {out};
      act.output_quantizer = activation_quantizer(g, {out}, o);
      a.layers.push_back(act);
    }
  }
  return a;
}

std::vector<double> random_inputs(const Archive& a, int64_t n, uint64_t seed, double scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 2.0);
  std::vector<double> x(n * a.input_size());
  for (auto& v : x) v = normal(rng) * scale;
  return x;
}

}  // namespace hgqt::testing
