// The QONNX exporter: structure of the written protobuf, refusals and widening, and the fixture
// files (model, inputs, emulator outputs) that tests/python/test_qonnx.py evaluates.
#include <gtest/gtest.h>

#ifndef ONNX_ML
#define ONNX_ML 1  // the classes hgqt_qonnx was built with (the onnx_proto target's definition)
#endif
#ifndef ONNX_NAMESPACE
#define ONNX_NAMESPACE onnx
#endif
#include <onnx/onnx_pb.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <tuple>

#include "hgqt/archive/emulator.h"
#include "hgqt/export/qonnx.h"
#include "support/random_archive.h"

using namespace hgqt;
using archive::LayerKind;
using exporters::QonnxError;
using exporters::QonnxOptions;
using quant::OverflowMode;
using quant::RoundingMode;
namespace fs = std::filesystem;

namespace {

archive::Archive per_tensor_archive(uint64_t seed, std::vector<int64_t> sizes,
                                    bool quantize_layer = false) {
  hgqt::testing::RandomArchiveOptions o;
  o.seed = seed;
  o.sizes = std::move(sizes);
  o.quantize_layer = quantize_layer;
  o.per_tensor = true;
  return hgqt::testing::random_mlp_archive(o);
}

std::string temp_path(const std::string& name) {
  const fs::path dir = fs::path(HGQT_BINARY_DIR) / "qonnx_test_tmp";
  fs::create_directories(dir);
  return (dir / name).string();
}

onnx::ModelProto parse(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  std::stringstream ss;
  ss << in.rdbuf();
  onnx::ModelProto m;
  EXPECT_TRUE(m.ParseFromString(ss.str())) << path;
  return m;
}

/// Every activation quantizer of the archive, with its layer name.
std::vector<std::pair<std::string, archive::QuantSpec*>> activation_quantizers(
    archive::Archive& a) {
  std::vector<std::pair<std::string, archive::QuantSpec*>> out;
  for (auto& l : a.layers) {
    if (l.input_quantizer) out.emplace_back(l.name, &*l.input_quantizer);
    if (l.output_quantizer) out.emplace_back(l.name, &*l.output_quantizer);
  }
  return out;
}

/// Nodes the exporter must write for an archive whose quantizers it represents exactly.
int64_t expected_nodes(const archive::Archive& a, bool rnd_offsets = false) {
  int64_t n = a.feature_mean.empty() ? 0 : 2;
  auto quant = [&](const archive::QuantSpec& q) {
    return (rnd_offsets && q.round == RoundingMode::RND) ? 2 : 1;
  };
  for (const auto& l : a.layers) {
    if (l.kind == LayerKind::Flatten) n += l.input_shape.size() > 1 ? 1 : 0;
    if (l.kind == LayerKind::Quantize) n += quant(*l.input_quantizer);
    if (l.kind == LayerKind::Activation)
      n += (l.activation == "relu" ? 1 : 0) + quant(*l.output_quantizer);
    if (l.kind != LayerKind::Dense) continue;
    n += 2;  // kernel Quant, MatMul
    if (l.input_quantizer) n += quant(*l.input_quantizer);
    if (l.bias) n += 2;  // bias Quant, Add
    if (l.activation == "relu") ++n;
    if (l.output_quantizer) n += quant(*l.output_quantizer);
  }
  return n;
}

const onnx::TensorProto* find_initializer(const onnx::GraphProto& g, const std::string& name) {
  for (const auto& t : g.initializer())
    if (t.name() == name) return &t;
  return nullptr;
}

float scalar_value(const onnx::GraphProto& g, const std::string& name) {
  const onnx::TensorProto* t = find_initializer(g, name);
  EXPECT_NE(t, nullptr) << name;
  if (!t) return NAN;
  EXPECT_EQ(t->dims_size(), 0) << name << " must be a scalar";
  EXPECT_EQ(t->data_type(), onnx::TensorProto::FLOAT) << name;
  EXPECT_EQ(t->float_data_size(), 1) << name;
  return t->float_data_size() == 1 ? t->float_data(0) : NAN;
}

std::map<std::string, const onnx::AttributeProto*> attributes(const onnx::NodeProto& n) {
  std::map<std::string, const onnx::AttributeProto*> m;
  for (const auto& a : n.attribute()) m[a.name()] = &a;
  return m;
}

/// Structure every exported file must have; returns the Quant nodes by name.
std::map<std::string, const onnx::NodeProto*> check_structure(const onnx::ModelProto& m,
                                                              int64_t expected_node_count) {
  EXPECT_EQ(m.ir_version(), 8);
  EXPECT_EQ(m.producer_name(), "hgqt");
  EXPECT_FALSE(m.producer_version().empty());
  EXPECT_EQ(m.opset_import_size(), 2);
  if (m.opset_import_size() == 2) {
    EXPECT_EQ(m.opset_import(0).domain(), "");
    EXPECT_EQ(m.opset_import(0).version(), 13);
    EXPECT_EQ(m.opset_import(1).domain(), "qonnx.custom_op.general");
    EXPECT_EQ(m.opset_import(1).version(), 1);
  }
  const onnx::GraphProto& g = m.graph();
  EXPECT_EQ(g.node_size(), expected_node_count);
  std::set<std::string> node_names, tensors{"input"};
  for (const auto& t : g.initializer()) EXPECT_TRUE(tensors.insert(t.name()).second) << t.name();
  std::map<std::string, const onnx::NodeProto*> quants;
  for (const auto& n : g.node()) {
    EXPECT_FALSE(n.name().empty());
    EXPECT_TRUE(node_names.insert(n.name()).second) << "duplicate node name " << n.name();
    for (const auto& in : n.input())
      EXPECT_TRUE(tensors.count(in)) << n.name() << " reads " << in << " before it is written";
    for (const auto& out : n.output()) EXPECT_TRUE(tensors.insert(out).second) << out;
    if (n.op_type() != "Quant") {
      EXPECT_EQ(n.domain(), "") << n.name();
      continue;
    }
    quants[n.name()] = &n;
    EXPECT_EQ(n.domain(), "qonnx.custom_op.general");
    EXPECT_EQ(n.input_size(), 4);
    if (n.input_size() != 4) continue;
    // The scale is a scalar, or per element (lut layers): a float tensor broadcasting over the
    // batch; every entry a power of two.
    const onnx::TensorProto* st = find_initializer(g, n.input(1));
    EXPECT_NE(st, nullptr) << n.name();
    if (st && st->dims_size() == 0) {
      const float scale = scalar_value(g, n.input(1));
      int exp = 0;
      EXPECT_EQ(std::frexp(scale, &exp), 0.5f)
          << n.name() << " scale " << scale << " is not a power of two";
    } else if (st) {
      EXPECT_EQ(st->data_type(), onnx::TensorProto::FLOAT) << n.name();
      int64_t size = 1;
      for (int64_t d : st->dims()) size *= d;
      EXPECT_EQ(st->float_data_size(), size) << n.name();
      for (float scale : st->float_data()) {
        int exp = 0;
        EXPECT_EQ(std::frexp(scale, &exp), 0.5f)
            << n.name() << " scale " << scale << " is not a power of two";
      }
    }
    EXPECT_EQ(scalar_value(g, n.input(2)), 0.0f) << n.name();
    const float bits = scalar_value(g, n.input(3));
    EXPECT_EQ(bits, std::floor(bits));
    const auto at = attributes(n);
    EXPECT_TRUE(at.count("signed") && at.count("narrow") && at.count("rounding_mode")) << n.name();
    const bool is_signed = at.count("signed") && at.at("signed")->i() == 1;
    // A signed 1-bit Quant is bipolar (+-1) in QONNX.
    EXPECT_GE(bits, is_signed ? 2.0f : 1.0f) << n.name();
    if (at.count("narrow") && at.at("narrow")->i() == 1) {
      EXPECT_TRUE(is_signed) << n.name() << ": narrow unsigned lowers QONNX's max";
    }
  }
  EXPECT_EQ(g.input_size(), 1);
  EXPECT_EQ(g.output_size(), 1);
  if (g.output_size() == 1) {
    EXPECT_EQ(g.output(0).name(), "output");
    EXPECT_TRUE(tensors.count("output"));
    EXPECT_EQ(g.output(0).type().tensor_type().shape().dim(0).dim_param(), "batch");
  }
  return quants;
}

/// The archive QONNX computes when widening: every activation quantizer at its union type
/// (max k, i, f over live elements; i + 1 for a signed 1-bit union), saturating. Returns the
/// number of elements whose quantization changed.
int64_t widen(archive::Archive& a) {
  int64_t changed = 0;
  for (auto& [name, q] : activation_quantizers(a)) {
    int k = -1, i = -1000, f = -1000;
    for (int64_t e = 0; e < q->size(); ++e)
      if (q->width(e) > 0) {
        k = std::max(k, q->k[e]);
        i = std::max(i, q->i[e]);
        f = std::max(f, q->f[e]);
      }
    if (k == 1 && i + f == 0) ++i;
    for (int64_t e = 0; e < q->size(); ++e) {
      if (q->width(e) <= 0 || q->k[e] != k || q->i[e] != i || q->f[e] != f ||
          q->overflow == OverflowMode::WRAP)
        ++changed;
      q->k[e] = k;
      q->i[e] = i;
      q->f[e] = f;
    }
    if (q->overflow == OverflowMode::WRAP) q->overflow = OverflowMode::SAT;
  }
  return changed;
}

archive::Archive graph_archive(hgqt::testing::GraphKind kind, uint64_t seed) {
  hgqt::testing::RandomArchiveOptions o;
  o.seed = seed;
  o.per_tensor = true;
  return hgqt::testing::random_graph_archive(kind, o);
}

/// True when the archive has layers beyond the MLP ones that expected_nodes() counts.
bool is_graph(const archive::Archive& a) {
  for (const auto& l : a.layers)
    if (l.kind != LayerKind::Quantize && l.kind != LayerKind::Flatten &&
        l.kind != LayerKind::Dense && l.kind != LayerKind::Activation)
      return true;
  return false;
}

archive::QuantSpec uniform_quantizer(std::vector<int64_t> shape, int k, int i, int f,
                                     RoundingMode round, OverflowMode overflow) {
  archive::QuantSpec q;
  q.shape = std::move(shape);
  const size_t n = static_cast<size_t>(archive::shape_size(q.shape));
  q.k.assign(n, k);
  q.i.assign(n, i);
  q.f.assign(n, f);
  q.round = round;
  q.overflow = overflow;
  return q;
}

/// Random exact constant with per-element (k=1, i, f) like the random archives.
archive::Constant random_constant(std::mt19937_64& rng, std::vector<int64_t> shape) {
  archive::Constant c;
  c.shape = shape;
  c.quantizer.shape = shape;
  c.quantizer.round = RoundingMode::RND;
  c.quantizer.overflow = OverflowMode::SAT_SYM;
  const int64_t n = archive::shape_size(shape);
  for (int64_t e = 0; e < n; ++e) {
    const int i = std::uniform_int_distribution<int>(-2, 1)(rng);
    const int f = std::uniform_int_distribution<int>(1, 5)(rng);
    const int64_t lim = (int64_t{1} << std::max(i + f, 0)) - 1;
    const bool zero = std::uniform_real_distribution<double>(0, 1)(rng) < 0.2;
    c.quantizer.k.push_back(1);
    c.quantizer.i.push_back(i);
    c.quantizer.f.push_back(f);
    c.mantissa.push_back(zero ? 0 : std::uniform_int_distribution<int64_t>(-lim, lim)(rng));
    c.exponent.push_back(-f);
  }
  return c;
}

archive::Layer graph_layer(const std::string& name, LayerKind kind, std::vector<int64_t> in,
                           std::vector<int64_t> out, std::vector<std::string> inputs = {}) {
  archive::Layer l;
  l.name = name;
  l.kind = kind;
  l.input_shape = std::move(in);
  l.output_shape = std::move(out);
  l.inputs = std::move(inputs);
  return l;
}

/// Convs whose ONNX pads would be negative (valid windows leaving input over: a Slice), an
/// overlapping avg pool feeding a conv1d without an input quantizer through a rank-2 reshape,
/// a max pool with leftover input, and a concatenate on a spatial axis:
/// q [7,5,2] -> conv2d k(2,3) s(2,2) pad(0,1) relu [3,3,4] -> avg pool (1,2) s1 [3,2,4] ->
/// reshape [6,4] -> conv1d k3 s1 pad 2 [8,3] -> max pool 3 s2 [3,3];
/// concatenate(pool, conv1d) on axis 0 [11,3] -> flatten [33] -> dense [3].
archive::Archive crop_archive(uint64_t seed) {
  std::mt19937_64 rng(seed);
  archive::Archive a;
  a.producer = "hgqt tests";
  a.name = "crop";
  a.trace.traced = true;
  a.input_shape = {7, 5, 2};
  a.output_shape = {3};
  auto& L = a.layers;
  L.push_back(graph_layer("q", LayerKind::Quantize, {7, 5, 2}, {7, 5, 2}));
  L.back().input_quantizer =
      uniform_quantizer({7, 5, 2}, 1, 2, 3, RoundingMode::RND_CONV, OverflowMode::SAT);
  L.push_back(graph_layer("conv_crop", LayerKind::Conv2d, {7, 5, 2}, {3, 3, 4}));
  L.back().kernel_size = {2, 3};
  L.back().strides = {2, 2};
  L.back().pad_before = {0, 1};
  L.back().kernel = random_constant(rng, {2, 3, 2, 4});
  L.back().bias = random_constant(rng, {4});
  L.back().activation = "relu";
  L.back().output_quantizer =
      uniform_quantizer({3, 3, 4}, 0, 2, 2, RoundingMode::TRN, OverflowMode::SAT);
  L.push_back(graph_layer("avg", LayerKind::Pool, {3, 3, 4}, {3, 2, 4}));
  L.back().pool = "avg";
  L.back().kernel_size = {1, 2};
  L.back().strides = {1, 1};
  L.push_back(graph_layer("to_seq", LayerKind::Reshape, {3, 2, 4}, {6, 4}));
  L.push_back(graph_layer("conv_seq", LayerKind::Conv1d, {6, 4}, {8, 3}));
  L.back().kernel_size = {3};
  L.back().strides = {1};
  L.back().pad_before = {2};
  L.back().kernel = random_constant(rng, {3, 4, 3});
  L.back().output_quantizer =
      uniform_quantizer({8, 3}, 1, 1, 3, RoundingMode::RND_CONV, OverflowMode::SAT_SYM);
  L.push_back(graph_layer("maxp", LayerKind::Pool, {8, 3}, {3, 3}));
  L.back().pool = "max";
  L.back().kernel_size = {3};
  L.back().strides = {2};
  L.push_back(graph_layer("cat", LayerKind::Concatenate, {3, 3}, {11, 3}, {"maxp", "conv_seq"}));
  L.back().axis = 0;
  L.push_back(graph_layer("flat", LayerKind::Flatten, {11, 3}, {33}));
  L.push_back(graph_layer("dense_out", LayerKind::Dense, {33}, {3}));
  L.back().input_quantizer =
      uniform_quantizer({33}, 1, 2, 2, RoundingMode::TRN, OverflowMode::SAT_SYM);
  L.back().kernel = random_constant(rng, {33, 3});
  L.back().bias = random_constant(rng, {3});
  archive::validate(a, "crop_archive");
  return a;
}

/// Number of nodes of each op type.
std::map<std::string, int> op_counts(const onnx::ModelProto& m) {
  std::map<std::string, int> c;
  for (const auto& n : m.graph().node()) ++c[n.op_type()];
  return c;
}

const onnx::NodeProto* find_node(const onnx::ModelProto& m, const std::string& name) {
  for (const auto& n : m.graph().node())
    if (n.name() == name) return &n;
  return nullptr;
}

std::vector<int64_t> ints(const onnx::NodeProto& n, const std::string& name) {
  const auto at = attributes(n);
  if (!at.count(name)) return {};
  return {at.at(name)->ints().begin(), at.at(name)->ints().end()};
}

/// The values of an int64 initializer.
std::vector<int64_t> int64_values(const onnx::GraphProto& g, const std::string& name) {
  const onnx::TensorProto* t = find_initializer(g, name);
  EXPECT_NE(t, nullptr) << name;
  if (!t) return {};
  EXPECT_EQ(t->data_type(), onnx::TensorProto::INT64) << name;
  return {t->int64_data().begin(), t->int64_data().end()};
}

std::vector<double> float32_inputs(const archive::Archive& a, int64_t n, uint64_t seed,
                                   double scale) {
  auto x = hgqt::testing::random_inputs(a, n, seed, scale);
  for (auto& v : x) v = static_cast<float>(v);  // the graph input is float32
  return x;
}

void write_rows(const std::string& path, const std::vector<double>& v, int64_t cols) {
  FILE* f = std::fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr) << path;
  for (size_t n = 0; n < v.size(); ++n)
    std::fprintf(f, "%.17g%c", v[n], (static_cast<int64_t>(n + 1) % cols == 0) ? '\n' : ' ');
  ASSERT_EQ(std::fclose(f), 0) << path;
}

