// HDF5 reading and writing of float arrays, int64 labels and string lists (HDF5 C API).
#include <hdf5.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <mutex>
#include <new>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "hgqt/data/dataset.h"
#include "hgqt/util/h5.h"

namespace hgqt::data {
namespace {

namespace fs = std::filesystem;

using H5Guard = util::h5::Lock;
using util::h5::Handle;

std::string quote(const std::string& s) {
  return "'" + s + "'";
}

/// The innermost HDF5 error description on this thread's error stack ("" when none).
std::string h5_error_detail() {
  std::string detail;
  auto walker = [](unsigned n, const H5E_error2_t* err, void* data) -> herr_t {
    auto* out = static_cast<std::string*>(data);
    if (n == 0 && err != nullptr && err->desc != nullptr) *out = err->desc;
    return 0;
  };
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, walker, &detail);
  return detail;
}

std::string with_detail(const std::string& message) {
  std::string detail = h5_error_detail();
  return detail.empty() ? message : message + " (HDF5: " + detail + ")";
}

/// "train/x" from "/train/x/"; the components of a data set path.
std::vector<std::string> path_components(const std::string& name) {
  std::vector<std::string> parts;
  std::string cur;
  for (char c : name) {
    if (c == '/') {
      if (!cur.empty()) parts.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) parts.push_back(cur);
  return parts;
}

std::string join_path(const std::vector<std::string>& parts, size_t count) {
  std::string out;
  for (size_t i = 0; i < count && i < parts.size(); ++i) out += (i ? "/" : "") + parts[i];
  return out;
}

/// The type of the object at `path` (H5I_DATASET, H5I_GROUP, ...), or H5I_BADID when any
/// component is missing or a link dangles.
H5I_type_t object_type(hid_t file, const std::string& path) {
  std::vector<std::string> parts = path_components(path);
  if (parts.empty()) return H5I_GROUP;
  for (size_t i = 1; i <= parts.size(); ++i) {
    std::string partial = join_path(parts, i);
    if (H5Lexists(file, partial.c_str(), H5P_DEFAULT) <= 0) return H5I_BADID;
    if (H5Oexists_by_name(file, partial.c_str(), H5P_DEFAULT) <= 0) return H5I_BADID;
  }
  Handle obj(H5Oopen(file, join_path(parts, parts.size()).c_str(), H5P_DEFAULT), H5Oclose);
  if (!obj.valid()) return H5I_BADID;
  return H5Iget_type(obj.get());
}

#if H5_VERSION_GE(1, 12, 0)
herr_t collect_dataset(hid_t, const char* name, const H5O_info2_t* info, void* data) {
#else
herr_t collect_dataset(hid_t, const char* name, const H5O_info_t* info, void* data) {
#endif
  if (info->type == H5O_TYPE_DATASET && name != nullptr && std::string(name) != ".")
    static_cast<std::vector<std::string>*>(data)->push_back(name);
  return 0;
}

std::vector<std::string> datasets_in(hid_t file) {
  std::vector<std::string> names;
#if H5_VERSION_GE(1, 12, 0)
  H5Ovisit3(file, H5_INDEX_NAME, H5_ITER_INC, collect_dataset, &names, H5O_INFO_BASIC);
#else
  H5Ovisit(file, H5_INDEX_NAME, H5_ITER_INC, collect_dataset, &names);
#endif
  return names;
}

std::string list_for_message(const std::vector<std::string>& names) {
  if (names.empty()) return "the file has no data sets";
  std::string out = "data sets present: ";
  const size_t shown = 30;
  for (size_t i = 0; i < names.size() && i < shown; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > shown) out += ", ... (" + std::to_string(names.size() - shown) + " more)";
  return out;
}

Handle open_for_read(const std::string& file) {
  std::error_code ec;
  if (!fs::exists(file, ec)) throw DataError(quote(file) + ": no such file");
  if (fs::is_directory(file, ec))
    throw DataError(quote(file) + ": is a directory, not an HDF5 file");
  Handle f(H5Fopen(file.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!f.valid()) {
    std::string detail = h5_error_detail();
    std::ifstream probe(file, std::ios::binary);
    if (!probe) throw DataError(quote(file) + ": cannot be read (check its permissions)");
    throw DataError(quote(file) + ": not an HDF5 file, or damaged" +
                    (detail.empty() ? std::string() : " (HDF5: " + detail + ")"));
  }
  return f;
}

Handle open_dataset(hid_t file, const std::string& file_name, const std::string& name) {
  H5I_type_t type = object_type(file, name);
  if (type == H5I_BADID)
    throw DataError(quote(file_name) + ": no data set " + quote(name) + " (" +
                    list_for_message(datasets_in(file)) + ")");
  if (type != H5I_DATASET)
    throw DataError(quote(file_name) + ": " + quote(name) + " is a group, not a data set (" +
                    list_for_message(datasets_in(file)) + ")");
  Handle d(H5Dopen2(file, join_path(path_components(name), 1000).c_str(), H5P_DEFAULT), H5Dclose);
  if (!d.valid())
    throw DataError(with_detail(quote(file_name) + ": cannot open data set " + quote(name)));
  return d;
}

std::string class_name(H5T_class_t c) {
  switch (c) {
    case H5T_INTEGER:
      return "integer";
    case H5T_FLOAT:
      return "float";
    case H5T_TIME:
      return "time";
    case H5T_STRING:
      return "string";
    case H5T_BITFIELD:
      return "bitfield";
    case H5T_OPAQUE:
      return "opaque";
    case H5T_COMPOUND:
      return "compound";
    case H5T_REFERENCE:
      return "reference";
    case H5T_ENUM:
      return "enum";
    case H5T_VLEN:
      return "variable-length";
    case H5T_ARRAY:
      return "array";
    default:
      return "unknown";
  }
}

/// The dimensions of a data set's simple data space; errors for scalar, null and empty ones.
std::vector<int64_t> array_shape(hid_t dataset, const std::string& where) {
  Handle space(H5Dget_space(dataset), H5Sclose);
  if (!space.valid()) throw DataError(with_detail(where + ": cannot read its shape"));
  H5S_class_t sclass = H5Sget_simple_extent_type(space.get());
  if (sclass == H5S_SCALAR)
    throw DataError(where + " is a scalar; expected an array whose first axis is the samples");
  if (sclass != H5S_SIMPLE)
    throw DataError(where + " is empty (null data space); expected an array of samples");
  int nd = H5Sget_simple_extent_ndims(space.get());
  if (nd <= 0)
    throw DataError(where + " is a scalar; expected an array whose first axis is the samples");
  std::vector<hsize_t> dims(static_cast<size_t>(nd));
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  std::vector<int64_t> shape(dims.begin(), dims.end());
  for (hsize_t d : dims)
    if (d == 0) throw DataError(where + " is empty (shape " + shape_to_string(shape) + ")");
  return shape;
}

Array read_array(const std::string& file, const std::string& name, bool check) {
  Array a;
  {
    H5Guard guard;
    Handle f = open_for_read(file);
    Handle d = open_dataset(f.get(), file, name);
    const std::string where = quote(file) + ": data set " + quote(name);
    Handle type(H5Dget_type(d.get()), H5Tclose);
    if (!type.valid()) throw DataError(with_detail(where + ": cannot read its type"));
    H5T_class_t cls = H5Tget_class(type.get());
    if (cls != H5T_INTEGER && cls != H5T_FLOAT)
      throw DataError(where + " has " + class_name(cls) +
                      " elements; expected a numeric (integer or float) type");
    a.shape = array_shape(d.get(), where);
    uint64_t total = 1;
    for (int64_t dim : a.shape) {
      if (total > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(dim) ||
          total * static_cast<uint64_t>(dim) > a.values.max_size())
        throw DataError(where + " is too large to load (shape " + shape_to_string(a.shape) + ")");
      total *= static_cast<uint64_t>(dim);
    }
    try {
      a.values.resize(static_cast<size_t>(total));
    } catch (const std::bad_alloc&) {
      throw DataError(where + " does not fit in memory (shape " + shape_to_string(a.shape) + ")");
    }
    if (H5Dread(d.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, a.values.data()) < 0)
      throw DataError(with_detail(where + ": reading failed"));
  }
  if (check) check_finite(a, quote(file) + ": data set " + quote(name));
  return a;
}

/// Opens `file` for writing an extra data set in place; errors when it exists but is not HDF5.
Handle open_for_update(const std::string& file, hid_t fapl) {
  Handle f(H5Fopen(file.c_str(), H5F_ACC_RDWR, fapl), H5Fclose);
  if (!f.valid())
    throw DataError(with_detail(quote(file) +
                                ": exists but cannot be opened for writing as an HDF5 file; "
                                "not touching it (write with truncate to replace it)"));
  return f;
}

/// Creates data set `name` in an open file (intermediate groups included), replacing one of the
/// same name, chunked along the sample axis and deflate-compressed.
void write_into(hid_t file, const std::string& file_name, const std::string& name, hid_t mem_type,
                hid_t file_type, size_t elem_size, const void* data,
                const std::vector<int64_t>& shape) {
  const std::string where = quote(file_name) + ": data set " + quote(name);
  std::vector<std::string> parts = path_components(name);
  bool parents_exist = true;
  for (size_t i = 1; i < parts.size(); ++i) {
    H5I_type_t t = object_type(file, join_path(parts, i));
    if (t == H5I_BADID) {
      parents_exist = false;
      break;
    }
    if (t != H5I_GROUP)
      throw DataError(where + ": " + quote(join_path(parts, i)) + " exists and is not a group");
  }
  const std::string path = join_path(parts, parts.size());
  if (object_type(file, path) == H5I_GROUP)
    throw DataError(where + ": a group of that name exists; not replacing it");
  if (parents_exist && H5Lexists(file, path.c_str(), H5P_DEFAULT) > 0 &&
      H5Ldelete(file, path.c_str(), H5P_DEFAULT) < 0)
    throw DataError(with_detail(where + ": cannot replace the existing data set"));

  const int nd = static_cast<int>(shape.size());
  std::vector<hsize_t> dims(shape.begin(), shape.end());
  uint64_t row_bytes = elem_size;
  for (size_t i = 1; i < dims.size(); ++i) row_bytes *= dims[i];
  if (row_bytes > 0xFFFFFFFFull)
    throw DataError(where + ": one sample is larger than 4 GiB, the HDF5 chunk limit");
  std::vector<hsize_t> chunk = dims;
  const uint64_t target = 1u << 20;  // about 1 MiB per chunk
  uint64_t rows = row_bytes >= target ? 1 : target / row_bytes;
  chunk[0] = static_cast<hsize_t>(std::min<uint64_t>(rows, dims[0]));

  Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  Handle space(H5Screate_simple(nd, dims.data(), nullptr), H5Sclose);
  if (!lcpl.valid() || !dcpl.valid() || !space.valid() ||
      H5Pset_create_intermediate_group(lcpl.get(), 1) < 0 ||
      H5Pset_chunk(dcpl.get(), nd, chunk.data()) < 0)
    throw DataError(with_detail(where + ": cannot set up the data set"));
  if (H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0) H5Pset_deflate(dcpl.get(), 4);
  Handle d(
      H5Dcreate2(file, path.c_str(), file_type, space.get(), lcpl.get(), dcpl.get(), H5P_DEFAULT),
      H5Dclose);
  if (!d.valid()) throw DataError(with_detail(where + ": cannot create it"));
  if (H5Dwrite(d.get(), mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    throw DataError(with_detail(where + ": writing failed"));
  if (!d.close()) throw DataError(with_detail(where + ": writing failed"));
}

void write_dataset(const std::string& file, const std::string& name, hid_t mem_type,
                   hid_t file_type, size_t elem_size, const void* data,
                   const std::vector<int64_t>& shape, size_t count, bool truncate) {
  const std::string where = quote(file) + ": data set " + quote(name);
  if (path_components(name).empty()) throw DataError(where + ": the data set needs a name");
  if (shape.empty()) throw DataError(where + ": the shape needs at least one axis (the samples)");
  uint64_t total = 1;
  for (int64_t d : shape) {
    if (d <= 0)
      throw DataError(where + ": cannot write an empty array (shape " + shape_to_string(shape) +
                      ")");
    total *= static_cast<uint64_t>(d);
  }
  if (total != count)
    throw DataError(where + ": shape " + shape_to_string(shape) + " needs " +
                    std::to_string(total) + " values, got " + std::to_string(count));

  H5Guard guard;
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  if (!fapl.valid() || H5Pset_fclose_degree(fapl.get(), H5F_CLOSE_STRONG) < 0)
    throw DataError(with_detail(quote(file) + ": cannot set up file access"));
  std::error_code ec;
  const bool exists = fs::exists(file, ec);
  if (exists && fs::is_directory(file, ec)) throw DataError(quote(file) + ": is a directory");
  if (exists && !truncate) {
    Handle f = open_for_update(file, fapl.get());
    write_into(f.get(), file, name, mem_type, file_type, elem_size, data, shape);
    if (!f.close()) throw DataError(with_detail(quote(file) + ": closing (flushing) failed"));
    return;
  }
  // New file: write "<file>.tmp" completely, then rename it over `file`, so that an interrupted
  // write never leaves a damaged file in place of a good one.
  const std::string tmp = file + ".tmp";
  fs::remove(tmp, ec);
  try {
    Handle f(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose);
    if (!f.valid()) throw DataError(with_detail(quote(tmp) + ": cannot create the file"));
    write_into(f.get(), file, name, mem_type, file_type, elem_size, data, shape);
    if (!f.close()) throw DataError(with_detail(quote(tmp) + ": closing (flushing) failed"));
    fs::rename(tmp, file, ec);
    if (ec)
      throw DataError(quote(tmp) + ": cannot rename it to " + quote(file) + ": " + ec.message());
  } catch (...) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw;
  }
}

}  // namespace

Array read_h5_array(const std::string& file, const std::string& dataset) {
  return read_array(file, dataset, true);
}

Array read_h5_array_raw(const std::string& file, const std::string& dataset) {
  return read_array(file, dataset, false);
}

void write_h5_array(const std::string& file, const std::string& dataset, const Array& a,
                    bool truncate) {
  write_dataset(file, dataset, H5T_NATIVE_FLOAT, H5T_IEEE_F32LE, sizeof(float), a.values.data(),
                a.shape, a.values.size(), truncate);
}

void write_h5_labels(const std::string& file, const std::string& dataset,
                     const std::vector<int64_t>& labels, bool truncate) {
  write_dataset(file, dataset, H5T_NATIVE_INT64, H5T_STD_I64LE, sizeof(int64_t), labels.data(),
                {static_cast<int64_t>(labels.size())}, labels.size(), truncate);
}

std::vector<std::string> list_h5_datasets(const std::string& file) {
  H5Guard guard;
  Handle f = open_for_read(file);
  return datasets_in(f.get());
}

std::vector<std::string> read_h5_strings(const std::string& file, const std::string& dataset) {
  H5Guard guard;
  Handle f = open_for_read(file);
  Handle d = open_dataset(f.get(), file, dataset);
  const std::string where = quote(file) + ": data set " + quote(dataset);
  Handle type(H5Dget_type(d.get()), H5Tclose);
  if (!type.valid()) throw DataError(with_detail(where + ": cannot read its type"));
  H5T_class_t cls = H5Tget_class(type.get());
  if (cls != H5T_STRING)
    throw DataError(where + " has " + class_name(cls) + " elements; expected strings");
  Handle space(H5Dget_space(d.get()), H5Sclose);
  hssize_t npoints = space.valid() ? H5Sget_simple_extent_npoints(space.get()) : -1;
  if (npoints < 0) throw DataError(with_detail(where + ": cannot read its shape"));
  const size_t n = static_cast<size_t>(npoints);
  std::vector<std::string> out;
  out.reserve(n);
  if (n == 0) return out;

  H5T_cset_t cset = H5Tget_cset(type.get());
  Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
  if (!mem.valid() || H5Tset_cset(mem.get(), cset) < 0)
    throw DataError(with_detail(where + ": cannot set up a string type"));
  if (H5Tis_variable_str(type.get()) > 0) {
    if (H5Tset_size(mem.get(), H5T_VARIABLE) < 0)
      throw DataError(with_detail(where + ": cannot set up a string type"));
    std::vector<char*> buf(n, nullptr);
    if (H5Dread(d.get(), mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) < 0)
      throw DataError(with_detail(where + ": reading failed"));
    for (char* s : buf) out.emplace_back(s != nullptr ? s : "");
#if H5_VERSION_GE(1, 12, 0)
    H5Treclaim(mem.get(), space.get(), H5P_DEFAULT, buf.data());
#else
    H5Dvlen_reclaim(mem.get(), space.get(), H5P_DEFAULT, buf.data());
#endif
    return out;
  }
  const size_t size = H5Tget_size(type.get());
  if (size == 0) throw DataError(where + ": strings of size 0");
  if (H5Tset_size(mem.get(), size) < 0 || H5Tset_strpad(mem.get(), H5T_STR_NULLPAD) < 0)
    throw DataError(with_detail(where + ": cannot set up a string type"));
  std::vector<char> buf(n * size, '\0');
  if (H5Dread(d.get(), mem.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, buf.data()) < 0)
    throw DataError(with_detail(where + ": reading failed"));
  for (size_t i = 0; i < n; ++i) {
    const char* begin = buf.data() + i * size;
    size_t len = 0;
    while (len < size && begin[len] != '\0') ++len;
    while (len > 0 && begin[len - 1] == ' ') --len;
    out.emplace_back(begin, len);
  }
  return out;
}

}  // namespace hgqt::data
