// Training: one step moves weights and bits; a short Fashion-MNIST run learns; beta lowers EBOPs.
#include "hgqt/train/trainer.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "hgqt/train/pareto.h"
#include "train_fixtures.h"

using namespace hgqt;

namespace {
using test::blobs;
using test::temp_dir;

config::RunConfig small_config(double beta, int64_t epochs) {
  auto cfg = test::blobs_config(epochs);
  cfg.train.beta.kind = "constant";
  cfg.train.beta.value = beta;
  return cfg;
}
}  // namespace

TEST(Trainer, OneStepChangesWeightsAndBits) {
  auto cfg = small_config(1e-5, 1);
  model::HGQModel m(cfg.model);
  m->train();
  auto data = blobs(64, 1);
  std::vector<torch::Tensor> before;
  for (auto& p : m->parameters()) before.push_back(p.detach().clone());
  torch::optim::Adam opt(m->parameters(), torch::optim::AdamOptions(0.01));
  auto loss = train::task_loss(m->forward(data.x), data.y, "cross_entropy") + 1e-5 * m->ebops();
  opt.zero_grad();
  loss.backward();
  opt.step();
  auto* d = dynamic_cast<nn::QDenseImpl*>(m->layers()[0].layer);
  auto params = m->named_parameters();
  bool kernel_moved = false, bits_moved = false;
  size_t n = 0;
  for (auto& kv : params) {
    const bool moved = !torch::equal(kv.value(), before[n++]);
    if (kv.key().find("kernel") != std::string::npos && moved) kernel_moved = true;
    const auto& leaf = kv.key().substr(kv.key().rfind('.') + 1);
    if ((leaf == "b" || leaf == "f" || leaf == "i") && moved) bits_moved = true;
  }
  EXPECT_TRUE(kernel_moved);
  EXPECT_TRUE(bits_moved);
  EXPECT_NE(d, nullptr);
}

TEST(Trainer, CrossEntropyOfSoftmaxProbabilitiesHasAFloor) {
  auto out = torch::tensor({{0.0f, 1.0f}, {1.0f, 0.0f}, {0.25f, 0.75f}});
  auto y = torch::tensor({1, 1, 1}, torch::kLong);
  // Mean of -log(1 + 2^-8), -log(0 + 2^-8), -log(0.75 + 2^-8).
  const double want = (-std::log(1 + 0x1p-8) - std::log(0x1p-8) - std::log(0.75 + 0x1p-8)) / 3;
  EXPECT_NEAR(train::task_loss(out, y, "cross_entropy", true).item<double>(), want, 1e-6);
  // Logits: the usual cross entropy.
  EXPECT_NEAR(train::task_loss(out, y, "cross_entropy", false).item<double>(),
              torch::nn::functional::cross_entropy(out, y).item<double>(), 1e-7);
}

TEST(Trainer, RaisingBetaLowersEbops) {
  auto all = blobs(1280, 5);
  data::TensorSplit train_split{all.x.slice(0, 0, 1024), all.y.slice(0, 0, 1024)};
  data::TensorSplit val{all.x.slice(0, 1024), all.y.slice(0, 1024)};
  auto run = [&](double beta) {
    // Bits move at most ~lr per Adam step: give them room to travel a few bits.
    auto cfg = small_config(beta, 10);
    cfg.train.lr = 0.02;
    cfg.train.lr_schedule = "constant";
    model::HGQModel m(cfg.model);
    train::TrainOptions o;
    o.run_dir = temp_dir("beta" + std::to_string(beta));
    o.quiet = getenv("HGQT_TEST_VERBOSE") == nullptr;
    auto r = train::train_model(m, cfg, train_split, val, {}, {}, o);
    return r.history.back();
  };
  auto low = run(0.0), high = run(1e-3);
  EXPECT_LT(high.ebops, 0.7 * low.ebops)
      << "beta 0: " << low.ebops << ", beta 1e-3: " << high.ebops;
  EXPECT_GT(low.val_accuracy, 0.8);
}