/// The Lut graph (q -> lut tanh -> d1 -> lut sig -> d2) with hand-picked per-element types in
/// both lut layers: unsigned, signed, signed 1-bit, unsigned 1-bit and pruned inputs; pruned and
/// unsigned outputs; the lut inputs round and overflow as given. Tables refilled.
archive::Archive lut_mixed_types_archive(uint64_t seed, RoundingMode round, OverflowMode overflow) {
  auto a = graph_archive(hgqt::testing::GraphKind::Lut, seed);
  for (const char* name : {"tanh", "sig"}) {
    archive::Layer* l = nullptr;
    for (auto& layer : a.layers)
      if (layer.name == name) l = &layer;
    EXPECT_NE(l, nullptr) << name;
    if (!l) continue;
    auto& iq = *l->input_quantizer;
    auto& oq = *l->output_quantizer;
    // widths: 4 (unsigned), 1 (signed 1-bit), 1 (unsigned), 7 (signed), 2 (unsigned), pruned
    const std::vector<int32_t> ik{0, 1, 0, 1, 0, 1}, ii{2, 1, 0, 2, 3, 2}, iff{2, -1, 1, 4, -1, -3};
    // outputs: signed, unsigned, signed, signed, pruned, unsigned
    const std::vector<int32_t> ok{1, 0, 1, 1, 1, 0}, oi{1, 1, 0, 1, -2, 0}, of{4, 3, 5, 6, 1, 3};
    const size_t n = iq.k.size();
    iq.k.assign(ik.begin(), ik.begin() + static_cast<std::ptrdiff_t>(n));
    iq.i.assign(ii.begin(), ii.begin() + static_cast<std::ptrdiff_t>(n));
    iq.f.assign(iff.begin(), iff.begin() + static_cast<std::ptrdiff_t>(n));
    iq.f.back() = -iq.k.back() - iq.i.back();  // the last element pruned, whatever the size
    oq.k.assign(ok.begin(), ok.begin() + static_cast<std::ptrdiff_t>(n));
    oq.i.assign(oi.begin(), oi.begin() + static_cast<std::ptrdiff_t>(n));
    oq.f.assign(of.begin(), of.begin() + static_cast<std::ptrdiff_t>(n));
    iq.round = round;
    iq.overflow = overflow;
    hgqt::testing::fill_lut_table(*l);
  }
  archive::validate(a, "lut_mixed_types_archive");
  return a;
}

