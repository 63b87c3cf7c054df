// The exact ROC AUC on hand-computed cases.
#include "hgqt/train/metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>

using hgqt::train::roc_auc;

TEST(RocAuc, TextbookCase) {
  // Pairs (positive, negative): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4: 3 of 4.
  EXPECT_DOUBLE_EQ(roc_auc({0.1, 0.4, 0.35, 0.8}, {false, false, true, true}), 0.75);
}

TEST(RocAuc, TiesCountOneHalf) {
  // Positives {2, 3}, negatives {1, 2}: 2>1, 2=2 (1/2), 3>1, 3>2: 3.5 of 4.
  EXPECT_DOUBLE_EQ(roc_auc({1, 2, 2, 3}, {false, false, true, true}), 0.875);
  // Positives {5, 5, 1}, negatives {5, 0}: 5=5 twice (1/2 each), 5>0 twice, 1<5, 1>0: 4 of 6.
  EXPECT_DOUBLE_EQ(roc_auc({5, 5, 1, 5, 0}, {true, true, true, false, false}), 4.0 / 6.0);
}

TEST(RocAuc, AllEqualIsOneHalf) {
  EXPECT_DOUBLE_EQ(roc_auc({0.3, 0.3, 0.3, 0.3, 0.3}, {true, false, false, true, false}), 0.5);
}

TEST(RocAuc, PerfectAndInverted) {
  EXPECT_DOUBLE_EQ(roc_auc({0.1, 0.2, 0.9, 3.0}, {false, false, true, true}), 1.0);
  EXPECT_DOUBLE_EQ(roc_auc({0.9, 3.0, 0.1, 0.2}, {false, false, true, true}), 0.0);
  // Order of the input does not matter.
  EXPECT_DOUBLE_EQ(roc_auc({5, -1, 7, 0}, {true, false, true, false}), 1.0);
}

TEST(RocAuc, OneClassOnlyIsNaN) {
  EXPECT_TRUE(std::isnan(roc_auc({1, 2, 3}, {true, true, true})));
  EXPECT_TRUE(std::isnan(roc_auc({1, 2, 3}, {false, false, false})));
  EXPECT_TRUE(std::isnan(roc_auc({}, {})));
}

TEST(RocAuc, RejectsBadInput) {
  EXPECT_THROW(roc_auc({1, 2}, {true}), std::invalid_argument);
  EXPECT_THROW(roc_auc({1, std::nan("")}, {true, false}), std::invalid_argument);
}
