// Tests of the YAML run configuration: parsing, defaults, errors, overrides, round trip, beta.
#include "hgqt/config/config.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <string>

#ifndef HGQT_SOURCE_DIR
#error "HGQT_SOURCE_DIR must be defined (the repository root)"
#endif

using hgqt::config::beta_at;
using hgqt::config::BetaSchedule;
using hgqt::config::ConfigError;
using hgqt::config::DataSpec;
using hgqt::config::LayerSpec;
using hgqt::config::load_run_config;
using hgqt::config::ModelSpec;
using hgqt::config::parse_model_yaml;
using hgqt::config::parse_run_config;
using hgqt::config::QuantizerSpec;
using hgqt::config::RunConfig;
using hgqt::config::SplitSource;
using hgqt::config::TrainSpec;

namespace {

#define EXPECT_HAS(message, part)                    \
  EXPECT_NE((message).find(part), std::string::npos) \
      << "message: " << (message) << "\nexpected to contain: " << (part)

// The full example of the config layout; line numbers matter for the error tests.
const char* const kFullConfig = R"(name: fashion_mnist_mlp
model:
  input_shape: [28, 28]
  quantizer_defaults:
    weight: {b: 8, i: 2}
  layers:
    - {type: flatten}
    - {type: dense, units: 64, activation: relu}
    - {type: dense, units: 10, kernel_quantizer: {b: 6}, input_quantizer: {f: 4}, output_quantizer: {}}
    - {type: activation, activation: relu, output_quantizer: {i: 3, f: 3}}
    - {type: quantize, input_quantizer: {k: 1}}
    - {type: dense, units: 5, use_bias: false, name: out}
data:
  format: hdf5
  train: {file: ../data/fashion_mnist.h5, features: x_train, labels: y_train}
  validation: {file: ../data/val.h5, features: x_val, labels: y_val}
  test: {file: /abs/test.h5, features: x_test, labels: y_test}
  validation_split: 0.15
  test_split: 0.05
  standardize: true
  split_seed: 7
  feature_names: [a, b]
train:
  epochs: 12
  batch_size: 128
  optimizer: sgd
  lr: 0.003
  momentum: 0.8
  weight_decay: 1.0e-4
  lr_schedule: constant
  min_lr: 1.0e-5
  seed: 3
  loss: mse
  beta: 1.0e-6
  gamma: 2.0e-6
  threads: 4
  device: cpu
)";

// A minimal valid config; `extra_train` lines are appended under `train:`.
std::string minimal(const std::string& extra_train = "") {
  return "model:\n"
         "  input_shape: [4]\n"
         "  layers:\n"
         "    - {type: dense, units: 3}\n"
         "data:\n"
         "  train: {file: d.h5, features: x, labels: y}\n"
         "train:\n"
         "  epochs: 2\n" +
         extra_train;
}

// The ConfigError text of `fn`, or "" when it does not throw one.
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

std::string parse_error(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return error_of([&] { parse_run_config(text, "configs/x.yaml", overrides); });
}

void expect_same(const QuantizerSpec& a, const QuantizerSpec& b, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_EQ(a.param, b.param);
  EXPECT_EQ(a.k, b.k);
  EXPECT_EQ(a.b, b.b);
  EXPECT_EQ(a.i, b.i);
  EXPECT_EQ(a.f, b.f);
  EXPECT_EQ(a.round, b.round);
  EXPECT_EQ(a.overflow, b.overflow);
  EXPECT_EQ(a.granularity, b.granularity);
  EXPECT_EQ(a.i_decay, b.i_decay);
  EXPECT_EQ(a.trainable, b.trainable);
}

void expect_same(const std::map<std::string, QuantizerSpec>& a,
                 const std::map<std::string, QuantizerSpec>& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (const auto& [key, spec] : a) {
    ASSERT_EQ(b.count(key), 1u) << what << ": " << key;
    expect_same(spec, b.at(key), what + "." + key);
  }
}

// Field by field; `line` is a position in a particular text, so it is not compared.
void expect_same(const ModelSpec& a, const ModelSpec& b) {
  EXPECT_EQ(a.input_shape, b.input_shape);
  expect_same(a.defaults, b.defaults, "defaults");
  ASSERT_EQ(a.layers.size(), b.layers.size());
  for (std::size_t n = 0; n < a.layers.size(); ++n) {
    const LayerSpec& x = a.layers[n];
    const LayerSpec& y = b.layers[n];
    SCOPED_TRACE("layer " + std::to_string(n));
    EXPECT_EQ(x.type, y.type);
    EXPECT_EQ(x.name, y.name);
    EXPECT_EQ(x.units, y.units);
    EXPECT_EQ(x.activation, y.activation);
    EXPECT_EQ(x.use_bias, y.use_bias);
    expect_same(x.quantizers, y.quantizers, "quantizers");
  }
}

void expect_same(const SplitSource& a, const SplitSource& b) {
  EXPECT_EQ(a.file, b.file);
  EXPECT_EQ(a.features, b.features);
  EXPECT_EQ(a.labels, b.labels);
}

void expect_same(const BetaSchedule& a, const BetaSchedule& b) {
  EXPECT_EQ(a.kind, b.kind);
  EXPECT_EQ(a.value, b.value);
  ASSERT_EQ(a.points.size(), b.points.size());
  for (std::size_t n = 0; n < a.points.size(); ++n) {
    EXPECT_EQ(a.points[n].epoch, b.points[n].epoch);
    EXPECT_EQ(a.points[n].value, b.points[n].value);
  }
}

void expect_same(const RunConfig& a, const RunConfig& b) {
  EXPECT_EQ(a.name, b.name);
  expect_same(a.model, b.model);
  const DataSpec& x = a.data;
  const DataSpec& y = b.data;
  EXPECT_EQ(x.format, y.format);
  expect_same(x.train, y.train);
  expect_same(x.validation, y.validation);
  expect_same(x.test, y.test);
  EXPECT_EQ(x.validation_split, y.validation_split);
  EXPECT_EQ(x.test_split, y.test_split);
  EXPECT_EQ(x.standardize, y.standardize);
  EXPECT_EQ(x.split_seed, y.split_seed);
  EXPECT_EQ(x.feature_names, y.feature_names);
  const TrainSpec& s = a.train;
  const TrainSpec& t = b.train;
  EXPECT_EQ(s.epochs, t.epochs);
  EXPECT_EQ(s.batch_size, t.batch_size);
  EXPECT_EQ(s.optimizer, t.optimizer);
  EXPECT_EQ(s.lr, t.lr);
  EXPECT_EQ(s.momentum, t.momentum);
  EXPECT_EQ(s.weight_decay, t.weight_decay);
  EXPECT_EQ(s.lr_schedule, t.lr_schedule);
  EXPECT_EQ(s.min_lr, t.min_lr);
  EXPECT_EQ(s.lr_step_epochs, t.lr_step_epochs);
  EXPECT_EQ(s.lr_gamma, t.lr_gamma);
  EXPECT_EQ(s.lr_restart_epochs, t.lr_restart_epochs);
  EXPECT_EQ(s.lr_restart_mult, t.lr_restart_mult);
  EXPECT_EQ(s.early_stopping.enabled, t.early_stopping.enabled);
  EXPECT_EQ(s.early_stopping.patience, t.early_stopping.patience);
  EXPECT_EQ(s.early_stopping.min_delta, t.early_stopping.min_delta);
  EXPECT_EQ(s.early_stopping.monitor, t.early_stopping.monitor);
  EXPECT_EQ(s.early_stopping.ebops_below, t.early_stopping.ebops_below);
  EXPECT_EQ(s.seed, t.seed);
  EXPECT_EQ(s.loss, t.loss);
  expect_same(s.beta, t.beta);
  EXPECT_EQ(s.gamma, t.gamma);
  EXPECT_EQ(s.threads, t.threads);
  EXPECT_EQ(s.device, t.device);
}

}  // namespace

// ---- Parsing.

