// The exact ROC AUC by ranks (Mann-Whitney U).
#include "hgqt/train/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>

namespace hgqt::train {

double roc_auc(const std::vector<double>& scores, const std::vector<bool>& positive) {
  if (scores.size() != positive.size())
    throw std::invalid_argument("roc_auc: " + std::to_string(scores.size()) + " scores but " +
                                std::to_string(positive.size()) + " labels");
  const size_t n = scores.size();
  for (size_t i = 0; i < n; ++i)
    if (std::isnan(scores[i]))
      throw std::invalid_argument("roc_auc: score " + std::to_string(i) + " is NaN");
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return scores[a] < scores[b]; });
  // Sum of the (1-based, tie-averaged) ranks of the positives.
  double rank_sum = 0;
  double n_pos = 0;
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j < n && scores[order[j]] == scores[order[i]]) ++j;
    const double avg_rank = 0.5 * (static_cast<double>(i + 1) + static_cast<double>(j));
    for (size_t k = i; k < j; ++k)
      if (positive[order[k]]) {
        rank_sum += avg_rank;
        n_pos += 1;
      }
    i = j;
  }
  const double n_neg = static_cast<double>(n) - n_pos;
  if (n_pos == 0 || n_neg == 0) return std::numeric_limits<double>::quiet_NaN();
  const double u = rank_sum - n_pos * (n_pos + 1) / 2;
  return u / (n_pos * n_neg);
}

}  // namespace hgqt::train
