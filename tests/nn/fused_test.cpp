// The fused training nodes of QDense and FusedAdam against the composed LibTorch operations.
#include "hgqt/nn/fused.h"

#include <gtest/gtest.h>

#include <sstream>

#include "hgqt/config/config.h"
#include "hgqt/model/model.h"
#include "hgqt/nn/layers.h"
#include "hgqt/quant/quantize.h"
#include "hgqt/train/optim.h"

using namespace hgqt;
using namespace hgqt::quant;

namespace {

struct DenseCase {
  const char* name;
  bool bias;
  nn::Activation act;
  QuantizerOptions in, kernel, bias_q;
};

std::vector<DenseCase> dense_cases() {
  auto dl = default_quantizer_options(Place::Datalane, {5});
  auto w = default_quantizer_options(Place::Weight, {5, 4});
  auto b = default_quantizer_options(Place::Bias, {4});
  std::vector<DenseCase> out;
  out.push_back({"defaults", true, nn::Activation::ReLU, dl, w, b});
  out.push_back(
      {"sat_trn_linear", true, nn::Activation::Linear,
       QuantizerOptions({5}).overflow(OverflowMode::SAT).round(RoundingMode::TRN).i(1).f(3),
       QuantizerOptions({5, 4})
           .batch_axis(false)
           .param(Parameterization::KIF)
           .overflow(OverflowMode::SAT)
           .i(0)
           .f(4),
       QuantizerOptions({4})
           .batch_axis(false)
           .overflow(OverflowMode::SAT_SYM)
           .round(RoundingMode::RND_CONV)});
  out.push_back({"no_bias_tensor_granularity", false, nn::Activation::ReLU,
                 QuantizerOptions(dl).granularity(Granularity::Tensor),
                 QuantizerOptions(w).granularity(Granularity::Channel), b});
  return out;
}

nn::QDense make_dense(const DenseCase& c) {
  return nn::QDense(nn::QDenseOptions(5, 4)
                        .bias(c.bias)
                        .activation(c.act)
                        .input_quantizer(c.in)
                        .kernel_quantizer(c.kernel)
                        .bias_quantizer(c.bias_q));
}

// Non-integer bit widths (some rounding to zero bits: pruned elements) and a bias.
void randomize(nn::QDense& d) {
  torch::NoGradGuard no_grad;
  for (auto& p : d->named_parameters()) {
    if (p.key().find("q.") == std::string::npos)
      p.value().uniform_(-1.5, 1.5);
    else
      p.value().add_(torch::rand_like(p.value()) * 3 - 1.5);
  }
}

void expect_same_grads(nn::QDense& a, nn::QDense& b, const char* where) {
  auto pa = a->named_parameters(), pb = b->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t n = 0; n < pa.size(); ++n) {
    const auto& ga = pa[n].value().grad();
    const auto& gb = pb[n].value().grad();
    ASSERT_EQ(ga.defined(), gb.defined()) << where << " " << pa[n].key();
    if (ga.defined()) {
      EXPECT_TRUE(torch::allclose(ga, gb, 1e-6, 1e-6)) << where << " " << pa[n].key();
    }
  }
}

}  // namespace

TEST(FusedDense, TrainingStepEqualsTheComposedOps) {
  for (bool reference : {false, true}) {
    set_force_reference_path(reference);
    for (const auto& c : dense_cases()) {
      torch::manual_seed(3);
      auto a = make_dense(c);
      randomize(a);
      nn::QDense b(std::dynamic_pointer_cast<nn::QDenseImpl>(a->clone()));
      a->train();
      b->train();
      auto x = (torch::randn({64, 5}) * 3).requires_grad_(true);
      auto xb = x.detach().clone().requires_grad_(true);
      auto r = torch::randn({64, 4});
      auto ya = a->forward(x);
      auto yb = b->forward_composed(xb);
      EXPECT_TRUE(torch::equal(ya, yb)) << c.name << " reference=" << reference;
      (ya * r).sum().backward();
      (yb * r).sum().backward();
      EXPECT_TRUE(torch::allclose(x.grad(), xb.grad(), 1e-6, 1e-6)) << c.name;
      expect_same_grads(a, b, c.name);
      // Integer-bit tracking of the WRAP quantizers happened in both.
      EXPECT_TRUE(torch::equal(a->iq->i, b->iq->i)) << c.name;
      if (c.bias) {
        EXPECT_TRUE(torch::equal(a->bq->i, b->bq->i)) << c.name;
      }
    }
  }
  set_force_reference_path(false);
}

