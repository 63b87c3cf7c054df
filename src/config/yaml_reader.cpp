#include "hgqt/config/yaml_reader.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <sstream>

namespace hgqt::config {

namespace {

// Whether key path `prefix` equals `path` or is an ancestor of it.
bool is_path_prefix(const std::string& prefix, const std::string& path) {
  if (prefix.size() > path.size() || path.compare(0, prefix.size(), prefix) != 0) return false;
  if (prefix.size() == path.size() || prefix.empty()) return true;
  const char next = path[prefix.size()];
  return next == '.' || next == '[';
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Optimal string alignment distance: insertions, deletions, substitutions and swaps of
// neighbours ("trian" -> "train") cost 1.
std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1])
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.size()][b.size()];
}

// Parses a whole scalar as a finite decimal number.
bool parse_double(const std::string& text, double& out) {
  if (text.empty() || std::isspace(static_cast<unsigned char>(text[0])) ||
      text.find_first_of("xX") != std::string::npos)
    return false;
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  if (end != text.c_str() + text.size() || !std::isfinite(v)) return false;
  out = v;
  return true;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (std::size_t n = 0; n < items.size(); ++n) {
    if (n) out += ", ";
    out += items[n];
  }
  return out;
}

std::string hint(const std::string& word, const std::vector<std::string>& candidates) {
  const std::string best = closest_match(word, candidates);
  return best.empty() ? std::string() : " (did you mean '" + best + "'?)";
}

// The scalar text of a node, or throws "expected <expected>, got ..." for non-scalars.
const std::string& scalar_text(const YamlSource& src, const YAML::Node& node,
                               const std::string& path, const std::string& expected) {
  if (!node.IsDefined() || !node.IsScalar()) src.fail_expected(node, path, expected);
  return node.Scalar();
}

std::string format_number(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

}  // namespace

void YamlSource::add_override(std::string path, std::string text) {
  overrides_.emplace_back(std::move(path), std::move(text));
}

const std::string* YamlSource::override_for(const YAML::Node& node, const std::string& path) const {
  // The latest override that replaced this node or one of its ancestors.
  for (auto it = overrides_.rbegin(); it != overrides_.rend(); ++it)
    if (is_path_prefix(it->first, path)) return &it->second;
  // A map created on the way to an override's key has no position of its own.
  if (!node.IsDefined() || node.Mark().is_null()) {
    for (auto it = overrides_.rbegin(); it != overrides_.rend(); ++it)
      if (is_path_prefix(path, it->first)) return &it->second;
  }
  return nullptr;
}

std::string YamlSource::location(const YAML::Node& node, const std::string& path) const {
  if (const std::string* text = override_for(node, path))
    return origin_ + ": --set '" + *text + "'";
  if (!node.IsDefined()) return origin_;
  const YAML::Mark mark = node.Mark();
  if (mark.is_null()) return origin_;
  return origin_ + ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
}

int YamlSource::line(const YAML::Node& node, const std::string& path) const {
  if (override_for(node, path) != nullptr || !node.IsDefined()) return 0;
  const YAML::Mark mark = node.Mark();
  return mark.is_null() ? 0 : mark.line + 1;
}

void YamlSource::fail(const YAML::Node& node, const std::string& path,
                      const std::string& message) const {
  fail_at(node, path, path, message);
}

void YamlSource::fail_at(const YAML::Node& node, const std::string& node_path,
                         const std::string& path, const std::string& message) const {
  throw ConfigError(location(node, node_path) + ": " + (path.empty() ? "(top level)" : path) +
                    ": " + message);
}

void YamlSource::fail_expected(const YAML::Node& node, const std::string& path,
                               const std::string& expected) const {
  fail(node, path, "expected " + expected + ", got " + describe_node(node));
}

std::string describe_node(const YAML::Node& node) {
  if (!node.IsDefined()) return "nothing";
  switch (node.Type()) {
    case YAML::NodeType::Null:
      return "nothing (null)";
    case YAML::NodeType::Scalar:
      return "'" + node.Scalar() + "'";
    case YAML::NodeType::Sequence:
      return "a list";
    case YAML::NodeType::Map:
      return "a map";
    default:
      return "nothing";
  }
}

