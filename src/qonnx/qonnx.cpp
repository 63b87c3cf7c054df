// QONNX writer: the archive's data flow as ONNX opset 13 with qonnx.custom_op.general Quant nodes.
#include "hgqt/export/qonnx.h"

#include <onnx/onnx_pb.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>
#include <tuple>
#include <utility>

#include "hgqt/archive/fixed.h"

namespace hgqt::exporters {

namespace {

using archive::Archive;
using archive::Constant;
using archive::Layer;
using archive::LayerKind;
using archive::QuantSpec;
using quant::OverflowMode;
using quant::RoundingMode;

constexpr const char* kQonnxDomain = "qonnx.custom_op.general";
constexpr int64_t kOnnxOpset = 13;
constexpr int64_t kQonnxOpset = 1;
constexpr int64_t kIrVersion = 8;

/// The parameters of one Quant node: range [-k 2^i, 2^i - 2^-f] (narrow: symmetric).
struct QuantParams {
  int k = 0, i = 0, f = 0;
  bool narrow = false;
  std::string rounding = "ROUND";  ///< QONNX rounding_mode
  bool offset_half = false;        ///< RND: Add(x, 2^-f / 2) before a FLOOR Quant
  int width() const { return k + i + f; }
};

std::string kif_string(int k, int i, int f) {
  const archive::FixedType t{k != 0, k + i + f, f};
  return "k=" + std::to_string(k) + ", i=" + std::to_string(i) + ", f=" + std::to_string(f) + " (" +
         t.to_string() + ")";
}

std::string layer_label(const Layer& l, size_t index) {
  return "layer '" + l.name + "' (layers[" + std::to_string(index) + "], " + kind_name(l.kind) +
         ")";
}

/// The QONNX rounding of an activation quantizer; refuses RND unless it may be offset.
void set_rounding(QuantParams& p, const QuantSpec& q, const std::string& where,
                  const QonnxOptions& options) {
  switch (q.round) {
    case RoundingMode::TRN:
      p.rounding = "FLOOR";
      return;
    case RoundingMode::RND_CONV:
      p.rounding = "ROUND";  // numpy round: half to even
      return;
    case RoundingMode::RND:
    case RoundingMode::S_RND:  // acts as RND in eval
      if (options.rnd_as_offset_floor) {
        p.rounding = "FLOOR";
        p.offset_half = true;
        return;
      }
      throw QonnxError(
          where + ": rounding " + quant::to_string(q.round) +
          " (round half up, ties toward +inf) has no QONNX rounding mode: QONNX's HALF_UP rounds "
          "ties away from zero (-2.5 -> -3, RND gives -2) and ROUND rounds them to even. Train "
          "with TRN or RND_CONV, or set rnd_as_offset_floor to export it exactly as "
          "Add(x, scale/2) followed by a FLOOR Quant");
  }
  throw QonnxError(where + ": unknown rounding mode " + std::to_string(static_cast<int>(q.round)));
}

/// Plans the Quant node of an activation quantizer: exact when the quantizer is uniform, live,
/// saturating and not a signed 1-bit type; else refused or widened to the union type.
QuantParams plan_activation(const QuantSpec& q, const std::string& where,
                            const QonnxOptions& options, QonnxReport& report) {
  QuantParams p;
  set_rounding(p, q, where, options);
  const int64_t n = q.size();
  int64_t live = 0;
  for (int64_t e = 0; e < n; ++e) {
    if (q.width(e) <= 0) continue;
    p.k = live ? std::max(p.k, q.k[e]) : q.k[e];
    p.i = live ? std::max(p.i, q.i[e]) : q.i[e];
    p.f = live ? std::max(p.f, q.f[e]) : q.f[e];
    ++live;
  }
  if (live == 0)
    throw QonnxError(where + ": all " + std::to_string(n) +
                     " elements are pruned (width <= 0), so the tensor is constant 0; a QONNX "
                     "Quant node cannot express that");
  const bool signed_one_bit = p.k == 1 && p.i + p.f == 0;
  if (signed_one_bit) ++p.i;  // QONNX's Quant treats a signed 1-bit type as bipolar (+-1)
  const bool wrap = q.overflow == OverflowMode::WRAP;
  p.narrow = q.overflow == OverflowMode::SAT_SYM && p.k == 1;

  std::set<std::tuple<int, int, int>> types;
  int64_t widened = 0, pruned = 0;
  for (int64_t e = 0; e < n; ++e) {
    const bool dead = q.width(e) <= 0;
    if (dead)
      ++pruned;
    else
      types.emplace(q.k[e], q.i[e], q.f[e]);
    if (wrap || dead || q.k[e] != p.k || q.i[e] != p.i || q.f[e] != p.f) ++widened;
  }
  if (widened == 0) return p;

  std::vector<std::string> reasons;
  if (types.size() > 1)
    reasons.push_back("its live elements have " + std::to_string(types.size()) +
                      " different (k, i, f)");
  if (pruned > 0)
    reasons.push_back(std::to_string(pruned) + " of its " + std::to_string(n) +
                      " elements are pruned (width <= 0; they would be nonzero in QONNX)");
  if (wrap) reasons.push_back("its overflow is WRAP (QONNX always saturates)");
  if (signed_one_bit)
    reasons.push_back("it is a signed 1-bit type (QONNX's Quant makes that bipolar +-1)");
  std::string why;
  for (size_t r = 0; r < reasons.size(); ++r)
    why += (r == 0 ? "" : (r + 1 == reasons.size() ? " and " : ", ")) + reasons[r];
  const std::string union_type = kif_string(p.k, p.i, p.f);
  if (!options.allow_widening)
    throw QonnxError(where + ": QONNX carries one saturating precision per tensor, but " + why +
                     "; set allow_widening to export it at the union type " + union_type + " (" +
                     std::to_string(widened) + " of " + std::to_string(n) +
                     " elements widened; outputs may then differ from the emulator)");
  report.widened_elements += widened;
  if (wrap) report.wrap_elements += n;
  report.notes.push_back(where + ": " + std::to_string(widened) + " of " + std::to_string(n) +
                         " elements widened to the union type " + union_type +
                         (wrap ? ", saturating instead of wrapping" : "") + " (" + why + ")");
  return p;
}

/// Plans the Quant node of a constant: the union type of its live elements, which holds every
/// value exactly (the archive's validation checked each mantissa against its element's type).
QuantParams plan_constant(const Constant& c, const std::string& where) {
  const QuantSpec& q = c.quantizer;
  QuantParams p;
  p.rounding = "ROUND";  // the values lie on the grid: every rounding mode leaves them as they are
  int64_t live = 0;
  for (int64_t e = 0; e < q.size(); ++e) {
    if (q.width(e) <= 0) continue;
    p.k = live ? std::max(p.k, q.k[e]) : q.k[e];
    p.i = live ? std::max(p.i, q.i[e]) : q.i[e];
    p.f = live ? std::max(p.f, q.f[e]) : q.f[e];
    ++live;
  }
  if (live == 0) p = QuantParams{0, 0, 0, false, "ROUND", false};  // all zeros
  // At least 2 bits: a signed 1-bit Quant is bipolar in QONNX, and 1-bit unsigned reads as binary.
  while (p.width() < 2) ++p.i;
  // Narrow (symmetric) only where no value sits at the asymmetric minimum -2^i.
  p.narrow = false;
  if (p.k == 1 && q.overflow == OverflowMode::SAT_SYM) {
    p.narrow = true;
    const archive::int128 lowest = -(archive::int128{1} << (p.width() - 1));
    for (int64_t e = 0; e < c.size() && p.narrow; ++e)
      if (c.mantissa[e] != 0 && archive::align(c.mantissa[e], -c.exponent[e], p.f) == lowest)
        p.narrow = false;
  }
  for (int64_t e = 0; e < c.size(); ++e) {
    const double v = c.value(e);
    if (!(std::fabs(v) <= 3.4e38) || static_cast<double>(static_cast<float>(v)) != v)
      throw QonnxError(where + " element " + std::to_string(e) + ": the value " +
                       std::to_string(c.mantissa[e]) + " * 2^" + std::to_string(c.exponent[e]) +
                       " is not exact in float32 (ONNX initializers are float32 here)");
  }
  return p;
}

/// Builds the graph with unique node, tensor and initializer names.
class GraphBuilder {
 public:
  explicit GraphBuilder(onnx::GraphProto* g) : g_(g) { taken_.insert({"input", "output"}); }

