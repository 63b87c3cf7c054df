// Between a trained HGQModel and the model archive: export, load back, and the calibration trace
// (quantization.md sections 4 and 6).
#pragma once

#include <torch/torch.h>

#include "hgqt/archive/archive.h"
#include "hgqt/model/checkpoint.h"

namespace hgqt::model {

/// The archive of a model in eval semantics: every quantizer expanded to per-element integer
/// k, i, f (S_RND becomes RND), kernels and biases as exact mantissas. `meta` (optional) adds
/// the standardizer and the loss. The archive's trace record is left untraced.
archive::Archive to_archive(HGQModel& model, const CheckpointMeta* meta = nullptr,
                            const std::string& name = "model");

/// Rebuilds a model from an archive (needs its model_yaml): every quantizer and constant set so
/// that the model's eval outputs equal the archive's exactly. Throws archive::ArchiveError.
HGQModel from_archive(const archive::Archive& a);

/// What a trace did.
struct TraceResult {
  int64_t samples = 0;
  int64_t passes = 0;        ///< forward passes until the integer bits settled
  int64_t quantizers = 0;    ///< activation quantizers calibrated
  int64_t elements = 0;      ///< their parameter elements
  int64_t widened = 0;       ///< elements whose integer bits grew
  int64_t narrowed = 0;      ///< elements whose width shrank
  int64_t sign_dropped = 0;  ///< elements that became unsigned
  double ebops_before = 0;   ///< training EBOPs before the trace
  double exact_ebops = 0;    ///< exact EBOPs afterwards (from the archive)
};

/// Calibration (section 4): runs `x` ([N, input shape...], any float type) through the model in
/// eval mode and sets, for every activation quantizer, k = [v_min < 0] and the smallest integer
/// bits i holding [v_min, v_max] of the rounded values (before WRAP; after SAT), per parameter
/// element. Elements pruned before stay pruned; fractional bits are kept. Repeats until nothing
/// changes (upstream quantizers change what downstream ones see). Afterwards no calibration input
/// overflows a WRAP quantizer. The model is left in eval mode.
TraceResult trace(HGQModel& model, const torch::Tensor& x, int64_t batch_size = 4096);

/// An independent copy of a model (same spec, parameters and buffers copied).
HGQModel copy_model(HGQModel& model);

/// Eval forward in float64 on CPU (the bit-exact reference of section 8) of a copy of the model.
torch::Tensor forward_float64(HGQModel& model, const torch::Tensor& x, int64_t batch_size = 4096);

}  // namespace hgqt::model
