// The model archive: validation, write -> read round trips, and the errors of damaged archives.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "hgqt/archive/archive.h"
#include "hgqt/data/dataset.h"
#include "hgqt/util/h5.h"

namespace hgqt::archive {
namespace {

namespace fs = std::filesystem;
using quant::OverflowMode;
using quant::RoundingMode;
using Json = nlohmann::ordered_json;

/// A quantizer of `shape` with the same (k, i, f) everywhere.
QuantSpec uniform_quant(std::vector<int64_t> shape, int k, int i, int f,
                        RoundingMode round = RoundingMode::RND,
                        OverflowMode overflow = OverflowMode::WRAP) {
  QuantSpec q;
  q.shape = std::move(shape);
  const int64_t n = shape_size(q.shape);
  q.k.assign(n, k);
  q.i.assign(n, i);
  q.f.assign(n, f);
  q.round = round;
  q.overflow = overflow;
  return q;
}

/// A constant with weight quantizer k=1, i=1, f=4 (mantissas in [-32, 31]) and mantissas
/// cycling through that range; element 1 is pruned (i = -3, f = 2: width 0, mantissa 0).
Constant make_constant(std::vector<int64_t> shape, int64_t seed) {
  Constant c;
  c.shape = shape;
  c.quantizer = uniform_quant(shape, 1, 1, 4, RoundingMode::RND, OverflowMode::SAT_SYM);
  const int64_t n = shape_size(shape);
  for (int64_t e = 0; e < n; ++e) {
    c.mantissa.push_back((e * 7 + seed) % 64 - 32);
    c.exponent.push_back(-4);
  }
  if (n > 1) {
    c.quantizer.i[1] = -3;
    c.quantizer.f[1] = 2;
    c.mantissa[1] = 0;
    c.exponent[1] = -2;
  }
  return c;
}

/// quantize [4] -> dense 4->3 relu (kernel, bias) -> activation relu -> dense 3->2 linear.
Archive small_archive() {
  Archive a;
  a.producer = "hgqt test";
  a.name = "small";
  a.input_shape = {4};
  a.output_shape = {2};
  a.loss = "mse";
  a.trace = TraceInfo{true, 1000, "train.h5", 1234.5, "epoch0007.pt", 7};
  a.feature_mean = {0.5f, -1.25f, 3.0f, 0.0f};
  a.feature_std = {1.0f, 2.0f, 0.25f, 7.5f};
  a.model_yaml = "layers:\n  - {type: dense, units: 3}\n# \"quoted\" \\ and unicode: \u00b5\n";

  Layer q;
  q.name = "input_q";
  q.kind = LayerKind::Quantize;
  q.input_shape = q.output_shape = {4};
  q.input_quantizer = uniform_quant({4}, 1, 2, 3);
  q.input_quantizer->f[2] = -1;  // per-element parameters
  q.input_quantizer->k[3] = 0;
  a.layers.push_back(q);

  Layer d1;
  d1.name = "dense_1";
  d1.kind = LayerKind::Dense;
  d1.input_shape = {4};
  d1.output_shape = {3};
  d1.activation = "relu";
  d1.kernel = make_constant({4, 3}, 3);
  d1.bias = make_constant({3}, 11);
  a.layers.push_back(d1);

  Layer act;
  act.name = "relu_1";
  act.kind = LayerKind::Activation;
  act.activation = "relu";
  act.input_shape = act.output_shape = {3};
  act.output_quantizer = uniform_quant({3}, 0, 3, 2, RoundingMode::RND_CONV, OverflowMode::SAT);
  a.layers.push_back(act);

  Layer d2;
  d2.name = "dense_2";
  d2.kind = LayerKind::Dense;
  d2.input_shape = {3};
  d2.output_shape = {2};
  d2.activation = "linear";
  d2.kernel = make_constant({3, 2}, 5);
  d2.output_quantizer = uniform_quant({2}, 1, 5, 6, RoundingMode::TRN, OverflowMode::WRAP);
  a.layers.push_back(d2);
  return a;
}

void expect_same(const QuantSpec& x, const QuantSpec& y, const std::string& what) {
  EXPECT_EQ(x.shape, y.shape) << what;
  EXPECT_EQ(x.k, y.k) << what;
  EXPECT_EQ(x.i, y.i) << what;
  EXPECT_EQ(x.f, y.f) << what;
  EXPECT_EQ(x.round, y.round) << what;
  EXPECT_EQ(x.overflow, y.overflow) << what;
}

void expect_same(const std::optional<QuantSpec>& x, const std::optional<QuantSpec>& y,
                 const std::string& what) {
  ASSERT_EQ(x.has_value(), y.has_value()) << what;
  if (x) expect_same(*x, *y, what);
}

void expect_same(const std::optional<Constant>& x, const std::optional<Constant>& y,
                 const std::string& what) {
  ASSERT_EQ(x.has_value(), y.has_value()) << what;
  if (!x) return;
  EXPECT_EQ(x->shape, y->shape) << what;
  EXPECT_EQ(x->mantissa, y->mantissa) << what;
  EXPECT_EQ(x->exponent, y->exponent) << what;
  expect_same(x->quantizer, y->quantizer, what + ".quantizer");
}

void expect_same(const Archive& x, const Archive& y) {
  EXPECT_EQ(x.format_version, y.format_version);
  EXPECT_EQ(x.producer, y.producer);
  EXPECT_EQ(x.name, y.name);
  EXPECT_EQ(x.input_shape, y.input_shape);
  EXPECT_EQ(x.output_shape, y.output_shape);
  EXPECT_EQ(x.loss, y.loss);
  EXPECT_EQ(x.trace.traced, y.trace.traced);
  EXPECT_EQ(x.trace.samples, y.trace.samples);
  EXPECT_EQ(x.trace.data, y.trace.data);
  EXPECT_EQ(x.trace.exact_ebops, y.trace.exact_ebops);
  EXPECT_EQ(x.trace.checkpoint, y.trace.checkpoint);
  EXPECT_EQ(x.trace.epoch, y.trace.epoch);
  EXPECT_EQ(x.feature_mean, y.feature_mean);
  EXPECT_EQ(x.feature_std, y.feature_std);
  EXPECT_EQ(x.model_yaml, y.model_yaml);
  ASSERT_EQ(x.layers.size(), y.layers.size());
  for (size_t n = 0; n < x.layers.size(); ++n) {
    const Layer& a = x.layers[n];
    const Layer& b = y.layers[n];
    const std::string what = "layers[" + std::to_string(n) + "]";
    EXPECT_EQ(a.name, b.name) << what;
    EXPECT_EQ(a.kind, b.kind) << what;
    EXPECT_EQ(a.input_shape, b.input_shape) << what;
    EXPECT_EQ(a.output_shape, b.output_shape) << what;
    EXPECT_EQ(a.activation, b.activation) << what;
    expect_same(a.input_quantizer, b.input_quantizer, what + ".input_quantizer");
    expect_same(a.kernel, b.kernel, what + ".kernel");
    expect_same(a.bias, b.bias, what + ".bias");
    expect_same(a.output_quantizer, b.output_quantizer, what + ".output_quantizer");
  }
}

/// The ArchiveError message of `f`; a test failure when it throws nothing or something else.
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ArchiveError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected ArchiveError, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected ArchiveError, nothing was thrown";
  return "";
}

void expect_mentions(const std::string& message, std::initializer_list<const char*> words) {
  for (const char* w : words)
    EXPECT_NE(message.find(w), std::string::npos) << "'" << w << "' missing in: " << message;
}

std::string read_text(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
}

/// Edits model.json through nlohmann.
void edit_json(const fs::path& dir, const std::function<void(Json&)>& edit) {
  Json j = Json::parse(read_text(dir / "model.json"));
  edit(j);
  write_text(dir / "model.json", j.dump(2));
}

/// Replaces data set `name` of `file` with `values` stored as `file_type`.
template <typename T>
void replace_dataset(const fs::path& file, const std::string& name, hid_t mem_type, hid_t file_type,
                     const std::vector<T>& values) {
  hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  ASSERT_GE(f, 0);
  ASSERT_GE(H5Ldelete(f, name.c_str(), H5P_DEFAULT), 0);
  const hsize_t dims[1] = {values.size()};
  hid_t space = H5Screate_simple(1, dims, nullptr);
  hid_t d = H5Dcreate2(f, name.c_str(), file_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(d, 0);
  ASSERT_GE(H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()), 0);
  H5Dclose(d);
  H5Sclose(space);
  H5Fclose(f);
}

class ArchiveIo : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("hgqt_archive_io_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
    dir_ = root_ / "model.hgqt";
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }
  /// Writes the small archive to dir_.
  void write_small() { write_archive(small_archive(), dir_.string()); }

