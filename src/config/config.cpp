#include "hgqt/config/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "hgqt/config/yaml_reader.h"
#include "hgqt/util/avg_scale.h"
#include "hgqt/util/einsum.h"

namespace hgqt::config {

namespace {

using Keys = std::vector<std::string>;

constexpr int64_t kMaxInt = std::numeric_limits<int64_t>::max();

// ---- The schema: allowed keys per map.

const Keys kTopKeys = {"name", "model", "data", "train"};
const Keys kModelKeys = {"input_shape", "quantizer_defaults", "layers"};
const Keys kDefaultPlaces = {"weight", "datalane", "bias"};
const Keys kLayerKeys = {"type",
                         "name",
                         "inputs",
                         "units",
                         "filters",
                         "kernel_size",
                         "strides",
                         "padding",
                         "pool_size",
                         "shape",
                         "axis",
                         "batchnorm",
                         "function",
                         "momentum",
                         "epsilon",
                         "activation",
                         "use_bias",
                         "equation",
                         "input_scale",
                         "scale_bits",
                         "num_heads",
                         "key_dim",
                         "value_dim",
                         "output_shape",
                         "projected_length",
                         "hidden",
                         "hidden_layers",
                         "max_table_bits",
                         "table_quantizer",
                         "input_quantizer",
                         "input2_quantizer",
                         "kernel_quantizer",
                         "bias_quantizer",
                         "output_quantizer",
                         "exp_input_quantizer",
                         "exp_output_quantizer",
                         "inv_input_quantizer",
                         "inv_output_quantizer"};
/// Layer keys holding a list (an integer is also accepted where a list of sizes is).
const Keys kLayerListKeys = {"inputs",    "kernel_size", "strides",
                             "pool_size", "shape",       "output_shape"};
const Keys kQuantizerKeys = {"param", "k",        "b",           "i",       "f",
                             "round", "overflow", "granularity", "i_decay", "trainable"};
const Keys kDataKeys = {"format",           "train",      "validation",     "test",
                        "validation_split", "test_split", "standardize",    "split_seed",
                        "feature_names",    "classes",    "anomaly_classes"};
const Keys kSourceKeys = {"file", "features", "labels", "teacher"};
const Keys kTrainKeys = {"epochs",
                         "batch_size",
                         "optimizer",
                         "lr",
                         "momentum",
                         "weight_decay",
                         "lr_schedule",
                         "min_lr",
                         "seed",
                         "loss",
                         "target",
                         "beta",
                         "gamma",
                         "threads",
                         "device",
                         "lr_step_epochs",
                         "lr_gamma",
                         "lr_restart_epochs",
                         "lr_restart_mult",
                         "early_stopping",
                         "distillation"};
const Keys kDistillationKeys = {"teacher",     "alpha",  "temperature",    "loss",
                                "huber_delta", "target", "teacher_outputs"};
const Keys kDistillLosses = {"kl", "mse", "huber"};
const Keys kDistillTargets = {"output", "reconstruction_error"};
const Keys kTeacherOutputs = {"logits", "probabilities"};
const Keys kBetaKeys = {"kind", "value", "points"};
const Keys kBetaPIDKeys = {"kind",          "target_ebops",   "init", "p",   "i",          "d",
                           "warmup_epochs", "interval_steps", "min",  "max", "ramp_epochs"};
const Keys kEarlyStoppingKeys = {"patience", "min_delta", "monitor", "ebops_below"};
const Keys kMonitors = {"val_accuracy", "val_loss"};

const Keys kAllRoles = {"input",      "kernel",    "bias",       "output", "exp_input",
                        "exp_output", "inv_input", "inv_output", "input2", "table"};
const Keys kLayerTypes = {"dense",
                          "conv1d",
                          "conv2d",
                          "batchnorm",
                          "activation",
                          "quantize",
                          "flatten",
                          "reshape",
                          "max_pool",
                          "avg_pool",
                          "sum_pool",
                          "global_max_pool",
                          "global_avg_pool",
                          "global_sum_pool",
                          "add",
                          "concatenate",
                          "lut",
                          "softmax",
                          "einsum",
                          "einsum_dense",
                          "attention",
                          "linformer_attention",
                          "lut_dense"};
const char* const kLayerTypesText =
    "one of dense, conv1d, conv2d, batchnorm, activation, quantize, flatten, reshape, max_pool, "
    "avg_pool, sum_pool, global_max_pool, global_avg_pool, global_sum_pool, add, concatenate, "
    "lut, softmax, einsum, einsum_dense, attention, linformer_attention, lut_dense";
const Keys kPaddings = {"valid", "same"};
const Keys kActivations = {"linear", "relu"};
const Keys kParams = {"kif", "kbi"};
const Keys kRounds = {"TRN", "RND", "RND_CONV", "S_RND"};
const Keys kOverflows = {"WRAP", "SAT", "SAT_SYM"};
const Keys kGranularities = {"tensor", "channel", "element"};
const Keys kFormats = {"hdf5", "jet_csv", "jet_hdf5"};
const Keys kOptimizers = {"adam", "sgd"};
const Keys kLrSchedules = {"cosine", "constant", "step", "cosine_restarts"};
const Keys kLosses = {"cross_entropy", "mse"};
const Keys kTargets = {"labels", "input"};
const Keys kBetaKinds = {"constant", "linear", "log", "pid"};
const Keys kDevices = {"auto", "cpu", "cuda"};

// The config blocks read_model expands into layers (expand_attention).
bool is_attention_block(const std::string& type) {
  return type == "attention" || type == "linformer_attention";
}

// Quantizer roles by layer type (YAML key = role + "_quantizer").
Keys roles_for(const std::string& type) {
  if (type == "dense" || type == "conv1d" || type == "conv2d" || type == "batchnorm" ||
      type == "einsum_dense")
    return {"input", "kernel", "bias", "output"};
  if (type == "add") return {"output"};
  if (type == "lut") return {"input", "output"};
  if (type == "softmax")
    return {"input", "exp_input", "exp_output", "inv_input", "inv_output", "output"};
  if (type == "activation") return {"output"};
  if (type == "quantize") return {"input"};
  if (type == "einsum") return {"input", "input2", "output"};
  if (type == "lut_dense") return {"input", "table", "output"};
  return {};
}

// ---- Schema tree used to check override key paths.

struct Schema {
  enum Kind { kScalar, kMap, kList } kind = kScalar;
  std::vector<std::pair<std::string, const Schema*>> fields;  // kMap
  const Schema* element = nullptr;                            // kList
  bool scalar_ok = false;  // a map that may also be written as a scalar (beta)

