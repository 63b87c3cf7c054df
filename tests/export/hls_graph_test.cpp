// The HLS exporter on graph models (conv1d, conv2d, scale, max/avg pool, add, concatenate,
// reshape, flatten, lut): generated projects compiled with the C++ compiler and the ap_fixed
// simulation header, run on 2,000 inputs each (half of them scaled by 16 to overflow the
// quantizers), bit-exact with the integer emulator.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "hgqt/archive/emulator.h"
#include "hgqt/export/hls.h"
#include "support/hls_sim.h"
#include "support/process.h"
#include "support/random_archive.h"

using namespace hgqt;
using hgqt::testing::GraphKind;
using quant::OverflowMode;
using quant::RoundingMode;
namespace fs = std::filesystem;
using archive::LayerKind;
using hgqt::testing::ap_include_dir;
using hgqt::testing::CommandResult;
using hgqt::testing::count_of;
using hgqt::testing::quoted;
using hgqt::testing::read_text;
using hgqt::testing::run_command;

namespace {

fs::path fresh_dir(const std::string& name) {
  return hgqt::testing::fresh_test_dir("hls_graph_test", name, false);
}

constexpr int64_t kSamples = 2000;

/// One model to export and check.
struct Case {
  std::string name;  ///< project (and directory) name
  archive::Archive a;
  uint64_t seed = 1;  ///< of the inputs
};

/// Exports every case as a Vitis project and checks its C simulation (support/hls_sim.h).
std::vector<fs::path> check_cases(const std::vector<Case>& cases) {
  std::vector<hgqt::testing::HlsSimCase> sim;
  for (const Case& k : cases)
    sim.push_back({k.name, k.a, exporters::HlsDialect::Vitis, k.seed, false, {}});
  return hgqt::testing::check_hls_cases(sim, "hls_graph_test", kSamples);
}

hgqt::testing::RandomArchiveOptions graph_options(uint64_t seed) {
  hgqt::testing::RandomArchiveOptions o;
  o.seed = seed;
  return o;
}

/// Random graphs of `kind` from seeds 1 and 2, named `<prefix>_s<seed>`, inputs from seed
/// `input_seed + seed`.
std::vector<Case> two_seed_cases(GraphKind kind, const std::string& prefix, uint64_t input_seed) {
  std::vector<Case> cases;
  for (uint64_t seed : {1, 2})
    cases.push_back({prefix + "_s" + std::to_string(seed),
                     hgqt::testing::random_graph_archive(kind, graph_options(seed)),
                     input_seed + seed});
  return cases;
}

// ----------------------------------------------------------- hand-made layers for the tests
struct Rng {
  std::mt19937_64 rng;
  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }
};

/// Per-element activation quantizer: k in {0, 1}, i in [-1, 3], f in [1, 4], WRAP / SAT modes.
archive::QuantSpec quantizer(Rng& g, std::vector<int64_t> shape, OverflowMode ov) {
  archive::QuantSpec q;
  q.shape = shape;
  q.round = RoundingMode::RND;
  q.overflow = ov;
  const int64_t n = archive::shape_size(shape);
  for (int64_t e = 0; e < n; ++e) {
    q.k.push_back(g.uniform(0, 1));
    q.i.push_back(g.uniform(-1, 3));
    q.f.push_back(g.uniform(1, 4));
  }
  return q;
}

/// Random constant with about 20% zeros, elements of up to 5 bits at f in [1, 4].
archive::Constant constant(Rng& g, std::vector<int64_t> shape) {
  archive::Constant c;
  c.shape = shape;
  c.quantizer.shape = shape;
  c.quantizer.round = RoundingMode::RND;
  c.quantizer.overflow = OverflowMode::SAT_SYM;
  const int64_t n = archive::shape_size(shape);
  for (int64_t e = 0; e < n; ++e) {
    const int f = g.uniform(1, 4);
    c.quantizer.k.push_back(1);
    c.quantizer.i.push_back(4 - f);
    c.quantizer.f.push_back(f);
    c.mantissa.push_back(g.uniform(0, 4) == 0 ? 0 : g.uniform(-15, 15));
    c.exponent.push_back(-f);
  }
  return c;
}

archive::Layer layer(const std::string& name, LayerKind kind, std::vector<int64_t> in,
                     std::vector<int64_t> out, std::vector<std::string> inputs = {}) {
  archive::Layer l;
  l.name = name;
  l.kind = kind;
  l.input_shape = std::move(in);
  l.output_shape = std::move(out);
  l.inputs = std::move(inputs);
  return l;
}

}  // namespace