  fs::path root_, dir_;
};

// Archives and data files share one HDF5 lock (util/h5.h): while another thread holds it, neither
// an archive read nor a data file read runs (each would otherwise be free to call HDF5 at once).
TEST_F(ArchiveIo, ArchiveAndDataFilesShareOneHdf5Lock) {
  const Archive a = small_archive();
  write_archive(a, dir_.string());
  const std::string data_file = (root_ / "data.h5").string();
  data::Array x;
  x.shape = {4, 2};
  x.values = {1, 2, 3, 4, 5, 6, 7, 8};
  data::write_h5_array(data_file, "x", x, /*truncate=*/true);
  using Clock = std::chrono::steady_clock;
  for (int kind = 0; kind < 2; ++kind) {
    std::atomic<bool> held{false};
    Clock::time_point released;
    std::thread holder([&] {
      util::h5::Lock lock;
      held = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      released = Clock::now();
    });
    while (!held) std::this_thread::yield();
    if (kind == 0)
      expect_same(a, read_archive(dir_.string()));
    else
      EXPECT_EQ(data::read_h5_array(data_file, "x").values, x.values);
    const Clock::time_point done = Clock::now();
    holder.join();
    EXPECT_GE(done, released) << (kind == 0 ? "the archive" : "the data file")
                              << " was read while another thread held the HDF5 lock";
  }
}

