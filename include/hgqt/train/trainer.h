// The training loop: task loss + beta * EBOPs + gamma * bit L1, checkpoints and metrics.
#pragma once

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

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
/// `probabilities`: the output comes from a softmax layer (cross entropy then takes its log
/// plus a 2^-8 floor: the loss of a probability quantized to 0 stays finite and its gradient
/// bounded); otherwise it holds logits.
torch::Tensor task_loss(const torch::Tensor& out, const torch::Tensor& y, const std::string& loss,
                        bool probabilities = false);

/// Evaluates in eval mode, in batches, on the model's device.
EvalResult evaluate(model::HGQModel& model, const data::TensorSplit& split, const std::string& loss,
                    int64_t batch_size = 4096);

/// Anomaly detection with an autoencoder (train.target: input): the anomaly score of a sample is
/// its reconstruction MSE (mean over the output values of (output - input)^2).
struct AnomalyResult {
  int64_t samples = 0;                           ///< samples evaluated (0: not computed)
  double mse = NAN;                              ///< mean reconstruction MSE over every sample
  double mse_normal = NAN, mse_anomalous = NAN;  ///< means over the normal / anomalous samples
  /// ROC AUC of the score with the anomaly classes as positives and the normal classes as
  /// negatives (samples of other classes are left out); NaN without labels or one side empty.
  double roc_auc = NAN;
  int64_t normal = 0, anomalous = 0;  ///< samples on each side of the AUC
  std::vector<int64_t> normal_classes, anomaly_classes;
  std::string score = "reconstruction MSE";  ///< what the anomaly score is, for the report
};

/// The anomaly figures of given per-sample scores (higher: more anomalous) and class labels
/// (int64 [N] or undefined), with the classes of `data` as in evaluate_anomaly.
AnomalyResult score_anomaly(const std::vector<double>& scores, const torch::Tensor& labels,
                            const config::DataSpec& data);

/// Per-sample reconstruction MSE of `split` (eval mode, no gradients, in batches).
std::vector<double> reconstruction_errors(model::HGQModel& model, const data::TensorSplit& split,
                                          int64_t batch_size = 4096);

/// Scores `split` (built by data::to_autoencoder_tensors) as an anomaly detector: the normal
/// classes are data.classes, the anomalies data.anomaly_classes or, when empty, every label of
/// the split not in data.classes. Without data.classes or labels only the MSE is computed.
AnomalyResult evaluate_anomaly(model::HGQModel& model, const data::TensorSplit& split,
                               const config::DataSpec& data, int64_t batch_size = 4096);

/// Two lines: `test MSE ...` and `ROC AUC (anomaly score = reconstruction MSE; normal classes
/// [...], anomalies [...]): ...` (the second only when the AUC was computed). `what` names the
/// data ("test").
std::string format_anomaly(const AnomalyResult& r, const std::string& what, double ebops);

/// Throws config::ConfigError when train.target is input and the model's output size differs
/// from its input size (naming both shapes and sizes).
void check_target(model::HGQModel& model, const config::RunConfig& config);

/// One epoch's figures.
struct EpochMetrics {
  int64_t epoch = 0;
  double loss = 0, accuracy = 0, val_loss = 0, val_accuracy = 0, ebops = 0, beta = 0, lr = 0,
         seconds = 0;
};

/// One epoch's figures as the JSON object of its metrics.jsonl line (NaN written as null).
std::string metrics_line(const EpochMetrics& m);

/// What a finished run reports.
struct TrainResult {
  std::vector<EpochMetrics> history;
  std::string best_checkpoint;
  model::CheckpointMeta best;
  EvalResult test;  ///< samples == 0 when there is no test split
  double test_ebops = 0;
  /// train.target input, or distillation of a reconstruction error: the test anomaly scores
  /// (samples == 0 otherwise)
  AnomalyResult anomaly;
  bool stopped_early = false;  ///< train.early_stopping ended the run before train.epochs
  int64_t stopped_epoch = 0;   ///< the last epoch run when stopped_early (1-based)
  /// Interrupted (TrainOptions::interrupted): resume.pt holds the state after `interrupted_step`
  /// of `steps_per_epoch` steps of epoch `interrupted_epoch` (1-based; step 0: at its start).
  bool interrupted = false;
  int64_t interrupted_epoch = 0, interrupted_step = 0, steps_per_epoch = 0;
  bool resumed = false;  ///< the run continued a saved state (TrainOptions::resume)
  int64_t resumed_epoch = 0, resumed_step = 0;  ///< where it continued (as interrupted_*)
};