/// Cnn2d with a lut (tanh) between conv_a and the max pool: its input comes channels-first.
archive::Archive cnn2d_lut_archive(uint64_t seed) {
  auto a = graph_archive(hgqt::testing::GraphKind::Cnn2d, seed);
  archive::Layer l = graph_layer("lut_mid", LayerKind::Lut, {6, 6, 3}, {6, 6, 3});
  l.function = "tanh";
  std::mt19937_64 rng(seed);
  l.input_quantizer = uniform_quantizer({6, 6, 3}, 1, 2, 2, RoundingMode::TRN, OverflowMode::SAT);
  l.output_quantizer =
      uniform_quantizer({6, 6, 3}, 1, 1, 4, RoundingMode::RND_CONV, OverflowMode::SAT);
  for (size_t e = 0; e < l.input_quantizer->f.size(); ++e) {
    l.input_quantizer->f[e] = std::uniform_int_distribution<int>(0, 4)(rng);
    l.output_quantizer->f[e] = std::uniform_int_distribution<int>(2, 6)(rng);
    if (e % 11 == 5) l.input_quantizer->f[e] = -3;  // pruned
  }
  hgqt::testing::fill_lut_table(l);
  a.layers.insert(a.layers.begin() + 2, l);  // after conv_a; pool_max reads the previous layer
  archive::validate(a, "cnn2d_lut_archive");
  return a;
}

/// The Softmax graph with both softmax layers' stage quantizers and their input and output
/// quantizers in `round` / `overflow`; the input quantizers get two f per tensor (so that they
/// cannot be one scalar Quant) and the output quantizers keep their per-element types.
archive::Archive softmax_modes_archive(uint64_t seed, RoundingMode round, OverflowMode overflow) {
  auto a = graph_archive(hgqt::testing::GraphKind::Softmax, seed);
  for (auto& l : a.layers) {
    if (l.kind != LayerKind::Softmax) continue;
    for (auto* q : {&*l.exp_input_quantizer, &*l.exp_output_quantizer, &*l.inv_input_quantizer,
                    &*l.inv_output_quantizer, &*l.input_quantizer, &*l.output_quantizer}) {
      q->round = round;
      q->overflow = overflow;
    }
    auto& iq = *l.input_quantizer;
    for (size_t e = 0; e < iq.f.size(); ++e) iq.f[e] += static_cast<int32_t>(e % 2);
  }
  archive::validate(a, "softmax_modes_archive");
  return a;
}

/// Cnn2d's q -> conv_a -> max pool with a softmax over conv_a's channels (rows of 3) before the
/// pool: its input comes channels-first and its output goes back channels-first.
archive::Archive cnn2d_softmax_archive(uint64_t seed) {
  auto a = graph_archive(hgqt::testing::GraphKind::Cnn2d, seed);
  archive::Layer l = graph_layer("sm_mid", LayerKind::Softmax, {6, 6, 3}, {6, 6, 3});
  std::mt19937_64 rng(seed);
  l.input_quantizer = uniform_quantizer({6, 6, 3}, 1, 2, 3, RoundingMode::TRN, OverflowMode::SAT);
  l.output_quantizer =
      uniform_quantizer({6, 6, 3}, 0, 1, 6, RoundingMode::RND_CONV, OverflowMode::SAT);
  for (size_t e = 0; e < l.output_quantizer->f.size(); ++e)
    l.output_quantizer->f[e] = std::uniform_int_distribution<int>(4, 7)(rng);
  hgqt::testing::random_softmax_quantizers(l, seed);
  a.layers.insert(a.layers.begin() + 2, l);  // after conv_a; pool_max reads the previous layer
  // The model ends at the max pool (channels-first there), so that its outputs are the softmax's
  // maxima (the layers behind would leave few distinct outputs).
  a.layers.resize(4);
  a.output_shape = a.layers.back().output_shape;
  archive::validate(a, "cnn2d_softmax_archive");
  return a;
}

}  // namespace

TEST(QonnxExport, ParsesBackWithOpsetsNodesAndQuantParameters) {
  const auto a = per_tensor_archive(3, {8, 6, 5, 4});
  const std::string path = temp_path("structure.onnx");
  const auto report = exporters::export_qonnx(a, path);
  EXPECT_EQ(report.widened_elements, 0);
  EXPECT_EQ(report.nodes, expected_nodes(a));
  const auto m = parse(path);
  const auto quants = check_structure(m, expected_nodes(a));
  EXPECT_EQ(static_cast<int64_t>(quants.size()), report.quant_nodes);

  // Each activation quantizer's node carries its exact fixed-point type.
  for (const auto& l : a.layers) {
    const std::pair<const char*, const archive::QuantSpec*> roles[] = {
        {"/input_quant", l.input_quantizer ? &*l.input_quantizer : nullptr},
        {"/output_quant", l.output_quantizer ? &*l.output_quantizer : nullptr}};
    for (const auto& [suffix, q] : roles) {
      if (!q) continue;
      const std::string node = l.name + suffix;
      ASSERT_TRUE(quants.count(node)) << node;
      const onnx::NodeProto& n = *quants.at(node);
      const auto at = attributes(n);
      EXPECT_EQ(scalar_value(m.graph(), n.input(1)), std::ldexp(1.0f, -q->f[0])) << node;
      EXPECT_EQ(scalar_value(m.graph(), n.input(3)), q->k[0] + q->i[0] + q->f[0]) << node;
      EXPECT_EQ(at.at("signed")->i(), q->k[0]) << node;
      EXPECT_EQ(at.at("narrow")->i(), q->overflow == OverflowMode::SAT_SYM && q->k[0] == 1) << node;
      EXPECT_EQ(at.at("rounding_mode")->s(), q->round == RoundingMode::TRN ? "FLOOR" : "ROUND");
    }
  }
  // Kernels keep their exact values; the Quant on them covers every value.
  const onnx::TensorProto* k0 = find_initializer(m.graph(), "dense_0/kernel");
  ASSERT_NE(k0, nullptr);
  ASSERT_EQ(k0->float_data_size(), a.layers[0].kernel->size());
  for (int64_t e = 0; e < a.layers[0].kernel->size(); ++e)
    EXPECT_EQ(k0->float_data(static_cast<int>(e)), a.layers[0].kernel->value(e)) << e;
  ASSERT_EQ(k0->dims_size(), 2);
  EXPECT_EQ(k0->dims(0), 8);
  EXPECT_EQ(k0->dims(1), 6);
}

TEST(QonnxExport, RefusesHeterogeneousActivationQuantizerNamingTheLayer) {
  auto a = per_tensor_archive(4, {8, 6, 4});
  auto& q = *a.layers[0].input_quantizer;  // dense_0
  ASSERT_GE(q.width(3), 2);
  q.f[3] -= 1;  // one element narrower: the union is unchanged
  try {
    exporters::export_qonnx(a, temp_path("refused.onnx"));
    FAIL() << "expected a refusal";
  } catch (const QonnxError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'dense_0'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("input quantizer"), std::string::npos) << msg;
    EXPECT_NE(msg.find("2 different (k, i, f)"), std::string::npos) << msg;
    EXPECT_NE(msg.find("allow_widening"), std::string::npos) << msg;
  }
  EXPECT_FALSE(fs::exists(temp_path("refused.onnx")));
  QonnxOptions o;
  o.allow_widening = true;
  auto r = exporters::export_qonnx(a, temp_path("widened1.onnx"), o);
  EXPECT_EQ(r.widened_elements, 1);
  ASSERT_EQ(r.notes.size(), 1u);
  EXPECT_NE(r.notes[0].find("dense_0"), std::string::npos);

  // One element wider: the union grows and every other element is widened.
  auto b = per_tensor_archive(4, {8, 6, 4});
  b.layers[0].input_quantizer->f[5] += 2;
  r = exporters::export_qonnx(b, temp_path("widened2.onnx"), o);
  EXPECT_EQ(r.widened_elements, 7);
  const auto m = parse(temp_path("widened2.onnx"));
  const auto quants = check_structure(m, expected_nodes(b));
  const auto& n = *quants.at("dense_0/input_quant");
  EXPECT_EQ(scalar_value(m.graph(), n.input(1)),
            std::ldexp(1.0f, -b.layers[0].input_quantizer->f[5]));
}

