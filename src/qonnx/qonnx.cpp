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
  return "layer '" + l.name + "' (layers[" + std::to_string(index) + "], " + l.type + ")";
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

}  // namespace

QonnxReport export_qonnx(const Archive& a, const std::string& path, const QonnxOptions& options) {
  archive::validate(a, "archive '" + a.name + "'");
  archive::infer_types(a);  // the same admissibility checks as the emulator (quantized input)

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

  for (size_t li = 0; li < a.layers.size(); ++li) {
    const Layer& l = a.layers[li];
    const std::string label = layer_label(l, li);
    const std::string& nm = l.name;
    if (l.type == "flatten") {
      if (l.input_shape.size() == 1) continue;  // [batch, n] already
      onnx::NodeProto* n = b.node("Flatten", nm + "/flatten", {x});
      GraphBuilder::add_int(n, "axis", 1);
      x = n->output(0);
      continue;
    }
    if (l.type == "quantize") {
      const QuantParams p =
          plan_activation(*l.input_quantizer, label + " input quantizer", options, report);
      x = b.quant(nm + "/input_quant", x, p, report);
      continue;
    }
    if (l.type == "activation") {
      const QuantParams p =
          plan_activation(*l.output_quantizer, label + " output quantizer", options, report);
      if (l.activation == "relu") x = b.op("Relu", nm + "/relu", {x});
      x = b.quant(nm + "/output_quant", x, p, report);
      continue;
    }
    // dense
    if (l.input_quantizer) {
      const QuantParams p =
          plan_activation(*l.input_quantizer, label + " input quantizer", options, report);
      x = b.quant(nm + "/input_quant", x, p, report);
    }
    const Constant& w = *l.kernel;
    const QuantParams wp = plan_constant(w, label + " kernel");
    const std::string w_init = b.initializer(nm + "/kernel", w.shape, constant_values(w));
    const std::string wq = b.quant(nm + "/kernel_quant", w_init, wp, report);
    x = b.op("MatMul", nm + "/matmul", {x, wq});
    if (l.bias) {
      const QuantParams bp = plan_constant(*l.bias, label + " bias");
      const std::string b_init =
          b.initializer(nm + "/bias", l.bias->shape, constant_values(*l.bias));
      const std::string bq = b.quant(nm + "/bias_quant", b_init, bp, report);
      x = b.op("Add", nm + "/bias_add", {x, bq});
    }
    if (l.activation == "relu") x = b.op("Relu", nm + "/relu", {x});
    if (l.output_quantizer) {
      const QuantParams p =
          plan_activation(*l.output_quantizer, label + " output quantizer", options, report);
      x = b.quant(nm + "/output_quant", x, p, report);
    }
  }

  // The last node writes the graph output directly.
  onnx::NodeProto* last = nullptr;
  for (int n = 0; n < g->node_size(); ++n)
    if (g->node(n).output(0) == x) last = g->mutable_node(n);
  if (last)
    last->set_output(0, "output");
  else
    b.node("Identity", "output_identity", {x})->set_output(0, "output");
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