  const Schema* field(const std::string& key) const {
    for (const auto& f : fields)
      if (f.first == key) return f.second;
    return nullptr;
  }
  Keys field_names() const {
    Keys out;
    for (const auto& f : fields) out.push_back(f.first);
    return out;
  }
};

const Schema& root_schema() {
  static const Schema scalar{Schema::kScalar, {}, nullptr, false};
  static const Schema scalar_list{Schema::kList, {}, &scalar, false};
  static const Schema pair_list{Schema::kList, {}, &scalar_list, false};
  static const Schema quantizer = [] {
    Schema s{Schema::kMap, {}, nullptr, false};
    for (const auto& k : kQuantizerKeys) s.fields.emplace_back(k, &scalar);
    return s;
  }();
  static const Schema defaults = [] {
    Schema s{Schema::kMap, {}, nullptr, false};
    for (const auto& k : kDefaultPlaces) s.fields.emplace_back(k, &quantizer);
    return s;
  }();
  static const Schema layer = [] {
    Schema s{Schema::kMap, {}, nullptr, false};
    for (const auto& k : kLayerKeys)
      s.fields.emplace_back(
          k, k.size() > 10 && k.rfind("_quantizer") == k.size() - 10 ? &quantizer
             : std::find(kLayerListKeys.begin(), kLayerListKeys.end(), k) != kLayerListKeys.end()
                 ? &scalar_list
                 : &scalar);
    return s;
  }();
  static const Schema layers{Schema::kList, {}, &layer, false};
  static const Schema model{
      Schema::kMap,
      {{"input_shape", &scalar_list}, {"quantizer_defaults", &defaults}, {"layers", &layers}},
      nullptr,
      false};
  static const Schema source = [] {
    Schema s{Schema::kMap, {}, nullptr, false};
    for (const auto& k : kSourceKeys) s.fields.emplace_back(k, &scalar);
    return s;
  }();
  static const Schema data = [] {
    Schema s{Schema::kMap, {}, nullptr, false};
    for (const auto& k : kDataKeys) {
      if (k == "train" || k == "validation" || k == "test")
        s.fields.emplace_back(k, &source);
      else if (k == "feature_names" || k == "classes" || k == "anomaly_classes")
        s.fields.emplace_back(k, &scalar_list);
      else
        s.fields.emplace_back(k, &scalar);
    }
    return s;
  }();
  static const Schema beta = [] {
    Schema s{Schema::kMap, {{"value", &scalar}, {"points", &pair_list}}, nullptr, true};
    for (const auto& k : kBetaPIDKeys) s.fields.emplace_back(k, &scalar);
    return s;
  }();
  static const Schema early_stopping = [] {
    Schema s{Schema::kMap, {}, nullptr, false};
    for (const auto& k : kEarlyStoppingKeys) s.fields.emplace_back(k, &scalar);
    return s;
  }();
  static const Schema distillation = [] {
    Schema s{Schema::kMap, {}, nullptr, false};
    for (const auto& k : kDistillationKeys) s.fields.emplace_back(k, &scalar);
    return s;
  }();
  static const Schema train = [] {
    Schema s{Schema::kMap, {}, nullptr, false};
    for (const auto& k : kTrainKeys)
      s.fields.emplace_back(k, k == "beta"             ? &beta
                               : k == "early_stopping" ? &early_stopping
                               : k == "distillation"   ? &distillation
                                                       : &scalar);
    return s;
  }();
  static const Schema root{
      Schema::kMap,
      {{"name", &scalar}, {"model", &model}, {"data", &data}, {"train", &train}},
      nullptr,
      false};
  return root;
}

// ---- Overrides.

struct PathSegment {
  std::string key;  // empty for an index
  std::size_t index = 0;
  bool is_index() const { return key.empty(); }
};

[[noreturn]] void override_error(const std::string& origin, const std::string& text,
                                 const std::string& path, const std::string& message) {
  throw ConfigError(origin + ": --set '" + text + "': " + (path.empty() ? "" : path + ": ") +
                    message);
}

std::vector<PathSegment> parse_override_path(const std::string& origin, const std::string& text,
                                             const std::string& path) {
  std::vector<PathSegment> out;
  std::size_t pos = 0;
  const auto bad = [&](const std::string& why) {
    override_error(origin, text, "",
                   "expected a key path like 'train.epochs' or 'model.layers[1].units' before "
                   "'=', got '" +
                       path + "' (" + why + ")");
  };
  if (path.empty()) bad("empty key path");
  while (pos < path.size()) {
    std::size_t start = pos;
    while (pos < path.size() &&
           (std::isalnum(static_cast<unsigned char>(path[pos])) || path[pos] == '_'))
      ++pos;
    if (pos == start) bad("empty or invalid key at position " + std::to_string(start + 1));
    out.push_back({path.substr(start, pos - start), 0});
    while (pos < path.size() && path[pos] == '[') {
      const std::size_t close = path.find(']', pos);
      if (close == std::string::npos || close == pos + 1) bad("unterminated or empty index");
      const std::string digits = path.substr(pos + 1, close - pos - 1);
      for (char c : digits)
        if (!std::isdigit(static_cast<unsigned char>(c))) bad("index must be a number");
      out.push_back({"", static_cast<std::size_t>(std::strtoull(digits.c_str(), nullptr, 10))});
      pos = close + 1;
    }
    if (pos < path.size()) {
      if (path[pos] != '.') bad(std::string("unexpected '") + path[pos] + "'");
      ++pos;
      if (pos == path.size()) bad("trailing '.'");
    }
  }
  return out;
}

// Checks the key path against the schema; returns the normalized path string.
std::string check_override_path(const std::string& origin, const std::string& text,
                                const std::vector<PathSegment>& segments) {
  const Schema* s = &root_schema();
  std::string path;
  for (const PathSegment& seg : segments) {
    if (seg.is_index()) {
      if (s->kind != Schema::kList)
        override_error(origin, text, index_path(path, seg.index),
                       "'" + (path.empty() ? std::string("(top level)") : path) +
                           "' is not a list, cannot index it");
      s = s->element;
      path = index_path(path, seg.index);
      continue;
    }
    const std::string next = child_path(path, seg.key);
    if (s->kind != Schema::kMap)
      override_error(origin, text, next, "unknown key: '" + path + "' has no sub-keys");
    const Schema* child = s->field(seg.key);
    if (child == nullptr) {
      const Keys names = s->field_names();
      const std::string best = closest_match(seg.key, names);
      std::string msg = "unknown key";
      if (!best.empty()) msg += " (did you mean '" + child_path(path, best) + "'?)";
      std::string list;
      for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
      msg += "; expected one of " + list;
      override_error(origin, text, next, msg);
    }
    s = child;
    path = next;
  }
  return path;
}

void apply_override(YAML::Node& root, YamlSource& src, const std::string& origin,
                    const std::string& text) {
  const std::size_t eq = text.find('=');
  if (eq == std::string::npos)
    override_error(origin, text, "", "expected 'key.path=value', got no '='");
  std::string key_path = text.substr(0, eq);
  // Allow "train.epochs = 3".
  while (!key_path.empty() && std::isspace(static_cast<unsigned char>(key_path.back())))
    key_path.pop_back();
  while (!key_path.empty() && std::isspace(static_cast<unsigned char>(key_path.front())))
    key_path.erase(key_path.begin());
  const std::string value_text = text.substr(eq + 1);
  const std::vector<PathSegment> segments = parse_override_path(origin, text, key_path);
  const std::string path = check_override_path(origin, text, segments);

  YAML::Node value;
  try {
    value = YAML::Load(value_text);
  } catch (const YAML::Exception& e) {
    override_error(origin, text, path, "the value is not valid YAML: " + e.msg);
  }

  if (!root.IsDefined() || root.IsNull()) root.reset(YAML::Node(YAML::NodeType::Map));
  YAML::Node cur(root);
  std::string cur_path;
  for (std::size_t n = 0; n < segments.size(); ++n) {
    const PathSegment& seg = segments[n];
    const bool last = n + 1 == segments.size();
    const std::string cur_name = cur_path.empty() ? "(top level)" : cur_path;
    if (seg.is_index()) {
      const std::string next = index_path(cur_path, seg.index);
      if (!cur.IsSequence())
        override_error(origin, text, next,
                       "cannot index '" + cur_name + "': it is " + describe_node(cur) +
                           " in the config, not a list");
      if (seg.index > cur.size() || (seg.index == cur.size() && !last))
        override_error(origin, text, next,
                       "index out of range ('" + cur_name + "' has " + std::to_string(cur.size()) +
                           " entries)");
      if (seg.index == cur.size()) {
        cur.push_back(value);
      } else if (last) {
        cur[seg.index] = value;
      } else {
        YAML::Node child = cur[seg.index];
        cur.reset(child);
      }
      cur_path = next;
      continue;
    }
    const std::string next = child_path(cur_path, seg.key);
    if (!cur.IsMap() && !cur.IsNull())
      override_error(origin, text, next,
                     "cannot set a key inside '" + cur_name + "': it is " + describe_node(cur) +
                         " in the config, not a map");
    if (last) {
      cur[seg.key] = value;
    } else {
      YAML::Node child = cur[seg.key];
      if (!child.IsDefined()) {
        if (segments[n + 1].is_index())
          override_error(origin, text, index_path(next, segments[n + 1].index),
                         "cannot index '" + next + "': it is not in the config");
        cur[seg.key] = YAML::Node(YAML::NodeType::Map);
        child.reset(cur[seg.key]);
      }
      cur.reset(child);
    }
    cur_path = next;
  }
  src.add_override(path, text);
}

// ---- Reading.

QuantizerSpec read_quantizer(const YamlSource& src, const YAML::Node& node,
                             const std::string& path) {
  MapReader m(src, node, path, kQuantizerKeys, /*null_is_empty=*/true);
  QuantizerSpec q;
  if (m.has("param")) q.param = read_enum(src, m.get("param"), m.path_of("param"), kParams);
  if (m.has("k")) q.k = static_cast<int>(read_int(src, m.get("k"), m.path_of("k"), 0, 1));
  if (m.has("b")) q.b = read_number_min(src, m.get("b"), m.path_of("b"), 0, false);
  if (m.has("i")) q.i = read_number(src, m.get("i"), m.path_of("i"));
  if (m.has("f")) q.f = read_number(src, m.get("f"), m.path_of("f"));
  if (m.has("round")) q.round = read_enum(src, m.get("round"), m.path_of("round"), kRounds);
  if (m.has("overflow"))
    q.overflow = read_enum(src, m.get("overflow"), m.path_of("overflow"), kOverflows);
  if (m.has("granularity"))
    q.granularity = read_enum(src, m.get("granularity"), m.path_of("granularity"), kGranularities);
  if (m.has("i_decay"))
    q.i_decay = read_number_min(src, m.get("i_decay"), m.path_of("i_decay"), 0, false);
  if (m.has("trainable")) q.trainable = read_bool(src, m.get("trainable"), m.path_of("trainable"));
  return q;
}

std::string article(const std::string& word) {
  return (!word.empty() && std::string("aeiou").find(word[0]) != std::string::npos ? "an '"
                                                                                   : "a '") +
         word + "'";
}

LayerSpec read_layer(const YamlSource& src, const YAML::Node& node, const std::string& path,
                     std::size_t index) {
  MapReader m(src, node, path, kLayerKeys);
  LayerSpec layer;
  layer.line = src.line(node, path);
  layer.type = read_enum(src, m.require("type", kLayerTypesText), m.path_of("type"), kLayerTypes);
  const std::string& type = layer.type;
  const std::string for_type = "for " + article(type) + " layer";

  // Keys that depend on the layer type.
  const Keys roles = roles_for(type);
  for (const std::string& key : kAllRoles) {
    if (std::find(roles.begin(), roles.end(), key) == roles.end()) {
      std::string allowed;
      for (const auto& r : roles) allowed += (allowed.empty() ? "" : ", ") + r + "_quantizer";
      m.forbid(key + "_quantizer",
               for_type + (allowed.empty() ? " (it has no quantizers)"
                                           : " (allowed quantizers: " + allowed + ")"));
    }
  }
  const bool conv = type == "conv1d" || type == "conv2d";
  const bool local_pool = type == "max_pool" || type == "avg_pool" || type == "sum_pool";
  const bool merge = type == "add" || type == "concatenate";
  auto only = [&](const char* key, bool allowed, const char* who) {
    if (!allowed) m.forbid(key, for_type + " (only " + who + " have it)");
  };
  const bool linformer = type == "linformer_attention";
  const bool attention = is_attention_block(type);
  const bool einsum_dense = type == "einsum_dense";
  const bool lut_dense = type == "lut_dense";
  only("units", type == "dense" || attention || lut_dense,
       "dense layers, attention and lut_dense blocks");
  only("hidden", lut_dense, "lut_dense blocks");
  only("hidden_layers", lut_dense, "lut_dense blocks");
  only("max_table_bits", lut_dense, "lut_dense blocks");
  only("use_bias", type == "dense" || conv || attention || einsum_dense,
       "dense, conv and einsum_dense layers, attention blocks");
  only("equation", type == "einsum" || einsum_dense, "einsum and einsum_dense layers");
  only("output_shape", einsum_dense, "einsum_dense layers");
  only("projected_length", linformer, "linformer_attention blocks");
  only("input_scale", type == "softmax", "softmax layers");
  only("num_heads", attention, "attention blocks");
  only("key_dim", attention, "attention blocks");
  only("value_dim", attention, "attention blocks");
  only(
      "activation",
      type == "dense" || conv || type == "activation" || type == "add" || einsum_dense || lut_dense,
      "dense, conv, einsum_dense, activation and add layers, lut_dense blocks");
  only("filters", conv, "conv layers");
  only("kernel_size", conv, "conv layers");
  only("padding", conv, "conv layers");
  only("strides", conv || local_pool, "conv and pool layers");
  only("pool_size", local_pool, "max_pool, avg_pool and sum_pool layers");
  only("scale_bits", type == "avg_pool" || type == "global_avg_pool",
       "avg_pool and global_avg_pool layers");
  only("shape", type == "reshape", "reshape layers");
  only("axis", type == "concatenate", "concatenate layers");
  only("batchnorm", type == "dense" || conv, "dense and conv layers");
  only("function", type == "lut", "lut layers");
  only("momentum", type == "batchnorm" || type == "dense" || conv, "layers with batch norm");
  only("epsilon", type == "batchnorm" || type == "dense" || conv, "layers with batch norm");

  layer.name = m.string_or("name", type + "_" + std::to_string(index));
  if (layer.name.empty()) src.fail_expected(m.get("name"), m.path_of("name"), "a non-empty name");
  if (layer.name == "input")
    src.fail_expected(m.get("name"), m.path_of("name"),
                      "a layer name other than 'input' (it names the model input in 'inputs')");
  if (type == "dense" || type == "lut_dense")
    layer.units =
        read_int(src, m.require("units", "a positive integer"), m.path_of("units"), 1, kMaxInt);
  if (type == "lut_dense") {
    layer.hidden = m.int_or("hidden", layer.hidden, 1, 64);
    layer.hidden_layers = m.int_or("hidden_layers", layer.hidden_layers, 0, 1);
    layer.max_table_bits = m.int_or("max_table_bits", layer.max_table_bits, 1, 16);
  }
  // A list of integers in [lo, hi]; a single integer is a list of one.
  auto int_list = [&](const std::string& key, int64_t lo, int64_t hi, bool required) {
    std::vector<int64_t> out;
    if (!m.has(key)) {
      if (required) m.require(key, "an integer or a list of integers");
      return out;
    }
    const YAML::Node node = m.get(key);
    if (node.IsSequence()) {
      if (node.size() == 0) src.fail_expected(node, m.path_of(key), "a non-empty list of integers");
      for (std::size_t n = 0; n < node.size(); ++n)
        out.push_back(read_int(src, node[n], index_path(m.path_of(key), n), lo, hi));
    } else {
      out.push_back(read_int(src, node, m.path_of(key), lo, hi));
    }
    return out;
  };
  if (m.has("inputs")) {
    const YAML::Node node = m.get("inputs");
    if (node.IsScalar()) {
      layer.inputs.push_back(node.as<std::string>());
    } else if (node.IsSequence() && node.size() > 0) {
      for (std::size_t n = 0; n < node.size(); ++n) {
        if (!node[n].IsScalar())
          src.fail_expected(node[n], index_path(m.path_of("inputs"), n), "a layer name");
        layer.inputs.push_back(node[n].as<std::string>());
      }
    } else {
      src.fail_expected(
          node, m.path_of("inputs"),
          "a layer name or a non-empty list of layer names ('input' is the model input)");
    }
  }
  if (merge && layer.inputs.size() < 2)
    src.fail_expected(m.has("inputs") ? m.get("inputs") : node, m.path_of("inputs"),
                      "a list of two or more layer names to " +
                          std::string(type == "add" ? "add" : "concatenate"));
  if (type == "einsum" && layer.inputs.size() != 2)
    src.fail_expected(m.has("inputs") ? m.get("inputs") : node, m.path_of("inputs"),
                      "a list of two layer names (the einsum's operands)");
  if (attention && layer.inputs.size() > 2)
    src.fail_expected(m.get("inputs"), m.path_of("inputs"),
                      "one layer name (self-attention) or two (the query's source, then the keys' "
                      "and values' source)");
  if (!merge && type != "einsum" && !attention && layer.inputs.size() > 1)
    src.fail_expected(m.get("inputs"), m.path_of("inputs"),
                      "one layer name (only add, concatenate and einsum layers take several)");
  if (type == "einsum" || einsum_dense) {
    const YAML::Node eq =
        m.require("equation", einsum_dense ? "an einsum equation such as 'phd,pk->khd' "
                                             "(the second operand is the kernel)"
                                           : "an einsum equation such as 'qhd,khd->hqk'");
    if (!eq.IsScalar()) src.fail_expected(eq, m.path_of("equation"), "an einsum equation");
    layer.equation = eq.as<std::string>();
    try {
      layer.equation = util::parse_einsum(layer.equation).text();
    } catch (const std::invalid_argument& e) {
      src.fail(eq, m.path_of("equation"), e.what());
    }
  }
  if (type == "softmax") layer.input_scale = m.number_or("input_scale", 1.0, 0.0, true);
  if (einsum_dense) {
    layer.output_shape = int_list("output_shape", 1, kMaxInt, true);
    if (layer.output_shape.size() != util::parse_einsum(layer.equation).out.size())
      src.fail_expected(m.get("output_shape"), m.path_of("output_shape"),
                        "one size per output axis of '" + layer.equation + "'");
  }
  if (linformer)
    layer.projected_length = read_int(src, m.require("projected_length", "a positive integer"),
                                      m.path_of("projected_length"), 1, kMaxInt);
  if (attention) {
    layer.num_heads = read_int(src, m.require("num_heads", "a positive integer"),
                               m.path_of("num_heads"), 1, 4096);
    layer.key_dim =
        read_int(src, m.require("key_dim", "a positive integer"), m.path_of("key_dim"), 1, kMaxInt);
    layer.value_dim = m.int_or("value_dim", layer.key_dim, 1, kMaxInt);
    layer.units = m.int_or("units", 0, 1, kMaxInt);
  }
  if (conv) {
    layer.filters =
        read_int(src, m.require("filters", "a positive integer"), m.path_of("filters"), 1, kMaxInt);
    layer.kernel_size = int_list("kernel_size", 1, 4096, true);
    layer.padding = m.enum_or("padding", kPaddings, "valid");
  }
  if (conv || local_pool) layer.strides = int_list("strides", 1, 4096, false);
  if (local_pool) layer.pool_size = int_list("pool_size", 1, 4096, true);
  if (type == "avg_pool" || type == "global_avg_pool")
    layer.scale_bits = static_cast<int>(m.int_or("scale_bits", util::kDefaultAvgScaleBits,
                                                 util::kMinAvgScaleBits, util::kMaxAvgScaleBits));
  if (type == "reshape") {
    layer.shape = int_list("shape", -1, kMaxInt, true);
    if (std::count(layer.shape.begin(), layer.shape.end(), 0) > 0 ||
        std::count(layer.shape.begin(), layer.shape.end(), -1) > 1)
      src.fail_expected(m.get("shape"), m.path_of("shape"),
                        "positive sizes with at most one -1 (inferred), e.g. [28, 28, 1]");
  }
  if (type == "concatenate") layer.axis = m.int_or("axis", -1, -64, 64);
  if (type == "lut") {
    const YAML::Node fn = m.require("function", "a function name such as tanh or sigmoid");
    if (!fn.IsScalar() || fn.as<std::string>().empty())
      src.fail_expected(fn, m.path_of("function"), "a function name such as tanh or sigmoid");
    layer.function = fn.as<std::string>();
  }
  layer.batchnorm = m.bool_or("batchnorm", false);
  layer.momentum = m.number_or("momentum", 0.99, 0.0, false);
  if (layer.momentum >= 1.0)
    src.fail_expected(m.get("momentum"), m.path_of("momentum"), "a number in [0, 1)");
  layer.epsilon = m.number_or("epsilon", 1e-3, 0.0, true);
  layer.activation = m.enum_or("activation", kActivations, "linear");
  layer.use_bias = m.bool_or("use_bias", true);
  for (const std::string& role : roles) {
    const std::string key = role + "_quantizer";
    if (m.has(key)) layer.quantizers[role] = read_quantizer(src, m.get(key), m.path_of(key));
  }
  return layer;
}

// A primitive layer of block `b`, appended to `out`: named <block><suffix>, at the block's
// place in the YAML (for error messages).
LayerSpec& block_layer(std::vector<LayerSpec>& out, const LayerSpec& b, const std::string& type,
                       const std::string& suffix, std::vector<std::string> inputs) {
  LayerSpec l;
  l.type = type;
  l.name = b.name + suffix;
  l.inputs = std::move(inputs);
  l.line = b.line;
  l.yaml_index = b.yaml_index;
  out.push_back(std::move(l));
  return out.back();
}

}  // namespace

std::vector<LayerSpec> expand_attention(const LayerSpec& b, const std::string& previous) {
  std::string q_src = b.inputs.empty() ? previous : b.inputs[0];
  std::string kv_src = b.inputs.size() > 1 ? b.inputs[1] : q_src;
  std::vector<LayerSpec> out;
  auto layer = [&](const std::string& type, const std::string& suffix,
                   std::vector<std::string> inputs) -> LayerSpec& {
    return block_layer(out, b, type, suffix, std::move(inputs));
  };
  // The raw model input is quantized once for the three projections (each would have its own
  // trainable input quantizer otherwise, and the hardware takes one quantizer of its input).
  if (q_src == "input" || kv_src == "input") {
    layer("quantize", "_in", {"input"});
    if (q_src == "input") q_src = b.name + "_in";
    if (kv_src == "input") kv_src = b.name + "_in";
  }
  auto dense = [&](const std::string& suffix, const std::string& in, int64_t units, bool bias) {
    LayerSpec& l = layer("dense", suffix, {in});
    l.units = units;
    l.use_bias = bias;
  };
  const int64_t H = b.num_heads, dk = b.key_dim, dv = b.value_dim;
  dense("_q", q_src, H * dk, b.use_bias);
  dense("_k", kv_src, H * dk, false);  // a bias on K adds q.b_k to a whole row: it cancels
  dense("_v", kv_src, H * dv, b.use_bias);
  layer("reshape", "_qh", {b.name + "_q"}).shape = {-1, H, dk};
  layer("reshape", "_kh", {b.name + "_k"}).shape = {-1, H, dk};
  layer("reshape", "_vh", {b.name + "_v"}).shape = {-1, H, dv};
  std::string keys = b.name + "_kh", values = b.name + "_vh";
  if (b.type == "linformer_attention") {
    // Keys and values projected along the particle axis to projected_length rows: the scores
    // are [heads, P, k], so the cost grows with P, not P^2.
    const int64_t J = b.projected_length;
    LayerSpec& kp = layer("einsum_dense", "_kp", {keys});
    kp.equation = "phd,pj->jhd";
    kp.output_shape = {J, H, dk};
    kp.use_bias = false;
    LayerSpec& vp = layer("einsum_dense", "_vp", {values});
    vp.equation = "phd,pj->jhd";
    vp.output_shape = {J, H, dv};
    vp.use_bias = false;
    keys = b.name + "_kp";
    values = b.name + "_vp";
  }
  layer("einsum", "_scores", {b.name + "_qh", keys}).equation = "qhd,khd->hqk";
  // The [heads, P, P] tensors get one width for the whole tensor: a width per query or key
  // position would make the hardware depend on the particles' order.
  QuantizerSpec whole;
  whole.granularity = "tensor";
  LayerSpec& sm = layer("softmax", "_softmax", {b.name + "_scores"});
  sm.input_scale = 1.0 / std::sqrt(static_cast<double>(dk));
  sm.quantizers["input"] = whole;
  sm.quantizers["output"] = whole;
  LayerSpec& ctx = layer("einsum", "_context", {b.name + "_softmax", values});
  ctx.equation = "hqk,khv->qhv";
  QuantizerSpec probabilities = whole;  // in [0, 1]: unsigned
  probabilities.param = "kif";
  probabilities.k = 0;
  probabilities.i = 1;
  probabilities.f = 7;
  probabilities.overflow = "SAT";  // 1.0 (one key takes it all) must not wrap to 0
  ctx.quantizers["input"] = probabilities;
  layer("reshape", "_merge", {b.name + "_context"}).shape = {-1, H * dv};
  LayerSpec& o = layer("dense", "", {b.name + "_merge"});
  o.units = b.units;  // 0: the query's features, resolved by the model builder
  o.units_from = q_src;
  o.use_bias = b.use_bias;
  return out;
}

std::vector<LayerSpec> expand_lut_dense(const LayerSpec& b, const std::string& previous) {
  std::string src = b.inputs.empty() ? previous : b.inputs[0];
  std::vector<LayerSpec> out;
  auto layer = [&](const std::string& type, const std::string& suffix,
                   std::vector<std::string> inputs) -> LayerSpec& {
    return block_layer(out, b, type, suffix, std::move(inputs));
  };
  if (src == "input") {  // the raw model input: quantized once before it is fanned out
    layer("quantize", "_in", {"input"});
    src = b.name + "_in";
  }
  layer("reshape", "_col", {src}).shape = {-1, 1};
  LayerSpec& fan = layer("concatenate", "_fanout", {});
  fan.inputs.assign(static_cast<size_t>(b.units), b.name + "_col");
  fan.axis = -1;
  LayerSpec& t = layer("learned_lut", "_tables", {b.name + "_fanout"});
  t.hidden = b.hidden;
  t.hidden_layers = b.hidden_layers;
  t.max_table_bits = b.max_table_bits;
  if (auto it = b.quantizers.find("input"); it != b.quantizers.end())
    t.quantizers["input"] = it->second;
  if (auto it = b.quantizers.find("table"); it != b.quantizers.end())
    t.quantizers["output"] = it->second;
  layer("global_sum_pool", "_sum", {b.name + "_tables"});
  LayerSpec& o = layer("activation", "", {b.name + "_sum"});
  o.activation = b.activation;
  if (auto it = b.quantizers.find("output"); it != b.quantizers.end())
    o.quantizers["output"] = it->second;
  return out;
}

namespace {

ModelSpec read_model(const YamlSource& src, const YAML::Node& node, const std::string& path) {
  MapReader m(src, node, path, kModelKeys);
  ModelSpec model;

  const YAML::Node shape = m.require("input_shape", "a list of positive integers");
  const std::string shape_path = m.path_of("input_shape");
  if (!shape.IsSequence() || shape.size() == 0)
    src.fail_expected(shape, shape_path, "a non-empty list of positive integers, e.g. [28, 28]");
  for (std::size_t n = 0; n < shape.size(); ++n)
    model.input_shape.push_back(read_int(src, shape[n], index_path(shape_path, n), 1, kMaxInt));

  if (m.has("quantizer_defaults")) {
    const std::string dpath = m.path_of("quantizer_defaults");
    MapReader d(src, m.get("quantizer_defaults"), dpath, kDefaultPlaces, /*null_is_empty=*/true);
    for (const std::string& place : kDefaultPlaces)
      if (d.has(place)) model.defaults[place] = read_quantizer(src, d.get(place), d.path_of(place));
  }

  const YAML::Node layers = m.require("layers", "a non-empty list of layers");
  const std::string layers_path = m.path_of("layers");
  if (!layers.IsSequence() || layers.size() == 0)
    src.fail_expected(layers, layers_path,
                      "a non-empty list of layers, e.g. [{type: dense, units: 10}]");
  std::vector<std::string> name_paths;  // per model layer: the YAML layer it comes from
  for (std::size_t n = 0; n < layers.size(); ++n) {
    const std::string lpath = index_path(layers_path, n);
    LayerSpec layer = read_layer(src, layers[n], lpath, n);
    layer.yaml_index = static_cast<int>(n);
    std::vector<LayerSpec> read;
    if (is_attention_block(layer.type) || layer.type == "lut_dense") {
      const std::string previous = model.layers.empty() ? "input" : model.layers.back().name;
      read = layer.type == "lut_dense" ? expand_lut_dense(layer, previous)
                                       : expand_attention(layer, previous);
      for (LayerSpec& l : read) l.block = static_cast<int>(model.blocks.size());
      model.blocks.push_back(std::move(layer));
    } else
      read.push_back(std::move(layer));
    for (LayerSpec& l : read) {
      for (std::size_t prev = 0; prev < model.layers.size(); ++prev) {
        if (model.layers[prev].name == l.name) {
          MapReader again(src, layers[n], lpath, kLayerKeys);
          const YAML::Node at = again.has("name") ? again.get("name") : layers[n];
          src.fail(at, child_path(lpath, "name"),
                   "expected a unique layer name, got '" + l.name + "' (already used by " +
                       name_paths[prev] + ")");
        }
      }
      model.layers.push_back(std::move(l));
      name_paths.push_back(lpath);
    }
  }
  return model;
}

SplitSource read_source(const YamlSource& src, const YAML::Node& node, const std::string& path,
                        bool need_datasets) {
  MapReader m(src, node, path, kSourceKeys);
  SplitSource s;
  s.file = read_string(src, m.require("file", "a file path"), m.path_of("file"));
  if (s.file.empty()) src.fail_expected(m.get("file"), m.path_of("file"), "a non-empty file path");
  for (const char* key : {"features", "labels"}) {
    std::string value;
    if (need_datasets) {
      value =
          read_string(src, m.require(key, "an HDF5 data set name (format hdf5)"), m.path_of(key));
      if (value.empty())
        src.fail_expected(m.get(key), m.path_of(key), "a non-empty HDF5 data set name");
    } else {
      value = m.string_or(key, "");
    }
    (std::string(key) == "features" ? s.features : s.labels) = value;
  }
  s.teacher = m.string_or("teacher", "");
  if (m.has("teacher") && s.teacher.empty())
    src.fail_expected(m.get("teacher"), m.path_of("teacher"), "a non-empty HDF5 data set name");
  return s;
}

DataSpec read_data(const YamlSource& src, const YAML::Node& node, const std::string& path) {
  MapReader m(src, node, path, kDataKeys);
  DataSpec d;
  d.format = m.enum_or("format", kFormats, d.format);
  const bool need_datasets = d.format == "hdf5";
  d.train = read_source(src, m.require("train", "a map with keys file, features, labels"),
                        m.path_of("train"), need_datasets);
  if (m.has("validation"))
    d.validation = read_source(src, m.get("validation"), m.path_of("validation"), need_datasets);
  if (m.has("test")) d.test = read_source(src, m.get("test"), m.path_of("test"), need_datasets);

  const auto read_fraction = [&](const std::string& key, double fallback) {
    if (!m.has(key)) return fallback;
    const YAML::Node v = m.get(key);
    const std::string expected = "a fraction in [0, 1)";
    if (!v.IsScalar()) src.fail_expected(v, m.path_of(key), expected);
    const double x = read_number(src, v, m.path_of(key));
    if (!(x >= 0 && x < 1)) src.fail_expected(v, m.path_of(key), expected);
    return x;
  };
  d.validation_split = read_fraction("validation_split", d.validation_split);
  d.test_split = read_fraction("test_split", d.test_split);
  const double carved =
      (d.validation.present() ? 0.0 : d.validation_split) + (d.test.present() ? 0.0 : d.test_split);
  if (carved >= 1.0) {
    const std::string key = m.has("test_split") ? "test_split" : "validation_split";
    std::ostringstream got;
    got << d.validation_split << " + " << d.test_split;
    src.fail(m.has(key) ? m.get(key) : node, m.path_of(key),
             "expected validation_split + test_split < 1, got " + got.str());
  }
  d.standardize = m.bool_or("standardize", d.standardize);
  d.split_seed = m.uint64_or("split_seed", d.split_seed);
  if (m.has("feature_names")) {
    const YAML::Node names = m.get("feature_names");
    const std::string npath = m.path_of("feature_names");
    if (!names.IsSequence()) src.fail_expected(names, npath, "a list of column names");
    for (std::size_t n = 0; n < names.size(); ++n) {
      const std::string name = read_string(src, names[n], index_path(npath, n));
      if (name.empty()) src.fail_expected(names[n], index_path(npath, n), "a non-empty name");
      if (std::find(d.feature_names.begin(), d.feature_names.end(), name) != d.feature_names.end())
        src.fail(names[n], index_path(npath, n),
                 "expected unique feature names, got '" + name + "' twice");
      d.feature_names.push_back(name);
    }
  }
  const auto read_classes = [&](const std::string& key) {
    std::vector<int64_t> out;
    if (!m.has(key)) return out;
    const YAML::Node list = m.get(key);
    const std::string lpath = m.path_of(key);
    if (!list.IsSequence())
      src.fail_expected(list, lpath, "a list of class labels (integers >= 0)");
    for (std::size_t n = 0; n < list.size(); ++n) {
      const int64_t c = read_int(src, list[n], index_path(lpath, n), 0, kMaxInt);
      if (std::find(out.begin(), out.end(), c) != out.end())
        src.fail(list[n], index_path(lpath, n),
                 "expected unique class labels, got " + std::to_string(c) + " twice");
      out.push_back(c);
    }
    return out;
  };
  d.classes = read_classes("classes");
  d.anomaly_classes = read_classes("anomaly_classes");
  if (!d.anomaly_classes.empty()) {
    const YAML::Node list = m.get("anomaly_classes");
    const std::string lpath = m.path_of("anomaly_classes");
    if (d.classes.empty())
      src.fail(list, lpath,
               "needs data.classes (the normal classes the autoencoder is trained on); the "
               "anomalies are the test samples of the other classes");
    for (std::size_t n = 0; n < d.anomaly_classes.size(); ++n)
      if (std::find(d.classes.begin(), d.classes.end(), d.anomaly_classes[n]) != d.classes.end())
        src.fail(list[n], index_path(lpath, n),
                 "class " + std::to_string(d.anomaly_classes[n]) +
                     " is also in data.classes; a class is either normal or an anomaly");
  }
  return d;
}

BetaSchedule read_beta_pid(const YamlSource& src, const YAML::Node& node, const std::string& path) {
  MapReader m(src, node, path, kBetaPIDKeys);
  BetaSchedule b;
  b.kind = "pid";
  BetaPIDSpec& c = b.pid;
  c.target_ebops = read_number_min(src, m.require("target_ebops", "a positive number"),
                                   m.path_of("target_ebops"), 0, true);
  c.init = m.number_or("init", c.init, 0, true);
  c.p = m.number_or("p", c.p, 0, false);
  c.i = m.number_or("i", c.i, 0, true);
  c.d = m.number_or("d", c.d, 0, false);
  c.warmup_epochs = m.int_or("warmup_epochs", c.warmup_epochs, 0, kMaxInt);
  c.interval_steps = m.int_or("interval_steps", c.interval_steps, 0, kMaxInt);
  c.ramp_epochs = m.number_or("ramp_epochs", c.ramp_epochs, 0, false);
  c.min = m.number_or("min", c.min, 0, false);
  c.max = m.number_or("max", c.max, 0, true);
  if (!(c.min <= c.init && c.init <= c.max)) {
    std::ostringstream os;
    os << "expected min <= init <= max, got min " << c.min << ", init " << c.init << ", max "
       << c.max;
    src.fail(node, path, os.str());
  }
  return b;
}

BetaSchedule read_beta(const YamlSource& src, const YAML::Node& node, const std::string& path) {
  const std::string expected =
      "a number >= 0 or a map {kind: constant|linear|log, value: x | points: [[epoch, beta], "
      "...]} or {kind: pid, target_ebops: x, ...}";
  BetaSchedule b;
  if (node.IsScalar()) {
    b.kind = "constant";
    b.value = read_number_min(src, node, path, 0, false);
    return b;
  }
  if (!node.IsMap()) src.fail_expected(node, path, expected);
  if (node["kind"].IsScalar() && node["kind"].Scalar() == "pid")
    return read_beta_pid(src, node, path);
  MapReader m(src, node, path, kBetaKeys);
  b.kind = read_enum(src, m.require("kind", "one of constant, linear, log, pid"), m.path_of("kind"),
                     kBetaKinds);
  if (b.kind == "constant") {
    m.forbid("points", "for kind constant (use kind linear or log)");
    b.value =
        read_number_min(src, m.require("value", "a number >= 0"), m.path_of("value"), 0, false);
    return b;
  }
  m.forbid("value", "for kind " + b.kind + " (give points: [[epoch, beta], ...])");
  const YAML::Node points = m.require("points", "a list of [epoch, beta] pairs");
  const std::string ppath = m.path_of("points");
  if (!points.IsSequence() || points.size() == 0)
    src.fail_expected(points, ppath, "a non-empty list of [epoch, beta] pairs");
  const bool log = b.kind == "log";
  for (std::size_t n = 0; n < points.size(); ++n) {
    const YAML::Node p = points[n];
    const std::string pp = index_path(ppath, n);
    if (!p.IsSequence() || p.size() != 2) src.fail_expected(p, pp, "a pair [epoch, beta]");
    BetaPoint point;
    point.epoch = read_number_min(src, p[0], index_path(pp, 0), 0, false);
    point.value = read_number_min(src, p[1], index_path(pp, 1), 0, log);
    if (!b.points.empty() && point.epoch < b.points.back().epoch) {
      std::ostringstream os;
      os << "expected epochs in increasing order (>= " << b.points.back().epoch << "), got '"
         << p[0].Scalar() << "'";
      src.fail(p[0], index_path(pp, 0), os.str());
    }
    b.points.push_back(point);
  }
  return b;
}

EarlyStoppingSpec read_early_stopping(const YamlSource& src, const YAML::Node& node,
                                      const std::string& path, const std::string& loss) {
  MapReader m(src, node, path, kEarlyStoppingKeys, /*null_is_empty=*/true);
  EarlyStoppingSpec e;
  e.enabled = true;
  e.patience = m.int_or("patience", e.patience, 1, kMaxInt);
  e.min_delta = m.number_or("min_delta", e.min_delta, 0, false);
  const bool classification = loss == "cross_entropy";
  e.monitor = m.enum_or("monitor", kMonitors, classification ? "val_accuracy" : "val_loss");
  if (e.monitor == "val_accuracy" && !classification)
    src.fail(m.get("monitor"), m.path_of("monitor"),
             "expected 'val_loss' with train.loss: " + loss +
                 " (accuracy is only measured for cross_entropy), got 'val_accuracy'");
  if (m.has("ebops_below"))
    e.ebops_below = read_number_min(src, m.get("ebops_below"), m.path_of("ebops_below"), 0, true);
  return e;
}

DistillationSpec read_distillation(const YamlSource& src, const YAML::Node& node,
                                   const std::string& path, const std::string& loss) {
  MapReader m(src, node, path, kDistillationKeys, /*null_is_empty=*/true);
  DistillationSpec d;
  d.enabled = true;
  d.teacher = m.string_or("teacher", "");
  if (m.has("teacher") && d.teacher.empty())
    src.fail_expected(m.get("teacher"), m.path_of("teacher"),
                      "a non-empty path (TorchScript file, hgqt checkpoint or run directory)");
  d.target = m.enum_or("target", kDistillTargets, d.target);
  const bool classification = loss == "cross_entropy";
  const bool score = d.target == "reconstruction_error";
  d.alpha = m.number_or("alpha", score ? 0.0 : d.alpha, 0, false);
  if (d.alpha > 1) src.fail_expected(m.get("alpha"), m.path_of("alpha"), "a number in [0, 1]");
  if (score && d.alpha != 0)
    src.fail(m.get("alpha"), m.path_of("alpha"),
             "expected 0 with target: reconstruction_error (the teacher's score is the only "
             "target; there are no true scores), got '" +
                 m.get("alpha").Scalar() + "'");
  if (score && classification)
    src.fail(node, path,
             "target: reconstruction_error regresses a score: it needs train.loss: mse");
  d.loss = m.enum_or("loss", kDistillLosses, classification ? "kl" : "mse");
  if (d.loss == "kl" && !classification)
    src.fail(m.get("loss"), m.path_of("loss"),
             "expected mse or huber with train.loss: " + loss +
                 " (kl compares class distributions), got 'kl'");
  d.temperature = m.number_or("temperature", d.temperature, 0, true);
  if (d.loss != "kl") m.forbid("temperature", "with loss " + d.loss + " (only with loss: kl)");
  d.huber_delta = m.number_or("huber_delta", d.huber_delta, 0, true);
  if (d.loss != "huber")
    m.forbid("huber_delta", "with loss " + d.loss + " (only with loss: huber)");
  d.teacher_outputs = m.enum_or("teacher_outputs", kTeacherOutputs, d.teacher_outputs);
  if (d.loss != "kl") m.forbid("teacher_outputs", "with loss " + d.loss + " (only with loss: kl)");
  return d;
}

TrainSpec read_train(const YamlSource& src, const YAML::Node& node, const std::string& path) {
  MapReader m(src, node, path, kTrainKeys, /*null_is_empty=*/true);
  TrainSpec t;
  t.epochs = m.int_or("epochs", t.epochs, 1, kMaxInt);
  t.batch_size = m.int_or("batch_size", t.batch_size, 1, kMaxInt);
  t.optimizer = m.enum_or("optimizer", kOptimizers, t.optimizer);
  t.lr = m.number_or("lr", t.lr, 0, true);
  t.momentum = m.number_or("momentum", t.momentum, 0, false);
  t.weight_decay = m.number_or("weight_decay", t.weight_decay, 0, false);
  t.lr_schedule = m.enum_or("lr_schedule", kLrSchedules, t.lr_schedule);
  t.min_lr = m.number_or("min_lr", t.min_lr, 0, false);
  // Keys of one schedule are refused with another (they would silently do nothing).
  if (t.lr_schedule == "step") {
    t.lr_step_epochs = m.int_or("lr_step_epochs", t.lr_step_epochs, 1, kMaxInt);
    t.lr_gamma = m.number_or("lr_gamma", t.lr_gamma, 0, true);
    if (t.lr_gamma > 1)
      src.fail_expected(m.get("lr_gamma"), m.path_of("lr_gamma"), "a number in (0, 1]");
  } else {
    const std::string why = "with lr_schedule " + t.lr_schedule + " (only with lr_schedule: step)";
    m.forbid("lr_step_epochs", why);
    m.forbid("lr_gamma", why);
  }
  if (t.lr_schedule == "cosine_restarts") {
    t.lr_restart_epochs = m.int_or("lr_restart_epochs", t.lr_restart_epochs, 1, kMaxInt);
    t.lr_restart_mult = m.number_or("lr_restart_mult", t.lr_restart_mult, 1, false);
  } else {
    const std::string why =
        "with lr_schedule " + t.lr_schedule + " (only with lr_schedule: cosine_restarts)";
    m.forbid("lr_restart_epochs", why);
    m.forbid("lr_restart_mult", why);
  }
  t.seed = m.uint64_or("seed", t.seed);
  t.loss = m.enum_or("loss", kLosses, t.loss);
  t.target = m.enum_or("target", kTargets, t.target);
  if (t.target == "input") {
    if (!m.has("loss"))
      t.loss = "mse";  // an autoencoder's reconstruction loss
    else if (t.loss != "mse")
      src.fail(m.get("loss"), m.path_of("loss"),
               "expected 'mse' with train.target: input (an autoencoder is trained to reproduce "
               "its input), got '" +
                   t.loss + "'");
  }
  if (m.has("beta")) t.beta = read_beta(src, m.get("beta"), m.path_of("beta"));
  t.gamma = m.number_or("gamma", t.gamma, 0, false);
  t.threads = m.int_or("threads", t.threads, 0, kMaxInt);
  t.device = m.enum_or("device", kDevices, t.device);
  if (m.has("early_stopping"))
    t.early_stopping =
        read_early_stopping(src, m.get("early_stopping"), m.path_of("early_stopping"), t.loss);
  if (m.has("distillation")) {
    if (t.target == "input")
      src.fail(m.get("distillation"), m.path_of("distillation"),
               "not allowed with train.target: input (an autoencoder learns its input, not a "
               "teacher)");
    t.distillation =
        read_distillation(src, m.get("distillation"), m.path_of("distillation"), t.loss);
  }
  return t;
}

RunConfig read_run_config(const YamlSource& src, const YAML::Node& root) {
  if (!root.IsDefined() || root.IsNull())
    src.fail_expected(root, "", "a map with keys name, model, data, train");
  MapReader m(src, root, "", kTopKeys);
  RunConfig c;
  if (m.has("name")) {
    c.name = read_string(src, m.get("name"), "name");
    if (c.name.empty()) src.fail_expected(m.get("name"), "name", "a non-empty name");
  }
  c.model = read_model(src, m.require("model", "a map with keys input_shape, layers"), "model");
  c.data = read_data(src, m.require("data", "a map with keys format, train, ..."), "data");
  TrainSpec defaults;
  c.train = m.has("train") ? read_train(src, m.get("train"), "train") : defaults;
  const bool score_student =
      c.train.distillation.enabled && c.train.distillation.target == "reconstruction_error";
  if (!c.data.anomaly_classes.empty() && c.train.target != "input" && !score_student) {
    const YAML::Node list = m.get("data")["anomaly_classes"];
    src.fail(list, "data.anomaly_classes",
             "only used with train.target: input (the anomaly score of an autoencoder) or a "
             "distilled score (train.distillation.target: reconstruction_error), but "
             "train.target is '" +
                 c.train.target + "'");
  }
  return c;
}

YAML::Node load_text(const std::string& text, const std::string& origin) {
  try {
    return YAML::Load(text);
  } catch (const YAML::Exception& e) {
    std::string where = origin;
    if (!e.mark.is_null())
      where += ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1);
    throw ConfigError(where + ": YAML syntax error: " + e.msg);
  }
}

// ---- Writing.

// Shortest decimal form that reads back to the same double.
std::string format_double(double v) {
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);  // integral: "300", not "3e+02"
    return buf;
  }
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