  /// A name not used yet, `base` when free.
  std::string unique(const std::string& base) {
    std::string name = base;
    for (int s = 2; taken_.count(name); ++s) name = base + "_" + std::to_string(s);
    taken_.insert(name);
    return name;
  }

  /// A float32 initializer of shape `dims` ([] = scalar); returns its name.
  std::string initializer(const std::string& base, const std::vector<int64_t>& dims,
                          const std::vector<float>& values) {
    onnx::TensorProto* t = g_->add_initializer();
    t->set_name(unique(base));
    t->set_data_type(onnx::TensorProto::FLOAT);
    for (int64_t d : dims) t->add_dims(d);
    for (float v : values) t->add_float_data(v);
    return t->name();
  }
  std::string scalar(const std::string& base, float v) { return initializer(base, {}, {v}); }
  /// An int64 initializer (Reshape shapes, Slice bounds); returns its name.
  std::string int64_initializer(const std::string& base, const std::vector<int64_t>& values) {
    onnx::TensorProto* t = g_->add_initializer();
    t->set_name(unique(base));
    t->set_data_type(onnx::TensorProto::INT64);
    t->add_dims(static_cast<int64_t>(values.size()));
    for (int64_t v : values) t->add_int64_data(v);
    return t->name();
  }

  /// A node in the default domain (or `domain`); returns its output tensor, named like the node.
  onnx::NodeProto* node(const std::string& op, const std::string& base,
                        const std::vector<std::string>& inputs, const std::string& domain = "") {
    onnx::NodeProto* n = g_->add_node();
    n->set_op_type(op);
    n->set_name(unique(base));
    if (!domain.empty()) n->set_domain(domain);
    for (const auto& in : inputs) n->add_input(in);
    n->add_output(n->name());
    return n;
  }
  std::string op(const std::string& op, const std::string& base,
                 const std::vector<std::string>& inputs) {
    return node(op, base, inputs)->output(0);
  }

  /// An int64 initializer of shape `dims`; returns its name.
  std::string int64_tensor(const std::string& base, const std::vector<int64_t>& dims,
                           const std::vector<int64_t>& values) {
    onnx::TensorProto* t = g_->add_initializer();
    t->set_name(unique(base));
    t->set_data_type(onnx::TensorProto::INT64);
    for (int64_t d : dims) t->add_dims(d);
    for (int64_t v : values) t->add_int64_data(v);
    return t->name();
  }

  /// Quant(x) with a per-element scale tensor `scale` (an initializer broadcasting over the
  /// batch), zero point 0 and the scalar bit width `bits`. Returns the output tensor.
  std::string quant_scaled(const std::string& base, const std::string& x, const std::string& scale,
                           int bits, int is_signed, bool narrow, const std::string& rounding,
                           QonnxReport& report) {
    const std::string zeropt = scalar(base + "/zeropt", 0.0f);
    const std::string width = scalar(base + "/bitwidth", static_cast<float>(bits));
    onnx::NodeProto* n = node("Quant", base, {x, scale, zeropt, width}, kQonnxDomain);
    add_int(n, "signed", is_signed);
    add_int(n, "narrow", narrow ? 1 : 0);
    onnx::AttributeProto* r = n->add_attribute();
    r->set_name("rounding_mode");
    r->set_type(onnx::AttributeProto::STRING);
    r->set_s(rounding);
    ++report.quant_nodes;
    return n->output(0);
  }

  /// Quant(x) with `p`; RND's offset Add comes first. Returns the output tensor.
  std::string quant(const std::string& base, std::string x, const QuantParams& p,
                    QonnxReport& report) {
    if (p.offset_half) {
      const std::string half = scalar(base + "/half_step", std::ldexp(1.0f, -p.f - 1));
      x = op("Add", base + "/add_half_step", {x, half});
    }
    const std::string scale = scalar(base + "/scale", std::ldexp(1.0f, -p.f));
    const std::string zeropt = scalar(base + "/zeropt", 0.0f);
    const std::string bits = scalar(base + "/bitwidth", static_cast<float>(p.width()));
    onnx::NodeProto* n = node("Quant", base, {x, scale, zeropt, bits}, kQonnxDomain);
    add_int(n, "signed", p.k);
    add_int(n, "narrow", p.narrow ? 1 : 0);
    onnx::AttributeProto* r = n->add_attribute();
    r->set_name("rounding_mode");
    r->set_type(onnx::AttributeProto::STRING);
    r->set_s(p.rounding);
    ++report.quant_nodes;
    return n->output(0);
  }

  static void add_int(onnx::NodeProto* n, const std::string& name, int64_t v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INT);
    a->set_i(v);
  }
  static void add_ints(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
    onnx::AttributeProto* a = n->add_attribute();
    a->set_name(name);
    a->set_type(onnx::AttributeProto::INTS);
    for (int64_t e : v) a->add_ints(e);
  }

  /// Renames tensor `from` (a node output) to `to` everywhere; false when no node writes it.
  bool rename_tensor(const std::string& from, const std::string& to) {
    bool written = false;
    for (int n = 0; n < g_->node_size(); ++n) {
      onnx::NodeProto* node = g_->mutable_node(n);
      for (int o = 0; o < node->output_size(); ++o)
        if (node->output(o) == from) {
          node->set_output(o, to);
          written = true;
        }
      for (int i = 0; i < node->input_size(); ++i)
        if (node->input(i) == from) node->set_input(i, to);
    }
    return written;
  }

  /// Float32 tensor value info of shape [batch, dims...].
  static void value_info(onnx::ValueInfoProto* v, const std::string& name,
                         const std::vector<int64_t>& dims) {
    v->set_name(name);
    onnx::TypeProto_Tensor* t = v->mutable_type()->mutable_tensor_type();
    t->set_elem_type(onnx::TensorProto::FLOAT);
    onnx::TensorShapeProto* s = t->mutable_shape();
    s->add_dim()->set_dim_param("batch");
    for (int64_t d : dims) s->add_dim()->set_dim_value(d);
  }

 private:
  onnx::GraphProto* g_;
  std::set<std::string> taken_;
};

/// The constant's values as float32 (checked exact by plan_constant).
std::vector<float> constant_values(const Constant& c) {
  std::vector<float> v(c.size());
  for (int64_t e = 0; e < c.size(); ++e) v[e] = static_cast<float>(c.value(e));
  return v;
}

void write_file(const std::string& bytes, const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  if (target.has_parent_path() && !fs::is_directory(target.parent_path()))
    throw QonnxError("cannot write '" + path + "': the directory '" +
                     target.parent_path().string() + "' does not exist");
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw QonnxError("cannot open '" + tmp + "' for writing");
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.close();
    if (!out) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw QonnxError("writing '" + tmp + "' failed (disk full?)");
    }
  }
  std::error_code ec;
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw QonnxError("cannot move '" + tmp + "' to '" + path + "': " + ec.message());
  }
}

