// QUnaryLUT: float behaviour with wide quantizers, training, registry errors.
#include "hgqt/nn/lut.h"

#include <gtest/gtest.h>

using namespace hgqt;

namespace {
quant::QuantizerOptions wide(std::vector<int64_t> shape) {
  return quant::QuantizerOptions(std::move(shape)).i(8).f(14).overflow(quant::OverflowMode::SAT);
}
}  // namespace

TEST(Lut, WideQuantizersGiveTheFloatFunction) {
  for (const std::string fn :
       {"tanh", "sigmoid", "exp", "sin", "softplus", "square", "abs", "gelu"}) {
    nn::QUnaryLUTOptions o({4, 3}, fn);
    o.input_quantizer(wide({4, 3})).output_quantizer(wide({4, 3}));
    nn::QUnaryLUT l(o);
    l->eval();
    // Inputs on a 2^-6 grid: exact through the input quantizer.
    auto x = torch::round(torch::randn({50, 4, 3}) * 64) / 64;
    auto want = nn::lut_function(fn)(x);
    EXPECT_LT((l->forward(x) - want).abs().max().item<double>(), std::ldexp(1.0, -14)) << fn;
  }
}

TEST(Lut, OutputIsTheQuantizedFunctionOfTheQuantizedInput) {
  nn::QUnaryLUTOptions o({5}, "tanh");
  o.input_quantizer(quant::QuantizerOptions({5}).i(1).f(3).overflow(quant::OverflowMode::SAT));
  o.output_quantizer(quant::QuantizerOptions({5}).i(0).f(4).overflow(quant::OverflowMode::SAT));
  nn::QUnaryLUT l(o);
  l->eval();
  auto x = torch::tensor({{0.3f, -0.06f, 1.9f, -5.0f, 0.0f}});
  // Q_in: RND at 2^-3, SAT to [-2, 2 - 1/8]: 0.25, -0.0625 -> -0.0 (RND half up: -0.5 -> 0),
  // 1.875, -2, 0. tanh, then RND at 2^-4 with SAT to [-1, 1 - 1/16].
  auto xq = torch::tensor({{0.25f, 0.0f, 1.875f, -2.0f, 0.0f}});
  auto want = torch::clamp(torch::floor(torch::tanh(xq) * 16 + 0.5) / 16, -1.0, 0.9375);
  EXPECT_TRUE(torch::allclose(l->forward(x), want)) << l->forward(x) << want;
}

TEST(Lut, OneTrainingStepMovesBitWidths) {
  nn::QUnaryLUT l(nn::QUnaryLUTOptions({6}, "sigmoid"));
  l->train();
  torch::optim::Adam opt(l->parameters(), torch::optim::AdamOptions(0.1));
  auto x = torch::randn({64, 6}) * 2;
  auto f_before = l->iq->f.clone();
  auto loss = (l->forward(x) - torch::sigmoid(x)).pow(2).mean();
  opt.zero_grad();
  loss.backward();
  ASSERT_TRUE(l->iq->f.grad().defined());
  EXPECT_TRUE(torch::isfinite(l->iq->f.grad()).all().item<bool>());
  EXPECT_GT(l->iq->f.grad().abs().sum().item<double>(), 0);
  EXPECT_GT(l->oq->f.grad().abs().sum().item<double>(), 0);
  opt.step();
  EXPECT_FALSE(torch::equal(f_before, l->iq->f));
  EXPECT_EQ(l->ebops().item<double>(), 0.0);
}

TEST(Lut, UnknownFunctionListsTheKnownOnesAndUsersCanRegister) {
  try {
    nn::QUnaryLUT l(nn::QUnaryLUTOptions({2}, "erf"));
    ADD_FAILURE();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("unknown lut function 'erf' (known: abs, cos, exp"),
              std::string::npos)
        << e.what();
  }
  nn::register_lut_function("erf", [](const torch::Tensor& x) { return torch::erf(x); });
  nn::QUnaryLUT l(nn::QUnaryLUTOptions({2}, "erf"));
  EXPECT_EQ(l->options.function(), "erf");
}
