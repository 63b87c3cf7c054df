// The emulator on graph models (conv, pool, add, concatenate, scale, reshape) against an
// independent double-precision evaluation written from archive.h's data flow with explicit loops
// (it does not use linear_map / pool_map), plus archive round trips and validation errors of the
// new layer types.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>

#include "hgqt/archive/emulator.h"
#include "support/random_archive.h"

using namespace hgqt;
using archive::LayerKind;
using hgqt::testing::GraphKind;

namespace {
using Vec = std::vector<double>;

void quantize(Vec& v, const archive::QuantSpec& q) {
  for (int64_t n = 0; n < q.size(); ++n) v[n] = q.apply(v[n], n);
}
void relu(Vec& v) {
  for (auto& e : v) e = std::max(e, 0.0);
}

// conv1d/conv2d with explicit loops; 1-D is the 2-D case with H = 1.
Vec conv_ref(const archive::Layer& l, const Vec& x) {
  const bool one = l.kind == LayerKind::Conv1d;
  const int64_t H = one ? 1 : l.input_shape[0], W = l.input_shape[one ? 0 : 1];
  const int64_t C = l.input_shape.back(), F = l.output_shape.back();
  const int64_t OH = one ? 1 : l.output_shape[0], OW = l.output_shape[one ? 0 : 1];
  const int64_t KH = one ? 1 : l.kernel_size[0], KW = l.kernel_size[one ? 0 : 1];
  const int64_t SH = one ? 1 : l.strides[0], SW = l.strides[one ? 0 : 1];
  const int64_t PH = one ? 0 : l.pad_before[0], PW = l.pad_before[one ? 0 : 1];
  Vec y(OH * OW * F, 0.0);
  for (int64_t oh = 0; oh < OH; ++oh)
    for (int64_t ow = 0; ow < OW; ++ow)
      for (int64_t f = 0; f < F; ++f) {
        double s = l.bias ? l.bias->value(f) : 0.0;
        for (int64_t kh = 0; kh < KH; ++kh)
          for (int64_t kw = 0; kw < KW; ++kw) {
            const int64_t ih = oh * SH - PH + kh, iw = ow * SW - PW + kw;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            for (int64_t c = 0; c < C; ++c)
              s += x[(ih * W + iw) * C + c] * l.kernel->value(((kh * KW + kw) * C + c) * F + f);
          }
        y[(oh * OW + ow) * F + f] = s;
      }
  return y;
}

Vec pool_ref(const archive::Layer& l, const Vec& x) {
  const bool one = l.input_shape.size() == 2;
  const int64_t W = l.input_shape[one ? 0 : 1], C = l.input_shape.back();
  const int64_t OH = one ? 1 : l.output_shape[0], OW = l.output_shape[one ? 0 : 1];
  const int64_t KH = one ? 1 : l.kernel_size[0], KW = l.kernel_size[one ? 0 : 1];
  const int64_t SH = one ? 1 : l.strides[0], SW = l.strides[one ? 0 : 1];
  Vec y(OH * OW * C);
  for (int64_t oh = 0; oh < OH; ++oh)
    for (int64_t ow = 0; ow < OW; ++ow)
      for (int64_t c = 0; c < C; ++c) {
        double m = -INFINITY, s = 0;
        for (int64_t kh = 0; kh < KH; ++kh)
          for (int64_t kw = 0; kw < KW; ++kw) {
            const double v = x[((oh * SH + kh) * W + ow * SW + kw) * C + c];
            m = std::max(m, v);
            s += v;
          }
        y[(oh * OW + ow) * C + c] = l.pool == "max" ? m : s / static_cast<double>(KH * KW);
      }
  return y;
}

Vec reference_forward(const archive::Archive& a, const double* x) {
  std::map<std::string, Vec> out;
  out[archive::kModelInput] = Vec(x, x + a.input_size());
  std::string prev = archive::kModelInput;
  for (const auto& l : a.layers) {
    std::vector<std::string> ins = l.inputs.empty() ? std::vector<std::string>{prev} : l.inputs;
    Vec v = out.at(ins[0]);
    if (l.kind == LayerKind::Quantize) quantize(v, *l.input_quantizer);
    if (l.kind == LayerKind::Activation) {
      if (l.activation == "relu") relu(v);
      quantize(v, *l.output_quantizer);
    }
    if (l.kind == LayerKind::Pool) v = pool_ref(l, v);
    if (l.kind == LayerKind::Lut) {
      quantize(v, *l.input_quantizer);
      for (size_t n = 0; n < v.size(); ++n)
        v[n] = l.output_quantizer->apply(hgqt::testing::lut_function_value(l.function, v[n]),
                                         static_cast<int64_t>(n));
    }
    if (l.kind == LayerKind::Softmax) {
      // Written from archive.h's formula, value by value in double (exact at these widths).
      quantize(v, *l.input_quantizer);
      const size_t n = static_cast<size_t>(l.input_shape.back());
      for (size_t r = 0; r < v.size(); r += n) {
        const double m = *std::max_element(v.begin() + r, v.begin() + r + n);
        Vec e(n);
        double sum = 0;
        for (size_t j = 0; j < n; ++j) {
          const double u = l.exp_input_quantizer->apply(v[r + j] - m, 0);
          e[j] = l.exp_output_quantizer->apply(std::exp(std::min(u, 0.0)), 0);
          sum += e[j];
        }
        const double s = l.inv_input_quantizer->apply(sum, 0);
        const double inv =
            l.inv_output_quantizer->apply(1.0 / std::max(s, std::ldexp(1.0, -30)), 0);
        for (size_t j = 0; j < n; ++j)
          v[r + j] = l.output_quantizer->apply(e[j] * inv, static_cast<int64_t>(r + j));
      }
    }
    if (l.kind == LayerKind::Add) {
      for (size_t s = 1; s < ins.size(); ++s)
        for (size_t n = 0; n < v.size(); ++n) v[n] += out.at(ins[s])[n];
      if (l.activation == "relu") relu(v);
      if (l.output_quantizer) quantize(v, *l.output_quantizer);
    }
    if (l.kind == LayerKind::Concatenate) {
      // Split every input into (outer, inner) blocks around the axis and interleave them.
      int64_t outer = 1;
      for (int64_t d = 0; d < l.axis; ++d) outer *= l.output_shape[d];
      Vec y;
      for (int64_t r = 0; r < outer; ++r)
        for (const auto& name : ins) {
          const Vec& s = out.at(name);
          const int64_t inner = static_cast<int64_t>(s.size()) / outer;
          y.insert(y.end(), s.begin() + r * inner, s.begin() + (r + 1) * inner);
        }
      v = y;
    }
    if (archive::is_linear(l.kind)) {
      if (l.input_quantizer) quantize(v, *l.input_quantizer);
      Vec y;
      if (l.kind == LayerKind::Dense) {
        const int64_t in = l.kernel->shape[0], n_out = l.kernel->shape[1];
        y.assign(n_out, 0.0);
        for (int64_t o = 0; o < n_out; ++o) {
          for (int64_t j = 0; j < in; ++j) y[o] += v[j] * l.kernel->value(j * n_out + o);
          if (l.bias) y[o] += l.bias->value(o);
        }
      } else if (l.kind == LayerKind::Scale) {
        const int64_t C = l.kernel->shape[0];
        y = v;
        for (size_t n = 0; n < y.size(); ++n)
          y[n] = v[n] * l.kernel->value(n % C) + (l.bias ? l.bias->value(n % C) : 0.0);
      } else {
        y = conv_ref(l, v);
      }
      if (l.activation == "relu") relu(y);
      if (l.output_quantizer) quantize(y, *l.output_quantizer);
      v = y;
    }
    out[l.name] = v;
    prev = l.name;
  }
  return out.at(prev);
}
}  // namespace

