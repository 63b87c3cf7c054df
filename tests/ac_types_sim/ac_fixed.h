// A small stand-in for the Algorithmic C ac_fixed.h (hlslibs/ac_types; Catapult; oneAPI's
// sycl/ext/intel/ac_types/ac_fixed.hpp), used to compile and run hgqt's generated Catapult and
// oneAPI projects where the ac_types headers are not installed (tests use the real ones when
// AC_TYPES_INCLUDE names their folder).
//
// It implements only what hgqt's generated code and testbench use, with the real header's
// semantics:
//   - ac_fixed<W, I, S, Q, O>: S is a bool (signed), then the quantization mode Q (AC_TRN,
//     AC_RND, AC_TRN_ZERO, AC_RND_ZERO, AC_RND_INF, AC_RND_MIN_INF, AC_RND_CONV, AC_RND_CONV_ODD)
//     and the overflow mode O (AC_WRAP, AC_SAT, AC_SAT_ZERO, AC_SAT_SYM). I may be negative or
//     larger than W. The value is a W-bit mantissa times 2^-(W - I).
//   - Conversion from another ac_fixed, from an ac_int, from a built-in integer and from a double:
//     the exact source value is first rounded to the destination's step with Q, then overflowed
//     with O. AC_SAT_SYM clamps to [-max, max] for signed types of two or more bits; for a signed
//     1-bit type the real header saturates negative values to -1 (its minimum, min | 1 == min),
//     and so does this one.
//   - a * b has W = W1 + W2, I = I1 + I2; a + b and a - b have
//     I = max(I1 + (S2 && !S1), I2 + (S1 && !S2)) + 1, F = max(F1, F2) (a - b is signed): every
//     result is exact, with the default modes AC_TRN, AC_WRAP. +=, -=, *= convert the exact
//     result with the left operand's modes.
//   - Comparisons between ac_fixed values and with a double (an integer converts to double);
//     to_double(); slc<WS>(lsb): the mantissa's bits [lsb, lsb + WS) as ac_int<WS, S>.
// As in the real header there is no implicit conversion to a built-in type and nothing is
// constexpr. Mantissas are held in __int128: widths up to 126 bits (static_assert beyond).
#ifndef HGQT_AC_TYPES_SIM_AC_FIXED_H
#define HGQT_AC_TYPES_SIM_AC_FIXED_H

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "ac_int.h"

namespace ac_sim {

/// Number of significant bits of |m| (0 for 0).
inline int magnitude_bits(i128 m) {
  u128 a = m < 0 ? static_cast<u128>(0) - static_cast<u128>(m) : static_cast<u128>(m);
  int n = 0;
  while (a != 0) {
    a >>= 1;
    ++n;
  }
  return n;
}

/// Rounds m * 2^-s (s >= 1) to an integer with mode q.
inline i128 round_shift(i128 m, int s, ac_q_mode q) {
  if (s > 125) {
    // Shift right by k = s - 125 first, keeping a sticky bit for what was shifted out: the
    // floor, whether the remainder is zero and how it compares with one half are unchanged.
    const int k = s - 125;
    const bool sticky = k >= 127 ? m != 0 : (m & (pow2(k) - 1)) != 0;
    m = (k >= 127 ? (m < 0 ? -1 : 0) : (m >> k)) | (sticky ? 1 : 0);
    s = 125;
  }
  const i128 floor_q = m >> s;  // arithmetic shift: floor
  const i128 rem = static_cast<i128>(static_cast<u128>(m) & static_cast<u128>(pow2(s) - 1));
  const i128 half = pow2(s - 1);
  if (rem == 0) return floor_q;
  const bool negative = floor_q < 0;  // the value lies in (floor_q, floor_q + 1)
  switch (q) {
    case AC_TRN:
      return floor_q;
    case AC_TRN_ZERO:
      return negative ? floor_q + 1 : floor_q;
    case AC_RND:
      return rem >= half ? floor_q + 1 : floor_q;
    case AC_RND_ZERO:
      if (rem != half) return rem > half ? floor_q + 1 : floor_q;
      return negative ? floor_q + 1 : floor_q;
    case AC_RND_INF:
      if (rem != half) return rem > half ? floor_q + 1 : floor_q;
      return negative ? floor_q : floor_q + 1;
    case AC_RND_MIN_INF:
      return rem > half ? floor_q + 1 : floor_q;
    case AC_RND_CONV:
      if (rem != half) return rem > half ? floor_q + 1 : floor_q;
      return (floor_q & 1) ? floor_q + 1 : floor_q;
    case AC_RND_CONV_ODD:
      if (rem != half) return rem > half ? floor_q + 1 : floor_q;
      return (floor_q & 1) ? floor_q : floor_q + 1;
  }
  return floor_q;
}

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "ac_fixed (hgqt simulation header): %s\n", what);
  std::abort();
}