TEST(QonnxExport, RefusesWrapAndPrunedElementsUnlessWidening) {
  auto a = per_tensor_archive(5, {8, 6, 4});
  ASSERT_EQ(a.layers[1].name, "relu_0");
  a.layers[1].output_quantizer->overflow = OverflowMode::WRAP;
  try {
    exporters::export_qonnx(a, temp_path("wrap.onnx"));
    FAIL() << "expected a refusal";
  } catch (const QonnxError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'relu_0'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("output quantizer"), std::string::npos) << msg;
    EXPECT_NE(msg.find("WRAP"), std::string::npos) << msg;
  }
  QonnxOptions o;
  o.allow_widening = true;
  auto r = exporters::export_qonnx(a, temp_path("wrap.onnx"), o);
  EXPECT_EQ(r.widened_elements, 6);
  EXPECT_EQ(r.wrap_elements, 6);

  auto b = per_tensor_archive(5, {8, 6, 4});
  auto& q = *b.layers[2].input_quantizer;  // dense_1
  ASSERT_EQ(b.layers[2].name, "dense_1");
  q.f[0] = -q.k[0] - q.i[0];      // prune element 0
  q.f[4] = -q.k[4] - q.i[4] - 3;  // and element 4
  try {
    exporters::export_qonnx(b, temp_path("pruned.onnx"));
    FAIL() << "expected a refusal";
  } catch (const QonnxError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'dense_1'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("2 of its 6 elements are pruned"), std::string::npos) << msg;
  }
  r = exporters::export_qonnx(b, temp_path("pruned.onnx"), o);
  EXPECT_EQ(r.widened_elements, 2);
  EXPECT_EQ(r.wrap_elements, 0);

  // All elements pruned: no Quant can express a constant 0, widening or not.
  for (int64_t e = 0; e < q.size(); ++e) q.f[e] = -q.k[e] - q.i[e];
  EXPECT_THROW(exporters::export_qonnx(b, temp_path("pruned.onnx"), o), QonnxError);
}

TEST(QonnxExport, RefusesRndUnlessOffsetFloorIsChosen) {
  auto a = per_tensor_archive(6, {8, 6, 4});
  a.layers[0].input_quantizer->round = RoundingMode::RND;
  QonnxOptions widen;
  widen.allow_widening = true;  // widening does not make RND exact
  for (const auto& o : {QonnxOptions{}, widen}) {
    try {
      exporters::export_qonnx(a, temp_path("rnd.onnx"), o);
      FAIL() << "expected a refusal";
    } catch (const QonnxError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("'dense_0'"), std::string::npos) << msg;
      EXPECT_NE(msg.find("rounding RND"), std::string::npos) << msg;
      EXPECT_NE(msg.find("HALF_UP"), std::string::npos) << msg;
    }
  }
  QonnxOptions o;
  o.rnd_as_offset_floor = true;
  const auto r = exporters::export_qonnx(a, temp_path("rnd.onnx"), o);
  EXPECT_EQ(r.widened_elements, 0);
  const auto m = parse(temp_path("rnd.onnx"));
  const auto quants = check_structure(m, expected_nodes(a, true));
  const auto& n = *quants.at("dense_0/input_quant");
  EXPECT_EQ(attributes(n).at("rounding_mode")->s(), "FLOOR");
  // The Add of half a step feeds it.
  const onnx::NodeProto* add = nullptr;
  for (const auto& node : m.graph().node())
    if (node.output(0) == n.input(0)) add = &node;
  ASSERT_NE(add, nullptr);
  EXPECT_EQ(add->op_type(), "Add");
  EXPECT_EQ(add->input(0), "input");
  EXPECT_EQ(scalar_value(m.graph(), add->input(1)),
            std::ldexp(1.0f, -a.layers[0].input_quantizer->f[0] - 1));
}

TEST(QonnxExport, SignedOneBitActivationIsRefusedAndWidenedToTwoBits) {
  auto a = per_tensor_archive(7, {8, 6, 4});
  auto& q = *a.layers[1].output_quantizer;  // relu_0
  for (int64_t e = 0; e < q.size(); ++e) {
    q.k[e] = 1;
    q.i[e] = 0;
    q.f[e] = 0;
  }
  try {
    exporters::export_qonnx(a, temp_path("bipolar.onnx"));
    FAIL() << "expected a refusal";
  } catch (const QonnxError& e) {
    EXPECT_NE(std::string(e.what()).find("signed 1-bit"), std::string::npos) << e.what();
  }
  QonnxOptions o;
  o.allow_widening = true;
  const auto r = exporters::export_qonnx(a, temp_path("bipolar.onnx"), o);
  EXPECT_EQ(r.widened_elements, 6);
  const auto m = parse(temp_path("bipolar.onnx"));
  const auto quants = check_structure(m, expected_nodes(a));
  EXPECT_EQ(scalar_value(m.graph(), quants.at("relu_0/output_quant")->input(3)), 2.0f);
}

TEST(QonnxExport, ConstantsThatFloat32CannotHoldAndBadPathsAreErrors) {
  auto a = per_tensor_archive(8, {8, 6, 4});
  auto& w = *a.layers[0].kernel;
  w.quantizer.i[2] = 30;
  w.quantizer.f[2] = 0;
  w.exponent[2] = 0;
  w.mantissa[2] = (int64_t{1} << 25) + 1;  // 26 significant bits
  try {
    exporters::export_qonnx(a, temp_path("wide.onnx"));
    FAIL() << "expected an error";
  } catch (const QonnxError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'dense_0'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("kernel element 2"), std::string::npos) << msg;
    EXPECT_NE(msg.find("float32"), std::string::npos) << msg;
  }
  const auto b = per_tensor_archive(8, {8, 6, 4});
  try {
    exporters::export_qonnx(b, temp_path("no/such/dir/model.onnx"));
    FAIL() << "expected an error";
  } catch (const QonnxError& e) {
    EXPECT_NE(std::string(e.what()).find("no/such/dir"), std::string::npos) << e.what();
  }
  auto c = b;
  c.layers[0].kernel->mantissa.pop_back();  // invalid archive: validation names it
  EXPECT_THROW(exporters::export_qonnx(c, temp_path("invalid.onnx")), archive::ArchiveError);
}

TEST(QonnxExport, PreprocessingBecomesSubAndDiv) {
  auto a = per_tensor_archive(9, {6, 5, 3});
  a.feature_mean = {0.5f, -1.25f, 3.0f, 0.1f, 0.0f, 2.0f};
  a.feature_std = {1.5f, 0.3f, 2.0f, 1.0f, 0.7f, 4.0f};
  const auto r = exporters::export_qonnx(a, temp_path("pre.onnx"));
  const auto m = parse(temp_path("pre.onnx"));
  check_structure(m, expected_nodes(a));
  EXPECT_EQ(r.nodes, expected_nodes(a));
  EXPECT_EQ(m.graph().node(0).op_type(), "Sub");
  EXPECT_EQ(m.graph().node(1).op_type(), "Div");
  QonnxOptions o;
  o.include_preprocessing = false;
  const auto r2 = exporters::export_qonnx(a, temp_path("pre.onnx"), o);
  EXPECT_EQ(r2.nodes, expected_nodes(a) - 2);
}