TEST(Trainer, RunDirectoryHoldsConfigMetricsAndCheckpoints) {
  auto cfg = small_config(1e-6, 3);
  model::HGQModel m(cfg.model);
  train::TrainOptions o;
  o.run_dir = temp_dir("rundir");
  o.quiet = true;
  auto r = train::train_model(m, cfg, blobs(512, 1), blobs(128, 2), blobs(128, 3), {}, o);
  namespace fs = std::filesystem;
  for (const char* f :
       {"config.yaml", "metrics.jsonl", "last.pt", "best.pt", "pareto.json", "result.json"})
    EXPECT_TRUE(fs::exists(fs::path(o.run_dir) / f)) << f;
  std::ifstream in(fs::path(o.run_dir) / "metrics.jsonl");
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    ++lines;
    EXPECT_NE(line.find("\"ebops\""), std::string::npos);
  }
  EXPECT_EQ(lines, 3);
  EXPECT_EQ(r.test.samples, 128);
  // The resolved config parses back.
  auto back = config::load_run_config((fs::path(o.run_dir) / "config.yaml").string());
  EXPECT_EQ(back.train.epochs, 3);
  int pareto_files = 0;
  for (auto& e : fs::directory_iterator(fs::path(o.run_dir) / "pareto"))
    pareto_files += e.path().extension() == ".pt";
  EXPECT_GE(pareto_files, 1);
}

TEST(Trainer, DivergenceIsReportedWithEpoch) {
  auto cfg = small_config(0.0, 2);
  model::HGQModel m(cfg.model);
  train::TrainOptions o;
  o.run_dir = temp_dir("nan");
  o.quiet = true;
  auto bad = blobs(128, 1);
  bad.x[5][2] = std::nanf("");
  try {
    train::train_model(m, cfg, bad, {}, {}, {}, o);
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("epoch 1"), std::string::npos) << e.what();
  }
}

TEST(Pareto, KeepsOnlyNonDominated) {
  train::ParetoFront f;
  f.insert({1, 0.70, 1000, "a"});
  EXPECT_TRUE(f.dominated(0.69, 1100));
  EXPECT_TRUE(f.dominated(0.70, 1000));
  EXPECT_FALSE(f.dominated(0.72, 1500));
  f.insert({2, 0.72, 1500, "b"});
  auto dropped = f.insert({3, 0.75, 900, "c"});
  EXPECT_EQ(dropped.size(), 2u);
  ASSERT_EQ(f.entries().size(), 1u);
  EXPECT_EQ(f.entries()[0].path, "c");
}

TEST(Trainer, ShortFashionMnistRunLowersLoss) {
  const std::string dir = "/usr/share/datasets/fashion-mnist";
  if (!std::filesystem::exists(dir + "/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "dataset-fashion-mnist not installed";
  auto images = data::read_idx(dir + "/train-images-idx3-ubyte.gz");
  auto labels = data::read_idx(dir + "/train-labels-idx1-ubyte.gz");
  const int64_t n = 4000;
  auto x = torch::from_blob(images.values.data(), {images.rows(), 28, 28}).slice(0, 0, n).clone() /
           255.0;
  auto y = torch::from_blob(labels.values.data(), {labels.rows()}).slice(0, 0, n).to(torch::kLong);
  auto cfg = config::parse_run_config(R"(
model:
  input_shape: [28, 28]
  layers:
    - {type: flatten}
    - {type: dense, units: 32, activation: relu}
    - {type: dense, units: 10}
data:
  train: {file: unused.h5, features: x, labels: y}
train: {epochs: 3, batch_size: 128, lr: 0.003, beta: 1.0e-8, seed: 1}
)",
                                      "test");
  model::HGQModel m(cfg.model);
  train::TrainOptions o;
  o.run_dir = temp_dir("fmnist");
  o.quiet = true;
  data::TensorSplit tr{x.slice(0, 0, 3000), y.slice(0, 0, 3000)},
      va{x.slice(0, 3000), y.slice(0, 3000)};
  auto r = train::train_model(m, cfg, tr, va, {}, {}, o);
  ASSERT_EQ(r.history.size(), 3u);
  EXPECT_LT(r.history.back().loss, r.history.front().loss);
  EXPECT_GT(r.history.back().val_accuracy, 0.7);
}

namespace {
std::string read_all(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}
int count_lines(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) ++n;
  return n;
}
}  // namespace

