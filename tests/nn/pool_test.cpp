// MaxPool / AvgPool (1-D, 2-D, global) against LibTorch and against loops (the quantized scale of
// an average over a window that is not a power of two); Reshape.
#include "hgqt/nn/pool.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>

using namespace hgqt;

namespace {
bool throws_with(const std::function<void()>& fn, const std::string& text) {
  try {
    fn();
  } catch (const std::invalid_argument& e) {
    if (std::string(e.what()).find(text) != std::string::npos) return true;
    ADD_FAILURE() << "message '" << e.what() << "' lacks '" << text << "'";
    return false;
  }
  return false;
}
}  // namespace

TEST(Pool, MaxAndAvg2dMatchTorch) {
  torch::manual_seed(20);
  struct Case {
    std::vector<int64_t> k, s;
    int64_t h, w;
  };
  for (const auto& t :
       std::vector<Case>{{{2, 2}, {}, 6, 6},
                         {{2, 2}, {}, 7, 5},  // odd sizes: the last row / column is dropped
                         {{2, 2}, {1, 1}, 5, 4},
                         {{4, 2}, {2, 1}, 9, 6},
                         {{1, 2}, {1, 2}, 3, 8}}) {
    auto x = torch::randn({3, t.h, t.w, 4});
    auto xc = x.permute({0, 3, 1, 2});
    const auto s = t.s.empty() ? t.k : t.s;
    nn::MaxPool mp(nn::PoolOptions(t.k).strides(t.s));
    nn::AvgPool ap(nn::PoolOptions(t.k).strides(t.s));
    auto mx = torch::max_pool2d(xc, t.k, s).permute({0, 2, 3, 1});
    auto av = torch::avg_pool2d(xc, t.k, s).permute({0, 2, 3, 1});
    EXPECT_TRUE(torch::allclose(mp->forward(x), mx, 0, 1e-6));
    EXPECT_TRUE(torch::allclose(ap->forward(x), av, 0, 1e-6));
    const std::vector<int64_t> out{mx.size(1), mx.size(2), 4};
    EXPECT_EQ(mp->output_shape({t.h, t.w, 4}), out);
    EXPECT_EQ(ap->output_shape({t.h, t.w, 4}), out);
    EXPECT_EQ(mp->options.strides(), s);  // default strides = pool_size, filled in
  }
  nn::MaxPool mp(nn::PoolOptions({2, 2}));
  EXPECT_EQ(mp->type_name(), "max_pool");
  EXPECT_EQ(nn::AvgPool(nn::PoolOptions({2, 2}))->type_name(), "avg_pool");
  EXPECT_TRUE(mp->quantizers().empty());
  EXPECT_EQ(mp->ebops().item<double>(), 0.0);
  EXPECT_THROW(mp->output_shape({1, 1, 3}), std::invalid_argument);  // window larger than input
  EXPECT_THROW(mp->output_shape({8, 3}), std::invalid_argument);     // 1-D input to a 2-D pool
  EXPECT_THROW(nn::MaxPool(nn::PoolOptions({2, 2}).padding("same")), std::invalid_argument);
}

TEST(Pool, MaxAndAvg1dMatchTorch) {
  torch::manual_seed(21);
  auto x = torch::randn({2, 11, 3});
  auto xc = x.permute({0, 2, 1});
  nn::MaxPool mp(nn::PoolOptions({4}).strides({2}));
  nn::AvgPool ap(nn::PoolOptions({4}).strides({2}));
  EXPECT_TRUE(
      torch::allclose(mp->forward(x), torch::max_pool1d(xc, {4}, {2}).permute({0, 2, 1}), 0, 1e-6));
  EXPECT_TRUE(
      torch::allclose(ap->forward(x), torch::avg_pool1d(xc, {4}, {2}).permute({0, 2, 1}), 0, 1e-6));
  EXPECT_EQ(mp->output_shape({11, 3}), (std::vector<int64_t>{4, 3}));
}

