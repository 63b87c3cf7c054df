// The model archive: hgqt's own interchange format between training and every back end
// (emulator, HLS, Verilog, QONNX). No LibTorch here. Specified in docs/model-format.md.
//
// A model is a list of layers in evaluation order; each layer reads the outputs of earlier
// layers named in `inputs` (default: the previous layer; "input" is the model input), so the
// list can express a graph (skip connections, branches). Per-sample shapes are channels-last:
// [L, C] for 1-D and [H, W, C] for 2-D feature maps; every tensor is stored row-major.
//
// Data flow (quantization.md section 8), layer by layer, per sample:
//   quantize:    y = Q_in(x)
//   flatten, reshape: y = x (row-major, shape changes only)
//   dense, conv1d, conv2d, scale, einsum_dense (the "linear" layers; see archive::linear_map):
//                xq = Q_in(x) (when it has an input quantizer);
//                acc[o] = sum over the layer's products xq[j] * W[w] + b[c] exactly;
//                y = act(acc); y = Q_out(y) when it has an output quantizer.
//                dense: W [in, out], applied along the last axis at every position of an input
//                [S..., in] (output [S..., out]; a flat input [in] has one position); conv1d: W [K,
//                C, F], conv2d: W [KH, KW, C, F] with `strides` and zero padding `pad_before` (the
//                products that fall into the padding are absent); scale (batch norm): W [C], y[..,
//                c] = x[.., c] * W[c] + b[c]; einsum_dense: acc = einsum(equation, xq, W) + b
//                (b over the output's last axis), e.g. "phd,pk->khd" projects a particle list
//                [P, H, d] along the particle axis to k rows (Linformer).
//   pool:        max, avg or sum over windows (`kernel_size`, `strides`, no padding) of each
//                channel; avg: over a window of 2^s elements the exact sum times 2^-s, over any
//                other window of N elements the exact sum times mult 2^-shift, 1 / N rounded to
//                `scale_bits` significant bits (util::avg_scale); sum is the exact sum (any
//                window).
//   add:         acc = exact sum of its inputs, broadcast to the output shape (numpy rules, aligned
//                at the last axis: a pooled [C] is added to every particle of a [P, C] list);
//                y = Q_out(act(acc)) (Q_out optional).
//   concatenate: the inputs joined along per-sample `axis`.
//   activation:  y = Q_out(act(x))
//   lut:         y[n] = table of element n at Q_in(x)[n]: a lookup table over every value the input
//                quantizer can give (fn(v) quantized by Q_out when it was built; `function` names
//                fn).
//   softmax:     over the last axis, table-based and max-subtracted (see archive::softmax_types):
//                x = Q_in(x); per row: d_j = x_j - max x; u_j = Q_ei(d_j); e_j = EXP[u_j] =
//                Q_eo(exp(c * u_j)) (c = input_scale, default 1; softmax of c x); s = Q_ii(sum
//                e_j); r = INV[s] = Q_io(1 / max(s, 2^-30)); y_j = Q_out(e_j * r). Q_ei, Q_eo,
//                Q_ii, Q_io: one type each for the layer.
//   einsum:      two inputs a, b (already fixed-point): a = Q_in(a), b = Q_in2(b); y[o] = exact
//                sum over the equation's summed axes of a[..] * b[..] (util/einsum.h: products
//                of two activations, Q K^T and P V); y = Q_out(y) when it has an output quantizer.
// act is linear or relu (exact). Q applies per element k, i, f, rounding, then overflow.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "hgqt/quant/fixed_point.h"
#include "hgqt/util/avg_scale.h"

namespace hgqt::archive {

/// The format version this build writes and reads.
constexpr int kFormatVersion = 1;

/// A malformed or unreadable archive: names the file and the field.
class ArchiveError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A quantizer expanded to one (k, i, f) per element of `shape` (row-major).
/// Width W = k + i + f; W <= 0 means the element is pruned (always 0).
struct QuantSpec {
  std::vector<int64_t> shape;  ///< per-sample shape (activations) or the constant's shape
  std::vector<int32_t> k, i, f;
  quant::RoundingMode round = quant::RoundingMode::RND;
  quant::OverflowMode overflow = quant::OverflowMode::WRAP;

