// Checkpoints: a model's parameters plus what is needed to rebuild and use it, written atomically.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "hgqt/model/model.h"

namespace hgqt::model {

/// What a checkpoint records besides the tensors.
struct CheckpointMeta {
  int64_t epoch = 0;
  double val_accuracy = 0;  ///< NaN for regression
  double val_loss = 0;
  double ebops = 0;
  double beta = 0;
  std::string loss = "cross_entropy";
  std::vector<float> feature_mean, feature_std;  ///< standardization (empty when none)
  std::string config_yaml;                       ///< the resolved run config
};

/// A model loaded back with its metadata.
struct Checkpoint {
  HGQModel model{nullptr};
  CheckpointMeta meta;
};

/// Writes `path` atomically (temporary file, then rename): an interrupted write leaves the old
/// file intact. Throws std::runtime_error naming the path on failure. `extra` may write more
/// entries into the archive (the trainer's resume state); load_checkpoint ignores them.
void save_checkpoint(const std::string& path, HGQModel& model, const CheckpointMeta& meta,
                     const std::function<void(torch::serialize::OutputArchive&)>& extra = {});

/// Rebuilds the model from the checkpoint's spec and loads its tensors. Throws
/// std::runtime_error naming the path when it is missing or not an hgqt checkpoint.
Checkpoint load_checkpoint(const std::string& path);

/// A run directory resolves to its best.pt; a file resolves to itself.
std::string resolve_checkpoint_path(const std::string& run_dir_or_file);

}  // namespace hgqt::model