TEST(Config, ParsesFullConfig) {
  const RunConfig c = parse_run_config(kFullConfig, "full.yaml");
  EXPECT_EQ(c.name, "fashion_mnist_mlp");
  EXPECT_EQ(c.source_path, "");
  EXPECT_EQ(c.model.input_shape, (std::vector<int64_t>{28, 28}));
  ASSERT_EQ(c.model.defaults.size(), 1u);
  EXPECT_EQ(c.model.defaults.at("weight").b, 8.0);
  EXPECT_EQ(c.model.defaults.at("weight").i, 2.0);
  EXPECT_FALSE(c.model.defaults.at("weight").f.has_value());

  ASSERT_EQ(c.model.layers.size(), 6u);
  const auto& L = c.model.layers;
  EXPECT_EQ(L[0].type, "flatten");
  EXPECT_EQ(L[0].name, "flatten_0");
  EXPECT_EQ(L[0].line, 7);
  EXPECT_TRUE(L[0].quantizers.empty());
  EXPECT_EQ(L[1].type, "dense");
  EXPECT_EQ(L[1].units, 64);
  EXPECT_EQ(L[1].activation, "relu");
  EXPECT_TRUE(L[1].use_bias);
  EXPECT_EQ(L[1].line, 8);
  EXPECT_EQ(L[2].units, 10);
  EXPECT_EQ(L[2].activation, "linear");
  ASSERT_EQ(L[2].quantizers.size(), 3u);
  EXPECT_EQ(L[2].quantizers.at("kernel").b, 6.0);
  EXPECT_EQ(L[2].quantizers.at("input").f, 4.0);
  EXPECT_FALSE(L[2].quantizers.at("output").b.has_value());
  EXPECT_EQ(L[2].quantizers.count("bias"), 0u);
  EXPECT_EQ(L[3].type, "activation");
  EXPECT_EQ(L[3].activation, "relu");
  EXPECT_EQ(L[3].quantizers.at("output").i, 3.0);
  EXPECT_EQ(L[3].quantizers.at("output").f, 3.0);
  EXPECT_EQ(L[4].type, "quantize");
  EXPECT_EQ(L[4].quantizers.at("input").k, 1);
  EXPECT_EQ(L[5].name, "out");
  EXPECT_FALSE(L[5].use_bias);
  EXPECT_EQ(L[5].line, 12);

  EXPECT_EQ(c.data.format, "hdf5");
  EXPECT_EQ(c.data.train.file, "../data/fashion_mnist.h5");  // kept verbatim
  EXPECT_EQ(c.data.train.features, "x_train");
  EXPECT_EQ(c.data.train.labels, "y_train");
  EXPECT_EQ(c.data.validation.file, "../data/val.h5");
  EXPECT_EQ(c.data.test.file, "/abs/test.h5");
  EXPECT_EQ(c.data.test.labels, "y_test");
  EXPECT_DOUBLE_EQ(c.data.validation_split, 0.15);
  EXPECT_DOUBLE_EQ(c.data.test_split, 0.05);
  EXPECT_TRUE(c.data.standardize);
  EXPECT_EQ(c.data.split_seed, 7u);
  EXPECT_EQ(c.data.feature_names, (std::vector<std::string>{"a", "b"}));

  EXPECT_EQ(c.train.epochs, 12);
  EXPECT_EQ(c.train.batch_size, 128);
  EXPECT_EQ(c.train.optimizer, "sgd");
  EXPECT_DOUBLE_EQ(c.train.lr, 0.003);
  EXPECT_DOUBLE_EQ(c.train.momentum, 0.8);
  EXPECT_DOUBLE_EQ(c.train.weight_decay, 1e-4);
  EXPECT_EQ(c.train.lr_schedule, "constant");
  EXPECT_DOUBLE_EQ(c.train.min_lr, 1e-5);
  EXPECT_EQ(c.train.seed, 3u);
  EXPECT_EQ(c.train.loss, "mse");
  EXPECT_EQ(c.train.beta.kind, "constant");
  EXPECT_DOUBLE_EQ(c.train.beta.value, 1e-6);
  EXPECT_DOUBLE_EQ(c.train.gamma, 2e-6);
  EXPECT_EQ(c.train.threads, 4);
  EXPECT_EQ(c.train.device, "cpu");
}

TEST(Config, AppliesDefaults) {
  const RunConfig c = parse_run_config(minimal(), "min.yaml");
  const TrainSpec t;
  const DataSpec d;
  EXPECT_EQ(c.name, "run");
  EXPECT_TRUE(c.model.defaults.empty());
  ASSERT_EQ(c.model.layers.size(), 1u);
  EXPECT_EQ(c.model.layers[0].name, "dense_0");
  EXPECT_EQ(c.model.layers[0].activation, "linear");
  EXPECT_TRUE(c.model.layers[0].use_bias);
  EXPECT_EQ(c.data.format, "hdf5");
  EXPECT_FALSE(c.data.validation.present());
  EXPECT_FALSE(c.data.test.present());
  EXPECT_EQ(c.data.validation_split, d.validation_split);
  EXPECT_EQ(c.data.test_split, 0.0);
  EXPECT_FALSE(c.data.standardize);
  EXPECT_EQ(c.data.split_seed, 42u);
  EXPECT_TRUE(c.data.feature_names.empty());
  EXPECT_EQ(c.train.epochs, 2);
  EXPECT_EQ(c.train.batch_size, t.batch_size);
  EXPECT_EQ(c.train.optimizer, "adam");
  EXPECT_EQ(c.train.lr, t.lr);
  EXPECT_EQ(c.train.momentum, t.momentum);
  EXPECT_EQ(c.train.lr_schedule, "cosine");
  EXPECT_EQ(c.train.loss, "cross_entropy");
  EXPECT_EQ(c.train.beta.kind, "constant");
  EXPECT_EQ(c.train.beta.value, 0.0);
  EXPECT_EQ(c.train.gamma, 0.0);
  EXPECT_EQ(c.train.threads, 0);
  EXPECT_EQ(c.train.device, "auto");

  // The whole train section is optional.
  const RunConfig no_train = parse_run_config(
      "model: {input_shape: [2], layers: [{type: dense, units: 1}]}\n"
      "data: {format: jet_csv, train: {file: jets.csv}}\n",
      "x.yaml");
  EXPECT_EQ(no_train.train.epochs, t.epochs);
  EXPECT_EQ(no_train.data.format, "jet_csv");
  EXPECT_EQ(no_train.data.train.features, "");
}

TEST(Config, ParsesBetaForms) {
  RunConfig c = parse_run_config(minimal("  beta: {kind: constant, value: 3.0e-6}\n"), "x.yaml");
  EXPECT_EQ(c.train.beta.kind, "constant");
  EXPECT_DOUBLE_EQ(c.train.beta.value, 3e-6);
  c = parse_run_config(minimal("  beta: {kind: linear, points: [[0, 1.0e-7], [10, 1.0e-5]]}\n"),
                       "x.yaml");
  EXPECT_EQ(c.train.beta.kind, "linear");
  ASSERT_EQ(c.train.beta.points.size(), 2u);
  EXPECT_EQ(c.train.beta.points[1].epoch, 10.0);
  EXPECT_DOUBLE_EQ(c.train.beta.points[1].value, 1e-5);
  c = parse_run_config(minimal("  beta: {kind: log, points: [[0, 1.0e-7]]}\n"), "x.yaml");
  EXPECT_EQ(c.train.beta.kind, "log");
  ASSERT_EQ(c.train.beta.points.size(), 1u);
}