void emit_quantizer(YAML::Emitter& out, const QuantizerSpec& q) {
  out << YAML::Flow << YAML::BeginMap;
  if (q.param) out << YAML::Key << "param" << YAML::Value << *q.param;
  if (q.k) out << YAML::Key << "k" << YAML::Value << std::to_string(*q.k);
  if (q.b) out << YAML::Key << "b" << YAML::Value << format_double(*q.b);
  if (q.i) out << YAML::Key << "i" << YAML::Value << format_double(*q.i);
  if (q.f) out << YAML::Key << "f" << YAML::Value << format_double(*q.f);
  if (q.round) out << YAML::Key << "round" << YAML::Value << *q.round;
  if (q.overflow) out << YAML::Key << "overflow" << YAML::Value << *q.overflow;
  if (q.granularity) out << YAML::Key << "granularity" << YAML::Value << *q.granularity;
  if (q.i_decay) out << YAML::Key << "i_decay" << YAML::Value << format_double(*q.i_decay);
  if (q.trainable)
    out << YAML::Key << "trainable" << YAML::Value << (*q.trainable ? "true" : "false");
  out << YAML::EndMap;
}

void emit_model_body(YAML::Emitter& out, const ModelSpec& model) {
  out << YAML::Key << "input_shape" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (int64_t d : model.input_shape) out << std::to_string(d);
  out << YAML::EndSeq;
  out << YAML::Key << "quantizer_defaults" << YAML::Value;
  if (model.defaults.empty()) out << YAML::Flow;
  out << YAML::BeginMap;
  for (const std::string& place : kDefaultPlaces) {
    const auto it = model.defaults.find(place);
    if (it == model.defaults.end()) continue;
    out << YAML::Key << place << YAML::Value;
    emit_quantizer(out, it->second);
  }
  out << YAML::EndMap;
  out << YAML::Key << "layers" << YAML::Value << YAML::BeginSeq;
  int last_block = -1;
  for (const LayerSpec& expanded : model.layers) {
    if (expanded.block >= 0 && expanded.block == last_block) continue;  // written with its block
    last_block = expanded.block;
    const LayerSpec& layer = expanded.block >= 0 ? model.blocks.at(expanded.block) : expanded;
    out << YAML::Flow << YAML::BeginMap;
    out << YAML::Key << "type" << YAML::Value << layer.type;
    out << YAML::Key << "name" << YAML::Value << layer.name;
    const bool conv = layer.type == "conv1d" || layer.type == "conv2d";
    auto ints = [&](const char* key, const std::vector<int64_t>& v) {
      if (v.empty()) return;
      out << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginSeq;
      for (int64_t d : v) out << std::to_string(d);
      out << YAML::EndSeq;
    };
    if (!layer.inputs.empty()) {
      out << YAML::Key << "inputs" << YAML::Value << YAML::Flow << YAML::BeginSeq;
      for (const auto& n : layer.inputs) out << n;
      out << YAML::EndSeq;
    }
    if (layer.type == "lut_dense") {
      out << YAML::Key << "hidden" << YAML::Value << std::to_string(layer.hidden);
      out << YAML::Key << "hidden_layers" << YAML::Value << std::to_string(layer.hidden_layers);
      out << YAML::Key << "max_table_bits" << YAML::Value << std::to_string(layer.max_table_bits);
    }
    if (layer.type == "dense" || layer.type == "lut_dense" ||
        (is_attention_block(layer.type) && layer.units > 0))
      out << YAML::Key << "units" << YAML::Value << std::to_string(layer.units);
    if (layer.type == "einsum_dense") {
      out << YAML::Key << "equation" << YAML::Value << layer.equation;
      ints("output_shape", layer.output_shape);
      out << YAML::Key << "activation" << YAML::Value << layer.activation;
      out << YAML::Key << "use_bias" << YAML::Value << (layer.use_bias ? "true" : "false");
    }
    if (layer.type == "linformer_attention")
      out << YAML::Key << "projected_length" << YAML::Value
          << std::to_string(layer.projected_length);
    if (is_attention_block(layer.type)) {
      out << YAML::Key << "num_heads" << YAML::Value << std::to_string(layer.num_heads);
      out << YAML::Key << "key_dim" << YAML::Value << std::to_string(layer.key_dim);
      out << YAML::Key << "value_dim" << YAML::Value << std::to_string(layer.value_dim);
      out << YAML::Key << "use_bias" << YAML::Value << (layer.use_bias ? "true" : "false");
    }
    if (conv) {
      out << YAML::Key << "filters" << YAML::Value << std::to_string(layer.filters);
      ints("kernel_size", layer.kernel_size);
      out << YAML::Key << "padding" << YAML::Value << layer.padding;
    }
    ints("strides", layer.strides);
    ints("pool_size", layer.pool_size);
    if (layer.scale_bits != util::kDefaultAvgScaleBits)
      out << YAML::Key << "scale_bits" << YAML::Value << std::to_string(layer.scale_bits);
    ints("shape", layer.shape);
    if (layer.type == "concatenate")
      out << YAML::Key << "axis" << YAML::Value << std::to_string(layer.axis);
    if (layer.type == "lut") out << YAML::Key << "function" << YAML::Value << layer.function;
    if (layer.type == "einsum") out << YAML::Key << "equation" << YAML::Value << layer.equation;
    if (layer.type == "softmax" && layer.input_scale != 1.0)
      out << YAML::Key << "input_scale" << YAML::Value << format_double(layer.input_scale);
    if (layer.type == "dense" || conv || layer.type == "activation" || layer.type == "add" ||
        layer.type == "lut_dense")
      out << YAML::Key << "activation" << YAML::Value << layer.activation;
    if (layer.type == "dense" || conv) {
      out << YAML::Key << "use_bias" << YAML::Value << (layer.use_bias ? "true" : "false");
      out << YAML::Key << "batchnorm" << YAML::Value << (layer.batchnorm ? "true" : "false");
    }
    if (layer.batchnorm || layer.type == "batchnorm") {
      out << YAML::Key << "momentum" << YAML::Value << format_double(layer.momentum);
      out << YAML::Key << "epsilon" << YAML::Value << format_double(layer.epsilon);
    }
    for (const std::string& role : kAllRoles) {
      const auto it = layer.quantizers.find(role);
      if (it == layer.quantizers.end()) continue;
      out << YAML::Key << role + "_quantizer" << YAML::Value;
      emit_quantizer(out, it->second);
    }
    out << YAML::EndMap;
  }
  out << YAML::EndSeq;
}