// Writes <binary dir>/qonnx_fixtures/: for every case <case>.onnx, <case>_x.txt (float32 input
// rows), <case>_y.txt (the reference outputs, %.17g) and <case>.meta; cases.txt lists the cases.
// tests/python/test_qonnx.py checks the models with onnx.checker and evaluates them in numpy.
TEST(QonnxExport, WritesFixturesForPython) {
  const fs::path dir = fs::path(HGQT_BINARY_DIR) / "qonnx_fixtures";
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream cases(dir / "cases.txt");

  struct Case {
    std::string name;
    archive::Archive a;
    QonnxOptions options;
    archive::Archive reference;  // the archive whose emulator QONNX must match
    int64_t widened = 0;
  };
  std::vector<Case> all;
  {
    Case c{"per_tensor_mlp", per_tensor_archive(21, {8, 6, 4}), {}, archive::Archive(), 0};
    all.push_back(c);
  }
  {
    Case c{"per_tensor_deep", per_tensor_archive(22, {12, 10, 8, 6, 3}), {}, archive::Archive(), 0};
    all.push_back(c);
  }
  {
    // A [2, 4] input: quantize, flatten, then the MLP.
    auto a = per_tensor_archive(23, {8, 7, 5, 3}, /*quantize_layer=*/true);
    a.input_shape = {2, 4};
    a.layers[0].input_shape = a.layers[0].output_shape = {2, 4};
    a.layers[0].input_quantizer->shape = {2, 4};
    archive::Layer flat;
    flat.name = "flatten";
    flat.kind = LayerKind::Flatten;
    flat.input_shape = {2, 4};
    flat.output_shape = {8};
    a.layers.insert(a.layers.begin() + 1, flat);
    all.push_back(Case{"quantize_flatten", a, {}, archive::Archive(), 0});
  }
  {
    auto a = per_tensor_archive(24, {6, 5, 3});
    a.feature_mean = {0.5f, -1.25f, 3.0f, 0.1f, 0.0f, 2.0f};
    a.feature_std = {1.5f, 0.3f, 2.0f, 1.0f, 0.7f, 4.0f};
    all.push_back(Case{"preprocessed", a, {}, archive::Archive(), 0});
  }
  {
    auto a = per_tensor_archive(25, {8, 6, 5, 4});
    for (auto& [name, q] : activation_quantizers(a)) q->round = RoundingMode::RND;
    QonnxOptions o;
    o.rnd_as_offset_floor = true;
    all.push_back(Case{"rnd_offset_floor", a, o, archive::Archive(), 0});
  }
  for (uint64_t seed : {26, 27}) {
    // Heterogeneous, pruned, WRAP, mixed rounding: exported widened; QONNX then computes the
    // union-typed, saturating archive exactly.
    hgqt::testing::RandomArchiveOptions ro;
    ro.seed = seed;
    ro.sizes = {8, 6, 5, 4};
    Case c{"widened_" + std::to_string(seed),
           hgqt::testing::random_mlp_archive(ro),
           {},
           archive::Archive(),
           0};
    c.options.allow_widening = true;
    c.options.rnd_as_offset_floor = true;
    c.reference = c.a;
    c.widened = widen(c.reference);
    all.push_back(c);
  }

  // Graphs: conv1d / conv2d, max / avg pool, add, concatenate, reshape, scale.
  using hgqt::testing::GraphKind;
  for (uint64_t seed : {41, 42, 43}) {
    const std::string s = std::to_string(seed);
    all.push_back(
        Case{"cnn2d_" + s, graph_archive(GraphKind::Cnn2d, seed), {}, archive::Archive(), 0});
    all.push_back(Case{"conv1d_branches_" + s,
                       graph_archive(GraphKind::Conv1dBranches, seed),
                       {},
                       archive::Archive(),
                       0});
  }
  for (uint64_t seed : {51, 52})  // per-particle dense layers (MatMul on [B, P, F]), global pools
    all.push_back(Case{"particles_" + std::to_string(seed),
                       graph_archive(GraphKind::Particles, seed),
                       {},
                       archive::Archive(),
                       0});
  for (uint64_t seed : {53, 54, 55}) {  // einsums of two Quant outputs (batched MatMul), softmax
    Case c{(seed == 55 ? "linformer_" : "attention_") + std::to_string(seed),
           graph_archive(seed == 55 ? GraphKind::Linformer : GraphKind::Attention, seed),
           {},
           archive::Archive(),
           0};
    c.options.rnd_as_offset_floor = true;  // the softmax stages' random RND
    all.push_back(c);
  }
  for (uint64_t seed : {49, 50}) {
    // Cnn2d with wide activation types everywhere, so that many distinct outputs survive.
    auto a = graph_archive(GraphKind::Cnn2d, seed);
    for (auto& [name, q] : activation_quantizers(a)) {
      std::fill(q->k.begin(), q->k.end(), 1);
      std::fill(q->i.begin(), q->i.end(), 3);
      std::fill(q->f.begin(), q->f.end(), 5);
    }
    all.push_back(Case{"cnn2d_wide_" + std::to_string(seed), a, {}, archive::Archive(), 0});
  }
  for (uint64_t seed : {44, 45})
    all.push_back(
        Case{"crop_" + std::to_string(seed), crop_archive(seed), {}, archive::Archive(), 0});
  {
    auto a = graph_archive(GraphKind::Conv1dBranches, 46);
    for (auto& [name, q] : activation_quantizers(a)) q->round = RoundingMode::RND;
    QonnxOptions o;
    o.rnd_as_offset_floor = true;
    all.push_back(Case{"conv1d_branches_rnd_offset_floor", a, o, archive::Archive(), 0});
  }
  {
    auto a = graph_archive(GraphKind::Cnn2d, 47);
    a.feature_mean.resize(static_cast<size_t>(a.input_size()));
    a.feature_std.resize(a.feature_mean.size());
    for (size_t n = 0; n < a.feature_mean.size(); ++n) {
      a.feature_mean[n] = 0.25f * static_cast<float>(n % 7) - 0.5f;
      a.feature_std[n] = 0.5f + 0.125f * static_cast<float>(n % 5);
    }
    all.push_back(Case{"cnn2d_preprocessed", a, {}, archive::Archive(), 0});
  }
  for (auto kind : {GraphKind::Cnn2d, GraphKind::Conv1dBranches}) {
    // Per-element, pruned, WRAP, RND quantizers in a graph, widened.
    hgqt::testing::RandomArchiveOptions ro;
    ro.seed = 48;
    Case c{kind == GraphKind::Cnn2d ? "cnn2d_widened" : "conv1d_branches_widened",
           hgqt::testing::random_graph_archive(kind, ro),
           {},
           archive::Archive(),
           0};
    c.options.allow_widening = true;
    c.options.rnd_as_offset_floor = true;
    c.reference = c.a;
    c.widened = widen(c.reference);
    all.push_back(c);
  }

  // lut layers: heterogeneous f and a pruned element in every table input (random Lut graphs),
  // hand-picked mixed types under each overflow and rounding mode, and a lut inside a conv chain.
  for (uint64_t seed : {51, 52, 53})
    all.push_back(Case{"lut_" + std::to_string(seed),
                       graph_archive(GraphKind::Lut, seed),
                       {},
                       archive::Archive(),
                       0});
  // lut_dense (HGQ-LUT): one learned table per connection, a Gather and a ReduceSum.
  for (uint64_t seed : {54, 55})
    all.push_back(Case{"lut_dense_" + std::to_string(seed),
                       graph_archive(GraphKind::LutDense, seed),
                       {},
                       archive::Archive(),
                       0});
  {
    const std::vector<std::tuple<std::string, RoundingMode, OverflowMode>> modes{
        {"trn_sat", RoundingMode::TRN, OverflowMode::SAT},
        {"rnd_conv_sat_sym", RoundingMode::RND_CONV, OverflowMode::SAT_SYM},
        {"rnd_sat_sym", RoundingMode::RND, OverflowMode::SAT_SYM},
        {"trn_wrap", RoundingMode::TRN, OverflowMode::WRAP},
        {"rnd_conv_wrap", RoundingMode::RND_CONV, OverflowMode::WRAP},
        {"rnd_wrap", RoundingMode::RND, OverflowMode::WRAP}};
    uint64_t seed = 54;
    for (const auto& [name, round, overflow] : modes) {
      Case c{"lut_mixed_" + name,
             lut_mixed_types_archive(seed++, round, overflow),
             {},
             archive::Archive(),
             0};
      c.options.rnd_as_offset_floor = round == RoundingMode::RND;
      all.push_back(c);
    }
  }
  for (uint64_t seed : {61, 62})
    all.push_back(Case{
        "cnn2d_lut_" + std::to_string(seed), cnn2d_lut_archive(seed), {}, archive::Archive(), 0});

  // softmax layers: random Softmax graphs (random stage modes; RND as offset + FLOOR), every
  // quantizer of the softmax layers in one mode (WRAP too), and a softmax on a conv's channels.
  for (uint64_t seed : {81, 82, 83, 84}) {
    Case c{"softmax_" + std::to_string(seed),
           graph_archive(GraphKind::Softmax, seed),
           {},
           archive::Archive(),
           0};
    c.options.rnd_as_offset_floor = true;
    all.push_back(c);
  }
  {
    const std::vector<std::tuple<std::string, RoundingMode, OverflowMode>> modes{
        {"trn_sat", RoundingMode::TRN, OverflowMode::SAT},
        {"rnd_conv_sat_sym", RoundingMode::RND_CONV, OverflowMode::SAT_SYM},
        {"rnd_sat", RoundingMode::RND, OverflowMode::SAT},
        {"trn_wrap", RoundingMode::TRN, OverflowMode::WRAP},
        {"rnd_wrap", RoundingMode::RND, OverflowMode::WRAP}};
    uint64_t seed = 100;
    for (const auto& [name, round, overflow] : modes) {
      Case c{"softmax_modes_" + name,
             softmax_modes_archive(seed++, round, overflow),
             {},
             archive::Archive(),
             0};
      c.options.rnd_as_offset_floor = round == RoundingMode::RND;
      all.push_back(c);
    }
  }
  for (uint64_t seed : {91, 92}) {
    Case c{"cnn2d_softmax_" + std::to_string(seed),
           cnn2d_softmax_archive(seed),
           {},
           archive::Archive(),
           0};
    c.options.rnd_as_offset_floor = true;
    all.push_back(c);
  }

  for (auto& c : all) {
    SCOPED_TRACE(c.name);
    const bool widened = !c.reference.layers.empty();
    const archive::Archive& ref = widened ? c.reference : c.a;
    const std::string model = (dir / (c.name + ".onnx")).string();
    const auto report = exporters::export_qonnx(c.a, model, c.options);
    EXPECT_EQ(report.widened_elements, c.widened);
    EXPECT_EQ(report.widened_elements > 0, widened);
    check_structure(parse(model), is_graph(c.a)
                                      ? report.nodes
                                      : expected_nodes(c.a, c.options.rnd_as_offset_floor));
    // In-range rows and rows that overflow the saturating quantizers (scale 16).
    auto x = float32_inputs(c.a, 160, 100 + c.a.layers.size(), 1.0);
    const auto big = float32_inputs(c.a, 80, 200 + c.a.layers.size(), 16.0);
    x.insert(x.end(), big.begin(), big.end());
    const int64_t n = 240, in = c.a.input_size();
    std::vector<double> xin = x;
    if (!c.a.feature_mean.empty()) {
      std::vector<float> xf(x.begin(), x.end());
      archive::preprocess(c.a, xf, n);
      xin.assign(xf.begin(), xf.end());
    }
    archive::Emulator emu(ref);
    archive::EmulatorStats stats;
    const auto y = emu.run_batch(xin, n, &stats);
    EXPECT_GT(stats.saturated, 0) << "the fixture should exercise saturation";
    if (c.name.find("wrap") != std::string::npos) {
      EXPECT_GT(stats.wrapped, 0) << "the fixture should exercise wrapping";
    }
    write_rows((dir / (c.name + "_x.txt")).string(), x, in);
    write_rows((dir / (c.name + "_y.txt")).string(), y, emu.output_size());
    std::ofstream meta(dir / (c.name + ".meta"));
    meta << "widened_elements " << report.widened_elements << "\n"
         << "nodes " << report.nodes << "\n"
         << "quant_nodes " << report.quant_nodes << "\n";
    cases << c.name << "\n";
  }
}

