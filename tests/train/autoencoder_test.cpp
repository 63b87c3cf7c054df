// Autoencoder training (train.target: input) on a tiny synthetic HDF5 file: the train split is
// restricted to the normal classes, and the test ROC AUC of the reconstruction MSE separates the
// held-out class.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "hgqt/data/dataset.h"
#include "hgqt/data/tensors.h"
#include "hgqt/train/trainer.h"
#include "train_fixtures.h"

using namespace hgqt;
namespace fs = std::filesystem;

namespace {

std::string temp_dir(const std::string& name) {
  return test::temp_dir("ae_" + name);
}

// Classes 0 and 1: a scaled copy of their own pattern; class 2: a pattern on the other features.
void write_data(const std::string& file, int64_t n, uint64_t seed, const std::string& suffix,
                bool truncate) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> amp(0.5, 1.0);
  std::normal_distribution<double> noise(0.0, 0.02);
  const float patterns[3][8] = {
      {1, 1, 1, 1, 0, 0, 0, 0}, {1, 0, 1, 0, 1, 0, 1, 0}, {0, 0, 0, 0, 0, 1, 1, 1}};
  data::Array x;
  x.shape = {n, 8};
  std::vector<int64_t> y;
  for (int64_t r = 0; r < n; ++r) {
    const int64_t c = r % 3;
    const double a = amp(rng);
    for (int j = 0; j < 8; ++j)
      x.values.push_back(static_cast<float>(a * patterns[c][j] + noise(rng)));
    y.push_back(c);
  }
  data::write_h5_array(file, "x_" + suffix, x, truncate);
  data::write_h5_labels(file, "y_" + suffix, y);
}

config::RunConfig ae_config(const std::string& file, int64_t bottleneck_out) {
  auto cfg = config::parse_run_config(R"(
name: tiny_ae
model:
  input_shape: [8]
  layers:
    - {type: dense, units: 16, activation: relu}
    - {type: dense, units: 2, activation: relu}
    - {type: dense, units: 16, activation: relu}
    - {type: dense, units: 8}
data:
  train: {file: )" + file + R"(, features: x_train, labels: y_train}
  test: {file: )" + file + R"(, features: x_test, labels: y_test}
  validation_split: 0.2
  classes: [0, 1]
train:
  target: input
  epochs: 30
  batch_size: 32
  lr: 0.01
  seed: 2
  beta: 1.0e-9
)",
                                      "tiny_ae.yaml");
  cfg.model.layers.back().units = bottleneck_out;
  return cfg;
}

}  // namespace

TEST(Autoencoder, LoadSplitsKeepsOnlyTheNormalClassesForTrainAndValidation) {
  const auto dir = temp_dir("splits");
  const std::string file = dir + "/d.h5";
  write_data(file, 300, 1, "train", true);
  write_data(file, 90, 2, "test", false);
  const auto cfg = ae_config(file, 8);
  const auto s = data::load_splits(cfg.data, dir);
  EXPECT_EQ(s.train.size() + s.validation.size(), 200);
  EXPECT_EQ(s.test.size(), 90);  // the test split keeps every class
  for (const auto* d : {&s.train, &s.validation})
    for (int64_t l : data::class_labels(d->y, "split")) EXPECT_TRUE(l == 0 || l == 1);
  auto spec = cfg.data;
  spec.classes = {7};
  try {
    data::load_splits(spec, dir);
    FAIL() << "expected a DataError";
  } catch (const data::DataError& e) {
    EXPECT_NE(std::string(e.what()).find("data.classes [7] keeps no rows"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("labels present: [0, 1, 2]"), std::string::npos)
        << e.what();
  }
}

TEST(Autoencoder, TrainsOnTheInputAndScoresAnomalies) {
  const auto dir = temp_dir("train");
  const std::string file = dir + "/d.h5";
  write_data(file, 600, 1, "train", true);
  write_data(file, 300, 2, "test", false);
  const auto cfg = ae_config(file, 8);
  train::TrainOptions o;
  o.run_dir = dir + "/run";
  o.progress = false;
  o.quiet = true;
  const auto r = train::train(cfg, o);
  ASSERT_EQ(r.history.size(), 30u);
  EXPECT_TRUE(std::isnan(r.history.back().accuracy));
  EXPECT_LT(r.history.back().val_loss, r.history.front().val_loss);
  EXPECT_EQ(r.test.samples, 300);
  ASSERT_EQ(r.anomaly.samples, 300);
  EXPECT_EQ(r.anomaly.normal, 200);
  EXPECT_EQ(r.anomaly.anomalous, 100);
  EXPECT_EQ(r.anomaly.normal_classes, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(r.anomaly.anomaly_classes, (std::vector<int64_t>{2}));  // the default: the others
  EXPECT_NEAR(r.anomaly.mse, r.test.loss, 1e-6);
  EXPECT_GT(r.anomaly.mse_anomalous, r.anomaly.mse_normal);
  EXPECT_GT(r.anomaly.roc_auc, 0.9);
  const std::string text = train::format_anomaly(r.anomaly, "test", r.test_ebops);
  EXPECT_NE(
      text.find(
          "ROC AUC (anomaly score = reconstruction MSE; normal classes [0, 1], anomalies [2]): "),
      std::string::npos)
      << text;

  std::ifstream in(o.run_dir + "/result.json");
  const auto j = nlohmann::json::parse(in);
  EXPECT_EQ(j.at("target"), "input");
  EXPECT_NEAR(j.at("roc_auc").get<double>(), r.anomaly.roc_auc, 1e-12);
  EXPECT_EQ(j.at("anomaly_classes"), nlohmann::json({2}));
  std::ifstream pin(o.run_dir + "/pareto.json");
  const auto p = nlohmann::json::parse(pin);
  ASSERT_FALSE(p.empty());
  EXPECT_TRUE(p[0].contains("val_loss"));
  EXPECT_GT(p[0].at("val_loss").get<double>(), 0.0);  // the loss itself, not its negation

  // The best checkpoint scores the same on the test file.
  auto ck = model::load_checkpoint(r.best_checkpoint);
  auto splits = data::load_splits(cfg.data, dir);
  auto te = data::to_autoencoder_tensors(splits.test, ck.model->input_shape(),
                                         ck.model->output_shape(), "test");
  const auto again = train::evaluate_anomaly(ck.model, te, cfg.data);
  EXPECT_DOUBLE_EQ(again.roc_auc, r.anomaly.roc_auc);
}

TEST(Autoencoder, OutputSizeMustMatchInputSize) {
  const auto dir = temp_dir("mismatch");
  const std::string file = dir + "/d.h5";
  write_data(file, 60, 1, "train", true);
  write_data(file, 30, 2, "test", false);
  auto cfg = ae_config(file, 5);
  cfg.train.epochs = 1;
  train::TrainOptions o;
  o.run_dir = dir + "/run";
  o.quiet = true;
  o.progress = false;
  try {
    train::train(cfg, o);
    FAIL() << "expected a ConfigError";
  } catch (const config::ConfigError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("train.target"), std::string::npos) << m;
    EXPECT_NE(m.find("takes [8] (8 values) and outputs [5] (5 values)"), std::string::npos) << m;
  }
}
