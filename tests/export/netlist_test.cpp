// The lowered netlist against the emulator (the independent oracle), without g++ or Verilator:
// netlist::evaluate walks the ops with exact integers and checks every value against its op's
// range and type, so a lowering that gets a shift, a constant, a range or a table wrong fails.
#include "hgqt/export/netlist.h"

#include <gtest/gtest.h>

#include <set>

#include "hgqt/archive/emulator.h"
#include "support/random_archive.h"

namespace hgqt {
namespace {

using archive::int128;
using netlist::OpKind;

// Emulator outputs and netlist outputs agree on `n` random samples (half of them scaled to
// overflow the WRAP / SAT quantizers).
void expect_agrees(const archive::Archive& a, int64_t n, uint64_t seed) {
  const netlist::Netlist net = netlist::lower(a);
  const archive::Emulator emu(a);
  ASSERT_EQ(net.outputs.size(), static_cast<size_t>(a.output_size()));
  ASSERT_EQ(net.inputs.size(), static_cast<size_t>(a.input_size()));
  for (double scale : {1.0, 8.0}) {
    const std::vector<double> x = testing::random_inputs(a, n, seed, scale);
    std::vector<int128> want(a.output_size());
    for (int64_t r = 0; r < n; ++r) {
      const double* xr = x.data() + r * a.input_size();
      emu.run_exact(xr, want.data());
      std::vector<int128> in(net.inputs.size(), 0);
      for (size_t e = 0; e < in.size(); ++e)
        if (net.ops[net.inputs[e]].type.width > 0)
          in[e] = archive::quantize_double(xr[e], net.input_quantizer, static_cast<int64_t>(e));
      const std::vector<int128> got = netlist::evaluate(net, in);
      for (size_t o = 0; o < got.size(); ++o)
        ASSERT_TRUE(got[o] == want[o])
            << "sample " << r << " (scale " << scale << ") output " << o << ": netlist "
            << archive::to_string(got[o]) << ", emulator " << archive::to_string(want[o]);
    }
  }
}

TEST(Netlist, RandomMlpsAgreeWithTheEmulator) {
  for (uint64_t seed = 1; seed <= 12; ++seed) {
    SCOPED_TRACE(seed);
    testing::RandomArchiveOptions o;
    o.seed = seed;
    o.sizes = {9, 7, 5, 3};
    o.quantize_layer = seed % 2 == 0;
    o.activation_layer = seed % 3 != 0;
    o.output_quantizer = seed % 4 != 0;
    expect_agrees(testing::random_mlp_archive(o), 200, seed);
  }
}

TEST(Netlist, RandomGraphsAgreeWithTheEmulator) {
  using testing::GraphKind;
  for (GraphKind kind :
       {GraphKind::Cnn2d, GraphKind::Conv1dBranches, GraphKind::Lut, GraphKind::Softmax,
        GraphKind::Particles, GraphKind::Attention, GraphKind::Linformer, GraphKind::LutDense})
    for (uint64_t seed = 1; seed <= 4; ++seed) {
      SCOPED_TRACE(static_cast<int>(kind) * 100 + static_cast<int>(seed));
      testing::RandomArchiveOptions o;
      o.seed = seed;
      expect_agrees(testing::random_graph_archive(kind, o), 100, seed);
    }
}

// A 2-4-2 dense model written by hand: the lowering folds what is constant and keeps the live
// terms with their shifts.
archive::Archive hand_model() {
  archive::Archive a;
  a.name = "hand";
  a.input_shape = std::vector<int64_t>{2};
  a.output_shape = std::vector<int64_t>{2};
  archive::Layer d;
  d.name = "d";
  d.kind = archive::LayerKind::Dense;
  d.input_shape = std::vector<int64_t>{2};
  d.output_shape = std::vector<int64_t>{2};
  archive::QuantSpec q;
  q.shape = std::vector<int64_t>{2};
  q.k = {1, 1};
  q.i = {2, 0};
  q.f = {1, -2};  // element 1: width 1 + 0 - 2 < 0: pruned
  d.input_quantizer = q;
  archive::Constant w;
  w.shape = std::vector<int64_t>{2, 2};
  w.mantissa = std::vector<int64_t>{
      3, 0, 5, 7};  // [in, out]: x0 * 3 -> y0; x0 * 0 -> y1; x1 (pruned) * 5, 7
  w.exponent = {0, 0, 1, 1};
  archive::QuantSpec wq;
  wq.shape = std::vector<int64_t>{2, 2};
  wq.k = {1, 1, 1, 1};
  wq.i = {4, 4, 4, 4};
  wq.f = {0, 0, -1, -1};
  w.quantizer = wq;
  d.kernel = w;
  archive::Constant b;
  b.shape = std::vector<int64_t>{2};
  b.mantissa = std::vector<int64_t>{1, -3};
  b.exponent = {-2, 0};
  archive::QuantSpec bq;
  bq.shape = std::vector<int64_t>{2};
  bq.k = {1, 1};
  bq.i = {1, 2};
  bq.f = {2, 0};
  b.quantizer = bq;
  d.bias = b;
  a.layers.push_back(d);
  archive::validate(a);
  return a;
}

TEST(Netlist, FoldsPrunedInputsZeroWeightsAndConstantSums) {
  const archive::Archive a = hand_model();
  const netlist::Netlist n = netlist::lower(a);
  // y0 = 3 * x0 + 1/4: one live term; y1 = -3 + 0 * x0 + pruned terms: a constant
  const netlist::Op& y0 = n.ops[n.outputs[0]];
  const netlist::Op& y1 = n.ops[n.outputs[1]];
  ASSERT_EQ(y0.kind, OpKind::Sum);
  ASSERT_EQ(y0.in.size(), 1u);
  EXPECT_TRUE(y0.in[0].coef == 3);
  EXPECT_EQ(y0.type.frac, 2);    // the bias's frac
  EXPECT_EQ(y0.in[0].shift, 1);  // x0 at frac 1 shifted to frac 2
  EXPECT_TRUE(y0.konst == 1);    // 1/4 at frac 2
  ASSERT_EQ(y1.kind, OpKind::Const);
  EXPECT_TRUE(y1.konst == -3);
  EXPECT_EQ(n.ops[n.inputs[1]].kind, OpKind::Const);  // the pruned input element
  // x0 = 1.5 (mantissa 3): y0 = 3 * 1.5 + 0.25 = 4.75 (mantissa 19 at frac 2)
  const auto out = netlist::evaluate(n, {3, 0});
  EXPECT_TRUE(out[0] == 19);
  EXPECT_TRUE(out[1] == -3);
  EXPECT_THROW(netlist::evaluate(n, {3}), std::invalid_argument);
  // a value outside the input's type is caught by the range check
  EXPECT_THROW(netlist::evaluate(n, {1000, 0}), std::logic_error);
}

TEST(Netlist, IdenticalTablesAreOneTable) {
  testing::RandomArchiveOptions o;
  o.seed = 3;
  archive::Archive a = testing::random_graph_archive(testing::GraphKind::Lut, o);
  // Give every element of the first lut layer one input and output quantizer: the same table.
  size_t lut = 0;
  for (size_t li = 0; li < a.layers.size(); ++li) {
    auto& l = a.layers[li];
    if (l.kind != archive::LayerKind::Lut) continue;
    auto set = [](archive::QuantSpec& q, int k, int i, int f) {
      std::fill(q.k.begin(), q.k.end(), k);
      std::fill(q.i.begin(), q.i.end(), i);
      std::fill(q.f.begin(), q.f.end(), f);
    };
    set(*l.input_quantizer, 1, 1, 2);
    set(*l.output_quantizer, 1, 1, 4);
    l.table.clear();
    testing::fill_lut_table(l);
    lut = li;
    break;
  }
  archive::validate(a);
  const netlist::Netlist n = netlist::lower(a);
  size_t reads = 0;
  std::set<int32_t> tables;
  for (const auto& op : n.ops)
    if (op.kind == OpKind::Table && n.steps[op.step].layer == lut) {
      ++reads;
      tables.insert(op.table);
    }
  EXPECT_GT(reads, 1u);
  EXPECT_EQ(tables.size(), 1u);
  expect_agrees(a, 100, 3);
}

TEST(Netlist, SecondReaderOfTheFloatInputNeedsTheSameQuantizer) {
  testing::RandomArchiveOptions o;
  o.seed = 5;
  archive::Archive a = testing::random_mlp_archive(o);
  // A second dense layer reading the raw input with a different quantizer.
  archive::Layer extra = a.layers[0];
  extra.name = "second";
  extra.inputs = {archive::kModelInput};
  extra.input_quantizer->f[0] += 1;
  archive::Archive b = a;
  b.layers.insert(b.layers.begin() + 1, extra);
  b.layers[2].inputs = {a.layers[0].name};
  // the model output stays the last layer; 'second' is read by nobody, which is allowed
  archive::validate(b);
  try {
    netlist::lower(b);
    FAIL() << "expected an ArchiveError";
  } catch (const archive::ArchiveError& e) {
    EXPECT_NE(std::string(e.what()).find("different quantizers"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace hgqt
