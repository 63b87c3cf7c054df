// Distillation: the losses against hand-computed values, hgqt teachers, and training runs that
// show the student follows the teacher (including a teacher that is wrong on purpose).
#include "hgqt/train/distill.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "hgqt/data/dataset.h"
#include "hgqt/train/metrics.h"
#include "hgqt/train/trainer.h"
#include "train_fixtures.h"

using namespace hgqt;
namespace fs = std::filesystem;

namespace {
using test::blobs;
using test::temp_dir;

config::DistillationSpec kd(const std::string& loss, double temperature = 1.0) {
  config::DistillationSpec d;
  d.enabled = true;
  d.loss = loss;
  d.temperature = temperature;
  return d;
}

config::RunConfig blobs_config() {
  return test::blobs_config(6);
}
}  // namespace

// Student logits (0, ln 3): probabilities (1/4, 3/4); teacher (1/2, 1/2).
// KL = 1/2 ln(2) + 1/2 ln(2/3). At T = 2 the student is softmax(0, ln3 / 2) = (1, sqrt 3) / (1 +
// sqrt 3) and the teacher stays uniform; the loss is multiplied by T^2 = 4.
TEST(DistillLoss, KlByHand) {
  auto s = torch::tensor({0.0, std::log(3.0)}, torch::kDouble).reshape({1, 2});
  auto t = torch::log(torch::tensor({0.5, 0.5}, torch::kDouble)).reshape({1, 2});
  EXPECT_NEAR(train::distill_loss(s, t, kd("kl"), false).item<double>(),
              0.5 * std::log(2.0) + 0.5 * std::log(2.0 / 3.0), 1e-12);
  const double r3 = std::sqrt(3.0);
  const double q0 = 1 / (1 + r3), q1 = r3 / (1 + r3);
  EXPECT_NEAR(train::distill_loss(s, t, kd("kl", 2.0), false).item<double>(),
              4 * (0.5 * std::log(0.5 / q0) + 0.5 * std::log(0.5 / q1)), 1e-12);
  // Batch mean: a second row equal to the teacher adds 0.
  auto s2 = torch::cat({s, t});
  auto t2 = torch::cat({t, t});
  EXPECT_NEAR(train::distill_loss(s2, t2, kd("kl"), false).item<double>(),
              0.5 * (0.5 * std::log(2.0) + 0.5 * std::log(2.0 / 3.0)), 1e-12);
  // A student of probabilities uses log(p + 2^-8).
  auto p = torch::tensor({0.25, 0.75}, torch::kDouble).reshape({1, 2});
  const double f = std::ldexp(1.0, -8);
  EXPECT_NEAR(
      train::distill_loss(p, t, kd("kl"), true).item<double>(),
      0.5 * (std::log(0.5) - std::log(0.25 + f)) + 0.5 * (std::log(0.5) - std::log(0.75 + f)),
      1e-12);
}

// s = (0, 3), t = (0.5, 0): MSE (0.25 + 9) / 2; Huber (delta 1): (0.5 * 0.25 + (3 - 0.5)) / 2.
TEST(DistillLoss, MseAndHuberByHand) {
  auto s = torch::tensor({0.0, 3.0}, torch::kDouble).reshape({2, 1});
  auto t = torch::tensor({0.5, 0.0}, torch::kDouble).reshape({2, 1});
  EXPECT_NEAR(train::distill_loss(s, t, kd("mse"), false).item<double>(), 4.625, 1e-12);
  auto h = kd("huber");
  h.huber_delta = 1.0;
  EXPECT_NEAR(train::distill_loss(s, t, h, false).item<double>(), 1.3125, 1e-12);
  h.huber_delta = 4.0;  // all quadratic: half the MSE
  EXPECT_NEAR(train::distill_loss(s, t, h, false).item<double>(), 4.625 / 2, 1e-12);
}

