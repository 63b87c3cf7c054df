// QConv1d / QConv2d: float behaviour against LibTorch, TensorFlow "same" padding, EBOPs by hand,
// one training step.
#include "hgqt/nn/conv.h"

#include <gtest/gtest.h>

#include <cmath>

#include "support/nn_values.h"

using namespace hgqt;
using namespace hgqt::quant;
using hgqt::testing::grid_rand;
using hgqt::testing::tf_pad;
using hgqt::testing::wide_quantizer;

namespace {
// Reference conv2d on channels-last data with a Keras kernel, via torch::conv2d.
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

struct Conv2dCase {
  int64_t h, w, c, f, kh, kw, sh, sw;
  bool same;
};
}  // namespace

TEST(Conv, Conv2dMatchesTorch) {
  torch::manual_seed(1);
  const std::vector<Conv2dCase> cases = {
      {5, 5, 2, 3, 3, 3, 1, 1, false},  // plain valid
      {7, 6, 2, 3, 3, 2, 2, 1, false},  // valid, stride 2 on one axis
      {5, 6, 3, 2, 3, 3, 2, 2, true},   // same, stride 2, odd and even sizes
      {4, 4, 1, 2, 2, 2, 1, 1, true},   // same with even kernel: pad only after
      {5, 6, 2, 2, 4, 3, 2, 2, true},   // same, asymmetric padding before and after
      {3, 3, 2, 2, 5, 5, 1, 1, true},   // same, kernel larger than the input
  };
  for (const auto& t : cases) {
    SCOPED_TRACE("case " + std::to_string(t.h) + "x" + std::to_string(t.w) + " k" +
                 std::to_string(t.kh) + "x" + std::to_string(t.kw) + " s" + std::to_string(t.sh) +
                 std::to_string(t.sw) + (t.same ? " same" : " valid"));
    nn::QConv2d conv(nn::QConv2dOptions(t.c, t.f, {t.kh, t.kw}, {t.h, t.w, t.c})
                         .strides({t.sh, t.sw})
                         .padding(t.same ? "same" : "valid")
                         .input_quantizer(wide_quantizer())
                         .kernel_quantizer(wide_quantizer())
                         .bias_quantizer(wide_quantizer()));
    {
      torch::NoGradGuard g;
      conv->kernel.copy_(grid_rand(conv->kernel.sizes().vec(), 1.0));
      conv->bias.copy_(grid_rand({t.f}, 1.0));
    }
    auto x = grid_rand({3, t.h, t.w, t.c}, 4.0);
    auto expect = ref_conv2d(x, conv->kernel.detach(), conv->bias.detach(), {t.sh, t.sw}, t.same);
    for (bool training : {true, false}) {
      conv->train(training);
      auto y = conv->forward(x);
      ASSERT_EQ(y.sizes(), expect.sizes());
      EXPECT_TRUE(torch::allclose(y, expect, 0, 1e-5)) << (y - expect).abs().max();
    }
    auto out = conv->output_shape({t.h, t.w, t.c});
    EXPECT_EQ(out, (std::vector<int64_t>{expect.size(1), expect.size(2), t.f}));
    auto pb = conv->pad_before({t.h, t.w, t.c});
    EXPECT_EQ(pb[0], tf_pad(t.h, t.kh, t.sh, t.same).first);
    EXPECT_EQ(pb[1], tf_pad(t.w, t.kw, t.sw, t.same).first);
  }
}

