// glibc malloc settings for training loops (see allocator.h).
#include "hgqt/util/allocator.h"

#include <cstdlib>
#include <cstring>
#include <initializer_list>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace hgqt::util {

namespace {
AllocatorSetup apply() {
#if defined(__GLIBC__)
  const char* mode = std::getenv("HGQT_MALLOC");
  if (mode && std::strcmp(mode, "default") == 0) return {false, "HGQT_MALLOC=default"};
  for (const char* v : {"MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                        "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES"})
    if (std::getenv(v)) return {false, "glibc malloc settings given in the environment"};
  constexpr int kGiB = 1 << 30;
  const bool ok = mallopt(M_MMAP_THRESHOLD, kGiB) == 1 && mallopt(M_TRIM_THRESHOLD, kGiB) == 1 &&
                  mallopt(M_TOP_PAD, 64 << 20) == 1;
  return ok ? AllocatorSetup{true, ""} : AllocatorSetup{false, "mallopt refused the settings"};
#else
  return {false, "not glibc"};
#endif
}
}  // namespace

AllocatorSetup tune_allocator() {
  static const AllocatorSetup setup = apply();
  return setup;
}

}  // namespace hgqt::util