TEST(DistillLoss, TeacherTargetsForKl) {
  auto logits = torch::tensor({1.0, 2.0, 4.0}).reshape({1, 3});
  auto lp = train::prepare_teacher_targets(logits, kd("kl"), false);
  EXPECT_TRUE(torch::allclose(lp.exp().sum(1), torch::ones({1})));
  EXPECT_NEAR((lp[0][2] - lp[0][1]).item<double>(), 2.0, 1e-6);
  auto probs = torch::tensor({0.0, 0.25, 0.75}).reshape({1, 3});
  auto lq = train::prepare_teacher_targets(probs, kd("kl"), true);
  EXPECT_NEAR(lq[0][1].item<double>(), std::log(0.25), 1e-6);
  EXPECT_NEAR(lq[0][0].item<double>(), std::log(1e-12), 1e-3);
  // mse takes the outputs as they are.
  EXPECT_TRUE(torch::equal(train::prepare_teacher_targets(logits, kd("mse"), false), logits));
}

// An hgqt checkpoint as a teacher applies its own standardization to the raw inputs.
TEST(Teacher, HgqtCheckpointAppliesItsStandardization) {
  const auto dir = temp_dir("ck");
  auto cfg = blobs_config();
  model::HGQModel m(cfg.model);
  model::CheckpointMeta meta;
  meta.feature_mean = {1, 2, 3, 4, 5, 6, 7, 8};
  meta.feature_std = {2, 2, 2, 2, 4, 4, 4, 4};
  model::save_checkpoint(dir + "/t.pt", m, meta);
  auto teacher = train::Teacher::load(dir + "/t.pt");
  EXPECT_NE(teacher.description().find("hgqt checkpoint"), std::string::npos);
  EXPECT_FALSE(teacher.outputs_probabilities());
  auto raw = torch::randn({50, 8}) * 3 + 2;
  auto out = teacher.outputs(raw, 16);  // several batches
  m->eval();
  torch::NoGradGuard ng;
  auto expect =
      m->forward((raw - torch::tensor(meta.feature_mean)) / torch::tensor(meta.feature_std));
  EXPECT_TRUE(torch::equal(out, expect));
  // A run directory resolves to its best.pt.
  fs::copy_file(dir + "/t.pt", dir + "/best.pt");
  EXPECT_TRUE(torch::equal(train::Teacher::load(dir).outputs(raw), out));
  // Not an autoencoder: no reconstruction error.
  try {
    teacher.reconstruction_errors(raw);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("autoencoder"), std::string::npos) << e.what();
  }
}

TEST(Teacher, ReconstructionErrorsOfAnAutoencoder) {
  const auto dir = temp_dir("ae");
  auto cfg = config::parse_model_yaml(R"(
input_shape: [6]
layers:
  - {type: dense, units: 3, activation: relu}
  - {type: dense, units: 6}
)",
                                      "test");
  model::HGQModel m(cfg);
  model::save_checkpoint(dir + "/ae.pt", m, {});
  auto teacher = train::Teacher::load(dir + "/ae.pt");
  auto x = torch::randn({20, 6});
  auto err = teacher.reconstruction_errors(x);
  ASSERT_EQ(err.sizes(), (std::vector<int64_t>{20, 1}));
  m->eval();
  torch::NoGradGuard ng;
  auto expect = (m->forward(x).to(torch::kDouble) - x.to(torch::kDouble)).pow(2).mean(1, true);
  EXPECT_TRUE(torch::allclose(err.to(torch::kDouble), expect, 1e-6, 1e-9));
}

TEST(Teacher, ClearErrors) {
  const auto dir = temp_dir("bad");
  try {
    train::Teacher::load(dir + "/none.ts");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos) << e.what();
  }
  { std::ofstream(dir + "/junk.ts") << "junk"; }
  try {
    train::Teacher::load(dir + "/junk.ts");
    FAIL();
  } catch (const std::runtime_error& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("neither an hgqt checkpoint"), std::string::npos) << w;
    EXPECT_NE(w.find("junk.ts"), std::string::npos) << w;
  }
  try {
    train::Teacher::load(dir);  // a directory without checkpoints
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("best.pt"), std::string::npos) << e.what();
  }
}

namespace {
// Trains a student on blobs whose teacher outputs are given; returns the test accuracy on the
// true labels.
double student_accuracy(const torch::Tensor& teacher_logits, double alpha,
                        const std::string& name) {
  auto cfg = blobs_config();
  cfg.train.distillation = kd("kl", 2.0);
  cfg.train.distillation.alpha = alpha;
  model::HGQModel m(cfg.model);
  train::TrainOptions o;
  o.run_dir = temp_dir(name);
  o.quiet = true;
  auto tr = blobs(600, 1);
  tr.teacher = teacher_logits;
  auto r = train::train_model(m, cfg, tr, blobs(200, 2), blobs(400, 3), {}, o);
  auto result = nlohmann::json::parse(std::ifstream(o.run_dir + "/result.json"));
  EXPECT_EQ(result["distillation"]["alpha"].get<double>(), alpha);
  return r.test.accuracy;
}
}  // namespace

