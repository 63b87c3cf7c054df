// Arrays, standardization, the seeded shuffle and load_splits (train / validation / test).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "hgqt/data/dataset.h"

namespace hgqt::data {
namespace {

namespace fs = std::filesystem;

std::string quote(const std::string& s) {
  return "'" + s + "'";
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

/// "[N, 10]": the layout of an array with the sample axis written as N.
std::string layout(const std::vector<int64_t>& shape) {
  std::string s = "[N";
  for (size_t i = 1; i < shape.size(); ++i) s += ", " + std::to_string(shape[i]);
  return s + "]";
}

/// Copies the listed rows of `a`.
Array take_rows(const Array& a, const std::vector<int64_t>& rows) {
  Array out;
  out.shape = a.shape;
  out.shape[0] = static_cast<int64_t>(rows.size());
  const size_t rs = static_cast<size_t>(a.row_size());
  out.values.resize(rows.size() * rs);
  for (size_t i = 0; i < rows.size(); ++i) {
    const float* src = a.values.data() + static_cast<size_t>(rows[i]) * rs;
    std::copy(src, src + rs, out.values.data() + i * rs);
  }
  return out;
}

Dataset take_rows(const Dataset& d, const std::vector<int64_t>& rows) {
  Dataset out;
  out.x = take_rows(d.x, rows);
  out.y = take_rows(d.y, rows);
  if (!d.teacher.shape.empty()) out.teacher = take_rows(d.teacher, rows);
  out.feature_names = d.feature_names;
  return out;
}

std::vector<int64_t> range(int64_t begin, int64_t end) {
  std::vector<int64_t> r;
  r.reserve(static_cast<size_t>(end - begin));
  for (int64_t i = begin; i < end; ++i) r.push_back(i);
  return r;
}

/// Rows to carve off `n` rows for a fraction; errors when that leaves either part empty.
int64_t carve_count(int64_t n, double fraction, const std::string& key, const std::string& what) {
  int64_t k = static_cast<int64_t>(std::llround(static_cast<double>(n) * fraction));
  if (k <= 0)
    throw DataError("data." + key + " = " + number(fraction) + " of " + std::to_string(n) +
                    " train rows gives an empty " + what +
                    " split; use a larger fraction, "
                    "more data, or a separate " +
                    what + " file");
  if (k >= n)
    throw DataError("data." + key + " = " + number(fraction) + " of " + std::to_string(n) +
                    " train rows leaves no training rows; use a smaller fraction or more data");
  return k;
}

std::string list_text(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

}  // namespace

std::vector<int64_t> class_labels(const Array& y, const std::string& what) {
  const int64_t n = y.rows();
  const int64_t w = y.row_size();
  std::vector<int64_t> out(static_cast<size_t>(n));
  if (y.shape.size() > 2 || (y.shape.size() == 2 && w < 1))
    throw DataError(what + ": labels of shape " + shape_to_string(y.shape) +
                    " are not class labels (expected [N] integers or one-hot rows [N, classes])");
  for (int64_t r = 0; r < n; ++r) {
    const float* row = y.values.data() + static_cast<size_t>(r * (w > 0 ? w : 1));
    if (w > 1) {
      out[static_cast<size_t>(r)] = std::max_element(row, row + w) - row;
      continue;
    }
    const float v = row[0];
    if (v != std::round(v))
      throw DataError(what + ": label " + number(v) + " of row " + std::to_string(r) +
                      " is not an integer class label");
    out[static_cast<size_t>(r)] = static_cast<int64_t>(v);
  }
  return out;
}

Dataset filter_classes(const Dataset& d, const std::vector<int64_t>& classes,
                       const std::string& what) {
  const std::vector<int64_t> labels = class_labels(d.y, what);
  std::vector<int64_t> rows;
  for (size_t r = 0; r < labels.size(); ++r)
    if (std::find(classes.begin(), classes.end(), labels[r]) != classes.end())
      rows.push_back(static_cast<int64_t>(r));
  if (rows.empty()) {
    std::vector<int64_t> present(labels.begin(), labels.end());
    std::sort(present.begin(), present.end());
    present.erase(std::unique(present.begin(), present.end()), present.end());
    throw DataError("data.classes " + list_text(classes) + " keeps no rows of " + what + " (" +
                    std::to_string(labels.size()) + " rows; labels present: " + list_text(present) +
                    ")");
  }
  return take_rows(d, rows);
}

int64_t Array::row_size() const {
  if (shape.empty()) return 0;
  int64_t n = 1;
  for (size_t i = 1; i < shape.size(); ++i) n *= shape[i];
  return n;
}

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void check_finite(const Array& a, const std::string& what) {
  for (size_t i = 0; i < a.values.size(); ++i) {
    float v = a.values[i];
    if (std::isfinite(v)) continue;
    const int64_t rs = a.row_size() > 0 ? a.row_size() : 1;
    const int64_t flat = static_cast<int64_t>(i);
    throw DataError(what + " contains " +
                    (std::isnan(v) ? "NaN"
                     : v > 0       ? "+Inf"
                                   : "-Inf") +
                    " at flat index " + std::to_string(flat) + " (sample row " +
                    std::to_string(flat / rs) + ", element " + std::to_string(flat % rs) +
                    " of the row)");
  }
}

std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed) {
  std::vector<int64_t> idx = range(0, n < 0 ? 0 : n);
  std::mt19937_64 rng(seed);
  for (int64_t i = n - 1; i > 0; --i) {
    // Unbiased draw in [0, i]: reject the low 2^64 mod bound values, then reduce.
    const uint64_t bound = static_cast<uint64_t>(i) + 1;
    const uint64_t threshold = (0 - bound) % bound;
    uint64_t r = rng();
    while (r < threshold) r = rng();
    std::swap(idx[static_cast<size_t>(i)], idx[static_cast<size_t>(r % bound)]);
  }
  return idx;
}

Standardizer Standardizer::fit(const Array& x) {
  const int64_t rows = x.rows();
  if (rows <= 0 || x.values.empty()) throw DataError("cannot fit a standardizer on an empty array");
  const size_t rs = static_cast<size_t>(x.row_size());
  std::vector<double> mean(rs, 0.0), var(rs, 0.0);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x.values.data() + static_cast<size_t>(r) * rs;
    for (size_t j = 0; j < rs; ++j) mean[j] += row[j];
  }
  for (double& m : mean) m /= static_cast<double>(rows);
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x.values.data() + static_cast<size_t>(r) * rs;
    for (size_t j = 0; j < rs; ++j) {
      double d = row[j] - mean[j];
      var[j] += d * d;
    }
  }
  Standardizer s;
  s.mean.resize(rs);
  s.stddev.resize(rs);
  for (size_t j = 0; j < rs; ++j) {
    s.mean[j] = static_cast<float>(mean[j]);
    float sd = static_cast<float>(std::sqrt(var[j] / static_cast<double>(rows)));
    s.stddev[j] = sd > 0.0f ? sd : 1.0f;
  }
  return s;
}