/// A layer's output in the graph. The archive is channels-last ([batch, S..., C]); ONNX's Conv,
/// MaxPool and AveragePool are channels-first ([batch, C, S...]). A value holds the name of its
/// channels-last tensor, its channels-first tensor, or both: the missing one is made by a
/// Transpose on first use and then reused, so a chain of conv / pool / elementwise layers stays
/// channels-first with no Transpose between them.
struct Value {
  std::vector<int64_t> shape;  ///< per sample, channels-last (the archive's)
  std::string last, first;     ///< channels-last / channels-first tensor ("" until made)
  std::string owner;           ///< node name prefix for the Transposes made on demand
};

enum class Layout { Last, First };

/// Writes the layers of the archive into the graph, one Value per layer.
class LayerWriter {
 public:
  LayerWriter(GraphBuilder& b, const QonnxOptions& options, QonnxReport& report)
      : b_(b), options_(options), report_(report) {}

  /// The tensor of `v` in `layout` (spatial values only for Layout::First).
  std::string get(Value& v, Layout layout) {
    const int64_t r = static_cast<int64_t>(v.shape.size());  // per-sample rank
    if (layout == Layout::Last) {
      if (v.last.empty()) {  // [N, C, S...] -> [N, S..., C]
        std::vector<int64_t> perm{0};
        for (int64_t d = 2; d <= r; ++d) perm.push_back(d);
        perm.push_back(1);
        onnx::NodeProto* n = b_.node("Transpose", v.owner + "/to_channels_last", {v.first});
        GraphBuilder::add_ints(n, "perm", perm);
        v.last = n->output(0);
      }
      return v.last;
    }
    if (v.first.empty()) {  // [N, S..., C] -> [N, C, S...]
      std::vector<int64_t> perm{0, r};
      for (int64_t d = 1; d < r; ++d) perm.push_back(d);
      onnx::NodeProto* n = b_.node("Transpose", v.owner + "/to_channels_first", {v.last});
      GraphBuilder::add_ints(n, "perm", perm);
      v.first = n->output(0);
    }
    return v.first;
  }

  /// Where an elementwise layer works: channels-first when its inputs all have that tensor
  /// already (inside a conv / pool chain), else channels-last.
  static Layout elementwise_layout(const std::vector<Value*>& ins) {
    for (const Value* v : ins)
      if (v->shape.size() < 2 || v->first.empty()) return Layout::Last;
    return Layout::First;
  }

  static Value make(const Layer& l, Layout layout, const std::string& tensor) {
    Value v;
    v.shape = l.output_shape;
    v.owner = l.name;
    (layout == Layout::Last ? v.last : v.first) = tensor;
    return v;
  }

  /// Quant of an activation quantizer.
  std::string activation_quant(const std::string& x, const QuantSpec& q, const std::string& base,
                               const std::string& where) {
    const QuantParams p = plan_activation(q, where, options_, report_);
    return b_.quant(base, x, p, report_);
  }

  /// Quant(initializer) of a constant, with the initializer's values in `order` (ONNX element
  /// n holds the archive element order[n]; identity when empty) and shape `dims`.
  std::string constant(const Constant& c, const std::string& base, const std::string& where,
                       const std::vector<int64_t>& dims, const std::vector<int64_t>& order = {}) {
    const QuantParams p = plan_constant(c, where);
    const std::vector<float> values = constant_values(c);
    std::vector<float> ordered = values;
    if (!order.empty())
      for (size_t n = 0; n < order.size(); ++n) ordered[n] = values[order[n]];
    const std::string init = b_.initializer(base, dims, ordered);
    return b_.quant(base + "_quant", init, p, report_);
  }

  /// [Relu] -> [Quant] of a linear or add layer's output.
  std::string finish(const Layer& l, const std::string& label, std::string x) {
    if (l.activation == "relu") x = b_.op("Relu", l.name + "/relu", {x});
    if (l.output_quantizer)
      x = activation_quant(x, *l.output_quantizer, l.name + "/output_quant",
                           label + " output quantizer");
    return x;
  }

  /// `t`: the layer's types (archive::infer_types); softmax layers take their stages from it.
  Value layer(const Layer& l, const std::string& label, const std::vector<Value*>& ins,
              const archive::LayerTypes& t) {
    const std::string& nm = l.name;
    Value& in = *ins[0];
    switch (l.kind) {
      case LayerKind::Flatten:
      case LayerKind::Reshape: {
        if (l.output_shape == in.shape) {  // nothing to do
          Value v = in;
          v.shape = l.output_shape;
          return v;
        }
        const std::string x = get(in, Layout::Last);  // row-major order is channels-last's
        if (l.output_shape.size() == 1) {
          onnx::NodeProto* n = b_.node("Flatten", nm + "/flatten", {x});
          GraphBuilder::add_int(n, "axis", 1);
          return make(l, Layout::Last, n->output(0));
        }
        std::vector<int64_t> dims{0};  // 0: copy the batch dimension
        dims.insert(dims.end(), l.output_shape.begin(), l.output_shape.end());
        const std::string shape = b_.int64_initializer(nm + "/shape", dims);
        return make(l, Layout::Last, b_.op("Reshape", nm + "/reshape", {x, shape}));
      }
      case LayerKind::Quantize:
      case LayerKind::Activation: {
        const Layout lay = elementwise_layout(ins);
        std::string x = get(in, lay);
        if (l.kind == LayerKind::Quantize)
          return make(l, lay,
                      activation_quant(x, *l.input_quantizer, nm + "/input_quant",
                                       label + " input quantizer"));
        if (l.activation == "relu") x = b_.op("Relu", nm + "/relu", {x});
        return make(l, lay,
                    activation_quant(x, *l.output_quantizer, nm + "/output_quant",
                                     label + " output quantizer"));
      }
      case LayerKind::Add: {
        bool broadcast = false;
        for (const Value* v : ins) broadcast = broadcast || v->shape != l.output_shape;
        // ONNX broadcasts from the last axis, the batch axis included: an input of lower rank
        // is reshaped to [N, 1, ..., its shape] first, in the channels-last layout.
        const Layout lay = broadcast ? Layout::Last : elementwise_layout(ins);
        auto operand = [&](Value& v, size_t s) {
          std::string t = get(v, lay);
          if (v.shape.size() == l.output_shape.size()) return t;
          std::vector<int64_t> dims{0};
          dims.resize(1 + l.output_shape.size() - v.shape.size(), 1);
          dims.insert(dims.end(), v.shape.begin(), v.shape.end());
          const std::string pre = nm + "/broadcast" + std::to_string(s);
          return b_.op("Reshape", pre, {t, b_.int64_initializer(pre + "_shape", dims)});
        };
        std::string x = operand(in, 0);
        for (size_t s = 1; s < ins.size(); ++s)
          x = b_.op("Add", nm + "/add", {x, operand(*ins[s], s)});
        return make(l, lay, finish(l, label, x));
      }
      case LayerKind::Concatenate: {
        const Layout lay = elementwise_layout(ins);
        std::vector<std::string> xs;
        for (Value* v : ins) xs.push_back(get(*v, lay));
        const int64_t rank = static_cast<int64_t>(l.output_shape.size());
        int64_t axis = l.axis + 1;  // the batch axis comes first
        if (lay == Layout::First) axis = l.axis == rank - 1 ? 1 : l.axis + 2;
        onnx::NodeProto* n = b_.node("Concat", nm + "/concat", xs);
        GraphBuilder::add_int(n, "axis", axis);
        return make(l, lay, n->output(0));
      }
      case LayerKind::Pool: {
        if (l.pool == "sum") return sum_pool(l, label, in);
        if (archive::has_avg_scale(l)) return scaled_sum_pool(l, label, in);
        const std::string x = get(in, Layout::First);
        // No padding, floor mode: ONNX drops the input left over after the last window, as the
        // archive does. The avg window holds 2^s elements, so the division is exact.
        onnx::NodeProto* n = b_.node(l.pool == "max" ? "MaxPool" : "AveragePool",
                                     nm + (l.pool == "max" ? "/maxpool" : "/avgpool"), {x});
        GraphBuilder::add_ints(n, "kernel_shape", l.kernel_size);
        GraphBuilder::add_ints(n, "strides", l.strides);
        if (l.output_shape.size() == 1) {  // a global pool's [C]: [N, C, 1...] -> [N, C]
          onnx::NodeProto* f = b_.node("Flatten", nm + "/flatten", {n->output(0)});
          GraphBuilder::add_int(f, "axis", 1);
          return make(l, Layout::Last, f->output(0));
        }
        return make(l, Layout::First, n->output(0));
      }
      case LayerKind::Conv1d:
      case LayerKind::Conv2d:
        return conv(l, label, in);
      case LayerKind::Scale:
        return scale(l, label, in);
      case LayerKind::Dense: {
        std::string x = get(in, Layout::Last);
        if (l.input_quantizer)
          x = activation_quant(x, *l.input_quantizer, nm + "/input_quant",
                               label + " input quantizer");
        const Constant& w = *l.kernel;
        const std::string wq = constant(w, nm + "/kernel", label + " kernel", w.shape);
        x = b_.op("MatMul", nm + "/matmul", {x, wq});
        if (l.bias) {
          const std::string bq = constant(*l.bias, nm + "/bias", label + " bias", l.bias->shape);
          x = b_.op("Add", nm + "/bias_add", {x, bq});
        }
        return make(l, Layout::Last, finish(l, label, x));
      }
      case LayerKind::Lut:
        return lut(l, label, in);
      case LayerKind::Softmax:
        return softmax(l, label, in, t);
      case LayerKind::Einsum:
        return einsum(l, label, in, *ins.at(1));
      case LayerKind::EinsumDense:
        return einsum_dense(l, label, in);
    }
    throw QonnxError(label + ": layer type '" + kind_name(l.kind) +
                     "' has no QONNX form in this exporter");
  }

