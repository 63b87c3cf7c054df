// Evaluation metrics that need no LibTorch: the exact ROC AUC.
#pragma once

#include <cstdint>
#include <vector>

namespace hgqt::train {

/// Exact area under the ROC curve of `scores` (higher = more likely positive) against
/// `positive`, by ranks: the Mann-Whitney U statistic of the positives divided by
/// n_positive * n_negative, with tied scores given their average rank (a tie between a positive
/// and a negative counts one half). 1: every positive scores above every negative; 0: below;
/// 0.5: no separation (e.g. all scores equal). NaN when there are no positives or no negatives.
/// Throws std::invalid_argument when the sizes differ or a score is NaN.
double roc_auc(const std::vector<double>& scores, const std::vector<bool>& positive);

}  // namespace hgqt::train
