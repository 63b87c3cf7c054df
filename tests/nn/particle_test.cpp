// Layers on particle lists [P, F]: the per-particle dense layer (one kernel at every position)
// against an independent LibTorch float reference, EBOPs by hand, the channel granularity shared
// across particles, one training step.
#include <gtest/gtest.h>

#include "hgqt/nn/batchnorm.h"
#include "hgqt/nn/layers.h"
#include "hgqt/nn/merge.h"
#include "hgqt/nn/pool.h"
#include "support/nn_values.h"

using namespace hgqt;
using namespace hgqt::quant;
using hgqt::testing::grid_rand;
using hgqt::testing::wide_quantizer;

TEST(PerParticleDense, FloatBehaviourMatchesEinsum) {
  torch::manual_seed(11);
  auto o = nn::QDenseOptions(3, 4).input_shape({5, 3}).activation(nn::Activation::ReLU);
  o.input_quantizer(wide_quantizer({5, 3}))
      .kernel_quantizer(wide_quantizer({3, 4}))
      .bias_quantizer(wide_quantizer({4}));
  nn::QDense d(o);
  {
    torch::NoGradGuard g;
    d->kernel.copy_(grid_rand({3, 4}, 2));
    d->bias.copy_(grid_rand({4}, 1));
  }
  auto x = grid_rand({7, 5, 3}, 4);
  // The reference: an independent per-position product, y[b, p, o] = sum_f x[b, p, f] W[f, o] + b.
  auto ref = torch::relu(torch::einsum("bpf,fo->bpo", {x, d->kernel}) + d->bias);
  for (bool training : {false, true}) {
    d->train(training);
    SCOPED_TRACE(training ? "train" : "eval");
    auto y = d->forward(x);
    ASSERT_EQ(y.sizes().vec(), (std::vector<int64_t>{7, 5, 4}));
    EXPECT_TRUE(torch::equal(y, ref));
  }
  EXPECT_EQ(d->output_shape({5, 3}), (std::vector<int64_t>{5, 4}));
  EXPECT_THROW(d->output_shape({4, 3}), std::invalid_argument);
  EXPECT_THROW(nn::QDense(nn::QDenseOptions(3, 4).input_shape({5, 2})), std::invalid_argument);
}

TEST(PerParticleDense, EbopsByHand) {
  // Input [2, 2] bits 1, 2 / 3, 4 (per element); kernel [2, 1] bits 2, 3.
  // Position 0: 1*2 + 2*3 = 8; position 1: 3*2 + 4*3 = 18; bias 4 bits x 2 positions = 8. Total 34.
  nn::QDense d(nn::QDenseOptions(2, 1).input_shape({2, 2}).input_quantizer(
      QuantizerOptions({2, 2}).granularity(Granularity::Element)));
  torch::NoGradGuard g;
  d->iq->i.fill_(0);
  d->iq->f.copy_(torch::tensor({{1., 2.}, {3., 4.}}));
  d->kq->b.copy_(torch::tensor({{2.}, {3.}}));
  d->bq->i.fill_(1);
  d->bq->f.fill_(3);
  EXPECT_DOUBLE_EQ(d->ebops().item<double>(), 34.0);
  // A flat dense layer of the same weights at one position: 1*2 + 2*3 + 4 = 12.
  nn::QDense flat(nn::QDenseOptions(2, 1));
  flat->iq->i.fill_(0);
  flat->iq->f.copy_(torch::tensor({1., 2.}));
  flat->kq->b.copy_(torch::tensor({{2.}, {3.}}));
  flat->bq->i.fill_(1);
  flat->bq->f.fill_(3);
  EXPECT_DOUBLE_EQ(flat->ebops().item<double>(), 12.0);
}