// Cnn2d (conv2d same / valid / 1x1, max and avg pool, concatenate on channels, flatten, dense):
// two seeds, mixed modes and per-element types.
TEST(HlsGraph, Cnn2dBitExact) {
  std::vector<Case> cases;
  for (uint64_t seed : {2, 3})  // seeds whose outputs vary much over the inputs
    cases.push_back({"cnn2d_s" + std::to_string(seed),
                     hgqt::testing::random_graph_archive(GraphKind::Cnn2d, graph_options(seed)),
                     100 + seed});
  const auto dirs = check_cases(cases);
  // Layer functions for the layers that compute; the rewiring layers generate none.
  const std::string cpp = read_text(dirs[0] / "firmware" / "cnn2d_s2.cpp");
  for (const char* fn : {"layer1_conv2d(", "layer2_pool(", "layer3_conv2d(", "layer5_conv2d(",
                         "layer6_pool(", "layer8_dense("})
    EXPECT_NE(cpp.find(std::string("static void ") + fn), std::string::npos) << fn;
  EXPECT_EQ(cpp.find("static void layer4_"), std::string::npos);  // concatenate
  EXPECT_EQ(cpp.find("static void layer7_"), std::string::npos);  // flatten
  // conv_b reads the concatenation: the max pool's array and conv_c's, with no copy.
  EXPECT_NE(cpp.find("layer5_conv2d(layer2_out, layer3_out, layer5_out);"), std::string::npos);
  const std::string defines = read_text(dirs[0] / "firmware" / "defines.h");
  // avg pool: the exact sum of the elements times 2^-2 (the sum's coefficients)
  EXPECT_NE(defines.find("layer6_coef_t"), std::string::npos);
}

// Conv1dBranches (conv1d strided, add of three inputs with relu, scale, reshape of the
// quantized input concatenated with the flattened branch, activation, dense): two seeds.
TEST(HlsGraph, Conv1dBranchesBitExact) {
  std::vector<Case> cases;
  for (uint64_t seed : {1, 4})
    cases.push_back(
        {"branches_s" + std::to_string(seed),
         hgqt::testing::random_graph_archive(GraphKind::Conv1dBranches, graph_options(seed)),
         200 + seed});
  const auto dirs = check_cases(cases);
  const std::string cpp = read_text(dirs[0] / "firmware" / "branches_s1.cpp");
  for (const char* fn : {"layer1_conv1d(", "layer2_conv1d(", "layer3_add(", "layer4_scale(",
                         "layer8_activation(", "layer9_dense("})
    EXPECT_NE(cpp.find(std::string("static void ") + fn), std::string::npos) << fn;
  // The add reads c1 twice and c2 once; the activation reads the scale's array and the
  // quantized input (through reshape and concatenate).
  EXPECT_NE(cpp.find("layer3_add(layer1_out, layer2_out, layer3_out);"), std::string::npos);
  EXPECT_NE(cpp.find("layer8_activation(layer4_out, x_in, layer8_out);"), std::string::npos);
}

// RND / WRAP only (mixed_modes = false) and per-tensor quantizers, for both graph kinds (one
// seed each, chosen so that the outputs vary: most per-tensor Cnn2d seeds give a constant output).
TEST(HlsGraph, ModeAndPerTensorVariantsBitExact) {
  std::vector<Case> cases;
  for (GraphKind kind : {GraphKind::Cnn2d, GraphKind::Conv1dBranches}) {
    const bool cnn = kind == GraphKind::Cnn2d;
    const std::string k = cnn ? "cnn2d" : "branches";
    auto o = graph_options(cnn ? 3 : 9);
    o.mixed_modes = false;
    cases.push_back({k + "_rnd_wrap", hgqt::testing::random_graph_archive(kind, o), 300});
    o = graph_options(cnn ? 11 : 12);
    o.per_tensor = true;
    cases.push_back({k + "_per_tensor", hgqt::testing::random_graph_archive(kind, o), 400});
  }
  const auto dirs = check_cases(cases);
  // Per tensor: one type for the whole input.
  EXPECT_EQ(read_text(dirs[1] / "firmware" / "defines.h").find("input_t_0"), std::string::npos);
}