void emit_source(YAML::Emitter& out, const std::string& key, const SplitSource& s) {
  out << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginMap;
  out << YAML::Key << "file" << YAML::Value << s.file;
  if (!s.features.empty()) out << YAML::Key << "features" << YAML::Value << s.features;
  if (!s.labels.empty()) out << YAML::Key << "labels" << YAML::Value << s.labels;
  if (!s.teacher.empty()) out << YAML::Key << "teacher" << YAML::Value << s.teacher;
  out << YAML::EndMap;
}

void emit_beta(YAML::Emitter& out, const BetaSchedule& b) {
  out << YAML::Flow << YAML::BeginMap;
  out << YAML::Key << "kind" << YAML::Value << b.kind;
  if (b.kind == "pid") {
    const BetaPIDSpec& c = b.pid;
    for (const auto& [k, v] : {std::pair<const char*, double>{"target_ebops", c.target_ebops},
                               {"init", c.init},
                               {"p", c.p},
                               {"i", c.i},
                               {"d", c.d}})
      out << YAML::Key << k << YAML::Value << format_double(v);
    out << YAML::Key << "warmup_epochs" << YAML::Value << c.warmup_epochs;
    if (c.ramp_epochs >= 0)  // unset (a config built in code): the reader's default again
      out << YAML::Key << "ramp_epochs" << YAML::Value << format_double(c.ramp_epochs);
    out << YAML::Key << "interval_steps" << YAML::Value << c.interval_steps;
    out << YAML::Key << "min" << YAML::Value << format_double(c.min);
    out << YAML::Key << "max" << YAML::Value << format_double(c.max);
  } else if (b.kind == "constant") {
    out << YAML::Key << "value" << YAML::Value << format_double(b.value);
  } else {
    out << YAML::Key << "points" << YAML::Value << YAML::BeginSeq;
    for (const BetaPoint& p : b.points)
      out << YAML::BeginSeq << format_double(p.epoch) << format_double(p.value) << YAML::EndSeq;
    out << YAML::EndSeq;
  }
  out << YAML::EndMap;
}