// An accuracy gain of more than 1 is impossible: every epoch after the first uses up patience,
// so a patience of 2 ends a 10-epoch run after epoch 3.
TEST(Trainer, EarlyStoppingEndsARunThatStopsImproving) {
  namespace fs = std::filesystem;
  auto cfg = small_config(0.0, 10);
  cfg.train.early_stopping.enabled = true;
  cfg.train.early_stopping.patience = 2;
  cfg.train.early_stopping.min_delta = 1.0;
  cfg.train.early_stopping.monitor = "val_accuracy";
  model::HGQModel m(cfg.model);
  train::TrainOptions o;
  o.run_dir = temp_dir("early_stop");
  o.quiet = true;
  auto r = train::train_model(m, cfg, blobs(512, 1), blobs(128, 2), blobs(128, 3), {}, o);
  EXPECT_TRUE(r.stopped_early);
  EXPECT_EQ(r.stopped_epoch, 3);
  ASSERT_EQ(r.history.size(), 3u);
  EXPECT_EQ(count_lines((fs::path(o.run_dir) / "metrics.jsonl").string()), 3);
  for (const char* f : {"last.pt", "best.pt", "pareto.json", "result.json"})
    EXPECT_TRUE(fs::exists(fs::path(o.run_dir) / f)) << f;
  // last.pt is the last epoch run; best.pt one of the epochs run.
  EXPECT_EQ(model::load_checkpoint((fs::path(o.run_dir) / "last.pt").string()).meta.epoch, 3);
  EXPECT_GE(r.best.epoch, 1);
  EXPECT_LE(r.best.epoch, 3);
  const auto result =
      nlohmann::json::parse(read_all((fs::path(o.run_dir) / "result.json").string()));
  EXPECT_EQ(result["stopped_early"], true);
  EXPECT_EQ(result["stopped_epoch"], 3);
  EXPECT_EQ(result["epochs_run"], 3);
  EXPECT_EQ(result["early_stopping"]["best_epoch"], 1);
  EXPECT_EQ(result["early_stopping"]["patience"], 2);
  // The resolved config keeps the rule.
  auto back = config::load_run_config((fs::path(o.run_dir) / "config.yaml").string());
  EXPECT_TRUE(back.train.early_stopping.enabled);
  EXPECT_EQ(back.train.early_stopping.patience, 2);
}

// The same setup with a step schedule that practically zeroes the lr after epoch 1: the
// validation accuracy freezes, so a patience of 1 stops the run after epoch 2. min_delta 0.02
// (3 of 128 samples): a clean-clone CI run once saw epoch 2 gain a sample at an lr of 1e-14
// (not reproduced in 16 runs alone), which a zero min_delta counted as an improvement.
TEST(Trainer, EarlyStoppingAfterTheLrDrops) {
  auto cfg = small_config(0.0, 8);
  cfg.train.lr_schedule = "step";
  cfg.train.lr_step_epochs = 1;
  cfg.train.lr_gamma = 1.0e-12;
  cfg.train.early_stopping.enabled = true;
  cfg.train.early_stopping.patience = 1;
  cfg.train.early_stopping.min_delta = 0.02;
  cfg.train.early_stopping.monitor = "val_accuracy";
  model::HGQModel m(cfg.model);
  train::TrainOptions o;
  o.run_dir = temp_dir("early_stop_lr");
  o.quiet = true;
  auto r = train::train_model(m, cfg, blobs(512, 1), blobs(128, 2), {}, {}, o);
  ASSERT_GE(r.history.size(), 2u);
  EXPECT_DOUBLE_EQ(r.history[0].lr, 0.01);
  EXPECT_NEAR(r.history[1].lr, 1e-14, 1e-20);
  EXPECT_TRUE(r.stopped_early);
  // Epoch 2 normally stops the run; the integer bits of WRAP quantizers still follow the data at
  // lr ~ 0, which once (a ctest run of 2026-12-07, not reproduced alone) gained epoch 2 more than
  // min_delta, so the run stopped one epoch later. Either is early for 8 epochs.
  EXPECT_GE(r.stopped_epoch, 2);
  EXPECT_LE(r.stopped_epoch, 3);
  EXPECT_EQ(r.history.size(), static_cast<size_t>(r.stopped_epoch));
}

// With ebops_below out of reach no epoch counts, so the run goes the distance.
TEST(Trainer, EarlyStoppingWaitsForEbopsBelow) {
  namespace fs = std::filesystem;
  auto cfg = small_config(0.0, 4);
  cfg.train.early_stopping.enabled = true;
  cfg.train.early_stopping.patience = 1;
  cfg.train.early_stopping.min_delta = 1.0;
  cfg.train.early_stopping.monitor = "val_accuracy";
  cfg.train.early_stopping.ebops_below = 1e-3;
  model::HGQModel m(cfg.model);
  train::TrainOptions o;
  o.run_dir = temp_dir("early_stop_ebops");
  o.quiet = true;
  auto r = train::train_model(m, cfg, blobs(512, 1), blobs(128, 2), {}, {}, o);
  EXPECT_FALSE(r.stopped_early);
  EXPECT_EQ(r.history.size(), 4u);
  EXPECT_GT(r.history.back().ebops, 1e-3);
  const auto result =
      nlohmann::json::parse(read_all((fs::path(o.run_dir) / "result.json").string()));
  EXPECT_EQ(result["stopped_early"], false);
  EXPECT_TRUE(result["stopped_epoch"].is_null());
  EXPECT_EQ(result["epochs_run"], 4);
}
