#include "hgqt/util/blas_info.h"

#include <dlfcn.h>
#include <link.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdlib>
#include <sstream>
#include <vector>

namespace hgqt::util {
namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string basename_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool contains(const std::string& haystack, const char* needle) {
  return haystack.find(needle) != std::string::npos;
}

bool starts_with(const std::string& s, const char* prefix) {
  return s.rfind(prefix, 0) == 0;
}

std::string resolve(const std::string& path) {
  char buf[PATH_MAX];
  if (::realpath(path.c_str(), buf) != nullptr) return buf;
  return path;
}

struct Candidate {
  std::string name;      // as the dynamic loader knows it (dlpi_name)
  std::string resolved;  // realpath
  int rank = 0;          // lower is better
};

/// Rank of a loaded object as "the BLAS", or -1 if it is not one.
int blas_rank(const std::string& name, const std::string& resolved) {
  const std::string base = lower(basename_of(name));
  const std::string rbase = lower(basename_of(resolved));
  const auto any = [&](const char* needle) {
    return contains(base, needle) || contains(rbase, needle);
  };
  // GPU / OpenCL BLAS libraries are not what LibTorch's CPU matmuls go through.
  if (any("cublas") || any("hipblas") || any("rocblas") || any("clblas") || any("nvblas"))
    return -1;
  if (starts_with(base, "libblas") || starts_with(rbase, "libblas")) return 0;  // libblas.so.3
  if (any("openblas") || any("mkl_rt") || starts_with(base, "libmkl") || any("blis")) return 1;
  if (any("blas")) return 2;  // libcblas, libf77blas, ...
  return -1;
}

int collect(struct dl_phdr_info* info, size_t /*size*/, void* data) {
  auto* out = static_cast<std::vector<Candidate>*>(data);
  if (info->dlpi_name == nullptr || info->dlpi_name[0] == '\0') return 0;  // main program, vdso
  const std::string name = info->dlpi_name;
  const std::string resolved = resolve(name);
  const int rank = blas_rank(name, resolved);
  if (rank >= 0) out->push_back({name, resolved, rank});
  return 0;
}

/// Handle of an already-loaded object without loading anything new (caller dlcloses).
void* handle_of(const Candidate& c) {
  void* h = ::dlopen(c.name.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (h == nullptr) h = ::dlopen(c.resolved.c_str(), RTLD_NOW | RTLD_NOLOAD);
  return h;
}

/// dlsym in `handle` (searches the object and its dependencies), or globally when handle is null.
void* find_symbol(void* handle, const char* symbol) {
  return ::dlsym(handle != nullptr ? handle : RTLD_DEFAULT, symbol);
}

std::string vendor_from_path(const std::string& resolved) {
  const std::string p = lower(resolved);
  if (contains(p, "openblas")) return "OpenBLAS";
  if (contains(p, "mkl")) return "MKL";
  if (contains(p, "blis")) return "BLIS";
  if (contains(p, "atlas")) return "ATLAS";
  return "";
}

std::vector<std::string> split_ws(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  for (std::string tok; in >> tok;) out.push_back(tok);
  return out;
}

/// "openmp" / "pthread" / "serial" when the config string or the install path says so.
std::string openblas_threading(const BlasInfo& info) {
  const auto toks = split_ws(info.config);
  if (std::find(toks.begin(), toks.end(), "USE_OPENMP") != toks.end()) return "openmp";
  const std::string p = lower(info.library);
  if (contains(p, "openblas-openmp")) return "openmp";
  if (contains(p, "openblas-pthread")) return "pthread";
  if (contains(p, "openblas-serial")) return "serial";
  return "";
}

std::string openblas_version(const std::string& config) {
  const auto toks = split_ws(config);
  if (toks.size() >= 2 && toks[0] == "OpenBLAS") return toks[1];
  return "";
}

}  // namespace

BlasInfo detect_blas() {
  BlasInfo info;
  std::vector<Candidate> found;
  ::dl_iterate_phdr(&collect, &found);
  if (found.empty()) return info;

  // Lowest rank wins; among equals, the first in load order.
  const Candidate best =
      *std::min_element(found.begin(), found.end(),
                        [](const Candidate& a, const Candidate& b) { return a.rank < b.rank; });
  info.library = best.resolved;

  using ConfigFn = char* (*)();
  using ThreadsFn = int (*)();
  ConfigFn get_config = nullptr;
  ThreadsFn get_threads = nullptr;
  // Look the OpenBLAS query functions up in the chosen library and its dependencies first
  // (Debian's openblas libblas.so.3 is a thin wrapper around libopenblas.so.0).
  if (void* handle = handle_of(best)) {
    get_config = reinterpret_cast<ConfigFn>(find_symbol(handle, "openblas_get_config"));
    get_threads = reinterpret_cast<ThreadsFn>(find_symbol(handle, "openblas_get_num_threads"));
    ::dlclose(handle);  // balances the NOLOAD reference; the object stays loaded
  }

  info.vendor = vendor_from_path(best.resolved);
  if (info.vendor.empty()) {
    const std::string base = lower(basename_of(best.resolved));
    if (get_config != nullptr) {
      info.vendor = "OpenBLAS";
    } else if (starts_with(base, "libblas") || starts_with(base, "librefblas")) {
      info.vendor = "reference BLAS";
    } else {
      info.vendor = "unknown";
    }
  }
  if (info.vendor == "OpenBLAS") {
    if (get_config == nullptr) {
      get_config = reinterpret_cast<ConfigFn>(find_symbol(nullptr, "openblas_get_config"));
    }
    if (get_threads == nullptr) {
      get_threads = reinterpret_cast<ThreadsFn>(find_symbol(nullptr, "openblas_get_num_threads"));
    }
    if (get_config != nullptr) {
      if (const char* cfg = get_config()) info.config = cfg;
    }
    if (get_threads != nullptr) info.threads = get_threads();
  }
  info.optimized = info.vendor == "OpenBLAS" || info.vendor == "MKL" || info.vendor == "BLIS" ||
                   info.vendor == "ATLAS";
  return info;
}

std::string describe(const BlasInfo& info) {
  if (info.library.empty()) {
    return "BLAS not loaded yet (no libblas/OpenBLAS/MKL/BLIS library in this process so far)";
  }
  const std::string vendor = info.vendor.empty() ? "unknown" : info.vendor;
  std::ostringstream out;
  if (vendor == "reference BLAS") {
    out << "reference BLAS: " << info.library
        << " -- WARNING: matrix products run ~10x slower than with OpenBLAS; "
           "run scripts/install-deps.sh to make OpenBLAS the active libblas.so.3";
    return out.str();
  }
  if (vendor == "unknown") {
    out << "unknown BLAS: " << info.library;
    return out.str();
  }
  out << vendor;
  if (vendor == "OpenBLAS") {
    const std::string threading = openblas_threading(info);
    if (!threading.empty()) out << " (" << threading << ")";
    const std::string version = openblas_version(info.config);
    if (!version.empty()) out << ' ' << version;
  }
  if (info.threads >= 0)
    out << ", " << info.threads << (info.threads == 1 ? " thread" : " threads");
  out << ": " << info.library;
  return out.str();
}

}  // namespace hgqt::util
