// Turning loaded data sets into tensors shaped for a model.
#pragma once

#include <torch/torch.h>

#include "hgqt/data/dataset.h"

namespace hgqt::data {

/// Features [N, input_shape...] float32 and labels: int64 class indices [N] for classification,
/// float32 [N, d] targets otherwise.
struct TensorSplit {
  torch::Tensor x, y;
  /// Class labels int64 [N] when `y` is not them (autoencoder: `y` is the input); may be undefined.
  torch::Tensor labels = {};
  /// Teacher outputs float32 [N, d] for distillation (or undefined).
  torch::Tensor teacher = {};
  int64_t size() const { return x.defined() ? x.size(0) : 0; }
};

/// Converts a data set; throws DataError naming `what` when the sample size does not match the
/// model input, or when labels do not fit `outputs` (class count or target width).
TensorSplit to_tensors(const Dataset& d, const std::vector<int64_t>& input_shape, int64_t outputs,
                       bool classification, const std::string& what);

/// Autoencoder tensors: `x` as in to_tensors, the target `y` = the input reshaped to the
/// model's per-sample `output_shape` (the sizes must agree), and `labels` = the class labels
/// (int64 [N]; one-hot rows are reduced by argmax) when the labels are class indices, else
/// undefined. Throws DataError naming `what` when sizes do not match.
TensorSplit to_autoencoder_tensors(const Dataset& d, const std::vector<int64_t>& input_shape,
                                   const std::vector<int64_t>& output_shape,
                                   const std::string& what);

}  // namespace hgqt::data
