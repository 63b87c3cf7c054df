// Batch norm: folded dense / conv layers against unfused layer -> torch::batch_norm (training and
// eval, moving statistics, gradients), stand-alone QBatchNorm, EBOPs, one training step.
#include "hgqt/nn/batchnorm.h"

#include <gtest/gtest.h>

#include <functional>

#include "hgqt/nn/layers.h"
#include "support/nn_values.h"

using namespace hgqt;
using namespace hgqt::quant;
using hgqt::testing::grid_rand;
using hgqt::testing::tf_pad;
using hgqt::testing::wide_quantizer;

namespace {
constexpr double kEps = 1e-3;
constexpr double kMomentum = 0.99;

// Folded constants W_f, b_f are not on any grid: a fine quantizer (step 2^-21, range +-4) keeps
// the rounding error below 2.4e-7 per constant, so outputs stay within 1e-5 of the float reference.
QuantizerOptions fine() {
  return QuantizerOptions({1})
      .param(Parameterization::KIF)
      .k(1)
      .i(2)
      .f(21)
      .overflow(OverflowMode::SAT);
}

torch::Tensor ref_conv2d(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                         std::vector<int64_t> s, bool same) {
  auto [hb, ha] = tf_pad(x.size(1), w.size(0), s[0], same);
  auto [wb, wa] = tf_pad(x.size(2), w.size(1), s[1], same);
  auto xc = torch::constant_pad_nd(x.permute({0, 3, 1, 2}), {wb, wa, hb, ha}, 0);
  return torch::conv2d(xc, w.permute({3, 2, 0, 1}), b, s).permute({0, 2, 3, 1});
}

torch::Tensor ref_conv1d(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                         int64_t s, bool same) {
  auto [lb, la] = tf_pad(x.size(1), w.size(0), s, same);
  auto xc = torch::constant_pad_nd(x.permute({0, 2, 1}), {lb, la}, 0);
  return torch::conv1d(xc, w.permute({2, 1, 0}), b, s).permute({0, 2, 1});
}

// torch::batch_norm over every axis but the last (channels-last data).
torch::Tensor ref_bn(const torch::Tensor& z, const torch::Tensor& gamma, const torch::Tensor& beta,
                     const torch::Tensor& mean, const torch::Tensor& var, bool training) {
  const int64_t c = z.size(-1);
  auto y =
      torch::batch_norm(z.reshape({-1, c}), gamma, beta, mean, var, training, 0.0, kEps, false);
  return y.reshape(z.sizes());
}

// Per-channel batch mean and biased variance.
std::pair<torch::Tensor, torch::Tensor> moments(const torch::Tensor& z) {
  auto zz = z.reshape({-1, z.size(-1)});
  return {zz.mean(0), zz.var(0, /*unbiased=*/false)};
}

// Drives a folded layer L for three training batches and one eval batch, checking the output,
// the moving statistics and folded() against unfused -> torch::batch_norm. `unfused(x, W, b)` is
// the float layer; `make_x()` draws a batch.
template <class L>
void check_folded(L& l, const std::function<torch::Tensor()>& make_x,
                  const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&,
                                                    const torch::Tensor&)>& unfused) {
  {
    torch::NoGradGuard g;
    l->kernel.copy_(grid_rand(l->kernel.sizes().vec(), 0.5));
    l->bias.copy_(grid_rand(l->bias.sizes().vec(), 0.5));
    l->gamma.uniform_(0.5, 1.5);
    l->beta.uniform_(-0.5, 0.5);
  }
  auto W = l->kernel.detach(), b = l->bias.detach();
  auto gamma = l->gamma.detach(), beta = l->beta.detach();
  auto mm = torch::zeros_like(gamma), mv = torch::ones_like(gamma);
  l->train();
  for (int step = 0; step < 3; ++step) {
    SCOPED_TRACE("training step " + std::to_string(step));
    auto x = make_x();
    auto z = unfused(x, W, b);
    auto expect = ref_bn(z, gamma, beta, {}, {}, true);
    auto y = l->forward(x);
    ASSERT_EQ(y.sizes(), expect.sizes());
    EXPECT_TRUE(torch::allclose(y, expect, 0, 1e-5)) << (y - expect).abs().max();
    auto [mu, var] = moments(z);
    mm = kMomentum * mm + (1 - kMomentum) * mu;
    mv = kMomentum * mv + (1 - kMomentum) * var;
    EXPECT_TRUE(torch::allclose(l->moving_mean, mm, 0, 1e-6)) << l->moving_mean << mm;
    EXPECT_TRUE(torch::allclose(l->moving_var, mv, 0, 1e-6)) << l->moving_var << mv;
    // The float folding with the batch statistics reproduces the reference too.
    auto [wf, bf] = l->folded(false);
    EXPECT_TRUE(torch::allclose(unfused(x, wf, bf), expect, 0, 1e-5));
  }
  l->eval();
  auto x = make_x();
  auto expect = ref_bn(unfused(x, W, b), gamma, beta, mm, mv, false);
  auto y = l->forward(x);
  EXPECT_TRUE(torch::allclose(y, expect, 0, 1e-5)) << (y - expect).abs().max();
  auto [wf, bf] = l->folded();
  EXPECT_TRUE(torch::allclose(unfused(x, wf, bf), expect, 0, 1e-5));
  // By hand: W_f = W * s, b_f = (b - mean) * s + beta.
  auto s = gamma / torch::sqrt(mv + kEps);
  EXPECT_TRUE(torch::allclose(wf, W * s, 1e-6, 1e-7));
  EXPECT_TRUE(torch::allclose(bf, (b - mm) * s + beta, 1e-6, 1e-6));
  // Eval does not move the statistics.
  EXPECT_TRUE(torch::allclose(l->moving_mean, mm, 0, 1e-6));
  // The quantizers carry the folded constants.
  auto qs = l->quantizers();
  ASSERT_EQ(qs.size(), 3u);
  EXPECT_EQ(qs[1].role, "kernel");
  EXPECT_TRUE(torch::equal(qs[1].constant, wf));
  EXPECT_EQ(qs[2].role, "bias");
  EXPECT_TRUE(torch::equal(qs[2].constant, bf));
}

