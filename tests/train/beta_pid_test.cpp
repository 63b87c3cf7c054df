// The PID beta controller's law (hand-computed values), and the config of it and of distillation.
#include "hgqt/train/beta_pid.h"

#include <gtest/gtest.h>

#include <cmath>

#include "hgqt/config/config.h"

using namespace hgqt;

namespace {
config::BetaPIDSpec spec(double p, double i, double d, double init, double max = 1.0) {
  config::BetaPIDSpec s;
  s.target_ebops = 100;
  s.p = p;
  s.i = i;
  s.d = d;
  s.init = init;
  s.min = 0;
  s.max = max;
  return s;
}

// A model and data section; tests append `train:` and what follows.
const std::string kModelAndData = R"(
model:
  input_shape: [4]
  layers:
    - {type: dense, units: 3}
data:
  train: {file: d.h5, features: x, labels: y}
)";

std::string config_error(const std::string& train_yaml) {
  try {
    config::parse_run_config(kModelAndData + "train:\n" + train_yaml, "t.yaml");
  } catch (const config::ConfigError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

// p = 1, i = 0.5, target 100, init 1e-4. EBOPs 1000 (e = 1): the seed makes the integral
// (log10(1e-4) - 1) / 0.5 = -10 and returns 1e-4; again 1000: integral -9, out 1 - 4.5;
// then 100 (e = 0): out -4.5.
TEST(BetaPID, FirstUpdateReturnsInitThenFollowsTheLaw) {
  train::BetaPID pid(spec(1.0, 0.5, 0.0, 1e-4));
  EXPECT_DOUBLE_EQ(pid.beta(), 1e-4);
  EXPECT_NEAR(std::log10(pid.update(1000)), -4.0, 1e-12);
  EXPECT_NEAR(pid.state().integral, -10.0, 1e-12);
  EXPECT_NEAR(std::log10(pid.update(1000)), -3.5, 1e-12);
  EXPECT_NEAR(std::log10(pid.update(100)), -4.5, 1e-12);
  EXPECT_NEAR(std::log10(pid.update(10)), -6.0, 1e-12);  // e = -1, integral -10: -1 - 5
  EXPECT_EQ(pid.state().updates, 4);
}

// d = 2: 1000 seeds (1e-4); 10000 (e = 2) asks 2 + 0.5 (-8) + 2 (2 - 1) = 0, i.e. beta 1, clamped
// to max 1e-2, so its error is not integrated (integral stays -10); 1000 (e = 1) then gives
// 1 + 0.5 (-9) + 2 (1 - 2) = -5.5.
TEST(BetaPID, DerivativeAndConditionalIntegration) {
  train::BetaPID pid(spec(1.0, 0.5, 2.0, 1e-4, 1e-2));
  pid.update(1000);
  EXPECT_DOUBLE_EQ(pid.update(10000), 1e-2);
  EXPECT_NEAR(pid.state().integral, -10.0, 1e-12);
  EXPECT_NEAR(std::log10(pid.update(1000)), -5.5, 1e-12);
}

TEST(BetaPID, IgnoresNonFiniteAndZeroEbops) {
  train::BetaPID pid(spec(1.0, 0.5, 0.0, 1e-4));
  pid.update(1000);
  const auto before = pid.state();
  for (double bad : {std::nan(""), double(INFINITY), 0.0, -5.0})
    EXPECT_DOUBLE_EQ(pid.update(bad), before.beta);
  EXPECT_EQ(pid.state().updates, before.updates);
  EXPECT_DOUBLE_EQ(pid.state().integral, before.integral);
}

TEST(BetaPID, RestoredStateContinuesIdentically) {
  train::BetaPID a(spec(0.7, 0.3, 0.1, 1e-5));
  for (double e : {500.0, 400.0, 300.0}) a.update(e);
  train::BetaPID b(spec(0.7, 0.3, 0.1, 1e-5));
  b.restore(a.state());
  EXPECT_DOUBLE_EQ(a.update(150), b.update(150));
  EXPECT_DOUBLE_EQ(a.update(90), b.update(90));
}

// ramp_epochs 4, target 100: the first update (EBOPs 10^4, at training time 3) starts the ramp
// there; `since` epochs later the target is 10^(4 - since/2), 100 from since = 4 on. p = 1,
// i = 0.5, init 1e-4: the first update sees e = 0 (integral -8, returns 1e-4); at time 5 (since
// 2) the target is 1000, EBOPs 10^4 give e = 1: integral -7, out 1 - 3.5; at time 9, EBOPs 1000
// against 100: e = 1, integral -6, out 1 - 3.
TEST(BetaPID, TargetRampsFromTheFirstEbopsToTheTarget) {
  auto s = spec(1.0, 0.5, 0.0, 1e-4);
  s.ramp_epochs = 4;
  train::BetaPID pid(s);
  EXPECT_DOUBLE_EQ(pid.target_at(1.0), 100);     // before the first update: no start yet
  EXPECT_DOUBLE_EQ(pid.update(1e4, 3.0), 1e-4);  // t is training time: the ramp starts at 3
  EXPECT_NEAR(pid.state().integral, -8.0, 1e-12);
  EXPECT_NEAR(pid.target_at(0.0), 1e4, 1e-9);
  EXPECT_NEAR(pid.target_at(2.0), 1e3, 1e-9);
  EXPECT_NEAR(pid.target_at(4.0), 100, 1e-9);
  EXPECT_NEAR(pid.target_at(9.0), 100, 1e-9);
  EXPECT_NEAR(std::log10(pid.update(1e4, 5.0)), -2.5, 1e-12);
  EXPECT_NEAR(std::log10(pid.update(1e3, 9.0)), -2.0, 1e-12);
  // a model that starts below the target is held at the target
  train::BetaPID low(s);
  low.update(50, 0.0);
  EXPECT_DOUBLE_EQ(low.target_at(1.0), 100);
  // the ramp start survives a resume
  train::BetaPID again(s);
  again.restore(pid.state());
  EXPECT_NEAR(again.target_at(2.0), 1e3, 1e-9);
}

TEST(BetaPIDConfig, ParsesWithDefaultsAndRoundTrips) {
  auto c = config::parse_run_config(kModelAndData + R"(
train:
  beta: {kind: pid, target_ebops: 2.0e5, init: 1.0e-7, interval_steps: 20, max: 1.0e-4}
)",
                                    "t.yaml");
  const auto& p = c.train.beta.pid;
  EXPECT_EQ(c.train.beta.kind, "pid");
  EXPECT_DOUBLE_EQ(p.target_ebops, 2e5);
  EXPECT_DOUBLE_EQ(p.init, 1e-7);
  EXPECT_DOUBLE_EQ(p.p, 2.0);
  EXPECT_DOUBLE_EQ(p.i, 0.1);
  EXPECT_EQ(p.warmup_epochs, 1);
  EXPECT_EQ(p.interval_steps, 20);
  EXPECT_DOUBLE_EQ(p.ramp_epochs, -1.0);  // unset: the trainer takes a quarter of the epochs
  EXPECT_DOUBLE_EQ(config::beta_at(c.train.beta, 3.0), 1e-7);
  auto back = config::parse_run_config(config::to_yaml(c), "back");
  EXPECT_EQ(config::to_yaml(back), config::to_yaml(c));
  EXPECT_DOUBLE_EQ(back.train.beta.pid.max, 1e-4);
  EXPECT_EQ(back.train.beta.pid.interval_steps, 20);
  EXPECT_DOUBLE_EQ(back.train.beta.pid.ramp_epochs, p.ramp_epochs);
  auto off = config::parse_run_config(kModelAndData + R"(
train:
  epochs: 40
  beta: {kind: pid, target_ebops: 1000, ramp_epochs: 0}
)",
                                      "t.yaml");
  EXPECT_DOUBLE_EQ(off.train.beta.pid.ramp_epochs, 0.0);
}

