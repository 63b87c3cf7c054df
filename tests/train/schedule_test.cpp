// Learning-rate schedules (config::lr_at) and the early stopping rule (train::EarlyStopper),
// checked against values worked out by hand.
#include <gtest/gtest.h>

#include <cmath>

#include "hgqt/config/config.h"
#include "hgqt/train/trainer.h"

using hgqt::config::EarlyStoppingSpec;
using hgqt::config::lr_at;
using hgqt::config::TrainSpec;
using hgqt::train::EarlyStopper;

namespace {
constexpr double kTol = 1e-12;
// cos(pi / 4) = sqrt(2) / 2.
const double kC = std::sqrt(2.0) / 2.0;

TrainSpec schedule(const std::string& kind, double lr, double min_lr, int64_t epochs) {
  TrainSpec t;
  t.lr_schedule = kind;
  t.lr = lr;
  t.min_lr = min_lr;
  t.epochs = epochs;
  return t;
}
}  // namespace

TEST(LrSchedule, CosineIsPerStepOverTheWholeRun) {
  // 2 epochs x 2 steps: progress 0, 1/4, 1/2, 3/4.
  TrainSpec t = schedule("cosine", 0.1, 0.0, 2);
  EXPECT_NEAR(lr_at(t, 0, 2), 0.1, kTol);
  EXPECT_NEAR(lr_at(t, 1, 2), 0.05 * (1 + kC), kTol);
  EXPECT_NEAR(lr_at(t, 2, 2), 0.05, kTol);
  EXPECT_NEAR(lr_at(t, 3, 2), 0.05 * (1 - kC), kTol);
  // With a floor: min_lr + (lr - min_lr) / 2 half way.
  t = schedule("cosine", 0.11, 0.01, 2);
  EXPECT_NEAR(lr_at(t, 2, 2), 0.06, kTol);
  // A single step: the plain lr.
  t = schedule("cosine", 0.1, 0.0, 1);
  EXPECT_NEAR(lr_at(t, 0, 1), 0.1, kTol);
}

TEST(LrSchedule, ConstantIgnoresTheStep) {
  TrainSpec t = schedule("constant", 0.3, 0.01, 5);
  for (int64_t s : {0, 1, 7, 24}) EXPECT_EQ(lr_at(t, s, 5), 0.3) << s;
}

TEST(LrSchedule, StepDropsEveryLrStepEpochs) {
  // 3 steps per epoch, halved every 2 epochs: steps 0-5 at 1, 6-11 at 0.5, 12-17 at 0.25.
  TrainSpec t = schedule("step", 1.0, 0.0, 10);
  t.lr_step_epochs = 2;
  t.lr_gamma = 0.5;
  EXPECT_NEAR(lr_at(t, 0, 3), 1.0, kTol);
  EXPECT_NEAR(lr_at(t, 5, 3), 1.0, kTol);
  EXPECT_NEAR(lr_at(t, 6, 3), 0.5, kTol);
  EXPECT_NEAR(lr_at(t, 11, 3), 0.5, kTol);
  EXPECT_NEAR(lr_at(t, 12, 3), 0.25, kTol);
  EXPECT_NEAR(lr_at(t, 18, 3), 0.125, kTol);
  // min_lr is a floor.
  t.min_lr = 0.3;
  EXPECT_NEAR(lr_at(t, 12, 3), 0.3, kTol);
  EXPECT_NEAR(lr_at(t, 6, 3), 0.5, kTol);
  // gamma 1: constant.
  t.lr_gamma = 1.0;
  t.min_lr = 0;
  EXPECT_NEAR(lr_at(t, 29, 3), 1.0, kTol);
}

TEST(LrSchedule, CosineRestartsGrowingPeriods) {
  // Periods of 2, 4, 8 epochs: [0, 2), [2, 6), [6, 14); one step per epoch.
  TrainSpec t = schedule("cosine_restarts", 1.0, 0.0, 20);
  t.lr_restart_epochs = 2;
  t.lr_restart_mult = 2;
  EXPECT_NEAR(lr_at(t, 0, 1), 1.0, kTol);
  EXPECT_NEAR(lr_at(t, 1, 1), 0.5, kTol);             // 1/2 of the first period
  EXPECT_NEAR(lr_at(t, 2, 1), 1.0, kTol);             // restart
  EXPECT_NEAR(lr_at(t, 3, 1), 0.5 * (1 + kC), kTol);  // 1/4 of the second
  EXPECT_NEAR(lr_at(t, 4, 1), 0.5, kTol);
  EXPECT_NEAR(lr_at(t, 5, 1), 0.5 * (1 - kC), kTol);
  EXPECT_NEAR(lr_at(t, 6, 1), 1.0, kTol);   // restart
  EXPECT_NEAR(lr_at(t, 10, 1), 0.5, kTol);  // 4/8 of the third
  EXPECT_NEAR(lr_at(t, 14, 1), 1.0, kTol);  // fourth period starts
  // Per step inside an epoch: 4 steps per epoch, step 2 is epoch 0.5 (1/4 of the first).
  EXPECT_NEAR(lr_at(t, 2, 4), 0.5 * (1 + kC), kTol);
}