// Linformer (attention whose keys and values are projected along the particle axis by
// einsum_dense phd,pj->jhd, a linear layer over a learned [6, 3] kernel): two seeds.
TEST(HlsGraph, LinformerBitExact) {
  const std::vector<Case> cases = two_seed_cases(GraphKind::Linformer, "linformer", 650);
  const auto dirs = check_cases(cases);
  const std::string cpp = read_text(dirs[0] / "firmware" / "linformer_s1.cpp");
  EXPECT_NE(cpp.find("_einsum_dense("), std::string::npos);
  EXPECT_NE(cpp.find("_einsum("), std::string::npos);
}

// LutDense (what a lut_dense block exports: a learned table per connection, one of them pruned,
// two identical, summed over the inputs): two seeds. The identical tables are written once.
TEST(HlsGraph, LutDenseBitExact) {
  const std::vector<Case> cases = two_seed_cases(GraphKind::LutDense, "lut_dense", 660);
  const auto dirs = check_cases(cases);
  for (size_t c = 0; c < cases.size(); ++c) {
    const std::string tables = read_text(dirs[c] / "firmware" / "weights" / "lut3.h");
    // 20 connections, one pruned (a constant, no table) and one sharing a table: at most 18.
    size_t count = 0;
    for (size_t p = tables.find("static const "); p != std::string::npos;
         p = tables.find("static const ", p + 1))
      ++count;
    EXPECT_GE(count, 1u) << cases[c].name;
    EXPECT_LE(count, 18u) << cases[c].name;
  }
}

// Lut (quantize -> lut tanh -> dense relu -> lut sigmoid -> dense): two seeds with mixed modes
// and one with RND / WRAP only. Each lut element reads a table indexed by its quantized input's
// bits; identical tables are written once.
TEST(HlsGraph, LutBitExact) {
  std::vector<Case> cases = two_seed_cases(GraphKind::Lut, "lut", 600);
  auto o = graph_options(3);
  o.mixed_modes = false;
  cases.push_back({"lut_rnd_wrap", hgqt::testing::random_graph_archive(GraphKind::Lut, o), 610});
  const auto dirs = check_cases(cases);
  for (size_t c = 0; c < cases.size(); ++c) {
    const std::string cpp = read_text(dirs[c] / "firmware" / (cases[c].name + ".cpp"));
    EXPECT_NE(cpp.find("static void layer1_lut("), std::string::npos) << cases[c].name;
    EXPECT_NE(cpp.find("static void layer3_lut("), std::string::npos) << cases[c].name;
    EXPECT_NE(cpp.find(".range("), std::string::npos) << cases[c].name;
    const std::string tables = read_text(dirs[c] / "firmware" / "weights" / "lut1.h");
    EXPECT_NE(tables.find("static const "), std::string::npos) << cases[c].name;
    EXPECT_LE(count_of(tables, "static const "), 6u) << cases[c].name;
  }
}

// A conv2d with more than kMaxTermsPerFunction (4,096) products is split into several
// functions; a second layer reads the raw model input with the same quantizer as the first
// (both read x_in); the model ends in a concatenation (result_t holds both sources).
TEST(HlsGraph, LargeConvSplitAndSharedInput) {
  Rng g{std::mt19937_64(17)};
  archive::Archive a;
  a.name = "large_conv";
  a.input_shape = {8, 8, 3};
  a.output_shape = {8};
  auto& L = a.layers;
  L.push_back(layer("conv", LayerKind::Conv2d, {8, 8, 3}, {8, 8, 6}, {archive::kModelInput}));
  L.back().input_quantizer = quantizer(g, {8, 8, 3}, OverflowMode::WRAP);
  L.back().kernel = constant(g, {3, 3, 3, 6});
  L.back().bias = constant(g, {6});
  L.back().kernel_size = {3, 3};
  L.back().strides = {1, 1};
  L.back().pad_before = {1, 1};
  L.back().activation = "relu";
  L.back().output_quantizer = quantizer(g, {8, 8, 6}, OverflowMode::SAT);
  L.push_back(layer("pool", LayerKind::Pool, {8, 8, 6}, {2, 2, 6}));
  L.back().pool = "max";
  L.back().kernel_size = {4, 4};
  L.back().strides = {4, 4};
  L.push_back(layer("flat", LayerKind::Flatten, {2, 2, 6}, {24}));
  L.push_back(layer("dense", LayerKind::Dense, {24}, {5}));
  L.back().kernel = constant(g, {24, 5});
  L.back().bias = constant(g, {5});
  // The raw input again, through the same quantizer: a 1x1 conv with stride 8 (one position).
  L.push_back(layer("corner", LayerKind::Conv2d, {8, 8, 3}, {1, 1, 3}, {archive::kModelInput}));
  L.back().input_quantizer = L[0].input_quantizer;
  L.back().kernel = constant(g, {1, 1, 3, 3});
  L.back().kernel_size = {1, 1};
  L.back().strides = {8, 8};
  L.back().pad_before = {0, 0};
  L.push_back(layer("corner_flat", LayerKind::Reshape, {1, 1, 3}, {3}));
  L.push_back(layer("cat", LayerKind::Concatenate, {5}, {8}, {"dense", "corner_flat"}));
  archive::validate(a);
  const auto dirs = check_cases({{"large_conv", a, 500}});
  const std::string cpp = read_text(dirs[0] / "firmware" / "large_conv.cpp");
  EXPECT_NE(cpp.find("static void layer0_conv2d_part1("), std::string::npos);
  EXPECT_NE(cpp.find("layer0_conv2d(x_in, layer0_out);"), std::string::npos);
  EXPECT_NE(cpp.find("layer4_conv2d(x_in, layer4_out);"), std::string::npos);
  EXPECT_NE(cpp.find("y_out[7] = layer4_out[2];"), std::string::npos);
  // Every nonzero weight of a non-pruned input inside the image is one term of a sum.
  const size_t parts = cpp.find("static void layer0_conv2d_part0(");
  const std::string conv = cpp.substr(parts, cpp.find("static void layer0_conv2d(") - parts);
  EXPECT_GT(count_of(conv, " += ") + count_of(conv, " -= "), 4096u);
}