void Standardizer::apply(Array& x) const {
  if (x.values.empty()) return;
  const size_t rs = static_cast<size_t>(x.row_size());
  if (rs != mean.size() || stddev.size() != mean.size())
    throw DataError("the standardizer was fit on rows of " + std::to_string(mean.size()) +
                    " values, but this array has rows of " + std::to_string(rs) +
                    " values (shape " + shape_to_string(x.shape) + ")");
  for (size_t i = 0; i < x.values.size(); ++i) {
    const size_t j = i % rs;
    x.values[i] = (x.values[i] - mean[j]) / stddev[j];
  }
}

Splits load_splits(const config::DataSpec& spec, const std::string& base_dir) {
  if (spec.format != "hdf5" && spec.format != "jet_csv" && spec.format != "jet_hdf5")
    throw DataError("data.format: unknown format " + quote(spec.format) +
                    " (expected hdf5, jet_csv or jet_hdf5)");
  if (!spec.train.present()) throw DataError("data.train.file: no training file given");
  if (!(spec.validation_split >= 0.0 && spec.validation_split < 1.0))
    throw DataError("data.validation_split = " + number(spec.validation_split) +
                    ": expected a fraction in [0, 1)");
  if (!(spec.test_split >= 0.0 && spec.test_split < 1.0))
    throw DataError("data.test_split = " + number(spec.test_split) +
                    ": expected a fraction in [0, 1)");

  auto resolve = [&](const std::string& p) {
    fs::path path(p);
    if (path.is_absolute() || base_dir.empty()) return path.string();
    return (fs::path(base_dir) / path).string();
  };
  auto load = [&](const config::SplitSource& src, const std::string& split) {
    const std::string file = resolve(src.file);
    if (spec.format == "jet_csv") return read_jet_csv(file, spec.feature_names);
    if (spec.format == "jet_hdf5") return read_jet_h5(file, spec.feature_names);
    // hdf5: a split without its own data set names uses those of train.
    const std::string fx = src.features.empty() ? spec.train.features : src.features;
    const std::string fy = src.labels.empty() ? spec.train.labels : src.labels;
    if (fx.empty())
      throw DataError("data." + split + ".features: no data set named for the features in " +
                      quote(file));
    if (fy.empty())
      throw DataError("data." + split + ".labels: no data set named for the labels in " +
                      quote(file));
    Dataset d;
    d.x = read_h5_array(file, fx);
    d.y = read_h5_array(file, fy);
    if (d.x.rows() != d.y.rows())
      throw DataError(quote(file) + ": data sets " + quote(fx) + " (" + std::to_string(d.x.rows()) +
                      " rows) and " + quote(fy) + " (" + std::to_string(d.y.rows()) +
                      " rows) must have the same number of rows");
    if (!src.teacher.empty()) {
      d.teacher = read_h5_array(file, src.teacher);
      if (d.teacher.rows() != d.x.rows())
        throw DataError(quote(file) + ": the teacher outputs " + quote(src.teacher) + " (data." +
                        split + ".teacher, " + std::to_string(d.teacher.rows()) +
                        " rows) must have one row per sample of " + quote(fx) + " (" +
                        std::to_string(d.x.rows()) + " rows)");
    }
    return d;
  };

  Splits s;
  s.train = load(spec.train, "train");
  const std::string train_file = resolve(spec.train.file);
  auto check_layout = [&](const Dataset& d, const config::SplitSource& src,
                          const std::string& split) {
    const std::string here = "data: the " + split + " split (" + quote(resolve(src.file)) + ")";
    const std::string there = "the train split (" + quote(train_file) + ")";
    if (layout(d.x.shape) != layout(s.train.x.shape))
      throw DataError(here + " has features of layout " + layout(d.x.shape) + " but " + there +
                      " has " + layout(s.train.x.shape));
    if (layout(d.y.shape) != layout(s.train.y.shape))
      throw DataError(here + " has labels of layout " + layout(d.y.shape) + " but " + there +
                      " has " + layout(s.train.y.shape));
  };
  if (spec.validation.present()) {
    s.validation = load(spec.validation, "validation");
    check_layout(s.validation, spec.validation, "validation");
  }
  if (spec.test.present()) {
    s.test = load(spec.test, "test");
    check_layout(s.test, spec.test, "test");
  }

  if (!spec.test.present() && spec.test_split > 0.0) {
    const int64_t n = s.train.size();
    const int64_t k = carve_count(n, spec.test_split, "test_split", "test");
    std::vector<int64_t> perm = shuffled_indices(n, spec.split_seed);
    std::vector<int64_t> test_rows(perm.begin(), perm.begin() + k);
    std::vector<int64_t> train_rows(perm.begin() + k, perm.end());
    s.test = take_rows(s.train, test_rows);
    s.train = take_rows(s.train, train_rows);
  }
  if (!spec.classes.empty()) {
    s.train = filter_classes(s.train, spec.classes, "the train split (" + quote(train_file) + ")");
    if (spec.validation.present())
      s.validation =
          filter_classes(s.validation, spec.classes,
                         "the validation split (" + quote(resolve(spec.validation.file)) + ")");
  }
  if (!spec.validation.present() && spec.validation_split > 0.0) {
    const int64_t n = s.train.size();
    const int64_t k = carve_count(n, spec.validation_split, "validation_split", "validation");
    s.validation = take_rows(s.train, range(n - k, n));
    s.train = take_rows(s.train, range(0, n - k));
  }

  if (spec.standardize) {
    s.standardizer = Standardizer::fit(s.train.x);
    s.standardizer.apply(s.train.x);
    s.standardizer.apply(s.validation.x);
    s.standardizer.apply(s.test.x);
  }
  return s;
}

}  // namespace hgqt::data