TEST(Pool, Global) {
  torch::manual_seed(22);
  auto x = torch::randn({3, 4, 2, 5});
  nn::MaxPool gm(nn::PoolOptions().global_pool(true));
  nn::AvgPool ga(nn::PoolOptions().global_pool(true));
  EXPECT_EQ(gm->type_name(), "global_max_pool");
  EXPECT_EQ(ga->type_name(), "global_avg_pool");
  EXPECT_TRUE(torch::allclose(gm->forward(x), x.amax({1, 2}), 0, 1e-6));
  EXPECT_TRUE(torch::allclose(ga->forward(x), x.mean({1, 2}), 0, 1e-6));
  EXPECT_EQ(gm->output_shape({4, 2, 5}), (std::vector<int64_t>{5}));
  EXPECT_EQ(ga->window({4, 2, 5}), (std::vector<int64_t>{4, 2}));
  EXPECT_EQ(ga->window_strides({4, 2, 5}), (std::vector<int64_t>{4, 2}));
  // 1-D, and pool_size given equal to the extent.
  auto x1 = torch::randn({2, 8, 3});
  nn::AvgPool g1(nn::PoolOptions({8}).global_pool(true));
  EXPECT_TRUE(torch::allclose(g1->forward(x1), x1.mean(1), 0, 1e-6));
  EXPECT_THROW(g1->output_shape({4, 3}), std::invalid_argument);
  // The global average over 3 x 3 positions: the sum times 1/9 at 8 significant bits.
  EXPECT_EQ(ga->output_shape({3, 3, 2}), (std::vector<int64_t>{2}));
  EXPECT_EQ(gm->output_shape({3, 3, 2}), (std::vector<int64_t>{2}));
}

// The scale of an average over a count that is not a power of two, by hand: 1/9 with 8
// significant bits is round(2^11 / 9) = round(227.56) = 228 at 2^-11, without its trailing zeros
// 57 at 2^-9; 1/3 with 8 bits is round(2^9 / 3) = 171 at 2^-9; 1/30 with 4 bits round(2^8 / 30)
// = round(8.53) = 9 at 2^-8; 1/5 with 2 bits round(2^4 / 5) = round(3.2) = 3 at 2^-4 (mult may
// reach 2^bits: 1/17 with 2 bits round(2^6 / 17) = 4 at 2^-6, that is 1 at 2^-4).
TEST(Pool, AvgScaleByHand) {
  struct Case {
    int64_t count;
    int bits;
    int64_t mult;
    int shift;
  };
  // The cases above; powers of two (32, 1) are exact shifts whatever the bits.
  for (const Case& c : {Case{9, 8, 57, 9}, Case{3, 8, 171, 9}, Case{30, 4, 9, 8}, Case{5, 2, 3, 4},
                        Case{17, 2, 1, 4}, Case{32, 3, 1, 5}, Case{1, 8, 1, 0}}) {
    const auto s = util::avg_scale(c.count, c.bits);
    EXPECT_EQ(s.mult, c.mult) << c.count << " at " << c.bits << " bits";
    EXPECT_EQ(s.shift, c.shift) << c.count << " at " << c.bits << " bits";
  }
  // The relative error stays within 2^-bits.
  for (int64_t n = 1; n < 300; ++n)
    for (int b : {2, 5, 8, 16}) {
      const auto s = util::avg_scale(n, b);
      EXPECT_LE(std::abs(s.value() * static_cast<double>(n) - 1.0), std::ldexp(1.0, -b)) << n;
    }
  EXPECT_THROW(util::avg_scale(0, 8), std::invalid_argument);
  EXPECT_THROW(util::avg_scale(3, 1), std::invalid_argument);
  EXPECT_THROW(util::avg_scale(3, 17), std::invalid_argument);
}

