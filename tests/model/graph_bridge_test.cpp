// Graph models with every layer type beyond dense (conv1d/conv2d, folded batch norm, batchnorm,
// pools, reshape, add, concatenate): built from YAML, trained a few steps, traced, exported to the
// archive; the integer emulator must equal the float64 eval forward bit for bit, and
// from_archive must rebuild a model with identical outputs.
#include <gtest/gtest.h>

#include "hgqt/archive/emulator.h"
#include "hgqt/archive/fixed.h"
#include "hgqt/export/netlist.h"
#include "hgqt/model/archive_bridge.h"

using namespace hgqt;

namespace {
const char* kCnnYaml = R"(
input_shape: [8, 8]
quantizer_defaults:
  weight: {b: 5}
layers:
  - {type: reshape, shape: [8, 8, 1]}
  - {type: quantize, name: q, input_quantizer: {i: 2, f: 4, round: TRN}}
  - {type: conv2d, name: c1, filters: 4, kernel_size: 3, padding: same, activation: relu, output_quantizer: {f: 3}}
  - {type: max_pool, name: mp, pool_size: 2}
  - {type: conv2d, name: c2, filters: 4, kernel_size: 3, strides: 2, padding: same, batchnorm: true, activation: relu}
  - {type: conv2d, name: c3, inputs: mp, filters: 4, kernel_size: [2, 2], strides: 2, output_quantizer: {f: 4}}
  - {type: add, name: sum, inputs: [c2, c3], activation: relu, output_quantizer: {f: 3}}
  - {type: batchnorm, name: bn}
  - {type: avg_pool, name: ap, pool_size: 2}
  - {type: flatten, name: f1}
  - {type: global_avg_pool, name: gp, inputs: [c1]}
  - {type: global_max_pool, name: gm, inputs: [c3]}
  - {type: concatenate, name: cat, inputs: [f1, gp, gm]}
  - {type: dense, name: d1, units: 8, batchnorm: true, activation: relu}
  - {type: dense, name: out, units: 3}
)";

const char* kConv1dYaml = R"(
input_shape: [12, 2]
layers:
  - {type: quantize, name: q, input_quantizer: {i: 2, f: 4}}
  - {type: conv1d, name: a, filters: 3, kernel_size: 3, padding: same, activation: relu, output_quantizer: {f: 3}}
  - {type: conv1d, name: b, inputs: q, filters: 3, kernel_size: 5, padding: same, batchnorm: true, output_quantizer: {f: 3}}
  - {type: add, name: sum, inputs: [a, b, a]}
  - {type: max_pool, pool_size: 2, strides: 2}
  - {type: conv1d, filters: 2, kernel_size: 2, strides: 2, activation: relu}
  - {type: flatten}
  - {type: dense, units: 2}
)";

// The muon-tracking shape: conv1d branches with tanh tables, an add, dense layers.
const char* kLutYaml = R"(
input_shape: [10, 3]
layers:
  - {type: quantize, name: q, input_quantizer: {i: 2, f: 3}}
  - {type: conv1d, name: a, filters: 2, kernel_size: 3, padding: same}
  - {type: lut, name: ta, function: tanh, input_quantizer: {i: 2, f: 3}, output_quantizer: {i: 1, f: 5}}
  - {type: conv1d, name: b, inputs: q, filters: 2, kernel_size: 5, padding: same}
  - {type: lut, name: tb, function: tanh, input_quantizer: {i: 2, f: 3}, output_quantizer: {i: 1, f: 5}}
  - {type: add, inputs: [ta, tb]}
  - {type: flatten}
  - {type: dense, units: 6, batchnorm: true, activation: relu}
  - {type: lut, function: sigmoid, input_quantizer: {i: 3, f: 3}}
  - {type: dense, units: 1}
)";

// Two table softmaxes: one over the rows of a reshaped dense output, one at the model output.
const char* kSoftmaxYaml = R"(
input_shape: [12]
layers:
  - {type: dense, units: 8}
  - {type: reshape, shape: [2, 4]}
  - {type: softmax, name: rows, exp_input_quantizer: {i: 2, f: 4}, inv_output_quantizer: {f: 6}}
  - {type: flatten}
  - {type: dense, units: 5}
  - {type: softmax, name: probs}
)";