// Gradients of a folded layer in training equal those of unfused -> batch_norm.
template <class L>
void check_folded_gradients(
    L& l, const torch::Tensor& x,
    const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&,
                                      const torch::Tensor&)>& unfused) {
  {
    torch::NoGradGuard g;
    l->kernel.copy_(grid_rand(l->kernel.sizes().vec(), 0.5));
    l->bias.copy_(grid_rand(l->bias.sizes().vec(), 0.5));
    l->gamma.uniform_(0.5, 1.5);
    l->beta.uniform_(-0.5, 0.5);
  }
  l->train();
  auto y = l->forward(x);
  auto r = torch::randn(y.sizes());
  (y * r).sum().backward();
  auto W = l->kernel.detach().clone().requires_grad_();
  auto b = l->bias.detach().clone().requires_grad_();
  auto gamma = l->gamma.detach().clone().requires_grad_();
  auto beta = l->beta.detach().clone().requires_grad_();
  auto ref = ref_bn(unfused(x, W, b), gamma, beta, {}, {}, true);
  (ref * r).sum().backward();
  EXPECT_TRUE(torch::allclose(l->kernel.grad(), W.grad(), 1e-3, 1e-4))
      << (l->kernel.grad() - W.grad()).abs().max();
  EXPECT_TRUE(torch::allclose(l->gamma.grad(), gamma.grad(), 1e-3, 1e-4));
  EXPECT_TRUE(torch::allclose(l->beta.grad(), beta.grad(), 1e-3, 1e-4));
  // The own bias cancels against the batch mean in training: no gradient, as in the reference.
  const torch::Tensor bias_grad = l->bias.grad();
  EXPECT_LT(bias_grad.abs().max().item<double>(), 1e-4);
}
}  // namespace

TEST(BatchNormFold, DenseMatchesUnfused) {
  torch::manual_seed(10);
  nn::QDenseBatchNorm d(nn::QDenseBatchNormOptions(8, 4)
                            .input_quantizer(wide_quantizer())
                            .kernel_quantizer(fine())
                            .bias_quantizer(fine()));
  EXPECT_EQ(d->type_name(), "dense_bn");
  EXPECT_EQ(d->output_shape({8}), (std::vector<int64_t>{4}));
  check_folded(
      d,
      [] {
        return grid_rand({16, 8}, 1.0);
      },
      [](const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
        return torch::addmm(b, x, w);
      });
}

