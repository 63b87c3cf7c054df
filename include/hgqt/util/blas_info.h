#pragma once
/// Which BLAS library the running process uses (torch-free).
///
/// LibTorch on Debian does its CPU matrix products through the system libblas.so.3, which is
/// selected with update-alternatives. The reference BLAS is roughly an order of magnitude slower
/// than OpenBLAS, so the CLI reports what is actually loaded (`hgqt doctor`, training start-up).

#include <string>

namespace hgqt::util {

struct BlasInfo {
  /// Resolved path (symlinks followed) of the loaded BLAS library,
  /// e.g. /usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3. Empty when none is loaded.
  std::string library;
  /// "OpenBLAS", "reference BLAS", "BLIS", "MKL", "ATLAS" or "unknown".
  std::string vendor = "unknown";
  /// openblas_get_config() when available, e.g. "OpenBLAS 0.3.21 ... USE_OPENMP Zen
  /// MAX_THREADS=64".
  std::string config;
  /// openblas_get_num_threads() when available, otherwise -1.
  int threads = -1;
  /// True for tuned implementations (OpenBLAS, BLIS, MKL, ATLAS).
  bool optimized = false;
};

/// Inspect the shared objects currently mapped into this process (dl_iterate_phdr) and report
/// the BLAS among them. libblas.so.3 may be loaded lazily, so call this after LibTorch has done
/// a matrix product if the answer matters; with nothing loaded yet, `library` is empty.
BlasInfo detect_blas();

/// One line for logs, e.g.
///   "OpenBLAS (openmp) 0.3.21, 2 threads: /usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3".
/// For the reference BLAS the line carries a warning that matrix products run ~10x slower and
/// points at scripts/install-deps.sh.
std::string describe(const BlasInfo& info);

}  // namespace hgqt::util
