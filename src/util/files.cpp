// Atomic writes and appends.
#include "hgqt/util/files.h"

#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace hgqt::util {

namespace fs = std::filesystem;

namespace {
void ensure_parent(const std::string& path) {
  fs::path p(path);
  if (p.has_parent_path()) fs::create_directories(p.parent_path());
}
}  // namespace

void write_text_atomic(const std::string& path, const std::string& text) {
  ensure_parent(path);
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.flush();
    if (!out) throw std::runtime_error("cannot write '" + tmp + "'");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) throw std::runtime_error("cannot move '" + tmp + "' to '" + path + "': " + ec.message());
}

void copy_file_atomic(const std::string& from, const std::string& to) {
  ensure_parent(to);
  const std::string tmp = to + ".tmp";
  std::error_code ec;
  fs::copy_file(from, tmp, fs::copy_options::overwrite_existing, ec);
  if (!ec) fs::rename(tmp, to, ec);
  if (ec) throw std::runtime_error("cannot copy '" + from + "' to '" + to + "': " + ec.message());
}

void append_line(const std::string& path, const std::string& line) {
  ensure_parent(path);
  std::ofstream out(path, std::ios::app);
  out << line << '\n';
  if (!out) throw std::runtime_error("cannot append to '" + path + "'");
}

}  // namespace hgqt::util