TEST(Config, ParsesAllQuantizerFields) {
  const RunConfig c = parse_run_config(
      "model:\n"
      "  input_shape: [4]\n"
      "  quantizer_defaults:\n"
      "    datalane: {param: kif, k: 0, i: -1, f: 5.5, round: RND_CONV, overflow: SAT_SYM,\n"
      "               granularity: element, i_decay: 0.01, trainable: false}\n"
      "    bias: {param: kbi, b: 12, granularity: tensor, overflow: WRAP, round: S_RND}\n"
      "  layers: [{type: dense, units: 3}]\n"
      "data: {train: {file: d.h5, features: x, labels: y}}\n",
      "q.yaml");
  const QuantizerSpec& q = c.model.defaults.at("datalane");
  EXPECT_EQ(q.param, "kif");
  EXPECT_EQ(q.k, 0);
  EXPECT_EQ(q.i, -1.0);
  EXPECT_EQ(q.f, 5.5);
  EXPECT_EQ(q.round, "RND_CONV");
  EXPECT_EQ(q.overflow, "SAT_SYM");
  EXPECT_EQ(q.granularity, "element");
  EXPECT_DOUBLE_EQ(*q.i_decay, 0.01);
  EXPECT_EQ(q.trainable, false);
  EXPECT_FALSE(q.b.has_value());
  const QuantizerSpec& b = c.model.defaults.at("bias");
  EXPECT_EQ(b.param, "kbi");
  EXPECT_EQ(b.b, 12.0);
  EXPECT_EQ(b.round, "S_RND");
}

TEST(Config, LoadsFileAndKeepsSourcePath) {
  const std::string path = ::testing::TempDir() + "hgqt_config_test_load.yaml";
  {
    std::ofstream out(path);
    out << minimal();
  }
  const RunConfig c = load_run_config(path, {"train.epochs=5"});
  EXPECT_EQ(c.source_path, path);
  EXPECT_EQ(c.train.epochs, 5);
  EXPECT_EQ(c.data.train.file, "d.h5");
  std::remove(path.c_str());
}

TEST(Config, ExampleConfigsParse) {
  const std::string root = HGQT_SOURCE_DIR;
  const RunConfig fm = load_run_config(root + "/configs/fashion_mnist_mlp.yaml");
  EXPECT_EQ(fm.model.input_shape, (std::vector<int64_t>{28, 28}));
  ASSERT_EQ(fm.model.layers.size(), 4u);
  EXPECT_EQ(fm.model.layers[0].type, "flatten");
  EXPECT_EQ(fm.model.layers[1].units, 64);
  EXPECT_EQ(fm.model.layers[2].units, 32);
  EXPECT_EQ(fm.model.layers[3].units, 10);
  EXPECT_EQ(fm.model.layers[3].activation, "linear");
  EXPECT_EQ(fm.data.format, "hdf5");
  EXPECT_EQ(fm.data.train.file, "../data/fashion_mnist.h5");
  EXPECT_EQ(fm.data.test.features, "x_test");
  EXPECT_EQ(fm.train.beta.kind, "log");

  const RunConfig jet = load_run_config(root + "/configs/jet_tagger.yaml");
  EXPECT_EQ(jet.model.input_shape, (std::vector<int64_t>{16}));
  ASSERT_EQ(jet.model.layers.size(), 4u);
  EXPECT_EQ(jet.model.layers[0].units, 64);
  EXPECT_EQ(jet.model.layers[3].units, 5);
  EXPECT_EQ(jet.data.format, "jet_hdf5");
  EXPECT_DOUBLE_EQ(jet.data.test_split, 0.2);
  EXPECT_TRUE(jet.data.standardize);
  EXPECT_EQ(jet.train.batch_size, 33200);
  EXPECT_EQ(jet.train.epochs, 300);
  ASSERT_EQ(jet.train.beta.points.size(), 3u);
  EXPECT_DOUBLE_EQ(jet.train.beta.points[2].value, 2e-3);
  EXPECT_DOUBLE_EQ(jet.train.gamma, 2e-6);
}

// ---- Errors.

TEST(Config, ErrorUnknownTopLevelKey) {
  const std::string msg = parse_error(minimal() + "trian: {}\n");
  EXPECT_HAS(msg, "configs/x.yaml:9:1: trian: unknown key");
  EXPECT_HAS(msg, "did you mean 'train'?");
}

TEST(Config, ErrorUnknownKeyInLayer) {
  const std::string msg = parse_error(
      "model:\n"
      "  input_shape: [4]\n"
      "  layers:\n"
      "    - {type: dense, units: 3}\n"
      "    - {type: dense, unit: 3}\n"
      "data: {train: {file: d.h5, features: x, labels: y}}\n");
  EXPECT_HAS(msg, "configs/x.yaml:5:21: model.layers[1].unit: unknown key");
  EXPECT_HAS(msg, "did you mean 'units'?");
}

TEST(Config, ErrorUnknownKeyInQuantizer) {
  const std::string msg = parse_error(
      "model:\n"
      "  input_shape: [4]\n"
      "  layers:\n"
      "    - type: dense\n"
      "      units: 3\n"
      "      kernel_quantizer: {b: 4, rounding: RND}\n"
      "data: {train: {file: d.h5, features: x, labels: y}}\n");
  EXPECT_HAS(msg, "configs/x.yaml:6:32: model.layers[0].kernel_quantizer.rounding: unknown key");
  EXPECT_HAS(msg, "did you mean 'round'?");
}

TEST(Config, ErrorQuantizerNotAllowedForLayerType) {
  const std::string msg = parse_error(
      "model:\n"
      "  input_shape: [4]\n"
      "  layers:\n"
      "    - {type: dense, units: 3}\n"
      "    - {type: activation, activation: relu, kernel_quantizer: {b: 3}}\n"
      "data: {train: {file: d.h5, features: x, labels: y}}\n");
  EXPECT_HAS(msg, "configs/x.yaml:5:44: model.layers[1].kernel_quantizer: not allowed");
  EXPECT_HAS(msg, "output_quantizer");
  EXPECT_HAS(parse_error("model: {input_shape: [4], layers: [{type: flatten, units: 3}]}\n"
                         "data: {train: {file: d.h5, features: x, labels: y}}\n"),
             "model.layers[0].units: not allowed for a 'flatten' layer");
}

TEST(Config, ErrorWrongTypeNamesLine) {
  std::string text = kFullConfig;
  text.replace(text.find("units: 10"), 9, "units: abc");
  EXPECT_EQ(parse_error(text),
            "configs/x.yaml:9:28: model.layers[2].units: expected a positive integer, got 'abc'");
  EXPECT_HAS(parse_error(minimal("  batch_size: [1, 2]\n")),
             "configs/x.yaml:9:15: train.batch_size: expected a positive integer, got a list");
  EXPECT_HAS(parse_error(minimal("  lr: fast\n")),
             "configs/x.yaml:9:7: train.lr: expected a positive number, got 'fast'");
  EXPECT_HAS(parse_error(minimal("  seed: -1\n")),
             "train.seed: expected an integer >= 0, got '-1'");
  EXPECT_HAS(parse_error(minimal("  beta: [1]\n")), "train.beta: expected a number >= 0 or a map");
  EXPECT_HAS(parse_error("model: {input_shape: [4], layers: [{type: dense, units: 3, use_bias: "
                         "maybe}]}\ndata: {train: {file: d.h5, features: x, labels: y}}\n"),
             "model.layers[0].use_bias: expected true or false, got 'maybe'");
}