TEST(BatchNormFold, Conv1dMatchesUnfused) {
  torch::manual_seed(11);
  nn::QConv1dBatchNorm c(nn::QConv1dBatchNormOptions(2, 3, {3}, {9, 2})
                             .strides({2})
                             .padding("same")
                             .input_quantizer(wide_quantizer())
                             .kernel_quantizer(fine())
                             .bias_quantizer(fine()));
  EXPECT_EQ(c->type_name(), "conv1d_bn");
  EXPECT_EQ(c->output_shape({9, 2}), (std::vector<int64_t>{5, 3}));
  check_folded(
      c,
      [] {
        return grid_rand({6, 9, 2}, 1.0);
      },
      [](const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
        return ref_conv1d(x, w, b, 2, true);
      });
}

TEST(BatchNormFold, Conv2dMatchesUnfused) {
  torch::manual_seed(12);
  nn::QConv2dBatchNorm c(nn::QConv2dBatchNormOptions(2, 3, {3, 2}, {5, 6, 2})
                             .strides({2, 1})
                             .padding("same")
                             .input_quantizer(wide_quantizer())
                             .kernel_quantizer(fine())
                             .bias_quantizer(fine()));
  EXPECT_EQ(c->type_name(), "conv2d_bn");
  EXPECT_EQ(c->output_shape({5, 6, 2}), (std::vector<int64_t>{3, 6, 3}));
  EXPECT_EQ(c->pad_before({5, 6, 2}), (std::vector<int64_t>{1, 0}));
  check_folded(
      c,
      [] {
        return grid_rand({4, 5, 6, 2}, 1.0);
      },
      [](const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
        return ref_conv2d(x, w, b, {2, 1}, true);
      });
}

TEST(BatchNormFold, Conv2dValidWithoutBiasMatchesUnfused) {
  torch::manual_seed(13);
  nn::QConv2dBatchNorm c(nn::QConv2dBatchNormOptions(2, 2, {3, 3}, {6, 6, 2})
                             .bias(false)
                             .activation(nn::Activation::ReLU)
                             .input_quantizer(wide_quantizer())
                             .kernel_quantizer(fine())
                             .bias_quantizer(fine()));
  EXPECT_FALSE(c->bias.defined());
  ASSERT_TRUE(c->bq);  // b_f needs a quantizer even without the own bias
  {
    torch::NoGradGuard g;
    c->kernel.copy_(grid_rand(c->kernel.sizes().vec(), 0.5));
    c->gamma.uniform_(0.5, 1.5);
    c->beta.uniform_(-0.5, 0.5);
  }
  c->train();
  auto x = grid_rand({4, 6, 6, 2}, 1.0);
  auto z = ref_conv2d(x, c->kernel.detach(), {}, {1, 1}, false);
  auto expect = torch::relu(ref_bn(z, c->gamma.detach(), c->beta.detach(), {}, {}, true));
  EXPECT_TRUE(torch::allclose(c->forward(x), expect, 0, 1e-5));
}

TEST(BatchNormFold, GradientsMatchUnfusedTraining) {
  torch::manual_seed(14);
  nn::QConv2dBatchNorm c(nn::QConv2dBatchNormOptions(2, 3, {3, 3}, {5, 5, 2})
                             .padding("same")
                             .input_quantizer(wide_quantizer())
                             .kernel_quantizer(fine())
                             .bias_quantizer(fine()));
  check_folded_gradients(
      c, grid_rand({4, 5, 5, 2}, 1.0),
      [](const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b) {
        return ref_conv2d(x, w, b, {1, 1}, true);
      });
  nn::QDenseBatchNorm d(nn::QDenseBatchNormOptions(6, 3)
                            .input_quantizer(wide_quantizer())
                            .kernel_quantizer(fine())
                            .bias_quantizer(fine()));
  check_folded_gradients(d, grid_rand({16, 6}, 1.0),
                         [](const torch::Tensor& x, const torch::Tensor& w,
                            const torch::Tensor& b) { return torch::addmm(b, x, w); });
}

