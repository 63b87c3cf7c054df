// Data sets in memory and the file formats they come from (HDF5, IDX, jet CSV); no LibTorch here.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "hgqt/config/config.h"

namespace hgqt::data {

/// A user error in a data file: names the file, the data set and what was expected.
class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A dense float array, row-major; shape[0] is the sample axis.
struct Array {
  std::vector<float> values;
  std::vector<int64_t> shape;
  int64_t rows() const { return shape.empty() ? 0 : shape[0]; }
  int64_t row_size() const;  ///< product of shape[1:]
};

/// Features and labels of one split. Labels are either class indices, shape [N], or
/// float targets / one-hot rows, shape [N, d].
struct Dataset {
  Array x;
  Array y;
  /// Precomputed teacher outputs, one row per sample (data.<split>.teacher); empty when none.
  Array teacher;
  std::vector<std::string> feature_names;  ///< empty when the format has none
  int64_t size() const { return x.rows(); }
};

/// Per-feature mean and standard deviation, fit on training data.
struct Standardizer {
  std::vector<float> mean;
  std::vector<float> stddev;  ///< zero deviations are stored as 1
  bool empty() const { return mean.empty(); }
  static Standardizer fit(const Array& x);
  void apply(Array& x) const;  ///< throws DataError when the row size does not match
};

/// Train / validation / test splits, ready for training.
struct Splits {
  Dataset train, validation, test;
  Standardizer standardizer;  ///< empty unless standardize was asked for
};

// ---- HDF5
/// Reads a numeric data set (any integer or float type) as float. Errors: missing file, missing
/// data set (lists the ones present), non-numeric type, NaN/Inf (with the first bad index).
Array read_h5_array(const std::string& file, const std::string& dataset);
/// Writes a float32 data set (creating the file when `truncate` or absent), deflate-compressed.
void write_h5_array(const std::string& file, const std::string& dataset, const Array& a,
                    bool truncate = false);
/// Writes an int64 data set of class labels.
void write_h5_labels(const std::string& file, const std::string& dataset,
                     const std::vector<int64_t>& labels, bool truncate = false);
/// Names of the data sets in a file (full paths, e.g. "train/x").
std::vector<std::string> list_h5_datasets(const std::string& file);
/// Like read_h5_array, without the NaN/Inf check (for callers that check only the part they use).
Array read_h5_array_raw(const std::string& file, const std::string& dataset);
/// Reads a data set of strings (fixed- or variable-length, any shape) in row-major order;
/// trailing NULs and spaces of fixed-length strings are dropped.
std::vector<std::string> read_h5_strings(const std::string& file, const std::string& dataset);

// ---- IDX (MNIST / Fashion-MNIST), gzip or plain
/// Reads an IDX file (gzip-compressed or plain; element types uint8, int8, int16, int32, float32,
/// float64) as float values with the file's shape. Errors name the file: missing, bad magic,
/// truncated or with trailing bytes.
Array read_idx(const std::string& path);
/// Converts the four Fashion-MNIST IDX files in `src_dir` to one HDF5 file with x_train
/// [60000,28,28] and x_test [10000,28,28] (float32 in [0,1]), y_train and y_test (int64).
void convert_fashion_mnist(const std::string& src_dir, const std::string& out_file);

// ---- hls4ml jet tagging data
/// The 16 high-level features of the hls4ml jet data set, in their usual order.
const std::vector<std::string>& jet_feature_names();
/// The 5 classes in label order: g, q, w, z, t.
const std::vector<std::string>& jet_class_names();
/// CSV with a header row (OpenML hls4ml_lhc_jets_hlf layout): the named feature columns and
/// either a `class` column (g/q/w/z/t) or five one-hot columns j_g, j_q, j_w, j_z, j_t.
/// Labels come back as class indices [N].
Dataset read_jet_csv(const std::string& path, const std::vector<std::string>& features = {});
/// hls4ml jetImage HDF5 layout: data set `jets` [N, C] and `jetFeatureNames` (C strings);
/// features and the one-hot j_g..j_t columns are picked by name. Labels as class indices [N].
Dataset read_jet_h5(const std::string& path, const std::vector<std::string>& features = {});

/// Throws DataError naming `what` and the first index when any value is NaN or Inf.
void check_finite(const Array& a, const std::string& what);

/// "[60000, 28, 28]": a shape for messages.
std::string shape_to_string(const std::vector<int64_t>& shape);

/// A permutation of 0..n-1 by Fisher-Yates driven by std::mt19937_64(seed), with its own unbiased
/// bounded draw: the same on every platform and standard library. load_splits carves with it.
std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed);

/// Class indices of a label array: integers [N] (or [N, 1]), or one-hot rows [N, d] (argmax).
/// Throws DataError naming `what` when they are not integer class labels.
std::vector<int64_t> class_labels(const Array& y, const std::string& what);
/// The rows of `d` (in order) whose class label is one of `classes`. Throws DataError naming
/// `what` when the labels are not class labels or no row is kept (listing the labels present).
Dataset filter_classes(const Dataset& d, const std::vector<int64_t>& classes,
                       const std::string& what);

/// Loads every split named by a `data:` section: reads the files (format per spec), carves
/// test/validation splits with a seeded shuffle when no separate files are given, checks shapes
/// agree between splits, and fits/applies the standardizer when asked. Relative paths are
/// resolved against `base_dir`.
/// Carving: with no test file and test_split > 0, the train rows are permuted by
/// shuffled_indices(N, split_seed); the first round(N * test_split) permuted rows become the test
/// split and the rest (still in permuted order) stay train. Then, with no validation file and
/// validation_split > 0, the last round(M * validation_split) of the M remaining train rows become
/// the validation split. A split not asked for is left empty (zero rows); one asked for that comes
/// out empty is an error.
/// Classes: with a non-empty spec.classes, after the test carve and before the validation carve,
/// the train split (and a separate validation file) keep only the rows of those classes; the test
/// split is never filtered. The standardizer is fit on the filtered train rows.
Splits load_splits(const config::DataSpec& spec, const std::string& base_dir);

}  // namespace hgqt::data