TEST_F(ArchiveIo, SmallArchiveIsValid) {
  const Archive a = small_archive();
  EXPECT_NO_THROW(validate(a));
  EXPECT_EQ(a.input_size(), 4);
  EXPECT_EQ(a.output_size(), 2);
  EXPECT_EQ(shape_size({}), 1);
  EXPECT_EQ(shape_size({3, 4, 5}), 60);
  const Constant& k = *a.layers[1].kernel;
  EXPECT_EQ(k.value(0), static_cast<double>(k.mantissa[0]) / 16.0);
  EXPECT_EQ(k.value(1), 0.0);  // pruned
}

TEST_F(ArchiveIo, RoundTrip) {
  const Archive a = small_archive();
  write_archive(a, dir_.string());
  ASSERT_TRUE(fs::exists(dir_ / "model.json"));
  ASSERT_TRUE(fs::exists(dir_ / "tensors.h5"));
  expect_same(a, read_archive(dir_.string()));
  expect_same(a, read_archive((dir_ / "model.json").string()));
  expect_same(a, read_archive(dir_.string() + "/"));

  // The documented layout of model.json.
  const Json j = Json::parse(read_text(dir_ / "model.json"));
  EXPECT_EQ(j["format"], "hgqt-archive");
  EXPECT_EQ(j["format_version"], 1);
  EXPECT_EQ(j["tensors"], "tensors.h5");
  EXPECT_EQ(j["preprocessing"]["feature_mean"], "/preprocessing/feature_mean");
  EXPECT_EQ(j["layers"][1]["kernel"]["mantissa"], "/layers/dense_1/kernel/mantissa");
  EXPECT_EQ(j["layers"][1]["kernel"]["quantizer"]["k"], "/layers/dense_1/kernel/quantizer/k");
  EXPECT_EQ(j["layers"][2]["output_quantizer"]["round"], "RND_CONV");
  EXPECT_FALSE(j["layers"][0].contains("activation"));  // keys a layer does not have are omitted
  EXPECT_FALSE(j["layers"][0].contains("kernel"));
  EXPECT_FALSE(j["layers"][3].contains("bias"));
  EXPECT_NE(read_text(dir_ / "model.json").find("\n  \"format_version\": 1,"), std::string::npos);

  // No preprocessing, a flatten layer and a kernel large enough to be compressed.
  Archive b;
  b.producer = "hgqt test";
  b.input_shape = {8, 16};
  b.output_shape = {200};
  Layer q;
  q.name = "q";
  q.kind = LayerKind::Quantize;
  q.input_shape = q.output_shape = {8, 16};
  q.input_quantizer = uniform_quant({8, 16}, 0, 1, 7);
  b.layers.push_back(q);
  Layer fl;
  fl.name = "flat";
  fl.kind = LayerKind::Flatten;
  fl.input_shape = {8, 16};
  fl.output_shape = {128};
  b.layers.push_back(fl);
  Layer d;
  d.name = "big";
  d.kind = LayerKind::Dense;
  d.input_shape = {128};
  d.output_shape = {200};
  d.kernel = make_constant({128, 200}, 1);
  b.layers.push_back(d);
  const fs::path bdir = root_ / "sub" / "dir" / "big.hgqt";  // parents are created
  write_archive(b, bdir.string());
  const Archive rb = read_archive(bdir.string());
  expect_same(b, rb);
  EXPECT_TRUE(Json::parse(read_text(bdir / "model.json"))["preprocessing"].is_null());
}