 private:
  /// An einsum of two quantized activations as one batched MatMul of two Quant outputs.
  Value einsum(const Layer& l, const std::string& label, Value& va, Value& vb) {
    const std::string xa = activation_quant(get(va, Layout::Last), *l.input_quantizer,
                                            l.name + "/input_quant", label + " input quantizer");
    const std::string xb = activation_quant(get(vb, Layout::Last), *l.input2_quantizer,
                                            l.name + "/input2_quant", label + " input2 quantizer");
    const std::string y =
        einsum_matmul(l.name, util::parse_einsum(l.equation), xa, va.shape, xb, vb.shape, true);
    return make(l, Layout::Last, finish(l, label, y));
  }

  /// einsum_dense: the einsum of the quantized input and the kernel (a Quant of an initializer),
  /// plus the bias along the output's last axis.
  Value einsum_dense(const Layer& l, const std::string& label, Value& in) {
    std::string x = get(in, Layout::Last);
    if (l.input_quantizer)
      x = activation_quant(x, *l.input_quantizer, l.name + "/input_quant",
                           label + " input quantizer");
    const Constant& w = *l.kernel;
    const std::string wq = constant(w, l.name + "/kernel", label + " kernel", w.shape);
    std::string y =
        einsum_matmul(l.name, util::parse_einsum(l.equation), x, in.shape, wq, w.shape, false);
    if (l.bias) {
      const std::string bq = constant(*l.bias, l.name + "/bias", label + " bias", l.bias->shape);
      y = b_.op("Add", l.name + "/bias_add", {y, bq});
    }
    return make(l, Layout::Last, finish(l, label, y));
  }

  /// einsum(eq, a, b) as one MatMul: a (channels-last, batch axis first) is transposed to [N,
  /// shared..., own..., summed...] and reshaped to [N, S, F, K]; b likewise to [N, S, K, G] (or,
  /// for a kernel without batch axis, to [S, K, G], which MatMul broadcasts); the product is
  /// reshaped and transposed to the equation's output order. Products and sums are exact in
  /// float64 (in float32 while the accumulator's exact type fits 24 bits).
  std::string einsum_matmul(const std::string& nm, const util::EinsumEquation& eq,
                            const std::string& xa, const std::vector<int64_t>& shape_a,
                            const std::string& xb, const std::vector<int64_t>& shape_b,
                            bool b_batched) {
    std::string shared, own_a, own_b;
    for (char c : eq.out) {
      const bool in_a = eq.a.find(c) != std::string::npos, in_b = eq.b.find(c) != std::string::npos;
      (in_a && in_b ? shared : in_a ? own_a : own_b) += c;
    }
    auto size_of = [&](char c) {
      const size_t pa = eq.a.find(c);
      return pa != std::string::npos ? shape_a[pa] : shape_b[eq.b.find(c)];
    };
    auto prod = [&](const std::string& letters) {
      int64_t n = 1;
      for (char c : letters) n *= size_of(c);
      return n;
    };
    // `x` (axes `axes`, after the batch axis when `batched`) with its axes in the order `order`:
    // a Transpose, or `x` itself when the order is the same.
    auto permuted = [&](const std::string& x, const std::string& axes, const std::string& order,
                        bool batched, const std::string& name) {
      if (axes == order) return x;
      std::vector<int64_t> perm;
      if (batched) perm.push_back(0);
      for (char c : order) perm.push_back(static_cast<int64_t>(axes.find(c)) + (batched ? 1 : 0));
      onnx::NodeProto* n = b_.node("Transpose", name, {x});
      GraphBuilder::add_ints(n, "perm", perm);
      return n->output(0);
    };
    // Transposes `x` to `order`, then reshapes it to [N, dims...] ([dims...] when not batched).
    auto arrange = [&](const std::string& x, const std::string& axes, const std::string& order,
                       bool batched, std::vector<int64_t> dims, const std::string& base) {
      const std::string t = permuted(x, axes, order, batched, base + "_transpose");
      if (batched) dims.insert(dims.begin(), 0);  // 0: keep the batch axis
      return b_.op("Reshape", base + "_reshape", {t, b_.int64_initializer(base + "_shape", dims)});
    };
    const int64_t S = prod(shared), F = prod(own_a), G = prod(own_b), K = prod(eq.summed);
    const std::string a4 =
        arrange(xa, eq.a, shared + own_a + eq.summed, true, {S, F, K}, nm + "/a");
    const std::string b4 =
        arrange(xb, eq.b, shared + eq.summed + own_b, b_batched, {S, K, G}, nm + "/b");
    const std::string y = b_.op("MatMul", nm + "/matmul", {a4, b4});
    // [N, S, F, G] -> [N, shared..., own_a..., own_b...] -> the output order
    const std::string have = shared + own_a + own_b;
    std::vector<int64_t> shape{0};
    for (char c : have) shape.push_back(size_of(c));
    const std::string out = b_.op("Reshape", nm + "/unflatten",
                                  {y, b_.int64_initializer(nm + "/unflatten_shape", shape)});
    return permuted(out, have, eq.out, true, nm + "/to_output");
  }