TEST(FusedDense, EbopsAndTheirGradientEqualTheComposedOps) {
  for (const auto& c : dense_cases()) {
    torch::manual_seed(5);
    auto a = make_dense(c);
    randomize(a);
    {
      // KBI widths beyond the clamp range take no gradient through bits().
      torch::NoGradGuard no_grad;
      if (a->kq->b.defined()) a->kq->b.view(-1)[0] = 30.0;
    }
    nn::QDense b(std::dynamic_pointer_cast<nn::QDenseImpl>(a->clone()));
    auto ea = a->ebops(), eb = b->ebops_composed();
    EXPECT_FLOAT_EQ(ea.item<float>(), eb.item<float>()) << c.name;
    (ea * 3).backward();
    (eb * 3).backward();
    expect_same_grads(a, b, c.name);
  }
}

TEST(FusedDense, EbopsByHandThroughTheFusedNode) {
  nn::QDense d(nn::QDenseOptions(2, 2));
  {
    torch::NoGradGuard g;
    d->iq->i.copy_(torch::tensor({1., 2.}));
    d->iq->f.copy_(torch::tensor({2.4, -3.}));  // input bits 3 and 0 (relu)
    d->kq->b.copy_(torch::tensor({{1., 2.}, {5., 3.}}));
    d->bq->i.copy_(torch::tensor({1., 1.}));
    d->bq->f.copy_(torch::tensor({1., 3.}));  // bias bits 2 and 4
  }
  auto e = d->ebops();
  // 3 * (1 + 2) + 0 * (5 + 3) + mean(2, 4) * 2 = 9 + 6.
  EXPECT_DOUBLE_EQ(e.item<double>(), 15.0);
  e.backward();
  // d/df_in = sum_o b_w (zero where the input has no bits); d/db_w[j,o] = b_in[j].
  EXPECT_TRUE(torch::equal(d->iq->f.grad(), torch::tensor({3.f, 0.f})));
  EXPECT_TRUE(torch::equal(d->kq->b.grad(), torch::tensor({{3.f, 3.f}, {0.f, 0.f}})));
  EXPECT_TRUE(torch::equal(d->bq->f.grad(), torch::tensor({1.f, 1.f})));  // n_out / 2 each
}