// A Deep Sets model on a particle list [6, 3]: per-particle dense layers (one kernel for every
// particle), mean (over 6, not a power of two: the sum times 1/6 at 5 significant bits), max and
// sum over the particles, the mean added back onto every particle (broadcast, as JEDI-linear does)
// and pooled again, dense layers on the pooled features. Datalane widths per feature, shared
// across particles (granularity channel).
const char* kDeepSetsYaml = R"(
input_shape: [6, 3]
quantizer_defaults:
  datalane: {granularity: channel}
layers:
  - {type: quantize, name: q, input_quantizer: {i: 2, f: 4}}
  - {type: dense, name: phi1, units: 6, activation: relu}
  - {type: dense, name: phi2, units: 6, batchnorm: true, activation: relu, output_quantizer: {f: 3}}
  - {type: global_avg_pool, name: mean, scale_bits: 5}
  - {type: global_max_pool, name: max, inputs: [phi1]}
  - {type: global_sum_pool, name: sum, inputs: [phi2]}
  - {type: add, name: bcast, inputs: [phi2, mean], activation: relu, output_quantizer: {f: 3}}
  - {type: global_max_pool, name: bmax}
  - {type: concatenate, name: pooled, inputs: [mean, max, sum, bmax]}
  - {type: dense, name: rho, units: 4, activation: relu}
  - {type: dense, name: out, units: 3}
)";

// A transformer on a particle list [4, 3]: an embedding, two attention blocks (products of two
// activations, the softmax with its 1 / sqrt(key_dim) scale) with residual adds, an einsum over
// the particles (sum_p x[p, c] e[p, d], permutation invariant), a mean and a dense head.
const char* kTransformerYaml = R"(
input_shape: [4, 3]
quantizer_defaults:
  datalane: {granularity: channel}
layers:
  - {type: quantize, name: q, input_quantizer: {i: 2, f: 4}}
  - {type: dense, name: embed, units: 4, activation: relu}
  - {type: attention, name: mha1, num_heads: 2, key_dim: 2}
  - {type: add, name: res1, inputs: [embed, mha1]}
  - {type: attention, name: mha2, num_heads: 1, key_dim: 3, value_dim: 2, use_bias: false}
  - {type: add, name: res2, inputs: [res1, mha2], activation: relu, output_quantizer: {f: 3}}
  - {type: einsum, name: gram, inputs: [res2, embed], equation: "pc,pd->cd"}
  - {type: global_avg_pool, name: mean, inputs: [res2]}
  - {type: global_max_pool, name: gmax, inputs: [gram]}
  - {type: concatenate, name: pooled, inputs: [mean, gmax]}
  - {type: dense, name: out, units: 3}
)";

// A Linformer block on [8, 3]: keys and values projected along the particle axis to 4 rows
// (einsum_dense phd,pj->jhd) before the scores [heads, 8, 4]; then a sum over the particles.
const char* kLinformerYaml = R"(
input_shape: [8, 3]
layers:
  - {type: quantize, name: q, input_quantizer: {i: 2, f: 4}}
  - {type: dense, name: embed, units: 4, activation: relu}
  - {type: linformer_attention, name: lin, num_heads: 2, key_dim: 2, projected_length: 4}
  - {type: add, name: res, inputs: [embed, lin], activation: relu}
  - {type: global_sum_pool, name: sum}
  - {type: dense, name: out, units: 3}
)";

// Two lut_dense blocks (HGQ-LUT: a learned table per connection, summed): the first on the model
// input (quantized once, then fanned out), with a tanh hidden layer; the second without one.
const char* kLutDenseYaml = R"(
input_shape: [6]
layers:
  - {type: lut_dense, name: h1, units: 4, activation: relu, input_quantizer: {i: 2, f: 2}}
  - {type: lut_dense, name: h2, units: 3, hidden_layers: 0, input_quantizer: {i: 3, f: 1}, table_quantizer: {f: 5}}
  - {type: dense, name: out, units: 2}
)";

// Trains a few steps (moving statistics, scattered bit widths), then eval.
void shake(model::HGQModel& m, const std::vector<int64_t>& in_shape, uint64_t seed) {
  torch::manual_seed(seed);
  {
    torch::NoGradGuard no_grad;
    for (auto& [layer, nq] : m->quantizers()) {
      auto& q = nq.quantizer;
      if (q->f.defined()) q->f.add_(torch::randint(-2, 3, q->f.sizes()).to(torch::kFloat) + 0.3);
      if (q->b.defined()) q->b.add_(torch::randint(-3, 2, q->b.sizes()).to(torch::kFloat) - 0.2);
    }
  }
  m->train();
  torch::optim::Adam opt(m->parameters(), torch::optim::AdamOptions(1e-2));
  std::vector<int64_t> shape{64};
  shape.insert(shape.end(), in_shape.begin(), in_shape.end());
  for (int step = 0; step < 5; ++step) {
    auto y = m->forward(torch::randn(shape) * 1.5);
    auto loss = y.pow(2).mean() + 1e-6 * m->ebops();
    opt.zero_grad();
    loss.backward();
    opt.step();
    m->constrain();
  }
  m->eval();
}