template <typename T>
void emit_kv(YAML::Emitter& out, const std::string& key, const T& value) {
  out << YAML::Key << key << YAML::Value << value;
}

}  // namespace

// ---- Public API.

QuantizerSpec QuantizerSpec::merged(const QuantizerSpec& over) const {
  QuantizerSpec out = *this;
  if (over.param) out.param = over.param;
  if (over.k) out.k = over.k;
  if (over.b) out.b = over.b;
  if (over.i) out.i = over.i;
  if (over.f) out.f = over.f;
  if (over.round) out.round = over.round;
  if (over.overflow) out.overflow = over.overflow;
  if (over.granularity) out.granularity = over.granularity;
  if (over.i_decay) out.i_decay = over.i_decay;
  if (over.trainable) out.trainable = over.trainable;
  return out;
}

RunConfig parse_run_config(const std::string& yaml_text, const std::string& origin,
                           const std::vector<std::string>& overrides) {
  YamlSource src(origin);
  YAML::Node root = load_text(yaml_text, origin);
  if (!root.IsDefined() || root.IsNull() || root.IsMap()) {
    for (const std::string& text : overrides) apply_override(root, src, origin, text);
  } else if (!overrides.empty()) {
    src.fail_expected(root, "", "a map with keys name, model, data, train");
  }
  return read_run_config(src, root);
}

