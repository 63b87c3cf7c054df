// QAdd and QConcatenate.
#include "hgqt/nn/merge.h"

#include <gtest/gtest.h>

#include <functional>

#include "support/nn_values.h"

using namespace hgqt;
using namespace hgqt::quant;
using hgqt::testing::grid_rand;
using hgqt::testing::wide_quantizer;

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

TEST(Merge, AddSumsActivatesQuantizes) {
  torch::manual_seed(30);
  nn::QAdd add(
      nn::QAddOptions({4, 3}).activation(nn::Activation::ReLU).output_quantizer(wide_quantizer()));
  EXPECT_EQ(add->type_name(), "add");
  EXPECT_EQ(add->num_inputs(), 0);
  auto a = grid_rand({5, 4, 3}, 2), b = grid_rand({5, 4, 3}, 2), c = grid_rand({5, 4, 3}, 2);
  for (bool training : {true, false}) {
    add->train(training);
    EXPECT_TRUE(torch::allclose(add->forward_many({a, b, c}), torch::relu(a + b + c), 0, 1e-6));
  }
  EXPECT_EQ(add->output_shape_many({{4, 3}, {4, 3}}), (std::vector<int64_t>{4, 3}));
  auto qs = add->quantizers();
  ASSERT_EQ(qs.size(), 1u);
  EXPECT_EQ(qs[0].role, "output");
  EXPECT_EQ(qs[0].quantizer->options.shape(), (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(add->ebops().item<double>(), 0.0);
  // Default quantizer rounds to 2^-6.
  nn::QAdd q(
      nn::QAddOptions({2}).output_quantizer(default_quantizer_options(Place::Datalane, {2})));
  q->eval();
  auto x = torch::tensor({{0.30, -0.11}}), y = torch::tensor({{0.01, 0.02}});
  EXPECT_TRUE(torch::allclose(q->forward_many({x, y}), torch::round((x + y) * 64) / 64));
  // Without quantizer and shape: any common shape.
  nn::QAdd plain;
  EXPECT_TRUE(plain->quantizers().empty());
  EXPECT_TRUE(torch::equal(plain->forward_many({a, b}), a + b));
}

TEST(Merge, AddShapeMismatchThrows) {
  nn::QAdd add(nn::QAddOptions({4, 3}));
  EXPECT_TRUE(throws_with([&] { add->output_shape_many({{4, 3}, {3, 4}}); }, "[3, 4]"));
  EXPECT_TRUE(throws_with(
      [&] {
        add->forward_many({torch::zeros({2, 4, 3}), torch::zeros({2, 4, 2})});
      },
      "[4, 2]"));
  EXPECT_THROW(add->output_shape_many({{2, 3}, {2, 3}}),
               std::invalid_argument);  // not the built shape
  EXPECT_THROW(add->forward(torch::zeros({2, 4, 3})), std::invalid_argument);
  EXPECT_THROW(add->forward_many({torch::zeros({2, 4, 3})}), std::invalid_argument);
  EXPECT_THROW(add->output_shape({4, 3}), std::invalid_argument);
  EXPECT_THROW(nn::QAdd(nn::QAddOptions().output_quantizer(wide_quantizer())),
               std::invalid_argument);
}

TEST(Merge, AddTrainingStep) {
  torch::manual_seed(31);
  nn::QAdd add(
      nn::QAddOptions({6}).output_quantizer(default_quantizer_options(Place::Datalane, {6})));
  add->train();
  auto a = torch::randn({8, 6}, torch::requires_grad()), b = torch::randn({8, 6});
  auto loss = (add->forward_many({a, b}) - 0.1).square().mean();
  loss.backward();
  auto f = add->named_parameters()["oq.f"];
  ASSERT_TRUE(f.grad().defined());
  EXPECT_TRUE(torch::isfinite(f.grad()).all().item<bool>());
  EXPECT_GT(f.grad().abs().sum().item<double>(), 0);
  EXPECT_GT(a.grad().abs().sum().item<double>(), 0);
  auto before = f.detach().clone();
  torch::optim::Adam opt(add->parameters(), torch::optim::AdamOptions(1e-2));
  opt.step();
  EXPECT_FALSE(torch::equal(before, f.detach()));
}

TEST(Merge, ConcatenateChannelsAndOtherAxes) {
  nn::QConcatenate cat;
  EXPECT_EQ(cat->type_name(), "concatenate");
  EXPECT_EQ(cat->num_inputs(), 0);
  auto a = torch::randn({2, 4, 4, 3}), b = torch::randn({2, 4, 4, 5});
  auto y = cat->forward_many({a, b});
  EXPECT_TRUE(torch::equal(y, torch::cat({a, b}, 3)));
  EXPECT_EQ(cat->output_shape_many({{4, 4, 3}, {4, 4, 5}}), (std::vector<int64_t>{4, 4, 8}));
  EXPECT_EQ(cat->resolved_axis(3), 2);
  EXPECT_TRUE(cat->quantizers().empty());
  nn::QConcatenate cat0(nn::QConcatenateOptions(0));
  auto c = torch::randn({2, 3, 6});
  auto d = torch::randn({2, 1, 6});
  EXPECT_TRUE(torch::equal(cat0->forward_many({c, d, c}), torch::cat({c, d, c}, 1)));
  EXPECT_EQ(cat0->output_shape_many({{3, 6}, {1, 6}, {3, 6}}), (std::vector<int64_t>{7, 6}));
}

TEST(Merge, ConcatenateMismatchThrows) {
  nn::QConcatenate cat;
  EXPECT_TRUE(throws_with([&] { cat->output_shape_many({{4, 4, 3}, {4, 2, 3}}); }, "[4, 2, 3]"));
  EXPECT_THROW(cat->output_shape_many({{4, 3}, {4, 4, 3}}), std::invalid_argument);
  EXPECT_THROW(cat->forward_many({torch::zeros({2, 4, 3}), torch::zeros({2, 3, 3})}),
               std::invalid_argument);
  EXPECT_THROW(cat->forward(torch::zeros({2, 4, 3})), std::invalid_argument);
  EXPECT_THROW(cat->output_shape({4, 3}), std::invalid_argument);
  nn::QConcatenate bad(nn::QConcatenateOptions(3));
  EXPECT_THROW(bad->output_shape_many({{4, 3}, {4, 3}}), std::invalid_argument);
}
