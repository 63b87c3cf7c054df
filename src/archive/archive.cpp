// The model archive: validation, and the directory format (model.json + tensors.h5) specified in
// docs/model-format.md. No LibTorch: nlohmann_json and the HDF5 C API only.
#include "hgqt/archive/archive.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <new>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <system_error>
#include <tuple>
#include <unordered_map>
#include <utility>
#include <vector>

#include "hgqt/util/einsum.h"
#include "hgqt/util/h5.h"
#include "hgqt/util/shape.h"

namespace hgqt::archive {

namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

constexpr const char* kFormatName = "hgqt-archive";
constexpr const char* kModelFile = "model.json";
constexpr const char* kTensorsFile = "tensors.h5";
/// Largest element count of one tensor (far beyond any FPGA model; keeps products in int64).
constexpr int64_t kMaxElements = int64_t{1} << 40;
/// Widest quantizer (k + i + f) and largest |i|, |f| an archive may hold.
constexpr int kMaxWidth = 62;
constexpr int kMaxIntFracBits = 64;

std::string quote(const std::string& s) {
  return "'" + s + "'";
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string out = "[";
  for (size_t d = 0; d < shape.size(); ++d) out += (d ? ", " : "") + std::to_string(shape[d]);
  return out + "]";
}

/// " (index [r, c])" for element n of a multi-dimensional shape; "" for 1-D and scalars.
std::string index_note(const std::vector<int64_t>& shape, int64_t n) {
  if (shape.size() < 2) return "";
  std::vector<int64_t> idx(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    idx[d] = shape[d] > 0 ? n % shape[d] : 0;
    n = shape[d] > 0 ? n / shape[d] : 0;
  }
  return " (index " + shape_str(idx) + ")";
}

/// Element count of `shape`; negative dimensions and absurd sizes are errors.
int64_t checked_size(const std::vector<int64_t>& shape, const std::string& what) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw ArchiveError(what + " " + shape_str(shape) + " has a negative dimension");
    if (d != 0 && n > kMaxElements / d)
      throw ArchiveError(what + " " + shape_str(shape) + " has more than 2^40 elements");
    n *= d;
  }
  return n;
}

bool valid_round(quant::RoundingMode m) {
  switch (m) {
    case quant::RoundingMode::TRN:
    case quant::RoundingMode::RND:
    case quant::RoundingMode::RND_CONV:
    case quant::RoundingMode::S_RND:
      return true;
  }
  return false;
}

bool valid_overflow(quant::OverflowMode m) {
  switch (m) {
    case quant::OverflowMode::WRAP:
    case quant::OverflowMode::SAT:
    case quant::OverflowMode::SAT_SYM:
      return true;
  }
  return false;
}

/// The name of kind `k`; nullptr for a value that is no kind.
const char* name_or_null(LayerKind k) {
  switch (k) {
    case LayerKind::Quantize:
      return "quantize";
    case LayerKind::Flatten:
      return "flatten";
    case LayerKind::Reshape:
      return "reshape";
    case LayerKind::Dense:
      return "dense";
    case LayerKind::Conv1d:
      return "conv1d";
    case LayerKind::Conv2d:
      return "conv2d";
    case LayerKind::Scale:
      return "scale";
    case LayerKind::Pool:
      return "pool";
    case LayerKind::Add:
      return "add";
    case LayerKind::Concatenate:
      return "concatenate";
    case LayerKind::Activation:
      return "activation";
    case LayerKind::Lut:
      return "lut";
    case LayerKind::Softmax:
      return "softmax";
    case LayerKind::Einsum:
      return "einsum";
    case LayerKind::EinsumDense:
      return "einsum_dense";
  }
  return nullptr;
}

/// Calls fn(kind) for every kind in declaration order. The kinds carry no explicit values, so
/// they are 0, 1, ...: the walk stops at the first value without a name.
template <class Fn>
void for_each_kind(Fn fn) {
  for (int n = 0; name_or_null(static_cast<LayerKind>(n)) != nullptr; ++n)
    fn(static_cast<LayerKind>(n));
}

/// "quantize, flatten, ..., softmax": the valid type names, for messages.
std::string kind_names() {
  std::string out;
  for_each_kind([&](LayerKind k) { out += (out.empty() ? "" : ", ") + std::string(kind_name(k)); });
  return out;
}

/// The four quantizers inside a softmax layer, with their JSON / HDF5 names.
struct SoftmaxSlot {
  const char* name;
  std::optional<QuantSpec> Layer::*slot;
};
constexpr SoftmaxSlot kSoftmaxSlots[] = {
    {"exp_input_quantizer", &Layer::exp_input_quantizer},
    {"exp_output_quantizer", &Layer::exp_output_quantizer},
    {"inv_input_quantizer", &Layer::inv_input_quantizer},
    {"inv_output_quantizer", &Layer::inv_output_quantizer},
};

// ---------------------------------------------------------------------------------------------
// Validation

/// Errors of one layer (or of the archive as a whole): "<where>: layers[i] 'name': <message>".
class Checker {
 public:
  explicit Checker(std::string prefix) : prefix_(std::move(prefix)) {}
  [[noreturn]] void fail(const std::string& message) const {
    throw ArchiveError(prefix_ + message);
  }

  /// A per-sample or constant shape: dimensions >= 1, a sane element count.
  void shape(const std::vector<int64_t>& s, const std::string& field) const {
    for (int64_t d : s)
      if (d < 1) fail(field + " " + shape_str(s) + " has a dimension < 1");
    try {
      checked_size(s, field);
    } catch (const ArchiveError& e) {
      fail(e.what());
    }
  }

  void count(size_t got, int64_t expected, const std::vector<int64_t>& s,
             const std::string& field) const {
    if (static_cast<int64_t>(got) != expected)
      fail(field + " has " + std::to_string(got) + " elements, expected " +
           std::to_string(expected) + " (shape " + shape_str(s) + ")");
  }

  void quantizer(const QuantSpec& q, const std::vector<int64_t>& expected_shape,
                 const std::string& field) const {
    if (q.shape != expected_shape)
      fail(field + ".shape is " + shape_str(q.shape) + ", expected " + shape_str(expected_shape));
    shape(q.shape, field + ".shape");
    const int64_t n = shape_size(q.shape);
    count(q.k.size(), n, q.shape, field + ".k");
    count(q.i.size(), n, q.shape, field + ".i");
    count(q.f.size(), n, q.shape, field + ".f");
    if (!valid_round(q.round))
      fail(field + ".round has the invalid value " + std::to_string(static_cast<int>(q.round)));
    if (q.round == quant::RoundingMode::S_RND)
      fail(field +
           ".round is S_RND (stochastic rounding, training only); an archive holds the "
           "eval form, RND");
    if (!valid_overflow(q.overflow))
      fail(field + ".overflow has the invalid value " +
           std::to_string(static_cast<int>(q.overflow)));
    for (int64_t e = 0; e < n; ++e) {
      const int64_t k = q.k[e], i = q.i[e], f = q.f[e];
      const std::string at = "[" + std::to_string(e) + "]" + index_note(q.shape, e);
      if (k != 0 && k != 1)
        fail(field + ".k" + at + " is " + std::to_string(k) + ", expected 0 or 1");
      if (i < -kMaxIntFracBits || i > kMaxIntFracBits)
        fail(field + ".i" + at + " is " + std::to_string(i) + ", outside [-64, 64]");
      if (f < -kMaxIntFracBits || f > kMaxIntFracBits)
        fail(field + ".f" + at + " is " + std::to_string(f) + ", outside [-64, 64]");
      if (k + i + f > kMaxWidth)
        fail(field + at + ": width k + i + f = " + std::to_string(k + i + f) +
             " exceeds 62 bits (k=" + std::to_string(k) + ", i=" + std::to_string(i) +
             ", f=" + std::to_string(f) + ")");
    }
  }