// With alpha 0 the student sees only the teacher. A teacher that knows the classes teaches them;
// one that names the next class (y + 1 mod 3) teaches that instead: the student's accuracy on
// the true labels collapses, so the teacher's outputs are what it learns.
TEST(Distillation, TheStudentFollowsTheTeacher) {
  auto tr = blobs(600, 1);
  auto right = torch::one_hot(tr.y, 3).to(torch::kFloat) * 6.0;
  auto wrong = torch::one_hot((tr.y + 1) % 3, 3).to(torch::kFloat) * 6.0;
  const double good = student_accuracy(right, 0.0, "right");
  const double bad = student_accuracy(wrong, 0.0, "wrong");
  EXPECT_GT(good, 0.9);
  EXPECT_LT(bad, 0.1);
  // alpha 1 ignores the teacher: the wrong teacher does no harm.
  EXPECT_GT(student_accuracy(wrong, 1.0, "alpha1"), 0.9);
}

TEST(Distillation, MissingTeacherOutputsAndWrongWidth) {
  auto cfg = blobs_config();
  cfg.train.distillation = kd("kl");
  model::HGQModel m(cfg.model);
  train::TrainOptions o;
  o.run_dir = temp_dir("missing");
  o.quiet = true;
  try {
    train::train_model(m, cfg, blobs(100, 1), {}, {}, {}, o);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("no teacher outputs"), std::string::npos) << e.what();
  }
  auto tr = blobs(100, 1);
  tr.teacher = torch::zeros({100, 5});
  try {
    train::train_model(m, cfg, tr, {}, {}, {}, o);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("5 values per sample but the student has 3"),
              std::string::npos)
        << e.what();
  }
}

namespace {
void write_blobs_file(const std::string& file, bool with_teacher) {
  auto tr = blobs(600, 1), te = blobs(300, 3);
  auto array = [](const torch::Tensor& t) {
    data::Array a;
    auto c = t.to(torch::kFloat).contiguous();
    a.values.assign(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
    a.shape = c.sizes().vec();
    return a;
  };
  data::write_h5_array(file, "x", array(tr.x), true);
  data::write_h5_labels(
      file, "y",
      std::vector<int64_t>(tr.y.data_ptr<int64_t>(), tr.y.data_ptr<int64_t>() + tr.size()));
  data::write_h5_array(file, "x_test", array(te.x));
  data::write_h5_labels(
      file, "y_test",
      std::vector<int64_t>(te.y.data_ptr<int64_t>(), te.y.data_ptr<int64_t>() + te.size()));
  if (with_teacher)  // a wrong teacher, so that its use shows
    data::write_h5_array(file, "x_teacher", array(torch::one_hot((tr.y + 1) % 3, 3) * 6.0));
}
}  // namespace

// Precomputed teacher outputs in the data file (data.train.teacher) follow the train rows through
// the validation carve; without them (and without a teacher) the config is refused.
TEST(Distillation, PrecomputedTeacherOutputsFromTheDataFile) {
  const auto dir = temp_dir("pre");
  write_blobs_file(dir + "/d.h5", true);
  const std::string yaml = std::string(R"(
name: pre
model:
  input_shape: [8]
  layers:
    - {type: dense, units: 16, activation: relu}
    - {type: dense, units: 3}
data:
  train: {file: d.h5, features: x, labels: y, teacher: x_teacher}
  test: {file: d.h5, features: x_test, labels: y_test}
  validation_split: 0.2
train:
  epochs: 6
  batch_size: 64
  lr: 0.01
  distillation: {alpha: 0, temperature: 2}
)");
  { std::ofstream(dir + "/c.yaml") << yaml; }
  auto cfg = config::load_run_config(dir + "/c.yaml");
  train::TrainOptions o;
  o.run_dir = dir + "/run";
  o.quiet = true;
  auto r = train::train(cfg, o);
  EXPECT_LT(r.test.accuracy, 0.25);  // it learned the wrong teacher (chance: 1/3)
  // The same data without the teacher data set.
  {
    std::ofstream(dir + "/c2.yaml")
        << std::string(yaml).replace(yaml.find(", teacher: x_teacher"), 20, "");
  }
  auto cfg2 = config::load_run_config(dir + "/c2.yaml");
  o.run_dir = dir + "/run2";
  try {
    train::train(cfg2, o);
    FAIL();
  } catch (const config::ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("data.train.teacher"), std::string::npos) << e.what();
  }
  // A teacher data set of the wrong length.
  data::write_h5_array(dir + "/d.h5", "short", data::Array{std::vector<float>(30, 0.f), {10, 3}});
  {
    std::ofstream(dir + "/c3.yaml")
        << std::string(yaml).replace(yaml.find("x_teacher"), 9, "short");
  }
  try {
    train::train(config::load_run_config(dir + "/c3.yaml"), o);
    FAIL();
  } catch (const data::DataError& e) {
    EXPECT_NE(std::string(e.what()).find("data.train.teacher"), std::string::npos) << e.what();
  }
}