// Two layers quantizing the raw model input with different quantizers: rejected, naming both.
TEST(HlsGraph, RejectsTwoDifferentInputQuantizers) {
  auto a = hgqt::testing::random_graph_archive(GraphKind::Conv1dBranches, graph_options(5));
  ASSERT_EQ(a.layers[2].name, "c2");
  a.layers[2].inputs = {archive::kModelInput};
  a.layers[2].input_quantizer = a.layers[0].input_quantizer;
  a.layers[2].input_quantizer->f[0] += 1;
  const fs::path dir = fresh_dir("two_input_quantizers");
  try {
    exporters::export_hls(a, dir.string(), {}, {}, 0);
    ADD_FAILURE() << "expected an ArchiveError";
  } catch (const archive::ArchiveError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'q'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'c2'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("different quantizers"), std::string::npos) << msg;
  }
  EXPECT_FALSE(fs::exists(dir / "firmware"));
}

// Particles (Deep Sets on [8, 3]: per-particle dense layers, mean and max over the particles,
// dense) and Attention (q, k, v projections, two heads of exact products of two activations, the
// table softmax with its 1 / sqrt(d) scale, a residual add and pools on [6, 3]): bit-exact with
// the emulator, and permutation invariant in the C simulation: the second half of the inputs is
// the first half with every row's particles shuffled, and the generated design's outputs for the
// two halves are identical line by line.
TEST(HlsGraph, ParticlesBitExactAndPermutationInvariant) {
  std::vector<hgqt::testing::HlsSimCase> sim;
  for (uint64_t seed : {1, 2, 3}) {
    const bool attention = seed == 3;
    hgqt::testing::HlsSimCase k;
    k.name = (attention ? "attention_s" : "particles_s") + std::to_string(seed);
    k.a = hgqt::testing::random_graph_archive(
        attention ? GraphKind::Attention : GraphKind::Particles, graph_options(seed));
    k.seed = 800 + seed;
    const auto x = hgqt::testing::overflow_test_inputs(k.a, kSamples / 2, k.seed);
    k.inputs = hgqt::testing::with_permuted_particles(x, kSamples / 2, k.a.input_shape[0],
                                                      k.a.input_shape[1], seed);
    sim.push_back(std::move(k));
  }
  const auto dirs = hgqt::testing::check_hls_cases(sim, "hls_graph_test", kSamples);
  for (const fs::path& dir : dirs) {
    std::vector<std::string> lines;
    std::stringstream in(read_text(dir / "tb_data" / "csim_results.log"));
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    ASSERT_EQ(lines.size(), static_cast<size_t>(kSamples)) << dir;
    int64_t differ = 0;
    for (int64_t r = 0; r < kSamples / 2; ++r) differ += lines[r] != lines[r + kSamples / 2];
    EXPECT_EQ(differ, 0) << dir << ": outputs change when the particles are permuted";
    if (!::testing::Test::HasFailure()) fs::remove_all(dir);
  }
}

