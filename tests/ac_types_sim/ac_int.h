// A small stand-in for the Algorithmic C ac_int.h (hlslibs/ac_types, also shipped with Catapult
// and, as sycl/ext/intel/ac_types/ac_int.hpp, with oneAPI), used to compile and run hgqt's
// generated Catapult and oneAPI projects where the ac_types headers are not installed.
//
// It implements only what hgqt's generated code and its ac_fixed.h stand-in use:
//   - the mode enums ac_q_mode and ac_o_mode (declared here, as the real ac_int.h does);
//   - ac_int<W, S> (S: signed), as returned by ac_fixed's slc<W>(lsb): construction from the
//     built-in integers (two's complement wrap to W bits), to_int(), to_uint(), to_int64(),
//     to_uint64(), to_double().
// Like the real header it has no implicit conversion to a built-in type. Values are held in
// __int128: widths up to 126 bits (static_assert beyond).
#ifndef HGQT_AC_TYPES_SIM_AC_INT_H
#define HGQT_AC_TYPES_SIM_AC_INT_H

#include <cmath>
#include <cstdint>

enum ac_q_mode {
  AC_TRN,
  AC_RND,
  AC_TRN_ZERO,
  AC_RND_ZERO,
  AC_RND_INF,
  AC_RND_MIN_INF,
  AC_RND_CONV,
  AC_RND_CONV_ODD
};
enum ac_o_mode { AC_WRAP, AC_SAT, AC_SAT_ZERO, AC_SAT_SYM };

namespace ac_sim {

typedef __int128 i128;
typedef unsigned __int128 u128;

/// Largest width the simulation supports (a product of two such values must fit 127 bits).
const int kMaxWidth = 126;

inline i128 pow2(int e) {
  return static_cast<i128>(1) << e;
}

/// Keeps the low w bits of m (two's complement; sign-extended when is_signed).
inline i128 wrap_bits(i128 m, int w, bool is_signed) {
  const u128 low = static_cast<u128>(m) & static_cast<u128>(pow2(w) - 1);
  i128 r = static_cast<i128>(low);
  if (is_signed && (low >> (w - 1)) != 0) r -= pow2(w);
  return r;
}

}  // namespace ac_sim

template <int W, bool S = true>
class ac_int {
  static_assert(W >= 1, "ac_int: the width must be at least 1");
  static_assert(W <= ac_sim::kMaxWidth,
                "ac_int (hgqt simulation header): widths above 126 bits are not supported; use "
                "the ac_types headers (AC_TYPES_INCLUDE)");

 public:
  static const int width = W;
  static const bool sign = S;

  ac_int() : v_(0) {}
  ac_int(int x) : v_(ac_sim::wrap_bits(x, W, S)) {}
  ac_int(unsigned x) : v_(ac_sim::wrap_bits(x, W, S)) {}
  ac_int(long x) : v_(ac_sim::wrap_bits(x, W, S)) {}
  ac_int(unsigned long x) : v_(ac_sim::wrap_bits(x, W, S)) {}
  ac_int(long long x) : v_(ac_sim::wrap_bits(x, W, S)) {}
  ac_int(unsigned long long x) : v_(ac_sim::wrap_bits(x, W, S)) {}

  int to_int() const { return static_cast<int>(v_); }
  unsigned to_uint() const { return static_cast<unsigned>(v_); }
  long long to_int64() const { return static_cast<long long>(v_); }
  unsigned long long to_uint64() const { return static_cast<unsigned long long>(v_); }
  double to_double() const { return static_cast<double>(v_); }

  /// Simulation only: the value (within the type's range) and a value from its bits.
  ac_sim::i128 sim_value() const { return v_; }
  static ac_int sim_from_bits(ac_sim::i128 bits) {
    ac_int r;
    r.v_ = ac_sim::wrap_bits(bits, W, S);
    return r;
  }

 private:
  ac_sim::i128 v_;
};

#endif  // HGQT_AC_TYPES_SIM_AC_INT_H
