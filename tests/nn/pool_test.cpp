// MaxPool / AvgPool (1-D, 2-D, global) against LibTorch, power-of-two windows; Reshape.
#include "hgqt/nn/pool.h"

#include <gtest/gtest.h>

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
  // The global average over 3 x 3 positions is not exact.
  EXPECT_TRUE(throws_with(
      [&] {
        ga->output_shape({3, 3, 2});
      },
      "window 3x3 = 9 elements is not a power of two"));
  EXPECT_THROW(ga->forward(torch::randn({1, 3, 3, 2})), std::invalid_argument);
  // Global max has no such limit.
  EXPECT_EQ(gm->output_shape({3, 3, 2}), (std::vector<int64_t>{2}));
}

TEST(Pool, AvgNeedsPowerOfTwoWindow) {
  EXPECT_TRUE(throws_with(
      [] {
        nn::AvgPool(nn::PoolOptions({3, 3}));
      },
      "avg_pool window 3x3 = 9 elements is not a power of two; the exact "
      "average needs a power-of-two window"));
  EXPECT_TRUE(throws_with([] { nn::AvgPool(nn::PoolOptions({3})); }, "window 3 = 3 elements"));
  EXPECT_NO_THROW(nn::AvgPool(nn::PoolOptions({4, 2})));
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