// Softmax (quantize -> dense -> reshape [2, 4] -> softmax -> flatten -> {identity, dense ->
// softmax} concatenated, random table quantizers with SAT / SAT_SYM / WRAP and RND / TRN): three
// seeds with mixed modes and one with RND / WRAP activation quantizers, plus a softmax reading the
// model input directly (its input quantizer is the model's first: x_in). Each softmax row is the
// max-subtracted exp table, the exact sum and the reciprocal table, bit-exact with the emulator.
TEST(HlsGraph, SoftmaxBitExact) {
  std::vector<Case> cases;
  for (uint64_t seed : {1, 2, 3})
    cases.push_back({"softmax_s" + std::to_string(seed),
                     hgqt::testing::random_graph_archive(GraphKind::Softmax, graph_options(seed)),
                     700 + seed});
  auto o = graph_options(4);
  o.mixed_modes = false;
  cases.push_back(
      {"softmax_rnd_wrap", hgqt::testing::random_graph_archive(GraphKind::Softmax, o), 710});
  // The model input [3, 4] straight into a softmax (three rows), fine output types.
  {
    Rng g{std::mt19937_64(23)};
    archive::Archive a;
    a.name = "softmax_input";
    a.input_shape = {3, 4};
    a.output_shape = {3, 4};
    a.layers.push_back(layer("sm", LayerKind::Softmax, {3, 4}, {3, 4}, {archive::kModelInput}));
    archive::Layer& l = a.layers.back();
    l.input_quantizer = quantizer(g, {3, 4}, OverflowMode::SAT);
    l.input_quantizer->i[5] = -2;  // one pruned input element (W = k + i + f <= 0)
    l.input_quantizer->f[5] = 1;
    l.input_quantizer->k[5] = 0;
    l.output_quantizer = quantizer(g, {3, 4}, OverflowMode::SAT);
    for (int64_t n = 0; n < 12; ++n) {
      l.output_quantizer->k[n] = 0;
      l.output_quantizer->i[n] = 1;
      l.output_quantizer->f[n] = g.uniform(5, 8);
    }
    hgqt::testing::random_softmax_quantizers(l, 31);
    l.exp_input_quantizer->overflow = OverflowMode::WRAP;  // d below the index range wraps
    archive::validate(a);
    cases.push_back({"softmax_input", a, 720});
  }
  const auto dirs = check_cases(cases);
  for (size_t c = 0; c < cases.size(); ++c) {
    const std::string& name = cases[c].name;
    const std::string cpp = read_text(dirs[c] / "firmware" / (name + ".cpp"));
    const std::string defines = read_text(dirs[c] / "firmware" / "defines.h");
    const size_t sm = name == "softmax_input" ? 0 : 3;  // the first softmax layer
    const std::string L = std::to_string(sm);
    EXPECT_NE(cpp.find("static void layer" + L + "_softmax("), std::string::npos) << name;
    EXPECT_NE(cpp.find(".range("), std::string::npos) << name;
    EXPECT_NE(cpp.find(" ? (layer" + L + "_max_t"), std::string::npos) << name;  // the row max
    // The stages' types: quantizers (input, exp and reciprocal table indices, output), max,
    // differences and sums, table entries, products.
    for (const char* stage : {"_q_t", "_max_t", "_acc_t", "_table_t", "_prod_t"})
      EXPECT_NE(defines.find("layer" + L + stage), std::string::npos) << name << stage;
    const std::string tables = read_text(dirs[c] / "firmware" / "weights" / ("softmax" + L + ".h"));
    EXPECT_EQ(count_of(tables, "static const "), 2u) << name;  // exp and reciprocal
    EXPECT_NE(tables.find("table_" + L + "_0["), std::string::npos) << name;
    EXPECT_NE(tables.find("table_" + L + "_1["), std::string::npos) << name;
    EXPECT_NE(cpp.find("table_" + L + "_0["), std::string::npos) << name;
    EXPECT_NE(cpp.find("table_" + L + "_1["), std::string::npos) << name;
    if (name == "softmax_input")
      EXPECT_NE(cpp.find("layer0_softmax(x_in, layer0_out);"), std::string::npos);
    else
      EXPECT_NE(cpp.find("static void layer6_softmax("), std::string::npos) << name;
    // Many distinct output rows over the 2,000 inputs (check_cases asks for 20 at least).
    std::set<std::string> rows;
    std::stringstream lines(read_text(dirs[c] / "tb_data" / "tb_output_predictions.dat"));
    for (std::string line; std::getline(lines, line);) rows.insert(line);
    EXPECT_GE(rows.size(), 150u) << name;
  }
}