  int64_t size() const { return static_cast<int64_t>(k.size()); }
  int width(int64_t n) const { return k[n] + i[n] + f[n]; }
  /// Q(x) of element n in double (quantization.md section 2, eval semantics).
  double apply(double x, int64_t n) const {
    return quant::quantize_fixed(x, k[n], i[n], f[n], round, overflow);
  }
};

/// An exact constant tensor (kernel or bias): element n is mantissa[n] * 2^exponent[n].
struct Constant {
  std::vector<int64_t> shape;
  std::vector<int64_t> mantissa;
  std::vector<int32_t> exponent;  ///< -f of the element's quantizer
  QuantSpec quantizer;            ///< the weight quantizer the values came from
  int64_t size() const { return static_cast<int64_t>(mantissa.size()); }
  double value(int64_t n) const;  ///< exact in double
};

struct Archive;

/// The name `inputs` uses for the model input (no layer may be called so).
inline constexpr const char* kModelInput = "input";

/// The kinds of layer (the data flow above); model.json names them in lower case.
/// No explicit values: parse_kind walks them from 0 in order. Adding one, the compiler (-Wswitch)
/// lists the switches that must handle it.
enum class LayerKind {
  Quantize,
  Flatten,
  Reshape,
  Dense,
  Conv1d,
  Conv2d,
  Scale,
  Pool,
  Add,
  Concatenate,
  Activation,
  Lut,
  Softmax,
  Einsum,
  EinsumDense
};
/// The lower-case name model.json uses: "quantize", "flatten", ..., "softmax".
const char* kind_name(LayerKind k);
/// The kind named `name` (lower case, as in model.json), or std::nullopt.
std::optional<LayerKind> parse_kind(const std::string& name);
/// True for the layers with a kernel: dense, conv1d, conv2d, scale, einsum_dense.
bool is_linear(LayerKind k);

/// One layer. Which optional fields are set depends on `kind` (see the data flow above).
struct Layer {
  std::string name;
  /// quantize, flatten, reshape, dense, conv1d, conv2d, scale, pool, add, concatenate, activation,
  /// lut, softmax, einsum, einsum_dense (written to model.json as "type")
  LayerKind kind = LayerKind::Dense;
  /// Names of the layers it reads (kModelInput: the model input). Empty: the previous layer
  /// (the model input for the first layer). add and concatenate read two or more, einsum two.
  std::vector<std::string> inputs;
  /// Per sample; for several inputs, input_shape is the first input's shape.
  std::vector<int64_t> input_shape, output_shape;
  std::string activation = "linear";  ///< linear layers, add, activation: linear | relu
  /// quantize, lut, softmax, einsum (its first operand's) (required); linear (optional)
  std::optional<QuantSpec> input_quantizer;
  std::optional<QuantSpec> input2_quantizer;  ///< einsum (required): its second operand's
  std::optional<Constant> kernel;             ///< linear layers (see the data flow)
  std::optional<Constant> bias;               ///< linear layers: [out] / [F] / [C] (optional)
  /// activation, lut, softmax (required); linear, add, einsum (optional)
  std::optional<QuantSpec> output_quantizer;
  /// softmax (all four required, shape [1]): the exp table's input (of d = x - max) and output,
  /// the reciprocal table's input (of the sum) and output.
  std::optional<QuantSpec> exp_input_quantizer, exp_output_quantizer;
  std::optional<QuantSpec> inv_input_quantizer, inv_output_quantizer;
  std::vector<int64_t> kernel_size;  ///< conv: spatial kernel size; pool: window
  std::vector<int64_t> strides;      ///< conv, pool: per spatial axis
  std::vector<int64_t> pad_before;   ///< conv: zero padding before each spatial axis
  std::string pool;                  ///< pool: max | avg | sum
  /// avg pool over a window that is not a power of two: the significant bits of its scale
  /// (written to model.json for those only; [2, 16])
  int scale_bits = util::kDefaultAvgScaleBits;
  std::string function;  ///< lut: name of the tabulated function (tanh, sigmoid, ...)
  /// lut: output mantissas (at the output quantizer's f), element after element; element n has
  /// one entry per mantissa m of its input type, in order from the smallest (see lut_offsets).
  std::vector<int64_t> table;
  int64_t axis = 0;  ///< concatenate: per-sample axis (>= 0)
  /// softmax: the exp table computes exp(input_scale * u) (attention's 1 / sqrt(key_dim)); > 0.
  double input_scale = 1.0;
  /// einsum: "qhd,khd->hqk"; einsum_dense: "phd,pk->khd" (operand b is the kernel) (util/einsum.h;
  /// the batch axis not written)
  std::string equation;
};

/// The `function` of a lut layer whose tables were learned (a lut_dense block's connections,
/// nn::QLearnedLUT): exact_ebops counts their LUT cost (util/lut_cost.h).
constexpr const char* kLearnedLutFunction = "learned";

/// Widest input (k + i + f) of a lut element: its table has 2^16 entries at most.
constexpr int kMaxLutInputBits = 16;
/// Where each element's table starts in Layer::table (size + 1 entries; the last is the table's
/// size): element n has 2^W entries for an input width W = k + i + f > 0, one (the value at 0)
/// when pruned. Throws ArchiveError for an input wider than kMaxLutInputBits.
std::vector<int64_t> lut_offsets(const Layer& l);

/// Elements in one window of a pool layer: the product of its kernel_size.
inline int64_t window_elements(const Layer& l) {
  int64_t n = 1;
  for (int64_t k : l.kernel_size) n *= k;
  return n;
}
/// An avg pool whose average is not an exact shift: its window is not a power of two, and its
/// scale (scale_bits) is part of the model.
inline bool has_avg_scale(const Layer& l) {
  return l.kind == LayerKind::Pool && l.pool == "avg" && !util::is_power_of_two(window_elements(l));
}

/// Indices of the layers layer `li` reads, in order; -1 is the model input.
/// Throws ArchiveError for an unknown or later name.
std::vector<int64_t> layer_inputs(const Archive& a, size_t li);

/// The layer graph, resolved once for every consumer of an archive.
struct LayerGraph {
  std::vector<std::vector<int64_t>> inputs;  ///< per layer: layer_inputs
  /// Per layer: its output is still the float model input (a flatten or reshape of it, or of
  /// such a layer): nothing has quantized it yet.
  std::vector<char> float_output;
  /// Whether input `slot` of layer `li` is the float model input.
  bool reads_float(size_t li, size_t slot = 0) const {
    const int64_t src = inputs.at(li).at(slot);
    return src < 0 || float_output[static_cast<size_t>(src)];
  }
};
/// Throws ArchiveError as layer_inputs does.
LayerGraph layer_graph(const Archive& a);

/// The one walk of the layer graph in evaluation order: out[li] = f(li, layer, ins), where
/// ins[s] points at the value of layer li's input s (`input` for the model input, else out[src];
/// mutable, so a walker may cache derived forms in it). Returns out.
template <class V, class F>
std::vector<V> walk_layers(const Archive& a, V input, F&& f);

/// Calibration record written by the trace.
struct TraceInfo {
  bool traced = false;
  int64_t samples = 0;     ///< calibration samples
  std::string data;        ///< where they came from (file name)
  double exact_ebops = 0;  ///< after the trace
  /// The checkpoint traced: its file name and training epoch ("" and -1 when not recorded).
  std::string checkpoint;
  int64_t epoch = -1;
};

/// A whole model.
struct Archive {
  int format_version = kFormatVersion;
  std::string producer;  ///< "hgqt <version>"
  std::string name = "model";
  std::vector<int64_t> input_shape, output_shape;  ///< per sample
  std::vector<Layer> layers;
  TraceInfo trace;
  /// Preprocessing applied to raw features before the model (float32, as in training):
  /// x = (x - mean) / std per feature. Empty when none.
  std::vector<float> feature_mean, feature_std;
  /// The model section of the training config (YAML), to rebuild a trainable model; may be empty.
  std::string model_yaml;
  /// Loss the model was trained with (cross_entropy: outputs are logits; mse: regression).
  std::string loss = "cross_entropy";