TEST(PerParticleDense, ChannelGranularityIsSharedAcrossParticles) {
  // One width per feature: permuting the particles permutes the outputs, bit for bit.
  torch::manual_seed(12);
  auto chan = QuantizerOptions({6, 3}).granularity(Granularity::Channel).f(3).i(2);
  nn::QDense d(nn::QDenseOptions(3, 5).input_shape({6, 3}).input_quantizer(chan).output_quantizer(
      QuantizerOptions({6, 5}).granularity(Granularity::Channel).f(2).i(3)));
  EXPECT_EQ(d->iq->f.sizes().vec(), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(d->oq->f.sizes().vec(), (std::vector<int64_t>{1, 5}));
  d->eval();
  auto x = torch::randn({4, 6, 3}) * 2;
  auto perm = torch::randperm(6);
  torch::NoGradGuard g;
  EXPECT_TRUE(
      torch::equal(d->forward(x).index_select(1, perm), d->forward(x.index_select(1, perm))));
}

TEST(PerParticleDense, OneTrainingStepMovesWeightsAndBits) {
  torch::manual_seed(13);
  for (bool bn : {false, true}) {
    SCOPED_TRACE(bn ? "dense_bn" : "dense");
    std::shared_ptr<torch::nn::Module> m;
    nn::QLayer* layer = nullptr;
    if (bn) {
      nn::QDenseBatchNorm d(nn::QDenseBatchNormOptions(3, 4).input_shape({6, 3}));
      m = d.ptr();
      layer = d.get();
    } else {
      nn::QDense d(nn::QDenseOptions(3, 4).input_shape({6, 3}));
      m = d.ptr();
      layer = d.get();
    }
    m->train();
    auto params = m->named_parameters();
    {
      torch::NoGradGuard g;
      params["bias"].uniform_(-0.3, 0.3);
    }
    auto x = torch::randn({16, 6, 3});
    auto y = layer->forward(x);
    ASSERT_EQ(y.sizes().vec(), (std::vector<int64_t>{16, 6, 4}));
    auto loss = (y - 0.5).square().mean() + 1e-4 * layer->ebops();
    loss.backward();
    std::map<std::string, torch::Tensor> before;
    for (const auto& p : params) before[p.key()] = p.value().detach().clone();
    torch::optim::Adam opt(m->parameters(), torch::optim::AdamOptions(1e-2));
    opt.step();
    for (const char* name : {"kernel", "iq.f", "kq.b"}) {
      SCOPED_TRACE(name);
      ASSERT_TRUE(params.contains(name));
      EXPECT_FALSE(torch::equal(before[name], params[name].detach()));
    }
  }
}

TEST(PerParticleDense, BatchNormStatisticsArePerFeatureOverParticles) {
  // In eval the folded layer equals the float formula with the moving statistics.
  torch::manual_seed(14);
  auto o = nn::QDenseBatchNormOptions(3, 2).input_shape({4, 3});
  o.input_quantizer(wide_quantizer({4, 3}))
      .kernel_quantizer(wide_quantizer({3, 2}))
      .bias_quantizer(wide_quantizer({2}));
  nn::QDenseBatchNorm d(o);
  d->train();
  d->forward(torch::randn({32, 4, 3}));
  EXPECT_EQ(d->moving_mean.sizes().vec(), (std::vector<int64_t>{2}));
  d->eval();
  auto x = grid_rand({5, 4, 3}, 2);
  auto [wf, bf] = d->folded(true);
  torch::NoGradGuard g;
  auto ref = torch::einsum("bpf,fo->bpo", {x, d->kq->apply_eval(wf)}) + d->bq->apply_eval(bf);
  EXPECT_TRUE(torch::allclose(d->forward(x), ref, 1e-6, 1e-6));
}

TEST(ParticleAggregation, SumPoolsAreExactSumsOfAnyWindow) {
  // Written out by loops, independently of the layer: windowed sums of 3 (not a power of two)
  // along a particle list [7, 2] with stride 2, and the global sum over all 7 particles.
  torch::manual_seed(15);
  auto x = grid_rand({3, 7, 2}, 4).to(torch::kDouble);
  nn::SumPool windowed(nn::PoolOptions({3}).strides({2}));
  nn::SumPool global(nn::PoolOptions().global_pool(true));
  EXPECT_EQ(windowed->type_name(), "sum_pool");
  EXPECT_EQ(global->type_name(), "global_sum_pool");
  auto y = windowed->forward(x);
  auto g = global->forward(x);
  ASSERT_EQ(y.sizes().vec(), (std::vector<int64_t>{3, 3, 2}));
  ASSERT_EQ(g.sizes().vec(), (std::vector<int64_t>{3, 2}));
  for (int64_t b = 0; b < 3; ++b)
    for (int64_t c = 0; c < 2; ++c) {
      double total = 0;
      for (int64_t p = 0; p < 7; ++p) total += x[b][p][c].item<double>();
      EXPECT_EQ(g[b][c].item<double>(), total);
      for (int64_t o = 0; o < 3; ++o) {
        double s = 0;
        for (int64_t k = 0; k < 3; ++k) s += x[b][o * 2 + k][c].item<double>();
        EXPECT_EQ(y[b][o][c].item<double>(), s);
      }
    }
  // Permuting the particles leaves the global sum unchanged.
  auto perm = torch::randperm(7);
  EXPECT_TRUE(torch::equal(global->forward(x.index_select(1, perm)), g));
}

TEST(ParticleAggregation, AddBroadcastsAPooledVectorOntoEveryParticle) {
  // JEDI-linear style: y[b, p, c] = x[b, p, c] + g[b, c], against explicit loops.
  torch::manual_seed(16);
  nn::QAdd add(nn::QAddOptions().activation(nn::Activation::ReLU));
  auto x = grid_rand({2, 5, 3}, 2), g = grid_rand({2, 3}, 2);
  EXPECT_EQ(add->output_shape_many({{5, 3}, {3}}), (std::vector<int64_t>{5, 3}));
  auto y = add->forward_many({x, g});
  ASSERT_EQ(y.sizes().vec(), (std::vector<int64_t>{2, 5, 3}));
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t p = 0; p < 5; ++p)
      for (int64_t c = 0; c < 3; ++c)
        EXPECT_EQ(y[b][p][c].item<float>(),
                  std::max(0.f, x[b][p][c].item<float>() + g[b][c].item<float>()));
  // The order of the inputs does not matter; shapes that do not broadcast are an error.
  EXPECT_TRUE(torch::equal(add->forward_many({g, x}), y));
  EXPECT_THROW(add->output_shape_many({{5, 3}, {4}}), std::invalid_argument);
}