RunConfig load_run_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw ConfigError("cannot read config file '" + path + "' (it is a folder)");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError("cannot read config file '" + path + "'");
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw ConfigError("cannot read config file '" + path + "'");
  RunConfig config = parse_run_config(text.str(), path, overrides);
  config.source_path = path;
  return config;
}

std::string model_to_yaml(const ModelSpec& model) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  emit_model_body(out, model);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

ModelSpec parse_model_yaml(const std::string& yaml_text, const std::string& origin) {
  YamlSource src(origin);
  const YAML::Node root = load_text(yaml_text, origin);
  return read_model(src, root, "");
}

std::string to_yaml(const RunConfig& c) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  emit_kv(out, "name", c.name);

  out << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  emit_model_body(out, c.model);
  out << YAML::EndMap;

  const DataSpec& d = c.data;
  out << YAML::Key << "data" << YAML::Value << YAML::BeginMap;
  emit_kv(out, "format", d.format);
  emit_source(out, "train", d.train);
  if (d.validation.present()) emit_source(out, "validation", d.validation);
  if (d.test.present()) emit_source(out, "test", d.test);
  emit_kv(out, "validation_split", format_double(d.validation_split));
  emit_kv(out, "test_split", format_double(d.test_split));
  emit_kv(out, "standardize", std::string(d.standardize ? "true" : "false"));
  emit_kv(out, "split_seed", std::to_string(d.split_seed));
  out << YAML::Key << "feature_names" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const std::string& n : d.feature_names) out << n;
  out << YAML::EndSeq;
  out << YAML::Key << "classes" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (int64_t k : d.classes) out << std::to_string(k);
  out << YAML::EndSeq;
  out << YAML::Key << "anomaly_classes" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (int64_t k : d.anomaly_classes) out << std::to_string(k);
  out << YAML::EndSeq;
  out << YAML::EndMap;

  const TrainSpec& t = c.train;
  out << YAML::Key << "train" << YAML::Value << YAML::BeginMap;
  emit_kv(out, "epochs", std::to_string(t.epochs));
  emit_kv(out, "batch_size", std::to_string(t.batch_size));
  emit_kv(out, "optimizer", t.optimizer);
  emit_kv(out, "lr", format_double(t.lr));
  emit_kv(out, "momentum", format_double(t.momentum));
  emit_kv(out, "weight_decay", format_double(t.weight_decay));
  emit_kv(out, "lr_schedule", t.lr_schedule);
  emit_kv(out, "min_lr", format_double(t.min_lr));
  if (t.lr_schedule == "step") {
    emit_kv(out, "lr_step_epochs", std::to_string(t.lr_step_epochs));
    emit_kv(out, "lr_gamma", format_double(t.lr_gamma));
  }
  if (t.lr_schedule == "cosine_restarts") {
    emit_kv(out, "lr_restart_epochs", std::to_string(t.lr_restart_epochs));
    emit_kv(out, "lr_restart_mult", format_double(t.lr_restart_mult));
  }
  emit_kv(out, "seed", std::to_string(t.seed));
  emit_kv(out, "loss", t.loss);
  emit_kv(out, "target", t.target);
  out << YAML::Key << "beta" << YAML::Value;
  emit_beta(out, t.beta);
  emit_kv(out, "gamma", format_double(t.gamma));
  emit_kv(out, "threads", std::to_string(t.threads));
  emit_kv(out, "device", t.device);
  if (t.early_stopping.enabled) {
    const EarlyStoppingSpec& e = t.early_stopping;
    out << YAML::Key << "early_stopping" << YAML::Value << YAML::Flow << YAML::BeginMap;
    emit_kv(out, "patience", std::to_string(e.patience));
    emit_kv(out, "min_delta", format_double(e.min_delta));
    emit_kv(out, "monitor", e.monitor);
    if (e.ebops_below) emit_kv(out, "ebops_below", format_double(*e.ebops_below));
    out << YAML::EndMap;
  }
  if (t.distillation.enabled) {
    const DistillationSpec& d = t.distillation;
    out << YAML::Key << "distillation" << YAML::Value << YAML::Flow << YAML::BeginMap;
    if (!d.teacher.empty()) emit_kv(out, "teacher", d.teacher);
    emit_kv(out, "alpha", format_double(d.alpha));
    emit_kv(out, "loss", d.loss);
    if (d.loss == "kl") emit_kv(out, "temperature", format_double(d.temperature));
    if (d.loss == "kl") emit_kv(out, "teacher_outputs", d.teacher_outputs);
    if (d.loss == "huber") emit_kv(out, "huber_delta", format_double(d.huber_delta));
    emit_kv(out, "target", d.target);
    out << YAML::EndMap;
  }
  out << YAML::EndMap;

  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