  /// A sum pool: a global one is a ReduceSum over the spatial axes (channels-last, exact as any
  /// sum); a windowed one an AveragePool times the window, exact for a power-of-two window only.
  Value sum_pool(const Layer& l, const std::string& label, Value& in) {
    const int64_t window = archive::window_elements(l);
    if (l.output_shape.size() == 1) {
      const std::string x = get(in, Layout::Last);
      std::vector<int64_t> axes;
      for (size_t d = 1; d < in.shape.size(); ++d) axes.push_back(static_cast<int64_t>(d));
      const std::string ax = b_.int64_initializer(l.name + "/axes", axes);
      onnx::NodeProto* n = b_.node("ReduceSum", l.name + "/sum", {x, ax});
      GraphBuilder::add_int(n, "keepdims", 0);
      return make(l, Layout::Last, n->output(0));
    }
    if ((window & (window - 1)) != 0)
      throw QonnxError(label + ": a sum pool over windows of " + std::to_string(window) +
                       " elements (not a power of two) has no exact QONNX form (AveragePool "
                       "divides by the window)");
    onnx::NodeProto* n = b_.node("AveragePool", l.name + "/avgpool", {get(in, Layout::First)});
    GraphBuilder::add_ints(n, "kernel_shape", l.kernel_size);
    GraphBuilder::add_ints(n, "strides", l.strides);
    const std::string w = b_.initializer(l.name + "/window", {}, {static_cast<float>(window)});
    return make(l, Layout::First, b_.op("Mul", l.name + "/times_window", {n->output(0), w}));
  }

  /// A global avg pool over a window that is not a power of two: the sum pool times the archive's
  /// scale mult * 2^-shift (the constant is exact in float32; the product is exact while the
  /// sum's mantissa times mult stays below 2^24 in a float32 runtime, 2^53 in float64). A
  /// windowed one is refused: AveragePool divides by the window, inexactly.
  Value scaled_sum_pool(const Layer& l, const std::string& label, Value& in) {
    const int64_t window = archive::window_elements(l);
    if (l.output_shape.size() != 1)
      throw QonnxError(label + ": a windowed avg pool over " + std::to_string(window) +
                       " elements (not a power of two) has no exact QONNX form (AveragePool "
                       "divides by the window); a global avg pool with output shape [C] has");
    Value sum = sum_pool(l, label, in);
    const util::AvgScale s = util::avg_scale(window, l.scale_bits);
    const std::string c = b_.initializer(l.name + "/scale", {}, {static_cast<float>(s.value())});
    return make(l, Layout::Last, b_.op("Mul", l.name + "/times_scale", {sum.last, c}));
  }

  /// An integer mantissa tensor made by quant_mantissa: element n holds m[n] + shift[n].
  struct Mantissa {
    std::string tensor;          ///< int64, the per-sample shape with a batch axis in front
    std::vector<int64_t> shift;  ///< -min[n] (WRAP: the value's place in its 2^W range) or 0
    std::vector<int64_t> min;    ///< each element's smallest mantissa (0 when pruned)
  };

  /// Q(x) per element of `dims` (the per-sample shape, channels-last) as an exact int64
  /// mantissa, the quantize-to-index steps of the lut and softmax layers. Nodes are named
  /// `p` + "/...", the Quant `p` + "/" + `quant_name`; `what` names the quantizer in errors.
  ///   [WRAP: Mod(x, 2^(k+i), fmod=1)] -> [RND: Add(x, 2^-f / 2)] -> Quant(x, scale 2^-f) ->
  ///   Mul(2^f) -> Cast(int64) = m -> (SAT: [Max(lo), Min(hi)] | WRAP: Add(-min), Mod(2^W)).
  /// Exactness (float32 and float64 alike, for finite inputs):
  /// - The Quant has element n's own scale 2^-f[n], so it rounds x * 2^f[n] in element n's mode
  ///   (division by a power of two is exact); its scalar bit width and `signed` give a mantissa
  ///   range containing every element's own [lo, hi] (the union width, +1 for an unsigned element
  ///   under a signed Quant, at least 2 bits when signed so it is never bipolar). Saturation to
  ///   that wider range followed by the exact integer clamp to [lo, hi] is saturation to [lo, hi]
  ///   (nested intervals), and clamping to integer bounds commutes with rounding, so m is the
  ///   emulator's mantissa. The clamp is written only when some element needs it.
  /// - WRAP: the Quant cannot wrap. Mod(x, 2^(k+i)) first is exact (fmod is exact) and moves
  ///   x * 2^f by a multiple of 2^W, an even integer for W >= 1, which every rounding mode
  ///   (floor, half up, half to even) carries through unchanged; afterwards |x * 2^f| < 2^W, so
  ///   the Quant (signed, max W + 2 bits) only rounds, and Mod(m - min, 2^W) in int64 (the
  ///   divisor's sign) is the wrapped value's place in its range (m - min).
  /// - Mantissas have at most kMaxLutInputBits + 2 bits (wider types are refused), exact in
  ///   float32; Mul by 2^f and Cast are exact; the rest is int64.
  /// - Pruned elements (width <= 0) multiply by 0: m = 0, their single table entry.
  /// - RND goes through Add(x, 2^-f / 2) and a FLOOR Quant, as for the other layers (needs
  ///   QonnxOptions::rnd_as_offset_floor).
  Mantissa quant_mantissa(const std::string& p, const std::string& quant_name, std::string x,
                          const QuantSpec& q, const std::vector<int64_t>& dims,
                          const std::string& label, const std::string& what) {
    const int64_t n_el = q.size();
    const std::string where = label + " " + what;
    QuantParams qp;  // the rounding (and RND's offset) of the Quant
    set_rounding(qp, q, where, options_);
    const bool wrap = q.overflow == OverflowMode::WRAP;
    int is_signed = wrap ? 1 : 0;
    for (int64_t e = 0; e < n_el; ++e) {
      if (q.width(e) <= 0) continue;
      is_signed = std::max(is_signed, q.k[e]);
      if (q.width(e) > archive::kMaxLutInputBits)
        throw QonnxError(where + " element " + std::to_string(e) + ": width " +
                         std::to_string(q.width(e)) + " is wider than the " +
                         std::to_string(archive::kMaxLutInputBits) +
                         " bits whose mantissas this exporter computes exactly in float32");
    }
    int bits = is_signed ? 2 : 1;
    for (int64_t e = 0; e < n_el; ++e)
      if (q.width(e) > 0)
        bits = std::max(bits, wrap ? q.width(e) + 2 : q.width(e) + is_signed - q.k[e]);
    const bool narrow = !wrap && is_signed == 1 && q.overflow == OverflowMode::SAT_SYM;
    const int64_t q_hi = is_signed ? (int64_t{1} << (bits - 1)) - 1 : (int64_t{1} << bits) - 1;
    const int64_t q_lo = is_signed ? -(int64_t{1} << (bits - 1)) + (narrow ? 1 : 0) : 0;

    Mantissa out;
    out.shift.assign(n_el, 0);
    out.min.assign(n_el, 0);
    std::vector<float> scale(n_el), mult(n_el), half(n_el), period(n_el);
    std::vector<int64_t> lo(n_el), hi(n_el), modulus(n_el);
    bool clamp = false;
    for (int64_t e = 0; e < n_el; ++e) {
      const bool live = q.width(e) > 0;
      const int f = live ? q.f[e] : 0;
      if (f < -100 || f > 100)
        throw QonnxError(where + " element " + std::to_string(e) + ": f = " + std::to_string(f) +
                         " gives a scale float32 cannot hold");
      const archive::FixedType t = archive::quantizer_type(q, e);
      const auto t_min = static_cast<int64_t>(t.min_mantissa());
      const auto t_max = static_cast<int64_t>(t.max_mantissa());
      scale[e] = std::ldexp(1.0f, -f);
      mult[e] = live ? std::ldexp(1.0f, f) : 0.0f;
      half[e] = std::ldexp(1.0f, -f - 1);
      period[e] = live ? std::ldexp(1.0f, q.k[e] + q.i[e]) : 1.0f;  // 2^W * 2^-f
      lo[e] = q.overflow == OverflowMode::SAT_SYM && t.is_signed ? -t_max : t_min;
      hi[e] = t_max;
      if (live && !wrap && (lo[e] != q_lo || hi[e] != q_hi)) clamp = true;
      out.min[e] = t_min;
      if (wrap) out.shift[e] = -t_min;
      modulus[e] = int64_t{1} << (live ? q.width(e) : 0);
    }

    if (wrap) {
      onnx::NodeProto* n =
          b_.node("Mod", p + "/wrap_input", {x, b_.initializer(p + "/wrap_period", dims, period)});
      GraphBuilder::add_int(n, "fmod", 1);
      x = n->output(0);
    }
    const std::string qn = p + "/" + quant_name;
    if (qp.offset_half)
      x = b_.op("Add", qn + "/add_half_step", {x, b_.initializer(qn + "/half_step", dims, half)});
    x = b_.quant_scaled(qn, x, b_.initializer(qn + "/scale", dims, scale), bits, is_signed, narrow,
                        qp.rounding, report_);
    x = b_.op("Mul", p + "/mantissa", {x, b_.initializer(p + "/mantissa_scale", dims, mult)});
    onnx::NodeProto* cast = b_.node("Cast", p + "/mantissa_int", {x});
    GraphBuilder::add_int(cast, "to", onnx::TensorProto::INT64);
    x = cast->output(0);
    if (wrap) {
      x = b_.op("Add", p + "/minus_min", {x, b_.int64_tensor(p + "/neg_min", dims, out.shift)});
      onnx::NodeProto* n =
          b_.node("Mod", p + "/wrap", {x, b_.int64_tensor(p + "/modulus", dims, modulus)});
      GraphBuilder::add_int(n, "fmod", 0);
      x = n->output(0);
    } else if (clamp) {
      x = b_.op("Max", p + "/saturate_low", {x, b_.int64_tensor(p + "/low", dims, lo)});
      x = b_.op("Min", p + "/saturate_high", {x, b_.int64_tensor(p + "/high", dims, hi)});
    }
    out.tensor = x;
    return out;
  }

