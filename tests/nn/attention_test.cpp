// Products of two activations (QEinsum) and attention built from the primitive layers, against
// independent LibTorch float references: matmul for Q K^T and P V, and LibTorch's own
// multi_head_attention_forward for a whole head pair. EBOPs by hand, one training step.
#include <gtest/gtest.h>

#include <cmath>

#include "hgqt/nn/einsum.h"
#include "hgqt/nn/layers.h"
#include "hgqt/nn/softmax.h"
#include "support/nn_values.h"

using namespace hgqt;
using namespace hgqt::quant;
using hgqt::testing::grid_rand;
using hgqt::testing::wide_quantizer;

namespace {
// Softmax stage quantizers wide enough that the table softmax is close to the float one: exp and
// reciprocal outputs at 2^-16 and 2^-14, table inputs at 2^-10 and 2^-12.
nn::QSoftmaxOptions with_wide_stages(nn::QSoftmaxOptions o) {
  auto stage = [](int k, int i, int f) {
    return QuantizerOptions({1})
        .granularity(Granularity::Tensor)
        .k(k)
        .i(i)
        .f(f)
        .overflow(OverflowMode::SAT);
  };
  return o.exp_input_quantizer(stage(1, 5, 10))
      .exp_output_quantizer(stage(0, 1, 16))
      .inv_input_quantizer(stage(0, 3, 12))
      .inv_output_quantizer(stage(0, 1, 14));
}
}  // namespace

TEST(QEinsum, FloatBehaviourMatchesMatmul) {
  torch::manual_seed(31);
  const int64_t B = 3, P = 5, H = 2, D = 3;
  // Scores: s[b, h, q, k] = sum_d q[b, q, h, d] k[b, k, h, d] = (Q_h K_h^T)[q, k].
  nn::QEinsum scores(nn::QEinsumOptions("qhd,khd->hqk", {P, H, D}, {P, H, D})
                         .input_quantizer(wide_quantizer({P, H, D}))
                         .input2_quantizer(wide_quantizer({P, H, D})));
  auto q = grid_rand({B, P, H, D}, 2), k = grid_rand({B, P, H, D}, 2);
  auto ref = torch::matmul(q.permute({0, 2, 1, 3}), k.permute({0, 2, 3, 1}));
  // Context: c[b, q, h, v] = sum_k p[b, h, q, k] v[b, k, h, v] = (P_h V_h)[q, v].
  nn::QEinsum context(nn::QEinsumOptions("hqk,khv->qhv", {H, P, P}, {P, H, D})
                          .input_quantizer(wide_quantizer({H, P, P}))
                          .input2_quantizer(wide_quantizer({P, H, D})));
  auto p = grid_rand({B, H, P, P}, 1), v = grid_rand({B, P, H, D}, 2);
  auto ref2 = torch::matmul(p, v.permute({0, 2, 1, 3})).permute({0, 2, 1, 3});
  for (bool training : {false, true}) {
    SCOPED_TRACE(training ? "train" : "eval");
    scores->train(training);
    context->train(training);
    auto y = scores->forward_many({q, k});
    ASSERT_EQ(y.sizes().vec(), (std::vector<int64_t>{B, H, P, P}));
    EXPECT_TRUE(torch::equal(y, ref));
    EXPECT_TRUE(torch::equal(context->forward_many({p, v}), ref2));
  }
  EXPECT_EQ(scores->output_shape_many({{P, H, D}, {P, H, D}}), (std::vector<int64_t>{H, P, P}));
  EXPECT_THROW(scores->output_shape_many({{P, H, D}, {P, H, D + 1}}), std::invalid_argument);
  EXPECT_THROW(scores->forward(q), std::invalid_argument);
  EXPECT_THROW(nn::QEinsum(nn::QEinsumOptions("qhd,khd->hqk", {P, H, D}, {P, H + 1, D})),
               std::invalid_argument);
}

TEST(QEinsum, EbopsByHand) {
  // a [2, 2] (q, d) bits 1, 2 / 3, 4; b [1, 2] (k, d) bits 5, 6; "qd,kd->qk":
  // output (0, 0): 1*5 + 2*6 = 17; output (1, 0): 3*5 + 4*6 = 39. Total 56.
  auto elem = [](std::vector<int64_t> s) {
    return QuantizerOptions(std::move(s)).granularity(Granularity::Element);
  };
  nn::QEinsum e(nn::QEinsumOptions("qd,kd->qk", {2, 2}, {1, 2})
                    .input_quantizer(elem({2, 2}))
                    .input2_quantizer(elem({1, 2})));
  torch::NoGradGuard g;
  e->iq->i.fill_(0);
  e->iq->f.copy_(torch::tensor({{1., 2.}, {3., 4.}}));
  e->iq2->i.fill_(0);
  e->iq2->f.copy_(torch::tensor({{5., 6.}}));
  EXPECT_DOUBLE_EQ(e->ebops().item<double>(), 56.0);
  // Per-tensor widths: every one of the 2 * 1 * 2 products costs bits(a) * bits(b) = 3 * 4.
  nn::QEinsum t(nn::QEinsumOptions("qd,kd->qk", {2, 2}, {1, 2})
                    .input_quantizer(QuantizerOptions({2, 2}).granularity(Granularity::Tensor))
                    .input2_quantizer(QuantizerOptions({1, 2}).granularity(Granularity::Tensor)));
  t->iq->i.fill_(1);
  t->iq->f.fill_(2);
  t->iq2->i.fill_(2);
  t->iq2->f.fill_(2);
  EXPECT_DOUBLE_EQ(t->ebops().item<double>(), 4 * 3 * 4.0);
}

