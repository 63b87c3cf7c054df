// QSoftmax: float behaviour with wide quantizers, the table arithmetic by hand, training, EBOPs.
#include "hgqt/nn/softmax.h"

#include <gtest/gtest.h>

#include <cmath>

using namespace hgqt;
using quant::OverflowMode;
using quant::QuantizerOptions;

namespace {
QuantizerOptions stage(int k, int i, int f) {
  return QuantizerOptions({1})
      .k(k)
      .i(i)
      .f(f)
      .overflow(OverflowMode::SAT)
      .granularity(quant::Granularity::Tensor);
}
QuantizerOptions datalane(std::vector<int64_t> shape, int i, int f) {
  return QuantizerOptions(std::move(shape)).i(i).f(f).overflow(OverflowMode::SAT);
}
}  // namespace

TEST(Softmax, WideQuantizersGiveTheFloatSoftmax) {
  // Every quantizer about 20 fractional bits wide (wider than an exported table may be: the
  // layer itself does not care): the layer is torch::softmax over the last axis.
  nn::QSoftmaxOptions o({3, 5});
  o.input_quantizer(datalane({3, 5}, 6, 16)).output_quantizer(datalane({3, 5}, 2, 22));
  o.exp_input_quantizer(stage(1, 8, 20)).exp_output_quantizer(stage(0, 1, 22));
  o.inv_input_quantizer(stage(0, 4, 20)).inv_output_quantizer(stage(0, 1, 22));
  nn::QSoftmax l(o);
  l->eval();
  auto x = torch::round(torch::randn({40, 3, 5}) * 3 * 1024) / 1024;  // exact through iq
  const double err = (l->forward(x) - torch::softmax(x, -1)).abs().max().item<double>();
  EXPECT_LT(err, 1e-5);
}

TEST(Softmax, TableArithmeticByHand) {
  // As ArchiveGraph.SoftmaxByHand: inputs {1.5, 0.5} -> d {0, -1} -> e {1, 3/8} -> sum 11/8 ->
  // 3/2 -> r 5/8 -> y {10/16, 4/16}.
  nn::QSoftmaxOptions o({2});
  o.input_quantizer(datalane({2}, 2, 1))
      .output_quantizer(QuantizerOptions({2}).k(0).i(1).f(4).overflow(OverflowMode::SAT));
  o.exp_input_quantizer(stage(1, 2, 0)).exp_output_quantizer(stage(0, 1, 3));
  o.inv_input_quantizer(stage(0, 2, 2)).inv_output_quantizer(stage(0, 1, 3));
  nn::QSoftmax l(o);
  l->eval();
  auto y = l->forward(torch::tensor({{1.5f, 0.5f}, {0.5f, 1.5f}, {-1.0f, -1.0f}}));
  auto want = torch::tensor({{10.0f / 16, 4.0f / 16}, {4.0f / 16, 10.0f / 16}, {0.5f, 0.5f}});
  EXPECT_TRUE(torch::equal(y, want)) << y;
  // EBOPs: 2 elements, bits(e) = 4, bits(r) = 4.
  EXPECT_EQ(l->ebops().item<double>(), 32.0);
}

TEST(Softmax, DefaultsKeepTablesSmallAndOneTypePerLayer) {
  nn::QSoftmax l(nn::QSoftmaxOptions({10}));
  // exp input: k=1, i=3, f=3 (7 bits); the reciprocal input holds sums up to 10: 2^4 > 10.
  EXPECT_EQ(l->eiq->k.item<float>(), 1.0f);
  EXPECT_EQ(l->iiq->i.item<float>(), 4.0f);
  EXPECT_EQ(l->eiq->param_count(), 1);
  EXPECT_EQ(l->ioq->param_count(), 1);
  EXPECT_EQ(l->eiq->options.f_max() + l->eiq->options.i_max() + 1, 16.0);
  EXPECT_EQ(l->iiq->options.f_max() + l->iiq->options.i_max(), 16.0);
  // Probabilities: the output quantizer is unsigned and saturating, per element (a WRAP output
  // could turn 1.0 into a negative value once its integer bits decay).
  EXPECT_EQ(l->oq->options.overflow(), OverflowMode::SAT);
  EXPECT_EQ(l->oq->k.sum().item<float>(), 0.0f);
  EXPECT_EQ(l->oq->param_count(), 10);
  // 10 elements x 8 x 8 bits.
  EXPECT_EQ(l->ebops().item<double>(), 640.0);
  nn::QSoftmaxOptions bad({4});
  bad.exp_input_quantizer(QuantizerOptions({1}));  // element granularity
  try {
    nn::QSoftmax s(bad);
    ADD_FAILURE();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("exp_input_quantizer has one type for the whole layer"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(nn::QSoftmax(nn::QSoftmaxOptions({})), std::invalid_argument);
}

TEST(Softmax, OneTrainingStepMovesBitWidthsAndLearnsTheTarget) {
  torch::manual_seed(3);
  nn::QSoftmax l(nn::QSoftmaxOptions({6}));
  l->train();
  torch::optim::Adam opt(l->parameters(), torch::optim::AdamOptions(0.05));
  auto x = torch::randn({128, 6}) * 2;
  auto target = torch::softmax(x * 1.5, -1);
  auto f_before = l->eoq->f.clone();
  auto loss_of = [&]() { return (l->forward(x) - target).pow(2).mean() + 1e-5 * l->ebops(); };
  auto loss = loss_of();
  opt.zero_grad();
  loss.backward();
  for (auto* q : {&l->eiq, &l->eoq, &l->iiq, &l->ioq}) {
    ASSERT_TRUE((*q)->f.grad().defined());
    EXPECT_TRUE(torch::isfinite((*q)->f.grad()).all().item<bool>());
  }
  EXPECT_GT(l->eoq->f.grad().abs().sum().item<double>(), 0);
  EXPECT_GT(l->ioq->f.grad().abs().sum().item<double>(), 0);
  opt.step();
  EXPECT_FALSE(torch::equal(f_before, l->eoq->f));
  // The input gradient flows through the tables' surrogate (exp, reciprocal).
  auto xg = x.clone().requires_grad_(true);
  l->forward(xg).select(1, 0).sum().backward();
  EXPECT_GT(xg.grad().abs().sum().item<double>(), 0);
}