  int64_t input_size() const;
  int64_t output_size() const;
};

/// Checks the archive's internal consistency (shapes chain, array sizes, required quantizers,
/// widths within 62 bits, k in {0,1}). Throws ArchiveError naming `where`, the layer and field.
void validate(const Archive& a, const std::string& where = "archive");

/// Writes the archive as a directory `dir` holding model.json and tensors.h5 (replaced
/// atomically when it exists). Throws ArchiveError.
/// Validates first; writes into `dir.tmp-<pid>` and renames it into place, so a failure leaves a
/// previous archive intact. An existing `dir` is replaced only when it is empty, holds only
/// model.json / tensors.h5, or its model.json says "format": "hgqt-archive". An empty `producer`
/// is written as "hgqt <version>".
void write_archive(const Archive& a, const std::string& dir);
/// Reads and validates an archive directory (or its model.json). Errors name the file, the
/// field and what was expected: missing fields, wrong format version, truncated HDF5.
Archive read_archive(const std::string& path);

/// Product of a shape ("[]" is 1). Throws ArchiveError on a negative dimension or more than
/// 2^40 elements.
int64_t shape_size(const std::vector<int64_t>& shape);

template <class V, class F>
std::vector<V> walk_layers(const Archive& a, V input, F&& f) {
  std::vector<V> out;
  out.reserve(a.layers.size());  // ins point into out: no reallocation during the walk
  std::vector<V*> ins;
  for (size_t li = 0; li < a.layers.size(); ++li) {
    ins.clear();
    for (int64_t src : layer_inputs(a, li))
      ins.push_back(src < 0 ? &input : &out[static_cast<size_t>(src)]);
    V v = f(li, a.layers[li], ins);
    out.push_back(std::move(v));
  }
  return out;
}

}  // namespace hgqt::archive