TEST(BetaPIDConfig, Errors) {
  EXPECT_NE(config_error("  beta: {kind: pid, init: 1.0e-6}\n").find("target_ebops"),
            std::string::npos);
  EXPECT_NE(config_error("  beta: {kind: pid, target_ebops: 1000, init: 1.0, max: 0.1}\n")
                .find("min <= init <= max"),
            std::string::npos);
  EXPECT_NE(config_error("  beta: {kind: pid, target_ebops: 1000, i: 0}\n").find("train.beta.i"),
            std::string::npos);
  EXPECT_NE(config_error("  beta: {kind: pid, target_ebops: 1000, points: [[0, 1]]}\n")
                .find("unknown key"),
            std::string::npos);
  EXPECT_NE(
      config_error("  beta: {kind: log, points: [[0, 1]], target_ebops: 5}\n").find("unknown key"),
      std::string::npos);
}

TEST(DistillationConfig, DefaultsByLossAndRoundTrip) {
  auto c = config::parse_run_config(R"(
model:
  input_shape: [4]
  layers:
    - {type: dense, units: 3}
data:
  train: {file: d.h5, features: x, labels: y, teacher: x_teacher}
train:
  distillation: {teacher: t.ts, temperature: 4}
)",
                                    "t.yaml");
  const auto& d = c.train.distillation;
  EXPECT_TRUE(d.enabled);
  EXPECT_EQ(d.loss, "kl");
  EXPECT_DOUBLE_EQ(d.alpha, 0.5);
  EXPECT_DOUBLE_EQ(d.temperature, 4.0);
  EXPECT_EQ(d.target, "output");
  EXPECT_EQ(c.data.train.teacher, "x_teacher");
  auto back = config::parse_run_config(config::to_yaml(c), "back");
  EXPECT_EQ(config::to_yaml(back), config::to_yaml(c));
  EXPECT_EQ(back.train.distillation.teacher, "t.ts");
  EXPECT_EQ(back.data.train.teacher, "x_teacher");

  auto r = config::parse_run_config(R"(
model:
  input_shape: [4]
  layers:
    - {type: dense, units: 1}
data:
  train: {file: d.h5, features: x, labels: y}
train:
  loss: mse
  distillation: {teacher: runs/ae, target: reconstruction_error, loss: huber, huber_delta: 0.5}
)",
                                    "t.yaml");
  EXPECT_DOUBLE_EQ(r.train.distillation.alpha, 0.0);
  EXPECT_EQ(r.train.distillation.loss, "huber");
  EXPECT_DOUBLE_EQ(r.train.distillation.huber_delta, 0.5);
}

TEST(DistillationConfig, Errors) {
  EXPECT_NE(config_error("  distillation: {alpha: 1.5}\n").find("[0, 1]"), std::string::npos);
  EXPECT_NE(
      config_error("  distillation: {loss: mse, temperature: 2}\n").find("only with loss: kl"),
      std::string::npos);
  EXPECT_NE(config_error("  loss: mse\n  distillation: {loss: kl}\n").find("kl compares class"),
            std::string::npos);
  EXPECT_NE(
      config_error("  distillation: {target: reconstruction_error}\n").find("train.loss: mse"),
      std::string::npos);
  EXPECT_NE(
      config_error("  loss: mse\n  distillation: {target: reconstruction_error, alpha: 0.5}\n")
          .find("no true scores"),
      std::string::npos);
  EXPECT_NE(config_error("  distillation: {teacher: ''}\n").find("non-empty path"),
            std::string::npos);
  EXPECT_NE(config_error("  distillation: {temprature: 2}\n").find("temperature"),
            std::string::npos);
  const std::string e = config_error("  target: input\n  distillation: {alpha: 0.5}\n");
  EXPECT_NE(e.find("train.target: input"), std::string::npos) << e;
  EXPECT_NE(e.find("t.yaml:"), std::string::npos) << e;
}