  /// Gather(table, index, axis 0) with the float initializer `table_name` of `values` (which
  /// the caller checked exact in float32); the index is int64 of any shape.
  std::string gather_table(const std::string& gather_name, const std::string& table_name,
                           const std::vector<float>& values, const std::string& index) {
    const std::string table =
        b_.initializer(table_name, {static_cast<int64_t>(values.size())}, values);
    onnx::NodeProto* gather = b_.node("Gather", gather_name, {table, index});
    GraphBuilder::add_int(gather, "axis", 0);
    return gather->output(0);
  }

  /// Quant with the per-element scale 2^-f[n] of `q` over `dims` and the union width: the
  /// identity on values that lie on each element's grid and in its range (they carry the type).
  std::string grid_quant(const std::string& base, const std::string& x, const QuantSpec& q,
                         const std::vector<int64_t>& dims) {
    int o_signed = 0;
    for (int64_t e = 0; e < q.size(); ++e)
      if (q.width(e) > 0) o_signed = std::max(o_signed, q.k[e]);
    int o_bits = o_signed ? 2 : 1;
    std::vector<float> o_scale(q.size());
    for (int64_t e = 0; e < q.size(); ++e) {
      const bool live = q.width(e) > 0;
      if (live) o_bits = std::max(o_bits, q.width(e) + o_signed - q.k[e]);
      o_scale[e] = std::ldexp(1.0f, live ? -q.f[e] : 0);
    }
    return b_.quant_scaled(base, x, b_.initializer(base + "/scale", dims, o_scale), o_bits,
                           o_signed, false, "ROUND", report_);
  }

  /// lut: the table lookup as an exact index computation and a Gather, channels-last, every
  /// constant per element of the per-sample shape S (broadcast over the batch):
  ///   quant_mantissa (the input quantizer) -> Add(offset) -> Gather(table values, axis 0) ->
  ///   Quant(scale 2^-f_out). Pruned input elements index their single entry. The table values
  ///   entry * 2^-f_out are checked to be exact in float32 (else refused); the output Quant
  ///   (scale 2^-f_out per element, the union width) leaves them unchanged.
  Value lut(const Layer& l, const std::string& label, Value& in) {
    const std::string& nm = l.name;
    const QuantSpec& q = *l.input_quantizer;
    const QuantSpec& oq = *l.output_quantizer;
    const std::vector<int64_t> off = archive::lut_offsets(l);
    const std::vector<int64_t>& dims = l.input_shape;  // per sample, channels-last
    const int64_t n_el = q.size();

    const Mantissa m =
        quant_mantissa(nm, "input_quant", get(in, Layout::Last), q, dims, label, "input quantizer");
    std::vector<int64_t> base(n_el);  // index = m - min + offset
    for (int64_t e = 0; e < n_el; ++e) base[e] = off[e] - m.min[e] - m.shift[e];
    const std::string index =
        b_.op("Add", nm + "/index", {m.tensor, b_.int64_tensor(nm + "/offset", dims, base)});

    // The table as real values, element after element (float32-exact or refused).
    std::vector<float> values(l.table.size());
    for (int64_t e = 0; e < n_el; ++e) {
      const int f = oq.width(e) > 0 ? oq.f[e] : 0;
      if (f < -100 || f > 100)
        throw QonnxError(label + " output quantizer element " + std::to_string(e) +
                         ": f = " + std::to_string(f) + " gives a scale float32 cannot hold");
      for (int64_t t = off[e]; t < off[e + 1]; ++t) {
        const double v = std::ldexp(static_cast<double>(l.table[t]), -f);
        values[t] = static_cast<float>(v);
        if (static_cast<double>(values[t]) != v)
          throw QonnxError(label + " table entry " + std::to_string(t - off[e]) + " of element " +
                           std::to_string(e) + ": the value " + std::to_string(l.table[t]) +
                           " * 2^" + std::to_string(-f) +
                           " is not exact in float32 (ONNX initializers are float32 here)");
      }
    }
    std::string x = gather_table(nm + "/gather", nm + "/table", values, index);
    // The output type: per-element scale, the union width; exact on the table's values, which
    // lie on each element's grid and in its range.
    x = grid_quant(nm + "/output_quant", x, oq, l.output_shape);
    return make(l, Layout::Last, x);
  }

  /// True when one scalar Quant computes `q` exactly (what plan_activation accepts without
  /// widening): every element live with one (k, i, f), SAT or SAT_SYM, not signed 1-bit.
  static bool single_quant(const QuantSpec& q) {
    if (q.overflow == OverflowMode::WRAP || q.size() == 0) return false;
    for (int64_t e = 0; e < q.size(); ++e)
      if (q.width(e) <= 0 || q.k[e] != q.k[0] || q.i[e] != q.i[0] || q.f[e] != q.f[0]) return false;
    return !(q.k[0] == 1 && q.i[0] + q.f[0] == 0);
  }

