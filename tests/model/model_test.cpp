// Model building from specs, checkpoints round trip, summary.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "hgqt/model/checkpoint.h"
#include "hgqt/model/summary.h"

using namespace hgqt;

namespace {
config::ModelSpec mlp_spec() {
  return config::parse_model_yaml(R"(
input_shape: [4, 2]
quantizer_defaults:
  weight: {b: 6}
layers:
  - {type: flatten}
  - {type: dense, units: 5, activation: relu, kernel_quantizer: {granularity: channel}}
  - {type: dense, units: 3, output_quantizer: {i: 4, f: 4}}
)",
                                  "test");
}
std::string temp_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() /
           ("hgqt_model_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}
}  // namespace

TEST(Model, BuildsFromSpecWithOverrides) {
  model::HGQModel m(mlp_spec());
  ASSERT_EQ(m->layers().size(), 3u);
  EXPECT_EQ(m->output_shape(), (std::vector<int64_t>{3}));
  auto* d0 = dynamic_cast<nn::QDenseImpl*>(m->layers()[1].layer);
  ASSERT_NE(d0, nullptr);
  EXPECT_EQ(d0->kq->options.b(), 6);                               // model default for weights
  EXPECT_EQ(d0->kq->param_shape(), (std::vector<int64_t>{1, 5}));  // layer's channel override
  auto* d1 = dynamic_cast<nn::QDenseImpl*>(m->layers()[2].layer);
  ASSERT_TRUE(d1->oq);
  EXPECT_EQ(d1->oq->options.f(), 4);
  EXPECT_EQ(m->forward(torch::randn({7, 4, 2})).sizes(), (std::vector<int64_t>{7, 3}));
  EXPECT_GT(m->ebops().item<double>(), 0);
}

TEST(Model, DenseOnSeveralAxesAppliesToEveryPosition) {
  // Without a flatten, a dense layer on [4, 2] is one kernel [2, 3] at each of the 4 positions.
  model::HGQModel m(
      config::parse_model_yaml("input_shape: [4, 2]\nlayers:\n  - {type: dense, units: 3}\n", "t"));
  EXPECT_EQ(m->output_shape(), (std::vector<int64_t>{4, 3}));
  auto* d = m->layers()[0].dense;
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->kernel.sizes().vec(), (std::vector<int64_t>{2, 3}));
  m->eval();
  torch::NoGradGuard g;
  auto x = torch::randn({5, 4, 2});
  EXPECT_TRUE(torch::equal(m->forward(x), d->forward_composed(x)));
}

TEST(Model, CheckpointRoundTripIsExact) {
  torch::manual_seed(1);
  model::HGQModel m(mlp_spec());
  m->train();
  auto x = torch::randn({16, 4, 2});
  m->forward(x);  // moves activation integer bits
  {
    torch::NoGradGuard g;
    for (auto& p : m->parameters()) p.add_(torch::randn_like(p) * 0.1);
  }
  m->eval();
  const auto dir = temp_dir("ckpt");
  model::CheckpointMeta meta;
  meta.epoch = 3;
  meta.val_accuracy = 0.5;
  meta.feature_mean = {1, 2};
  model::save_checkpoint(dir + "/a.pt", m, meta);
  auto back = model::load_checkpoint(dir + "/a.pt");
  EXPECT_EQ(back.meta.epoch, 3);
  EXPECT_EQ(back.meta.feature_mean, (std::vector<float>{1, 2}));
  EXPECT_TRUE(torch::equal(back.model->forward(x), m->forward(x)));
  EXPECT_FALSE(std::filesystem::exists(dir + "/a.pt.tmp"));
  EXPECT_EQ(model::resolve_checkpoint_path(dir + "/a.pt"), dir + "/a.pt");
  EXPECT_THROW(model::resolve_checkpoint_path(dir), std::runtime_error);
  // NaN figures (a diverged validation loss, a regression run's accuracy) are written as JSON
  // null and read back as NaN.
  meta.val_loss = std::nan("");
  meta.val_accuracy = std::nan("");
  model::save_checkpoint(dir + "/nan.pt", m, meta);
  auto nan_back = model::load_checkpoint(dir + "/nan.pt");
  EXPECT_TRUE(std::isnan(nan_back.meta.val_loss));
  EXPECT_TRUE(std::isnan(nan_back.meta.val_accuracy));
}

TEST(Model, LoadingGarbageIsAClearError) {
  const auto dir = temp_dir("garbage");
  { std::ofstream(dir + "/x.pt") << "not a checkpoint"; }
  try {
    model::load_checkpoint(dir + "/x.pt");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("not an hgqt checkpoint"), std::string::npos) << e.what();
  }
  EXPECT_THROW(model::load_checkpoint(dir + "/missing.pt"), std::runtime_error);
}

TEST(Model, SummaryTable) {
  model::HGQModel m(mlp_spec());
  auto rows = model::summarize(m);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[1].type, "dense");
  EXPECT_DOUBLE_EQ(rows[1].weight_bits.mean, 6.0);
  EXPECT_DOUBLE_EQ(rows[1].activation_bits.mean, 8.0);  // i 2 + f 6
  EXPECT_EQ(rows[1].weight_bits.count, 40);
  double total = 0;
  for (auto& r : rows) total += r.ebops;
  EXPECT_NEAR(total, m->ebops().item<double>(), 1e-6);
  auto text = model::format_summary(rows);
  EXPECT_NE(text.find("dense_1"), std::string::npos);
  EXPECT_NE(text.find("total"), std::string::npos);
}
