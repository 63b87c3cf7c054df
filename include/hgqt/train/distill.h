// Knowledge distillation: teachers (TorchScript or hgqt), their targets and the distillation loss.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "hgqt/config/config.h"

namespace hgqt::train {

/// A teacher model, evaluated in eval mode without gradients on the raw data (the features as
/// stored in the data file, shaped like the student's input): a TorchScript module gets them as
/// they are (its own preprocessing belongs inside it); an hgqt checkpoint applies its own
/// recorded standardization first.
class Teacher {
 public:
  /// Loads `path`: a run directory (its best.pt, else last.pt), an hgqt checkpoint, or a
  /// TorchScript file (torch.jit.trace / torch.jit.script, saved with torch.jit.save). Throws
  /// std::runtime_error naming the path and why each reading failed.
  static Teacher load(const std::string& path);
  ~Teacher();
  Teacher(Teacher&&) noexcept;
  Teacher& operator=(Teacher&&) noexcept;

  /// "TorchScript module 'x.ts'" or "hgqt checkpoint 'runs/x/best.pt' (epoch 9)".
  const std::string& description() const;
  /// True for an hgqt checkpoint whose model ends in a softmax layer.
  bool outputs_probabilities() const;
  /// Outputs on `raw_x` [N, ...] in batches: float32 [N, d] on the CPU. Throws
  /// std::runtime_error naming the teacher and the input shape when it fails or gives
  /// non-finite values or a batch dimension other than N.
  torch::Tensor outputs(const torch::Tensor& raw_x, int64_t batch_size = 1024);
  /// Per-sample reconstruction MSE of an autoencoder teacher: mean over the values of
  /// (output - input)^2, float32 [N, 1]. Throws when the output size differs from the input's.
  torch::Tensor reconstruction_errors(const torch::Tensor& raw_x, int64_t batch_size = 1024);

 private:
  struct Impl;
  explicit Teacher(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// The targets a distillation asks of the teacher: its outputs (target output) or its
/// reconstruction errors (target reconstruction_error).
torch::Tensor teacher_targets(Teacher& teacher, const torch::Tensor& raw_x,
                              const config::DistillationSpec& spec);

/// Turns teacher outputs into what distill_loss takes for kl: log-probabilities (log_softmax of
/// logits; log of probabilities floored at 1e-12). Other losses take the outputs as they are.
torch::Tensor prepare_teacher_targets(const torch::Tensor& outputs,
                                      const config::DistillationSpec& spec,
                                      bool teacher_probabilities);

/// The distillation term of a batch (mean over the batch):
/// kl: T^2 * KL(softmax(t / T) || softmax(s / T)) with t the teacher's log-probabilities; a
///   student that ends in a softmax (`student_probabilities`) uses log(p + 2^-8) as its
///   log-probabilities and needs T = 1; mse: mean (s - t)^2; huber: mean Huber(s - t, delta).
torch::Tensor distill_loss(const torch::Tensor& student, const torch::Tensor& teacher,
                           const config::DistillationSpec& spec, bool student_probabilities);

}  // namespace hgqt::train