// target reconstruction_error: a one-output student regresses the teacher autoencoder's score
// from the input; the test report gives the ROC AUC of the student's score.
TEST(Distillation, AnomalyScoreStudent) {
  const auto dir = temp_dir("score");
  write_blobs_file(dir + "/d.h5", false);
  // Teacher: an autoencoder trained on class 0 only.
  {
    std::ofstream(dir + "/ae.yaml") << R"(
name: ae
model:
  input_shape: [8]
  layers:
    - {type: dense, units: 3, activation: relu}
    - {type: dense, units: 8}
data:
  train: {file: d.h5, features: x, labels: y}
  test: {file: d.h5, features: x_test, labels: y_test}
  classes: [0]
train: {target: input, epochs: 15, batch_size: 32, lr: 0.01}
)";
  }
  train::TrainOptions o;
  o.quiet = true;
  o.run_dir = dir + "/ae";
  auto ae = train::train(config::load_run_config(dir + "/ae.yaml"), o);
  ASSERT_GT(ae.anomaly.roc_auc, 0.8);
  {
    std::ofstream(dir + "/s.yaml") << R"(
name: student
model:
  input_shape: [8]
  layers:
    - {type: dense, units: 8, activation: relu}
    - {type: dense, units: 1}
data:
  train: {file: d.h5, features: x, labels: y}
  test: {file: d.h5, features: x_test, labels: y_test}
train:
  loss: mse
  epochs: 15
  batch_size: 32
  lr: 0.01
  distillation: {teacher: ae, target: reconstruction_error, loss: huber, huber_delta: 10}
)";
  }
  o.run_dir = dir + "/s";
  auto st = train::train(config::load_run_config(dir + "/s.yaml"), o);
  EXPECT_LT(st.history.back().val_loss, st.history.front().val_loss);
  EXPECT_EQ(st.anomaly.samples, 300);
  EXPECT_NE(st.anomaly.score.find("student"), std::string::npos);
  // Trained on every class (no data.classes), the student reports no AUC itself; its score ranks
  // the test anomalies (classes 1, 2) above class 0 as its teacher's does.
  EXPECT_TRUE(std::isnan(st.anomaly.roc_auc));
  auto best = model::load_checkpoint(st.best_checkpoint);
  const auto x = data::read_h5_array(dir + "/d.h5", "x_test");
  const auto y = data::read_h5_array(dir + "/d.h5", "y_test");
  torch::NoGradGuard ng;
  auto score = best.model->forward(torch::from_blob(const_cast<float*>(x.values.data()), {300, 8}));
  std::vector<double> scores;
  std::vector<bool> positive;
  for (int64_t i = 0; i < 300; ++i) {
    scores.push_back(score[i][0].item<double>());
    positive.push_back(y.values[static_cast<size_t>(i)] != 0);
  }
  const double auc = train::roc_auc(scores, positive);
  std::printf("teacher AUC %.4f, student AUC %.4f\n", ae.anomaly.roc_auc, auc);
  EXPECT_GT(auc, 0.8);
  auto result = nlohmann::json::parse(std::ifstream(o.run_dir + "/result.json"));
  EXPECT_TRUE(result.contains("roc_auc"));
  EXPECT_TRUE(result.contains("test_mean_score"));
}