  /// Q(x) per element of `dims`, exactly, as a float tensor: one Quant when it can
  /// (single_quant), else quant_mantissa -> [Add(min), WRAP] -> Cast(float) -> Mul(2^-f) ->
  /// grid Quant (per-element scale; carries the type). Nodes named `p` + "/...".
  std::string exact_quant(const std::string& p, const std::string& x, const QuantSpec& q,
                          const std::vector<int64_t>& dims, const std::string& label,
                          const std::string& what) {
    if (single_quant(q)) return activation_quant(x, q, p + "/quant", label + " " + what);
    const Mantissa m = quant_mantissa(p, "range_quant", x, q, dims, label, what);
    std::string t = m.tensor;
    if (std::any_of(m.shift.begin(), m.shift.end(), [](int64_t s) { return s != 0; })) {
      std::vector<int64_t> back(m.shift.size());
      for (size_t e = 0; e < back.size(); ++e) back[e] = -m.shift[e];
      t = b_.op("Add", p + "/plus_min", {t, b_.int64_tensor(p + "/min", dims, back)});
    }
    onnx::NodeProto* cast = b_.node("Cast", p + "/mantissa_float", {t});
    GraphBuilder::add_int(cast, "to", onnx::TensorProto::FLOAT);
    std::vector<float> scale(q.size());
    for (int64_t e = 0; e < q.size(); ++e)
      scale[e] = std::ldexp(1.0f, q.width(e) > 0 ? -q.f[e] : 0);
    const std::string v = b_.op("Mul", p + "/value",
                                {cast->output(0), b_.initializer(p + "/value_scale", dims, scale)});
    return grid_quant(p + "/quant", v, q, dims);
  }

  /// A scalar (shape [1]) stage quantizer of a softmax repeated over `dims`.
  static QuantSpec expand(const QuantSpec& q, const std::vector<int64_t>& dims) {
    QuantSpec e = q;
    e.shape = dims;
    const auto n = static_cast<size_t>(archive::shape_size(dims));
    e.k.assign(n, q.k[0]);
    e.i.assign(n, q.i[0]);
    e.f.assign(n, q.f[0]);
    return e;
  }

  /// The table values entry * 2^-frac, refused unless exact in float32.
  static std::vector<float> table_values(const std::vector<int64_t>& entries, int frac,
                                         const std::string& where) {
    std::vector<float> v(entries.size());
    for (size_t j = 0; j < entries.size(); ++j) {
      const double d = std::ldexp(static_cast<double>(entries[j]), -frac);
      v[j] = static_cast<float>(d);
      if (!(std::fabs(d) <= 3.4e38) || static_cast<double>(v[j]) != d)
        throw QonnxError(where + " entry " + std::to_string(j) + ": the value " +
                         std::to_string(entries[j]) + " * 2^" + std::to_string(-frac) +
                         " is not exact in float32 (ONNX initializers are float32 here)");
    }
    return v;
  }

  /// softmax over the last per-sample axis (axis R of [batch, S..., n], R the per-sample rank),
  /// channels-last (a channels-first input is transposed back first):
  ///   x = Q_in(x) (exact_quant) -> ReduceMax(axes [R], keepdims) -> d = Sub(x, max) ->
  ///   u: quant_mantissa(d, Q_ei) -> Add(offset) -> e = Gather(exp table) ->
  ///   S = ReduceSum(e, axes [R], keepdims) -> s: quant_mantissa(S, Q_ii) -> Add(offset) ->
  ///   r = Gather(reciprocal table) -> p = Mul(e, r) (r broadcast over the row) ->
  ///   y = Q_out(p) (exact_quant).
  /// Exactness: x has at most kMaxLutInputBits + 2 bits; the row max is one of them; d = x - max
  /// is exact when it fits 24 bits (SoftmaxTypes::diff; wider is refused: ONNX Sub is float32).
  /// The table values are checked exact in float32. S is the exact sum of n values at
  /// exp_out.frac of SoftmaxTypes::sum bits: exact in float64 (a sum wider than 53 bits is
  /// refused), and in float32 when it fits 24 bits. p = e * r is exact in float64 (two float32
  /// values: at most 2 x 24 significant bits); in float32 only when SoftmaxTypes::product fits
  /// 24 bits. It does for the small table types of the tests (exp 8 x reciprocal 9 bits at
  /// most), but a float32 runtime may round a wider product before Q_out. The stage
  /// quantizers (one type for the layer) are exact in every rounding and overflow mode, as in
  /// quant_mantissa (RND needs rnd_as_offset_floor); the table index is the mantissa minus the
  /// index type's smallest (a width-0 index multiplies by 0: its single entry).
  Value softmax(const Layer& l, const std::string& label, Value& in, const archive::LayerTypes& t) {
    const std::string& nm = l.name;
    const archive::SoftmaxTypes& s = t.softmax;
    const std::vector<int64_t>& dims = l.input_shape;
    const auto rank = static_cast<int64_t>(dims.size());
    if (rank == 0 || s.n != dims.back())
      throw QonnxError(label + ": softmax types for rows of " + std::to_string(s.n) +
                       " elements do not match the input shape");
    if (s.diff.width > 24)
      throw QonnxError(label + ": the differences x - max need " + std::to_string(s.diff.width) +
                       " bits (" + s.diff.to_string() +
                       "), more than float32 holds exactly (ONNX Sub is float32 here)");
    if (s.sum.width > 53)
      throw QonnxError(label + ": the row sum needs " + std::to_string(s.sum.width) + " bits (" +
                       s.sum.to_string() + "), more than float64 holds exactly");
    std::vector<int64_t> row_dims = dims;
    row_dims.back() = 1;

    std::string x = exact_quant(nm + "/input", get(in, Layout::Last), *l.input_quantizer, dims,
                                label, "input quantizer");
    onnx::NodeProto* mx = b_.node("ReduceMax", nm + "/row_max", {x});
    GraphBuilder::add_ints(mx, "axes", {rank});
    GraphBuilder::add_int(mx, "keepdims", 1);
    const std::string d = b_.op("Sub", nm + "/diff", {x, mx->output(0)});

    // e = EXP[Q_ei(d)]
    const QuantSpec ei = expand(*l.exp_input_quantizer, dims);
    const Mantissa u =
        quant_mantissa(nm + "/exp_in", "quant", d, ei, dims, label, "exp input quantizer");
    const auto ei_min = static_cast<int64_t>(s.exp_in.width == 0 ? 0 : s.exp_in.min_mantissa());
    std::vector<int64_t> e_off(u.shift.size());
    for (size_t e = 0; e < e_off.size(); ++e) e_off[e] = -ei_min - u.shift[e];
    const std::string e_index = b_.op("Add", nm + "/exp_index",
                                      {u.tensor, b_.int64_tensor(nm + "/exp_offset", dims, e_off)});
    const std::string ev =
        gather_table(nm + "/exp_gather", nm + "/exp_table",
                     table_values(s.exp_table, s.exp_out.frac, label + " exp table"), e_index);

    // r = INV[Q_ii(sum of the row)]
    onnx::NodeProto* sum =
        b_.node("ReduceSum", nm + "/row_sum", {ev, b_.int64_initializer(nm + "/row_axes", {rank})});
    GraphBuilder::add_int(sum, "keepdims", 1);
    const QuantSpec ii = expand(*l.inv_input_quantizer, row_dims);
    const Mantissa si = quant_mantissa(nm + "/inv_in", "quant", sum->output(0), ii, row_dims, label,
                                       "reciprocal input quantizer");
    const auto ii_min = static_cast<int64_t>(s.inv_in.width == 0 ? 0 : s.inv_in.min_mantissa());
    std::vector<int64_t> i_off(si.shift.size());
    for (size_t e = 0; e < i_off.size(); ++e) i_off[e] = -ii_min - si.shift[e];
    const std::string i_index =
        b_.op("Add", nm + "/inv_index",
              {si.tensor, b_.int64_tensor(nm + "/inv_offset", row_dims, i_off)});
    const std::string rv = gather_table(
        nm + "/inv_gather", nm + "/inv_table",
        table_values(s.inv_table, s.inv_out.frac, label + " reciprocal table"), i_index);

    const std::string p = b_.op("Mul", nm + "/product", {ev, rv});
    x = exact_quant(nm + "/output", p, *l.output_quantizer, l.output_shape, label,
                    "output quantizer");
    return make(l, Layout::Last, x);
  }

