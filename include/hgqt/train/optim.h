// Optimizer pieces of the training step: Adam over all parameters in one pass, and zero_grad
// that releases the gradients instead of zeroing them.
#pragma once

#include <torch/torch.h>

namespace hgqt::train {

/// torch::optim::Adam with its step as one loop over every parameter element: the same update,
/// the same state (AdamParamState: step, exp_avg, exp_avg_sq), saved and loaded by Adam's own
/// code, so a resume.pt written by either optimizer loads into the other. Parameters that are
/// not contiguous float32 CPU tensors (CUDA, double) and amsgrad go through Adam::step.
/// Example: `FusedAdam opt(model->parameters(), torch::optim::AdamOptions(1e-3));`
class FusedAdam : public torch::optim::Adam {
 public:
  using torch::optim::Adam::Adam;
  torch::Tensor step(LossClosure closure = nullptr) override;
};

/// Sets every gradient the optimizer holds to undefined (PyTorch's zero_grad(set_to_none=True)):
/// the next backward pass stores its gradient tensors instead of adding them to zeroed ones.
/// Code that reads a gradient must treat undefined as zero.
void zero_grad_to_none(torch::optim::Optimizer& optimizer);

}  // namespace hgqt::train
