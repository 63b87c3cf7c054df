// QONNX writer (ONNX with qonnx.custom_op.general Quant nodes); no LibTorch.
//
// Graph, per sample of a [batch, ...] float32 input (the archive's per-sample shape, channels-last,
// with a batch axis in front; the output likewise):
//   (Sub mean, Div std: the archive's preprocessing, float32 as in training)
//   quantize:   Quant
//   flatten:    Flatten(axis=1) (nothing when the input is already [batch, n])
//   reshape:    Reshape(x, [0, output_shape...]) (row-major over the channels-last layout)
//   dense:      [Quant] -> MatMul(x, Quant(kernel)) -> [Add(Quant(bias))] -> [Relu] -> [Quant]
//   conv1d/2d:  [Quant] -> [Slice] -> Conv(x, Quant(kernel [F, C, K...]), [Quant(bias)]) ->
//               [Relu] -> [Quant]; pads = pad_before and pad_after (a negative pad_after, input
//               left over by a valid conv, is a Slice dropping that input instead)
//   scale:      [Quant] -> Mul(x, Quant(kernel)) -> [Add(Quant(bias))] -> [Relu] -> [Quant]
//   pool:       MaxPool / AveragePool (kernel_shape, strides, no pads; the average over 2^s
//               elements is exact); a global avg over another count: ReduceSum -> Mul(scale)
//   add:        Add -> Add ... (one per further input) -> [Relu] -> [Quant]
//   concatenate: Concat (axis: the per-sample axis + 1, or its channels-first position)
//   activation: [Relu] -> Quant
//   lut:        the table as a Gather over the per-element table index, channels-last:
//               [WRAP: Mod(x, 2^(k+i), fmod=1)] -> [RND: Add(x, 2^-f/2)] -> Quant(x, per-element
//               scale 2^-f) -> Mul(2^f) -> Cast(int64) -> [SAT: Max(lo), Min(hi) | WRAP: Add(-min),
//               Mod(2^W)] -> Add(offset - min) -> Gather(table values entry * 2^-f_out, axis 0) ->
//               Quant(per-element scale 2^-f_out). Exact for every element type (heterogeneous,
//               pruned: its single entry), every overflow mode (WRAP too) and rounding (RND under
//               rnd_as_offset_floor, as elsewhere); no widening. Table values that float32
//               cannot hold are refused.
//   softmax:    over the last per-sample axis R (channels-last), stage types and tables from
//               archive::softmax_types: x = Q_in(x) -> ReduceMax(axes [R], keepdims) -> Sub ->
//               Q_ei as the lut's int64 mantissa -> Add(-min) -> Gather(exp table) ->
//               ReduceSum(axes [R], keepdims) -> Q_ii as an int64 mantissa -> Add(-min) ->
//               Gather(reciprocal table) -> Mul(e, r) -> Q_out. Q_in / Q_out: one Quant when a
//               scalar Quant is exact, else the int64 mantissa -> Cast(float) -> Mul(2^-f) ->
//               Quant(per-element scale). Exact in float64 for every mode (RND under
//               rnd_as_offset_floor); float32 also when the sum and product fit 24 bits.
//               Refused: mantissas wider than kMaxLutInputBits, differences x - max wider
//               than 24 bits.
// Layout: tensors are channels-last like the archive, except that Conv, MaxPool and
// AveragePool work channels-first ([batch, C, S...]). A Transpose (node "<layer>/to_channels_
// first" or "/to_channels_last", named after the layer that produced the value) converts a value
// the first time a layer needs it in the other layout, and the result is reused; quantize,
// activation, add, concatenate and scale work in whichever layout their inputs already have
// (channels-first when all of them do), so a conv / pool chain has no Transpose inside, only at
// its ends (model input, flatten / reshape / dense, graph output).
// Every Quant has a scalar power-of-two scale 2^-f, zero point 0 and a scalar bit width
// k + i + f, with signed = k, narrow = (SAT_SYM and signed), so that its range is exactly the
// fixed-point range [-k 2^i, 2^i - 2^-f]. The lut layers' two Quants (and the softmax layers'
// mantissa Quants) are the exception: a
// per-element scale 2^-f[n] (a tensor of the per-sample shape) and the union bit width, whose
// range holds every element's (the exact per-element clamp follows on the integer index).
//
// QONNX carries one precision per tensor and always saturates. Constants (kernel, bias) are
// exported with their exact values under the union type of the tensor, which leaves them
// unchanged. Activation quantizers are exact when all their elements share one (k, i, f), none
// is pruned, the overflow is SAT or SAT_SYM and the rounding is TRN (QONNX "FLOOR") or RND_CONV
// ("ROUND", half to even). Anything else is refused, or exported at the union type when
// QonnxOptions::allow_widening says so (then the outputs can differ from the emulator's).
// RND (ties toward +inf) has no QONNX rounding mode: QONNX's HALF_UP rounds ties away from
// zero; it is refused unless QonnxOptions::rnd_as_offset_floor.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "hgqt/archive/archive.h"

namespace hgqt::exporters {

/// The archive cannot be written as QONNX (refusal, or a value QONNX cannot hold); the message
/// names the layer, the quantizer and the reason.
class QonnxError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// How to export what QONNX cannot represent exactly.
/// Example: `QonnxOptions o; o.allow_widening = true;`
struct QonnxOptions {
  /// Export heterogeneous, partly pruned or WRAP activation quantizers at their union type
  /// (max k, max i, max f over the live elements; saturating) instead of refusing. Outputs then
  /// differ from the emulator wherever a narrower element would have rounded, saturated or
  /// wrapped differently, or a pruned element was nonzero.
  bool allow_widening = false;
  /// Export RND (round half up, ties toward +inf) exactly as Add(x, scale/2) followed by a
  /// FLOOR Quant, instead of refusing it. Exact, but two nodes where tools expect one Quant.
  bool rnd_as_offset_floor = false;
  /// Put the archive's preprocessing (feature_mean / feature_std) in the graph as float32 Sub
  /// and Div nodes, so that the graph takes raw features; else the graph takes preprocessed ones.
  bool include_preprocessing = true;
};

/// What the export did.
struct QonnxReport {
  /// Activation elements exported with a quantization that differs from the trained one: a
  /// wider type than their own, a pruned element made live, or a WRAP element now saturating.
  int64_t widened_elements = 0;
  /// Of those, the elements of WRAP quantizers (they saturate in QONNX).
  int64_t wrap_elements = 0;
  int64_t nodes = 0;        ///< nodes in the graph
  int64_t quant_nodes = 0;  ///< of which Quant nodes
  /// One line per widened quantizer: layer, quantizer, union type and what was widened.
  std::vector<std::string> notes;
};

/// Writes the model to `path` (.onnx, binary protobuf). Validates the archive first.
/// Throws QonnxError on refusal or when a value cannot be held exactly in float32, and
/// archive::ArchiveError for an invalid archive; the file is not written then.
QonnxReport export_qonnx(const archive::Archive& a, const std::string& path,
                         const QonnxOptions& options = {});

}  // namespace hgqt::exporters
