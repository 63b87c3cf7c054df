// The hls4ml LHC jet data set: CSV (OpenML hls4ml_lhc_jets_hlf) and HDF5 (jetImage) layouts.
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "hgqt/data/dataset.h"

namespace hgqt::data {
namespace {

namespace fs = std::filesystem;

std::string quote(const std::string& s) {
  return "'" + s + "'";
}

const std::vector<std::string>& one_hot_columns() {
  static const std::vector<std::string> names = {"j_g", "j_q", "j_w", "j_z", "j_t"};
  return names;
}

/// Drops surrounding blanks, a trailing CR and one pair of matching quotes.
std::string_view clean(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  if (s.size() >= 2 && (s.front() == '"' || s.front() == '\'') && s.back() == s.front()) {
    s.remove_prefix(1);
    s.remove_suffix(1);
  }
  return s;
}

void split_cells(std::string_view line, std::vector<std::string_view>& cells) {
  cells.clear();
  size_t start = 0;
  for (;;) {
    size_t comma = line.find(',', start);
    if (comma == std::string_view::npos) {
      cells.push_back(clean(line.substr(start)));
      return;
    }
    cells.push_back(clean(line.substr(start, comma - start)));
    start = comma + 1;
  }
}

bool blank(std::string_view line) {
  return clean(line).empty();
}

/// Index of the column called `name`, also accepting it with or without a "j_" prefix; -1 if none.
long find_column(const std::vector<std::string>& columns, const std::string& name) {
  for (size_t i = 0; i < columns.size(); ++i)
    if (columns[i] == name) return static_cast<long>(i);
  std::string alt = name.rfind("j_", 0) == 0 ? name.substr(2) : "j_" + name;
  for (size_t i = 0; i < columns.size(); ++i)
    if (columns[i] == alt) return static_cast<long>(i);
  return -1;
}

std::string columns_for_message(const std::vector<std::string>& columns) {
  std::string out;
  const size_t shown = 40;
  for (size_t i = 0; i < columns.size() && i < shown; ++i) out += (i ? ", " : "") + columns[i];
  if (columns.size() > shown) out += ", ... (" + std::to_string(columns.size() - shown) + " more)";
  return out.empty() ? "none" : out;
}

bool parse_number(std::string_view s, double& out) {
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size();
}

/// Class index of a `class` cell (g/q/w/z/t, optionally "j_"-prefixed, any case); -1 if none.
int parse_class(std::string_view cell) {
  std::string s(cell);
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (s.rfind("j_", 0) == 0) s = s.substr(2);
  const auto& classes = jet_class_names();
  for (size_t k = 0; k < classes.size(); ++k)
    if (s == classes[k]) return static_cast<int>(k);
  return -1;
}

/// Class index of a one-hot row, or -1 when the five values are not exactly one 1 and four 0s.
int one_hot_index(const double* v) {
  int hot = -1;
  for (int k = 0; k < 5; ++k) {
    if (v[k] == 1.0) {
      if (hot >= 0) return -1;
      hot = k;
    } else if (v[k] != 0.0) {
      return -1;
    }
  }
  return hot;
}

std::string one_hot_text(const double* v) {
  std::string s;
  for (int k = 0; k < 5; ++k) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%g", v[k]);
    s += (k ? ", " : "") + std::string(buf);
  }
  return s;
}

const std::vector<std::string>& default_features(const std::vector<std::string>& features) {
  return features.empty() ? jet_feature_names() : features;
}

}  // namespace

const std::vector<std::string>& jet_feature_names() {
  static const std::vector<std::string> names = {
      "zlogz",      "c1_b0_mmdt", "c1_b1_mmdt",    "c1_b2_mmdt",    "c2_b1_mmdt", "c2_b2_mmdt",
      "d2_b1_mmdt", "d2_b2_mmdt", "d2_a1_b1_mmdt", "d2_a1_b2_mmdt", "m2_b1_mmdt", "m2_b2_mmdt",
      "n2_b1_mmdt", "n2_b2_mmdt", "mass_mmdt",     "multiplicity"};
  return names;
}

