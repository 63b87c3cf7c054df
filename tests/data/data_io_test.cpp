// Tests of the torch-free data layer: HDF5, IDX, jet CSV/HDF5, standardization and splits.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include "hgqt/data/dataset.h"

namespace {

namespace fs = std::filesystem;
using hgqt::data::Array;
using hgqt::data::DataError;
using hgqt::data::Dataset;

/// A fresh directory under the system temp dir, removed with its content at the end.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
    path_ = fs::temp_directory_path() /
            ("hgqt_data_io_" + std::to_string(stamp) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

/// The message of the DataError that `f` throws ("" and a test failure when none is thrown).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const DataError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected DataError, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected a DataError";
  return "";
}

#define EXPECT_CONTAINS(haystack, needle) \
  EXPECT_NE(std::string(haystack).find(needle), std::string::npos) << "message: " << (haystack)

Array make_array(std::vector<int64_t> shape, std::vector<float> values) {
  Array a;
  a.shape = std::move(shape);
  a.values = std::move(values);
  return a;
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// Number of HDF5 identifiers of any kind still open (leak check).
ssize_t open_h5_objects() {
  return H5Fget_obj_count(static_cast<hid_t>(H5F_OBJ_ALL), H5F_OBJ_ALL);
}

// ---- raw HDF5 helpers for layouts the library does not write itself

hid_t open_or_create(const std::string& file) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  if (fs::exists(file)) return H5Fopen(file.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  return H5Fcreate(file.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
}

void raw_write(const std::string& file, const std::string& name, hid_t file_type, hid_t mem_type,
               const std::vector<hsize_t>& dims, const void* data) {
  hid_t f = open_or_create(file);
  ASSERT_GE(f, 0);
  hid_t space = dims.empty()
                    ? H5Screate(H5S_SCALAR)
                    : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
  hid_t d = H5Dcreate2(f, name.c_str(), file_type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  ASSERT_GE(d, 0);
  ASSERT_GE(H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data), 0);
  H5Dclose(d);
  H5Sclose(space);
  H5Fclose(f);
}

/// Fixed-length byte strings, the way h5py stores a numpy "S" array.
void write_fixed_strings(const std::string& file, const std::string& name,
                         const std::vector<std::string>& strings) {
  size_t width = 1;
  for (const auto& s : strings) width = std::max(width, s.size());
  std::vector<char> buf(strings.size() * width, '\0');
  for (size_t i = 0; i < strings.size(); ++i)
    std::copy(strings[i].begin(), strings[i].end(), buf.begin() + static_cast<long>(i * width));
  hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, width);
  H5Tset_strpad(type, H5T_STR_NULLPAD);
  raw_write(file, name, type, type, {strings.size()}, buf.data());
  H5Tclose(type);
}

void write_variable_strings(const std::string& file, const std::string& name,
                            const std::vector<std::string>& strings) {
  std::vector<const char*> ptrs;
  for (const auto& s : strings) ptrs.push_back(s.c_str());
  hid_t type = H5Tcopy(H5T_C_S1);
  H5Tset_size(type, H5T_VARIABLE);
  H5Tset_cset(type, H5T_CSET_UTF8);
  raw_write(file, name, type, type, {strings.size()}, ptrs.data());
  H5Tclose(type);
}

/// Writes a gzip file with zlib's gzopen.
void write_gz(const std::string& path, const std::vector<unsigned char>& bytes) {
  gzFile g = gzopen(path.c_str(), "wb");
  ASSERT_NE(g, nullptr);
  ASSERT_EQ(gzwrite(g, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  gzclose(g);
}

std::vector<unsigned char> idx_header(unsigned char type, const std::vector<uint32_t>& dims) {
  std::vector<unsigned char> b = {0, 0, type, static_cast<unsigned char>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<unsigned char>(d >> s));
  return b;
}

}  // namespace

// ---------------------------------------------------------------- HDF5 arrays

TEST(DataIO, H5RoundTripArraysAndLabels) {
  TempDir dir;
  const std::string file = dir.file("round.h5");
  Array x = make_array({3, 2, 2}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10.5f, -11.25f});
  hgqt::data::write_h5_array(file, "train/x", x, /*truncate=*/true);
  hgqt::data::write_h5_labels(file, "train/y", {2, 0, 7});
  hgqt::data::write_h5_array(file, "extra", make_array({2}, {1.5f, 2.5f}));

  Array rx = hgqt::data::read_h5_array(file, "train/x");
  EXPECT_EQ(rx.shape, (std::vector<int64_t>{3, 2, 2}));
  EXPECT_EQ(rx.values, x.values);
  EXPECT_EQ(rx.rows(), 3);
  EXPECT_EQ(rx.row_size(), 4);
  Array ry = hgqt::data::read_h5_array(file, "/train/y");
  EXPECT_EQ(ry.shape, (std::vector<int64_t>{3}));
  EXPECT_EQ(ry.values, (std::vector<float>{2, 0, 7}));
  EXPECT_EQ(ry.row_size(), 1);

  auto names = hgqt::data::list_h5_datasets(file);
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()),
            (std::set<std::string>{"extra", "train/x", "train/y"}));