  void constant(const Constant& c, const std::vector<int64_t>& expected_shape,
                const std::string& field) const {
    if (c.shape != expected_shape)
      fail(field + ".shape is " + shape_str(c.shape) + ", expected " + shape_str(expected_shape));
    shape(c.shape, field + ".shape");
    const int64_t n = shape_size(c.shape);
    count(c.mantissa.size(), n, c.shape, field + ".mantissa");
    count(c.exponent.size(), n, c.shape, field + ".exponent");
    quantizer(c.quantizer, c.shape, field + ".quantizer");
    const QuantSpec& q = c.quantizer;
    for (int64_t e = 0; e < n; ++e) {
      const int k = q.k[e], i = q.i[e], f = q.f[e];
      const int64_t m = c.mantissa[e];
      const std::string at = "[" + std::to_string(e) + "]" + index_note(c.shape, e);
      const std::string kif =
          "k=" + std::to_string(k) + ", i=" + std::to_string(i) + ", f=" + std::to_string(f);
      if (c.exponent[e] != -f)
        fail(field + ".exponent" + at + " is " + std::to_string(c.exponent[e]) + ", expected " +
             std::to_string(-f) + " (-f of its quantizer, " + kif + ")");
      if (k + i + f <= 0) {
        if (m != 0)
          fail(field + ".mantissa" + at + " is " + std::to_string(m) +
               ", but its quantizer prunes the element (" + kif + ", width <= 0): expected 0");
        continue;
      }
      const int b = i + f;  // in [0, 62] here: k + i + f > 0 and <= 62 with k in {0, 1}
      const int64_t hi = (int64_t{1} << b) - 1;
      const int64_t lo = k ? -(int64_t{1} << b) : 0;
      if (m < lo || m > hi)
        fail(field + ".mantissa" + at + " is " + std::to_string(m) + ", outside [" +
             std::to_string(lo) + ", " + std::to_string(hi) + "], the range of its quantizer (" +
             kif + ")");
    }
  }

 private:
  std::string prefix_;
};

/// Layers with an `activation` field: the linear ones, add and activation.
bool layer_has_activation(LayerKind k) {
  switch (k) {
    case LayerKind::Dense:
    case LayerKind::Conv1d:
    case LayerKind::Conv2d:
    case LayerKind::Scale:
    case LayerKind::EinsumDense:
    case LayerKind::Add:
    case LayerKind::Activation:
      return true;
    case LayerKind::Quantize:
    case LayerKind::Flatten:
    case LayerKind::Reshape:
    case LayerKind::Pool:
    case LayerKind::Concatenate:
    case LayerKind::Lut:
    case LayerKind::Softmax:
    case LayerKind::Einsum:
      return false;
  }
  return false;
}

/// Layers with kernel_size and strides: conv1d, conv2d, pool.
bool is_spatial(LayerKind k) {
  switch (k) {
    case LayerKind::Conv1d:
    case LayerKind::Conv2d:
    case LayerKind::Pool:
      return true;
    case LayerKind::Quantize:
    case LayerKind::Flatten:
    case LayerKind::Reshape:
    case LayerKind::Dense:
    case LayerKind::Scale:
    case LayerKind::Add:
    case LayerKind::Concatenate:
    case LayerKind::Activation:
    case LayerKind::Lut:
    case LayerKind::Softmax:
    case LayerKind::Einsum:
    case LayerKind::EinsumDense:
      return false;
  }
  return false;
}

/// Checks a conv or pool layer's kernel_size, strides, pad_before against its shapes.
void check_geometry(const Layer& l, const Checker& c, size_t rank, bool padded) {
  const std::string kind = kind_name(l.kind);
  if (l.input_shape.size() != rank + 1)
    c.fail("input_shape is " + shape_str(l.input_shape) + ", expected " + std::to_string(rank + 1) +
           " dimensions (channels last)");
  // A global pool may write [C] for [1, ..., 1, C].
  const bool global = l.kind == LayerKind::Pool && l.output_shape.size() == 1;
  if (l.output_shape.size() != rank + 1 && !global)
    c.fail("output_shape is " + shape_str(l.output_shape) + ", expected " +
           std::to_string(rank + 1) + " dimensions (channels last)" +
           (l.kind == LayerKind::Pool ? ", or [C] for a global pool" : ""));
  auto sized = [&](const std::vector<int64_t>& v, const char* field) {
    if (v.size() != rank)
      c.fail(std::string(field) + " has " + std::to_string(v.size()) + " entries, expected " +
             std::to_string(rank));
  };
  sized(l.kernel_size, "kernel_size");
  sized(l.strides, "strides");
  if (padded)
    sized(l.pad_before, "pad_before");
  else if (!l.pad_before.empty())
    c.fail("a " + kind + " layer has no pad_before");
  for (size_t d = 0; d < rank; ++d) {
    const int64_t in = l.input_shape[d], out = global ? 1 : l.output_shape[d], k = l.kernel_size[d],
                  s = l.strides[d], p = padded ? l.pad_before[d] : 0;
    const std::string ax = "axis " + std::to_string(d) + ": ";
    if (k < 1 || k > 4096) c.fail(ax + "kernel_size " + std::to_string(k) + " outside [1, 4096]");
    if (s < 1 || s > 4096) c.fail(ax + "stride " + std::to_string(s) + " outside [1, 4096]");
    if (p < 0 || p >= k)
      c.fail(ax + "pad_before " + std::to_string(p) + " outside [0, kernel_size - 1]");
    const int64_t last_end = (out - 1) * s - p + k;  // one past the last window's end
    if (padded) {
      if ((out - 1) * s - p >= in || last_end - in >= k)
        c.fail(ax + "output size " + std::to_string(out) + " does not fit input " +
               std::to_string(in) + " with kernel " + std::to_string(k) + ", stride " +
               std::to_string(s) + ", pad_before " + std::to_string(p));
    } else if (last_end > in || out != (in - k) / s + 1) {
      c.fail(ax + "output size " + std::to_string(out) + ", expected " +
             std::to_string(in >= k ? (in - k) / s + 1 : 0) + " (input " + std::to_string(in) +
             ", window " + std::to_string(k) + ", stride " + std::to_string(s) + ", no padding)");
    }
  }
}

// The optional fields a layer kind may carry (validate_layer checks the ones it needs).
struct OptionalFields {
  bool input_quantizer, kernel, bias, output_quantizer;
};
OptionalFields optional_fields(LayerKind k) {
  switch (k) {
    case LayerKind::Quantize:
      return {true, false, false, false};
    case LayerKind::Lut:
    case LayerKind::Softmax:
    case LayerKind::Einsum:
      return {true, false, false, true};
    case LayerKind::Activation:
    case LayerKind::Add:
      return {false, false, false, true};
    case LayerKind::Flatten:
    case LayerKind::Reshape:
    case LayerKind::Pool:
    case LayerKind::Concatenate:
      return {false, false, false, false};
    case LayerKind::Dense:
    case LayerKind::Conv1d:
    case LayerKind::Conv2d:
    case LayerKind::Scale:
    case LayerKind::EinsumDense:
      return {true, true, true, true};
  }
  return {false, false, false, false};
}