  /// [Quant] -> [Slice] -> Conv(x, Quant(W), Quant(b)) -> [Relu] -> [Quant], channels-first.
  Value conv(const Layer& l, const std::string& label, Value& in) {
    const std::string& nm = l.name;
    const size_t rank = l.kernel_size.size();
    std::string x = get(in, Layout::First);
    if (l.input_quantizer)
      x = activation_quant(x, *l.input_quantizer, nm + "/input_quant", label + " input quantizer");
    // pads: pad_before, then pad_after = (out - 1) * stride + k - in - pad_before. A negative
    // pad_after (a valid conv whose last window leaves input over) becomes a Slice that drops
    // that input, since ONNX pads must be >= 0.
    std::vector<int64_t> pads(2 * rank), crop_axes, crop_ends;
    for (size_t d = 0; d < rank; ++d) {
      const int64_t after = (l.output_shape[d] - 1) * l.strides[d] + l.kernel_size[d] -
                            l.input_shape[d] - l.pad_before[d];
      pads[d] = l.pad_before[d];
      pads[rank + d] = std::max<int64_t>(after, 0);
      if (after < 0) {
        crop_axes.push_back(static_cast<int64_t>(d) + 2);
        crop_ends.push_back(l.input_shape[d] + after);
      }
    }
    if (!crop_axes.empty()) {
      const std::string starts =
          b_.int64_initializer(nm + "/crop_starts", std::vector<int64_t>(crop_axes.size(), 0));
      const std::string ends = b_.int64_initializer(nm + "/crop_ends", crop_ends);
      const std::string axes = b_.int64_initializer(nm + "/crop_axes", crop_axes);
      x = b_.op("Slice", nm + "/crop", {x, starts, ends, axes});
    }
    // Kernel [K..., C, F] (archive) -> [F, C, K...] (ONNX).
    const Constant& w = *l.kernel;
    const int64_t c_in = l.input_shape.back(), f_out = l.output_shape.back();
    int64_t n_k = 1;
    for (int64_t k : l.kernel_size) n_k *= k;
    std::vector<int64_t> dims{f_out, c_in};
    dims.insert(dims.end(), l.kernel_size.begin(), l.kernel_size.end());
    std::vector<int64_t> order;
    order.reserve(w.size());
    for (int64_t f = 0; f < f_out; ++f)
      for (int64_t c = 0; c < c_in; ++c)
        for (int64_t kk = 0; kk < n_k; ++kk) order.push_back((kk * c_in + c) * f_out + f);
    std::vector<std::string> conv_in{x,
                                     constant(w, nm + "/kernel", label + " kernel", dims, order)};
    if (l.bias) conv_in.push_back(constant(*l.bias, nm + "/bias", label + " bias", l.bias->shape));
    onnx::NodeProto* n = b_.node("Conv", nm + "/conv", conv_in);
    GraphBuilder::add_ints(n, "kernel_shape", l.kernel_size);
    GraphBuilder::add_ints(n, "strides", l.strides);
    GraphBuilder::add_ints(n, "pads", pads);
    return make(l, Layout::First, finish(l, label, n->output(0)));
  }

  /// Batch norm: [Quant] -> Mul(x, Quant(W)) -> [Add(Quant(b))] -> [Relu] -> [Quant], with the
  /// per-channel constants shaped [C] (channels-last) or [C, 1...] (channels-first).
  Value scale(const Layer& l, const std::string& label, Value& in) {
    const std::string& nm = l.name;
    const Layout lay = elementwise_layout({&in});
    std::string x = get(in, lay);
    if (l.input_quantizer)
      x = activation_quant(x, *l.input_quantizer, nm + "/input_quant", label + " input quantizer");
    std::vector<int64_t> dims{l.input_shape.back()};
    if (lay == Layout::First) dims.resize(l.input_shape.size(), 1);
    x = b_.op("Mul", nm + "/mul",
              {x, constant(*l.kernel, nm + "/kernel", label + " kernel", dims)});
    if (l.bias)
      x = b_.op("Add", nm + "/bias_add",
                {x, constant(*l.bias, nm + "/bias", label + " bias", dims)});
    return make(l, lay, finish(l, label, x));
  }

  GraphBuilder& b_;
  const QonnxOptions& options_;
  QonnxReport& report_;
};

}  // namespace

QonnxReport export_qonnx(const Archive& a, const std::string& path, const QonnxOptions& options) {
  archive::validate(a, "archive '" + a.name + "'");
  // The same admissibility checks as the emulator (quantized input); softmax stage types.
  const std::vector<archive::LayerTypes> types = archive::infer_types(a);

  QonnxReport report;
  onnx::ModelProto model;
  model.set_ir_version(kIrVersion);
  model.set_producer_name("hgqt");
  model.set_producer_version(HGQT_VERSION);
  auto* std_opset = model.add_opset_import();  // the default domain first: some tools expect it
  std_opset->set_domain("");
  std_opset->set_version(kOnnxOpset);
  auto* qonnx_opset = model.add_opset_import();
  qonnx_opset->set_domain(kQonnxDomain);
  qonnx_opset->set_version(kQonnxOpset);

  onnx::GraphProto* g = model.mutable_graph();
  g->set_name(a.name.empty() ? "model" : a.name);
  GraphBuilder b(g);
  GraphBuilder::value_info(g->add_input(), "input", a.input_shape);

  std::string x = "input";
  if (options.include_preprocessing && !a.feature_mean.empty()) {
    const int64_t d = a.input_size();
    if (static_cast<int64_t>(a.feature_mean.size()) != d ||
        static_cast<int64_t>(a.feature_std.size()) != d)
      throw QonnxError("archive '" + a.name + "': feature_mean / feature_std have " +
                       std::to_string(a.feature_mean.size()) + " / " +
                       std::to_string(a.feature_std.size()) + " values for " + std::to_string(d) +
                       " input features");
    const std::string mean = b.initializer("preprocess/mean", a.input_shape, a.feature_mean);
    const std::string stdev = b.initializer("preprocess/std", a.input_shape, a.feature_std);
    x = b.op("Sub", "preprocess/sub_mean", {x, mean});
    x = b.op("Div", "preprocess/div_std", {x, stdev});
  }

  // Every layer's output.
  Value input;
  input.shape = a.input_shape;
  input.last = x;
  input.owner = "input";
  LayerWriter w(b, options, report);
  std::vector<Value> values = archive::walk_layers(
      a, input, [&](size_t li, const Layer& l, const std::vector<Value*>& ins) {
        return w.layer(l, layer_label(l, li), ins, types[li]);
      });
  const std::string y = w.get(values.back(), Layout::Last);

  // The graph output is written by the node that computes it (renamed to "output").
  if (y == "input" || !b.rename_tensor(y, "output"))
    b.node("Identity", "output_identity", {y})->set_output(0, "output");
  GraphBuilder::value_info(g->add_output(), "output", a.output_shape);

  std::string doc = "hgqt archive '" + a.name + "' (" + a.producer + ")";
  if (report.widened_elements > 0)
    doc += "; " + std::to_string(report.widened_elements) +
           " activation elements widened to their tensor's union type, outputs can differ from "
           "the hgqt emulator";
  g->set_doc_string(doc);
  report.nodes = g->node_size();

  std::string bytes;
  if (!model.SerializeToString(&bytes))
    throw QonnxError("serializing the ONNX model of archive '" + a.name + "' failed");
  write_file(bytes, path);
  return report;
}

}  // namespace hgqt::exporters