TEST(BatchNormFold, EbopsAsTheUnfoldedLayer) {
  // Same bits as the hand-computed QDense case: 40 products + mean bias bits 4 * 2 outputs = 48.
  nn::QDenseBatchNorm d(nn::QDenseBatchNormOptions(3, 2));
  torch::NoGradGuard g;
  d->iq->i.copy_(torch::tensor({1., 2., 0.}));
  d->iq->f.copy_(torch::tensor({2., 3., 4.}));
  d->kq->b.copy_(torch::tensor({{1., 2.}, {0., 3.}, {4., 0.}}));
  d->bq->i.copy_(torch::tensor({1., 1.}));
  d->bq->f.copy_(torch::tensor({2., 4.}));
  EXPECT_DOUBLE_EQ(d->ebops().item<double>(), 48.0);
  // Conv: equal to the plain convolution with the same bits.
  nn::QConv2dBatchNorm cb(
      nn::QConv2dBatchNormOptions(2, 3, {3, 3}, {5, 4, 2}).strides({2, 1}).padding("same"));
  nn::QConv2d cv(nn::QConv2dOptions(2, 3, {3, 3}, {5, 4, 2}).strides({2, 1}).padding("same"));
  for (auto* l : {&cb->iq, &cv->iq}) (*l)->f.copy_(torch::arange(40).view({5, 4, 2}) % 7);
  for (auto* l : {&cb->kq, &cv->kq}) (*l)->b.copy_(torch::arange(54).view({3, 3, 2, 3}) % 5);
  EXPECT_DOUBLE_EQ(cb->ebops().item<double>(), cv->ebops().item<double>());
  EXPECT_GT(cb->ebops().item<double>(), 0);
}

TEST(BatchNormFold, OneTrainingStep) {
  torch::manual_seed(15);
  nn::QConv2dBatchNorm c(nn::QConv2dBatchNormOptions(2, 4, {3, 3}, {6, 6, 2}).padding("same"));
  c->train();
  auto x = torch::randn({8, 6, 6, 2});
  auto loss = (c->forward(x) - 0.3).square().mean() + 1e-5 * c->ebops();
  loss.backward();
  auto params = c->named_parameters();
  for (const char* name : {"kernel", "gamma", "beta", "iq.f", "kq.b", "bq.f"}) {
    SCOPED_TRACE(name);
    auto gr = params[name].grad();
    ASSERT_TRUE(gr.defined());
    EXPECT_TRUE(torch::isfinite(gr).all().item<bool>());
    EXPECT_GT(gr.abs().sum().item<double>(), 0);
  }
  std::map<std::string, torch::Tensor> before;
  for (const auto& p : params) before[p.key()] = p.value().detach().clone();
  torch::optim::Adam opt(c->parameters(), torch::optim::AdamOptions(1e-2));
  opt.step();
  for (const char* name : {"kernel", "gamma", "beta", "iq.f", "kq.b"})
    EXPECT_FALSE(torch::equal(before[name], params[name].detach())) << name;
  // The moving statistics moved from their initial values.
  EXPECT_FALSE(torch::equal(c->moving_mean, torch::zeros({4})));
}