TEST(Config, ErrorOutOfRangeValues) {
  std::string text = minimal();
  text.replace(text.find("epochs: 2"), 9, "epochs: 0");
  EXPECT_HAS(parse_error(text),
             "configs/x.yaml:8:11: train.epochs: expected a positive integer, got '0'");
  EXPECT_HAS(parse_error(minimal("  lr: 0\n")), "train.lr: expected a positive number, got '0'");
  EXPECT_HAS(parse_error(minimal("  beta: -1.0e-6\n")),
             "train.beta: expected a number >= 0, got '-1.0e-6'");
  EXPECT_HAS(parse_error(minimal("  beta: {kind: log, points: [[0, 1.0e-6], [5, 0]]}\n")),
             "train.beta.points[1][1]: expected a positive number, got '0'");
  EXPECT_HAS(parse_error(minimal("  beta: {kind: linear, points: [[5, 1], [2, 1]]}\n")),
             "train.beta.points[1][0]: expected epochs in increasing order");
  EXPECT_HAS(parse_error(minimal("  beta: {kind: linear, points: [[5, 1, 3]]}\n")),
             "train.beta.points[0]: expected a pair [epoch, beta], got a list");
  EXPECT_HAS(parse_error(minimal("  beta: {kind: log, value: 1}\n")),
             "train.beta.value: not allowed for kind log");
  text = minimal();
  text.replace(text.find("[4]"), 3, "[4, 0]");
  EXPECT_HAS(parse_error(text),
             "configs/x.yaml:2:20: model.input_shape[1]: expected a positive integer, got '0'");
  text = minimal();
  text.replace(text.find("[4]"), 3, "[]");
  EXPECT_HAS(parse_error(text), "model.input_shape: expected a non-empty list");
  EXPECT_HAS(parse_error(minimal() + "  threads: -2\n"), "train.threads: expected an integer >= 0");
  const std::string data_head = "model: {input_shape: [4], layers: [{type: dense, units: 3}]}\n";
  EXPECT_HAS(parse_error(data_head + "data: {train: {file: d.h5, features: x, labels: y}, "
                                     "validation_split: 1}\n"),
             "data.validation_split: expected a fraction in [0, 1), got '1'");
  EXPECT_HAS(parse_error(data_head +
                         "data: {train: {file: d.h5, features: x, labels: y}, test_split: -0.1}\n"),
             "data.test_split: expected a fraction in [0, 1), got '-0.1'");
  EXPECT_HAS(parse_error(data_head + "data: {train: {file: d.h5, features: x, labels: y}, "
                                     "validation_split: 0.5, test_split: 0.5}\n"),
             "data.test_split: expected validation_split + test_split < 1");
  EXPECT_HAS(parse_error("model: {input_shape: [4], layers: [{type: dense, units: 3, "
                         "kernel_quantizer: {k: 2}}]}\n"
                         "data: {train: {file: d.h5, features: x, labels: y}}\n"),
             "model.layers[0].kernel_quantizer.k: expected an integer in [0, 1], got '2'");
}

TEST(Config, ErrorMissingRequiredKey) {
  // Missing key: named by path, located at the parent map.
  EXPECT_EQ(parse_error("model:\n"
                        "  input_shape: [4]\n"
                        "  layers:\n"
                        "    - {type: dense, units: 3}\n"
                        "    - type: dense\n"
                        "      activation: relu\n"
                        "data: {train: {file: d.h5, features: x, labels: y}}\n"),
            "configs/x.yaml:5:7: model.layers[1].units: required key is missing (expected a "
            "positive integer)");
  EXPECT_HAS(parse_error("model:\n  input_shape: [4]\n"
                         "data: {train: {file: d.h5, features: x, labels: y}}\n"),
             "configs/x.yaml:2:3: model.layers: required key is missing");
  EXPECT_HAS(parse_error("model:\n  layers: [{type: flatten}]\n"
                         "data: {train: {file: d.h5, features: x, labels: y}}\n"),
             "model.input_shape: required key is missing");
  EXPECT_HAS(parse_error("model: {input_shape: [4], layers: [{type: dense, units: 3}]}\n"
                         "data:\n  format: hdf5\n  train: {file: d.h5, features: x}\n"),
             "configs/x.yaml:4:10: data.train.labels: required key is missing");
  EXPECT_HAS(parse_error("model: {input_shape: [4], layers: [{type: dense, units: 3}]}\n"
                         "data:\n  format: jet_csv\n  train: {features: x}\n"),
             "data.train.file: required key is missing");
  EXPECT_HAS(parse_error("model: {input_shape: [4], layers: [{type: dense, units: 3}]}\n"
                         "data:\n  train: {file: d.h5, features: x, labels: y}\n"
                         "  test: {file: t.h5, labels: y}\n"),
             "data.test.features: required key is missing");
  EXPECT_HAS(parse_error("model: {input_shape: [4], layers: [{units: 3}]}\n"
                         "data: {train: {file: d.h5, features: x, labels: y}}\n"),
             "model.layers[0].type: required key is missing");
  EXPECT_HAS(parse_error("model: {input_shape: [4], layers: [{type: dense, units: 3}]}\n"),
             "data: required key is missing");
  EXPECT_HAS(parse_error(""), "expected a map with keys name, model, data, train, got");
}

TEST(Config, ErrorBadEnum) {
  EXPECT_HAS(parse_error(minimal("  optimizer: adamw\n")),
             "configs/x.yaml:9:14: train.optimizer: expected one of adam, sgd, got 'adamw'");
  EXPECT_HAS(parse_error(minimal("  device: gpu\n")),
             "train.device: expected one of auto, cpu, cuda, got 'gpu'");
  const std::string msg = parse_error(
      "model: {input_shape: [4], layers: [{type: dense, units: 3, "
      "output_quantizer: {round: rnd_conv}}]}\n"
      "data: {train: {file: d.h5, features: x, labels: y}}\n");
  EXPECT_HAS(msg,
             "model.layers[0].output_quantizer.round: expected one of TRN, RND, RND_CONV, "
             "S_RND, got 'rnd_conv'");
  EXPECT_HAS(msg, "did you mean 'RND_CONV'?");
  EXPECT_HAS(
      parse_error("model: {input_shape: [4], layers: [{type: conv, units: 3}]}\n"
                  "data: {train: {file: d.h5, features: x, labels: y}}\n"),
      "model.layers[0].type: expected one of dense, conv1d, conv2d, batchnorm, activation, "
      "quantize, flatten, reshape, max_pool, avg_pool, sum_pool, global_max_pool, "
      "global_avg_pool, global_sum_pool, add, concatenate, lut, softmax, einsum, einsum_dense, "
      "attention, linformer_attention, lut_dense, got "
      "'conv'");
  EXPECT_HAS(parse_error("model: {input_shape: [4], layers: [{type: dense, units: 3, "
                         "activation: tanh}]}\n"
                         "data: {train: {file: d.h5, features: x, labels: y}}\n"),
             "model.layers[0].activation: expected one of linear, relu, got 'tanh'");
  EXPECT_HAS(parse_error("model: {input_shape: [4], layers: [{type: dense, units: 3}]}\n"
                         "data: {format: csv, train: {file: d.h5}}\n"),
             "data.format: expected one of hdf5, jet_csv, jet_hdf5, got 'csv'");
}

TEST(Config, ErrorDuplicates) {
  EXPECT_HAS(parse_error("model: {input_shape: [4], layers: [{type: dense, units: 3, name: a}, "
                         "{type: dense, units: 3, name: a}]}\n"
                         "data: {train: {file: d.h5, features: x, labels: y}}\n"),
             "model.layers[1].name: expected a unique layer name, got 'a' (already used by "
             "model.layers[0])");
  EXPECT_HAS(parse_error(minimal("  epochs: 3\n")),
             "configs/x.yaml:9:3: train.epochs: duplicate key");
}

TEST(Config, ErrorYamlSyntax) {
  const std::string msg = parse_error("model:\n  input_shape: [4\n  layers: []\n");
  EXPECT_HAS(msg, "configs/x.yaml:");
  EXPECT_HAS(msg, "YAML syntax error");
  const std::string msg2 = parse_error("model:\n  a: 1\n b: 2\n");
  EXPECT_HAS(msg2, "configs/x.yaml:3:");
  EXPECT_HAS(msg2, "YAML syntax error");
}

TEST(Config, ErrorMissingFile) {
  const std::string msg = error_of([] { load_run_config("/nonexistent/hgqt/none.yaml"); });
  EXPECT_EQ(msg, "cannot read config file '/nonexistent/hgqt/none.yaml'");
  EXPECT_HAS(error_of([] { load_run_config(HGQT_SOURCE_DIR "/configs"); }),
             "cannot read config file '");
}

// ---- Overrides.

