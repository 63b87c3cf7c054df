// The Pareto front of checkpoints: higher validation accuracy, lower EBOPs.
#pragma once

#include <string>
#include <vector>

namespace hgqt::train {

/// One checkpoint on the front.
struct ParetoEntry {
  int64_t epoch = 0;
  double accuracy = 0;
  double ebops = 0;
  std::string path;
};

/// Keeps the non-dominated (accuracy up, EBOPs down) entries. `accuracy` is any score where
/// higher is better (regression runs pass -val_loss).
class ParetoFront {
 public:
  /// Names the score in to_json(): `name` (default "val_accuracy"); with `negated`, the score is
  /// written negated (a run scoring -val_loss writes "val_loss": loss).
  void set_score_name(std::string name, bool negated) {
    score_name_ = std::move(name);
    negated_ = negated;
  }
  /// True when an entry with these figures would be dominated by (or equal to) one kept.
  bool dominated(double accuracy, double ebops) const;
  /// Adds a non-dominated entry; returns the entries it dominates, which are dropped.
  std::vector<ParetoEntry> insert(const ParetoEntry& entry);
  /// Entries sorted by EBOPs ascending.
  std::vector<ParetoEntry> entries() const;
  /// JSON array of the entries (sorted by EBOPs).
  std::string to_json() const;

 private:
  std::vector<ParetoEntry> entries_;
  std::string score_name_ = "val_accuracy";
  bool negated_ = false;
};

}  // namespace hgqt::train