TEST(QonnxExport, GraphLayersBecomeConvPoolConcatAndFewTransposes) {
  using hgqt::testing::GraphKind;
  {
    const auto a = graph_archive(GraphKind::Cnn2d, 31);
    const std::string path = temp_path("cnn2d.onnx");
    const auto report = exporters::export_qonnx(a, path);
    EXPECT_EQ(report.widened_elements, 0);
    const auto m = parse(path);
    check_structure(m, report.nodes);
    auto ops = op_counts(m);
    EXPECT_EQ(ops["Conv"], 3);
    EXPECT_EQ(ops["MaxPool"], 1);
    EXPECT_EQ(ops["AveragePool"], 1);
    EXPECT_EQ(ops["Concat"], 1);
    EXPECT_EQ(ops["Flatten"], 1);
    EXPECT_EQ(ops["MatMul"], 1);
    EXPECT_EQ(ops["Slice"], 0);
    // The conv / pool chain stays channels-first: one Transpose after the input quantizer,
    // one before the flatten.
    EXPECT_EQ(ops["Transpose"], 2);
    const auto* t = find_node(m, "q/to_channels_first");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(ints(*t, "perm"), (std::vector<int64_t>{0, 3, 1, 2}));
    t = find_node(m, "pool_avg/to_channels_last");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(ints(*t, "perm"), (std::vector<int64_t>{0, 2, 3, 1}));

    const auto* conv_a = find_node(m, "conv_a/conv");
    ASSERT_NE(conv_a, nullptr);
    EXPECT_EQ(ints(*conv_a, "kernel_shape"), (std::vector<int64_t>{3, 3}));
    EXPECT_EQ(ints(*conv_a, "strides"), (std::vector<int64_t>{1, 1}));
    EXPECT_EQ(ints(*conv_a, "pads"), (std::vector<int64_t>{1, 1, 1, 1}));
    EXPECT_EQ(conv_a->input_size(), 3);  // x, Quant(W), Quant(b)
    const auto* conv_b = find_node(m, "conv_b/conv");
    ASSERT_NE(conv_b, nullptr);
    EXPECT_EQ(ints(*conv_b, "pads"), (std::vector<int64_t>{0, 0, 0, 0}));
    // Kernel [KH, KW, C, F] -> [F, C, KH, KW] with exact values.
    const auto& w = *a.layers[1].kernel;  // conv_a: [3, 3, 2, 3]
    const auto* wi = find_initializer(m.graph(), "conv_a/kernel");
    ASSERT_NE(wi, nullptr);
    ASSERT_EQ(std::vector<int64_t>(wi->dims().begin(), wi->dims().end()),
              (std::vector<int64_t>{3, 2, 3, 3}));
    for (int64_t kh = 0; kh < 3; ++kh)
      for (int64_t kw = 0; kw < 3; ++kw)
        for (int64_t c = 0; c < 2; ++c)
          for (int64_t f = 0; f < 3; ++f)
            EXPECT_EQ(wi->float_data(static_cast<int>(((f * 2 + c) * 3 + kh) * 3 + kw)),
                      w.value(((kh * 3 + kw) * 2 + c) * 3 + f));
    // Concatenate on channels (per-sample axis 2) is axis 1 channels-first.
    const auto* cat = find_node(m, "cat/concat");
    ASSERT_NE(cat, nullptr);
    EXPECT_EQ(attributes(*cat).at("axis")->i(), 1);
    const auto* mp = find_node(m, "pool_max/maxpool");
    ASSERT_NE(mp, nullptr);
    EXPECT_EQ(ints(*mp, "kernel_shape"), (std::vector<int64_t>{2, 2}));
    EXPECT_EQ(ints(*mp, "strides"), (std::vector<int64_t>{2, 2}));
    EXPECT_TRUE(ints(*mp, "pads").empty());
    // Input and output keep the archive's channels-last shapes behind the batch axis.
    const auto& in_dims = m.graph().input(0).type().tensor_type().shape();
    ASSERT_EQ(in_dims.dim_size(), 4);
    EXPECT_EQ(in_dims.dim(3).dim_value(), 2);
  }
  {
    const auto a = graph_archive(GraphKind::Conv1dBranches, 32);
    const std::string path = temp_path("conv1d.onnx");
    const auto report = exporters::export_qonnx(a, path);
    const auto m = parse(path);
    check_structure(m, report.nodes);
    auto ops = op_counts(m);
    EXPECT_EQ(ops["Conv"], 2);
    EXPECT_EQ(ops["Mul"], 1);          // the scale layer
    EXPECT_EQ(ops["Add"], 2 + 1 + 1);  // a three-input add, the scale's and the dense's bias
    EXPECT_EQ(ops["Transpose"], 2);    // once for both convs, once before the flatten
    EXPECT_EQ(ops["Reshape"] + ops["Flatten"], 2);
    // Both convs read the same channels-first copy of the quantized input.
    EXPECT_EQ(find_node(m, "c1/conv")->input(0), find_node(m, "c2/conv")->input(0));
    EXPECT_EQ(ints(*find_node(m, "c1/conv"), "pads"), (std::vector<int64_t>{1, 1}));
    // The scale's constants broadcast channels-first: [C, 1].
    const auto* k = find_initializer(m.graph(), "bn/kernel");
    ASSERT_NE(k, nullptr);
    EXPECT_EQ(std::vector<int64_t>(k->dims().begin(), k->dims().end()),
              (std::vector<int64_t>{3, 1}));
    EXPECT_EQ(attributes(*find_node(m, "cat/concat")).at("axis")->i(), 1);
  }
  {
    const auto a = crop_archive(33);
    const std::string path = temp_path("crop.onnx");
    const auto report = exporters::export_qonnx(a, path);
    const auto m = parse(path);
    check_structure(m, report.nodes);
    // H: pad_after = 2 * 2 + 2 - 7 - 0 = -1: a Slice keeps rows [0, 6); W: pad_after 1.
    const auto* crop = find_node(m, "conv_crop/crop");
    ASSERT_NE(crop, nullptr);
    EXPECT_EQ(crop->op_type(), "Slice");
    EXPECT_EQ(int64_values(m.graph(), crop->input(1)), (std::vector<int64_t>{0}));
    EXPECT_EQ(int64_values(m.graph(), crop->input(2)), (std::vector<int64_t>{6}));
    EXPECT_EQ(int64_values(m.graph(), crop->input(3)), (std::vector<int64_t>{2}));
    EXPECT_EQ(ints(*find_node(m, "conv_crop/conv"), "pads"), (std::vector<int64_t>{0, 1, 0, 1}));
    EXPECT_EQ(ints(*find_node(m, "conv_seq/conv"), "pads"), (std::vector<int64_t>{2, 2}));
    EXPECT_EQ(find_node(m, "conv_seq/conv")->input_size(), 2);  // no bias
    // Concatenate on the spatial axis 0 of [L, C] is axis 2 channels-first.
    EXPECT_EQ(attributes(*find_node(m, "cat/concat")).at("axis")->i(), 2);
    const auto* r = find_node(m, "to_seq/reshape");
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(int64_values(m.graph(), r->input(1)), (std::vector<int64_t>{0, 6, 4}));
  }
}