TEST(Config, OverrideScalar) {
  const RunConfig c = parse_run_config(
      kFullConfig, "full.yaml",
      {"train.epochs=3", "name=other", "train.lr=1e-2", "data.train.file=/tmp/other.h5"});
  EXPECT_EQ(c.train.epochs, 3);
  EXPECT_EQ(c.name, "other");
  EXPECT_DOUBLE_EQ(c.train.lr, 1e-2);
  EXPECT_EQ(c.data.train.file, "/tmp/other.h5");
  EXPECT_EQ(c.data.train.features, "x_train");
  // Spaces around the key are allowed.
  EXPECT_EQ(parse_run_config(minimal(), "m.yaml", {" train.batch_size = 64"}).train.batch_size, 64);
  // Later overrides win.
  EXPECT_EQ(
      parse_run_config(minimal(), "m.yaml", {"train.epochs=3", "train.epochs=4"}).train.epochs, 4);
}

TEST(Config, OverrideListElement) {
  const RunConfig c =
      parse_run_config(kFullConfig, "full.yaml",
                       {"model.layers[1].units=32", "model.input_shape[0]=14",
                        "model.layers[2].kernel_quantizer.b=3",
                        "model.layers[1].kernel_quantizer={b: 5}", "data.feature_names[1]=c"});
  EXPECT_EQ(c.model.layers[1].units, 32);
  EXPECT_EQ(c.model.layers[1].activation, "relu");
  EXPECT_EQ(c.model.input_shape, (std::vector<int64_t>{14, 28}));
  EXPECT_EQ(c.model.layers[2].quantizers.at("kernel").b, 3.0);
  EXPECT_EQ(c.model.layers[1].quantizers.at("kernel").b, 5.0);
  EXPECT_EQ(c.data.feature_names, (std::vector<std::string>{"a", "c"}));
  // Appending at index == size adds a layer.
  const RunConfig d =
      parse_run_config(minimal(), "m.yaml", {"model.layers[1]={type: dense, units: 2}"});
  ASSERT_EQ(d.model.layers.size(), 2u);
  EXPECT_EQ(d.model.layers[1].units, 2);
  EXPECT_EQ(d.model.layers[1].line, 0);  // came from an override
}

TEST(Config, OverrideMapValue) {
  const RunConfig c = parse_run_config(kFullConfig, "full.yaml",
                                       {"train.beta={kind: log, points: [[0,1e-6],[5,1e-4]]}"});
  EXPECT_EQ(c.train.beta.kind, "log");
  ASSERT_EQ(c.train.beta.points.size(), 2u);
  EXPECT_EQ(c.train.beta.points[1].epoch, 5.0);
  EXPECT_DOUBLE_EQ(c.train.beta.points[1].value, 1e-4);
  // Then a key inside the new map.
  const RunConfig d = parse_run_config(kFullConfig, "full.yaml",
                                       {"train.beta={kind: log, points: [[0,1e-6],[5,1e-4]]}",
                                        "train.beta.kind=linear", "train.beta.points[0][1]=0"});
  EXPECT_EQ(d.train.beta.kind, "linear");
  EXPECT_EQ(d.train.beta.points[0].value, 0.0);
  // Missing optional sections are created on the way.
  const RunConfig e =
      parse_run_config(minimal(), "m.yaml",
                       {"model.quantizer_defaults.weight.b=4", "data.validation.file=v.h5",
                        "data.validation.features=xv", "data.validation.labels=yv"});
  EXPECT_EQ(e.model.defaults.at("weight").b, 4.0);
  EXPECT_EQ(e.data.validation.file, "v.h5");
  EXPECT_EQ(e.data.validation.labels, "yv");
}

TEST(Config, OverrideErrors) {
  // Malformed.
  EXPECT_EQ(parse_error(minimal(), {"train.epochs"}),
            "configs/x.yaml: --set 'train.epochs': expected 'key.path=value', got no '='");
  EXPECT_HAS(parse_error(minimal(), {"train..epochs=3"}), "--set 'train..epochs=3'");
  EXPECT_HAS(parse_error(minimal(), {"model.layers[x].units=3"}), "index must be a number");
  // Not in the schema.
  std::string msg = parse_error(minimal(), {"train.epoch=3"});
  EXPECT_HAS(msg, "--set 'train.epoch=3': train.epoch: unknown key");
  EXPECT_HAS(msg, "did you mean 'train.epochs'?");
  EXPECT_HAS(parse_error(minimal(), {"model.layers[0].kernel_quantizer.bits=3"}),
             "--set 'model.layers[0].kernel_quantizer.bits=3': "
             "model.layers[0].kernel_quantizer.bits: unknown key");
  EXPECT_HAS(parse_error(minimal(), {"train.epochs.x=3"}), "train.epochs.x: unknown key");
  EXPECT_HAS(parse_error(minimal(), {"model.layers.units=3"}), "model.layers.units: unknown key");
  EXPECT_HAS(parse_error(minimal(), {"train[0]=3"}), "'train' is not a list");
  // Not in this config.
  EXPECT_HAS(parse_error(minimal(), {"model.layers[5].units=3"}),
             "model.layers[5]: index out of range ('model.layers' has 1 entries)");
  EXPECT_HAS(parse_error(minimal("  beta: 1.0e-6\n"), {"train.beta.kind=log"}),
             "cannot set a key inside 'train.beta'");
  // A bad value is reported against the override.
  EXPECT_EQ(parse_error(minimal(), {"train.epochs=abc"}),
            "configs/x.yaml: --set 'train.epochs=abc': train.epochs: expected a positive "
            "integer, got 'abc'");
  EXPECT_HAS(parse_error(minimal(), {"model.layers[0]={type: dense}"}),
             "--set 'model.layers[0]={type: dense}': model.layers[0].units: required key is "
             "missing");
  EXPECT_HAS(parse_error(minimal(), {"data.validation.file=v.h5"}),
             "--set 'data.validation.file=v.h5': data.validation.features: required key is "
             "missing");
  EXPECT_HAS(parse_error(minimal(), {"train.beta={kind: log, points: [[0, 1"}),
             "the value is not valid YAML");
}

// ---- Round trip.

TEST(Config, RoundTripThroughYaml) {
  const RunConfig a = parse_run_config(kFullConfig, "full.yaml");
  const std::string text = hgqt::config::to_yaml(a);
  const RunConfig b = parse_run_config(text, "emitted.yaml");
  expect_same(a, b);
  // Emitting again gives the same text.
  EXPECT_EQ(hgqt::config::to_yaml(b), text);

  // A config built in code, with awkward values and every quantizer field.
  RunConfig c;
  c.name = "yes";  // looks like a boolean
  c.model.input_shape = {3, 5};
  QuantizerSpec q;
  q.param = "kbi";
  q.k = 1;
  q.b = 0.1;
  q.i = -2.5;
  q.f = 1.0 / 3.0;
  q.round = "S_RND";
  q.overflow = "SAT";
  q.granularity = "channel";
  q.i_decay = 1e-300;
  q.trainable = true;
  c.model.defaults["datalane"] = q;
  c.model.defaults["bias"] = QuantizerSpec{};
  LayerSpec l;
  l.type = "dense";
  l.name = "d: 1, [x]";
  l.units = 7;
  l.activation = "relu";
  l.use_bias = false;
  l.quantizers["kernel"] = q;
  l.quantizers["output"] = QuantizerSpec{};
  c.model.layers.push_back(l);
  LayerSpec f;
  f.type = "flatten";
  f.name = "123";
  c.model.layers.push_back(f);
  c.data.format = "jet_csv";
  c.data.train.file = "../data/with space, and comma.csv";
  c.data.test.file = "null";
  c.data.validation_split = 0.1 + 0.2;
  c.data.split_seed = 18446744073709551615ull;
  c.data.feature_names = {"j_zlogz", "true", "~"};
  c.train.lr = 0.1;
  c.train.seed = 12345678901234ull;
  c.train.beta.kind = "log";
  c.train.beta.points = {{0, 5e-7}, {20, 1e-6}, {300.5, 2e-3}};
  const RunConfig d = parse_run_config(hgqt::config::to_yaml(c), "built.yaml");
  expect_same(c, d);
}