const std::vector<std::string>& jet_class_names() {
  static const std::vector<std::string> names = {"g", "q", "w", "z", "t"};
  return names;
}

Dataset read_jet_csv(const std::string& path, const std::vector<std::string>& features_in) {
  const std::vector<std::string>& features = default_features(features_in);
  std::error_code ec;
  if (!fs::exists(path, ec)) throw DataError(quote(path) + ": no such file");
  if (fs::is_directory(path, ec)) throw DataError(quote(path) + ": is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(quote(path) + ": cannot be read (check its permissions)");

  std::string line;
  long line_no = 0;
  bool have_header = false;
  while (std::getline(in, line)) {
    ++line_no;
    if (line_no == 1 && line.size() >= 3 && line.compare(0, 3, "\xEF\xBB\xBF") == 0)
      line.erase(0, 3);  // UTF-8 byte order mark
    if (!blank(line)) {
      have_header = true;
      break;
    }
  }
  if (!have_header) throw DataError(quote(path) + ": empty file (expected a header row)");
  const long header_line = line_no;
  const std::string at_header = quote(path) + " line " + std::to_string(header_line) + " (header)";
  std::vector<std::string_view> cells;
  split_cells(line, cells);
  std::vector<std::string> columns(cells.begin(), cells.end());

  std::vector<long> feature_cols;
  for (const std::string& f : features) {
    long c = find_column(columns, f);
    if (c < 0)
      throw DataError(at_header + ": no column " + quote(f) +
                      " (columns: " + columns_for_message(columns) + ")");
    feature_cols.push_back(c);
  }
  long class_col = -1;
  for (size_t i = 0; i < columns.size(); ++i)
    if (columns[i] == "class" || columns[i] == "Class" || columns[i] == "CLASS")
      class_col = static_cast<long>(i);
  std::vector<long> hot_cols;
  if (class_col < 0) {
    std::string missing;
    for (const std::string& name : one_hot_columns()) {
      long c = find_column(columns, name);
      if (c < 0) missing += (missing.empty() ? "" : ", ") + name;
      hot_cols.push_back(c);
    }
    if (!missing.empty())
      throw DataError(at_header +
                      ": no label columns: expected a 'class' column or the five "
                      "one-hot columns j_g, j_q, j_w, j_z, j_t (missing: " +
                      missing + "; columns: " + columns_for_message(columns) + ")");
  }

  Dataset d;
  d.feature_names = features;
  std::vector<float>& x = d.x.values;
  std::vector<float>& y = d.y.values;
  int64_t rows = 0;
  double hot[5];
  while (std::getline(in, line)) {
    ++line_no;
    if (blank(line)) continue;
    split_cells(line, cells);
    const std::string at = quote(path) + " line " + std::to_string(line_no);
    if (cells.size() != columns.size())
      throw DataError(at + ": " + std::to_string(cells.size()) + " cells, but the header (line " +
                      std::to_string(header_line) + ") has " + std::to_string(columns.size()) +
                      " columns");
    for (size_t j = 0; j < feature_cols.size(); ++j) {
      std::string_view cell = cells[static_cast<size_t>(feature_cols[j])];
      double v = 0;
      if (!parse_number(cell, v))
        throw DataError(at + ", column " + quote(columns[static_cast<size_t>(feature_cols[j])]) +
                        ": " + quote(std::string(cell)) + " is not a number");
      if (!std::isfinite(v) || !std::isfinite(static_cast<float>(v)))
        throw DataError(at + ", column " + quote(columns[static_cast<size_t>(feature_cols[j])]) +
                        ": " + quote(std::string(cell)) + " is not a finite float");
      x.push_back(static_cast<float>(v));
    }
    if (class_col >= 0) {
      std::string_view cell = cells[static_cast<size_t>(class_col)];
      int k = parse_class(cell);
      if (k < 0)
        throw DataError(at + ", column 'class': " + quote(std::string(cell)) +
                        " is not a jet class (expected g, q, w, z or t)");
      y.push_back(static_cast<float>(k));
    } else {
      for (int k = 0; k < 5; ++k) {
        std::string_view cell = cells[static_cast<size_t>(hot_cols[static_cast<size_t>(k)])];
        if (!parse_number(cell, hot[k]))
          throw DataError(at + ", column " + quote(one_hot_columns()[static_cast<size_t>(k)]) +
                          ": " + quote(std::string(cell)) + " is not a number");
      }
      int k = one_hot_index(hot);
      if (k < 0)
        throw DataError(at + ": the label columns j_g, j_q, j_w, j_z, j_t are not one-hot (" +
                        one_hot_text(hot) + ")");
      y.push_back(static_cast<float>(k));
    }
    ++rows;
  }
  if (in.bad()) throw DataError(quote(path) + ": reading failed");
  if (rows == 0) throw DataError(quote(path) + ": no data rows after the header");
  d.x.shape = {rows, static_cast<int64_t>(features.size())};
  d.y.shape = {rows};
  return d;
}

Dataset read_jet_h5(const std::string& path, const std::vector<std::string>& features_in) {
  const std::vector<std::string>& features = default_features(features_in);
  std::vector<std::string> columns = read_h5_strings(path, "jetFeatureNames");
  Array jets = read_h5_array_raw(path, "jets");
  const std::string where = quote(path) + ": data set 'jets'";
  if (jets.shape.size() != 2)
    throw DataError(where + " has shape " + shape_to_string(jets.shape) +
                    "; expected [N, C] (samples by columns)");
  if (static_cast<size_t>(jets.shape[1]) != columns.size())
    throw DataError(where + " has " + std::to_string(jets.shape[1]) +
                    " columns but 'jetFeatureNames' names " + std::to_string(columns.size()));
  std::vector<long> feature_cols;
  for (const std::string& f : features) {
    long c = find_column(columns, f);
    if (c < 0)
      throw DataError(quote(path) + ": no column " + quote(f) + " in 'jetFeatureNames' (" +
                      columns_for_message(columns) + ")");
    feature_cols.push_back(c);
  }
  std::vector<long> hot_cols;
  for (const std::string& name : one_hot_columns()) {
    long c = find_column(columns, name);
    if (c < 0)
      throw DataError(quote(path) + ": no label column " + quote(name) + " in 'jetFeatureNames' (" +
                      columns_for_message(columns) + ")");
    hot_cols.push_back(c);
  }
  const int64_t rows = jets.shape[0];
  const size_t width = static_cast<size_t>(jets.shape[1]);
  Dataset d;
  d.feature_names = features;
  d.x.shape = {rows, static_cast<int64_t>(features.size())};
  d.y.shape = {rows};
  d.x.values.reserve(static_cast<size_t>(rows) * features.size());
  d.y.values.reserve(static_cast<size_t>(rows));
  double hot[5];
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = jets.values.data() + static_cast<size_t>(r) * width;
    for (long c : feature_cols) {
      float v = row[c];
      if (!std::isfinite(v))
        throw DataError(where + ": row " + std::to_string(r) + ", column " +
                        quote(columns[static_cast<size_t>(c)]) + " is " +
                        (std::isnan(v) ? "NaN" : "infinite"));
      d.x.values.push_back(v);
    }
    for (int k = 0; k < 5; ++k) hot[k] = row[hot_cols[static_cast<size_t>(k)]];
    int k = one_hot_index(hot);
    if (k < 0)
      throw DataError(where + ": row " + std::to_string(r) +
                      ": the label columns j_g, j_q, j_w, j_z, j_t are not one-hot (" +
                      one_hot_text(hot) + ")");
    d.y.values.push_back(static_cast<float>(k));
  }
  return d;
}

}  // namespace hgqt::data