// validate(a) must throw an ArchiveError whose message contains `part`.
static void expect_error(const archive::Archive& a, const std::string& part) {
  try {
    archive::validate(a);
    ADD_FAILURE() << "no error, expected one containing '" << part << "'";
  } catch (const archive::ArchiveError& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}

class EmulatorGraph : public ::testing::TestWithParam<std::tuple<GraphKind, int>> {};

TEST_P(EmulatorGraph, MatchesDoubleReferenceInRangeAndOverflowing) {
  const auto [kind, seed] = GetParam();
  hgqt::testing::RandomArchiveOptions o;
  o.seed = seed;
  const auto a = hgqt::testing::random_graph_archive(kind, o);
  archive::Emulator emu(a);
  int64_t clipped = 0;
  for (double scale : {0.5, 1.0, 16.0}) {
    const int64_t n = 200;
    const auto x = hgqt::testing::random_inputs(a, n, 100 + seed, scale);
    archive::EmulatorStats stats;
    const auto y = emu.run_batch(x, n, &stats);
    for (int64_t r = 0; r < n; ++r) {
      const auto want = reference_forward(a, x.data() + r * a.input_size());
      for (int64_t c = 0; c < a.output_size(); ++c)
        ASSERT_EQ(y[r * a.output_size() + c], want[c]) << "sample " << r << " output " << c;
    }
    clipped += stats.wrapped + stats.saturated;
    if (scale == 1.0) {
      std::set<std::vector<double>> rows;
      for (int64_t r = 0; r < n; ++r)
        rows.insert(std::vector<double>(y.begin() + r * a.output_size(),
                                        y.begin() + (r + 1) * a.output_size()));
      EXPECT_GE(rows.size(), 10u) << "the output hardly depends on the input";
    }
  }
  EXPECT_GT(clipped, 0);
}

INSTANTIATE_TEST_SUITE_P(Seeds, EmulatorGraph,
                         ::testing::Combine(::testing::Values(GraphKind::Cnn2d,
                                                              GraphKind::Conv1dBranches,
                                                              GraphKind::Lut, GraphKind::Softmax),
                                            ::testing::Range(1, 7)));

TEST(ArchiveGraph, RoundTripKeepsEveryField) {
  for (auto kind :
       {GraphKind::Cnn2d, GraphKind::Conv1dBranches, GraphKind::Lut, GraphKind::Softmax}) {
    const auto a = hgqt::testing::random_graph_archive(kind);
    const std::string dir =
        (std::filesystem::temp_directory_path() / ("hgqt_graph_rt_" + a.name)).string();
    archive::write_archive(a, dir);
    const auto b = archive::read_archive(dir);
    ASSERT_EQ(a.layers.size(), b.layers.size());
    for (size_t li = 0; li < a.layers.size(); ++li) {
      const auto &x = a.layers[li], &y = b.layers[li];
      EXPECT_EQ(x.inputs, y.inputs);
      EXPECT_EQ(x.kernel_size, y.kernel_size);
      EXPECT_EQ(x.strides, y.strides);
      EXPECT_EQ(x.pad_before, y.pad_before);
      EXPECT_EQ(x.pool, y.pool);
      EXPECT_EQ(x.axis, y.axis);
      EXPECT_EQ(x.function, y.function);
      EXPECT_EQ(x.table, y.table);
      auto same_quantizer = [](const std::optional<archive::QuantSpec>& p,
                               const std::optional<archive::QuantSpec>& q) {
        ASSERT_EQ(p.has_value(), q.has_value());
        if (!p) return;
        EXPECT_EQ(p->shape, q->shape);
        EXPECT_EQ(p->k, q->k);
        EXPECT_EQ(p->i, q->i);
        EXPECT_EQ(p->f, q->f);
        EXPECT_EQ(p->round, q->round);
        EXPECT_EQ(p->overflow, q->overflow);
      };
      same_quantizer(x.exp_input_quantizer, y.exp_input_quantizer);
      same_quantizer(x.exp_output_quantizer, y.exp_output_quantizer);
      same_quantizer(x.inv_input_quantizer, y.inv_input_quantizer);
      same_quantizer(x.inv_output_quantizer, y.inv_output_quantizer);
      EXPECT_EQ(x.kernel.has_value(), y.kernel.has_value());
      if (x.kernel) {
        EXPECT_EQ(x.kernel->mantissa, y.kernel->mantissa);
      }
    }
    // Identical outputs after the round trip.
    archive::Emulator ea(a), eb(b);
    const auto xs = hgqt::testing::random_inputs(a, 50, 3, 4.0);
    EXPECT_EQ(ea.run_batch(xs, 50), eb.run_batch(xs, 50));
    std::filesystem::remove_all(dir);
  }
}

TEST(ArchiveGraph, ExactEbopsOfAConvByHand) {
  // conv1d, input [3, 1] of 3 magnitude bits each (k=1, i=2, f=1), kernel [2, 1, 1] = {3, 1}
  // (spans 2 and 1), valid padding: outputs 2, each with both products: 2 * 3 * (2 + 1) = 18;
  // bias 0.75 = 3 * 2^-2 (span 2) added at both outputs: + 4.
  archive::Archive t;
  t.input_shape = {3, 1};
  t.output_shape = {2, 1};
  archive::Layer l;
  l.name = "c";
  l.kind = LayerKind::Conv1d;
  l.input_shape = {3, 1};
  l.output_shape = {2, 1};
  l.kernel_size = {2};
  l.strides = {1};
  l.pad_before = {0};
  archive::QuantSpec q;
  q.shape = {3, 1};
  q.k = {1, 1, 1};
  q.i = {2, 2, 2};
  q.f = {1, 1, 1};
  l.input_quantizer = q;
  archive::Constant w;
  w.shape = {2, 1, 1};
  w.mantissa = {3, 1};
  w.exponent = {0, 0};
  w.quantizer.shape = {2, 1, 1};
  w.quantizer.k = {1, 1};
  w.quantizer.i = {3, 3};
  w.quantizer.f = {0, 0};
  l.kernel = w;
  archive::Constant b;
  b.shape = {1};
  b.mantissa = {3};
  b.exponent = {-2};
  b.quantizer.shape = {1};
  b.quantizer.k = {1};
  b.quantizer.i = {0};
  b.quantizer.f = {2};
  l.bias = b;
  t.layers.push_back(l);
  EXPECT_EQ(archive::exact_ebops(t)[0], 18.0 + 4.0);
  // With same padding (pad_before 0, one output per input): the last output has one product.
  t.layers[0].output_shape = t.output_shape = {3, 1};
  EXPECT_EQ(archive::exact_ebops(t)[0], 18.0 + 3.0 * 2 + 6.0);
}

TEST(ArchiveGraph, ValidationNamesTheProblem) {
  const auto good = hgqt::testing::random_graph_archive(GraphKind::Cnn2d);
  EXPECT_NO_THROW(archive::validate(good));
  auto a = good;
  a.layers[4].inputs = {"pool_max", "nowhere"};
  expect_error(a, "'nowhere', which is no layer");
  a = good;
  a.layers[4].inputs = {"pool_max", "conv_b"};
  expect_error(a, "comes later");
  a = good;
  a.layers[2].pool = "median";
  expect_error(a, "not one of max, avg");
  a = good;
  a.layers[6].kernel_size = {3, 3};
  a.layers[6].strides = {1, 1};
  expect_error(a, "output size 1, expected");
  a = good;
  a.layers[1].pad_before = {3, 1};
  expect_error(a, "pad_before 3 outside");
  a = good;
  a.layers[4].output_shape = {3, 3, 6};
  expect_error(a, "output_shape is [3, 3, 6], expected [3, 3, 5]");
  a = good;
  a.layers[1].name = "input";
  expect_error(a, "reserved for the model input");
  auto c = hgqt::testing::random_graph_archive(GraphKind::Conv1dBranches);
  c.layers[3].inputs = {"c1"};
  expect_error(c, "needs two or more inputs");
}

TEST(ArchiveGraph, LutValidationNamesTheProblem) {
  const auto good = hgqt::testing::random_graph_archive(GraphKind::Lut);
  EXPECT_NO_THROW(archive::validate(good));
  auto a = good;
  a.layers[1].table.pop_back();
  expect_error(a, "table has ");
  a = good;
  a.layers[1].input_quantizer->i[0] = 20;
  expect_error(a, "a table takes at most 16");
  a = good;
  a.layers[1].table[0] = int64_t{1} << 40;
  expect_error(a, "the range of its output quantizer");
}

using hgqt::testing::scalar_quantizer;

TEST(ArchiveGraph, SoftmaxByHand) {
  // One row of two inputs (k=1, i=2, f=1) = {1.5, 0.5}: max 1.5, d = {0, -1}; exp table input
  // (k=1, i=2, f=0), output (k=0, i=1, f=3): e = {Q(1) = 1, Q(e^-1 = 0.3679) = 3/8};
  // sum 11/8 -> reciprocal input (k=0, i=2, f=2): 11/8 rounds to 6/4 = 1.5; 1 / 1.5 = 0.667 ->
  // output (k=0, i=1, f=3): 5/8; products 5/8 and 15/64 -> Q_out (k=0, i=1, f=4): 10/16 and
  // 15/64 = 3.75/16 -> 4/16.
  archive::Archive t;
  t.input_shape = t.output_shape = {2};
  archive::Layer l;
  l.name = "sm";
  l.kind = LayerKind::Softmax;
  l.input_shape = l.output_shape = {2};
  l.input_quantizer = archive::QuantSpec{{2}, {1, 1}, {2, 2}, {1, 1}};
  l.exp_input_quantizer = scalar_quantizer(1, 2, 0);
  l.exp_output_quantizer = scalar_quantizer(0, 1, 3);
  l.inv_input_quantizer = scalar_quantizer(0, 2, 2);
  l.inv_output_quantizer = scalar_quantizer(0, 1, 3);
  l.output_quantizer = archive::QuantSpec{{2}, {0, 0}, {1, 1}, {4, 4}};
  t.layers.push_back(l);
  archive::Emulator emu(t);
  const std::vector<double> x{1.5, 0.5};
  EXPECT_EQ(emu.run_batch(x, 1), (std::vector<double>{10.0 / 16, 4.0 / 16}));
  // Reversed inputs give reversed outputs; equal inputs give 1/2 each (sum 2, 1/2 exact).
  EXPECT_EQ(emu.run_batch(std::vector<double>{0.5, 1.5}, 1),
            (std::vector<double>{4.0 / 16, 10.0 / 16}));
  EXPECT_EQ(emu.run_batch(std::vector<double>{-1.0, -1.0}, 1), (std::vector<double>{0.5, 0.5}));
  // EBOPs: one product per element, bits(e) = 1 + 3, bits(r) = 1 + 3: 2 * 16.
  EXPECT_EQ(archive::exact_ebops(t)[0], 32.0);
  // The tables: EXP over u in [-4, 3] (positive u reads exp(0)); INV over s in [0, 15/4].
  const auto types = archive::infer_types(t);
  const auto& s = types[0].softmax;
  EXPECT_EQ(s.exp_table, (std::vector<int64_t>{0, 0, 1, 3, 8, 8, 8, 8}));
  // 1/max(0, 2^-30) saturates to 15/8; 1/0.25 = 4 -> 15; 1/0.5 -> 15; 1/0.75 = 1.33 -> 11; ...
  EXPECT_EQ(s.inv_table.front(), 15);
  EXPECT_EQ(s.inv_table[3], 11);
  EXPECT_EQ(s.inv_table[4], 8);
  EXPECT_EQ(s.inv_table.size(), 16u);
}

TEST(ArchiveGraph, SoftmaxValidationNamesTheProblem) {
  const auto good = hgqt::testing::random_graph_archive(GraphKind::Softmax);
  EXPECT_NO_THROW(archive::validate(good));
  auto a = good;
  a.layers[3].inv_input_quantizer.reset();
  expect_error(a, "a softmax layer needs an inv_input_quantizer");
  a = good;
  a.layers[3].exp_input_quantizer->i[0] = 20;
  a.layers[3].exp_input_quantizer->f[0] = 0;
  expect_error(a, "exp_input_quantizer is 21 bits wide; a table takes at most 16");
  a = good;
  a.layers[3].exp_output_quantizer->shape = {4};
  expect_error(a, "exp_output_quantizer.shape is [4], expected [1]");
  a = good;
  a.layers[1].exp_output_quantizer = good.layers[3].exp_output_quantizer;
  expect_error(a, "exp_output_quantizer is set on a dense layer");
}