TEST(Config, ModelYamlRoundTrip) {
  const RunConfig a = parse_run_config(kFullConfig, "full.yaml");
  const std::string text = hgqt::config::model_to_yaml(a.model);
  EXPECT_HAS(text, "input_shape");
  EXPECT_HAS(text, "quantizer_defaults");
  EXPECT_HAS(text, "layers");
  EXPECT_EQ(text.find("train"), std::string::npos);
  const ModelSpec m = parse_model_yaml(text, "model.yaml");
  expect_same(a.model, m);
  // Only set quantizer fields are written.
  EXPECT_EQ(text.find("round"), std::string::npos);
  // Errors name the origin and the key path inside the model map.
  EXPECT_HAS(
      error_of([] { parse_model_yaml("input_shape: [2]\nlayers: [{type: dense}]\n", "ck"); }),
      "ck:2:10: layers[0].units: required key is missing");
}

// ---- Beta schedule and merging.

TEST(Config, BetaAtConstant) {
  BetaSchedule s;
  s.kind = "constant";
  s.value = 2.5e-6;
  EXPECT_EQ(beta_at(s, 0), 2.5e-6);
  EXPECT_EQ(beta_at(s, 123.4), 2.5e-6);
}

TEST(Config, BetaAtLinear) {
  BetaSchedule s;
  s.kind = "linear";
  s.points = {{2, 1.0}, {4, 3.0}, {8, 1.0}};
  EXPECT_DOUBLE_EQ(beta_at(s, 0), 1.0);  // held before the first point
  EXPECT_DOUBLE_EQ(beta_at(s, 2), 1.0);
  EXPECT_DOUBLE_EQ(beta_at(s, 3), 2.0);  // halfway from 1 to 3
  EXPECT_DOUBLE_EQ(beta_at(s, 3.5), 2.5);
  EXPECT_DOUBLE_EQ(beta_at(s, 4), 3.0);
  EXPECT_DOUBLE_EQ(beta_at(s, 5), 2.5);  // a quarter of the way from 3 down to 1
  EXPECT_DOUBLE_EQ(beta_at(s, 8), 1.0);
  EXPECT_DOUBLE_EQ(beta_at(s, 100), 1.0);  // held after the last
  s.points = {{5, 7.0}};
  EXPECT_DOUBLE_EQ(beta_at(s, 0), 7.0);
  EXPECT_DOUBLE_EQ(beta_at(s, 9), 7.0);
  // A step: two points at the same epoch.
  s.points = {{0, 1.0}, {10, 1.0}, {10, 5.0}, {20, 5.0}};
  EXPECT_DOUBLE_EQ(beta_at(s, 9.5), 1.0);
  EXPECT_DOUBLE_EQ(beta_at(s, 10), 5.0);
  EXPECT_DOUBLE_EQ(beta_at(s, 15), 5.0);
}

TEST(Config, BetaAtLog) {
  BetaSchedule s;
  s.kind = "log";
  s.points = {{0, 1e-7}, {10, 1e-5}, {20, 1e-5}};
  EXPECT_DOUBLE_EQ(beta_at(s, -1), 1e-7);
  EXPECT_DOUBLE_EQ(beta_at(s, 0), 1e-7);
  EXPECT_NEAR(beta_at(s, 5), 1e-6, 1e-18);  // geometric midpoint of 1e-7 and 1e-5
  EXPECT_NEAR(beta_at(s, 2.5), std::sqrt(1e-7 * 1e-6), 1e-18);
  EXPECT_NEAR(beta_at(s, 10), 1e-5, 1e-18);
  EXPECT_NEAR(beta_at(s, 15), 1e-5, 1e-18);
  EXPECT_NEAR(beta_at(s, 300), 1e-5, 1e-18);
  // The jet recipe: 5e-7 -> 1e-6 over 20 epochs, then -> 2e-3 by 300.
  s.points = {{0, 5e-7}, {20, 1e-6}, {300, 2e-3}};
  EXPECT_NEAR(beta_at(s, 10), 5e-7 * std::sqrt(2.0), 1e-18);
  EXPECT_NEAR(beta_at(s, 160), 1e-6 * std::sqrt(2000.0), 1e-15);
}

TEST(Config, QuantizerMerged) {
  QuantizerSpec base;
  base.b = 8;
  base.i = 2;
  base.round = "RND";
  QuantizerSpec over;
  over.b = 4;
  over.trainable = false;
  const QuantizerSpec m = base.merged(over);
  EXPECT_EQ(m.b, 4.0);
  EXPECT_EQ(m.i, 2.0);
  EXPECT_EQ(m.round, "RND");
  EXPECT_EQ(m.trainable, false);
  EXPECT_FALSE(m.f.has_value());
  const QuantizerSpec same = base.merged(QuantizerSpec{});
  EXPECT_EQ(same.b, 8.0);
  EXPECT_EQ(same.round, "RND");
}

TEST(Config, GraphLayerKeysRoundTripThroughModelYaml) {
  const auto m = parse_model_yaml(R"(
input_shape: [12, 2]
layers:
  - {type: conv1d, name: a, filters: 3, kernel_size: 3, strides: [2], padding: same, batchnorm: true, momentum: 0.9, epsilon: 0.01}
  - {type: conv1d, name: b, inputs: input, filters: 3, kernel_size: [5], strides: 2, padding: same}
  - {type: add, name: s, inputs: [a, b], activation: relu, output_quantizer: {f: 3}}
  - {type: max_pool, pool_size: 2}
  - {type: reshape, shape: [-1]}
  - {type: concatenate, inputs: [reshape_4, reshape_4], axis: 0}
  - {type: reshape, shape: [9, 2]}
  - {type: global_avg_pool, scale_bits: 5}
  - {type: global_avg_pool, inputs: [reshape_6]}
)",
                                  "t");
  const auto again = parse_model_yaml(model_to_yaml(m), "again");
  ASSERT_EQ(again.layers.size(), 9u);
  EXPECT_EQ(again.layers[7].scale_bits, 5);
  EXPECT_EQ(again.layers[8].scale_bits, 8);  // the default
  EXPECT_EQ(again.layers[0].kernel_size, std::vector<int64_t>{3});
  EXPECT_EQ(again.layers[0].strides, std::vector<int64_t>{2});
  EXPECT_TRUE(again.layers[0].batchnorm);
  EXPECT_DOUBLE_EQ(again.layers[0].momentum, 0.9);
  EXPECT_DOUBLE_EQ(again.layers[0].epsilon, 0.01);
  EXPECT_EQ(again.layers[1].inputs, std::vector<std::string>{"input"});
  EXPECT_EQ(again.layers[2].inputs, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(again.layers[2].activation, "relu");
  EXPECT_EQ(again.layers[3].pool_size, std::vector<int64_t>{2});
  EXPECT_EQ(again.layers[4].shape, std::vector<int64_t>{-1});
  EXPECT_EQ(again.layers[5].axis, 0);
}

TEST(Config, GraphLayerKeyErrors) {
  auto err = [](const std::string& layer) {
    return parse_error("model: {input_shape: [4], layers: [" + layer +
                       "]}\n"
                       "data: {train: {file: d.h5, features: x, labels: y}}\n");
  };
  EXPECT_NE(err("{type: dense, units: 3, filters: 2}")
                .find("filters: not allowed for a 'dense' layer (only conv layers have it)"),
            std::string::npos)
      << err("{type: dense, units: 3, filters: 2}");
  EXPECT_NE(err("{type: add, inputs: [a]}")
                .find("model.layers[0].inputs: expected a list of two or more layer names to add"),
            std::string::npos)
      << err("{type: add, inputs: [a]}");
  EXPECT_NE(err("{type: dense, units: 3, inputs: [a, b]}")
                .find("one layer name (only add, concatenate and einsum layers take several)"),
            std::string::npos);
  EXPECT_NE(err("{type: conv2d, filters: 2}").find("kernel_size"), std::string::npos);
  EXPECT_NE(err("{type: reshape, shape: [-1, -1]}").find("at most one -1"), std::string::npos);
  EXPECT_NE(err("{type: quantize, name: input}").find("other than 'input'"), std::string::npos);
}