TEST(LrSchedule, CosineRestartsEqualPeriodsWithFloor) {
  // Periods of 3 epochs, 2 steps per epoch, lr 1 down to 0.2: the middle of a period is 0.6.
  TrainSpec t = schedule("cosine_restarts", 1.0, 0.2, 20);
  t.lr_restart_epochs = 3;
  t.lr_restart_mult = 1;
  EXPECT_NEAR(lr_at(t, 3, 2), 0.6, kTol);  // epoch 1.5
  EXPECT_NEAR(lr_at(t, 6, 2), 1.0, kTol);  // epoch 3: restart
  EXPECT_NEAR(lr_at(t, 9, 2), 0.6, kTol);  // epoch 4.5
  EXPECT_NEAR(lr_at(t, 5, 2), 0.2 + 0.4 * (1 + std::cos(M_PI * 2.5 / 3)), kTol);
}

TEST(EarlyStopper, AccuracyNeedsMoreThanMinDelta) {
  EarlyStoppingSpec s;
  s.enabled = true;
  s.patience = 2;
  s.min_delta = 0.01;
  s.monitor = "val_accuracy";
  EarlyStopper e(s);
  EXPECT_FALSE(e.update(1, 0.50, 100));   // first: best 0.50
  EXPECT_FALSE(e.update(2, 0.505, 100));  // not > 0.51: wait 1
  EXPECT_EQ(e.wait(), 1);
  EXPECT_FALSE(e.update(3, 0.52, 100));  // improves: wait 0
  EXPECT_EQ(e.best_epoch(), 3);
  EXPECT_FALSE(e.update(4, 0.525, 100));  // wait 1
  EXPECT_TRUE(e.update(5, 0.10, 100));    // wait 2 = patience
  EXPECT_DOUBLE_EQ(e.best(), 0.52);
  EXPECT_EQ(e.best_epoch(), 3);
  const std::string line = e.describe(20);
  EXPECT_NE(line.find("early stopping after epoch 5/20"), std::string::npos) << line;
  EXPECT_NE(line.find("val_accuracy"), std::string::npos) << line;
  EXPECT_NE(line.find("best 0.52 (epoch 3)"), std::string::npos) << line;
  EXPECT_NE(line.find("patience 2"), std::string::npos) << line;
}

TEST(EarlyStopper, LossMustGoDown) {
  EarlyStoppingSpec s;
  s.enabled = true;
  s.patience = 1;
  s.monitor = "val_loss";
  EarlyStopper e(s);
  EXPECT_FALSE(e.update(1, 1.0, 10));
  EXPECT_FALSE(e.update(2, 0.9, 10));
  EXPECT_TRUE(e.update(3, 0.9, 10));  // equal is no improvement with min_delta 0
  EXPECT_DOUBLE_EQ(e.best(), 0.9);
  EXPECT_EQ(e.best_epoch(), 2);
}

TEST(EarlyStopper, OnlyEpochsBelowEbopsCount) {
  EarlyStoppingSpec s;
  s.enabled = true;
  s.patience = 1;
  s.monitor = "val_accuracy";
  s.ebops_below = 50;
  EarlyStopper e(s);
  for (int64_t ep = 1; ep <= 10; ++ep) EXPECT_FALSE(e.update(ep, 0.5, 50)) << ep;  // never below
  EXPECT_EQ(e.best_epoch(), 0);
  EXPECT_FALSE(e.update(11, 0.4, 49));  // first counted epoch: best 0.4
  EXPECT_FALSE(e.update(12, 0.9, 80));  // not counted, even though better
  EXPECT_TRUE(e.update(13, 0.4, 30));   // counted, no improvement
  EXPECT_EQ(e.best_epoch(), 11);
}

TEST(EarlyStopper, DisabledNeverStops) {
  EarlyStopper e(EarlyStoppingSpec{});
  for (int64_t ep = 1; ep <= 5; ++ep) EXPECT_FALSE(e.update(ep, 0.0, 1));
}