TEST(Conv, Conv2dSamePaddingGeometry) {
  // H = 5, K = 4, s = 2: out 3, total 3 -> before 1, after 2. W = 6, K = 3, s = 2: out 3, total 1
  // -> before 0, after 1.
  nn::QConv2d conv(nn::QConv2dOptions(2, 2, {4, 3}, {5, 6, 2}).strides({2, 2}).padding("same"));
  EXPECT_EQ(conv->pad_before({5, 6, 2}), (std::vector<int64_t>{1, 0}));
  auto g = nn::conv_geometry({5, 6}, {4, 3}, {2, 2}, "same");
  EXPECT_EQ(g.pad_after, (std::vector<int64_t>{2, 1}));
  EXPECT_EQ(conv->output_shape({5, 6, 2}), (std::vector<int64_t>{3, 3, 2}));
  EXPECT_EQ(conv->type_name(), "conv2d");
  EXPECT_EQ(conv->options.strides(), (std::vector<int64_t>{2, 2}));
  // Default strides are filled in.
  nn::QConv1d c1(nn::QConv1dOptions(1, 1, {3}, {8, 1}));
  EXPECT_EQ(c1->options.strides(), (std::vector<int64_t>{1}));
  EXPECT_EQ(c1->type_name(), "conv1d");
  EXPECT_EQ(c1->output_shape({8, 1}), (std::vector<int64_t>{6, 1}));
  // Kernel layout and quantizer shapes.
  EXPECT_EQ(conv->kernel.sizes().vec(), (std::vector<int64_t>{4, 3, 2, 2}));
  auto qs = conv->quantizers();
  ASSERT_EQ(qs.size(), 3u);
  EXPECT_EQ(qs[0].role, "input");
  EXPECT_EQ(qs[0].quantizer->options.shape(), (std::vector<int64_t>{5, 6, 2}));
  EXPECT_TRUE(qs[0].quantizer->options.batch_axis());
  EXPECT_EQ(qs[1].role, "kernel");
  EXPECT_FALSE(qs[1].quantizer->options.batch_axis());
  EXPECT_TRUE(qs[1].constant.is_same(conv->kernel));
  EXPECT_EQ(qs[2].role, "bias");
  // Bad shapes throw.
  EXPECT_THROW(conv->output_shape({5, 6, 3}), std::invalid_argument);
  EXPECT_THROW(nn::QConv2d(nn::QConv2dOptions(2, 2, {3, 3})),
               std::invalid_argument);  // no input_shape
  EXPECT_THROW(nn::QConv2d(nn::QConv2dOptions(2, 2, {3, 3}, {2, 2, 2})), std::invalid_argument);
  EXPECT_THROW(nn::QConv2d(nn::QConv2dOptions(2, 2, {3, 3}, {5, 5, 2}).padding("full")),
               std::invalid_argument);
  EXPECT_THROW(conv->forward(torch::zeros({1, 5, 5, 2})), c10::Error);
}

TEST(Conv, Conv1dMatchesTorch) {
  torch::manual_seed(2);
  struct Case {
    int64_t l, c, f, k, s;
    bool same;
  };
  for (const auto& t : std::vector<Case>{{9, 2, 3, 3, 1, false},
                                         {9, 2, 3, 3, 2, false},
                                         {8, 3, 2, 4, 1, true},
                                         {9, 3, 2, 4, 2, true},
                                         {7, 1, 2, 2, 3, true}}) {
    SCOPED_TRACE("L " + std::to_string(t.l) + " k " + std::to_string(t.k) + " s " +
                 std::to_string(t.s) + (t.same ? " same" : " valid"));
    nn::QConv1d conv(nn::QConv1dOptions(t.c, t.f, {t.k}, {t.l, t.c})
                         .strides({t.s})
                         .padding(t.same ? "same" : "valid")
                         .activation(nn::Activation::ReLU)
                         .input_quantizer(wide_quantizer())
                         .kernel_quantizer(wide_quantizer())
                         .bias_quantizer(wide_quantizer())
                         .output_quantizer(wide_quantizer()));
    {
      torch::NoGradGuard g;
      conv->kernel.copy_(grid_rand(conv->kernel.sizes().vec(), 1.0));
      conv->bias.copy_(grid_rand({t.f}, 1.0));
    }
    auto x = grid_rand({4, t.l, t.c}, 4.0);
    auto expect =
        torch::relu(ref_conv1d(x, conv->kernel.detach(), conv->bias.detach(), t.s, t.same));
    for (bool training : {true, false}) {
      conv->train(training);
      auto y = conv->forward(x);
      ASSERT_EQ(y.sizes(), expect.sizes());
      EXPECT_TRUE(torch::allclose(y, expect, 0, 1e-5)) << (y - expect).abs().max();
    }
    EXPECT_EQ(conv->output_shape({t.l, t.c}), (std::vector<int64_t>{expect.size(1), t.f}));
    EXPECT_EQ(conv->pad_before({t.l, t.c})[0], tf_pad(t.l, t.k, t.s, t.same).first);
    EXPECT_EQ(conv->quantizers().back().role, "output");
    EXPECT_EQ(conv->quantizers().back().quantizer->options.shape(), conv->output_shape({t.l, t.c}));
  }
}

