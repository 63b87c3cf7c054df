// Exact 128-bit integer arithmetic that throws instead of overflowing: the range and width
// computations of the archive (infer_types, exact EBOPs) and of every generator use these, so
// that a value beyond 127 bits is one clear error wherever it appears. Header-only; no LibTorch.
#pragma once

#include <stdexcept>
#include <string>

namespace hgqt::util {

using int128 = __int128;

/// a + b, or throws Error(what + ": exceeds 127 bits").
template <class Error = std::overflow_error>
int128 checked_add(int128 a, int128 b, const std::string& what) {
  int128 r;
  if (__builtin_add_overflow(a, b, &r)) throw Error(what + ": exceeds 127 bits");
  return r;
}

/// a * b, or throws Error(what + ": exceeds 127 bits").
template <class Error = std::overflow_error>
int128 checked_mul(int128 a, int128 b, const std::string& what) {
  int128 r;
  if (__builtin_mul_overflow(a, b, &r)) throw Error(what + ": exceeds 127 bits");
  return r;
}

/// a * 2^k for k >= 0, or throws Error(what + ": exceeds 127 bits").
template <class Error = std::overflow_error>
int128 checked_shl(int128 a, int k, const std::string& what) {
  if (a == 0 || k == 0) return a;
  if (k < 0 || k > 126) throw Error(what + ": exceeds 127 bits");
  return checked_mul<Error>(a, static_cast<int128>(1) << k, what);
}

}  // namespace hgqt::util