TEST(QonnxExport, RefusesGraphLayersItCannotExpressNamingTheLayer) {
  using hgqt::testing::GraphKind;
  auto expect_refusal = [](const archive::Archive& a, const std::string& name,
                           const std::vector<std::string>& parts) {
    SCOPED_TRACE(name);
    const std::string path = temp_path("refused_" + name + ".onnx");
    try {
      exporters::export_qonnx(a, path);
      ADD_FAILURE() << "expected a refusal";
    } catch (const QonnxError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("'" + name + "'"), std::string::npos) << msg;
      for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg;
    }
    EXPECT_FALSE(fs::exists(path));
  };
  {
    // A conv2d output quantizer with two (k, i, f).
    auto a = graph_archive(GraphKind::Cnn2d, 34);
    auto& l = a.layers[5];
    ASSERT_EQ(l.name, "conv_b");
    l.output_quantizer->f[3] += 1;
    expect_refusal(a, "conv_b", {"conv2d", "output quantizer", "2 different (k, i, f)"});
    QonnxOptions o;
    o.allow_widening = true;
    EXPECT_GT(exporters::export_qonnx(a, temp_path("widened_conv_b.onnx"), o).widened_elements, 0);
  }
  {
    // An add whose output quantizer wraps.
    auto a = graph_archive(GraphKind::Conv1dBranches, 35);
    auto& l = a.layers[3];
    ASSERT_EQ(l.name, "sum");
    l.output_quantizer->overflow = OverflowMode::WRAP;
    expect_refusal(a, "sum", {"(layers[3], add)", "output quantizer", "WRAP"});
  }
  {
    // A conv1d input quantizer rounding RND (no --rnd-offset).
    auto a = graph_archive(GraphKind::Conv1dBranches, 36);
    auto& l = a.layers[1];
    ASSERT_EQ(l.name, "c1");
    l.input_quantizer =
        uniform_quantizer(l.input_shape, 1, 2, 2, RoundingMode::RND, OverflowMode::SAT);
    expect_refusal(a, "c1", {"conv1d", "input quantizer", "rounding RND"});
  }
  {
    // A batch-norm scale that float32 cannot hold.
    auto a = graph_archive(GraphKind::Conv1dBranches, 37);
    auto& w = *a.layers[4].kernel;
    ASSERT_EQ(a.layers[4].name, "bn");
    w.quantizer.i[1] = 30;
    w.quantizer.f[1] = 0;
    w.exponent[1] = 0;
    w.mantissa[1] = (int64_t{1} << 25) + 1;
    expect_refusal(a, "bn", {"(layers[4], scale)", "kernel element 1", "float32"});
  }
  {
    // A pool reading the still-float model input has no quantized input: refused before
    // anything is written (the archive's type inference names the layer).
    auto a = graph_archive(GraphKind::Cnn2d, 38);
    archive::Layer p = graph_layer("pool_raw", LayerKind::Pool, {6, 6, 2}, {3, 3, 2});
    p.pool = "max";
    p.kernel_size = {2, 2};
    p.strides = {2, 2};
    a.layers.insert(a.layers.begin(), p);
    a.layers[1].inputs = {archive::kModelInput};
    try {
      exporters::export_qonnx(a, temp_path("refused_pool_raw.onnx"));
      ADD_FAILURE() << "expected a refusal";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("pool_raw"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(temp_path("refused_pool_raw.onnx")));
  }
}

/// The float values of a float initializer (any shape).
static std::vector<float> float_values(const onnx::GraphProto& g, const std::string& name) {
  const onnx::TensorProto* t = find_initializer(g, name);
  EXPECT_NE(t, nullptr) << name;
  if (!t) return {};
  EXPECT_EQ(t->data_type(), onnx::TensorProto::FLOAT) << name;
  return {t->float_data().begin(), t->float_data().end()};
}

TEST(QonnxExport, LutLayersBecomeAnIndexAndAGather) {
  // Table offsets and smallest mantissas computed here from the definition (archive.h), not
  // with lut_offsets: element n has 2^W entries (one when pruned), starting at its smallest
  // mantissa -2^(W-1) (signed) or 0.
  for (OverflowMode overflow : {OverflowMode::SAT, OverflowMode::WRAP}) {
    SCOPED_TRACE(quant::to_string(overflow));
    const auto a = lut_mixed_types_archive(71, RoundingMode::TRN, overflow);
    const std::string path = temp_path("lut.onnx");
    const auto report = exporters::export_qonnx(a, path);
    EXPECT_EQ(report.widened_elements, 0);
    const auto m = parse(path);
    const auto quants = check_structure(m, report.nodes);
    auto ops = op_counts(m);
    EXPECT_EQ(ops["Gather"], 2);
    EXPECT_EQ(ops["Cast"], 2);
    EXPECT_EQ(ops["Mod"], overflow == OverflowMode::WRAP ? 4 : 0);  // fmod on x, mod on m
    EXPECT_EQ(static_cast<int64_t>(quants.size()), report.quant_nodes);
    for (const char* name : {"tanh", "sig"}) {
      SCOPED_TRACE(name);
      const archive::Layer* l = nullptr;
      for (const auto& layer : a.layers)
        if (layer.name == name) l = &layer;
      ASSERT_NE(l, nullptr);
      const auto& iq = *l->input_quantizer;
      const auto& oq = *l->output_quantizer;
      std::vector<int64_t> off{0}, min_m;
      for (int64_t e = 0; e < iq.size(); ++e) {
        const int w = iq.width(e);
        off.push_back(off.back() + (w <= 0 ? 1 : int64_t{1} << w));
        min_m.push_back(w <= 0 || iq.k[e] == 0 ? 0 : -(int64_t{1} << (w - 1)));
      }
      const std::string nm = name;
      const auto* gather = find_node(m, nm + "/gather");
      ASSERT_NE(gather, nullptr);
      EXPECT_EQ(attributes(*gather).at("axis")->i(), 0);
      ASSERT_EQ(gather->input(0), nm + "/table");
      const auto table = float_values(m.graph(), nm + "/table");
      ASSERT_EQ(table.size(), static_cast<size_t>(off.back()));
      for (int64_t e = 0; e < iq.size(); ++e)
        for (int64_t t = off[e]; t < off[e + 1]; ++t)
          EXPECT_EQ(table[t],
                    std::ldexp(static_cast<double>(l->table[t]), oq.width(e) > 0 ? -oq.f[e] : 0))
              << "element " << e << " entry " << t - off[e];
      // Index = mantissa + offset - min (SAT) or ((mantissa - min) mod 2^W) + offset (WRAP).
      const auto* index = find_node(m, nm + "/index");
      ASSERT_NE(index, nullptr);
      EXPECT_EQ(gather->input(1), index->output(0));
      const auto base = int64_values(m.graph(), index->input(1));
      ASSERT_EQ(base.size(), static_cast<size_t>(iq.size()));
      for (int64_t e = 0; e < iq.size(); ++e)
        EXPECT_EQ(base[e], overflow == OverflowMode::WRAP ? off[e] : off[e] - min_m[e])
            << "element " << e;
      if (overflow == OverflowMode::WRAP) {
        const auto modulus = int64_values(m.graph(), nm + "/modulus");
        ASSERT_EQ(modulus.size(), static_cast<size_t>(iq.size()));
        for (int64_t e = 0; e < iq.size(); ++e)
          EXPECT_EQ(modulus[e], int64_t{1} << std::max(iq.width(e), 0)) << "element " << e;
      } else {
        // The input types differ in width and sign: the mantissas are clamped per element.
        const auto low = int64_values(m.graph(), nm + "/low");
        const auto high = int64_values(m.graph(), nm + "/high");
        ASSERT_EQ(low.size(), static_cast<size_t>(iq.size()));
        ASSERT_EQ(high.size(), static_cast<size_t>(iq.size()));
        for (int64_t e = 0; e < iq.size(); ++e) {
          const int w = std::max(iq.width(e), 0);
          EXPECT_EQ(low[e], min_m[e]) << "element " << e;
          EXPECT_EQ(high[e], w == 0 ? 0 : (int64_t{1} << (iq.k[e] ? w - 1 : w)) - 1)
              << "element " << e;
        }
      }
      // Mantissa = Quant(x) * 2^f; pruned elements multiply by 0 (their single entry).
      const auto mult = float_values(m.graph(), nm + "/mantissa_scale");
      const auto scale = float_values(m.graph(), nm + "/input_quant/scale");
      ASSERT_EQ(mult.size(), static_cast<size_t>(iq.size()));
      ASSERT_EQ(scale.size(), static_cast<size_t>(iq.size()));
      for (int64_t e = 0; e < iq.size(); ++e) {
        const bool live = iq.width(e) > 0;
        EXPECT_EQ(mult[e], live ? std::ldexp(1.0f, iq.f[e]) : 0.0f) << "element " << e;
        if (live) {
          EXPECT_EQ(scale[e], std::ldexp(1.0f, -iq.f[e])) << "element " << e;
        }
      }
      const auto* q = quants.count(nm + "/input_quant") ? quants.at(nm + "/input_quant") : nullptr;
      ASSERT_NE(q, nullptr);
      EXPECT_EQ(attributes(*q).at("signed")->i(), 1);
      // Widest: 7 signed bits (SAT); WRAP rounds without saturating in W + 2 bits.
      EXPECT_EQ(scalar_value(m.graph(), q->input(3)), overflow == OverflowMode::WRAP ? 9.0f : 7.0f);
      const auto* oqn =
          quants.count(nm + "/output_quant") ? quants.at(nm + "/output_quant") : nullptr;
      ASSERT_NE(oqn, nullptr);
      EXPECT_EQ(oqn->input(0), gather->output(0));
    }
  }
}

TEST(QonnxExport, LutRefusalsNameTheLayer) {
  auto expect_refusal = [](const archive::Archive& a, const std::vector<std::string>& parts) {
    const std::string path = temp_path("refused_lut.onnx");
    fs::remove(path);
    try {
      exporters::export_qonnx(a, path);
      ADD_FAILURE() << "expected a refusal";
    } catch (const QonnxError& e) {
      const std::string msg = e.what();
      for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg;
    }
    EXPECT_FALSE(fs::exists(path));
  };
  // RND without rnd_as_offset_floor.
  expect_refusal(lut_mixed_types_archive(72, RoundingMode::RND, OverflowMode::SAT),
                 {"'tanh'", "lut", "input quantizer", "rounding RND"});
  // A table value float32 cannot hold: 2^25 + 1 at a 31-bit output type.
  auto a = graph_archive(hgqt::testing::GraphKind::Lut, 73);
  auto& l = a.layers[3];
  ASSERT_EQ(l.name, "sig");
  l.output_quantizer->k[2] = 1;
  l.output_quantizer->i[2] = 26;
  l.output_quantizer->f[2] = 4;
  hgqt::testing::fill_lut_table(l);
  archive::Layer probe = l;
  l.table[archive::lut_offsets(probe)[2]] = (int64_t{1} << 25) + 1;
  archive::validate(a, "test");
  expect_refusal(a, {"'sig'", "table entry 0 of element 2", "float32"});
}