/// The mantissa of the exact value m * 2^-from_frac converted to a (w, frac, is_signed) type:
/// rounding with q, then overflow with o. Out of line: generated designs hold tens of thousands
/// of conversions, and one call each keeps their compile time low.
__attribute__((noinline)) inline i128 convert(i128 m, int from_frac, int w, int frac,
                                              bool is_signed, ac_q_mode q, ac_o_mode o) {
  const i128 hi = is_signed ? pow2(w - 1) - 1 : pow2(w) - 1;
  const i128 lo = is_signed ? -pow2(w - 1) : 0;
  const int s = from_frac - frac;
  i128 r = m;
  if (s > 0) {
    r = round_shift(m, s, q);
  } else if (s < 0 && m != 0) {
    const int t = -s;
    if (magnitude_bits(m) + t > 125) {
      // Far out of range: WRAP keeps the low w bits (m's low w - t bits shifted up), the
      // saturating modes clip by sign.
      if (o == AC_WRAP)
        return t >= w ? 0 : wrap_bits(wrap_bits(m, w - t, false) << t, w, is_signed);
      r = m > 0 ? pow2(126) : -pow2(126);
    } else {
      r = m * pow2(t);
    }
  }
  switch (o) {
    case AC_WRAP:
      return (r < lo || r > hi) ? wrap_bits(r, w, is_signed) : r;
    case AC_SAT:
      return r > hi ? hi : (r < lo ? lo : r);
    case AC_SAT_ZERO:
      return (r > hi || r < lo) ? 0 : r;
    case AC_SAT_SYM: {
      // The real header sets the minimum and then its lowest bit: -max, except for one bit.
      const i128 sym_lo = !is_signed ? 0 : (w == 1 ? lo : -hi);
      return r > hi ? hi : (r < sym_lo ? sym_lo : r);
    }
  }
  return r;
}

/// The exact value of a finite double as m * 2^-frac.
inline void split_double(double d, i128* m, int* frac) {
  if (!(d == d) || d > 1.7976931348623157e308 || d < -1.7976931348623157e308)
    fail("cannot convert NaN or infinity to ac_fixed");
  *m = 0;
  *frac = 0;
  if (d == 0) return;
  int e = 0;
  const double mant = std::frexp(d, &e);  // d = mant * 2^e, 0.5 <= |mant| < 1
  *m = static_cast<i128>(static_cast<int64_t>(std::ldexp(mant, 53)));  // exact: 53 bits
  *frac = 53 - e;
}

/// Compares m1 * 2^-f1 with m2 * 2^-f2 (|m| < 2^126): -1, 0 or 1.
__attribute__((noinline)) inline int compare(i128 m1, int f1, i128 m2, int f2) {
  if (f1 > f2) return -compare(m2, f2, m1, f1);
  if (m1 == 0) return m2 > 0 ? -1 : (m2 < 0 ? 1 : 0);
  const int t = f2 - f1;                                     // scale m1 up by 2^t
  if (magnitude_bits(m1) + t > 126) return m1 > 0 ? 1 : -1;  // |m1 * 2^t| > |m2|
  const i128 a = m1 * pow2(t);
  return a < m2 ? -1 : (a > m2 ? 1 : 0);
}

/// Compares m * 2^-f with a double, exactly.
inline int compare_double(i128 m, int f, double d) {
  i128 md = 0;
  int fd = 0;
  split_double(d, &md, &fd);
  return compare(m, f, md, fd);
}

}  // namespace ac_sim

template <int W, int I, bool S = true, ac_q_mode Q = AC_TRN, ac_o_mode O = AC_WRAP>
class ac_fixed {
  static_assert(W >= 1, "ac_fixed: the width must be at least 1");
  static_assert(W <= ac_sim::kMaxWidth,
                "ac_fixed (hgqt simulation header): widths above 126 bits are not supported; use "
                "the ac_types headers (AC_TYPES_INCLUDE)");

 public:
  static const int width = W;
  static const int i_width = I;
  static const bool sign = S;
  static const ac_q_mode q_mode = Q;
  static const ac_o_mode o_mode = O;

  /// Result types of the arithmetic operators (exact; default modes).
  template <int W2, int I2, bool S2>
  struct rt {
    enum {
      F = W - I,
      F2 = W2 - I2,
      FM = F > F2 ? F : F2,
      IA = I + (S2 && !S),
      IB = I2 + (S && !S2),
      plus_i = (IA > IB ? IA : IB) + 1,
      plus_w = plus_i + FM
    };
    typedef ac_fixed<W + W2, I + I2, S || S2> mult;
    typedef ac_fixed<plus_w, plus_i, S || S2> plus;
    typedef ac_fixed<plus_w, plus_i, true> minus;
  };

