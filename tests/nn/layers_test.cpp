// QDense EBOPs by hand, quantizer defaults, integer-bit tracking.
#include "hgqt/nn/layers.h"

#include <gtest/gtest.h>

using namespace hgqt;
using namespace hgqt::quant;

TEST(Quantizer, DefaultsByPlace) {
  auto w = default_quantizer_options(Place::Weight, {4, 3});
  EXPECT_EQ(w.param(), Parameterization::KBI);
  EXPECT_EQ(w.b(), 8);
  EXPECT_EQ(w.i(), 2);
  EXPECT_EQ(w.overflow(), OverflowMode::SAT_SYM);
  EXPECT_EQ(w.round(), RoundingMode::RND);
  EXPECT_EQ(w.granularity(), Granularity::Element);
  auto a = default_quantizer_options(Place::Datalane, {4});
  EXPECT_EQ(a.param(), Parameterization::KIF);
  EXPECT_EQ(a.i(), 2);
  EXPECT_EQ(a.f(), 6);
  EXPECT_EQ(a.overflow(), OverflowMode::WRAP);
  FixedQuantizer q(w);
  EXPECT_TRUE(q->b.requires_grad());
  EXPECT_TRUE(q->i.requires_grad());  // SAT integer bits are trained
  FixedQuantizer qa(a);
  EXPECT_FALSE(qa->i.requires_grad());  // WRAP integer bits follow the data
  EXPECT_TRUE(qa->f.requires_grad());
}

TEST(Quantizer, GranularityShapes) {
  auto o = default_quantizer_options(Place::Weight, {4, 3});
  EXPECT_EQ(FixedQuantizer(o)->param_shape(), (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(FixedQuantizer(o.granularity(Granularity::Channel))->param_shape(),
            (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(FixedQuantizer(o.granularity(Granularity::Tensor))->param_shape(),
            (std::vector<int64_t>{1, 1}));
}

TEST(Quantizer, IntegerBitsTrackTheDataInTraining) {
  FixedQuantizer q(default_quantizer_options(Place::Datalane, {2}));
  q->train();
  // Feature 0 peaks at 5.3 -> i = ceil(log2(5.3 + 2^-6)) = 3; feature 1 at 0.2 -> max(2 - 0.01,
  // -2).
  auto x = torch::tensor({{5.3, 0.2}, {-1.0, 0.1}});
  q->forward(x);
  EXPECT_FLOAT_EQ(q->i[0].item<float>(), 3.0f);
  EXPECT_FLOAT_EQ(q->i[1].item<float>(), 1.99f);
  // After the update nothing the batch held overflows in eval.
  q->eval();
  auto y = q->forward(x);
  EXPECT_TRUE(torch::allclose(y, torch::round(x * 64) / 64));
  // Eval does not move i.
  q->forward(torch::tensor({{100.0, 100.0}}));
  EXPECT_FLOAT_EQ(q->i[0].item<float>(), 3.0f);
}

TEST(QDense, EbopsByHand) {
  nn::QDense d(nn::QDenseOptions(3, 2));
  torch::NoGradGuard g;
  d->iq->i.copy_(torch::tensor({1., 2., 0.}));
  d->iq->f.copy_(torch::tensor({2., 3., 4.}));  // input bits 3, 5, 4
  d->kq->b.copy_(torch::tensor({{1., 2.}, {0., 3.}, {4., 0.}}));
  d->bq->i.copy_(torch::tensor({1., 1.}));
  d->bq->f.copy_(torch::tensor({2., 4.}));  // bias bits 3, 5: mean 4
  // 3*(1+2) + 5*(0+3) + 4*(4+0) = 40; + 4 * 2 outputs = 48.
  EXPECT_DOUBLE_EQ(d->ebops().item<double>(), 48.0);
}

TEST(QDense, PrunedWeightsCostNothing) {
  nn::QDense d(nn::QDenseOptions(2, 2).bias(false));
  torch::NoGradGuard g;
  d->iq->i.fill_(2);
  d->iq->f.fill_(2);  // 4 bits each
  d->kq->b.copy_(torch::tensor({{0., 0.}, {0., 3.}}));
  EXPECT_DOUBLE_EQ(d->ebops().item<double>(), 12.0);
  // A zero-bit weight quantizes to 0.
  auto w = d->kq->apply_eval(torch::tensor({{0.7, -0.4}, {0.3, 0.9}}));
  EXPECT_EQ(w[0][0].item<float>(), 0.0f);
  EXPECT_EQ(w[0][1].item<float>(), 0.0f);
  EXPECT_EQ(w[1][0].item<float>(), 0.0f);
}

TEST(QDense, EbopsGradientReachesBits) {
  nn::QDense d(nn::QDenseOptions(4, 3));
  d->ebops().backward();
  EXPECT_GT(d->kq->b.grad().abs().sum().item<double>(), 0);
  EXPECT_GT(d->iq->f.grad().abs().sum().item<double>(), 0);
}

TEST(QDense, ForwardIsQuantizedMatmul) {
  torch::manual_seed(0);
  nn::QDense d(nn::QDenseOptions(5, 3).activation(nn::Activation::ReLU));
  d->eval();
  auto x = torch::randn({8, 5});
  auto expect = torch::relu(
      torch::addmm(d->bq->apply_eval(d->bias), d->iq->apply_eval(x), d->kq->apply_eval(d->kernel)));
  EXPECT_TRUE(torch::equal(d->forward(x), expect));
  EXPECT_THROW(d->forward(torch::randn({8, 4})), c10::Error);
}
