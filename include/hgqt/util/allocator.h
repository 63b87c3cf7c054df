#pragma once
/// The process's memory allocator, set up for training (torch-free).
///
/// With glibc's defaults every block above 128 KiB (a [1024, 64] float tensor is 256 KiB) is a
/// fresh mmap: the kernel hands out zeroed pages one fault at a time and takes them back when the
/// tensor is freed, every training step. `tune_allocator` keeps such blocks in the heap instead
/// (mmap threshold 1 GiB, trim threshold 1 GiB, top pad 64 MiB), so a step reuses the memory of
/// the previous one. It is called at start-up by every entry point: the `hgqt` CLI, the
/// benchmarks and the Python module.

namespace hgqt::util {

/// What tune_allocator did.
struct AllocatorSetup {
  bool applied = false;     ///< the settings were applied (glibc, not disabled by the environment)
  const char* reason = "";  ///< why not, when not applied
};

/// Applies the settings above once per process (later calls return the first result). It leaves
/// the allocator alone when the user set any of glibc's MALLOC_*_ variables or GLIBC_TUNABLES
/// (their choice wins), when HGQT_MALLOC=default, and on C libraries other than glibc.
AllocatorSetup tune_allocator();

}  // namespace hgqt::util