TEST(QEinsum, OneTrainingStepMovesTheBitsOfBothOperands) {
  torch::manual_seed(32);
  nn::QEinsum e(nn::QEinsumOptions("qhd,khd->hqk", {4, 2, 3}, {4, 2, 3}));
  e->train();
  auto q = torch::randn({16, 4, 2, 3}), k = torch::randn({16, 4, 2, 3});
  auto y = e->forward_many({q, k});
  auto loss = (y - 0.25).square().mean() + 1e-4 * e->ebops();
  loss.backward();
  auto params = e->named_parameters();
  for (const char* name : {"iq.f", "iq2.f"}) {
    SCOPED_TRACE(name);
    ASSERT_TRUE(params.contains(name));
    ASSERT_TRUE(params[name].grad().defined());
    EXPECT_GT(params[name].grad().abs().sum().item<double>(), 0);
  }
  std::map<std::string, torch::Tensor> before;
  for (const auto& p : params) before[p.key()] = p.value().detach().clone();
  torch::optim::Adam opt(e->parameters(), torch::optim::AdamOptions(1e-2));
  opt.step();
  for (const char* name : {"iq.f", "iq2.f"})
    EXPECT_FALSE(torch::equal(before[name], params[name].detach())) << name;
}

TEST(QSoftmax, InputScaleIsTheSoftmaxOfTheScaledInput) {
  // Wide stages: the table softmax of c * x is close to LibTorch's softmax of c * x (exp and
  // reciprocal outputs at 2^-16), and differs from the softmax of x.
  torch::manual_seed(33);
  const double c = 1.0 / std::sqrt(8.0);
  nn::QSoftmax sm(with_wide_stages(nn::QSoftmaxOptions({2, 6}))
                      .input_scale(c)
                      .input_quantizer(wide_quantizer({2, 6}))
                      .output_quantizer(wide_quantizer({2, 6})));
  sm->eval();
  auto x = grid_rand({4, 2, 6}, 4);
  torch::NoGradGuard g;
  auto y = sm->forward(x);
  EXPECT_LT((y - torch::softmax(x * c, -1)).abs().max().item<double>(), 2e-3);
  EXPECT_GT((y - torch::softmax(x, -1)).abs().max().item<double>(), 2e-2);
  EXPECT_THROW(nn::QSoftmax(nn::QSoftmaxOptions({4}).input_scale(0)), std::invalid_argument);
}

// Two heads of self-attention composed from hgqt layers as the attention block expands them
// (dense Q, K without bias, V; reshape to heads; einsum; softmax with 1 / sqrt(key_dim); einsum;
// reshape; dense O), with wide quantizers, against LibTorch's multi_head_attention_forward given
// the same weights (torch's W is our kernel transposed; K's bias 0).
TEST(Attention, HeadsMatchLibTorchMultiHeadAttention) {
  torch::manual_seed(34);
  const int64_t B = 3, P = 5, E = 8, H = 2, D = E / H;
  auto dense = [&](bool bias) {
    auto o = nn::QDenseOptions(E, E).input_shape({P, E}).bias(bias);
    o.input_quantizer(wide_quantizer({P, E})).kernel_quantizer(wide_quantizer({E, E}));
    o.bias_quantizer(wide_quantizer({E}));
    nn::QDense d(o);
    torch::NoGradGuard g;
    d->kernel.copy_(grid_rand({E, E}, 1));
    if (bias) d->bias.copy_(grid_rand({E}, 1));
    return d;
  };
  auto wq = dense(true), wk = dense(false), wv = dense(true), wo = dense(true);
  nn::QEinsum scores(nn::QEinsumOptions("qhd,khd->hqk", {P, H, D}, {P, H, D})
                         .input_quantizer(wide_quantizer({P, H, D}))
                         .input2_quantizer(wide_quantizer({P, H, D})));
  nn::QSoftmax sm(with_wide_stages(nn::QSoftmaxOptions({H, P, P}))
                      .input_scale(1.0 / std::sqrt(static_cast<double>(D)))
                      .input_quantizer(wide_quantizer({H, P, P}))
                      .output_quantizer(wide_quantizer({H, P, P})));
  nn::QEinsum context(nn::QEinsumOptions("hqk,khv->qhv", {H, P, P}, {P, H, D})
                          .input_quantizer(wide_quantizer({H, P, P}))
                          .input2_quantizer(wide_quantizer({P, H, D})));
  for (auto* m : std::initializer_list<torch::nn::Module*>{wq.get(), wk.get(), wv.get(), wo.get(),
                                                           scores.get(), sm.get(), context.get()})
    m->eval();
  auto x = grid_rand({B, P, E}, 2);
  torch::NoGradGuard g;
  auto heads = [&](const torch::Tensor& t) { return t.view({B, P, H, D}); };
  auto s = scores->forward_many({heads(wq->forward(x)), heads(wk->forward(x))});
  auto c = context->forward_many({sm->forward(s), heads(wv->forward(x))});
  auto y = wo->forward(c.reshape({B, P, E}));

  namespace F = torch::nn::functional;
  auto in_w = torch::cat({wq->kernel.t(), wk->kernel.t(), wv->kernel.t()}, 0);
  auto in_b = torch::cat({wq->bias, torch::zeros({E}), wv->bias});
  auto xt = x.transpose(0, 1);  // [P, B, E]
  auto ref = std::get<0>(F::multi_head_attention_forward(
                             xt, xt, xt,
                             F::MultiheadAttentionForwardFuncOptions(
                                 E, H, in_w, in_b, torch::Tensor(), torch::Tensor(), false, 0.0,
                                 wo->kernel.t(), wo->bias)
                                 .training(false)
                                 .need_weights(false)))
                 .transpose(0, 1);
  ASSERT_EQ(y.sizes(), ref.sizes());
  const double err = (y - ref).abs().max().item<double>();
  EXPECT_LT(err, 5e-3) << "max |hgqt - LibTorch| = " << err;
  EXPECT_GT(ref.abs().max().item<double>(), 0.5);
}