/// The train.early_stopping rule, fed one epoch at a time. An epoch counts when early stopping
/// is enabled and (with ebops_below) its EBOPs are below ebops_below; uncounted epochs change
/// nothing. A counted epoch improves when its figure beats the best counted one by more than
/// min_delta (higher is better for val_accuracy, lower for val_loss; the first counted epoch
/// always improves; a NaN never does); otherwise it uses up one unit of patience.
class EarlyStopper {
 public:
  explicit EarlyStopper(config::EarlyStoppingSpec spec) : spec_(std::move(spec)) {}
  /// Records an epoch (1-based); true when the run should stop after it.
  bool update(int64_t epoch, double value, double ebops);
  /// The best counted figure (NaN before any) and its epoch (0 before any).
  double best() const { return best_; }
  int64_t best_epoch() const { return best_epoch_; }
  /// Counted epochs since the last improvement.
  int64_t wait() const { return wait_; }
  /// The whole state, for a resumed run.
  struct State {
    double best = NAN;
    int64_t best_epoch = 0, wait = 0, last_epoch = 0;
  };
  State state() const { return {best_, best_epoch_, wait_, last_epoch_}; }
  void restore(const State& s) {
    best_ = s.best;
    best_epoch_ = s.best_epoch;
    wait_ = s.wait;
    last_epoch_ = s.last_epoch;
  }
  /// The line printed when stopping: epoch, monitor, best value and its epoch, patience.
  std::string describe(int64_t epochs) const;

 private:
  config::EarlyStoppingSpec spec_;
  double best_ = NAN;
  int64_t best_epoch_ = 0;
  int64_t wait_ = 0;
  int64_t last_epoch_ = 0;
};

/// Options of a run besides the config.
struct TrainOptions {
  std::string run_dir;   ///< created if missing
  bool progress = true;  ///< draw a progress bar when stderr is a terminal
  bool quiet = false;    ///< no per-epoch lines
  /// Continue the run saved in run_dir/resume.pt (same config and data): model, optimizer state,
  /// epoch and step, beta controller, RNG states, best and Pareto checkpoints, early stopping and
  /// metrics continue exactly where they were.
  bool resume = false;
  /// Polled before every step: when it returns true the trainer saves resume.pt (mid-epoch) and
  /// returns with TrainResult::interrupted (the CLI's Ctrl-C handler).
  std::function<bool()> interrupted;
  /// Called after every epoch, once its metrics.jsonl line and checkpoints are written (the
  /// Python bindings' per-epoch callback). An exception it throws ends the run and reaches the
  /// caller; everything saved so far stays.
  std::function<void(const EpochMetrics&)> on_epoch;
};

/// Where a run directory keeps its resume state (a valid hgqt checkpoint plus optimizer, RNG and
/// loop state). It is rewritten after every epoch and on an interruption.
std::string resume_path(const std::string& run_dir);

/// The config a run directory's resume.pt was trained with, its data paths resolved as in the
/// original config file. Throws std::runtime_error naming the file when there is no resume state.
config::RunConfig resume_config(const std::string& run_dir);

/// Trains the model of `config` on its data; writes config.yaml, metrics.jsonl, last.pt,
/// best.pt, resume.pt, pareto/ and pareto.json in the run directory. Throws on bad data or a NaN
/// loss (the checkpoints written so far stay). With train.distillation it loads the teacher
/// (or reads the precomputed teacher outputs of the data) and computes its targets once: hgqt
/// does not augment data, so every epoch sees the same teacher outputs.
TrainResult train(const config::RunConfig& config, const TrainOptions& options);

/// Lower-level entry: trains `model` on given tensors (used by tests and the CLI alike).
TrainResult train_model(model::HGQModel& model, const config::RunConfig& config,
                        const data::TensorSplit& train, const data::TensorSplit& val,
                        const data::TensorSplit& test, const data::Standardizer& standardizer,
                        const TrainOptions& options);

/// The device a config asks for ("auto": CUDA when available).
torch::Device select_device(const std::string& name);

}  // namespace hgqt::train