std::string child_path(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

std::string index_path(const std::string& path, std::size_t index) {
  return path + "[" + std::to_string(index) + "]";
}

std::string closest_match(const std::string& word, const std::vector<std::string>& candidates) {
  std::string best;
  std::size_t best_distance = std::numeric_limits<std::size_t>::max();
  const std::string lw = lower(word);
  for (const std::string& c : candidates) {
    const std::string lc = lower(c);
    std::size_t d = edit_distance(lw, lc);
    // A word that is a prefix/extension of a candidate ("epoch" / "epochs") is close too.
    if (d > 0 && lc.size() >= 3 && lw.size() >= 3 && (lc.rfind(lw, 0) == 0 || lw.rfind(lc, 0) == 0))
      d = std::min<std::size_t>(d, 2);
    if (d < best_distance) {
      best_distance = d;
      best = c;
    }
  }
  const std::size_t limit = std::max<std::size_t>(1, std::min<std::size_t>(3, word.size() / 3));
  if (best.empty() || best_distance > limit || best_distance >= word.size()) return "";
  return best;
}

std::string read_string(const YamlSource& src, const YAML::Node& node, const std::string& path) {
  return scalar_text(src, node, path, "a string");
}

std::string read_enum(const YamlSource& src, const YAML::Node& node, const std::string& path,
                      const std::vector<std::string>& choices) {
  const std::string expected = "one of " + join(choices);
  const std::string& text = scalar_text(src, node, path, expected);
  if (std::find(choices.begin(), choices.end(), text) == choices.end())
    src.fail(node, path, "expected " + expected + ", got '" + text + "'" + hint(text, choices));
  return text;
}

double read_number(const YamlSource& src, const YAML::Node& node, const std::string& path) {
  const std::string& text = scalar_text(src, node, path, "a number");
  double v = 0;
  if (!parse_double(text, v)) src.fail_expected(node, path, "a number");
  return v;
}

double read_number_min(const YamlSource& src, const YAML::Node& node, const std::string& path,
                       double min, bool strict) {
  const std::string bound = std::string(strict ? "> " : ">= ") + format_number(min);
  const std::string expected = min == 0 && strict ? "a positive number" : "a number " + bound;
  const std::string& text = scalar_text(src, node, path, expected);
  double v = 0;
  if (!parse_double(text, v) || (strict ? !(v > min) : !(v >= min)))
    src.fail_expected(node, path, expected);
  return v;
}

int64_t read_int(const YamlSource& src, const YAML::Node& node, const std::string& path,
                 int64_t min, int64_t max) {
  std::string expected;
  if (min == 1 && max == std::numeric_limits<int64_t>::max())
    expected = "a positive integer";
  else if (min == 0 && max == std::numeric_limits<int64_t>::max())
    expected = "an integer >= 0";
  else if (max == std::numeric_limits<int64_t>::max())
    expected = "an integer >= " + std::to_string(min);
  else
    expected = "an integer in [" + std::to_string(min) + ", " + std::to_string(max) + "]";
  const std::string& text = scalar_text(src, node, path, expected);
  std::size_t start = (!text.empty() && (text[0] == '+' || text[0] == '-')) ? 1 : 0;
  bool digits = text.size() > start;
  for (std::size_t n = start; n < text.size(); ++n)
    if (!std::isdigit(static_cast<unsigned char>(text[n]))) digits = false;
  if (!digits) src.fail_expected(node, path, expected);
  errno = 0;
  const long long v = std::strtoll(text.c_str(), nullptr, 10);
  if (errno == ERANGE || v < min || v > max) src.fail_expected(node, path, expected);
  return static_cast<int64_t>(v);
}

uint64_t read_uint64(const YamlSource& src, const YAML::Node& node, const std::string& path) {
  const std::string expected = "an integer >= 0";
  const std::string& text = scalar_text(src, node, path, expected);
  std::size_t start = (!text.empty() && text[0] == '+') ? 1 : 0;
  bool digits = text.size() > start;
  for (std::size_t n = start; n < text.size(); ++n)
    if (!std::isdigit(static_cast<unsigned char>(text[n]))) digits = false;
  if (!digits) src.fail_expected(node, path, expected);
  errno = 0;
  const unsigned long long v = std::strtoull(text.c_str(), nullptr, 10);
  if (errno == ERANGE) src.fail_expected(node, path, expected);
  return static_cast<uint64_t>(v);
}

bool read_bool(const YamlSource& src, const YAML::Node& node, const std::string& path) {
  const std::string& text = scalar_text(src, node, path, "true or false");
  const std::string l = lower(text);
  if (l == "true" || l == "yes" || l == "on") return true;
  if (l == "false" || l == "no" || l == "off") return false;
  src.fail_expected(node, path, "true or false");
}

MapReader::MapReader(const YamlSource& src, const YAML::Node& node, std::string path,
                     const std::vector<std::string>& allowed, bool null_is_empty)
    : src_(src), node_(node), path_(std::move(path)) {
  if (null_is_empty && node.IsDefined() && node.IsNull()) return;
  if (!node.IsDefined() || !node.IsMap()) {
    std::string expected = "a map";
    if (!allowed.empty()) expected += " with keys " + join(allowed);
    src.fail_expected(node, path_, expected);
  }
  for (auto it = node.begin(); it != node.end(); ++it) {
    const YAML::Node key = it->first;
    if (!key.IsScalar())
      src.fail_expected(key, path_, "a plain key (one of " + join(allowed) + ")");
    const std::string& name = key.Scalar();
    const std::string kpath = child_path(path_, name);
    if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
      std::string msg = "unknown key" + hint(name, allowed);
      msg += allowed.empty() ? "; no keys are allowed here" : "; expected one of " + join(allowed);
      src.fail(key, kpath, msg);
    }
    if (std::find(keys_.begin(), keys_.end(), name) != keys_.end())
      src.fail(key, kpath, "duplicate key");
    keys_.push_back(name);
    values_.push_back(it->second);
  }
}