int64_t mismatches(model::HGQModel& m, const archive::Archive& a, const torch::Tensor& x,
                   archive::EmulatorStats* stats) {
  archive::Emulator emu(a);
  const auto ref = model::forward_float64(m, x).contiguous();
  auto xd = x.to(torch::kDouble).contiguous();
  std::vector<double> xv(xd.data_ptr<double>(), xd.data_ptr<double>() + xd.numel());
  const auto y = emu.run_batch(xv, x.size(0), stats);
  const double* r = ref.data_ptr<double>();
  int64_t bad = 0;
  for (size_t n = 0; n < y.size(); ++n) bad += y[n] != r[n];
  return bad;
}
}  // namespace

class GraphBridge : public ::testing::TestWithParam<int> {};

TEST_P(GraphBridge, TraceThenEmulatorEqualsFloat64Forward) {
  const char* yamls[] = {kCnnYaml,      kConv1dYaml,      kLutYaml,       kSoftmaxYaml,
                         kDeepSetsYaml, kTransformerYaml, kLinformerYaml, kLutDenseYaml};
  const bool learned_tables = GetParam() % 8 == 7;
  auto spec = config::parse_model_yaml(yamls[GetParam() % 8], "graph test");
  model::HGQModel m(spec);
  shake(m, spec.input_shape, GetParam());
  std::vector<int64_t> shape{1500};
  shape.insert(shape.end(), spec.input_shape.begin(), spec.input_shape.end());
  auto x = torch::randn(shape) * 1.5;
  const auto r = model::trace(m, x);
  EXPECT_GT(r.exact_ebops, 0);
  auto a = model::to_archive(m);
  // Every model layer has its archive layer; the graph survives.
  ASSERT_EQ(a.layers.size(), m->layers().size());
  archive::EmulatorStats stats;
  EXPECT_EQ(mismatches(m, a, x, &stats), 0);
  EXPECT_EQ(stats.wrapped, 0);
  archive::EmulatorStats big;
  EXPECT_EQ(mismatches(m, a, torch::randn(shape) * 12, &big), 0);
  EXPECT_GT(big.wrapped + big.saturated, 0);
  // Exact EBOPs of the archive are those the trace reported.
  double e = 0;
  for (double v : archive::exact_ebops(a)) e += v;
  EXPECT_EQ(e, r.exact_ebops);

  // The rebuilt model: for learned tables it looks the archive's tables up, and those equal the
  // trained functions evaluated in float64.
  auto back = model::from_archive(a);
  EXPECT_TRUE(torch::equal(model::forward_float64(m, x), model::forward_float64(back, x)));
  torch::NoGradGuard no_grad;
  // (The float32 forward of learned functions may round differently from their float64 tables
  // at a quantization boundary; the rebuilt model's float32 forward is the tables'.)
  if (!learned_tables) {
    EXPECT_TRUE(torch::equal(m->forward(x), back->forward(x)));
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, GraphBridge, ::testing::Range(1, 17));

TEST(GraphModel, ScaledMeanRoundTripsAndMismatchesAreErrors) {
  // The mean over 6 particles at 5 scale bits is written to the archive (scale_bits 5; 1/6:
  // round(2^7 / 6) = 21 at 2^-7) and must agree with model_yaml when the model is rebuilt.
  auto spec = config::parse_model_yaml(kDeepSetsYaml, "sets");
  model::HGQModel m(spec);
  shake(m, spec.input_shape, 5);
  model::trace(m, torch::randn({300, 6, 3}));
  auto a = model::to_archive(m);
  archive::Layer* mean = nullptr;
  for (auto& l : a.layers)
    if (l.name == "mean") mean = &l;
  ASSERT_NE(mean, nullptr);
  EXPECT_EQ(mean->scale_bits, 5);
  const archive::PoolMap pm = archive::pool_map(*mean);
  EXPECT_EQ(pm.mult, 21);
  EXPECT_EQ(pm.shift, 7);
  EXPECT_NO_THROW(model::from_archive(a));
  mean->scale_bits = 6;
  try {
    model::from_archive(a);
    ADD_FAILURE() << "no error";
  } catch (const archive::ArchiveError& e) {
    EXPECT_NE(std::string(e.what()).find("scale_bits 6 in the archive, 5 in model_yaml"),
              std::string::npos)
        << e.what();
  }
}

class ParticleModels : public ::testing::TestWithParam<int> {};

TEST_P(ParticleModels, ArePermutationInvariantInTheEmulator) {
  // Permuting the particles of an input gives bit-identical outputs (Deep Sets; a transformer:
  // attention is permutation equivariant, the mean invariant).
  const bool transformer = GetParam() == 1;
  auto spec = config::parse_model_yaml(transformer ? kTransformerYaml : kDeepSetsYaml, "sets");
  model::HGQModel m(spec);
  shake(m, spec.input_shape, 21);
  const int64_t P = spec.input_shape[0];
  auto x = torch::randn({400, P, 3}) * 1.5;
  model::trace(m, x);
  const auto a = model::to_archive(m);
  archive::Emulator emu(a);
  auto run = [&](const torch::Tensor& t) {
    auto xd = t.to(torch::kDouble).contiguous();
    std::vector<double> xv(xd.data_ptr<double>(), xd.data_ptr<double>() + xd.numel());
    return emu.run_batch(xv, t.size(0));
  };
  const auto y = run(x);
  for (int n = 0; n < 3; ++n) {
    auto perm = torch::randperm(P);
    EXPECT_EQ(run(x.index_select(1, perm)), y) << "permutation " << n;
  }
  // The float64 reference agrees too (and differs for a model input that is not a permutation).
  EXPECT_EQ(mismatches(m, a, x, nullptr), 0);
}
INSTANTIATE_TEST_SUITE_P(GraphModel, ParticleModels, ::testing::Values(0, 1),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::string(info.param == 0 ? "DeepSets" : "Transformer");
                         });

