// Model -> archive -> emulator / model: bit-exact against the float64 eval forward; the trace.
#include "hgqt/model/archive_bridge.h"

#include <gtest/gtest.h>

#include "hgqt/archive/emulator.h"

using namespace hgqt;

namespace {
config::ModelSpec bridge_spec() {
  return config::parse_model_yaml(R"(
input_shape: [3, 4]
quantizer_defaults:
  weight: {b: 5}
layers:
  - {type: quantize, input_quantizer: {i: 2, f: 4, round: TRN}}
  - {type: flatten}
  - {type: dense, units: 9, activation: relu, input_quantizer: {f: 3}, kernel_quantizer: {granularity: channel}}
  - {type: dense, units: 7, activation: linear, bias_quantizer: {round: RND_CONV}}
  - {type: activation, activation: relu, output_quantizer: {f: 2, overflow: SAT}}
  - {type: dense, units: 6, activation: relu, output_quantizer: {i: 3, f: 3}}
  - {type: dense, units: 4, input_quantizer: {granularity: tensor, f: 5}}
)",
                                  "bridge test");
}

// Scatters every bit parameter and weight so that widths differ per element, with some pruned.
void randomize(model::HGQModel& m, uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  for (auto& [layer, nq] : m->quantizers()) {
    auto& q = nq.quantizer;
    if (q->f.defined()) q->f.add_(torch::randint(-3, 3, q->f.sizes()).to(torch::kFloat) + 0.3);
    if (q->b.defined()) q->b.add_(torch::randint(-4, 2, q->b.sizes()).to(torch::kFloat) - 0.2);
    q->i.add_(torch::randint(-2, 2, q->i.sizes()).to(torch::kFloat));
  }
  for (auto& e : m->layers())
    if (auto* d = dynamic_cast<nn::QDenseImpl*>(e.module.get())) {
      d->kernel.normal_(0, 0.6);
      d->bias.normal_(0, 0.3);
    }
}

void expect_emulator_matches(model::HGQModel& m, const archive::Archive& a, const torch::Tensor& x,
                             archive::EmulatorStats* stats) {
  archive::Emulator emu(a);
  const auto ref = model::forward_float64(m, x).contiguous();
  auto xd = x.to(torch::kDouble).contiguous();
  std::vector<double> xv(xd.data_ptr<double>(), xd.data_ptr<double>() + xd.numel());
  const auto y = emu.run_batch(xv, x.size(0), stats);
  const double* r = ref.data_ptr<double>();
  int64_t mismatches = 0;
  for (size_t n = 0; n < y.size(); ++n) mismatches += y[n] != r[n];
  EXPECT_EQ(mismatches, 0) << "of " << y.size() << " outputs";
}
}  // namespace

TEST(ArchiveBridge, TraceThenEmulatorEqualsFloat64ForwardBitForBit) {
  for (uint64_t seed : {1, 2, 3}) {
    model::HGQModel m(bridge_spec());
    randomize(m, seed);
    auto x = torch::randn({2000, 3, 4}) * 1.5;
    const auto r = model::trace(m, x);
    EXPECT_EQ(r.samples, 2000);
    EXPECT_EQ(r.quantizers, 7);  // quantize, four dense inputs, the activation, one dense output
    EXPECT_GT(r.exact_ebops, 0);
    EXPECT_LE(r.passes, r.quantizers + 2);
    auto a = model::to_archive(m);
    archive::EmulatorStats stats;
    expect_emulator_matches(m, a, x, &stats);
    // After the trace no calibration input overflows a WRAP quantizer.
    EXPECT_EQ(stats.wrapped, 0) << "seed " << seed;
    // Inputs beyond the calibration range wrap and saturate, still bit-exact.
    archive::EmulatorStats big;
    expect_emulator_matches(m, a, torch::randn({2000, 3, 4}) * 12, &big);
    EXPECT_GT(big.wrapped, 0);
  }
}

TEST(ArchiveBridge, TraceSetsMinimalSignAndIntegerBits) {
  auto spec = config::parse_model_yaml(R"(
input_shape: [3]
layers:
  - {type: quantize, input_quantizer: {i: 6, f: 2}}
  - {type: dense, units: 1, input_quantizer: {i: 6, f: 2, granularity: tensor}}
)",
                                       "t");
  model::HGQModel m(spec);
  // Element 0 sees [0, 2.75] -> unsigned, i = 2; element 1 sees [-3, 0.5] -> signed, i = 2;
  // element 2 is always 0 -> pruned (W = 0).
  auto x = torch::tensor({{0.0f, -3.0f, 0.0f}, {2.75f, 0.5f, 0.0f}, {1.0f, -1.0f, 0.0f}});
  model::trace(m, x);
  auto* q = dynamic_cast<nn::QuantizeImpl*>(m->layers()[0].layer);
  auto [k, i, f] = q->q->kif();
  EXPECT_TRUE(torch::equal(k, torch::tensor({0.0f, 1.0f, 0.0f})));
  EXPECT_TRUE(torch::equal(i, torch::tensor({2.0f, 2.0f, -2.0f})));
  // The tensor-granular dense input takes the union: signed, [-3, 2.75] -> i = 2.
  auto* d = dynamic_cast<nn::QDenseImpl*>(m->layers()[1].layer);
  auto [k2, i2, f2] = d->iq->kif();
  EXPECT_EQ(k2.item<float>(), 1.0f);
  EXPECT_EQ(i2.item<float>(), 2.0f);
}

TEST(ArchiveBridge, FromArchiveRebuildsAModelWithEqualOutputs) {
  model::HGQModel m(bridge_spec());
  randomize(m, 7);
  auto x = torch::randn({500, 3, 4}) * 2;
  model::trace(m, x);
  auto a = model::to_archive(m);
  auto back = model::from_archive(a);
  EXPECT_TRUE(torch::equal(model::forward_float64(m, x), model::forward_float64(back, x)));
  m->eval();
  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(m->forward(x), back->forward(x)));
}

TEST(ArchiveBridge, TraceRejectsNonFiniteCalibrationData) {
  model::HGQModel m(bridge_spec());
  auto x = torch::randn({10, 3, 4});
  x[3][1][2] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(model::trace(m, x), std::invalid_argument);
}
