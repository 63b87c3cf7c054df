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
#include <set>
#include <sstream>

#include "hgqt/archive/emulator.h"
#include "hgqt/export/qonnx.h"
#include "support/random_archive.h"

using namespace hgqt;
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
    if (l.type == "flatten") n += l.input_shape.size() > 1 ? 1 : 0;
    if (l.type == "quantize") n += quant(*l.input_quantizer);
    if (l.type == "activation") n += (l.activation == "relu" ? 1 : 0) + quant(*l.output_quantizer);
    if (l.type != "dense") continue;
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
    const float scale = scalar_value(g, n.input(1));
    int exp = 0;
    EXPECT_EQ(std::frexp(scale, &exp), 0.5f)
        << n.name() << " scale " << scale << " is not a power of two";
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
    flat.type = "flatten";
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
    Case c{"widened_" + std::to_string(seed), hgqt::testing::random_mlp_archive(ro), {}, archive::Archive(), 0};
    c.options.allow_widening = true;
    c.options.rnd_as_offset_floor = true;
    c.reference = c.a;
    c.widened = widen(c.reference);
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
    check_structure(parse(model), expected_nodes(c.a, c.options.rnd_as_offset_floor));
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
    write_rows((dir / (c.name + "_x.txt")).string(), x, in);
    write_rows((dir / (c.name + "_y.txt")).string(), y, emu.output_size());
    std::ofstream meta(dir / (c.name + ".meta"));
    meta << "widened_elements " << report.widened_elements << "\n"
         << "nodes " << report.nodes << "\n"
         << "quant_nodes " << report.quant_nodes << "\n";
    cases << c.name << "\n";
  }
}
