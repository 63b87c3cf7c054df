// HGQT_VECTOR_CLONES: compile a hot loop for AVX-512, AVX2 and the baseline, chosen at load time.
#pragma once

// The clones differ only in vector width. No FMA is enabled, so every clone rounds the same
// operations the same way and results do not depend on the machine. GCC on x86-64 Linux (ifunc);
// elsewhere the plain function.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define HGQT_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define HGQT_VECTOR_CLONES
#endif
