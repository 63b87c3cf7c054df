// IDX files (MNIST / Fashion-MNIST), gzip-compressed or plain, and the Fashion-MNIST conversion.
#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "hgqt/data/dataset.h"

namespace hgqt::data {
namespace {

namespace fs = std::filesystem;

std::string quote(const std::string& s) {
  return "'" + s + "'";
}

/// The whole (decompressed) content of a file; zlib reads plain files as they are.
std::vector<unsigned char> read_all(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw DataError(quote(path) + ": no such file");
  if (fs::is_directory(path, ec)) throw DataError(quote(path) + ": is a directory");
  gzFile g = gzopen(path.c_str(), "rb");
  if (g == nullptr) throw DataError(quote(path) + ": cannot be opened for reading");
  struct Closer {
    gzFile g;
    ~Closer() { gzclose(g); }
  } closer{g};
  std::vector<unsigned char> out;
  const unsigned chunk = 1u << 20;
  for (;;) {
    size_t old = out.size();
    out.resize(old + chunk);
    int n = gzread(g, out.data() + old, chunk);
    if (n < 0) {
      int errnum = 0;
      const char* msg = gzerror(g, &errnum);
      throw DataError(quote(path) +
                      ": not a valid gzip file (zlib: " + (msg != nullptr ? msg : "error") + ")");
    }
    out.resize(old + static_cast<size_t>(n));
    if (n == 0) break;
  }
  int errnum = 0;
  const char* msg = gzerror(g, &errnum);
  if (errnum != Z_OK && errnum != Z_STREAM_END)
    throw DataError(quote(path) + ": the gzip stream is damaged or truncated (zlib: " +
                    (msg != nullptr ? msg : "error") + ")");
  return out;
}

uint32_t be32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

uint64_t be64(const unsigned char* p) {
  return (uint64_t{be32(p)} << 32) | be32(p + 4);
}

float decode(const unsigned char* p, unsigned char code) {
  switch (code) {
    case 0x08:
      return static_cast<float>(p[0]);
    case 0x09:
      return static_cast<float>(static_cast<int8_t>(p[0]));
    case 0x0B:
      return static_cast<float>(static_cast<int16_t>((p[0] << 8) | p[1]));
    case 0x0C:
      return static_cast<float>(static_cast<int32_t>(be32(p)));
    case 0x0D: {
      uint32_t bits = be32(p);
      float f;
      std::memcpy(&f, &bits, sizeof f);
      return f;
    }
    default: {  // 0x0E
      uint64_t bits = be64(p);
      double d;
      std::memcpy(&d, &bits, sizeof d);
      return static_cast<float>(d);
    }
  }
}

}  // namespace

Array read_idx(const std::string& path) {
  std::vector<unsigned char> bytes = read_all(path);
  if (bytes.size() < 4)
    throw DataError(quote(path) + ": too short for an IDX file (" + std::to_string(bytes.size()) +
                    " bytes)");
  if (bytes[0] != 0 || bytes[1] != 0) {
    char magic[16];
    std::snprintf(magic, sizeof magic, "0x%08X", be32(bytes.data()));
    throw DataError(quote(path) + ": bad magic number " + magic +
                    " (not an IDX file; expected 0x00000801 labels or 0x00000803 images)");
  }
  const unsigned char code = bytes[2];
  size_t elem = 0;
  switch (code) {
    case 0x08:
    case 0x09:
      elem = 1;
      break;
    case 0x0B:
      elem = 2;
      break;
    case 0x0C:
    case 0x0D:
      elem = 4;
      break;
    case 0x0E:
      elem = 8;
      break;
    default: {
      char c[8];
      std::snprintf(c, sizeof c, "0x%02X", code);
      throw DataError(quote(path) + ": unsupported IDX element type " + c +
                      " (expected 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32 "
                      "or 0x0E float64)");
    }
  }
  const size_t nd = bytes[3];
  if (nd == 0) throw DataError(quote(path) + ": IDX header with zero dimensions");
  const size_t header = 4 + 4 * nd;
  if (bytes.size() < header)
    throw DataError(quote(path) + ": truncated: the header needs " + std::to_string(header) +
                    " bytes, the file has " + std::to_string(bytes.size()));
  Array a;
  const size_t data_bytes = bytes.size() - header;
  uint64_t count = 1;
  bool too_big = false;
  for (size_t i = 0; i < nd; ++i) {
    uint32_t dim = be32(bytes.data() + 4 + 4 * i);
    a.shape.push_back(dim);
    if (dim == 0) throw DataError(quote(path) + ": IDX header with a zero dimension");
    if (count > data_bytes / dim) too_big = true;  // more elements than the file can hold
    if (!too_big) count *= dim;
  }
  if (too_big || count * elem > data_bytes)
    throw DataError(quote(path) + ": truncated: the header says shape " + shape_to_string(a.shape) +
                    " of " + std::to_string(elem) + "-byte elements, but only " +
                    std::to_string(data_bytes) + " bytes of data follow");
  if (count * elem < data_bytes)
    throw DataError(quote(path) + ": " + std::to_string(data_bytes - count * elem) +
                    " unexpected bytes after the data of shape " + shape_to_string(a.shape));
  a.values.resize(static_cast<size_t>(count));
  const unsigned char* p = bytes.data() + header;
  for (size_t i = 0; i < a.values.size(); ++i, p += elem) a.values[i] = decode(p, code);
  return a;
}

void convert_fashion_mnist(const std::string& src_dir, const std::string& out_file) {
  const char* names[4] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                          "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};
  std::string paths[4];
  for (int i = 0; i < 4; ++i) {
    fs::path gz = fs::path(src_dir) / names[i];
    fs::path plain = gz;
    plain.replace_extension();  // an uncompressed copy is fine too
    std::error_code ec;
    if (fs::exists(gz, ec)) {
      paths[i] = gz.string();
    } else if (fs::exists(plain, ec)) {
      paths[i] = plain.string();
    } else {
      throw DataError(quote(gz.string()) +
                      ": no such file (Fashion-MNIST comes with the Debian package "
                      "dataset-fashion-mnist, which installs it in "
                      "/usr/share/datasets/fashion-mnist/)");
    }
  }
  {
    const fs::path parent = fs::path(out_file).parent_path();
    std::error_code ec;
    if (!parent.empty()) fs::create_directories(parent, ec);
    if (ec) throw DataError(quote(parent.string()) + ": cannot create the folder: " + ec.message());
  }
  Array images[2];
  std::vector<int64_t> labels[2];
  for (int s = 0; s < 2; ++s) {
    const std::string& ipath = paths[2 * s];
    const std::string& lpath = paths[2 * s + 1];
    images[s] = read_idx(ipath);
    Array l = read_idx(lpath);
    if (images[s].shape.size() != 3)
      throw DataError(quote(ipath) + ": expected images of shape [N, 28, 28], got " +
                      shape_to_string(images[s].shape));
    if (l.shape.size() != 1)
      throw DataError(quote(lpath) + ": expected labels of shape [N], got " +
                      shape_to_string(l.shape));
    if (l.shape[0] != images[s].shape[0])
      throw DataError(quote(ipath) + " has " + std::to_string(images[s].shape[0]) + " images but " +
                      quote(lpath) + " has " + std::to_string(l.shape[0]) + " labels");
    for (float& v : images[s].values) v /= 255.0f;
    labels[s].reserve(l.values.size());
    for (size_t i = 0; i < l.values.size(); ++i) {
      float v = l.values[i];
      if (!(v >= 0 && v <= 9) || v != static_cast<float>(static_cast<int64_t>(v)))
        throw DataError(quote(lpath) + ": label " + std::to_string(v) + " at index " +
                        std::to_string(i) + " is not a class 0..9");
      labels[s].push_back(static_cast<int64_t>(v));
    }
  }
  // All four data sets go to "<out>.part", which replaces `out_file` only once complete.
  const std::string part = out_file + ".part";
  try {
    write_h5_array(part, "x_train", images[0], true);
    write_h5_labels(part, "y_train", labels[0]);
    write_h5_array(part, "x_test", images[1]);
    write_h5_labels(part, "y_test", labels[1]);
    std::error_code ec;
    fs::rename(part, out_file, ec);
    if (ec)
      throw DataError(quote(part) + ": cannot rename it to " + quote(out_file) + ": " +
                      ec.message());
  } catch (...) {
    std::error_code ignored;
    fs::remove(part, ignored);
    throw;
  }
}

}  // namespace hgqt::data