TEST_F(ArchiveIo, EmptyProducerGetsTheBuildVersion) {
  Archive a = small_archive();
  a.producer.clear();
  write_archive(a, dir_.string());
  EXPECT_EQ(read_archive(dir_.string()).producer, std::string("hgqt ") + HGQT_VERSION);
}

TEST_F(ArchiveIo, RewriteReplacesAnExistingArchive) {
  write_small();
  Archive a = small_archive();
  a.name = "second";
  a.layers[3].kernel->mantissa[0] = 31;
  a.feature_mean.clear();
  a.feature_std.clear();
  write_archive(a, dir_.string());
  expect_same(a, read_archive(dir_.string()));
  // Only the archive is left: no temporary or set-aside directories.
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(root_)) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"model.hgqt"});
}

TEST_F(ArchiveIo, FailedWriteLeavesThePreviousArchive) {
  write_small();
  Archive bad = small_archive();
  bad.name = "bad";
  bad.layers[1].kernel->mantissa[0] = 1000;  // out of range: validation fails before writing
  EXPECT_THROW(write_archive(bad, dir_.string()), ArchiveError);
  EXPECT_EQ(read_archive(dir_.string()).name, "small");
}

TEST_F(ArchiveIo, RefusesToReplaceSomethingElse) {
  fs::create_directories(dir_);
  write_text(dir_ / "notes.txt", "mine");
  const std::string msg = error_of([&] { write_small(); });
  expect_mentions(msg, {"model.hgqt", "not an hgqt archive", "not replacing"});
  EXPECT_EQ(read_text(dir_ / "notes.txt"), "mine");

  const fs::path file = root_ / "file.hgqt";
  write_text(file, "x");
  EXPECT_THROW(write_archive(small_archive(), file.string()), ArchiveError);
  EXPECT_EQ(read_text(file), "x");
}

TEST_F(ArchiveIo, MissingArchive) {
  EXPECT_THROW(read_archive((root_ / "nothing").string()), ArchiveError);
  expect_mentions(error_of([&] { read_archive((root_ / "nothing").string()); }),
                  {"nothing", "no such archive"});
}

TEST_F(ArchiveIo, MissingModelJson) {
  write_small();
  fs::remove(dir_ / "model.json");
  EXPECT_THROW(read_archive(dir_.string()), ArchiveError);
  expect_mentions(error_of([&] { read_archive(dir_.string()); }),
                  {"model.hgqt/model.json", "no such file"});
}

