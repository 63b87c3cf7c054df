// Strict YAML reading helpers: typed scalars, maps that reject unknown keys, and error
// messages of the form `<file>:<line>:<col>: <key.path>: <expected>, got <found>`.
// No LibTorch here; used by the config parser and reusable for other YAML inputs.
#pragma once

#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "hgqt/config/config.h"

namespace hgqt::config {

/// Where YAML nodes came from: the file (or text origin) plus `--set` overrides applied to it.
/// Formats locations and throws ConfigError.
class YamlSource {
 public:
  /// `origin` names the text in messages (usually the file path).
  explicit YamlSource(std::string origin) : origin_(std::move(origin)) {}

  /// Records that the subtree at key path `path` was replaced by override `text` (`a.b=value`).
  void add_override(std::string path, std::string text);

  /// The origin given at construction.
  const std::string& origin() const { return origin_; }

  /// `<origin>:<line>:<col>` for a node of the file, or `<origin>: --set '<override>'` for a
  /// node that came from an override; `path` is the node's key path.
  std::string location(const YAML::Node& node, const std::string& path) const;

  /// The 1-based line of `node`, or 0 when unknown or when it came from an override.
  int line(const YAML::Node& node, const std::string& path) const;

  /// Throws ConfigError `<location>: <path>: <message>`.
  [[noreturn]] void fail(const YAML::Node& node, const std::string& path,
                         const std::string& message) const;

  /// Like fail(), but the location is that of `node` at `node_path` while the message names
  /// `path` (a missing key is reported at its parent map).
  [[noreturn]] void fail_at(const YAML::Node& node, const std::string& node_path,
                            const std::string& path, const std::string& message) const;

  /// Throws ConfigError `<location>: <path>: expected <expected>, got <what node is>`.
  [[noreturn]] void fail_expected(const YAML::Node& node, const std::string& path,
                                  const std::string& expected) const;

 private:
  const std::string* override_for(const YAML::Node& node, const std::string& path) const;

  std::string origin_;
  std::vector<std::pair<std::string, std::string>> overrides_;  // (key path, override text)
};

/// Short description of a node for messages: `'abc'`, `a map`, `a list`, `nothing (null)`.
std::string describe_node(const YAML::Node& node);

/// `path.key` (or `key` when `path` is empty).
std::string child_path(const std::string& path, const std::string& key);
/// `path[index]`.
std::string index_path(const std::string& path, std::size_t index);

/// The candidate closest to `word` (edit distance, case-insensitive), or "" when none is close.
std::string closest_match(const std::string& word, const std::vector<std::string>& candidates);

/// Reads a string scalar (any non-null scalar).
std::string read_string(const YamlSource& src, const YAML::Node& node, const std::string& path);
/// Reads a string that must be one of `choices` (case-sensitive; suggests a close one).
std::string read_enum(const YamlSource& src, const YAML::Node& node, const std::string& path,
                      const std::vector<std::string>& choices);
/// Reads a finite number.
double read_number(const YamlSource& src, const YAML::Node& node, const std::string& path);
/// Reads a finite number >= `min` (or > `min` when `strict`).
double read_number_min(const YamlSource& src, const YAML::Node& node, const std::string& path,
                       double min, bool strict);
/// Reads a (decimal) integer in [min, max].
int64_t read_int(const YamlSource& src, const YAML::Node& node, const std::string& path,
                 int64_t min, int64_t max);
/// Reads a non-negative decimal integer that fits 64 unsigned bits.
uint64_t read_uint64(const YamlSource& src, const YAML::Node& node, const std::string& path);
/// Reads a boolean (true/false, yes/no, on/off).
bool read_bool(const YamlSource& src, const YAML::Node& node, const std::string& path);

/// A YAML map read strictly: construction rejects non-maps, duplicate keys, non-scalar keys
/// and keys outside `allowed` (with a "did you mean" hint).
class MapReader {
 public:
  /// Checks `node` (at key path `path`) against the allowed keys. With `null_is_empty`, a null
  /// node (e.g. `key:` with nothing after it) reads as an empty map.
  MapReader(const YamlSource& src, const YAML::Node& node, std::string path,
            const std::vector<std::string>& allowed, bool null_is_empty = false);

  /// Whether `key` is present.
  bool has(const std::string& key) const;
  /// The node of `key` (an undefined node when absent).
  YAML::Node get(const std::string& key) const;
  /// The node of `key`; throws a "missing required key" error (at this map's line) when absent.
  /// `expected` describes the value for the message.
  YAML::Node require(const std::string& key, const std::string& expected) const;
  /// Throws `<key>: not allowed <reason>` if `key` is present.
  void forbid(const std::string& key, const std::string& reason) const;
  /// Keys in document order.
  const std::vector<std::string>& keys() const { return keys_; }
  /// Key path of `key` inside this map.
  std::string path_of(const std::string& key) const { return child_path(path_, key); }
  /// Key path of this map.
  const std::string& path() const { return path_; }
  /// The map node.
  const YAML::Node& node() const { return node_; }
  /// The source used for errors.
  const YamlSource& source() const { return src_; }

  /// Optional typed getters: return `fallback` when the key is absent.
  std::string string_or(const std::string& key, const std::string& fallback) const;
  /// Optional enum getter.
  std::string enum_or(const std::string& key, const std::vector<std::string>& choices,
                      const std::string& fallback) const;
  /// Optional number getter with a lower bound (`strict`: value must exceed `min`).
  double number_or(const std::string& key, double fallback, double min, bool strict) const;
  /// Optional integer getter with bounds.
  int64_t int_or(const std::string& key, int64_t fallback, int64_t min, int64_t max) const;
  /// Optional unsigned getter.
  uint64_t uint64_or(const std::string& key, uint64_t fallback) const;
  /// Optional boolean getter.
  bool bool_or(const std::string& key, bool fallback) const;

 private:
  const YamlSource& src_;
  YAML::Node node_;
  std::string path_;
  std::vector<std::string> keys_;
  std::vector<YAML::Node> values_;
};

}  // namespace hgqt::config
