// Random dense archives and inputs for the back-end tests (no LibTorch).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hgqt/archive/archive.h"

namespace hgqt::testing {

struct RandomArchiveOptions {
  std::vector<int64_t> sizes{8, 6, 4};  ///< input features, hidden widths..., outputs
  uint64_t seed = 1;
  bool quantize_layer = false;  ///< start with a quantize layer instead of dense input quantizers
  bool activation_layer =
      true;  ///< a linear dense followed by a relu activation layer (first hidden)
  bool output_quantizer = true;  ///< give the last hidden dense an output quantizer
  bool mixed_modes = true;    ///< random rounding/overflow modes (else RND / WRAP, SAT_SYM weights)
  double zero_weights = 0.3;  ///< fraction of zero weights
  double pruned_inputs = 0.15;  ///< fraction of pruned (W <= 0) activation elements
  /// Activation quantizers with one (k, i, f) per tensor (at least one magnitude bit, none
  /// pruned), SAT or SAT_SYM overflow and TRN or RND_CONV rounding (overrides mixed_modes and
  /// pruned_inputs for them); weights stay per element. What QONNX represents exactly.
  bool per_tensor = false;
};

/// A valid archive of a random MLP with per-element k, i, f (signed and unsigned, negative i and f,
/// pruned elements), exact weights and biases.
archive::Archive random_mlp_archive(const RandomArchiveOptions& o = {});

/// Small graph models with every layer type beyond dense (channels-last shapes):
/// Cnn2d: quantize -> conv2d 3x3 same relu -> max pool 2x2 -> {identity, conv2d 1x1} concatenated
///   on channels -> conv2d 2x2 valid -> avg pool 2x2 -> flatten -> dense;
/// Conv1dBranches: quantize -> {conv1d k3 s2 same, conv1d k1 s2} -> add relu -> scale (batch
///   norm) -> flatten, concatenated with a reshape of the quantized input -> activation -> dense.
/// Lut: quantize -> lut tanh -> dense relu -> lut sigmoid -> dense (narrow table inputs).
/// Softmax: quantize -> dense -> reshape [2, 4] -> softmax (two rows) -> flatten -> {identity,
///   dense -> softmax} concatenated, with random table quantizers.
/// Particles: a Deep Sets model on a particle list [8, 3]: quantize -> per-particle dense relu ->
///   per-particle dense relu -> {global avg pool, global max pool of the first dense, global sum
///   pool, global max pool of (the second dense + the avg pool broadcast onto every particle)}
///   concatenated -> dense. Every activation quantizer has one (k, i, f) per feature, shared
///   by the 8 particles (channel granularity), so the model is permutation invariant.
/// Attention: one attention head pair on a particle list [6, 3]: quantize -> per-particle dense
///   projections q, k (no bias), v to [6, 4] -> reshapes to [6, 2 heads, 2] -> einsum qhd,khd->hqk
///   (products of two activations) -> softmax over the keys (input_scale 1 / sqrt(2), random
///   table quantizers) -> einsum hqk,khv->qhv -> reshape [6, 4] -> dense [6, 3] -> add the
///   quantized input (residual) -> {global avg pool (a mean over 6: the sum times 1/6 at random
///   scale bits), global max pool} concatenated -> dense.
///   Quantizers of [6, ...] tensors have one (k, i, f) per feature, those of [2, 6, 6] one per
///   head, so the model is permutation invariant.
/// Linformer: Attention with the keys and values projected along the particle axis to 3 rows
///   (einsum_dense phd,pj->jhd, a learned kernel [6, 3]) before the scores [2, 6, 3]; the
///   projection reads particle slots, so this one is not permutation invariant.
/// LutDense: what a lut_dense block exports (HGQ-LUT): quantize [5] -> reshape [5, 1] ->
///   concatenate of 4 copies [5, 4] -> lut "learned" (one random table per connection, narrow
///   per-connection input quantizers, connection (4, 3) pruned, connection (0, 1) a copy of
///   (0, 0) so that its table is shared) -> global sum pool over the 5 inputs [4] -> activation
///   relu with an output quantizer -> dense [2].
enum class GraphKind {
  Cnn2d,
  Conv1dBranches,
  Lut,
  Softmax,
  Particles,
  Attention,
  Linformer,
  LutDense
};
/// A quantizer of shape [1] (one element): k, i, f and its modes.
archive::QuantSpec scalar_quantizer(int k, int i, int f,
                                    quant::RoundingMode round = quant::RoundingMode::RND,
                                    quant::OverflowMode overflow = quant::OverflowMode::SAT);
/// Random softmax stage quantizers (exp / reciprocal table inputs and outputs) on layer `l`.
void random_softmax_quantizers(archive::Layer& l, uint64_t seed);
/// A valid random archive of `kind` with per-element k, i, f like random_mlp_archive.
archive::Archive random_graph_archive(GraphKind kind, const RandomArchiveOptions& o = {});

/// The value of a lut function by name (tanh, sigmoid), in double.
double lut_function_value(const std::string& function, double v);
/// Fills a lut layer's table: entry = Q_out(fn(value)) for every input value of every element.
void fill_lut_table(archive::Layer& l);

/// The rows `x` (n rows of a particle list [P, F] each) followed by the same rows with their
/// particles in a random order (a different permutation per row, drawn from `seed`).
std::vector<double> with_permuted_particles(const std::vector<double>& x, int64_t n, int64_t p,
                                            int64_t f, uint64_t seed);

/// `n` random rows of the archive's input: normal values times `scale` (scale > 1 overflows the
/// WRAP / SAT quantizers).
std::vector<double> random_inputs(const archive::Archive& a, int64_t n, uint64_t seed,
                                  double scale = 1.0);

}  // namespace hgqt::testing
