#include "hgqt/util/blas_info.h"

#include <dlfcn.h>
#include <gtest/gtest.h>

#include <iostream>
#include <string>

namespace {

using hgqt::util::BlasInfo;
using hgqt::util::describe;
using hgqt::util::detect_blas;

bool has(const std::string& s, const std::string& needle) {
  return s.find(needle) != std::string::npos;
}

TEST(BlasInfo, DescribeOpenBlasLine) {
  BlasInfo info;
  info.library = "/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3";
  info.vendor = "OpenBLAS";
  info.config = "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH NO_AFFINITY USE_OPENMP Zen MAX_THREADS=64";
  info.threads = 2;
  info.optimized = true;
  EXPECT_EQ(describe(info),
            "OpenBLAS (openmp) 0.3.21, 2 threads: "
            "/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3");
}

TEST(BlasInfo, DescribeOpenBlasThreadingFromPathAndSingularThread) {
  BlasInfo info;
  info.library = "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3";
  info.vendor = "OpenBLAS";
  info.config = "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen MAX_THREADS=64";
  info.threads = 1;
  info.optimized = true;
  EXPECT_EQ(describe(info),
            "OpenBLAS (pthread) 0.3.21, 1 thread: "
            "/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3");
}

TEST(BlasInfo, DescribeOpenBlasWithoutConfig) {
  BlasInfo info;
  info.library = "/opt/lib/libopenblas.so.0";
  info.vendor = "OpenBLAS";
  info.optimized = true;
  EXPECT_EQ(describe(info), "OpenBLAS: /opt/lib/libopenblas.so.0");
}

TEST(BlasInfo, DescribeReferenceBlasWarns) {
  BlasInfo info;
  info.library = "/usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0";
  info.vendor = "reference BLAS";
  const std::string line = describe(info);
  EXPECT_TRUE(has(line, "reference BLAS")) << line;
  EXPECT_TRUE(has(line, info.library)) << line;
  EXPECT_TRUE(has(line, "WARNING")) << line;
  EXPECT_TRUE(has(line, "10x slower")) << line;
  EXPECT_TRUE(has(line, "scripts/install-deps.sh")) << line;
  EXPECT_EQ(line.find('\n'), std::string::npos) << "describe() must be one line";
}

TEST(BlasInfo, DescribeOptimizedHasNoWarning) {
  BlasInfo info;
  info.library = "/usr/lib/x86_64-linux-gnu/openblas-openmp/libblas.so.3";
  info.vendor = "OpenBLAS";
  info.optimized = true;
  EXPECT_FALSE(has(describe(info), "WARNING"));
}

TEST(BlasInfo, DescribeNothingLoaded) {
  const std::string line = describe(BlasInfo{});
  EXPECT_TRUE(has(line, "not loaded yet")) << line;
}

TEST(BlasInfo, DescribeOtherVendors) {
  BlasInfo mkl;
  mkl.library = "/opt/intel/mkl/lib/libmkl_rt.so";
  mkl.vendor = "MKL";
  mkl.optimized = true;
  EXPECT_EQ(describe(mkl), "MKL: /opt/intel/mkl/lib/libmkl_rt.so");

  BlasInfo unknown;
  unknown.library = "/opt/lib/libweirdblas.so";
  unknown.vendor = "unknown";
  EXPECT_TRUE(has(describe(unknown), "unknown BLAS")) << describe(unknown);
}

TEST(BlasInfo, DetectOnThisProcessDoesNotCrash) {
  const BlasInfo info = detect_blas();
  const std::string line = describe(info);
  EXPECT_FALSE(line.empty());
  EXPECT_EQ(line.find('\n'), std::string::npos);
  if (info.library.empty()) {
    EXPECT_FALSE(info.optimized);
  } else {
    EXPECT_FALSE(info.vendor.empty());
    EXPECT_TRUE(has(line, info.library)) << line;
  }
  std::cout << "[ blas     ] " << line << "\n";
}

TEST(BlasInfo, DetectAfterLoadingSystemBlas) {
  // Load the system libblas.so.3 the way LibTorch would (it is a no-op when already loaded).
  void* handle = ::dlopen("libblas.so.3", RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) GTEST_SKIP() << "libblas.so.3 not installed: " << ::dlerror();
  const BlasInfo info = detect_blas();
  EXPECT_FALSE(info.library.empty());
  EXPECT_NE(info.library.front(), 'l') << "library should be a resolved absolute path";
  EXPECT_TRUE(info.vendor == "OpenBLAS" || info.vendor == "reference BLAS" ||
              info.vendor == "BLIS" || info.vendor == "MKL" || info.vendor == "ATLAS" ||
              info.vendor == "unknown")
      << info.vendor;
  if (info.vendor == "OpenBLAS") {
    EXPECT_TRUE(info.optimized);
    EXPECT_TRUE(has(info.config, "OpenBLAS")) << info.config;
    EXPECT_GE(info.threads, 1);
  }
  if (info.vendor == "reference BLAS") {
    EXPECT_FALSE(info.optimized);
  }
  std::cout << "[ blas     ] " << describe(info) << "\n";
  // The handle is deliberately not closed: unloading an OpenMP-threaded BLAS mid-process is not
  // worth the risk, and within hgqt_tests LibTorch keeps it loaded anyway.
}

}  // namespace