void validate_layer(const Archive& a, size_t idx, const std::string& where) {
  const Layer& l = a.layers[idx];
  const std::string kind = kind_name(l.kind);
  const std::string label = "layers[" + std::to_string(idx) + "]";
  if (l.name.empty()) throw ArchiveError(where + ": " + label + ": name is empty");
  const Checker c(where + ": " + label + " " + quote(l.name) + ": ");
  if (l.name.find('/') != std::string::npos || l.name == "." || l.name == "..")
    c.fail("name must not contain '/' or be '.' or '..' (it names an HDF5 group)");
  for (size_t j = 0; j < idx; ++j)
    if (a.layers[j].name == l.name)
      c.fail("name is also used by layers[" + std::to_string(j) + "]; names must be unique");
  if (l.name == kModelInput) c.fail("name " + quote(l.name) + " is reserved for the model input");

  c.shape(l.input_shape, "input_shape");
  c.shape(l.output_shape, "output_shape");
  std::vector<int64_t> sources;
  try {
    sources = layer_inputs(a, idx);
  } catch (const ArchiveError& e) {
    c.fail(e.what());
  }
  const bool merge = l.kind == LayerKind::Add || l.kind == LayerKind::Concatenate;
  if (merge && sources.size() < 2)
    c.fail("a " + kind + " layer needs two or more inputs, got " + std::to_string(sources.size()));
  if (l.kind == LayerKind::Einsum && sources.size() != 2)
    c.fail("an einsum layer takes two inputs, got " + std::to_string(sources.size()));
  if (!merge && l.kind != LayerKind::Einsum && sources.size() != 1)
    c.fail("a " + kind + " layer takes one input, got " + std::to_string(sources.size()));
  std::vector<std::vector<int64_t>> in_shapes;
  for (size_t s = 0; s < sources.size(); ++s) {
    const int64_t src = sources[s];
    in_shapes.push_back(src < 0 ? a.input_shape : a.layers[src].output_shape);
    const std::string from = src < 0 ? std::string("the archive's input_shape")
                                     : "the output_shape of layers[" + std::to_string(src) + "] " +
                                           quote(a.layers[src].name);
    if (s == 0 && l.input_shape != in_shapes[0])
      c.fail("input_shape is " + shape_str(l.input_shape) + ", expected " +
             shape_str(in_shapes[0]) + " (" + from + ")");
  }
  if (l.kind == LayerKind::Add) {
    const auto b = util::broadcast_shape(in_shapes);
    std::string list;
    for (const auto& s : in_shapes) list += (list.empty() ? "" : ", ") + shape_str(s);
    if (!b)
      c.fail("the input shapes " + list +
             " do not broadcast (numpy rules, aligned at the last axis)");
    if (*b != l.output_shape)
      c.fail("output_shape is " + shape_str(l.output_shape) + ", but the inputs " + list +
             " broadcast to " + shape_str(*b));
  }
  if (!is_spatial(l.kind) &&
      (!l.kernel_size.empty() || !l.strides.empty() || !l.pad_before.empty()))
    c.fail("a " + kind + " layer has no kernel_size, strides or pad_before");
  if (l.kind != LayerKind::Pool && !l.pool.empty()) c.fail("pool is set on a " + kind + " layer");
  if (l.kind != LayerKind::Concatenate && l.axis != 0)
    c.fail("axis is set on a " + kind + " layer");
  if (l.kind != LayerKind::Lut && (!l.function.empty() || !l.table.empty()))
    c.fail("function / table are set on a " + kind + " layer (only lut layers have them)");
  for (const SoftmaxSlot& q : kSoftmaxSlots)
    if (l.kind != LayerKind::Softmax && (l.*q.slot).has_value())
      c.fail(std::string(q.name) + " is set on a " + kind + " layer (only softmax layers have it)");
  if (l.kind != LayerKind::Softmax && l.input_scale != 1.0)
    c.fail("input_scale is set on a " + kind + " layer (only softmax layers have it)");
  if (l.kind != LayerKind::Einsum && l.input2_quantizer)
    c.fail("input2_quantizer is set on a " + kind + " layer (only einsum layers have it)");
  if (l.kind != LayerKind::Einsum && l.kind != LayerKind::EinsumDense && !l.equation.empty())
    c.fail("equation is set on a " + kind + " layer (only einsum and einsum_dense layers have it)");

  if (layer_has_activation(l.kind)) {
    if (l.activation != "linear" && l.activation != "relu")
      c.fail("activation " + quote(l.activation) + " is not one of linear, relu");
  } else if (l.activation != "linear") {
    c.fail("activation " + quote(l.activation) + " is set, but a " + kind +
           " layer has none (only linear, add and activation layers do)");
  }
  const OptionalFields allowed = optional_fields(l.kind);
  const std::tuple<bool, bool, const char*> fields[] = {
      {l.input_quantizer.has_value(), allowed.input_quantizer, "input_quantizer"},
      {l.kernel.has_value(), allowed.kernel, "kernel"},
      {l.bias.has_value(), allowed.bias, "bias"},
      {l.output_quantizer.has_value(), allowed.output_quantizer, "output_quantizer"},
  };
  for (const auto& [present, may, field] : fields)
    if (present && !may) c.fail("a " + kind + " layer has no " + field);
  auto same_shape = [&]() {
    if (l.output_shape != l.input_shape)
      c.fail("output_shape is " + shape_str(l.output_shape) + ", expected " +
             shape_str(l.input_shape) + " (a " + kind + " layer keeps its input shape)");
  };

  switch (l.kind) {
    case LayerKind::Quantize: {
      if (!l.input_quantizer) c.fail("a quantize layer needs an input_quantizer");
      same_shape();
      c.quantizer(*l.input_quantizer, l.input_shape, "input_quantizer");
      break;
    }
    case LayerKind::Flatten: {
      const std::vector<int64_t> flat{shape_size(l.input_shape)};
      if (l.output_shape != flat)
        c.fail("output_shape is " + shape_str(l.output_shape) + ", expected " + shape_str(flat) +
               " (flatten of " + shape_str(l.input_shape) + ")");
      break;
    }
    case LayerKind::Activation: {
      if (!l.output_quantizer) c.fail("an activation layer needs an output_quantizer");
      same_shape();
      c.quantizer(*l.output_quantizer, l.output_shape, "output_quantizer");
      break;
    }
    case LayerKind::Reshape: {
      if (shape_size(l.output_shape) != shape_size(l.input_shape))
        c.fail("output_shape " + shape_str(l.output_shape) + " does not hold the " +
               std::to_string(shape_size(l.input_shape)) + " elements of " +
               shape_str(l.input_shape));
      break;
    }
    case LayerKind::Lut: {
      if (!l.input_quantizer) c.fail("a lut layer needs an input_quantizer (its table's domain)");
      if (!l.output_quantizer) c.fail("a lut layer needs an output_quantizer");
      same_shape();
      c.quantizer(*l.input_quantizer, l.input_shape, "input_quantizer");
      c.quantizer(*l.output_quantizer, l.output_shape, "output_quantizer");
      if (l.function.empty()) c.fail("function is empty (name the tabulated function)");
      std::vector<int64_t> off;
      try {
        off = lut_offsets(l);
      } catch (const ArchiveError& e) {
        c.fail(e.what());
      }
      if (static_cast<int64_t>(l.table.size()) != off.back())
        c.fail("table has " + std::to_string(l.table.size()) + " entries, expected " +
               std::to_string(off.back()) + " (one per input value of every element)");
      const QuantSpec& oq = *l.output_quantizer;
      for (int64_t n = 0; n < oq.size(); ++n) {
        const int w = oq.width(n);
        const int64_t hi = w <= 0 ? 0 : (int64_t{1} << (oq.i[n] + oq.f[n])) - 1;
        const int64_t lo = w <= 0 ? 0 : oq.k[n] ? -(int64_t{1} << (oq.i[n] + oq.f[n])) : 0;
        for (int64_t t = off[n]; t < off[n + 1]; ++t)
          if (l.table[t] < lo || l.table[t] > hi)
            c.fail("table entry " + std::to_string(t - off[n]) + " of element " +
                   std::to_string(n) + index_note(l.output_shape, n) + " is " +
                   std::to_string(l.table[t]) + ", outside [" + std::to_string(lo) + ", " +
                   std::to_string(hi) + "], the range of its output quantizer");
      }
      break;
    }
    case LayerKind::Softmax: {
      if (!l.input_quantizer) c.fail("a softmax layer needs an input_quantizer");
      if (!l.output_quantizer) c.fail("a softmax layer needs an output_quantizer");
      same_shape();
      if (l.input_shape.empty() || l.input_shape.back() < 1)
        c.fail("input_shape " + shape_str(l.input_shape) +
               " has no last axis to take the softmax over");
      c.quantizer(*l.input_quantizer, l.input_shape, "input_quantizer");
      c.quantizer(*l.output_quantizer, l.output_shape, "output_quantizer");
      for (const SoftmaxSlot& q : kSoftmaxSlots) {
        const std::optional<QuantSpec>& spec = l.*q.slot;
        if (!spec) c.fail(std::string("a softmax layer needs an ") + q.name);
        c.quantizer(*spec, {1}, q.name);
      }
      if (!(l.input_scale > 0) || !std::isfinite(l.input_scale))
        c.fail("input_scale " + std::to_string(l.input_scale) + " is not a finite positive number");
      for (const SoftmaxSlot& q : {kSoftmaxSlots[0], kSoftmaxSlots[2]}) {
        const int w = (l.*q.slot)->width(0);
        if (w > kMaxLutInputBits)
          c.fail(std::string(q.name) + " is " + std::to_string(w) +
                 " bits wide; a table takes at most " + std::to_string(kMaxLutInputBits) +
                 " (narrow it)");
      }
      break;
    }
    case LayerKind::Pool: {
      if (l.pool != "max" && l.pool != "avg" && l.pool != "sum")
        c.fail("pool " + quote(l.pool) + " is not one of max, avg, sum");
      if (l.input_shape.size() != 2 && l.input_shape.size() != 3)
        c.fail("input_shape is " + shape_str(l.input_shape) +
               ", expected [L, C] or [H, W, C] (channels last)");
      check_geometry(l, c, l.input_shape.size() - 1, false);
      if (l.output_shape.back() != l.input_shape.back())
        c.fail("output_shape " + shape_str(l.output_shape) + " has " +
               std::to_string(l.output_shape.back()) + " channels, the input " +
               std::to_string(l.input_shape.back()));
      if (l.pool == "avg" &&
          (l.scale_bits < util::kMinAvgScaleBits || l.scale_bits > util::kMaxAvgScaleBits))
        c.fail("scale_bits " + std::to_string(l.scale_bits) + " outside [" +
               std::to_string(util::kMinAvgScaleBits) + ", " +
               std::to_string(util::kMaxAvgScaleBits) + "]");
      break;
    }
    case LayerKind::Add: {
      if (l.output_quantizer) c.quantizer(*l.output_quantizer, l.output_shape, "output_quantizer");
      break;
    }
    case LayerKind::Einsum: {
      std::vector<int64_t> expect;
      try {
        expect = util::einsum_output_shape(util::parse_einsum(l.equation), in_shapes.at(0),
                                           in_shapes.at(1));
      } catch (const std::invalid_argument& e) {
        c.fail(e.what());
      }
      if (l.output_shape != expect)
        c.fail("output_shape is " + shape_str(l.output_shape) + ", expected " + shape_str(expect) +
               " (einsum " + l.equation + ")");
      if (!l.input_quantizer) c.fail("an einsum layer needs an input_quantizer (operand a)");
      if (!l.input2_quantizer) c.fail("an einsum layer needs an input2_quantizer (operand b)");
      c.quantizer(*l.input_quantizer, in_shapes[0], "input_quantizer");
      c.quantizer(*l.input2_quantizer, in_shapes[1], "input2_quantizer");
      if (l.output_quantizer) c.quantizer(*l.output_quantizer, l.output_shape, "output_quantizer");
      break;
    }
    case LayerKind::Concatenate: {
      const size_t rank = l.output_shape.size();
      if (l.axis < 0 || static_cast<size_t>(l.axis) >= rank)
        c.fail("axis " + std::to_string(l.axis) + " outside [0, " + std::to_string(rank - 1) +
               "] (per-sample axes)");
      std::vector<int64_t> expect = in_shapes[0];
      for (size_t s = 0; s < in_shapes.size(); ++s) {
        if (in_shapes[s].size() != rank)
          c.fail("input " + std::to_string(s) + " has shape " + shape_str(in_shapes[s]) +
                 ", not of the output's rank " + std::to_string(rank));
        for (size_t d = 0; d < rank; ++d)
          if (d != static_cast<size_t>(l.axis) && in_shapes[s][d] != l.output_shape[d])
            c.fail("input " + std::to_string(s) + " has shape " + shape_str(in_shapes[s]) +
                   ", which differs from output_shape " + shape_str(l.output_shape) +
                   " outside axis " + std::to_string(l.axis));
        if (s > 0) expect[l.axis] += in_shapes[s][l.axis];
      }
      if (expect != l.output_shape)
        c.fail("output_shape is " + shape_str(l.output_shape) + ", expected " + shape_str(expect));
      break;
    }
    case LayerKind::EinsumDense: {
      if (!l.kernel) c.fail("an einsum_dense layer needs a kernel");
      std::vector<int64_t> expect;
      try {
        expect = util::einsum_output_shape(util::parse_einsum(l.equation), l.input_shape,
                                           l.kernel->shape);
      } catch (const std::invalid_argument& e) {
        c.fail(std::string(e.what()) + " (the kernel is operand b)");
      }
      if (l.output_shape != expect)
        c.fail("output_shape is " + shape_str(l.output_shape) + ", expected " + shape_str(expect) +
               " (einsum " + l.equation + " of input " + shape_str(l.input_shape) + " and kernel " +
               shape_str(l.kernel->shape) + ")");
      c.constant(*l.kernel, l.kernel->shape, "kernel");
      if (l.bias) c.constant(*l.bias, {l.output_shape.back()}, "bias");
      if (l.input_quantizer) c.quantizer(*l.input_quantizer, l.input_shape, "input_quantizer");
      if (l.output_quantizer) c.quantizer(*l.output_quantizer, l.output_shape, "output_quantizer");
      break;
    }
    case LayerKind::Dense: {
      // [S..., in] -> [S..., out]: the kernel applies along the last axis at every position S.
      if (l.input_shape.empty()) c.fail("input_shape is [], expected [..., in]");
      const int64_t in = l.input_shape.back();
      std::vector<int64_t> expect = l.input_shape;
      if (!l.output_shape.empty()) expect.back() = l.output_shape.back();
      if (l.output_shape != expect)
        c.fail("output_shape is " + shape_str(l.output_shape) + ", expected " +
               (l.input_shape.size() > 1 ? "the input's leading axes and [out], " : "[out], ") +
               "e.g. " + shape_str(expect));
      const int64_t out = l.output_shape.back();
      if (!l.kernel) c.fail("a dense layer needs a kernel");
      c.constant(*l.kernel, {in, out}, "kernel");
      if (l.bias) c.constant(*l.bias, {out}, "bias");
      if (l.input_quantizer) c.quantizer(*l.input_quantizer, l.input_shape, "input_quantizer");
      if (l.output_quantizer) c.quantizer(*l.output_quantizer, l.output_shape, "output_quantizer");
      break;
    }
    case LayerKind::Scale: {
      const int64_t ch = l.input_shape.back();
      same_shape();
      if (!l.kernel) c.fail("a scale layer needs a kernel");
      c.constant(*l.kernel, {ch}, "kernel");
      if (l.bias) c.constant(*l.bias, {ch}, "bias");
      if (l.input_quantizer) c.quantizer(*l.input_quantizer, l.input_shape, "input_quantizer");
      if (l.output_quantizer) c.quantizer(*l.output_quantizer, l.output_shape, "output_quantizer");
      break;
    }
    case LayerKind::Conv1d:
    case LayerKind::Conv2d: {
      const size_t rank = l.kind == LayerKind::Conv1d ? 1 : 2;
      check_geometry(l, c, rank, true);
      if (!l.kernel) c.fail("a " + kind + " layer needs a kernel");
      std::vector<int64_t> ks = l.kernel_size;
      ks.push_back(l.input_shape.back());
      ks.push_back(l.output_shape.back());
      c.constant(*l.kernel, ks, "kernel");
      if (l.bias) c.constant(*l.bias, {l.output_shape.back()}, "bias");
      if (l.input_quantizer) c.quantizer(*l.input_quantizer, l.input_shape, "input_quantizer");
      if (l.output_quantizer) c.quantizer(*l.output_quantizer, l.output_shape, "output_quantizer");
      break;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// HDF5

using H5Quiet = util::h5::Lock;  // one HDF5 lock for archives and data files (util/h5.h)
using util::h5::Handle;

/// The most specific description on this thread's HDF5 error stack ("" when none).
std::string h5_detail() {
  std::string detail;
  auto walker = [](unsigned n, const H5E_error2_t* err, void* data) -> herr_t {
    if (n == 0 && err != nullptr && err->desc != nullptr)
      *static_cast<std::string*>(data) = err->desc;
    return 0;
  };
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walker, &detail);
  return detail;
}

std::string with_detail(const std::string& message) {
  const std::string detail = h5_detail();
  return detail.empty() ? message : message + " (HDF5: " + detail + ")";
}

std::vector<std::string> path_parts(const std::string& path) {
  std::vector<std::string> parts;
  std::string cur;
  for (char ch : path) {
    if (ch == '/') {
      if (!cur.empty()) parts.push_back(cur);
      cur.clear();
    } else {
      cur += ch;
    }
  }
  if (!cur.empty()) parts.push_back(cur);
  return parts;
}

/// A tensor to write: HDF5 path, element types and data.
struct TensorOut {
  std::string path;
  hid_t mem_type;
  hid_t file_type;
  const void* data;
  size_t count;
};

void write_tensor(hid_t file, const std::string& file_name, const TensorOut& t) {
  const std::string where = file_name + ": data set " + quote(t.path);
  const hsize_t dims[1] = {static_cast<hsize_t>(t.count)};
  Handle space(H5Screate_simple(1, dims, nullptr), H5Sclose);
  Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  if (!space.valid() || !lcpl.valid() || !dcpl.valid() ||
      H5Pset_create_intermediate_group(lcpl.get(), 1) < 0)
    throw ArchiveError(with_detail(where + ": cannot set up the data set"));
  // Contiguous and uncompressed: archives are small (FPGA models), and HDF5's decompression
  // path is where damaged files do harm (HDF5 1.10 copies a full chunk out of a short one).
  Handle d(H5Dcreate2(file, t.path.c_str(), t.file_type, space.get(), lcpl.get(), dcpl.get(),
                      H5P_DEFAULT),
           H5Dclose);
  if (!d.valid()) throw ArchiveError(with_detail(where + ": cannot create it"));
  if (t.count > 0 && H5Dwrite(d.get(), t.mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data) < 0)
    throw ArchiveError(with_detail(where + ": writing failed"));
  if (!d.close()) throw ArchiveError(with_detail(where + ": writing failed"));
}

/// A tensor to read: where it is, where it goes, what it is for (the JSON path).
struct TensorIn {
  std::string path;   ///< HDF5 data set
  std::string field;  ///< JSON path, e.g. layers[1].kernel.mantissa
  std::vector<int64_t> shape;
  int64_t count = 0;
  std::vector<int32_t>* i32 = nullptr;
  std::vector<int64_t>* i64 = nullptr;
  std::vector<float>* f32 = nullptr;
};

void read_tensor(hid_t file, const std::string& file_name, const TensorIn& t) {
  const std::string what = file_name + ": data set " + quote(t.path) + " (" + t.field + ")";
  // Walk the path one link at a time: H5Lexists on a path with a missing parent fails.
  const std::vector<std::string> parts = path_parts(t.path);
  if (parts.empty()) throw ArchiveError(what + ": empty data set path");
  std::string partial;
  for (const std::string& p : parts) {
    partial += "/" + p;
    const htri_t ok = H5Lexists(file, partial.c_str(), H5P_DEFAULT);
    if (ok < 0) throw ArchiveError(with_detail(what + ": cannot look it up; damaged file?"));
    if (ok == 0) throw ArchiveError(what + ": no such data set (missing " + quote(partial) + ")");
  }
  {
    Handle obj(H5Oopen(file, partial.c_str(), H5P_DEFAULT), H5Oclose);
    if (!obj.valid()) throw ArchiveError(with_detail(what + ": cannot open it; damaged file?"));
    if (H5Iget_type(obj.get()) != H5I_DATASET)
      throw ArchiveError(what + ": is a group or other object, not a data set");
  }
  Handle d(H5Dopen2(file, partial.c_str(), H5P_DEFAULT), H5Dclose);
  if (!d.valid()) throw ArchiveError(with_detail(what + ": cannot open it; damaged file?"));

  Handle type(H5Dget_type(d.get()), H5Tclose);
  if (!type.valid()) throw ArchiveError(with_detail(what + ": cannot read its element type"));
  const H5T_class_t cls = H5Tget_class(type.get());
  const bool want_float = t.f32 != nullptr;
  if (want_float && cls != H5T_FLOAT && cls != H5T_INTEGER)
    throw ArchiveError(what + ": expected numbers (float32)");
  if (!want_float && cls != H5T_INTEGER)
    throw ArchiveError(what + ": expected integers (" + (t.i64 ? "int64" : "int32") +
                       "), the data set holds " + (cls == H5T_FLOAT ? "floats" : "non-integers"));

  Handle space(H5Dget_space(d.get()), H5Sclose);
  if (!space.valid()) throw ArchiveError(with_detail(what + ": cannot read its shape"));
  const H5S_class_t sclass = H5Sget_simple_extent_type(space.get());
  const int nd = sclass == H5S_SIMPLE ? H5Sget_simple_extent_ndims(space.get()) : -1;
  if (nd != 1)
    throw ArchiveError(what + ": expected a 1-D data set of " + std::to_string(t.count) +
                       " elements, found " +
                       (sclass == H5S_SCALAR ? std::string("a scalar")
                        : sclass == H5S_NULL ? std::string("an empty (null) data space")
                                             : std::to_string(nd) + " dimensions"));
  hsize_t dims[1] = {0};
  H5Sget_simple_extent_dims(space.get(), dims, nullptr);
  if (dims[0] != static_cast<hsize_t>(t.count))
    throw ArchiveError(what + ": has " + std::to_string(dims[0]) + " elements, expected " +
                       std::to_string(t.count) + " (shape " + shape_str(t.shape) + ")");

  hid_t mem_type;
  void* buf;
  try {
    if (t.i32) {
      t.i32->assign(static_cast<size_t>(t.count), 0);
      mem_type = H5T_NATIVE_INT32;
      buf = t.i32->data();
    } else if (t.i64) {
      t.i64->assign(static_cast<size_t>(t.count), 0);
      mem_type = H5T_NATIVE_INT64;
      buf = t.i64->data();
    } else {
      t.f32->assign(static_cast<size_t>(t.count), 0.0f);
      mem_type = H5T_NATIVE_FLOAT;
      buf = t.f32->data();
    }
  } catch (const std::bad_alloc&) {
    throw ArchiveError(what + ": " + std::to_string(t.count) + " elements do not fit in memory");
  }
  if (t.count > 0 && H5Dread(d.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
    throw ArchiveError(with_detail(what + ": reading failed; the file is damaged or truncated"));
}

// ---------------------------------------------------------------------------------------------
// JSON

/// Reads typed fields of model.json; errors name the file and the JSON path.
class JsonReader {
 public:
  explicit JsonReader(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const std::string& path, const std::string& message) const {
    throw ArchiveError(file_ + ": " + (path.empty() ? "" : path + ": ") + message);
  }
  static std::string join(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }

  void object(const Json& j, const std::string& path) const {
    if (!j.is_object()) fail(path, std::string("expected an object, got ") + j.type_name());
  }
  const Json* find(const Json& obj, const std::string& key) const {
    auto it = obj.find(key);
    return it == obj.end() ? nullptr : &*it;
  }
  /// A required field of an object.
  const Json& at(const Json& obj, const std::string& path, const std::string& key) const {
    const Json* v = find(obj, key);
    if (v == nullptr) fail(path, "missing field " + quote(key));
    return *v;
  }

  std::string string(const Json& j, const std::string& path) const {
    if (!j.is_string()) fail(path, std::string("expected a string, got ") + j.type_name());
    return j.get<std::string>();
  }
  int64_t integer(const Json& j, const std::string& path) const {
    if (!j.is_number_integer())
      fail(path, std::string("expected an integer, got ") +
                     (j.is_number() ? "a non-integer number" : j.type_name()));
    if (j.is_number_unsigned() && j.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      fail(path, "integer " + j.dump() + " is out of range");
    return j.get<int64_t>();
  }
  double number(const Json& j, const std::string& path) const {
    if (!j.is_number()) fail(path, std::string("expected a number, got ") + j.type_name());
    return j.get<double>();
  }
  bool boolean(const Json& j, const std::string& path) const {
    if (!j.is_boolean()) fail(path, std::string("expected true or false, got ") + j.type_name());
    return j.get<bool>();
  }
  std::vector<int64_t> shape(const Json& j, const std::string& path) const {
    if (!j.is_array())
      fail(path, std::string("expected an array of integers (a shape), got ") + j.type_name());
    std::vector<int64_t> s;
    for (size_t d = 0; d < j.size(); ++d) {
      const std::string p = path + "[" + std::to_string(d) + "]";
      const int64_t v = integer(j[d], p);
      if (v < 0) fail(p, "dimension " + std::to_string(v) + " is negative");
      s.push_back(v);
    }
    try {
      checked_size(s, "shape");
    } catch (const ArchiveError& e) {
      fail(path, e.what());
    }
    return s;
  }

  std::string field_string(const Json& obj, const std::string& path, const std::string& key) const {
    return string(at(obj, path, key), join(path, key));
  }
  std::vector<int64_t> field_shape(const Json& obj, const std::string& path,
                                   const std::string& key) const {
    return shape(at(obj, path, key), join(path, key));
  }
  /// A data set reference: a non-empty HDF5 path.
  std::string field_dataset(const Json& obj, const std::string& path,
                            const std::string& key) const {
    std::string s = field_string(obj, path, key);
    if (path_parts(s).empty())
      fail(join(path, key), "expected an HDF5 data set path such as '/layers/x/kernel/mantissa'");
    return s;
  }

 private:
  std::string file_;
};

Json quant_json(const QuantSpec& q, const std::string& base, std::vector<TensorOut>& out) {
  Json j;
  j["shape"] = q.shape;
  j["round"] = quant::to_string(q.round);
  j["overflow"] = quant::to_string(q.overflow);
  j["k"] = base + "/k";
  j["i"] = base + "/i";
  j["f"] = base + "/f";
  out.push_back({base + "/k", H5T_NATIVE_INT32, H5T_STD_I32LE, q.k.data(), q.k.size()});
  out.push_back({base + "/i", H5T_NATIVE_INT32, H5T_STD_I32LE, q.i.data(), q.i.size()});
  out.push_back({base + "/f", H5T_NATIVE_INT32, H5T_STD_I32LE, q.f.data(), q.f.size()});
  return j;
}

Json constant_json(const Constant& c, const std::string& base, std::vector<TensorOut>& out) {
  Json j;
  j["shape"] = c.shape;
  j["mantissa"] = base + "/mantissa";
  j["exponent"] = base + "/exponent";
  out.push_back(
      {base + "/mantissa", H5T_NATIVE_INT64, H5T_STD_I64LE, c.mantissa.data(), c.mantissa.size()});
  out.push_back(
      {base + "/exponent", H5T_NATIVE_INT32, H5T_STD_I32LE, c.exponent.data(), c.exponent.size()});
  j["quantizer"] = quant_json(c.quantizer, base + "/quantizer", out);
  return j;
}

QuantSpec read_quant(const JsonReader& r, const Json& j, const std::string& path,
                     std::vector<TensorIn>& tensors) {
  r.object(j, path);
  QuantSpec q;
  q.shape = r.field_shape(j, path, "shape");
  const std::string round = r.field_string(j, path, "round");
  const std::string overflow = r.field_string(j, path, "overflow");
  try {
    q.round = quant::parse_rounding(round);
  } catch (const std::invalid_argument& e) {
    r.fail(JsonReader::join(path, "round"), e.what());
  }
  try {
    q.overflow = quant::parse_overflow(overflow);
  } catch (const std::invalid_argument& e) {
    r.fail(JsonReader::join(path, "overflow"), e.what());
  }
  const int64_t n = checked_size(q.shape, path + ".shape");
  tensors.push_back({r.field_dataset(j, path, "k"), JsonReader::join(path, "k"), q.shape, n});
  tensors.push_back({r.field_dataset(j, path, "i"), JsonReader::join(path, "i"), q.shape, n});
  tensors.push_back({r.field_dataset(j, path, "f"), JsonReader::join(path, "f"), q.shape, n});
  return q;
}

/// Points the last three tensor records (k, i, f of `q`) at q's vectors. Called once `q` sits at
/// its final address.
void bind_quant(QuantSpec& q, std::vector<TensorIn>& tensors, size_t first) {
  tensors[first].i32 = &q.k;
  tensors[first + 1].i32 = &q.i;
  tensors[first + 2].i32 = &q.f;
}

void read_constant(const JsonReader& r, const Json& j, const std::string& path,
                   std::optional<Constant>& slot, std::vector<TensorIn>& tensors) {
  r.object(j, path);
  slot.emplace();
  Constant& c = *slot;
  c.shape = r.field_shape(j, path, "shape");
  const int64_t n = checked_size(c.shape, path + ".shape");
  const size_t first = tensors.size();
  tensors.push_back(
      {r.field_dataset(j, path, "mantissa"), JsonReader::join(path, "mantissa"), c.shape, n});
  tensors.push_back(
      {r.field_dataset(j, path, "exponent"), JsonReader::join(path, "exponent"), c.shape, n});
  tensors[first].i64 = &c.mantissa;
  tensors[first + 1].i32 = &c.exponent;
  const std::string qpath = JsonReader::join(path, "quantizer");
  const size_t qfirst = tensors.size();
  c.quantizer = read_quant(r, r.at(j, path, "quantizer"), qpath, tensors);
  bind_quant(c.quantizer, tensors, qfirst);
}

void read_quant_slot(const JsonReader& r, const Json& j, const std::string& path,
                     std::optional<QuantSpec>& slot, std::vector<TensorIn>& tensors) {
  const size_t first = tensors.size();
  slot = read_quant(r, j, path, tensors);
  bind_quant(*slot, tensors, first);
}

std::string read_text(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ArchiveError(file.string() + ": cannot be read (check its permissions)");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw ArchiveError(file.string() + ": reading failed");
  return ss.str();
}

/// Flushes a written file to disk (best effort; the rename is what makes the write atomic).
void sync_file(const fs::path& file) {
  const int fd = ::open(file.c_str(), O_RDONLY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

/// True when `dir` may be replaced by a new archive: it is empty, holds only archive files, or
/// its model.json declares the archive format. Anything else is left alone.
bool replaceable(const fs::path& dir) {
  std::error_code ec;
  bool only_archive_files = true;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string n = it->path().filename().string();
    if (n != kModelFile && n != kTensorsFile) only_archive_files = false;
  }
  if (ec) return false;
  if (only_archive_files) return true;
  try {
    const Json j = Json::parse(read_text(dir / kModelFile));
    return j.is_object() && j.value("format", std::string()) == kFormatName;
  } catch (...) {
    return false;
  }
}

}  // namespace

// -------------------------------------------------------------------------------------------------

const char* kind_name(LayerKind k) {
  const char* name = name_or_null(k);
  return name != nullptr ? name : "unknown";
}

std::optional<LayerKind> parse_kind(const std::string& name) {
  std::optional<LayerKind> found;
  for_each_kind([&](LayerKind k) {
    if (name == kind_name(k)) found = k;
  });
  return found;
}

bool is_linear(LayerKind k) {
  switch (k) {
    case LayerKind::Dense:
    case LayerKind::Conv1d:
    case LayerKind::Conv2d:
    case LayerKind::Scale:
    case LayerKind::EinsumDense:
      return true;
    case LayerKind::Quantize:
    case LayerKind::Flatten:
    case LayerKind::Reshape:
    case LayerKind::Pool:
    case LayerKind::Add:
    case LayerKind::Concatenate:
    case LayerKind::Activation:
    case LayerKind::Lut:
    case LayerKind::Softmax:
    case LayerKind::Einsum:
      return false;
  }
  return false;
}

double Constant::value(int64_t n) const {
  return std::ldexp(static_cast<double>(mantissa[n]), exponent[n]);
}

int64_t shape_size(const std::vector<int64_t>& shape) {
  return checked_size(shape, "shape");
}

std::vector<int64_t> lut_offsets(const Layer& l) {
  if (!l.input_quantizer) throw ArchiveError("lut layer '" + l.name + "' has no input_quantizer");
  const QuantSpec& q = *l.input_quantizer;
  std::vector<int64_t> off{0};
  for (int64_t n = 0; n < q.size(); ++n) {
    const int w = q.width(n);
    if (w > kMaxLutInputBits)
      throw ArchiveError("lut input element " + std::to_string(n) + " is " + std::to_string(w) +
                         " bits wide; a table takes at most " + std::to_string(kMaxLutInputBits) +
                         " (narrow its input quantizer)");
    off.push_back(off.back() + (w <= 0 ? 1 : int64_t{1} << w));
  }
  return off;
}

std::vector<int64_t> layer_inputs(const Archive& a, size_t li) {
  const Layer& l = a.layers.at(li);
  if (l.inputs.empty()) return {static_cast<int64_t>(li) - 1};
  std::vector<int64_t> out;
  for (const std::string& name : l.inputs) {
    if (name == kModelInput) {
      out.push_back(-1);
      continue;
    }
    int64_t found = -2;
    for (size_t j = 0; j < a.layers.size(); ++j)
      if (a.layers[j].name == name) found = static_cast<int64_t>(j);
    if (found == -2)
      throw ArchiveError("inputs names " + quote(name) + ", which is no layer of the archive");
    if (found >= static_cast<int64_t>(li))
      throw ArchiveError("inputs names " + quote(name) +
                         ", a layer that comes later (layers are listed in evaluation order)");
    out.push_back(found);
  }
  return out;
}

LayerGraph layer_graph(const Archive& a) {
  LayerGraph g;
  g.inputs.reserve(a.layers.size());
  g.float_output.assign(a.layers.size(), 0);
  for (size_t li = 0; li < a.layers.size(); ++li) {
    g.inputs.push_back(layer_inputs(a, li));
    const LayerKind k = a.layers[li].kind;
    g.float_output[li] = (k == LayerKind::Flatten || k == LayerKind::Reshape) && g.reads_float(li);
  }
  return g;
}

int64_t Archive::input_size() const {
  return shape_size(input_shape);
}
int64_t Archive::output_size() const {
  return shape_size(output_shape);
}

void validate(const Archive& a, const std::string& where) {
  const Checker c(where + ": ");
  if (a.format_version != kFormatVersion)
    c.fail("format_version " + std::to_string(a.format_version) +
           " is not supported by this build (reads " + std::to_string(kFormatVersion) + ")");
  c.shape(a.input_shape, "input_shape");
  c.shape(a.output_shape, "output_shape");
  if (a.layers.empty()) c.fail("layers is empty; an archive needs at least one layer");
  for (size_t idx = 0; idx < a.layers.size(); ++idx) validate_layer(a, idx, where);
  const Layer& last = a.layers.back();
  if (last.output_shape != a.output_shape)
    c.fail("output_shape is " + shape_str(a.output_shape) + ", but the last layer, layers[" +
           std::to_string(a.layers.size() - 1) + "] " + quote(last.name) + ", outputs " +
           shape_str(last.output_shape));

  if (!a.feature_mean.empty() || !a.feature_std.empty()) {
    const int64_t n = a.input_size();
    c.count(a.feature_mean.size(), n, a.input_shape, "preprocessing.feature_mean");
    c.count(a.feature_std.size(), n, a.input_shape, "preprocessing.feature_std");
    for (int64_t e = 0; e < n; ++e) {
      const std::string at = "[" + std::to_string(e) + "]";
      if (!std::isfinite(a.feature_mean[e]))
        c.fail("preprocessing.feature_mean" + at + " is not finite");
      if (!std::isfinite(a.feature_std[e]) || a.feature_std[e] == 0.0f)
        c.fail("preprocessing.feature_std" + at + " is " + std::to_string(a.feature_std[e]) +
               "; expected a finite nonzero scale");
    }
  }
  if (a.loss != "cross_entropy" && a.loss != "mse")
    c.fail("loss " + quote(a.loss) + " is not one of cross_entropy, mse");
  if (a.trace.samples < 0)
    c.fail("trace.samples is " + std::to_string(a.trace.samples) + ", expected >= 0");
  if (!std::isfinite(a.trace.exact_ebops) || a.trace.exact_ebops < 0)
    c.fail("trace.exact_ebops is " + std::to_string(a.trace.exact_ebops) +
           ", expected a finite number >= 0");
}

void write_archive(const Archive& a, const std::string& dir) {
  fs::path target(dir);
  if (!target.empty() && target.filename().empty()) target = target.parent_path();  // "x/"
  const std::string name = target.filename().string();
  if (target.empty() || name == "." || name == "..")
    throw ArchiveError(quote(dir) + ": not a usable archive directory name");
  const std::string where = target.string();
  validate(a, where);

  std::error_code ec;
  if (fs::exists(target, ec)) {
    if (!fs::is_directory(target, ec))
      throw ArchiveError(where + ": exists and is not a directory; not replacing it");
    if (!replaceable(target))
      throw ArchiveError(where +
                         ": exists and is not an hgqt archive (no model.json with format '" +
                         std::string(kFormatName) + "'); not replacing it");
  }
  if (target.has_parent_path()) {
    fs::create_directories(target.parent_path(), ec);
    if (ec)
      throw ArchiveError(target.parent_path().string() +
                         ": cannot create the directory: " + ec.message());
  }

  // Everything but the tensors goes to model.json; the tensors are listed for tensors.h5.
  std::vector<TensorOut> tensors;
  Json j;
  j["format"] = kFormatName;
  j["format_version"] = a.format_version;
  j["producer"] = a.producer.empty() ? std::string("hgqt ") + HGQT_VERSION : a.producer;
  j["name"] = a.name;
  j["input_shape"] = a.input_shape;
  j["output_shape"] = a.output_shape;
  j["loss"] = a.loss;
  j["trace"] = Json{{"traced", a.trace.traced},
                    {"samples", a.trace.samples},
                    {"data", a.trace.data},
                    {"exact_ebops", a.trace.exact_ebops}};
  if (!a.trace.checkpoint.empty()) j["trace"]["checkpoint"] = a.trace.checkpoint;
  if (a.trace.epoch >= 0) j["trace"]["epoch"] = a.trace.epoch;
  if (a.feature_mean.empty()) {
    j["preprocessing"] = nullptr;
  } else {
    j["preprocessing"] = Json{{"feature_mean", "/preprocessing/feature_mean"},
                              {"feature_std", "/preprocessing/feature_std"}};
    tensors.push_back({"/preprocessing/feature_mean", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE,
                       a.feature_mean.data(), a.feature_mean.size()});
    tensors.push_back({"/preprocessing/feature_std", H5T_NATIVE_FLOAT, H5T_IEEE_F32LE,
                       a.feature_std.data(), a.feature_std.size()});
  }
  j["model_yaml"] = a.model_yaml;
  j["tensors"] = kTensorsFile;
  Json layers = Json::array();
  for (const Layer& l : a.layers) {
    const std::string base = "/layers/" + l.name;
    Json lj;
    lj["name"] = l.name;
    lj["type"] = kind_name(l.kind);
    if (!l.inputs.empty()) lj["inputs"] = l.inputs;
    lj["input_shape"] = l.input_shape;
    lj["output_shape"] = l.output_shape;
    if (layer_has_activation(l.kind)) lj["activation"] = l.activation;
    if (is_spatial(l.kind)) {
      lj["kernel_size"] = l.kernel_size;
      lj["strides"] = l.strides;
    }
    if (l.kind == LayerKind::Conv1d || l.kind == LayerKind::Conv2d) lj["pad_before"] = l.pad_before;
    if (l.kind == LayerKind::Pool) lj["pool"] = l.pool;
    if (has_avg_scale(l)) lj["scale_bits"] = l.scale_bits;
    if (l.kind == LayerKind::Concatenate) lj["axis"] = l.axis;
    if (l.kind == LayerKind::Softmax && l.input_scale != 1.0) lj["input_scale"] = l.input_scale;
    if (l.kind == LayerKind::Einsum || l.kind == LayerKind::EinsumDense)
      lj["equation"] = l.equation;
    if (l.kind == LayerKind::Lut) {
      lj["function"] = l.function;
      lj["table"] = Json{{"size", l.table.size()}, {"values", base + "/table"}};
      tensors.push_back(
          {base + "/table", H5T_NATIVE_INT64, H5T_STD_I64LE, l.table.data(), l.table.size()});
    }
    if (l.input_quantizer)
      lj["input_quantizer"] = quant_json(*l.input_quantizer, base + "/input_quantizer", tensors);
    if (l.input2_quantizer)
      lj["input2_quantizer"] = quant_json(*l.input2_quantizer, base + "/input2_quantizer", tensors);
    if (l.kernel) lj["kernel"] = constant_json(*l.kernel, base + "/kernel", tensors);
    if (l.bias) lj["bias"] = constant_json(*l.bias, base + "/bias", tensors);
    if (l.output_quantizer)
      lj["output_quantizer"] = quant_json(*l.output_quantizer, base + "/output_quantizer", tensors);
    for (const SoftmaxSlot& q : kSoftmaxSlots)
      if (const std::optional<QuantSpec>& spec = l.*q.slot)
        lj[q.name] = quant_json(*spec, base + "/" + q.name, tensors);
    layers.push_back(std::move(lj));
  }
  j["layers"] = std::move(layers);
  std::string text;
  try {
    text = j.dump(2) + "\n";
  } catch (const nlohmann::json::exception& e) {
    throw ArchiveError(where + ": cannot encode model.json (" + e.what() +
                       "); names and strings must be UTF-8");
  }

  const fs::path tmp = fs::path(where + ".tmp-" + std::to_string(::getpid()));
  fs::remove_all(tmp, ec);
  try {
    if (!fs::create_directory(tmp, ec) || ec)
      throw ArchiveError(tmp.string() + ": cannot create the directory: " + ec.message());
    {
      const fs::path h5 = tmp / kTensorsFile;
      H5Quiet quiet;
      Handle f(H5Fcreate(h5.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
      if (!f.valid()) throw ArchiveError(with_detail(h5.string() + ": cannot create the file"));
      for (const TensorOut& t : tensors) write_tensor(f.get(), h5.string(), t);
      if (!f.close()) throw ArchiveError(with_detail(h5.string() + ": closing (flushing) failed"));
      sync_file(h5);
    }
    {
      const fs::path js = tmp / kModelFile;
      std::ofstream out(js, std::ios::binary | std::ios::trunc);
      if (!out) throw ArchiveError(js.string() + ": cannot create the file");
      out << text;
      out.close();
      if (!out) throw ArchiveError(js.string() + ": writing failed (disk full?)");
      sync_file(js);
    }
    if (fs::exists(target, ec)) {
      const fs::path old = fs::path(where + ".old-" + std::to_string(::getpid()));
      fs::remove_all(old, ec);
      fs::rename(target, old, ec);
      if (ec)
        throw ArchiveError(where + ": cannot move the previous archive aside: " + ec.message());
      fs::rename(tmp, target, ec);
      if (ec) {
        const std::string why = ec.message();
        std::error_code ignored;
        fs::rename(old, target, ignored);
        throw ArchiveError(where + ": cannot move the new archive into place: " + why);
      }
      fs::remove_all(old, ec);
    } else {
      fs::rename(tmp, target, ec);
      if (ec)
        throw ArchiveError(where + ": cannot move the new archive into place: " + ec.message());
    }
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(tmp, ignored);
    throw;
  }
}

Archive read_archive(const std::string& path) {
  const fs::path p(path);
  std::error_code ec;
  fs::path dir, json_file;
  if (fs::is_directory(p, ec)) {
    dir = p;
    json_file = p / kModelFile;
    if (!fs::exists(json_file, ec))
      throw ArchiveError(json_file.string() + ": no such file (" + quote(path) +
                         " is not an hgqt archive)");
  } else if (fs::exists(p, ec)) {
    json_file = p;
    dir = p.has_parent_path() ? p.parent_path() : fs::path(".");
  } else {
    throw ArchiveError(quote(path) +
                       ": no such archive (expected a directory holding model.json, or its "
                       "model.json)");
  }
  const std::string where = json_file.string();
  const JsonReader r(where);

  Json j;
  try {
    j = Json::parse(read_text(json_file));
  } catch (const nlohmann::json::exception& e) {
    throw ArchiveError(where + ": not valid JSON: " + e.what());
  }
  r.object(j, "");
  const Json* fmt = r.find(j, "format");
  if (fmt == nullptr) r.fail("", "missing field 'format' (not an hgqt archive?)");
  if (r.string(*fmt, "format") != kFormatName)
    r.fail("format", quote(fmt->get<std::string>()) + " is not " + quote(kFormatName));
  Archive a;
  const int64_t version = r.integer(r.at(j, "", "format_version"), "format_version");
  if (version != kFormatVersion)
    r.fail("", "format_version " + std::to_string(version) +
                   " is not supported by this build (reads " + std::to_string(kFormatVersion) +
                   ")");
  a.format_version = kFormatVersion;
  if (const Json* v = r.find(j, "producer")) a.producer = r.string(*v, "producer");
  a.name = r.field_string(j, "", "name");
  a.input_shape = r.field_shape(j, "", "input_shape");
  a.output_shape = r.field_shape(j, "", "output_shape");
  if (const Json* v = r.find(j, "loss")) a.loss = r.string(*v, "loss");
  if (const Json* v = r.find(j, "model_yaml")) a.model_yaml = r.string(*v, "model_yaml");
  if (const Json* t = r.find(j, "trace")) {
    r.object(*t, "trace");
    a.trace.traced = r.boolean(r.at(*t, "trace", "traced"), "trace.traced");
    a.trace.samples = r.integer(r.at(*t, "trace", "samples"), "trace.samples");
    a.trace.data = r.field_string(*t, "trace", "data");
    if (const Json* v = r.find(*t, "checkpoint"))
      a.trace.checkpoint = r.string(*v, "trace.checkpoint");
    if (const Json* v = r.find(*t, "epoch")) a.trace.epoch = r.integer(*v, "trace.epoch");
    a.trace.exact_ebops = r.number(r.at(*t, "trace", "exact_ebops"), "trace.exact_ebops");
  }

  std::vector<TensorIn> tensors;
  const int64_t input_size = checked_size(a.input_shape, "input_shape");
  if (const Json* pre = r.find(j, "preprocessing"); pre != nullptr && !pre->is_null()) {
    r.object(*pre, "preprocessing");
    tensors.push_back({r.field_dataset(*pre, "preprocessing", "feature_mean"),
                       "preprocessing.feature_mean", a.input_shape, input_size});
    tensors.back().f32 = &a.feature_mean;
    tensors.push_back({r.field_dataset(*pre, "preprocessing", "feature_std"),
                       "preprocessing.feature_std", a.input_shape, input_size});
    tensors.back().f32 = &a.feature_std;
  }
  const std::string tensors_name = r.field_string(j, "", "tensors");
  if (tensors_name.empty() || fs::path(tensors_name).is_absolute())
    r.fail("tensors", quote(tensors_name) + ": expected a file name relative to the archive");

  const Json& lj = r.at(j, "", "layers");
  if (!lj.is_array()) r.fail("layers", std::string("expected an array, got ") + lj.type_name());
  a.layers.reserve(lj.size());  // the tensor records point into the layers: no reallocation
  for (size_t idx = 0; idx < lj.size(); ++idx) {
    const std::string lp = "layers[" + std::to_string(idx) + "]";
    const Json& l = lj[idx];
    r.object(l, lp);
    Layer& layer = a.layers.emplace_back();
    layer.name = r.field_string(l, lp, "name");
    const std::string type = r.field_string(l, lp, "type");
    const std::optional<LayerKind> kind = parse_kind(type);
    if (!kind)
      r.fail(lp + ".type",
             quote(type) + " (layer " + quote(layer.name) + ") is not one of " + kind_names());
    layer.kind = *kind;
    layer.input_shape = r.field_shape(l, lp, "input_shape");
    layer.output_shape = r.field_shape(l, lp, "output_shape");
    if (const Json* v = r.find(l, "inputs")) {
      if (!v->is_array())
        r.fail(lp + ".inputs",
               std::string("expected an array of layer names, got ") + v->type_name());
      for (size_t n = 0; n < v->size(); ++n)
        layer.inputs.push_back(r.string((*v)[n], lp + ".inputs[" + std::to_string(n) + "]"));
    }
    // Small non-negative integer lists (a shape's reader checks exactly that).
    if (const Json* v = r.find(l, "kernel_size"))
      layer.kernel_size = r.shape(*v, lp + ".kernel_size");
    if (const Json* v = r.find(l, "strides")) layer.strides = r.shape(*v, lp + ".strides");
    if (const Json* v = r.find(l, "pad_before")) layer.pad_before = r.shape(*v, lp + ".pad_before");
    if (const Json* v = r.find(l, "pool")) layer.pool = r.string(*v, lp + ".pool");
    if (const Json* v = r.find(l, "scale_bits")) {
      if (layer.kind != LayerKind::Pool || layer.pool != "avg")
        r.fail(lp + ".scale_bits", "only avg pool layers have scale_bits");
      const int64_t b = r.integer(*v, lp + ".scale_bits");
      if (b < util::kMinAvgScaleBits || b > util::kMaxAvgScaleBits)
        r.fail(lp + ".scale_bits",
               "expected an integer in [" + std::to_string(util::kMinAvgScaleBits) + ", " +
                   std::to_string(util::kMaxAvgScaleBits) + "], got " + std::to_string(b));
      layer.scale_bits = static_cast<int>(b);
    }
    if (const Json* v = r.find(l, "axis")) layer.axis = r.integer(*v, lp + ".axis");
    if (const Json* v = r.find(l, "function")) layer.function = r.string(*v, lp + ".function");
    if (const Json* v = r.find(l, "equation")) layer.equation = r.string(*v, lp + ".equation");
    if (const Json* v = r.find(l, "input_scale")) {
      if (!v->is_number()) r.fail(lp + ".input_scale", "expected a number");
      layer.input_scale = v->get<double>();
    }
    if (const Json* v = r.find(l, "table")) {
      const std::string tp = lp + ".table";
      r.object(*v, tp);
      const int64_t size = r.integer(r.at(*v, tp, "size"), tp + ".size");
      if (size < 1 || size > (int64_t{1} << 32)) r.fail(tp + ".size", "expected 1 to 2^32 entries");
      tensors.push_back({r.field_dataset(*v, tp, "values"), tp + ".values", {size}, size});
      tensors.back().i64 = &layer.table;
    }
    if (const Json* v = r.find(l, "activation"))
      layer.activation = r.string(*v, lp + ".activation");
    if (const Json* v = r.find(l, "input_quantizer"))
      read_quant_slot(r, *v, lp + ".input_quantizer", layer.input_quantizer, tensors);
    if (const Json* v = r.find(l, "input2_quantizer"))
      read_quant_slot(r, *v, lp + ".input2_quantizer", layer.input2_quantizer, tensors);
    if (const Json* v = r.find(l, "kernel"))
      read_constant(r, *v, lp + ".kernel", layer.kernel, tensors);
    if (const Json* v = r.find(l, "bias")) read_constant(r, *v, lp + ".bias", layer.bias, tensors);
    if (const Json* v = r.find(l, "output_quantizer"))
      read_quant_slot(r, *v, lp + ".output_quantizer", layer.output_quantizer, tensors);
    for (const SoftmaxSlot& q : kSoftmaxSlots)
      if (const Json* v = r.find(l, q.name))
        read_quant_slot(r, *v, lp + "." + q.name, layer.*q.slot, tensors);
  }

  const fs::path h5 = dir / tensors_name;
  const std::string h5name = h5.string();
  if (!fs::exists(h5, ec))
    throw ArchiveError(h5name + ": no such file (the tensors of " + where + ")");
  if (fs::is_directory(h5, ec)) throw ArchiveError(h5name + ": is a directory, not an HDF5 file");
  {
    H5Quiet quiet;
    Handle f(H5Fopen(h5.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    if (!f.valid()) {
      std::ifstream probe(h5, std::ios::binary);
      if (!probe) throw ArchiveError(h5name + ": cannot be read (check its permissions)");
      throw ArchiveError(with_detail(h5name + ": not an HDF5 file, or damaged or truncated"));
    }
    for (const TensorIn& t : tensors) read_tensor(f.get(), h5name, t);
  }
  validate(a, where);
  return a;
}

}  // namespace hgqt::archive