TEST(GraphModel, AttentionOnTheModelInputQuantizesItOnce) {
  // The three projections read one quantize layer, so the hardware's input is one quantizer's.
  auto spec = config::parse_model_yaml(R"(
input_shape: [4, 3]
layers:
  - {type: attention, name: mha, num_heads: 1, key_dim: 2}
  - {type: global_sum_pool}
)",
                                       "t");
  model::HGQModel m(spec);
  ASSERT_EQ(m->layers()[0].name, "mha_in");
  EXPECT_EQ(m->layers()[0].layer->type_name(), "quantize");
  for (size_t n = 1; n <= 3; ++n) EXPECT_EQ(m->layers()[n].inputs, std::vector<int64_t>{0});
  EXPECT_EQ(m->output_shape(), (std::vector<int64_t>{3}));  // units: the input's 3 features
  shake(m, spec.input_shape, 5);
  model::trace(m, torch::randn({200, 4, 3}));
  const auto a = model::to_archive(m);
  EXPECT_NO_THROW(netlist::lower(a));
}

TEST(GraphModel, ConfigErrorsNameTheLayer) {
  auto expect_error = [](const std::string& yaml, const std::string& part) {
    try {
      model::HGQModel m(config::parse_model_yaml(yaml, "t"));
      ADD_FAILURE() << "no error, expected '" << part << "'";
    } catch (const config::ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect_error(R"(
input_shape: [4]
layers:
  - {type: quantize}
  - {type: add, inputs: [quantize_0, later]}
  - {type: dense, name: later, units: 4}
)",
               "'later' comes later");
  expect_error(R"(
input_shape: [4]
layers:
  - {type: quantize}
  - {type: dense, inputs: nowhere, units: 4}
)",
               "'nowhere' is not the name of a layer");
  expect_error(R"(
input_shape: [4]
layers:
  - {type: softmax, exp_output_quantizer: {granularity: element}}
)",
               "softmax: exp_output_quantizer has one type for the whole layer");
  expect_error(
      R"(
input_shape: [4]
layers:
  - {type: dense, units: 3, exp_input_quantizer: {f: 2}}
)",
      "allowed quantizers: input_quantizer, kernel_quantizer, bias_quantizer, output_quantizer");
  expect_error(R"(
input_shape: [28, 28]
layers:
  - {type: conv2d, filters: 4, kernel_size: 3}
)",
               "add {type: reshape, shape: [28, 28, 1]} before it");
  expect_error(R"(
input_shape: [6, 6, 1]
layers:
  - {type: avg_pool, pool_size: 3, scale_bits: 20}
)",
               "layers[0].scale_bits");
  expect_error(R"(
input_shape: [6, 6, 1]
layers:
  - {type: max_pool, pool_size: 3, scale_bits: 4}
)",
               "only avg_pool and global_avg_pool layers have it");
  expect_error(R"(
input_shape: [4]
layers:
  - {type: quantize, name: a}
  - {type: dense, name: b, units: 3, inputs: input}
  - {type: add, inputs: [a, b]}
)",
               "model.layers[2]");
  // Products of two activations whose shared axes disagree: the equation, the axis, both shapes.
  expect_error(R"(
input_shape: [4, 3]
layers:
  - {type: quantize, name: q}
  - {type: dense, name: a, units: 2}
  - {type: einsum, name: e, inputs: [q, a], equation: "pc,pc->p"}
)",
               "model.layers[2] 'e' (line 6).equation: einsum pc,pc->p: axis 'c' is 3 in operand "
               "a [4, 3] but 2 in operand b [4, 2]");
  expect_error(R"(
input_shape: [4, 3]
layers:
  - {type: einsum, inputs: [input], equation: "pc,pc->p"}
)",
               "a list of two layer names");
  expect_error(R"(
input_shape: [4, 3]
layers:
  - {type: einsum, inputs: [input, input], equation: "pc,pd->p"}
)",
               "layers[0].equation: einsum equation 'pc,pd->p': axis 'c' is summed over "
               "but appears in one operand only");
  expect_error(R"(
input_shape: [4, 3]
layers:
  - {type: einsum, inputs: [input, input], equation: "pc,pc->p"}
)",
               "model.layers[0] 'einsum_0' (line 4).inputs: an einsum multiplies quantized "
               "activations, not the raw model input; put a quantize layer before it");
  expect_error(R"(
input_shape: [12]
layers:
  - {type: dense, units: 4}
  - {type: attention, name: mha, num_heads: 2, key_dim: 2}
)",
               "model.layers[1] 'mha_q' (line 5): an attention block reads particle lists [P, C], "
               "got [4]");
  // After a block, errors name the YAML's index (what --set takes), not the expanded one.
  expect_error(R"(
input_shape: [4, 3]
layers:
  - {type: dense, name: embed, units: 4}
  - {type: attention, name: mha, num_heads: 2, key_dim: 2}
  - {type: einsum, name: e, inputs: [mha, embed], equation: "pc,pd->cd"}
  - {type: dense, units: 2, inputs: [nowhere]}
)",
               "model.layers[3] 'dense_3' (line 7).inputs: 'nowhere'");
  expect_error(R"(
input_shape: [4, 3]
layers:
  - {type: attention, num_heads: 0, key_dim: 2}
)",
               "layers[0].num_heads");
  expect_error(R"(
input_shape: [4, 3]
layers:
  - {type: attention, num_heads: 2}
)",
               "layers[0].key_dim");
  expect_error(R"(
input_shape: [4, 3]
layers:
  - {type: dense, name: mha_q, units: 2}
  - {type: attention, name: mha, num_heads: 2, key_dim: 2}
)",
               "expected a unique layer name, got 'mha_q'");
  // A layer too large to allocate: one line from LibTorch's message, no backtrace.
  try {
    model::HGQModel m(config::parse_model_yaml(R"(
input_shape: [32, 5]
layers:
  - {type: dense, units: 10000000000}
)",
                                               "t"));
    ADD_FAILURE() << "no error for a 200 GB kernel";
  } catch (const config::ConfigError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("model.layers[0] 'dense_0' (line 4): cannot build the layer: "
                       "DefaultCPUAllocator: can't allocate memory"),
              std::string::npos)
        << msg;
    EXPECT_EQ(msg.find("frame #"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  // An aggregation over a particle axis the input does not have.
  expect_error(R"(
input_shape: [8, 3]
layers:
  - {type: dense, units: 4}
  - {type: global_avg_pool}
  - {type: global_sum_pool}
)",
               "model.layers[2] 'global_sum_pool_2' (line 6): global_sum_pool needs a per-sample "
               "input [length, channels] or [height, width, channels], got [4]");
  // A pooled [4] broadcasts onto a [8, 4] list, not onto the [8, 3] input.
  expect_error(R"(
input_shape: [8, 3]
layers:
  - {type: quantize, name: q}
  - {type: dense, units: 4}
  - {type: global_avg_pool, name: pooled}
  - {type: add, inputs: [q, pooled]}
)",
               "model.layers[3] 'add_3' (line 7): add needs inputs whose shapes broadcast (numpy "
               "rules, from the last axis), got [8, 3], [4]");
}
