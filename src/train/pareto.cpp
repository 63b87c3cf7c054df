// Pareto front bookkeeping.
#include "hgqt/train/pareto.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace hgqt::train {

namespace {
bool dominates(double acc_a, double ebops_a, double acc_b, double ebops_b) {
  return acc_a >= acc_b && ebops_a <= ebops_b;
}
}  // namespace

bool ParetoFront::dominated(double accuracy, double ebops) const {
  return std::any_of(entries_.begin(), entries_.end(), [&](const ParetoEntry& e) {
    return dominates(e.accuracy, e.ebops, accuracy, ebops);
  });
}

std::vector<ParetoEntry> ParetoFront::insert(const ParetoEntry& entry) {
  std::vector<ParetoEntry> dropped, kept;
  for (const auto& e : entries_)
    (dominates(entry.accuracy, entry.ebops, e.accuracy, e.ebops) ? dropped : kept).push_back(e);
  kept.push_back(entry);
  entries_ = std::move(kept);
  return dropped;
}

std::vector<ParetoEntry> ParetoFront::entries() const {
  auto out = entries_;
  std::sort(out.begin(), out.end(),
            [](const ParetoEntry& a, const ParetoEntry& b) { return a.ebops < b.ebops; });
  return out;
}

std::string ParetoFront::to_json() const {
  auto j = nlohmann::json::array();
  for (const auto& e : entries())
    j.push_back({{"epoch", e.epoch},
                 {score_name_, negated_ ? -e.accuracy : e.accuracy},
                 {"ebops", e.ebops},
                 {"path", e.path}});
  return j.dump(2);
}

}  // namespace hgqt::train