TEST(FusedAdam, MatchesTorchAdamAndSharesItsState) {
  torch::manual_seed(7);
  auto w0 = torch::randn({33}), u0 = torch::randn({4, 5});
  auto w1 = w0.clone().requires_grad_(true), u1 = u0.clone().requires_grad_(true);
  auto w2 = w0.clone().requires_grad_(true), u2 = u0.clone().requires_grad_(true);
  auto opts = torch::optim::AdamOptions(0.01).weight_decay(0.1);
  train::FusedAdam fused({w1, u1}, opts);
  torch::optim::Adam plain({w2, u2}, opts);
  auto loss = [](const torch::Tensor& w, const torch::Tensor& u) {
    return (w * w).sum() + u.pow(3).sum();
  };
  for (int s = 0; s < 5; ++s) {
    train::zero_grad_to_none(fused);
    plain.zero_grad();
    loss(w1, u1).backward();
    loss(w2, u2).backward();
    fused.step();
    plain.step();
  }
  EXPECT_TRUE(torch::allclose(w1, w2, 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(u1, u2, 1e-5, 1e-5));
  // State written by FusedAdam loads into torch's Adam, which continues the same run.
  torch::serialize::OutputArchive out;
  fused.save(out);
  std::stringstream buf;
  out.save_to(buf);
  auto w3 = w1.detach().clone().requires_grad_(true), u3 = u1.detach().clone().requires_grad_(true);
  torch::optim::Adam reloaded({w3, u3}, opts);
  torch::serialize::InputArchive in;
  in.load_from(buf);
  reloaded.load(in);
  train::zero_grad_to_none(fused);
  reloaded.zero_grad();
  loss(w1, u1).backward();
  loss(w3, u3).backward();
  fused.step();
  reloaded.step();
  EXPECT_TRUE(torch::allclose(w1, w3, 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(u1, u3, 1e-5, 1e-5));
  const auto& s1 = static_cast<torch::optim::AdamParamState&>(*fused.state().begin()->second);
  EXPECT_EQ(s1.step(), 6);
}

TEST(FusedAdam, ZeroGradToNoneReleasesGradients) {
  auto w = torch::ones({3}, torch::requires_grad());
  train::FusedAdam opt({w}, torch::optim::AdamOptions(0.1));
  (w * 2).sum().backward();
  ASSERT_TRUE(w.grad().defined());
  train::zero_grad_to_none(opt);
  EXPECT_FALSE(w.grad().defined());
  opt.step();  // no gradient: nothing moves
  EXPECT_TRUE(torch::equal(w, torch::ones({3})));
}

TEST(FusedDense, ChainedLayersInAModelEqualLayerByLayer) {
  auto spec = config::parse_model_yaml(R"(
input_shape: [6]
layers:
  - {type: dense, units: 8, activation: relu}
  - {type: dense, units: 7, activation: relu}
  - {type: dense, units: 3}
)",
                                       "chain");
  for (bool reference : {false, true}) {
    set_force_reference_path(reference);
    torch::manual_seed(11);
    model::HGQModel a(spec), b(spec);
    {
      torch::NoGradGuard no_grad;
      auto pa = a->named_parameters(), pb = b->named_parameters();
      for (size_t n = 0; n < pa.size(); ++n) pb[n].value().copy_(pa[n].value());
      auto ba = a->named_buffers(), bb = b->named_buffers();
      for (size_t n = 0; n < ba.size(); ++n) bb[n].value().copy_(ba[n].value());
    }
    ASSERT_TRUE(a->layers()[0].chain.defer_relu);
    ASSERT_TRUE(a->layers()[1].chain.relu_input && a->layers()[1].chain.defer_relu);
    ASSERT_TRUE(a->layers()[2].chain.relu_input && !a->layers()[2].chain.defer_relu);
    a->train();
    b->train();
    auto x = torch::randn({50, 6}) * 2;
    auto r = torch::randn({50, 3});
    auto ya = a->forward(x);
    auto yb = x;
    for (const auto& e : b->layers()) yb = e.dense->forward_composed(yb);
    EXPECT_TRUE(torch::equal(ya, yb)) << "reference=" << reference;
    (ya * r).sum().backward();
    (yb * r).sum().backward();
    auto pa = a->named_parameters(), pb = b->named_parameters();
    ASSERT_EQ(pa.size(), pb.size());
    for (size_t n = 0; n < pa.size(); ++n) {
      ASSERT_TRUE(pa[n].value().grad().defined()) << pa[n].key();
      EXPECT_TRUE(torch::allclose(pa[n].value().grad(), pb[n].value().grad(), 1e-6, 1e-6))
          << pa[n].key() << " reference=" << reference;
    }
    // In eval the model is the composed layers.
    a->eval();
    b->eval();
    EXPECT_TRUE(torch::equal(a->forward(x), b->forward(x)));
  }
  set_force_reference_path(false);
}