double lr_at(const TrainSpec& t, int64_t step, int64_t steps_per_epoch) {
  const auto half_cosine = [&](double progress) {
    return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1.0 + std::cos(M_PI * progress));
  };
  if (steps_per_epoch < 1) steps_per_epoch = 1;
  if (step < 0) step = 0;
  if (t.lr_schedule == "cosine") {
    const int64_t total = steps_per_epoch * t.epochs;
    if (total <= 1) return t.lr;
    return half_cosine(static_cast<double>(step) / static_cast<double>(total));
  }
  if (t.lr_schedule == "step") {
    const int64_t drops = step / steps_per_epoch / std::max<int64_t>(1, t.lr_step_epochs);
    return std::max(t.min_lr, t.lr * std::pow(t.lr_gamma, static_cast<double>(drops)));
  }
  if (t.lr_schedule == "cosine_restarts") {
    const double epoch = static_cast<double>(step) / static_cast<double>(steps_per_epoch);
    double start = 0;
    double length = static_cast<double>(std::max<int64_t>(1, t.lr_restart_epochs));
    if (t.lr_restart_mult <= 1) {
      start = std::floor(epoch / length) * length;
    } else {
      while (epoch >= start + length) {
        start += length;
        length *= t.lr_restart_mult;
      }
    }
    return half_cosine(std::clamp((epoch - start) / length, 0.0, 1.0));
  }
  return t.lr;  // constant
}

double beta_at(const BetaSchedule& schedule, double epoch) {
  if (schedule.kind == "pid") return schedule.pid.init;
  if (schedule.kind == "constant" || schedule.points.empty()) return schedule.value;
  const std::vector<BetaPoint>& p = schedule.points;
  if (epoch <= p.front().epoch) return p.front().value;
  if (epoch >= p.back().epoch) return p.back().value;
  // The last point at or before `epoch`; the next one is strictly after it.
  std::size_t n = 0;
  while (n + 1 < p.size() && p[n + 1].epoch <= epoch) ++n;
  const BetaPoint& a = p[n];
  const BetaPoint& b = p[n + 1];
  const double t = (epoch - a.epoch) / (b.epoch - a.epoch);
  if (schedule.kind == "log" && a.value > 0 && b.value > 0)
    return a.value * std::pow(b.value / a.value, t);
  return a.value + t * (b.value - a.value);
}

}  // namespace hgqt::config