// Softmax stages that cannot vary are folded into constants: a row whose inputs are all pruned,
// a pruned reciprocal table input (r is INV's only entry), a pruned exp table input (every e is
// EXP's only entry: the whole layer is constant). Bit-exact with the emulator all the same.
TEST(HlsGraph, SoftmaxConstantStagesBitExact) {
  Rng g{std::mt19937_64(29)};
  using hgqt::testing::scalar_quantizer;
  auto fine = [&](archive::QuantSpec q) {
    for (int64_t n = 0; n < q.size(); ++n) {
      q.k[n] = 0;
      q.i[n] = 1;
      q.f[n] = g.uniform(5, 7);
    }
    return q;
  };
  archive::Archive a;
  a.name = "softmax_const";
  a.input_shape = {2, 4};
  a.output_shape = {4, 4};
  auto& L = a.layers;
  L.push_back(layer("q", LayerKind::Quantize, {2, 4}, {2, 4}));
  L.back().input_quantizer = quantizer(g, {2, 4}, OverflowMode::SAT);
  L.push_back(layer("sm_a", LayerKind::Softmax, {2, 4}, {2, 4}, {"q"}));
  L.back().input_quantizer = quantizer(g, {2, 4}, OverflowMode::WRAP);
  for (int64_t n = 4; n < 8; ++n) {  // row 1 pruned
    L.back().input_quantizer->k[n] = 0;
    L.back().input_quantizer->i[n] = 0;
    L.back().input_quantizer->f[n] = 0;
  }
  L.back().output_quantizer = fine(quantizer(g, {2, 4}, OverflowMode::SAT));
  L.back().exp_input_quantizer = scalar_quantizer(1, 3, 2, RoundingMode::RND, OverflowMode::SAT);
  L.back().exp_output_quantizer = scalar_quantizer(0, 0, 6, RoundingMode::RND, OverflowMode::SAT);
  L.back().inv_input_quantizer = scalar_quantizer(0, 0, 0, RoundingMode::RND, OverflowMode::SAT);
  L.back().inv_output_quantizer = scalar_quantizer(0, 0, 6, RoundingMode::RND, OverflowMode::SAT);
  L.push_back(layer("sm_b", LayerKind::Softmax, {2, 4}, {2, 4}, {"q"}));
  L.back().input_quantizer = quantizer(g, {2, 4}, OverflowMode::SAT);
  L.back().output_quantizer = fine(quantizer(g, {2, 4}, OverflowMode::SAT));
  L.back().exp_input_quantizer = scalar_quantizer(0, 0, 0, RoundingMode::TRN, OverflowMode::WRAP);
  L.back().exp_output_quantizer = scalar_quantizer(0, 0, 6, RoundingMode::RND, OverflowMode::SAT);
  L.back().inv_input_quantizer = scalar_quantizer(0, 3, 3, RoundingMode::TRN, OverflowMode::SAT);
  L.back().inv_output_quantizer = scalar_quantizer(0, 1, 5, RoundingMode::RND, OverflowMode::SAT);
  L.push_back(layer("cat", LayerKind::Concatenate, {2, 4}, {4, 4}, {"sm_a", "sm_b"}));
  L.back().axis = 0;
  archive::validate(a);
  const auto dirs = check_cases({{"softmax_const", a, 730}});
  const std::string cpp = read_text(dirs[0] / "firmware" / "softmax_const.cpp");
  // sm_a: r is the reciprocal table's only value, so p = e * r is e times a constant; its
  // pruned row is constant (y_out[4..7]); sm_b is constant.
  EXPECT_NE(cpp.find(" * coef1["), std::string::npos);
  EXPECT_EQ(cpp.find("layer1_prod_t"), std::string::npos);
  EXPECT_NE(cpp.find("table_1_0["), std::string::npos);
  EXPECT_EQ(cpp.find("table_1_1["), std::string::npos);
  EXPECT_EQ(cpp.find("static void layer2_"), std::string::npos);
  EXPECT_EQ(cpp.find("table_2_"), std::string::npos);
  EXPECT_NE(cpp.find("y_out[4] = (result_t)0."), std::string::npos);
  EXPECT_FALSE(fs::exists(dirs[0] / "firmware" / "weights" / "softmax2.h"));
  const std::string tables = read_text(dirs[0] / "firmware" / "weights" / "softmax1.h");
  EXPECT_EQ(count_of(tables, "static const "), 1u);
}