// ---- Autoencoder / anomaly detection: data.classes, data.anomaly_classes, train.target.

namespace {
// Line numbers matter: data.classes is on line 8, anomaly_classes on 9, train.loss on 12.
std::string anomaly_config(const std::string& classes, const std::string& anomalies,
                           const std::string& loss, const std::string& target = "input") {
  return "model:\n"                                         // 1
         "  input_shape: [4]\n"                             // 2
         "  layers:\n"                                      // 3
         "    - {type: dense, units: 4}\n"                  // 4
         "data:\n"                                          // 5
         "  train: {file: d.h5, features: x, labels: y}\n"  // 6
         "  validation_split: 0.2\n"                        // 7
         "  classes: " +
         classes +
         "\n"  // 8
         "  anomaly_classes: " +
         anomalies +
         "\n"        // 9
         "train:\n"  // 10
         "  target: " +
         target +
         "\n"  // 11
         "  loss: " +
         loss + "\n";  // 12
}
}  // namespace

TEST(Config, AnomalyKeysParseAndRoundTrip) {
  const RunConfig a = parse_run_config(anomaly_config("[3, 0, 1]", "[7, 5]", "mse"), "ae.yaml");
  EXPECT_EQ(a.data.classes, (std::vector<int64_t>{3, 0, 1}));
  EXPECT_EQ(a.data.anomaly_classes, (std::vector<int64_t>{7, 5}));
  EXPECT_EQ(a.train.target, "input");
  EXPECT_EQ(a.train.loss, "mse");
  const std::string text = hgqt::config::to_yaml(a);
  EXPECT_HAS(text, "classes: [3, 0, 1]");
  EXPECT_HAS(text, "anomaly_classes: [7, 5]");
  EXPECT_HAS(text, "target: input");
  const RunConfig b = parse_run_config(text, "emitted.yaml");
  expect_same(a, b);
  EXPECT_EQ(b.data.classes, a.data.classes);
  EXPECT_EQ(b.data.anomaly_classes, a.data.anomaly_classes);
  EXPECT_EQ(b.train.target, a.train.target);
  EXPECT_EQ(hgqt::config::to_yaml(b), text);

  // Defaults: every class, target labels; they are written out and read back.
  const RunConfig d = parse_run_config(minimal(), "min.yaml");
  EXPECT_TRUE(d.data.classes.empty());
  EXPECT_TRUE(d.data.anomaly_classes.empty());
  EXPECT_EQ(d.train.target, "labels");
  const std::string dtext = hgqt::config::to_yaml(d);
  EXPECT_HAS(dtext, "classes: []");
  EXPECT_HAS(dtext, "target: labels");
  const RunConfig e = parse_run_config(dtext, "emitted.yaml");
  EXPECT_TRUE(e.data.classes.empty());
  EXPECT_EQ(e.train.target, "labels");
  EXPECT_EQ(hgqt::config::to_yaml(e), dtext);

  // anomaly_classes is optional; target input without a loss key means mse.
  std::string no_loss = anomaly_config("[1]", "[]", "mse");
  no_loss = no_loss.substr(0, no_loss.find("  loss:"));
  const RunConfig f = parse_run_config(no_loss, "ae.yaml");
  EXPECT_EQ(f.train.loss, "mse");
  EXPECT_TRUE(f.data.anomaly_classes.empty());

  // The overrides reach the new keys.
  const RunConfig g = parse_run_config(anomaly_config("[0]", "[1]", "mse"), "ae.yaml",
                                       {"data.classes=[2, 4]", "data.anomaly_classes=[6]"});
  EXPECT_EQ(g.data.classes, (std::vector<int64_t>{2, 4}));
  EXPECT_EQ(g.data.anomaly_classes, (std::vector<int64_t>{6}));
  const RunConfig h =
      parse_run_config(minimal(), "m.yaml", {"train.target=input", "train.loss=mse"});
  EXPECT_EQ(h.train.target, "input");
}