  ac_fixed() : v_(0) {}
  template <int W2, int I2, bool S2, ac_q_mode Q2, ac_o_mode O2>
  ac_fixed(const ac_fixed<W2, I2, S2, Q2, O2>& op)
      : v_(ac_sim::convert(op.v_, W2 - I2, W, W - I, S, Q, O)) {}
  template <int W2, bool S2>
  ac_fixed(const ac_int<W2, S2>& op) : v_(ac_sim::convert(op.sim_value(), 0, W, W - I, S, Q, O)) {}
  ac_fixed(double d) : v_(0) {
    ac_sim::i128 m = 0;
    int frac = 0;
    ac_sim::split_double(d, &m, &frac);
    v_ = ac_sim::convert(m, frac, W, W - I, S, Q, O);
  }
  ac_fixed(int x) : v_(ac_sim::convert(x, 0, W, W - I, S, Q, O)) {}
  ac_fixed(unsigned x) : v_(ac_sim::convert(x, 0, W, W - I, S, Q, O)) {}
  ac_fixed(long x) : v_(ac_sim::convert(x, 0, W, W - I, S, Q, O)) {}
  ac_fixed(unsigned long x) : v_(ac_sim::convert(x, 0, W, W - I, S, Q, O)) {}
  ac_fixed(long long x) : v_(ac_sim::convert(x, 0, W, W - I, S, Q, O)) {}
  ac_fixed(unsigned long long x) : v_(ac_sim::convert(x, 0, W, W - I, S, Q, O)) {}

  double to_double() const { return std::ldexp(static_cast<double>(v_), I - W); }

  /// The mantissa's bits [lsb, lsb + WS) (sign-extended beyond W when signed) as ac_int<WS, S>.
  template <int WS>
  ac_int<WS, S> slc(int lsb) const {
    if (lsb < 0) ac_sim::fail("slc with a negative index");
    return ac_int<WS, S>::sim_from_bits(lsb >= 127 ? (v_ < 0 ? -1 : 0) : (v_ >> lsb));
  }
  template <int WS>
  ac_int<WS, S> slc(unsigned lsb) const {
    return slc<WS>(static_cast<int>(lsb));
  }

  template <int W2, int I2, bool S2, ac_q_mode Q2, ac_o_mode O2>
  typename rt<W2, I2, S2>::mult operator*(const ac_fixed<W2, I2, S2, Q2, O2>& op2) const {
    return rt<W2, I2, S2>::mult::sim_from_mantissa(v_ * op2.v_);  // exact: W + W2 <= 126
  }
  template <int W2, int I2, bool S2, ac_q_mode Q2, ac_o_mode O2>
  typename rt<W2, I2, S2>::plus operator+(const ac_fixed<W2, I2, S2, Q2, O2>& op2) const {
    typedef rt<W2, I2, S2> T;
    return T::plus::sim_from_mantissa(v_ * ac_sim::pow2(T::FM - T::F) +
                                      op2.v_ * ac_sim::pow2(T::FM - T::F2));
  }
  template <int W2, int I2, bool S2, ac_q_mode Q2, ac_o_mode O2>
  typename rt<W2, I2, S2>::minus operator-(const ac_fixed<W2, I2, S2, Q2, O2>& op2) const {
    typedef rt<W2, I2, S2> T;
    return T::minus::sim_from_mantissa(v_ * ac_sim::pow2(T::FM - T::F) -
                                       op2.v_ * ac_sim::pow2(T::FM - T::F2));
  }
  template <int W2, int I2, bool S2, ac_q_mode Q2, ac_o_mode O2>
  ac_fixed& operator+=(const ac_fixed<W2, I2, S2, Q2, O2>& op2) {
    *this = ac_fixed(*this + op2);
    return *this;
  }
  template <int W2, int I2, bool S2, ac_q_mode Q2, ac_o_mode O2>
  ac_fixed& operator-=(const ac_fixed<W2, I2, S2, Q2, O2>& op2) {
    *this = ac_fixed(*this - op2);
    return *this;
  }
  template <int W2, int I2, bool S2, ac_q_mode Q2, ac_o_mode O2>
  ac_fixed& operator*=(const ac_fixed<W2, I2, S2, Q2, O2>& op2) {
    *this = ac_fixed(*this * op2);
    return *this;
  }

#define HGQT_AC_SIM_COMPARE(OP)                                     \
  template <int W2, int I2, bool S2, ac_q_mode Q2, ac_o_mode O2>    \
  bool operator OP(const ac_fixed<W2, I2, S2, Q2, O2>& op2) const { \
    return ac_sim::compare(v_, W - I, op2.v_, W2 - I2) OP 0;        \
  }                                                                 \
  bool operator OP(double d) const {                                \
    return ac_sim::compare_double(v_, W - I, d) OP 0;               \
  }
  HGQT_AC_SIM_COMPARE(==)
  HGQT_AC_SIM_COMPARE(!=)
  HGQT_AC_SIM_COMPARE(<)
  HGQT_AC_SIM_COMPARE(>)
  HGQT_AC_SIM_COMPARE(<=)
  HGQT_AC_SIM_COMPARE(>=)
#undef HGQT_AC_SIM_COMPARE

  /// Simulation only: a value from its raw mantissa (no conversion), and the mantissa.
  static ac_fixed sim_from_mantissa(ac_sim::i128 m) {
    ac_fixed r;
    r.v_ = m;
    return r;
  }
  ac_sim::i128 sim_mantissa() const {
    return v_;
  }

 private:
  template <int W2, int I2, bool S2, ac_q_mode Q2, ac_o_mode O2>
  friend class ac_fixed;
  ac_sim::i128 v_;  ///< the mantissa, within the type's range
};

#endif  // HGQT_AC_TYPES_SIM_AC_FIXED_H