// ------------------------------------------------------------------------- QBatchNorm
TEST(BatchNormPlain, MatchesTorchBatchNorm) {
  torch::manual_seed(16);
  nn::QBatchNorm bn(nn::QBatchNormOptions({4, 4, 3})
                        .input_quantizer(wide_quantizer())
                        .kernel_quantizer(fine())
                        .bias_quantizer(fine()));
  EXPECT_EQ(bn->type_name(), "batchnorm");
  {
    torch::NoGradGuard g;
    bn->gamma.uniform_(0.5, 1.5);
    bn->beta.uniform_(-0.5, 0.5);
  }
  auto gamma = bn->gamma.detach(), beta = bn->beta.detach();
  auto mm = torch::zeros({3}), mv = torch::ones({3});
  bn->train();
  for (int step = 0; step < 3; ++step) {
    auto x = grid_rand({8, 4, 4, 3}, 2.0) + 0.5;
    auto expect = ref_bn(x, gamma, beta, {}, {}, true);
    auto y = bn->forward(x);
    EXPECT_TRUE(torch::allclose(y, expect, 0, 1e-5)) << (y - expect).abs().max();
    auto [mu, var] = moments(x);
    mm = kMomentum * mm + (1 - kMomentum) * mu;
    mv = kMomentum * mv + (1 - kMomentum) * var;
    EXPECT_TRUE(torch::allclose(bn->moving_mean, mm, 0, 1e-6));
    EXPECT_TRUE(torch::allclose(bn->moving_var, mv, 0, 1e-6));
  }
  bn->eval();
  auto x = grid_rand({8, 4, 4, 3}, 2.0);
  auto expect = ref_bn(x, gamma, beta, mm, mv, false);
  EXPECT_TRUE(torch::allclose(bn->forward(x), expect, 0, 1e-5));
  auto [s, o] = bn->folded();
  auto s_ref = gamma / torch::sqrt(mv + kEps);
  EXPECT_TRUE(torch::allclose(s, s_ref, 1e-6, 1e-7));
  EXPECT_TRUE(torch::allclose(o, beta - mm * s_ref, 1e-6, 1e-6));
  auto qs = bn->quantizers();
  ASSERT_EQ(qs.size(), 3u);
  EXPECT_EQ(qs[0].role, "input");
  EXPECT_EQ(qs[1].role, "kernel");
  EXPECT_EQ(qs[1].quantizer->options.shape(), (std::vector<int64_t>{3}));
  EXPECT_TRUE(torch::equal(qs[1].constant, s));
  EXPECT_EQ(qs[2].role, "bias");
  EXPECT_TRUE(torch::equal(qs[2].constant, o));
  EXPECT_EQ(bn->output_shape({4, 4, 3}), (std::vector<int64_t>{4, 4, 3}));
  EXPECT_THROW(bn->output_shape({4, 3}), std::invalid_argument);
}

TEST(BatchNormPlain, WithoutInputQuantizerAndWithOutputQuantizer) {
  nn::QBatchNorm bn(nn::QBatchNormOptions({5, 2})
                        .quantize_input(false)
                        .activation(nn::Activation::ReLU)
                        .output_quantizer(wide_quantizer()));
  EXPECT_FALSE(bn->iq);
  auto qs = bn->quantizers();
  ASSERT_EQ(qs.size(), 3u);
  EXPECT_EQ(qs[0].role, "kernel");
  EXPECT_EQ(qs[2].role, "output");
  bn->eval();
  auto y = bn->forward(torch::randn({3, 5, 2}));
  EXPECT_GE(y.min().item<double>(), 0.0);
}

TEST(BatchNormPlain, EbopsByHand) {
  // Per-sample [2, 2] (C = 2): input bits [[1, 2], [3, 4]], scale bits [5, 6]:
  // 1*5 + 2*6 + 3*5 + 4*6 = 56; bias bits [2, 4], mean 3, times 4 elements = 12. Total 68.
  nn::QBatchNorm bn(nn::QBatchNormOptions({2, 2}));
  torch::NoGradGuard g;
  bn->iq->i.fill_(0);
  bn->iq->f.copy_(torch::tensor({{1., 2.}, {3., 4.}}));
  bn->kq->b.copy_(torch::tensor({5., 6.}));
  bn->bq->i.fill_(0);
  bn->bq->f.copy_(torch::tensor({2., 4.}));
  EXPECT_DOUBLE_EQ(bn->ebops().item<double>(), 68.0);
}

TEST(BatchNormPlain, OneTrainingStep) {
  torch::manual_seed(17);
  nn::QBatchNorm bn(nn::QBatchNormOptions({6, 3}));
  bn->train();
  auto x = torch::randn({8, 6, 3}) * 2 + 1;
  auto loss = (bn->forward(x) - 0.2).square().mean() + 1e-5 * bn->ebops();
  loss.backward();
  auto params = bn->named_parameters();
  for (const char* name : {"gamma", "beta", "iq.f", "kq.b", "bq.f"}) {
    SCOPED_TRACE(name);
    auto gr = params[name].grad();
    ASSERT_TRUE(gr.defined());
    EXPECT_TRUE(torch::isfinite(gr).all().item<bool>());
    EXPECT_GT(gr.abs().sum().item<double>(), 0);
  }
  std::map<std::string, torch::Tensor> before;
  for (const auto& p : params) before[p.key()] = p.value().detach().clone();
  torch::optim::Adam opt(bn->parameters(), torch::optim::AdamOptions(1e-2));
  opt.step();
  for (const char* name : {"gamma", "beta", "kq.b"})
    EXPECT_FALSE(torch::equal(before[name], params[name].detach())) << name;
}