TEST_F(ArchiveIo, MissingTensors) {
  write_small();
  fs::remove(dir_ / "tensors.h5");
  EXPECT_THROW(read_archive(dir_.string()), ArchiveError);
  expect_mentions(error_of([&] { read_archive(dir_.string()); }),
                  {"model.hgqt/tensors.h5", "no such file"});
}

TEST_F(ArchiveIo, WrongFormatVersion) {
  write_small();
  edit_json(dir_, [](Json& j) { j["format_version"] = 7; });
  EXPECT_THROW(read_archive(dir_.string()), ArchiveError);
  expect_mentions(error_of([&] { read_archive(dir_.string()); }),
                  {"model.json", "format_version 7 is not supported by this build (reads 1)"});

  edit_json(dir_, [](Json& j) { j["format"] = "something-else"; });
  expect_mentions(error_of([&] { read_archive(dir_.string()); }),
                  {"model.json", "format", "something-else"});
}

TEST_F(ArchiveIo, MissingField) {
  write_small();
  edit_json(dir_, [](Json& j) { j["layers"][1]["kernel"].erase("mantissa"); });
  EXPECT_THROW(read_archive(dir_.string()), ArchiveError);
  expect_mentions(error_of([&] { read_archive(dir_.string()); }),
                  {"model.hgqt/model.json: layers[1].kernel: missing field 'mantissa'"});

  write_small();
  edit_json(dir_, [](Json& j) { j.erase("layers"); });
  expect_mentions(error_of([&] { read_archive(dir_.string()); }),
                  {"model.json", "missing field 'layers'"});
}

TEST_F(ArchiveIo, WrongJsonTypesAndSyntax) {
  write_small();
  edit_json(dir_, [](Json& j) { j["layers"][2]["input_shape"] = "3"; });
  expect_mentions(error_of([&] { read_archive(dir_.string()); }),
                  {"model.json", "layers[2].input_shape", "expected an array of integers"});

  write_small();
  edit_json(dir_, [](Json& j) { j["layers"][0]["input_quantizer"]["round"] = "ROUND_UP"; });
  expect_mentions(error_of([&] { read_archive(dir_.string()); }),
                  {"model.json", "layers[0].input_quantizer.round", "ROUND_UP"});

  write_small();
  edit_json(dir_, [](Json& j) { j["layers"][1]["scale_bits"] = 8; });  // a dense layer
  expect_mentions(error_of([&] { read_archive(dir_.string()); }),
                  {"model.json", "layers[1].scale_bits", "only avg pool layers have scale_bits"});

  write_small();
  edit_json(dir_, [](Json& j) { j["trace"]["samples"] = 1.5; });
  expect_mentions(error_of([&] { read_archive(dir_.string()); }),
                  {"model.json", "trace.samples", "expected an integer"});

  write_text(dir_ / "model.json", "{\"format\": \"hgqt-archive\", ");
  expect_mentions(error_of([&] { read_archive(dir_.string()); }), {"model.json", "not valid JSON"});
  write_text(dir_ / "model.json", "[1, 2]");
  expect_mentions(error_of([&] { read_archive(dir_.string()); }),
                  {"model.json", "expected an object"});
}

TEST(LayerKinds, NamesRoundTrip) {
  // The names model.json writes under "type", pinned: changing one breaks every archive.
  const std::pair<LayerKind, const char*> kinds[] = {
      {LayerKind::Quantize, "quantize"},
      {LayerKind::Flatten, "flatten"},
      {LayerKind::Reshape, "reshape"},
      {LayerKind::Dense, "dense"},
      {LayerKind::Conv1d, "conv1d"},
      {LayerKind::Conv2d, "conv2d"},
      {LayerKind::Scale, "scale"},
      {LayerKind::Pool, "pool"},
      {LayerKind::Add, "add"},
      {LayerKind::Concatenate, "concatenate"},
      {LayerKind::Activation, "activation"},
      {LayerKind::Lut, "lut"},
      {LayerKind::Softmax, "softmax"},
  };
  for (const auto& [kind, name] : kinds) {
    EXPECT_STREQ(kind_name(kind), name);
    const std::optional<LayerKind> parsed = parse_kind(name);
    ASSERT_TRUE(parsed.has_value()) << name;
    EXPECT_TRUE(*parsed == kind) << name;
    EXPECT_EQ(is_linear(kind), kind == LayerKind::Dense || kind == LayerKind::Conv1d ||
                                   kind == LayerKind::Conv2d || kind == LayerKind::Scale)
        << name;
  }
  EXPECT_FALSE(parse_kind("Dense").has_value());  // lower case only, as in model.json
  EXPECT_FALSE(parse_kind("bogus").has_value());
  EXPECT_FALSE(parse_kind("").has_value());
}