  // Replacing a data set of the same name, with another shape.
  hgqt::data::write_h5_array(file, "train/x", make_array({1, 3}, {7, 8, 9}));
  rx = hgqt::data::read_h5_array(file, "train/x");
  EXPECT_EQ(rx.shape, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(rx.values, (std::vector<float>{7, 8, 9}));
  EXPECT_EQ(hgqt::data::list_h5_datasets(file).size(), 3u);

  // Truncating starts a new file, and leaves no temporary file behind.
  hgqt::data::write_h5_labels(file, "only", {1}, /*truncate=*/true);
  EXPECT_EQ(hgqt::data::list_h5_datasets(file), (std::vector<std::string>{"only"}));
  EXPECT_FALSE(fs::exists(file + ".tmp"));
  EXPECT_EQ(open_h5_objects(), 0);
}

TEST(DataIO, H5WritesAreChunkedAndCompressed) {
  TempDir dir;
  const std::string file = dir.file("c.h5");
  hgqt::data::write_h5_array(file, "a", make_array({100, 4}, std::vector<float>(400, 1.0f)), true);
  hid_t f = H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t d = H5Dopen2(f, "a", H5P_DEFAULT);
  hid_t dcpl = H5Dget_create_plist(d);
  EXPECT_EQ(H5Pget_layout(dcpl), H5D_CHUNKED);
  ASSERT_EQ(H5Pget_nfilters(dcpl), 1);
  unsigned flags = 0, level = 0;
  size_t nelem = 1;
  EXPECT_EQ(H5Pget_filter2(dcpl, 0, &flags, &nelem, &level, 0, nullptr, nullptr),
            H5Z_FILTER_DEFLATE);
  EXPECT_EQ(level, 4u);
  H5Pclose(dcpl);
  H5Dclose(d);
  H5Fclose(f);
}

TEST(DataIO, H5WriteErrorsKeepExistingFiles) {
  TempDir dir;
  const std::string file = dir.file("notes.h5");
  write_text(file, "not hdf5 at all");
  std::string msg = error_of([&] { hgqt::data::write_h5_labels(file, "y", {1, 2}); });
  EXPECT_CONTAINS(msg, "notes.h5");
  EXPECT_EQ(read_text(file), "not hdf5 at all");
  // With truncate, the file is replaced.
  hgqt::data::write_h5_labels(file, "y", {1, 2}, true);
  EXPECT_EQ(hgqt::data::read_h5_array(file, "y").values, (std::vector<float>{1, 2}));

  msg = error_of([&] { hgqt::data::write_h5_array(file, "z", make_array({2, 2}, {1, 2, 3})); });
  EXPECT_CONTAINS(msg, "needs 4 values");
  msg = error_of([&] { hgqt::data::write_h5_array(file, "z", make_array({0, 2}, {})); });
  EXPECT_CONTAINS(msg, "empty");
  msg = error_of([&] { hgqt::data::write_h5_array(file, "y/inner", make_array({1}, {1})); });
  EXPECT_CONTAINS(msg, "not a group");
  EXPECT_EQ(hgqt::data::list_h5_datasets(file), (std::vector<std::string>{"y"}));
  EXPECT_EQ(open_h5_objects(), 0);
}

TEST(DataIO, H5ReadsIntegerTypesAsFloat) {
  TempDir dir;
  const std::string file = dir.file("ints.h5");
  std::vector<int32_t> i32 = {1, -2, 300000};
  raw_write(file, "i32", H5T_STD_I32BE, H5T_NATIVE_INT32, {3}, i32.data());
  std::vector<uint8_t> u8 = {0, 255, 7, 9};
  raw_write(file, "u8", H5T_STD_U8LE, H5T_NATIVE_UINT8, {2, 2}, u8.data());
  std::vector<double> f64 = {0.5, -1e10};
  raw_write(file, "f64", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, {2, 1}, f64.data());

  EXPECT_EQ(hgqt::data::read_h5_array(file, "i32").values, (std::vector<float>{1, -2, 300000}));
  Array u = hgqt::data::read_h5_array(file, "u8");
  EXPECT_EQ(u.shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(u.values, (std::vector<float>{0, 255, 7, 9}));
  Array f = hgqt::data::read_h5_array(file, "f64");
  EXPECT_EQ(f.shape, (std::vector<int64_t>{2, 1}));
  EXPECT_FLOAT_EQ(f.values[1], -1e10f);
  EXPECT_EQ(open_h5_objects(), 0);
}

TEST(DataIO, H5MissingFile) {
  TempDir dir;
  std::string msg = error_of([&] { hgqt::data::read_h5_array(dir.file("nope.h5"), "x"); });
  EXPECT_CONTAINS(msg, "nope.h5");
  EXPECT_CONTAINS(msg, "no such file");
  msg = error_of([&] { hgqt::data::list_h5_datasets(dir.file("nope.h5")); });
  EXPECT_CONTAINS(msg, "no such file");
}

TEST(DataIO, H5NotAnHdf5File) {
  TempDir dir;
  const std::string file = dir.file("text.h5");
  write_text(file, "hello, this is text\n");
  std::string msg = error_of([&] { hgqt::data::read_h5_array(file, "x"); });
  EXPECT_CONTAINS(msg, "text.h5");
  EXPECT_CONTAINS(msg, "not an HDF5 file");
  EXPECT_EQ(open_h5_objects(), 0);
}

TEST(DataIO, H5MissingDataSetListsThePresentOnes) {
  TempDir dir;
  const std::string file = dir.file("d.h5");
  hgqt::data::write_h5_array(file, "train/x", make_array({1, 2}, {1, 2}), true);
  hgqt::data::write_h5_labels(file, "train/y", {0});
  std::string msg = error_of([&] { hgqt::data::read_h5_array(file, "x_train"); });
  EXPECT_CONTAINS(msg, "d.h5");
  EXPECT_CONTAINS(msg, "'x_train'");
  EXPECT_CONTAINS(msg, "train/x");
  EXPECT_CONTAINS(msg, "train/y");
  msg = error_of([&] { hgqt::data::read_h5_array(file, "train/z"); });
  EXPECT_CONTAINS(msg, "no data set 'train/z'");
  msg = error_of([&] { hgqt::data::read_h5_array(file, "nogroup/deeper/x"); });
  EXPECT_CONTAINS(msg, "no data set");
  msg = error_of([&] { hgqt::data::read_h5_array(file, "train"); });
  EXPECT_CONTAINS(msg, "is a group");
  EXPECT_EQ(open_h5_objects(), 0);
}

TEST(DataIO, H5NonNumericAndScalarDataSets) {
  TempDir dir;
  const std::string file = dir.file("odd.h5");
  write_fixed_strings(file, "names", {"a", "bb"});
  double scalar = 3.0;
  raw_write(file, "scalar", H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, {}, &scalar);
  std::string msg = error_of([&] { hgqt::data::read_h5_array(file, "names"); });
  EXPECT_CONTAINS(msg, "'names'");
  EXPECT_CONTAINS(msg, "string");
  EXPECT_CONTAINS(msg, "numeric");
  msg = error_of([&] { hgqt::data::read_h5_array(file, "scalar"); });
  EXPECT_CONTAINS(msg, "'scalar'");
  EXPECT_CONTAINS(msg, "is a scalar");
  hsize_t zero = 0;
  hid_t f = open_or_create(file);
  hid_t space = H5Screate_simple(1, &zero, nullptr);
  hid_t d = H5Dcreate2(f, "empty", H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dclose(d);
  H5Sclose(space);
  H5Fclose(f);
  msg = error_of([&] { hgqt::data::read_h5_array(file, "empty"); });
  EXPECT_CONTAINS(msg, "is empty");
  msg = error_of([&] { hgqt::data::read_h5_strings(file, "scalar"); });
  EXPECT_CONTAINS(msg, "expected strings");
  EXPECT_EQ(open_h5_objects(), 0);
}

TEST(DataIO, H5NaNAndInfReportTheirIndex) {
  TempDir dir;
  const std::string file = dir.file("nan.h5");
  std::vector<float> v(12, 1.0f);
  v[7] = std::numeric_limits<float>::quiet_NaN();
  v[10] = std::numeric_limits<float>::infinity();
  hgqt::data::write_h5_array(file, "x", make_array({4, 3}, v), true);
  std::string msg = error_of([&] { hgqt::data::read_h5_array(file, "x"); });
  EXPECT_CONTAINS(msg, "nan.h5");
  EXPECT_CONTAINS(msg, "'x'");
  EXPECT_CONTAINS(msg, "NaN");
  EXPECT_CONTAINS(msg, "flat index 7");
  EXPECT_CONTAINS(msg, "sample row 2");
  // The raw reader does not check.
  EXPECT_TRUE(std::isnan(hgqt::data::read_h5_array_raw(file, "x").values[7]));

  v[7] = 1.0f;
  msg = error_of([&] { hgqt::data::check_finite(make_array({4, 3}, v), "features"); });
  EXPECT_CONTAINS(msg, "features");
  EXPECT_CONTAINS(msg, "+Inf");
  EXPECT_CONTAINS(msg, "flat index 10");
  EXPECT_CONTAINS(msg, "sample row 3");
  v[10] = 1.0f;
  EXPECT_NO_THROW(hgqt::data::check_finite(make_array({4, 3}, v), "features"));
}

TEST(DataIO, H5Strings) {
  TempDir dir;
  const std::string file = dir.file("s.h5");
  write_fixed_strings(file, "fixed", {"zlogz", "j_g", "mass_mmdt"});
  write_variable_strings(file, "var", {"a", "", "ccc"});
  EXPECT_EQ(hgqt::data::read_h5_strings(file, "fixed"),
            (std::vector<std::string>{"zlogz", "j_g", "mass_mmdt"}));
  EXPECT_EQ(hgqt::data::read_h5_strings(file, "var"), (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(open_h5_objects(), 0);
}

// ---------------------------------------------------------------- IDX

TEST(DataIO, IdxGzipImagesAndLabels) {
  TempDir dir;
  std::vector<unsigned char> img = idx_header(0x08, {2, 2, 3});
  for (int i = 0; i < 12; ++i) img.push_back(static_cast<unsigned char>(i * 20));
  write_gz(dir.file("img.gz"), img);
  Array a = hgqt::data::read_idx(dir.file("img.gz"));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 2, 3}));
  ASSERT_EQ(a.values.size(), 12u);
  EXPECT_EQ(a.values[0], 0.0f);
  EXPECT_EQ(a.values[11], 220.0f);

  std::vector<unsigned char> lab = idx_header(0x08, {4});
  for (unsigned char c : {3, 1, 4, 1}) lab.push_back(c);
  write_gz(dir.file("lab.gz"), lab);
  Array l = hgqt::data::read_idx(dir.file("lab.gz"));
  EXPECT_EQ(l.shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(l.values, (std::vector<float>{3, 1, 4, 1}));

  // Plain (uncompressed) files and other element types.
  std::vector<unsigned char> f32 = idx_header(0x0D, {2});
  for (unsigned char c : {0x3F, 0xC0, 0x00, 0x00, 0xC0, 0x20, 0x00, 0x00}) f32.push_back(c);
  write_text(dir.file("f32.idx"), std::string(f32.begin(), f32.end()));
  EXPECT_EQ(hgqt::data::read_idx(dir.file("f32.idx")).values, (std::vector<float>{1.5f, -2.5f}));
}

TEST(DataIO, IdxErrors) {
  TempDir dir;
  std::string msg = error_of([&] { hgqt::data::read_idx(dir.file("missing.gz")); });
  EXPECT_CONTAINS(msg, "missing.gz");
  EXPECT_CONTAINS(msg, "no such file");

  std::vector<unsigned char> img = idx_header(0x08, {2, 2, 3});
  for (int i = 0; i < 10; ++i) img.push_back(1);  // two bytes short
  write_gz(dir.file("short.gz"), img);
  msg = error_of([&] { hgqt::data::read_idx(dir.file("short.gz")); });
  EXPECT_CONTAINS(msg, "short.gz");
  EXPECT_CONTAINS(msg, "truncated");
  EXPECT_CONTAINS(msg, "[2, 2, 3]");

  img.push_back(1);
  img.push_back(1);
  img.push_back(1);  // one byte too many
  write_gz(dir.file("long.gz"), img);
  msg = error_of([&] { hgqt::data::read_idx(dir.file("long.gz")); });
  EXPECT_CONTAINS(msg, "unexpected bytes");

  write_gz(dir.file("magic.gz"), {0x1F, 0x00, 0x08, 0x01, 0, 0, 0, 1, 5});
  msg = error_of([&] { hgqt::data::read_idx(dir.file("magic.gz")); });
  EXPECT_CONTAINS(msg, "bad magic");

  write_gz(dir.file("type.gz"), {0x00, 0x00, 0x42, 0x01, 0, 0, 0, 1, 5});
  msg = error_of([&] { hgqt::data::read_idx(dir.file("type.gz")); });
  EXPECT_CONTAINS(msg, "unsupported IDX element type 0x42");

  // A gzip stream cut in the middle.
  std::vector<unsigned char> big = idx_header(0x08, {1000});
  for (int i = 0; i < 1000; ++i) big.push_back(static_cast<unsigned char>((i * 7919) % 251));
  write_gz(dir.file("cut.gz"), big);
  std::string bytes = read_text(dir.file("cut.gz"));
  write_text(dir.file("cut.gz"), bytes.substr(0, bytes.size() / 2));
  msg = error_of([&] { hgqt::data::read_idx(dir.file("cut.gz")); });
  EXPECT_CONTAINS(msg, "cut.gz");
}

TEST(DataIO, FashionMnistConversion) {
  const std::string src = "/usr/share/datasets/fashion-mnist";
  if (!fs::exists(src + "/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "Fashion-MNIST not installed (Debian package dataset-fashion-mnist)";
  TempDir dir;
  const std::string out = dir.file("fmnist.h5");
  hgqt::data::convert_fashion_mnist(src, out);
  EXPECT_FALSE(fs::exists(out + ".part"));
  auto names = hgqt::data::list_h5_datasets(out);
  EXPECT_EQ(std::set<std::string>(names.begin(), names.end()),
            (std::set<std::string>{"x_train", "y_train", "x_test", "y_test"}));
  Array x = hgqt::data::read_h5_array(out, "x_test");
  EXPECT_EQ(x.shape, (std::vector<int64_t>{10000, 28, 28}));
  float lo = 1e9f, hi = -1e9f;
  for (float v : x.values) {
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  EXPECT_EQ(lo, 0.0f);
  EXPECT_EQ(hi, 1.0f);
  Array y = hgqt::data::read_h5_array(out, "y_train");
  EXPECT_EQ(y.shape, (std::vector<int64_t>{60000}));
  std::set<float> classes(y.values.begin(), y.values.end());
  EXPECT_EQ(classes.size(), 10u);
  EXPECT_EQ(*classes.begin(), 0.0f);
  EXPECT_EQ(*classes.rbegin(), 9.0f);
  EXPECT_EQ(hgqt::data::read_h5_array(out, "x_train").shape, (std::vector<int64_t>{60000, 28, 28}));
  EXPECT_EQ(hgqt::data::read_h5_array(out, "y_test").shape, (std::vector<int64_t>{10000}));
}

TEST(DataIO, FashionMnistMissingFileNamesThePackage) {
  TempDir dir;
  std::string msg =
      error_of([&] { hgqt::data::convert_fashion_mnist(dir.path().string(), dir.file("o.h5")); });
  EXPECT_CONTAINS(msg, "train-images-idx3-ubyte.gz");
  EXPECT_CONTAINS(msg, "dataset-fashion-mnist");
  EXPECT_FALSE(fs::exists(dir.file("o.h5")));
}

// ---------------------------------------------------------------- jet data

namespace {

/// The 16 features in a shuffled order, with extra columns, and a label part.
std::string jet_csv_header(const std::string& label_part) {
  auto f = hgqt::data::jet_feature_names();
  std::string h = "j_index";
  for (int i : {15, 3, 0, 7, 12, 1, 9, 14, 2, 11, 5, 13, 4, 8, 10, 6}) {
    h += "," + f[static_cast<size_t>(i)];
    if (i == 9) h += ",j_pt";
  }
  return h + "," + label_part;
}

/// A row of that header: feature i of row r is r*100 + i; j_pt holds a "nan" nobody reads.
std::string jet_csv_row(int r, const std::string& label_part) {
  std::string s = std::to_string(r);
  for (int i : {15, 3, 0, 7, 12, 1, 9, 14, 2, 11, 5, 13, 4, 8, 10, 6}) {
    s += "," + std::to_string(r * 100 + i);
    if (i == 9) s += ",nan";
  }
  return s + "," + label_part;
}

void expect_jet_rows(const Dataset& d, int rows) {
  ASSERT_EQ(d.x.shape, (std::vector<int64_t>{rows, 16}));
  EXPECT_EQ(d.feature_names, hgqt::data::jet_feature_names());
  for (int r = 0; r < rows; ++r)
    for (int i = 0; i < 16; ++i)
      EXPECT_EQ(d.x.values[static_cast<size_t>(r * 16 + i)], static_cast<float>(r * 100 + i));
}

}  // namespace

TEST(DataIO, JetNames) {
  EXPECT_EQ(hgqt::data::jet_feature_names().size(), 16u);
  EXPECT_EQ(hgqt::data::jet_feature_names().front(), "zlogz");
  EXPECT_EQ(hgqt::data::jet_feature_names().back(), "multiplicity");
  EXPECT_EQ(hgqt::data::jet_class_names(), (std::vector<std::string>{"g", "q", "w", "z", "t"}));
}

TEST(DataIO, JetCsvWithClassColumn) {
  TempDir dir;
  const std::string file = dir.file("jets.csv");
  std::string text = jet_csv_header("class") + "\r\n";
  const char* labels[] = {"g", "j_q", "W", "\"z\"", " t "};
  for (int r = 0; r < 5; ++r) text += jet_csv_row(r, labels[r]) + "\r\n";
  text += "\n";
  write_text(file, text);
  Dataset d = hgqt::data::read_jet_csv(file);
  expect_jet_rows(d, 5);
  EXPECT_EQ(d.y.shape, (std::vector<int64_t>{5}));
  EXPECT_EQ(d.y.values, (std::vector<float>{0, 1, 2, 3, 4}));

  Dataset sub = hgqt::data::read_jet_csv(file, {"multiplicity", "zlogz"});
  EXPECT_EQ(sub.x.shape, (std::vector<int64_t>{5, 2}));
  EXPECT_EQ(sub.feature_names, (std::vector<std::string>{"multiplicity", "zlogz"}));
  EXPECT_EQ(sub.x.values[2], 115.0f);
  EXPECT_EQ(sub.x.values[3], 100.0f);
}

TEST(DataIO, JetCsvWithOneHotColumns) {
  TempDir dir;
  const std::string file = dir.file("jets.csv");
  std::string text = jet_csv_header("j_t,j_g,j_z,j_q,j_w") + "\n";
  const char* hots[] = {"0,1,0,0,0", "0,0,0,1.0,0", "0,0,0,0,1", "0,0,1,0,0", "1,0,0,0,0"};
  for (int r = 0; r < 5; ++r) text += jet_csv_row(r, hots[r]) + "\n";
  write_text(file, text);
  Dataset d = hgqt::data::read_jet_csv(file);
  expect_jet_rows(d, 5);
  EXPECT_EQ(d.y.values, (std::vector<float>{0, 1, 2, 3, 4}));
}

TEST(DataIO, JetCsvErrors) {
  TempDir dir;
  const std::string file = dir.file("bad.csv");
  write_text(file, jet_csv_header("class") + "\n" + jet_csv_row(0, "g") + "\n" +
                       jet_csv_row(1, "x") + "\n");
  std::string msg = error_of([&] { hgqt::data::read_jet_csv(file); });
  EXPECT_CONTAINS(msg, "bad.csv");
  EXPECT_CONTAINS(msg, "line 3");
  EXPECT_CONTAINS(msg, "'x'");
  EXPECT_CONTAINS(msg, "class");

  std::string header = jet_csv_header("class");
  header.replace(header.find(",multiplicity"), 13, ",mult");
  write_text(file, header + "\n" + jet_csv_row(0, "g") + "\n");
  msg = error_of([&] { hgqt::data::read_jet_csv(file); });
  EXPECT_CONTAINS(msg, "line 1");
  EXPECT_CONTAINS(msg, "'multiplicity'");

  std::string row = jet_csv_row(0, "g");
  row.replace(row.find(",0,"), 3, ",abc,");  // the first ",0," is the zlogz value of row 0
  write_text(file, jet_csv_header("class") + "\n" + row + "\n");
  msg = error_of([&] { hgqt::data::read_jet_csv(file); });
  EXPECT_CONTAINS(msg, "line 2");
  EXPECT_CONTAINS(msg, "'abc' is not a number");
  EXPECT_CONTAINS(msg, "column 'zlogz'");

  write_text(file, jet_csv_header("j_g,j_q,j_w,j_z,j_t") + "\n" + jet_csv_row(0, "1,0,0,0,0") +
                       "\n" + jet_csv_row(1, "1,1,0,0,0") + "\n");
  msg = error_of([&] { hgqt::data::read_jet_csv(file); });
  EXPECT_CONTAINS(msg, "line 3");
  EXPECT_CONTAINS(msg, "not one-hot");

  write_text(file, jet_csv_header("j_g,j_q,j_w,j_z") + "\n" + jet_csv_row(0, "1,0,0,0") + "\n");
  msg = error_of([&] { hgqt::data::read_jet_csv(file); });
  EXPECT_CONTAINS(msg, "missing: j_t");

  write_text(file, jet_csv_header("class") + "\n" + jet_csv_row(0, "g") + ",extra\n");
  msg = error_of([&] { hgqt::data::read_jet_csv(file); });
  EXPECT_CONTAINS(msg, "line 2");
  EXPECT_CONTAINS(msg, "cells");

  msg = error_of([&] { hgqt::data::read_jet_csv(dir.file("none.csv")); });
  EXPECT_CONTAINS(msg, "no such file");
}

TEST(DataIO, JetHdf5Layout) {
  TempDir dir;
  const std::string file = dir.file("jets.h5");
  // Columns: the 16 features with the "j_" prefix of the hls4ml files, the five one-hot columns
  // and two extra ones, in a shuffled order.
  std::vector<std::string> columns;
  for (const auto& f : hgqt::data::jet_feature_names()) columns.push_back("j_" + f);
  for (const auto& c : {"j_g", "j_q", "j_w", "j_z", "j_t", "j_pt", "j_index"}) columns.push_back(c);
  std::vector<size_t> order = {22, 4,  17, 0, 9,  16, 13, 21, 2,  19, 7, 11,
                               1,  18, 15, 5, 20, 8,  14, 3,  10, 6,  12};
  std::vector<std::string> shuffled;
  for (size_t i : order) shuffled.push_back(columns[i]);
  const int rows = 5;
  std::vector<float> jets;
  for (int r = 0; r < rows; ++r) {
    for (size_t i : order) {
      if (i < 16) {
        jets.push_back(static_cast<float>(r * 100 + static_cast<int>(i)));
      } else if (i < 21) {
        jets.push_back(static_cast<int>(i) - 16 == (r * 2) % 5 ? 1.0f : 0.0f);
      } else {
        jets.push_back(i == 21 ? std::numeric_limits<float>::quiet_NaN() : static_cast<float>(r));
      }
    }
  }
  hgqt::data::write_h5_array(file, "jets", make_array({rows, 23}, jets), true);
  write_fixed_strings(file, "jetFeatureNames", shuffled);
  Dataset d = hgqt::data::read_jet_h5(file);
  expect_jet_rows(d, rows);
  EXPECT_EQ(d.y.shape, (std::vector<int64_t>{rows}));
  EXPECT_EQ(d.y.values, (std::vector<float>{0, 2, 4, 1, 3}));

  // Variable-length names work the same; an unknown feature is named in the error.
  const std::string file2 = dir.file("jets_vl.h5");
  hgqt::data::write_h5_array(file2, "jets", make_array({rows, 23}, jets), true);
  write_variable_strings(file2, "jetFeatureNames", shuffled);
  Dataset d2 = hgqt::data::read_jet_h5(file2, {"mass_mmdt"});
  EXPECT_EQ(d2.x.shape, (std::vector<int64_t>{rows, 1}));
  EXPECT_EQ(d2.x.values[1], 114.0f);
  std::string msg = error_of([&] { hgqt::data::read_jet_h5(file2, {"tau21"}); });
  EXPECT_CONTAINS(msg, "'tau21'");
  EXPECT_CONTAINS(msg, "jetFeatureNames");
  EXPECT_EQ(open_h5_objects(), 0);
}

// ---------------------------------------------------------------- standardization and splits

TEST(DataIO, StandardizerByHand) {
  Array x = make_array({3, 2}, {1, 10, 2, 10, 3, 10});
  auto s = hgqt::data::Standardizer::fit(x);
  ASSERT_EQ(s.mean.size(), 2u);
  EXPECT_FLOAT_EQ(s.mean[0], 2.0f);
  EXPECT_FLOAT_EQ(s.mean[1], 10.0f);
  EXPECT_FLOAT_EQ(s.stddev[0], std::sqrt(2.0f / 3.0f));
  EXPECT_FLOAT_EQ(s.stddev[1], 1.0f);  // zero deviation stored as 1
  s.apply(x);
  EXPECT_NEAR(x.values[0], -1.2247449f, 1e-6);
  EXPECT_NEAR(x.values[2], 0.0f, 1e-6);
  EXPECT_NEAR(x.values[4], 1.2247449f, 1e-6);
  EXPECT_EQ(x.values[5], 0.0f);
  Array wrong = make_array({1, 3}, {1, 2, 3});
  std::string msg = error_of([&] { s.apply(wrong); });
  EXPECT_CONTAINS(msg, "rows of 2 values");
  EXPECT_CONTAINS(msg, "rows of 3 values");
}

TEST(DataIO, ShuffledIndicesArePinned) {
  auto p = hgqt::data::shuffled_indices(10, 42);
  std::vector<int64_t> sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 10; ++i) EXPECT_EQ(sorted[static_cast<size_t>(i)], i);
  EXPECT_EQ(p, hgqt::data::shuffled_indices(10, 42));
  EXPECT_NE(p, hgqt::data::shuffled_indices(10, 43));
  // The exact order is part of the format: runs must carve the same rows everywhere.
  EXPECT_EQ(p, (std::vector<int64_t>{1, 7, 9, 0, 3, 8, 4, 2, 5, 6}));
  EXPECT_TRUE(hgqt::data::shuffled_indices(0, 1).empty());
  EXPECT_EQ(hgqt::data::shuffled_indices(1, 1), (std::vector<int64_t>{0}));
}

namespace {

/// x row i = {i, 10 i}, y = i, in `file` (data sets "x" and "y").
void write_counting(const std::string& file, int rows) {
  std::vector<float> x;
  std::vector<int64_t> y;
  for (int i = 0; i < rows; ++i) {
    x.push_back(static_cast<float>(i));
    x.push_back(static_cast<float>(10 * i));
    y.push_back(i);
  }
  hgqt::data::write_h5_array(file, "x", make_array({rows, 2}, x), true);
  hgqt::data::write_h5_labels(file, "y", y);
}

hgqt::config::DataSpec h5_spec(const std::string& file) {
  hgqt::config::DataSpec spec;
  spec.format = "hdf5";
  spec.train.file = file;
  spec.train.features = "x";
  spec.train.labels = "y";
  spec.validation_split = 0.0;
  spec.test_split = 0.0;
  return spec;
}

std::vector<float> labels_of(const Dataset& d) {
  return d.y.values;
}

}  // namespace

TEST(DataIO, LoadSplitsCarvesTestThenValidation) {
  TempDir dir;
  write_counting(dir.file("d.h5"), 10);
  auto spec = h5_spec("d.h5");  // relative: resolved against base_dir
  spec.test_split = 0.2;
  spec.validation_split = 0.25;
  spec.split_seed = 7;
  auto s = hgqt::data::load_splits(spec, dir.path().string());
  // 10 rows: 2 test (first two permuted rows), then of the other 8, the last 2 are validation.
  auto perm = hgqt::data::shuffled_indices(10, 7);
  auto as_float = [&](size_t b, size_t e) {
    std::vector<float> v;
    for (size_t i = b; i < e; ++i) v.push_back(static_cast<float>(perm[i]));
    return v;
  };
  EXPECT_EQ(s.test.size(), 2);
  EXPECT_EQ(s.validation.size(), 2);
  EXPECT_EQ(s.train.size(), 6);
  EXPECT_EQ(labels_of(s.test), as_float(0, 2));
  EXPECT_EQ(labels_of(s.train), as_float(2, 8));
  EXPECT_EQ(labels_of(s.validation), as_float(8, 10));
  for (int64_t r = 0; r < s.train.size(); ++r) {  // x rows travel with their labels
    float label = s.train.y.values[static_cast<size_t>(r)];
    EXPECT_EQ(s.train.x.values[static_cast<size_t>(2 * r)], label);
    EXPECT_EQ(s.train.x.values[static_cast<size_t>(2 * r + 1)], 10 * label);
  }
  EXPECT_TRUE(s.standardizer.empty());
  // Same seed, same carving.
  auto again = hgqt::data::load_splits(spec, dir.path().string());
  EXPECT_EQ(labels_of(again.test), labels_of(s.test));
  EXPECT_EQ(labels_of(again.validation), labels_of(s.validation));
}

TEST(DataIO, LoadSplitsValidationIsTheTailWithoutShuffle) {
  TempDir dir;
  write_counting(dir.file("d.h5"), 10);
  auto spec = h5_spec(dir.file("d.h5"));
  spec.validation_split = 0.3;
  auto s = hgqt::data::load_splits(spec, "/elsewhere");  // absolute paths ignore base_dir
  EXPECT_EQ(labels_of(s.validation), (std::vector<float>{7, 8, 9}));
  EXPECT_EQ(labels_of(s.train), (std::vector<float>{0, 1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(s.test.size(), 0);
}

TEST(DataIO, LoadSplitsStandardizesWithTrainStatistics) {
  TempDir dir;
  const std::string file = dir.file("s.h5");
  hgqt::data::write_h5_array(file, "train/x", make_array({3, 2}, {1, 10, 2, 10, 3, 10}), true);
  hgqt::data::write_h5_labels(file, "train/y", {0, 1, 0});
  hgqt::data::write_h5_array(file, "val/x", make_array({1, 2}, {4, 12}));
  hgqt::data::write_h5_labels(file, "val/y", {1});
  hgqt::config::DataSpec spec;
  spec.train = {file, "train/x", "train/y", ""};
  spec.validation = {file, "val/x", "val/y", ""};
  spec.test_split = 0.0;
  spec.standardize = true;
  auto s = hgqt::data::load_splits(spec, "");
  ASSERT_FALSE(s.standardizer.empty());
  EXPECT_FLOAT_EQ(s.standardizer.mean[0], 2.0f);
  EXPECT_FLOAT_EQ(s.standardizer.stddev[0], std::sqrt(2.0f / 3.0f));
  EXPECT_FLOAT_EQ(s.standardizer.stddev[1], 1.0f);
  EXPECT_NEAR(s.train.x.values[0], -1.2247449f, 1e-6);
  EXPECT_NEAR(s.train.x.values[4], 1.2247449f, 1e-6);
  EXPECT_NEAR(s.validation.x.values[0], 2.4494898f, 1e-6);  // (4 - 2) / sqrt(2/3)
  EXPECT_NEAR(s.validation.x.values[1], 2.0f, 1e-6);        // (12 - 10) / 1
  EXPECT_EQ(s.validation.y.values, (std::vector<float>{1}));
}

TEST(DataIO, LoadSplitsRowCountMismatch) {
  TempDir dir;
  const std::string file = dir.file("m.h5");
  hgqt::data::write_h5_array(file, "x", make_array({5, 2}, std::vector<float>(10, 1.0f)), true);
  hgqt::data::write_h5_labels(file, "y", {0, 1, 0, 1});
  std::string msg = error_of([&] { hgqt::data::load_splits(h5_spec(file), ""); });
  EXPECT_CONTAINS(msg, "m.h5");
  EXPECT_CONTAINS(msg, "'x' (5 rows)");
  EXPECT_CONTAINS(msg, "'y' (4 rows)");
}

TEST(DataIO, LoadSplitsShapeMismatchBetweenSplits) {
  TempDir dir;
  const std::string file = dir.file("t.h5");
  hgqt::data::write_h5_array(file, "x", make_array({4, 3}, std::vector<float>(12, 1.0f)), true);
  hgqt::data::write_h5_labels(file, "y", {0, 1, 0, 1});
  const std::string vfile = dir.file("v.h5");
  hgqt::data::write_h5_array(vfile, "x", make_array({2, 4}, std::vector<float>(8, 1.0f)), true);
  hgqt::data::write_h5_labels(vfile, "y", {0, 1});
  auto spec = h5_spec(file);
  spec.validation.file = vfile;  // data set names default to those of train
  std::string msg = error_of([&] { hgqt::data::load_splits(spec, ""); });
  EXPECT_CONTAINS(msg, "validation");
  EXPECT_CONTAINS(msg, "v.h5");
  EXPECT_CONTAINS(msg, "[N, 4]");
  EXPECT_CONTAINS(msg, "[N, 3]");

  const std::string tfile = dir.file("test.h5");
  hgqt::data::write_h5_array(tfile, "x", make_array({2, 3}, std::vector<float>(6, 1.0f)), true);
  hgqt::data::write_h5_array(tfile, "y", make_array({2, 5}, std::vector<float>(10, 0.0f)));
  spec = h5_spec(file);
  spec.test.file = tfile;
  msg = error_of([&] { hgqt::data::load_splits(spec, ""); });
  EXPECT_CONTAINS(msg, "test split");
  EXPECT_CONTAINS(msg, "labels");
  EXPECT_CONTAINS(msg, "[N, 5]");
}

TEST(DataIO, LoadSplitsEmptySplitAndBadSpec) {
  TempDir dir;
  write_counting(dir.file("d.h5"), 3);
  auto spec = h5_spec(dir.file("d.h5"));
  spec.validation_split = 0.1;  // 0.3 of a row
  std::string msg = error_of([&] { hgqt::data::load_splits(spec, ""); });
  EXPECT_CONTAINS(msg, "validation_split");
  EXPECT_CONTAINS(msg, "empty validation split");
  spec.validation_split = 0.0;
  spec.test_split = 0.9;  // 2.7 -> 3 of 3 rows
  msg = error_of([&] { hgqt::data::load_splits(spec, ""); });
  EXPECT_CONTAINS(msg, "no training rows");
  spec.test_split = 0.0;
  spec.format = "parquet";
  msg = error_of([&] { hgqt::data::load_splits(spec, ""); });
  EXPECT_CONTAINS(msg, "'parquet'");
  spec = h5_spec(dir.file("d.h5"));
  spec.train.features = "nothere";
  msg = error_of([&] { hgqt::data::load_splits(spec, ""); });
  EXPECT_CONTAINS(msg, "'nothere'");
  EXPECT_CONTAINS(msg, "data sets present: x, y");
}

TEST(DataIO, LoadSplitsJetCsv) {
  TempDir dir;
  std::string text = jet_csv_header("class") + "\n";
  for (int r = 0; r < 10; ++r) text += jet_csv_row(r, hgqt::data::jet_class_names()[r % 5]) + "\n";
  write_text(dir.file("jets.csv"), text);
  hgqt::config::DataSpec spec;
  spec.format = "jet_csv";
  spec.train.file = "jets.csv";
  spec.test_split = 0.2;
  spec.validation_split = 0.25;
  spec.feature_names = {"zlogz", "multiplicity"};
  auto s = hgqt::data::load_splits(spec, dir.path().string());
  EXPECT_EQ(s.train.size(), 6);
  EXPECT_EQ(s.validation.size(), 2);
  EXPECT_EQ(s.test.size(), 2);
  EXPECT_EQ(s.train.x.shape, (std::vector<int64_t>{6, 2}));
  EXPECT_EQ(s.test.feature_names, spec.feature_names);
  auto perm = hgqt::data::shuffled_indices(10, spec.split_seed);
  EXPECT_EQ(s.test.x.values[0], static_cast<float>(perm[0] * 100));
  EXPECT_EQ(s.test.y.values[0], static_cast<float>(perm[0] % 5));
}
