// The training loop: task loss + beta * EBOPs + gamma * bit L1, checkpoints and metrics.
#pragma once

#include <functional>
#include <string>

#include "hgqt/config/config.h"
#include "hgqt/data/tensors.h"
#include "hgqt/model/checkpoint.h"

namespace hgqt::train {

/// Loss and accuracy of a model on a split (eval mode, no gradients).
struct EvalResult {
  double loss = 0;
  double accuracy = 0;  ///< NaN for regression
  int64_t samples = 0;
};

/// Task loss of a batch: cross_entropy (logits vs class indices) or mse.
torch::Tensor task_loss(const torch::Tensor& out, const torch::Tensor& y, const std::string& loss);

/// Evaluates in eval mode, in batches, on the model's device.
EvalResult evaluate(model::HGQModel& model, const data::TensorSplit& split, const std::string& loss,
                    int64_t batch_size = 4096);

/// One epoch's figures.
struct EpochMetrics {
  int64_t epoch = 0;
  double loss = 0, accuracy = 0, val_loss = 0, val_accuracy = 0, ebops = 0, beta = 0, lr = 0,
         seconds = 0;
};

/// What a finished run reports.
struct TrainResult {
  std::vector<EpochMetrics> history;
  std::string best_checkpoint;
  model::CheckpointMeta best;
  EvalResult test;  ///< samples == 0 when there is no test split
  double test_ebops = 0;
};

/// Options of a run besides the config.
struct TrainOptions {
  std::string run_dir;     ///< created if missing
  bool progress = true;    ///< draw a progress bar when stderr is a terminal
  bool quiet = false;      ///< no per-epoch lines
};

/// Trains the model of `config` on its data; writes config.yaml, metrics.jsonl, last.pt,
/// best.pt, pareto/ and pareto.json in the run directory. Throws on bad data or a NaN loss
/// (the checkpoints written so far stay).
TrainResult train(const config::RunConfig& config, const TrainOptions& options);

/// Lower-level entry: trains `model` on given tensors (used by tests and the CLI alike).
TrainResult train_model(model::HGQModel& model, const config::RunConfig& config,
                        const data::TensorSplit& train, const data::TensorSplit& val,
                        const data::TensorSplit& test, const data::Standardizer& standardizer,
                        const TrainOptions& options);

/// The device a config asks for ("auto": CUDA when available).
torch::Device select_device(const std::string& name);

}  // namespace hgqt::train