TEST_F(ArchiveIo, LayerTypesInModelJson) {
  write_small();
  const Json j = Json::parse(read_text(dir_ / "model.json"));
  std::vector<std::string> types;
  for (const Json& l : j["layers"]) types.push_back(l["type"].get<std::string>());
  EXPECT_EQ(types, (std::vector<std::string>{"quantize", "dense", "activation", "dense"}));
}

TEST_F(ArchiveIo, UnknownLayerType) {
  write_small();
  edit_json(dir_, [](Json& j) { j["layers"][2]["type"] = "conv"; });
  EXPECT_THROW(read_archive(dir_.string()), ArchiveError);
  expect_mentions(error_of([&] { read_archive(dir_.string()); }),
                  {"model.hgqt/model.json: layers[2].type: 'conv' (layer 'relu_1') is not one of "
                   "quantize, flatten, reshape, dense, conv1d, conv2d, scale, pool, add, "
                   "concatenate, activation, lut, softmax"});

  write_small();
  edit_json(dir_, [](Json& j) { j["layers"][1]["type"] = "Dense"; });
  expect_mentions(error_of([&] { read_archive(dir_.string()); }),
                  {"model.json: layers[1].type: 'Dense' (layer 'dense_1') is not one of"});

  write_small();
  edit_json(dir_, [](Json& j) { j["layers"][1]["type"] = 3; });
  expect_mentions(error_of([&] { read_archive(dir_.string()); }),
                  {"model.json: layers[1].type: expected a string"});
}

TEST_F(ArchiveIo, TruncatedTensors) {
  write_small();
  const fs::path h5 = dir_ / "tensors.h5";
  fs::resize_file(h5, fs::file_size(h5) / 2);
  EXPECT_THROW(read_archive(dir_.string()), ArchiveError);
  expect_mentions(error_of([&] { read_archive(dir_.string()); }),
                  {"model.hgqt/tensors.h5", "truncated"});

  write_text(h5, "this is not HDF5");
  expect_mentions(error_of([&] { read_archive(dir_.string()); }),
                  {"model.hgqt/tensors.h5", "not an HDF5 file"});
}

TEST_F(ArchiveIo, DatasetWithWrongCount) {
  write_small();
  replace_dataset<int64_t>(dir_ / "tensors.h5", "/layers/dense_1/bias/mantissa", H5T_NATIVE_INT64,
                           H5T_STD_I64LE, {1, 2});
  EXPECT_THROW(read_archive(dir_.string()), ArchiveError);
  expect_mentions(error_of([&] { read_archive(dir_.string()); }),
                  {"model.hgqt/tensors.h5", "'/layers/dense_1/bias/mantissa'",
                   "layers[1].bias.mantissa", "has 2 elements, expected 3"});
}