// Avg over windows that are not powers of two: the exact window sums (written out by loops)
// times the quantized scale, global and windowed, 1-D and 2-D.
TEST(Pool, AvgOverOtherWindowsIsTheScaledSum) {
  torch::manual_seed(3);
  auto x = torch::randint(-20, 20, {2, 3, 3, 2}, torch::kFloat64) / 8;
  nn::AvgPool ga(nn::PoolOptions().global_pool(true));  // 9 positions, 8 bits: 57 / 2^9
  auto y = ga->forward(x);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, 2}));
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t c = 0; c < 2; ++c) {
      double s = 0;
      for (int64_t h = 0; h < 3; ++h)
        for (int64_t w = 0; w < 3; ++w) s += x[b][h][w][c].item<double>();
      EXPECT_EQ(y[b][c].item<double>(), s * 57 / 512) << b << " " << c;
    }
  // 1-D windows of 3, strides 3 on a length 7 (the last element left over), 4 scale bits:
  // round(2^5 / 3) = 11 at 2^-5.
  auto x1 = torch::randint(-20, 20, {2, 7, 3}, torch::kFloat64) / 4;
  nn::AvgPool a1(nn::PoolOptions({3}).scale_bits(4));
  auto y1 = a1->forward(x1);
  ASSERT_EQ(y1.sizes(), (std::vector<int64_t>{2, 2, 3}));
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t o = 0; o < 2; ++o)
      for (int64_t c = 0; c < 3; ++c) {
        double s = 0;
        for (int64_t k = 0; k < 3; ++k) s += x1[b][3 * o + k][c].item<double>();
        EXPECT_EQ(y1[b][o][c].item<double>(), s * 11 / 32);
      }
  // 2-D windows 3x1, strides 1: round(2^9 / 3) = 171 at 2^-9.
  nn::AvgPool a2(nn::PoolOptions({3, 1}).strides({1, 1}));
  auto y2 = a2->forward(x);
  ASSERT_EQ(y2.sizes(), (std::vector<int64_t>{2, 1, 3, 2}));
  for (int64_t w = 0; w < 3; ++w) {
    double s = 0;
    for (int64_t h = 0; h < 3; ++h) s += x[1][h][w][1].item<double>();
    EXPECT_EQ(y2[1][0][w][1].item<double>(), s * 171 / 512);
  }
  EXPECT_TRUE(throws_with([] { nn::AvgPool(nn::PoolOptions({3}).scale_bits(1)); },
                          "avg_pool: scale_bits 1 outside [2, 16]"));
  EXPECT_TRUE(throws_with([] { nn::AvgPool(nn::PoolOptions({3}).scale_bits(17)); },
                          "scale_bits 17 outside [2, 16]"));
  EXPECT_NO_THROW(nn::MaxPool(nn::PoolOptions({3, 3})));
}

TEST(Pool, GradientReachesInput) {
  auto x = torch::randn({2, 4, 4, 3}, torch::requires_grad());
  nn::MaxPool mp(nn::PoolOptions({2, 2}));
  nn::AvgPool ap(nn::PoolOptions({2, 2}));
  (mp->forward(x).sum() + ap->forward(x).square().sum()).backward();
  EXPECT_TRUE(torch::isfinite(x.grad()).all().item<bool>());
  EXPECT_GT(x.grad().abs().sum().item<double>(), 0);
}

// ------------------------------------------------------------------------- Reshape
TEST(Reshape, RowMajorView) {
  nn::Reshape r(nn::ReshapeOptions({2, -1, 3}));
  EXPECT_EQ(r->type_name(), "reshape");
  EXPECT_EQ(r->output_shape({4, 6}), (std::vector<int64_t>{2, 4, 3}));
  auto x = torch::randn({5, 4, 6});
  auto y = r->forward(x);
  EXPECT_EQ(y.sizes().vec(), (std::vector<int64_t>{5, 2, 4, 3}));
  EXPECT_TRUE(torch::equal(y, x.reshape({5, 2, 4, 3})));
  nn::Reshape flat(nn::ReshapeOptions({-1}));
  EXPECT_EQ(flat->output_shape({3, 3, 2}), (std::vector<int64_t>{18}));
  EXPECT_EQ(r->ebops().item<double>(), 0.0);
}

TEST(Reshape, SizeMismatchThrows) {
  nn::Reshape r(nn::ReshapeOptions({5, 3}));
  EXPECT_TRUE(throws_with([&] { r->output_shape({4, 4}); }, "[4, 4]"));
  EXPECT_TRUE(throws_with([&] { r->output_shape({4, 4}); }, "[5, 3]"));
  EXPECT_THROW(r->forward(torch::zeros({2, 4, 4})), std::invalid_argument);
  nn::Reshape w(nn::ReshapeOptions({-1, 7}));
  EXPECT_THROW(w->output_shape({4, 4}), std::invalid_argument);
  EXPECT_THROW(nn::Reshape(nn::ReshapeOptions({-1, -1})), std::invalid_argument);
  EXPECT_THROW(nn::Reshape(nn::ReshapeOptions({0, 4})), std::invalid_argument);
}