TEST(Config, AnomalyExampleConfigParses) {
  const RunConfig c =
      load_run_config(std::string(HGQT_SOURCE_DIR) + "/configs/anomaly_autoencoder.yaml");
  EXPECT_EQ(c.train.target, "input");
  EXPECT_EQ(c.train.loss, "mse");
  EXPECT_EQ(c.data.classes, (std::vector<int64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(c.data.anomaly_classes, (std::vector<int64_t>{5, 6, 7, 8, 9}));
  ASSERT_FALSE(c.model.layers.empty());
  EXPECT_EQ(c.model.layers.back().units, 784);
  EXPECT_EQ(c.model.layers.back().activation, "linear");
}

TEST(Config, AnomalyKeyErrors) {
  std::string msg = parse_error(anomaly_config("[0, 1]", "[5]", "cross_entropy"));
  EXPECT_HAS(msg, "configs/x.yaml:12:");
  EXPECT_HAS(msg, "train.loss: expected 'mse' with train.target: input");
  EXPECT_HAS(msg, "got 'cross_entropy'");

  msg = parse_error(anomaly_config("[0, 1]", "[5]", "mse", "inputs"));
  EXPECT_HAS(msg, "configs/x.yaml:11:");
  EXPECT_HAS(msg, "train.target");
  EXPECT_HAS(msg, "input");

  msg = parse_error(anomaly_config("[]", "[5]", "mse"));
  EXPECT_HAS(msg, "configs/x.yaml:9:");
  EXPECT_HAS(msg, "data.anomaly_classes: needs data.classes");

  msg = parse_error(anomaly_config("[0, 1, 2]", "[5, 1]", "mse"));
  EXPECT_HAS(msg, "configs/x.yaml:9:");
  EXPECT_HAS(msg, "data.anomaly_classes[1]: class 1 is also in data.classes");

  msg = parse_error(anomaly_config("[0, 1, 0]", "[5]", "mse"));
  EXPECT_HAS(msg, "configs/x.yaml:8:");
  EXPECT_HAS(msg, "data.classes[2]: expected unique class labels, got 0 twice");

  msg = parse_error(anomaly_config("[0, -1]", "[5]", "mse"));
  EXPECT_HAS(msg, "configs/x.yaml:8:");
  EXPECT_HAS(msg, "data.classes[1]");

  msg = parse_error(anomaly_config("3", "[5]", "mse"));
  EXPECT_HAS(msg, "configs/x.yaml:8:");
  EXPECT_HAS(msg, "data.classes: expected a list of class labels");

  msg = parse_error(anomaly_config("[0, 1.5]", "[5]", "mse"));
  EXPECT_HAS(msg, "data.classes[1]");

  // anomaly_classes only means something for an autoencoder.
  msg = parse_error(anomaly_config("[0, 1]", "[5]", "cross_entropy", "labels"));
  EXPECT_HAS(msg, "configs/x.yaml:9:");
  EXPECT_HAS(msg, "data.anomaly_classes: only used with train.target: input");

  // An unknown key in the data section suggests the new ones.
  msg = parse_error(anomaly_config("[0]", "[5]", "mse") + "  clases: [1]\n");
  EXPECT_HAS(msg, "unknown key");
  msg = parse_error(anomaly_config("[0]", "[5]", "mse"), {"data.clases=[1]"});
  EXPECT_HAS(msg, "did you mean 'data.classes'");
}

// ---- Learning-rate schedules and early stopping.

TEST(Config, LrScheduleKeysParseAndRoundTrip) {
  RunConfig c = parse_run_config(
      minimal("  lr_schedule: step\n  lr_step_epochs: 3\n  lr_gamma: 0.5\n"), "x.yaml");
  EXPECT_EQ(c.train.lr_schedule, "step");
  EXPECT_EQ(c.train.lr_step_epochs, 3);
  EXPECT_DOUBLE_EQ(c.train.lr_gamma, 0.5);
  std::string text = hgqt::config::to_yaml(c);
  EXPECT_HAS(text, "lr_step_epochs: 3");
  EXPECT_HAS(text, "lr_gamma: 0.5");
  EXPECT_EQ(text.find("lr_restart"), std::string::npos) << text;
  expect_same(c, parse_run_config(text, "emitted.yaml"));

  // Defaults are written out.
  c = parse_run_config(minimal("  lr_schedule: cosine_restarts\n"), "x.yaml");
  EXPECT_EQ(c.train.lr_restart_epochs, 10);
  EXPECT_DOUBLE_EQ(c.train.lr_restart_mult, 2.0);
  text = hgqt::config::to_yaml(c);
  EXPECT_HAS(text, "lr_restart_epochs: 10");
  EXPECT_HAS(text, "lr_restart_mult: 2");
  EXPECT_EQ(text.find("lr_gamma"), std::string::npos) << text;
  expect_same(c, parse_run_config(text, "emitted.yaml"));

  c = parse_run_config(minimal("  lr_schedule: cosine_restarts\n  lr_restart_epochs: 4\n"
                               "  lr_restart_mult: 1.5\n"),
                       "x.yaml");
  EXPECT_EQ(c.train.lr_restart_epochs, 4);
  EXPECT_DOUBLE_EQ(c.train.lr_restart_mult, 1.5);
  // Overrides reach the new keys.
  c = parse_run_config(minimal(), "x.yaml", {"train.lr_schedule=step", "train.lr_gamma=0.25"});
  EXPECT_DOUBLE_EQ(c.train.lr_gamma, 0.25);
  EXPECT_EQ(c.train.lr_step_epochs, 10);
  // The default cosine schedule writes none of them.
  text = hgqt::config::to_yaml(parse_run_config(minimal(), "x.yaml"));
  EXPECT_EQ(text.find("lr_step_epochs"), std::string::npos) << text;
  EXPECT_EQ(text.find("early_stopping"), std::string::npos) << text;
}

TEST(Config, LrScheduleKeyErrors) {
  EXPECT_HAS(parse_error(minimal("  lr_schedule: steps\n")), "did you mean 'step'?");
  EXPECT_HAS(parse_error(minimal("  lr_schedule: step\n  lr_step_epochs: 0\n")),
             "configs/x.yaml:10:19: train.lr_step_epochs: expected a positive integer, got '0'");
  EXPECT_HAS(parse_error(minimal("  lr_schedule: step\n  lr_step_epochs: 1.5\n")),
             "train.lr_step_epochs: expected a positive integer, got '1.5'");
  EXPECT_HAS(parse_error(minimal("  lr_schedule: step\n  lr_gamma: 0\n")),
             "train.lr_gamma: expected a positive number, got '0'");
  EXPECT_HAS(parse_error(minimal("  lr_schedule: step\n  lr_gamma: 1.5\n")),
             "configs/x.yaml:10:13: train.lr_gamma: expected a number in (0, 1], got '1.5'");
  EXPECT_HAS(parse_error(minimal("  lr_schedule: cosine_restarts\n  lr_restart_epochs: -2\n")),
             "train.lr_restart_epochs: expected a positive integer, got '-2'");
  EXPECT_HAS(parse_error(minimal("  lr_schedule: cosine_restarts\n  lr_restart_mult: 0.5\n")),
             "train.lr_restart_mult: expected a number >= 1, got '0.5'");
  // Keys of another schedule are refused, naming the schedule they belong to.
  EXPECT_HAS(parse_error(minimal("  lr_gamma: 0.5\n")),
             "configs/x.yaml:9:3: train.lr_gamma: not allowed with lr_schedule cosine (only with "
             "lr_schedule: step)");
  EXPECT_HAS(parse_error(minimal("  lr_schedule: constant\n  lr_step_epochs: 2\n")),
             "train.lr_step_epochs: not allowed with lr_schedule constant");
  EXPECT_HAS(parse_error(minimal("  lr_schedule: step\n  lr_restart_mult: 2\n")),
             "train.lr_restart_mult: not allowed with lr_schedule step (only with lr_schedule: "
             "cosine_restarts)");
  EXPECT_HAS(parse_error(minimal(), {"train.lr_restart_epochs=3"}),
             "train.lr_restart_epochs: not allowed with lr_schedule cosine");
  const std::string msg = parse_error(minimal("  lr_steps: 3\n"));
  EXPECT_HAS(msg, "train.lr_steps: unknown key");
}

TEST(Config, EarlyStoppingParsesAndRoundTrips) {
  RunConfig c =
      parse_run_config(minimal("  early_stopping: {patience: 3, min_delta: 0.01}\n"), "x.yaml");
  EXPECT_TRUE(c.train.early_stopping.enabled);
  EXPECT_EQ(c.train.early_stopping.patience, 3);
  EXPECT_DOUBLE_EQ(c.train.early_stopping.min_delta, 0.01);
  EXPECT_EQ(c.train.early_stopping.monitor, "val_accuracy");  // cross_entropy default
  EXPECT_FALSE(c.train.early_stopping.ebops_below.has_value());
  std::string text = hgqt::config::to_yaml(c);
  EXPECT_HAS(text, "early_stopping: {patience: 3, min_delta: 0.01, monitor: val_accuracy}");
  expect_same(c, parse_run_config(text, "emitted.yaml"));

  // Regression: val_loss by default; ebops_below kept.
  c = parse_run_config(minimal("  loss: mse\n  early_stopping:\n    patience: 2\n"
                               "    ebops_below: 1500\n"),
                       "x.yaml");
  EXPECT_EQ(c.train.early_stopping.monitor, "val_loss");
  ASSERT_TRUE(c.train.early_stopping.ebops_below.has_value());
  EXPECT_DOUBLE_EQ(*c.train.early_stopping.ebops_below, 1500);
  text = hgqt::config::to_yaml(c);
  EXPECT_HAS(text, "ebops_below: 1500");
  expect_same(c, parse_run_config(text, "emitted.yaml"));

  // An empty map: the defaults; a classification run may monitor the loss.
  c = parse_run_config(minimal("  early_stopping:\n"), "x.yaml");
  EXPECT_TRUE(c.train.early_stopping.enabled);
  EXPECT_EQ(c.train.early_stopping.patience, 5);
  c = parse_run_config(minimal(), "x.yaml", {"train.early_stopping.monitor=val_loss"});
  EXPECT_TRUE(c.train.early_stopping.enabled);
  EXPECT_EQ(c.train.early_stopping.monitor, "val_loss");
}

TEST(Config, EarlyStoppingErrors) {
  EXPECT_HAS(parse_error(minimal("  early_stopping: {patience: 0}\n")),
             "configs/x.yaml:9:30: train.early_stopping.patience: expected a positive integer, "
             "got '0'");
  EXPECT_HAS(parse_error(minimal("  early_stopping: {min_delta: -0.1}\n")),
             "train.early_stopping.min_delta: expected a number >= 0, got '-0.1'");
  EXPECT_HAS(parse_error(minimal("  early_stopping: {ebops_below: 0}\n")),
             "train.early_stopping.ebops_below: expected a positive number, got '0'");
  EXPECT_HAS(parse_error(minimal("  early_stopping: {monitor: accuracy}\n")),
             "train.early_stopping.monitor");
  EXPECT_HAS(parse_error(minimal("  loss: mse\n  early_stopping: {monitor: val_accuracy}\n")),
             "train.early_stopping.monitor: expected 'val_loss' with train.loss: mse");
  std::string msg = parse_error(minimal("  early_stopping: {patiance: 2}\n"));
  EXPECT_HAS(msg, "train.early_stopping.patiance: unknown key");
  EXPECT_HAS(msg, "did you mean 'patience'?");
  EXPECT_HAS(parse_error(minimal("  early_stopping: 3\n")), "train.early_stopping");
}
