// Random dense archives for the back-end tests.
#include "support/random_archive.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>

namespace hgqt::testing {

using archive::Archive;
using archive::Constant;
using archive::Layer;
using archive::LayerKind;
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
    if (k + i + f <= 0) f = 1 - k - i;           // keep most elements alive...
    if (g.real() < o.pruned_inputs) f = -k - i;  // ...and prune some explicitly
    q.k.push_back(k);
    q.i.push_back(i);
    q.f.push_back(f);
  }
  return q;
}

// An activation quantizer (random modes) with one (k, i, f) per index of `axis`, repeated over the
// other axes (per feature: the last axis; per head of [H, P, P]: axis 0), i in [1, 3], f in
// [f_lo, f_hi]: a model whose quantizers share their types across particles is permutation
// invariant. Per-tensor options: activation_quantizer's one type.
QuantSpec axis_shared_quantizer(Gen& g, std::vector<int64_t> shape, size_t axis, int f_lo, int f_hi,
                                const RandomArchiveOptions& o) {
  QuantSpec q = activation_quantizer(g, shape, o);
  if (o.per_tensor) return q;
  const int64_t n_axis = shape[axis];
  int64_t inner = 1;
  for (size_t d = axis + 1; d < shape.size(); ++d) inner *= shape[d];
  std::vector<int> k(n_axis), i(n_axis), f(n_axis);
  for (int64_t c = 0; c < n_axis; ++c) {
    k[c] = g.uniform(0, 1);
    i[c] = g.uniform(1, 3);
    f[c] = g.uniform(f_lo, f_hi);
  }
  for (int64_t n = 0; n < q.size(); ++n) {
    const int64_t c = (n / inner) % n_axis;
    q.k[n] = k[c];
    q.i[n] = i[c];
    q.f[n] = f[c];
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
    q.kind = LayerKind::Quantize;
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
    l.kind = LayerKind::Dense;
    l.input_shape = {in};
    l.output_shape = {out};
    if (!(o.quantize_layer && d == 0)) l.input_quantizer = activation_quantizer(g, {in}, o);
    l.kernel = constant(g, {in, out}, o);
    l.bias = constant(g, {out}, o);
    const bool act_layer = o.activation_layer && d == 0 && !last;
    l.activation = last || act_layer ? "linear" : "relu";
    if (o.output_quantizer && !last && d + 2 == n_dense)
      l.output_quantizer = activation_quantizer(g, {out}, o);
    a.layers.push_back(l);
    if (act_layer) {
      Layer act;
      act.name = "relu_" + std::to_string(d);
      act.kind = LayerKind::Activation;
      act.activation = "relu";
      act.input_shape = act.output_shape = {out};
      act.output_quantizer = activation_quantizer(g, {out}, o);
      a.layers.push_back(act);
    }
  }
  return a;
}

namespace {
Layer make_layer(const std::string& name, LayerKind kind, std::vector<int64_t> in,
                 std::vector<int64_t> out, std::vector<std::string> inputs = {}) {
  Layer l;
  l.name = name;
  l.kind = kind;
  l.input_shape = std::move(in);
  l.output_shape = std::move(out);
  l.inputs = std::move(inputs);
  return l;
}

Layer conv(Gen& g, const RandomArchiveOptions& o, const std::string& name, std::vector<int64_t> in,
           std::vector<int64_t> out, std::vector<int64_t> k, std::vector<int64_t> s,
           std::vector<int64_t> pad, std::vector<std::string> inputs = {}) {
  Layer l = make_layer(name, k.size() == 1 ? LayerKind::Conv1d : LayerKind::Conv2d, in, out,
                       std::move(inputs));
  std::vector<int64_t> ks = k;
  ks.push_back(in.back());
  ks.push_back(out.back());
  l.kernel = constant(g, ks, o);
  l.bias = constant(g, {out.back()}, o);
  l.kernel_size = std::move(k);
  l.strides = std::move(s);
  l.pad_before = std::move(pad);
  return l;
}
}  // namespace

QuantSpec scalar_quantizer(int k, int i, int f, RoundingMode round, OverflowMode overflow) {
  QuantSpec q;
  q.shape = {1};
  q.k = {k};
  q.i = {i};
  q.f = {f};
  q.round = round;
  q.overflow = overflow;
  return q;
}