TEST(Conv, ForwardIsQuantizedConvolution) {
  // Default quantizers: the forward equals the convolution of the quantized operands.
  torch::manual_seed(3);
  nn::QConv2d conv(nn::QConv2dOptions(2, 3, {3, 3}, {6, 6, 2}).padding("same"));
  {
    torch::NoGradGuard g;
    conv->bias.uniform_(-0.5, 0.5);
  }
  conv->eval();
  auto x = torch::randn({2, 6, 6, 2});
  auto expect = ref_conv2d(conv->iq->apply_eval(x), conv->kq->apply_eval(conv->kernel),
                           conv->bq->apply_eval(conv->bias), {1, 1}, true);
  EXPECT_TRUE(torch::allclose(conv->forward(x), expect, 1e-6, 1e-6));
}

TEST(Conv, EbopsByHandConv1d) {
  // Input [3, 1] with bits 3, 5, 4; kernel [2, 1, 1] with bits 2, 1; valid -> 2 positions:
  // 3*2 + 5*1 = 11 and 5*2 + 4*1 = 14; bias bits 3 times 2 output elements = 6. Total 31.
  nn::QConv1d conv(nn::QConv1dOptions(1, 1, {2}, {3, 1}));
  torch::NoGradGuard g;
  conv->iq->i.copy_(torch::tensor({{1.}, {2.}, {0.}}));
  conv->iq->f.copy_(torch::tensor({{2.}, {3.}, {4.}}));
  conv->kq->b.copy_(torch::tensor({2., 1.}).view({2, 1, 1}));
  conv->bq->i.fill_(1);
  conv->bq->f.fill_(2);
  EXPECT_DOUBLE_EQ(conv->ebops().item<double>(), 31.0);
}

TEST(Conv, EbopsByHandConv2dSamePadding) {
  // 2x2 input, 2x2 kernel, same: pad after only, so the edge positions see fewer inputs.
  // Input bits a..d = 1, 2, 3, 4; kernel bits p..s = 1, 2, 3, 4.
  // (0,0): a p + b q + c r + d s = 30; (0,1): b p + d r = 14; (1,0): c p + d q = 11; (1,1): d p
  // = 4.
  nn::QConv2d conv(nn::QConv2dOptions(1, 1, {2, 2}, {2, 2, 1}).padding("same").bias(false));
  torch::NoGradGuard g;
  conv->iq->i.fill_(0);
  conv->iq->f.copy_(torch::tensor({1., 2., 3., 4.}).view({2, 2, 1}));
  conv->kq->b.copy_(torch::tensor({1., 2., 3., 4.}).view({2, 2, 1, 1}));
  EXPECT_DOUBLE_EQ(conv->ebops().item<double>(), 59.0);
  // Channels and filters multiply through: 2 filters with the same bits double it.
  nn::QConv2d c2(nn::QConv2dOptions(1, 2, {2, 2}, {2, 2, 1}).padding("same").bias(false));
  c2->iq->i.fill_(0);
  c2->iq->f.copy_(torch::tensor({1., 2., 3., 4.}).view({2, 2, 1}));
  c2->kq->b.copy_(torch::tensor({1., 2., 3., 4.}).view({2, 2, 1, 1}).expand({2, 2, 1, 2}));
  EXPECT_DOUBLE_EQ(c2->ebops().item<double>(), 118.0);
}