/// Nodes of `m` by op type, in graph order.
static std::vector<const onnx::NodeProto*> nodes_of(const onnx::ModelProto& m,
                                                    const std::string& op) {
  std::vector<const onnx::NodeProto*> v;
  for (const auto& n : m.graph().node())
    if (n.op_type() == op) v.push_back(&n);
  return v;
}

TEST(QonnxExport, SoftmaxLayersBecomeReducesGathersAndAMul) {
  // Tables and offsets computed here from the definition (archive.h), not with softmax_types:
  // the exp table has one entry per mantissa u of Q_ei from the smallest, Q_eo(exp(min(u, 0)));
  // the reciprocal table one per mantissa s of Q_ii, Q_io(1 / max(s, 2^-30)).
  for (OverflowMode overflow : {OverflowMode::SAT, OverflowMode::WRAP}) {
    SCOPED_TRACE(quant::to_string(overflow));
    const auto a = softmax_modes_archive(95, RoundingMode::TRN, overflow);
    const std::string path = temp_path("softmax.onnx");
    const auto report = exporters::export_qonnx(a, path);
    EXPECT_EQ(report.widened_elements, 0);
    const auto m = parse(path);
    const auto quants = check_structure(m, report.nodes);
    auto ops = op_counts(m);
    EXPECT_EQ(ops["ReduceMax"], 2);
    EXPECT_EQ(ops["ReduceSum"], 2);
    EXPECT_EQ(ops["Gather"], 4);
    EXPECT_EQ(ops["Sub"], 2);
    for (const char* name : {"sm1", "sm2"}) {
      SCOPED_TRACE(name);
      const archive::Layer* l = nullptr;
      for (const auto& layer : a.layers)
        if (layer.name == name) l = &layer;
      ASSERT_NE(l, nullptr);
      const std::string nm = name;
      const auto rank = static_cast<int64_t>(l->input_shape.size());
      const auto* mx = find_node(m, nm + "/row_max");
      ASSERT_NE(mx, nullptr);
      EXPECT_EQ(mx->op_type(), "ReduceMax");
      const auto mxa = attributes(*mx);
      ASSERT_TRUE(mxa.count("axes"));
      EXPECT_EQ(std::vector<int64_t>(mxa.at("axes")->ints().begin(), mxa.at("axes")->ints().end()),
                std::vector<int64_t>{rank});
      EXPECT_EQ(mxa.at("keepdims")->i(), 1);
      const auto* diff = find_node(m, nm + "/diff");
      ASSERT_NE(diff, nullptr);
      EXPECT_EQ(diff->input(0), mx->input(0));
      EXPECT_EQ(diff->input(1), mx->output(0));
      const auto* sum = find_node(m, nm + "/row_sum");
      ASSERT_NE(sum, nullptr);
      EXPECT_EQ(sum->op_type(), "ReduceSum");
      EXPECT_EQ(int64_values(m.graph(), sum->input(1)), std::vector<int64_t>{rank});
      EXPECT_EQ(attributes(*sum).at("keepdims")->i(), 1);

      auto check_table = [&](const std::string& stage, const archive::QuantSpec& in_q,
                             const archive::QuantSpec& out_q, bool exp_table) {
        SCOPED_TRACE(stage);
        const int w = in_q.width(0);
        const int64_t entries = w <= 0 ? 1 : int64_t{1} << w;
        const int64_t min_m = w <= 0 || in_q.k[0] == 0 ? 0 : -(int64_t{1} << (w - 1));
        const auto* gather = find_node(m, nm + "/" + stage + "_gather");
        ASSERT_NE(gather, nullptr);
        EXPECT_EQ(attributes(*gather).at("axis")->i(), 0);
        const auto table = float_values(m.graph(), gather->input(0));
        ASSERT_EQ(static_cast<int64_t>(table.size()), entries);
        for (int64_t j = 0; j < entries; ++j) {
          const double v = std::ldexp(static_cast<double>(j + min_m), w <= 0 ? 0 : -in_q.f[0]);
          const double want = exp_table ? out_q.apply(std::exp(std::min(v, 0.0)), 0)
                                        : out_q.apply(1.0 / std::max(v, 0x1p-30), 0);
          EXPECT_EQ(table[j], want) << "entry " << j;
        }
        const auto* index = find_node(m, nm + "/" + stage + "_index");
        ASSERT_NE(index, nullptr);
        EXPECT_EQ(gather->input(1), index->output(0));
        for (int64_t off : int64_values(m.graph(), index->input(1)))
          EXPECT_EQ(off, overflow == OverflowMode::WRAP ? 0 : -min_m);
        const auto* q = quants.count(nm + "/" + stage + "_in/quant")
                            ? quants.at(nm + "/" + stage + "_in/quant")
                            : nullptr;
        ASSERT_NE(q, nullptr);
        EXPECT_EQ(q->input(1), nm + "/" + stage + "_in/quant/scale");
      };
      check_table("exp", *l->exp_input_quantizer, *l->exp_output_quantizer, true);
      check_table("inv", *l->inv_input_quantizer, *l->inv_output_quantizer, false);
      const auto* prod = find_node(m, nm + "/product");
      ASSERT_NE(prod, nullptr);
      EXPECT_EQ(prod->op_type(), "Mul");
      EXPECT_EQ(prod->input(0), find_node(m, nm + "/exp_gather")->output(0));
      EXPECT_EQ(prod->input(1), find_node(m, nm + "/inv_gather")->output(0));
      EXPECT_EQ(sum->input(0), prod->input(0));
    }
    // Inputs of two f and per-element outputs: through the integer mantissa and back.
    EXPECT_EQ(nodes_of(m, "Cast").size(), 2u * (2 + 2 + 2));
  }
  {
    // A softmax on a conv's channels: transposed to channels-last and back for the pool.
    const auto a = cnn2d_softmax_archive(96);
    const std::string path = temp_path("cnn2d_softmax.onnx");
    QonnxOptions o;
    o.rnd_as_offset_floor = true;
    const auto report = exporters::export_qonnx(a, path, o);
    const auto m = parse(path);
    check_structure(m, report.nodes);
    ASSERT_NE(find_node(m, "conv_a/to_channels_last"), nullptr);
    ASSERT_NE(find_node(m, "sm_mid/to_channels_first"), nullptr);
    const auto mxa = attributes(*find_node(m, "sm_mid/row_max"));
    EXPECT_EQ(mxa.at("axes")->ints(0), 3);  // [batch, H, W, C]: C
  }
}

TEST(QonnxExport, SoftmaxRefusalsNameTheLayer) {
  auto expect_refusal = [](const archive::Archive& a, const QonnxOptions& o,
                           const std::vector<std::string>& parts) {
    const std::string path = temp_path("refused_softmax.onnx");
    fs::remove(path);
    try {
      exporters::export_qonnx(a, path, o);
      ADD_FAILURE() << "expected a refusal";
    } catch (const QonnxError& e) {
      const std::string msg = e.what();
      for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg;
    }
    EXPECT_FALSE(fs::exists(path));
  };
  // RND in a stage quantizer without rnd_as_offset_floor.
  {
    auto a = softmax_modes_archive(97, RoundingMode::TRN, OverflowMode::SAT);
    a.layers[3].exp_input_quantizer->round = RoundingMode::RND;
    ASSERT_EQ(a.layers[3].name, "sm1");
    expect_refusal(a, {}, {"'sm1'", "(layers[3], softmax)", "exp input quantizer", "rounding RND"});
    QonnxOptions o;
    o.rnd_as_offset_floor = true;
    EXPECT_NO_THROW(exporters::export_qonnx(a, temp_path("softmax_rnd.onnx"), o));
  }
  // Differences x - max wider than float32: a 27-bit input type.
  {
    auto a = softmax_modes_archive(98, RoundingMode::TRN, OverflowMode::SAT);
    auto& l = a.layers[6];
    ASSERT_EQ(l.name, "sm2");
    l.input_quantizer =
        uniform_quantizer(l.input_shape, 1, 12, 14, RoundingMode::TRN, OverflowMode::SAT);
    archive::validate(a, "test");
    expect_refusal(a, {}, {"'sm2'", "softmax", "x - max", "float32"});
  }
  // A per-element input wider than the mantissas computed exactly: 20 bits, two f.
  {
    auto a = softmax_modes_archive(99, RoundingMode::TRN, OverflowMode::SAT);
    auto& l = a.layers[6];
    l.input_quantizer =
        uniform_quantizer(l.input_shape, 1, 5, 14, RoundingMode::TRN, OverflowMode::SAT);
    l.input_quantizer->f[1] = 13;
    archive::validate(a, "test");
    expect_refusal(a, {}, {"'sm2'", "input quantizer element 0", "width 20"});
  }
}