void random_softmax_quantizers(archive::Layer& l, uint64_t seed) {
  Gen g{std::mt19937_64(seed)};
  auto scalar = [&](int k, int i_lo, int i_hi, int f_lo, int f_hi) {
    const int i = g.uniform(i_lo, i_hi), f = g.uniform(f_lo, f_hi);
    const RoundingMode r = g.uniform(0, 1) ? RoundingMode::RND : RoundingMode::TRN;
    const OverflowMode ov[] = {OverflowMode::SAT, OverflowMode::SAT_SYM, OverflowMode::WRAP};
    return scalar_quantizer(k, i, f, r, ov[g.uniform(0, 2)]);
  };
  l.exp_input_quantizer = scalar(1, 1, 4, 1, 4);
  l.exp_output_quantizer = scalar(0, 0, 1, 4, 7);
  l.inv_input_quantizer = scalar(0, 1, 3, 1, 5);
  l.inv_output_quantizer = scalar(0, 0, 2, 4, 7);
}

Archive random_graph_archive(GraphKind kind, const RandomArchiveOptions& o) {
  Gen g{std::mt19937_64(o.seed * 7919 + static_cast<uint64_t>(kind))};
  Archive a;
  a.producer = "hgqt tests";
  a.trace.traced = true;
  auto& L = a.layers;
  if (kind == GraphKind::Cnn2d) {
    a.name = "random_cnn2d";
    a.input_shape = {6, 6, 2};
    L.push_back(make_layer("q", LayerKind::Quantize, {6, 6, 2}, {6, 6, 2}));
    L.back().input_quantizer = activation_quantizer(g, {6, 6, 2}, o);
    L.push_back(conv(g, o, "conv_a", {6, 6, 2}, {6, 6, 3}, {3, 3}, {1, 1}, {1, 1}));
    L.back().activation = "relu";
    L.back().output_quantizer = activation_quantizer(g, {6, 6, 3}, o);
    L.push_back(make_layer("pool_max", LayerKind::Pool, {6, 6, 3}, {3, 3, 3}));
    L.back().pool = "max";
    L.back().kernel_size = {2, 2};
    L.back().strides = {2, 2};
    L.push_back(conv(g, o, "conv_c", {3, 3, 3}, {3, 3, 2}, {1, 1}, {1, 1}, {0, 0}));
    L.back().output_quantizer = activation_quantizer(g, {3, 3, 2}, o);
    L.push_back(
        make_layer("cat", LayerKind::Concatenate, {3, 3, 3}, {3, 3, 5}, {"pool_max", "conv_c"}));
    L.back().axis = 2;
    L.push_back(conv(g, o, "conv_b", {3, 3, 5}, {2, 2, 4}, {2, 2}, {1, 1}, {0, 0}));
    L.back().input_quantizer = activation_quantizer(g, {3, 3, 5}, o);
    L.back().output_quantizer = activation_quantizer(g, {2, 2, 4}, o);
    L.push_back(make_layer("pool_avg", LayerKind::Pool, {2, 2, 4}, {1, 1, 4}));
    L.back().pool = "avg";
    L.back().kernel_size = {2, 2};
    L.back().strides = {2, 2};
    L.push_back(make_layer("flat", LayerKind::Flatten, {1, 1, 4}, {4}));
    L.push_back(make_layer("dense_out", LayerKind::Dense, {4}, {3}));
    L.back().input_quantizer = activation_quantizer(g, {4}, o);
    L.back().kernel = constant(g, {4, 3}, o);
    L.back().bias = constant(g, {3}, o);
    a.output_shape = {3};
    return a;
  }
  if (kind == GraphKind::Softmax) {
    a.name = "random_softmax";
    a.input_shape = {8};
    // Softmax outputs: fine enough types that the model output varies with its input.
    auto fine_out = [&](archive::Layer& l) {
      for (int64_t n = 0; n < l.output_quantizer->size(); ++n) {
        l.output_quantizer->k[n] = g.uniform(0, 1);
        l.output_quantizer->i[n] = 1;
        l.output_quantizer->f[n] = g.uniform(5, 8);
      }
    };
    L.push_back(make_layer("q", LayerKind::Quantize, {8}, {8}));
    L.back().input_quantizer = activation_quantizer(g, {8}, o);
    L.push_back(make_layer("d1", LayerKind::Dense, {8}, {8}));
    L.back().kernel = constant(g, {8, 8}, o);
    L.back().bias = constant(g, {8}, o);
    L.push_back(make_layer("rows", LayerKind::Reshape, {8}, {2, 4}));
    L.push_back(make_layer("sm1", LayerKind::Softmax, {2, 4}, {2, 4}));
    L.back().input_quantizer = activation_quantizer(g, {2, 4}, o);
    L.back().output_quantizer = activation_quantizer(g, {2, 4}, o);
    fine_out(L.back());
    random_softmax_quantizers(L.back(), o.seed * 7 + 1);
    L.push_back(make_layer("flat", LayerKind::Flatten, {2, 4}, {8}));
    L.push_back(make_layer("d2", LayerKind::Dense, {8}, {3}));
    L.back().kernel = constant(g, {8, 3}, o);
    L.back().bias = constant(g, {3}, o);
    L.push_back(make_layer("sm2", LayerKind::Softmax, {3}, {3}));
    L.back().input_quantizer = activation_quantizer(g, {3}, o);
    L.back().output_quantizer = activation_quantizer(g, {3}, o);
    fine_out(L.back());
    random_softmax_quantizers(L.back(), o.seed * 7 + 2);
    L.push_back(make_layer("out", LayerKind::Concatenate, {8}, {11}, {"flat", "sm2"}));
    a.output_shape = {11};
    return a;
  }
  if (kind == GraphKind::Attention || kind == GraphKind::Linformer) {
    const bool linformer = kind == GraphKind::Linformer;
    const int64_t J = linformer ? 3 : 6;  // the keys' rows
    a.name = linformer ? "random_linformer" : "random_attention";
    a.input_shape = {6, 3};
    // Per feature for [P, ..., F], per head for [H, P, P] (axis 0).
    auto shared = [&](std::vector<int64_t> shape, size_t axis, int f_lo, int f_hi) {
      return axis_shared_quantizer(g, std::move(shape), axis, f_lo, f_hi, o);
    };
    auto per_feature = [&](std::vector<int64_t> shape) {
      const size_t last = shape.size() - 1;
      return shared(std::move(shape), last, 2, 4);
    };
    L.push_back(make_layer("q", LayerKind::Quantize, {6, 3}, {6, 3}));
    L.back().input_quantizer = per_feature({6, 3});
    for (const char* name : {"proj_q", "proj_k", "proj_v"}) {
      L.push_back(make_layer(name, LayerKind::Dense, {6, 3}, {6, 4}, {"q"}));
      L.back().kernel = constant(g, {3, 4}, o);
      if (std::string(name) != "proj_k") L.back().bias = constant(g, {4}, o);
    }
    for (const char* name : {"q", "k", "v"}) {
      L.push_back(make_layer(std::string("heads_") + name, LayerKind::Reshape, {6, 4}, {6, 2, 2},
                             {std::string("proj_") + name}));
    }
    std::string keys = "heads_k", values = "heads_v";
    if (linformer) {
      for (const char* name : {"k", "v"}) {
        L.push_back(make_layer(std::string("proj_") + name + "_rows", LayerKind::EinsumDense,
                               {6, 2, 2}, {J, 2, 2}, {std::string("heads_") + name}));
        L.back().equation = "phd,pj->jhd";
        L.back().kernel = constant(g, {6, J}, o);
        L.back().input_quantizer = per_feature({6, 2, 2});
        L.back().output_quantizer = per_feature({J, 2, 2});
      }
      keys = "proj_k_rows";
      values = "proj_v_rows";
    }
    L.push_back(make_layer("scores", LayerKind::Einsum, {6, 2, 2}, {2, 6, J}, {"heads_q", keys}));
    L.back().equation = "qhd,khd->hqk";
    L.back().input_quantizer = per_feature({6, 2, 2});
    L.back().input2_quantizer = per_feature({J, 2, 2});
    L.push_back(make_layer("attn", LayerKind::Softmax, {2, 6, J}, {2, 6, J}));
    L.back().input_quantizer = shared({2, 6, J}, 0, 2, 4);
    L.back().output_quantizer = shared({2, 6, J}, 0, 5, 7);
    L.back().input_scale = 1.0 / std::sqrt(2.0);
    random_softmax_quantizers(L.back(), o.seed * 11 + 3);
    L.push_back(make_layer("context", LayerKind::Einsum, {2, 6, J}, {6, 2, 2}, {"attn", values}));
    L.back().equation = "hqk,khv->qhv";
    L.back().input_quantizer = shared({2, 6, J}, 0, 4, 7);
    L.back().input2_quantizer = per_feature({J, 2, 2});
    L.back().output_quantizer = per_feature({6, 2, 2});
    L.push_back(make_layer("merge", LayerKind::Reshape, {6, 2, 2}, {6, 4}));
    L.push_back(make_layer("proj_o", LayerKind::Dense, {6, 4}, {6, 3}));
    L.back().kernel = constant(g, {4, 3}, o);
    L.back().bias = constant(g, {3}, o);
    L.back().output_quantizer = per_feature({6, 3});
    L.push_back(make_layer("residual", LayerKind::Add, {6, 3}, {6, 3}, {"proj_o", "q"}));
    L.back().activation = "relu";
    // The mean over 6 particles (not a power of two): the sum times 1/6 at random scale bits.
    for (const char* pool : {"avg", "max"}) {
      L.push_back(
          make_layer(std::string("pool_") + pool, LayerKind::Pool, {6, 3}, {3}, {"residual"}));
      L.back().pool = pool;
      L.back().kernel_size = {6};
      L.back().strides = {6};
      L.back().scale_bits = g.uniform(2, 12);
    }
    L.push_back(make_layer("pooled", LayerKind::Concatenate, {3}, {6}, {"pool_avg", "pool_max"}));
    L.push_back(make_layer("head", LayerKind::Dense, {6}, {3}));
    L.back().input_quantizer = activation_quantizer(g, {6}, o);
    L.back().kernel = constant(g, {6, 3}, o);
    L.back().bias = constant(g, {3}, o);
    a.output_shape = {3};
    return a;
  }
  if (kind == GraphKind::Particles) {
    a.name = "random_particles";
    a.input_shape = {8, 3};
    // Per-feature quantizers (random modes): one (k, i, f) per feature repeated for every
    // particle, fine enough that the pooled features and the output vary with the input.
    auto per_feature = [&](std::vector<int64_t> shape) {
      const size_t last = shape.size() - 1;
      return axis_shared_quantizer(g, std::move(shape), last, 2, 5, o);
    };
    L.push_back(make_layer("q", LayerKind::Quantize, {8, 3}, {8, 3}));
    L.back().input_quantizer = per_feature({8, 3});
    L.push_back(make_layer("phi1", LayerKind::Dense, {8, 3}, {8, 4}));
    L.back().kernel = constant(g, {3, 4}, o);
    L.back().bias = constant(g, {4}, o);
    L.back().activation = "relu";
    L.back().output_quantizer = per_feature({8, 4});
    L.push_back(make_layer("phi2", LayerKind::Dense, {8, 4}, {8, 4}));
    L.back().input_quantizer = per_feature({8, 4});
    L.back().kernel = constant(g, {4, 4}, o);
    L.back().bias = constant(g, {4}, o);
    L.back().activation = "relu";
    L.back().output_quantizer = per_feature({8, 4});
    // A pool over all 8 particles of [8, 4]: per-sample output [4].
    auto global_pool = [&](const std::string& name, const std::string& pool,
                           std::vector<std::string> inputs) {
      L.push_back(make_layer(name, LayerKind::Pool, {8, 4}, {4}, std::move(inputs)));
      L.back().pool = pool;
      L.back().kernel_size = {8};
      L.back().strides = {8};
    };
    global_pool("mean", "avg", {});
    global_pool("max", "max", {"phi1"});
    global_pool("sum", "sum", {"phi2"});
    // JEDI-linear style: the pooled mean broadcast back onto every particle, then a max.
    L.push_back(make_layer("bcast", LayerKind::Add, {8, 4}, {8, 4}, {"phi2", "mean"}));
    L.back().activation = "relu";
    L.back().output_quantizer = per_feature({8, 4});
    global_pool("bmax", "max", {});
    L.push_back(
        make_layer("pooled", LayerKind::Concatenate, {4}, {16}, {"mean", "max", "sum", "bmax"}));
    L.push_back(make_layer("rho", LayerKind::Dense, {16}, {3}));
    L.back().kernel = constant(g, {16, 3}, o);
    L.back().bias = constant(g, {3}, o);
    a.output_shape = {3};
    return a;
  }
  if (kind == GraphKind::LutDense) {
    a.name = "random_lut_dense";
    a.input_shape = {5};
    // Fine enough, and not pruned, that the output varies with the input.
    auto set_kif = [](QuantSpec q, int k, int i, int f) {
      for (int64_t n = 0; n < q.size(); ++n) {
        q.k[n] = k;
        q.i[n] = i;
        q.f[n] = f;
      }
      return q;
    };
    L.push_back(make_layer("q", LayerKind::Quantize, {5}, {5}));
    L.back().input_quantizer = set_kif(activation_quantizer(g, {5}, o), 1, 2, 3);
    L.push_back(make_layer("col", LayerKind::Reshape, {5}, {5, 1}));
    L.push_back(
        make_layer("fanout", LayerKind::Concatenate, {5, 1}, {5, 4}, {"col", "col", "col", "col"}));
    L.back().axis = 1;
    L.push_back(make_layer("tables", LayerKind::Lut, {5, 4}, {5, 4}));
    Layer& t = L.back();
    t.function = archive::kLearnedLutFunction;
    QuantSpec iq = activation_quantizer(g, {5, 4}, o);
    QuantSpec oq = activation_quantizer(g, {5, 4}, o);
    for (int64_t n = 0; n < iq.size(); ++n) {
      iq.k[n] = n % 5 == 2 ? 0 : 1;  // a few unsigned inputs
      iq.i[n] = g.uniform(1, 2);
      iq.f[n] = g.uniform(1, 3);
      oq.k[n] = 1;
      oq.i[n] = g.uniform(0, 2);
      oq.f[n] = g.uniform(2, 5);
    }
    iq.f[19] = -iq.k[19] - iq.i[19];  // connection (4, 3) pruned: k + i + f = 0
    for (auto* v : {&iq.k, &iq.i, &iq.f}) (*v)[1] = (*v)[0];
    for (auto* v : {&oq.k, &oq.i, &oq.f}) (*v)[1] = (*v)[0];
    t.input_quantizer = iq;
    t.output_quantizer = oq;
    // Random entries in each element's output range; connection 1 repeats connection 0's table.
    std::vector<int64_t> first;
    for (int64_t n = 0; n < iq.size(); ++n) {
      const int w = iq.width(n);
      const int64_t count = w <= 0 ? 1 : int64_t{1} << w;
      const int64_t hi = (int64_t{1} << (oq.width(n) - 1)) - 1;
      for (int64_t e = 0; e < count; ++e) {
        const int64_t v =
            n == 1 ? first[e] : g.uniform(static_cast<int>(-hi - 1), static_cast<int>(hi));
        if (n == 0) first.push_back(v);
        t.table.push_back(v);
      }
    }
    L.push_back(make_layer("sum", LayerKind::Pool, {5, 4}, {4}));
    L.back().pool = "sum";
    L.back().kernel_size = {5};
    L.back().strides = {5};
    L.push_back(make_layer("act", LayerKind::Activation, {4}, {4}));
    L.back().activation = "relu";
    L.back().output_quantizer = set_kif(activation_quantizer(g, {4}, o), 0, 4, 3);
    L.push_back(make_layer("d", LayerKind::Dense, {4}, {2}));
    L.back().kernel = constant(g, {4, 2}, o);
    L.back().bias = constant(g, {2}, o);
    a.output_shape = {2};
    return a;
  }
  if (kind == GraphKind::Lut) {
    a.name = "random_lut";
    a.input_shape = {6};
    // Table inputs: signed, 4 to 7 bits, the last element pruned; outputs fine enough that the
    // model's output varies with its input.
    auto narrow = [&](std::vector<int64_t> shape) {
      QuantSpec q = activation_quantizer(g, shape, o);
      for (int64_t n = 0; n < q.size(); ++n) {
        q.k[n] = 1;
        q.i[n] = 2;
        q.f[n] = g.uniform(1, 4);
      }
      q.f.back() = -3;  // pruned: k + i + f = 0
      return q;
    };
    auto fine = [&](std::vector<int64_t> shape) {
      QuantSpec q = activation_quantizer(g, shape, o);
      for (int64_t n = 0; n < q.size(); ++n) {
        q.k[n] = 1;
        q.i[n] = 1;
        q.f[n] = g.uniform(3, 6);
      }
      return q;
    };
    L.push_back(make_layer("q", LayerKind::Quantize, {6}, {6}));
    L.back().input_quantizer = activation_quantizer(g, {6}, o);
    L.push_back(make_layer("tanh", LayerKind::Lut, {6}, {6}));
    L.back().function = "tanh";
    L.back().input_quantizer = narrow({6});
    L.back().output_quantizer = fine({6});
    fill_lut_table(L.back());
    L.push_back(make_layer("d1", LayerKind::Dense, {6}, {5}));
    L.back().kernel = constant(g, {6, 5}, o);
    L.back().bias = constant(g, {5}, o);
    L.push_back(make_layer("sig", LayerKind::Lut, {5}, {5}));
    L.back().function = "sigmoid";
    L.back().input_quantizer = narrow({5});
    L.back().output_quantizer = fine({5});
    fill_lut_table(L.back());
    L.push_back(make_layer("d2", LayerKind::Dense, {5}, {2}));
    L.back().kernel = constant(g, {5, 2}, o);
    L.back().bias = constant(g, {2}, o);
    a.output_shape = {2};
    return a;
  }
  a.name = "random_conv1d_branches";
  a.input_shape = {9, 2};
  L.push_back(make_layer("q", LayerKind::Quantize, {9, 2}, {9, 2}));
  L.back().input_quantizer = activation_quantizer(g, {9, 2}, o);
  L.push_back(conv(g, o, "c1", {9, 2}, {5, 3}, {3}, {2}, {1}));
  L.back().activation = "relu";
  L.back().output_quantizer = activation_quantizer(g, {5, 3}, o);
  L.push_back(conv(g, o, "c2", {9, 2}, {5, 3}, {1}, {2}, {0}, {"q"}));
  L.back().output_quantizer = activation_quantizer(g, {5, 3}, o);
  L.push_back(make_layer("sum", LayerKind::Add, {5, 3}, {5, 3}, {"c1", "c2", "c1"}));
  L.back().activation = "relu";
  L.back().output_quantizer = activation_quantizer(g, {5, 3}, o);
  L.push_back(make_layer("bn", LayerKind::Scale, {5, 3}, {5, 3}));
  L.back().kernel = constant(g, {3}, o);
  L.back().bias = constant(g, {3}, o);
  L.back().output_quantizer = activation_quantizer(g, {5, 3}, o);
  L.push_back(make_layer("flat", LayerKind::Flatten, {5, 3}, {15}));
  L.push_back(make_layer("skip", LayerKind::Reshape, {9, 2}, {18}, {"q"}));
  L.push_back(make_layer("cat", LayerKind::Concatenate, {15}, {33}, {"flat", "skip"}));
  L.push_back(make_layer("act", LayerKind::Activation, {33}, {33}));
  L.back().activation = "relu";
  L.back().output_quantizer = activation_quantizer(g, {33}, o);
  L.push_back(make_layer("dense_out", LayerKind::Dense, {33}, {2}));
  L.back().kernel = constant(g, {33, 2}, o);
  L.back().bias = constant(g, {2}, o);
  a.output_shape = {2};
  return a;
}