TEST(QEinsumDense, ProjectionAlongTheParticleAxisMatchesMatmul) {
  // Linformer's projection: y[j, h, d] = sum_p x[p, h, d] W[p, j] + b[d].
  torch::manual_seed(35);
  const int64_t B = 3, P = 6, H = 2, D = 3, J = 4;
  nn::QEinsumDense e(nn::QEinsumDenseOptions("phd,pj->jhd", {P, H, D}, {P, J})
                         .bias(true)
                         .input_quantizer(wide_quantizer({P, H, D}))
                         .kernel_quantizer(wide_quantizer({P, J}))
                         .bias_quantizer(wide_quantizer({D})));
  {
    torch::NoGradGuard g;
    e->kernel.copy_(grid_rand({P, J}, 1));
    e->bias.copy_(grid_rand({D}, 1));
  }
  auto x = grid_rand({B, P, H, D}, 2);
  auto ref = torch::matmul(x.permute({0, 2, 3, 1}), e->kernel).permute({0, 3, 1, 2}) + e->bias;
  for (bool training : {false, true}) {
    SCOPED_TRACE(training ? "train" : "eval");
    e->train(training);
    auto y = e->forward(x);
    ASSERT_EQ(y.sizes().vec(), (std::vector<int64_t>{B, J, H, D}));
    EXPECT_TRUE(torch::equal(y, ref));
  }
  EXPECT_EQ(e->output_shape({P, H, D}), (std::vector<int64_t>{J, H, D}));
  EXPECT_THROW(e->output_shape({P + 1, H, D}), std::invalid_argument);
  EXPECT_THROW(nn::QEinsumDense(nn::QEinsumDenseOptions("phd,pj->jhd", {P, H, D}, {P + 1, J})),
               std::invalid_argument);
}

TEST(QEinsumDense, EbopsByHandAndOneTrainingStep) {
  // x [2, 1] (p, d) bits 1, 2; W [2, 2] (p, j) bits 1, 2 / 3, 4; "pd,pj->jd":
  // output (j=0): 1*1 + 2*3 = 7; output (j=1): 1*2 + 2*4 = 10. Total 17.
  nn::QEinsumDense e(
      nn::QEinsumDenseOptions("pd,pj->jd", {2, 1}, {2, 2})
          .input_quantizer(QuantizerOptions({2, 1}).granularity(Granularity::Element)));
  {
    torch::NoGradGuard g;
    e->iq->i.fill_(0);
    e->iq->f.copy_(torch::tensor({{1.}, {2.}}));
    e->kq->b.copy_(torch::tensor({{1., 2.}, {3., 4.}}));
    EXPECT_DOUBLE_EQ(e->ebops().item<double>(), 17.0);
  }
  torch::manual_seed(36);
  nn::QEinsumDense t(nn::QEinsumDenseOptions("phd,pj->jhd", {6, 2, 3}, {6, 4}).bias(true));
  t->train();
  auto y = t->forward(torch::randn({16, 6, 2, 3}));
  auto loss = (y - 0.5).square().mean() + 1e-4 * t->ebops();
  loss.backward();
  auto params = t->named_parameters();
  std::map<std::string, torch::Tensor> before;
  for (const auto& p : params) before[p.key()] = p.value().detach().clone();
  torch::optim::Adam opt(t->parameters(), torch::optim::AdamOptions(1e-2));
  opt.step();
  for (const char* name : {"kernel", "bias", "iq.f", "kq.b"}) {
    ASSERT_TRUE(params.contains(name)) << name;
    EXPECT_FALSE(torch::equal(before[name], params[name].detach())) << name;
  }
}