TEST_F(ArchiveIo, MissingDatasetAndWrongElementType) {
  write_small();
  {
    hid_t f = H5Fopen((dir_ / "tensors.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    H5Ldelete(f, "/layers/relu_1", H5P_DEFAULT);
    H5Fclose(f);
  }
  expect_mentions(error_of([&] { read_archive(dir_.string()); }),
                  {"model.hgqt/tensors.h5", "'/layers/relu_1/output_quantizer/k'",
                   "layers[2].output_quantizer.k", "no such data set"});

  write_small();
  replace_dataset<float>(dir_ / "tensors.h5", "/layers/dense_2/kernel/mantissa", H5T_NATIVE_FLOAT,
                         H5T_IEEE_F32LE, std::vector<float>(6, 1.0f));
  expect_mentions(error_of([&] { read_archive(dir_.string()); }),
                  {"tensors.h5", "layers[3].kernel.mantissa", "expected integers"});
}

TEST_F(ArchiveIo, AnyIntegerTypeIsRead) {
  write_small();
  // k stored as int8, exponent as int64: read through native int32.
  replace_dataset<int8_t>(dir_ / "tensors.h5", "/layers/input_q/input_quantizer/k", H5T_NATIVE_INT8,
                          H5T_STD_I8LE, {1, 1, 1, 0});
  replace_dataset<int64_t>(dir_ / "tensors.h5", "/layers/dense_2/kernel/exponent", H5T_NATIVE_INT64,
                           H5T_STD_I64LE, {-4, -2, -4, -4, -4, -4});
  expect_same(small_archive(), read_archive(dir_.string()));
}

TEST_F(ArchiveIo, MantissaOutOfRange) {
  Archive a = small_archive();
  a.layers[1].kernel->mantissa[5] = 32;  // k=1, i=1, f=4: [-32, 31]
  EXPECT_THROW(validate(a, "model.hgqt"), ArchiveError);
  expect_mentions(
      error_of([&] { validate(a, "model.hgqt"); }),
      {"model.hgqt: layers[1] 'dense_1': kernel.mantissa[5] (index [1, 2]) is 32", "[-32, 31]"});
  EXPECT_THROW(write_archive(a, dir_.string()), ArchiveError);
  EXPECT_FALSE(fs::exists(dir_));

  // The same in a file: the reader validates.
  write_small();
  std::vector<int64_t> m = small_archive().layers[1].bias->mantissa;
  m[2] = -33;
  replace_dataset<int64_t>(dir_ / "tensors.h5", "/layers/dense_1/bias/mantissa", H5T_NATIVE_INT64,
                           H5T_STD_I64LE, m);
  EXPECT_THROW(read_archive(dir_.string()), ArchiveError);
  expect_mentions(error_of([&] { read_archive(dir_.string()); }),
                  {"model.hgqt/model.json: layers[1] 'dense_1': bias.mantissa[2] is -33"});

  // A pruned element must be 0.
  Archive p = small_archive();
  p.layers[1].kernel->mantissa[1] = 1;
  expect_mentions(error_of([&] { validate(p); }), {"kernel.mantissa[1]", "prunes"});
  // The exponent is -f.
  Archive x = small_archive();
  x.layers[3].kernel->exponent[0] = 0;
  expect_mentions(error_of([&] { validate(x); }),
                  {"layers[3] 'dense_2': kernel.exponent[0]", "expected -4"});
}

TEST_F(ArchiveIo, ShapeChainMismatch) {
  Archive a = small_archive();
  a.layers[3].input_shape = {4};
  a.layers[3].kernel = make_constant({4, 2}, 1);
  EXPECT_THROW(validate(a, "model.hgqt"), ArchiveError);
  expect_mentions(
      error_of([&] { validate(a, "model.hgqt"); }),
      {"model.hgqt: layers[3] 'dense_2': input_shape is [4], expected [3]", "layers[2] 'relu_1'"});

  write_small();
  edit_json(dir_, [](Json& j) { j["output_shape"] = Json::array({3}); });
  EXPECT_THROW(read_archive(dir_.string()), ArchiveError);
  expect_mentions(error_of([&] { read_archive(dir_.string()); }),
                  {"model.hgqt/model.json", "output_shape is [3]", "layers[3] 'dense_2'"});

  Archive k = small_archive();
  k.layers[1].kernel = make_constant({3, 4}, 1);
  expect_mentions(error_of([&] { validate(k); }),
                  {"layers[1] 'dense_1': kernel.shape is [3, 4], expected [4, 3]"});
}

TEST_F(ArchiveIo, ValidationRules) {
  auto check = [](const std::function<void(Archive&)>& edit,
                  std::initializer_list<const char*> words) {
    Archive a = small_archive();
    edit(a);
    expect_mentions(error_of([&] { validate(a, "where"); }), words);
  };
  check([](Archive& a) { a.format_version = 2; }, {"where: format_version 2 is not supported"});
  check([](Archive& a) { a.layers.clear(); }, {"where: layers is empty"});
  check([](Archive& a) { a.layers[2].name = "dense_1"; },
        {"layers[2] 'dense_1': name is also used by layers[1]"});
  check([](Archive& a) { a.layers[2].name = ""; }, {"layers[2]: name is empty"});
  check([](Archive& a) { a.layers[2].name = "a/b"; }, {"layers[2] 'a/b'", "'/'"});
  check([](Archive& a) { a.layers[2].activation = "tanh"; }, {"activation 'tanh'"});
  check([](Archive& a) { a.layers[0].activation = "relu"; }, {"layers[0]", "activation 'relu'"});
  check([](Archive& a) { a.layers[0].input_quantizer.reset(); },
        {"layers[0] 'input_q': a quantize layer needs an input_quantizer"});
  check([](Archive& a) { a.layers[2].output_quantizer.reset(); },
        {"layers[2] 'relu_1': an activation layer needs an output_quantizer"});
  check([](Archive& a) { a.layers[1].kernel.reset(); }, {"a dense layer needs a kernel"});
  check([](Archive& a) { a.layers[0].kernel = make_constant({4}, 0); },
        {"a quantize layer has no kernel"});
  check([](Archive& a) { a.layers[0].input_quantizer->round = RoundingMode::S_RND; },
        {"layers[0] 'input_q': input_quantizer.round is S_RND"});
  check([](Archive& a) { a.layers[0].input_quantizer->k[1] = 2; },
        {"input_quantizer.k[1] is 2, expected 0 or 1"});
  check([](Archive& a) { a.layers[0].input_quantizer->i[0] = 65; }, {"input_quantizer.i[0] is 65"});
  check([](Archive& a) { a.layers[0].input_quantizer->i[0] = 60; },
        {"input_quantizer[0]: width k + i + f = 64 exceeds 62 bits"});
  check([](Archive& a) { a.layers[0].input_quantizer->f.pop_back(); },
        {"input_quantizer.f has 3 elements, expected 4"});
  check([](Archive& a) { a.layers[3].output_quantizer = uniform_quant({3}, 1, 1, 1); },
        {"layers[3] 'dense_2': output_quantizer.shape is [3], expected [2]"});
  check([](Archive& a) { a.layers[1].kernel->mantissa.resize(100); },
        {"layers[1] 'dense_1': kernel.mantissa has 100 elements, expected 12 (shape [4, 3])"});
  check([](Archive& a) { a.layers[1].kernel->quantizer.shape = {12}; },
        {"kernel.quantizer.shape is [12], expected [4, 3]"});
  check([](Archive& a) { a.feature_std[2] = 0.0f; }, {"where: preprocessing.feature_std[2]"});
  check([](Archive& a) { a.loss = "hinge"; }, {"where: loss 'hinge'"});
  check([](Archive& a) { a.trace.samples = -1; }, {"where: trace.samples"});
  check([](Archive& a) { a.feature_std.clear(); }, {"preprocessing.feature_std has 0 elements"});

  // Flatten: output [prod(input)].
  Archive f;
  f.input_shape = {2, 3};
  f.output_shape = {5};
  Layer q;
  q.name = "q";
  q.kind = LayerKind::Quantize;
  q.input_shape = q.output_shape = {2, 3};
  q.input_quantizer = uniform_quant({2, 3}, 1, 1, 1);
  f.layers.push_back(q);
  Layer fl;
  fl.name = "flat";
  fl.kind = LayerKind::Flatten;
  fl.input_shape = {2, 3};
  fl.output_shape = {5};
  f.layers.push_back(fl);
  expect_mentions(error_of([&] { validate(f); }),
                  {"layers[1] 'flat': output_shape is [5], expected [6]"});
}

}  // namespace
}  // namespace hgqt::archive