bool MapReader::has(const std::string& key) const {
  return std::find(keys_.begin(), keys_.end(), key) != keys_.end();
}

YAML::Node MapReader::get(const std::string& key) const {
  for (std::size_t n = 0; n < keys_.size(); ++n)
    if (keys_[n] == key) return values_[n];
  return YAML::Node(YAML::NodeType::Undefined);
}

YAML::Node MapReader::require(const std::string& key, const std::string& expected) const {
  if (!has(key))
    src_.fail_at(node_, path_, path_of(key), "required key is missing (expected " + expected + ")");
  return get(key);
}

void MapReader::forbid(const std::string& key, const std::string& reason) const {
  if (!has(key)) return;
  // Point at the key itself.
  for (auto it = node_.begin(); it != node_.end(); ++it)
    if (it->first.Scalar() == key) src_.fail(it->first, path_of(key), "not allowed " + reason);
  src_.fail(node_, path_of(key), "not allowed " + reason);
}

std::string MapReader::string_or(const std::string& key, const std::string& fallback) const {
  return has(key) ? read_string(src_, get(key), path_of(key)) : fallback;
}

std::string MapReader::enum_or(const std::string& key, const std::vector<std::string>& choices,
                               const std::string& fallback) const {
  return has(key) ? read_enum(src_, get(key), path_of(key), choices) : fallback;
}

double MapReader::number_or(const std::string& key, double fallback, double min,
                            bool strict) const {
  return has(key) ? read_number_min(src_, get(key), path_of(key), min, strict) : fallback;
}

int64_t MapReader::int_or(const std::string& key, int64_t fallback, int64_t min,
                          int64_t max) const {
  return has(key) ? read_int(src_, get(key), path_of(key), min, max) : fallback;
}

uint64_t MapReader::uint64_or(const std::string& key, uint64_t fallback) const {
  return has(key) ? read_uint64(src_, get(key), path_of(key)) : fallback;
}

bool MapReader::bool_or(const std::string& key, bool fallback) const {
  return has(key) ? read_bool(src_, get(key), path_of(key)) : fallback;
}

}  // namespace hgqt::config