TEST(Conv, EbopsEqualsDenseOfTheUnrolledLayer) {
  // Per-tensor bits b_in, b_w: EBOPs = b_in * b_w * (number of products inside the input).
  nn::QConv2d conv(nn::QConv2dOptions(2, 3, {3, 3}, {5, 4, 2}).strides({2, 1}).padding("same"));
  torch::NoGradGuard g;
  conv->iq->i.fill_(1);
  conv->iq->f.fill_(2);  // 3 bits
  conv->kq->b.fill_(5);
  conv->bq->i.fill_(0);
  conv->bq->f.fill_(4);  // 4 bits
  // Count the products: for each output position, the kernel taps landing inside the input.
  auto g2 = nn::conv_geometry({5, 4}, {3, 3}, {2, 1}, "same");
  int64_t taps = 0;
  for (int64_t oh = 0; oh < g2.out[0]; ++oh)
    for (int64_t ow = 0; ow < g2.out[1]; ++ow)
      for (int64_t u = 0; u < 3; ++u)
        for (int64_t v = 0; v < 3; ++v) {
          const int64_t h = oh * 2 - g2.pad_before[0] + u, w = ow - g2.pad_before[1] + v;
          if (h >= 0 && h < 5 && w >= 0 && w < 4) ++taps;
        }
  const double expect = 3.0 * 5.0 * taps * 2 /*C*/ * 3 /*F*/ + 4.0 * g2.out[0] * g2.out[1] * 3;
  EXPECT_DOUBLE_EQ(conv->ebops().item<double>(), expect);
}

TEST(Conv, OneTrainingStep) {
  torch::manual_seed(4);
  for (int d : {1, 2}) {
    SCOPED_TRACE("conv" + std::to_string(d) + "d");
    std::shared_ptr<torch::nn::Module> m;
    nn::QLayer* layer = nullptr;
    torch::Tensor x;
    if (d == 1) {
      nn::QConv1d c(nn::QConv1dOptions(2, 4, {3}, {10, 2}).strides({2}).padding("same"));
      m = c.ptr();
      layer = c.get();
      x = torch::randn({8, 10, 2});
    } else {
      nn::QConv2d c(nn::QConv2dOptions(2, 4, {3, 3}, {6, 6, 2}).strides({2, 2}).padding("same"));
      m = c.ptr();
      layer = c.get();
      x = torch::randn({8, 6, 6, 2});
    }
    m->train();
    auto params = m->named_parameters();
    {
      torch::NoGradGuard g;
      params["bias"].uniform_(-0.3, 0.3);
    }
    auto y = layer->forward(x);
    auto loss = (y - 0.5).square().mean() + 1e-4 * layer->ebops();
    loss.backward();
    for (const char* name : {"kernel", "bias", "iq.f", "kq.b", "bq.f"}) {
      SCOPED_TRACE(name);
      ASSERT_TRUE(params.contains(name));
      auto gr = params[name].grad();
      ASSERT_TRUE(gr.defined());
      EXPECT_TRUE(torch::isfinite(gr).all().item<bool>());
      EXPECT_GT(gr.abs().sum().item<double>(), 0);
    }
    std::map<std::string, torch::Tensor> before;
    for (const auto& p : params) before[p.key()] = p.value().detach().clone();
    torch::optim::Adam opt(m->parameters(), torch::optim::AdamOptions(1e-2));
    opt.step();
    for (const char* name : {"kernel", "bias", "iq.f", "kq.b"})
      EXPECT_FALSE(torch::equal(before[name], params[name].detach())) << name;
  }
}
