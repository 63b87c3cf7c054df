// Shared by the training tests: temporary run directories, Gaussian blobs and a small classifier
// config for them.
#pragma once

#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "hgqt/config/config.h"
#include "hgqt/data/tensors.h"

namespace hgqt::test {

/// An empty directory under the system temp dir, unique to this process and `name`.
inline std::string temp_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() /
           ("hgqt_train_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p.string();
}

/// Three Gaussian blobs in 8 dimensions, labels 0..2. The centers are the same for every seed, so
/// that splits drawn with different seeds come from one distribution; `seed` draws the samples.
inline data::TensorSplit blobs(int64_t n, uint64_t seed) {
  torch::manual_seed(100);
  auto centers = torch::randn({3, 8}) * 2;
  torch::manual_seed(seed);
  auto y = torch::randint(0, 3, {n}, torch::kLong);
  auto x = centers.index_select(0, y) + torch::randn({n, 8});
  return {x, y};
}

/// An 8-16-3 classifier for blobs: batch 64, lr 0.01, seed 3, constant beta 0.
inline config::RunConfig blobs_config(int64_t epochs) {
  auto cfg = config::parse_run_config(R"(
name: blobs
model:
  input_shape: [8]
  layers:
    - {type: dense, units: 16, activation: relu}
    - {type: dense, units: 3}
data:
  train: {file: unused.h5, features: x, labels: y}
train:
  batch_size: 64
  lr: 0.01
  seed: 3
)",
                                      "test");
  cfg.train.epochs = epochs;
  return cfg;
}

}  // namespace hgqt::test