double lut_function_value(const std::string& function, double v) {
  if (function == "tanh") return std::tanh(v);
  if (function == "sigmoid") return 1.0 / (1.0 + std::exp(-v));
  throw std::invalid_argument("lut_function_value: unknown function " + function);
}

void fill_lut_table(Layer& l) {
  const QuantSpec& iq = *l.input_quantizer;
  const QuantSpec& oq = *l.output_quantizer;
  l.table.clear();
  for (int64_t n = 0; n < iq.size(); ++n) {
    const int w = iq.width(n);
    const int64_t lo = w <= 0 ? 0 : iq.k[n] ? -(int64_t{1} << (w - 1)) : 0;
    const int64_t count = w <= 0 ? 1 : int64_t{1} << w;
    for (int64_t m = lo; m < lo + count; ++m) {
      const double y =
          oq.apply(lut_function_value(l.function, std::ldexp(static_cast<double>(m), -iq.f[n])), n);
      l.table.push_back(oq.width(n) <= 0 ? 0 : static_cast<int64_t>(std::ldexp(y, oq.f[n])));
    }
  }
}

std::vector<double> random_inputs(const Archive& a, int64_t n, uint64_t seed, double scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 2.0);
  std::vector<double> x(n * a.input_size());
  for (auto& v : x) v = normal(rng) * scale;
  return x;
}

std::vector<double> with_permuted_particles(const std::vector<double>& x, int64_t n, int64_t p,
                                            int64_t f, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<double> out = x;
  std::vector<int64_t> perm(static_cast<size_t>(p));
  for (int64_t r = 0; r < n; ++r) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int64_t q = 0; q < p; ++q)
      for (int64_t c = 0; c < f; ++c) out.push_back(x[(r * p + perm[q]) * f + c]);
  }
  return out;
}

}  // namespace hgqt::testing
