// A small stand-in for the vendor's ap_fixed.h (Vitis/Vivado HLS arbitrary-precision types),
// used to compile and run the generated HLS projects where the vendor headers are not installed.
//
// It implements only what hgqt's generated code and testbench use, with the vendor's semantics
// (quantization.md sections 2 and 9):
//   - ap_fixed<W, I, Q, O, N> (signed) and ap_ufixed<W, I, Q, O, N> (unsigned); I may be negative
//     or larger than W. The value is a W-bit mantissa times 2^-(W - I).
//   - Conversion from another ap_fixed, from an integer and from a double: the exact source value
//     is first rounded to the destination's step with Q (AP_TRN, AP_TRN_ZERO, AP_RND, AP_RND_ZERO,
//     AP_RND_MIN_INF, AP_RND_INF, AP_RND_CONV), then overflowed with O (AP_WRAP, AP_SAT,
//     AP_SAT_ZERO, AP_SAT_SYM). AP_WRAP_SM and N != 0 are not implemented (static_assert).
//   - a * b has W = W1 + W2, I = I1 + I2; a + b and a - b have
//     I = max(I1 + (S2 && !S1), I2 + (S1 && !S2)) + 1, F = max(F1, F2) (a - b is signed): every
//     result is exact. +=, -=, *= convert the exact result with the left operand's modes.
//   - Comparisons between fixed-point values and with integers; to_double(), to_float().
//   - range(hi, lo) / range(): the mantissa's bits as an unsigned field (read only), with
//     to_uint(), to_int(), to_uint64(), to_int64() (the vendor's af_range_ref, reading).
// Mantissas are held in __int128: widths up to 126 bits (static_assert beyond).
#ifndef HGQT_AP_TYPES_SIM_AP_FIXED_H
#define HGQT_AP_TYPES_SIM_AP_FIXED_H

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

enum ap_q_mode {
  AP_RND,
  AP_RND_ZERO,
  AP_RND_MIN_INF,
  AP_RND_INF,
  AP_RND_CONV,
  AP_TRN,
  AP_TRN_ZERO
};
enum ap_o_mode { AP_SAT, AP_SAT_ZERO, AP_SAT_SYM, AP_WRAP, AP_WRAP_SM };

namespace ap_sim {

typedef __int128 i128;
typedef unsigned __int128 u128;

/// Largest width the simulation supports (a product of two such mantissas must fit 127 bits).
const int kMaxWidth = 126;

constexpr i128 pow2(int e) {
  return static_cast<i128>(1) << e;
}

/// Number of significant bits of |m| (0 for 0).
constexpr int magnitude_bits(i128 m) {
  u128 a = m < 0 ? static_cast<u128>(0) - static_cast<u128>(m) : static_cast<u128>(m);
  int n = 0;
  while (a != 0) {
    a >>= 1;
    ++n;
  }
  return n;
}

/// Rounds m * 2^-s (s >= 1) to an integer with mode q.
constexpr i128 round_shift(i128 m, int s, ap_q_mode q) {
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
    case AP_TRN:
      return floor_q;
    case AP_TRN_ZERO:
      return negative ? floor_q + 1 : floor_q;
    case AP_RND:
      return rem >= half ? floor_q + 1 : floor_q;
    case AP_RND_ZERO:
      if (rem != half) return rem > half ? floor_q + 1 : floor_q;
      return negative ? floor_q + 1 : floor_q;
    case AP_RND_MIN_INF:
      return rem > half ? floor_q + 1 : floor_q;
    case AP_RND_INF:
      if (rem != half) return rem > half ? floor_q + 1 : floor_q;
      return negative ? floor_q : floor_q + 1;
    case AP_RND_CONV:
      if (rem != half) return rem > half ? floor_q + 1 : floor_q;
      return (floor_q & 1) ? floor_q + 1 : floor_q;
  }
  return floor_q;
}

/// Keeps the low w bits of m (two's complement; sign-extended when is_signed).
constexpr i128 wrap_bits(i128 m, int w, bool is_signed) {
  const u128 low = static_cast<u128>(m) & static_cast<u128>(pow2(w) - 1);
  i128 r = static_cast<i128>(low);
  if (is_signed && (low >> (w - 1)) != 0) r -= pow2(w);
  return r;
}

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "ap_fixed (hgqt simulation header): %s\n", what);
  std::abort();
}

/// The mantissa of the exact value m * 2^-from_frac converted to a (w, frac, is_signed) type:
/// rounding with q, then overflow with o. Out of line (noinline): generated designs hold tens of
/// thousands of conversions, and one call each keeps their compile time low. constexpr, so that
/// constant tables (weights) are initialized at compile time.
__attribute__((noinline)) constexpr i128 convert(i128 m, int from_frac, int w, int frac,
                                                 bool is_signed, ap_q_mode q, ap_o_mode o) {
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
      if (o == AP_WRAP)
        return t >= w ? 0 : wrap_bits(wrap_bits(m, w - t, false) << t, w, is_signed);
      r = m > 0 ? pow2(126) : -pow2(126);
    } else {
      r = m * pow2(t);
    }
  }
  switch (o) {
    case AP_WRAP:
      return (r < lo || r > hi) ? wrap_bits(r, w, is_signed) : r;
    case AP_SAT:
      return r > hi ? hi : (r < lo ? lo : r);
    case AP_SAT_ZERO:
      return (r > hi || r < lo) ? 0 : r;
    case AP_SAT_SYM: {
      const i128 sym_lo = is_signed ? -hi : 0;
      return r > hi ? hi : (r < sym_lo ? sym_lo : r);
    }
    case AP_WRAP_SM:
      break;
  }
  fail("AP_WRAP_SM is not implemented");
}

/// The exact value of a finite double as m * 2^-frac (constexpr: by exact scaling with 2).
constexpr void split_double(double d, i128* m, int* frac) {
  if (!(d == d) || d > 1.7976931348623157e308 || d < -1.7976931348623157e308)
    fail("cannot convert NaN or infinity to ap_fixed");
  *m = 0;
  *frac = 0;
  if (d == 0) return;
  const bool neg = d < 0;
  double a = neg ? -d : d;
  int f = 0;
  // Bring a into [2^52, 2^53), where every double is an integer; halving above 2^53 and
  // doubling below 2^52 are exact.
  while (a >= 9007199254740992.0) {
    a *= 0.5;
    --f;
  }
  while (a < 4503599627370496.0) {
    a *= 2.0;
    ++f;
  }
  const i128 mag = static_cast<i128>(static_cast<int64_t>(a));
  *m = neg ? -mag : mag;
  *frac = f;
}

/// Compares m1 * 2^-f1 with m2 * 2^-f2 (|m| < 2^126): -1, 0 or 1.
__attribute__((noinline)) inline int compare(i128 m1, int f1, i128 m2, int f2) {
  if (f1 > f2) return -compare(m2, f2, m1, f1);
  const int t = f2 - f1;                                                // scale m1 up by 2^t
  if (m1 != 0 && magnitude_bits(m1) + t > 126) return m1 > 0 ? 1 : -1;  // |m1 * 2^t| > |m2|
  const i128 a = m1 * pow2(t);
  return a < m2 ? -1 : (a > m2 ? 1 : 0);
}

/// The bits [hi:lo] (hi >= lo) of a mantissa, as the vendor's af_range_ref reads them (read only):
/// an unsigned bit field of the two's complement mantissa.
struct range_ref {
  u128 bits;
  unsigned to_uint() const { return static_cast<unsigned>(bits); }
  int to_int() const { return static_cast<int>(bits); }
  unsigned long long to_uint64() const { return static_cast<unsigned long long>(bits); }
  long long to_int64() const { return static_cast<long long>(bits); }
  operator unsigned long long() const { return to_uint64(); }
};

}  // namespace ap_sim

template <int W, int I, bool S, ap_q_mode Q = AP_TRN, ap_o_mode O = AP_WRAP, int N = 0>
struct ap_fixed_base {
  static_assert(W >= 1, "ap_fixed: the width must be at least 1");
  static_assert(W <= ap_sim::kMaxWidth,
                "ap_fixed (hgqt simulation header): widths above 126 bits are not supported; "
                "use the vendor headers (AP_TYPES_INCLUDE)");
  static_assert(O != AP_WRAP_SM && N == 0,
                "ap_fixed (hgqt simulation header): AP_WRAP_SM and N != 0 are not implemented");

  static constexpr int width = W;
  static constexpr int iwidth = I;
  static constexpr bool is_signed = S;

  ap_sim::i128 V;  ///< the mantissa, within the type's range

  constexpr ap_fixed_base() : V(0) {}
  template <int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2>
  constexpr ap_fixed_base(const ap_fixed_base<W2, I2, S2, Q2, O2, N2>& x)
      : V(ap_sim::convert(x.V, W2 - I2, W, W - I, S, Q, O)) {}
  constexpr ap_fixed_base(double d) : V(0) {
    ap_sim::i128 m = 0;
    int frac = 0;
    ap_sim::split_double(d, &m, &frac);
    V = ap_sim::convert(m, frac, W, W - I, S, Q, O);
  }
  constexpr ap_fixed_base(float d) : ap_fixed_base(static_cast<double>(d)) {}
  constexpr ap_fixed_base(int x) : V(ap_sim::convert(x, 0, W, W - I, S, Q, O)) {}
  constexpr ap_fixed_base(unsigned x) : V(ap_sim::convert(x, 0, W, W - I, S, Q, O)) {}
  constexpr ap_fixed_base(long x) : V(ap_sim::convert(x, 0, W, W - I, S, Q, O)) {}
  constexpr ap_fixed_base(unsigned long x) : V(ap_sim::convert(x, 0, W, W - I, S, Q, O)) {}
  constexpr ap_fixed_base(long long x) : V(ap_sim::convert(x, 0, W, W - I, S, Q, O)) {}
  constexpr ap_fixed_base(unsigned long long x) : V(ap_sim::convert(x, 0, W, W - I, S, Q, O)) {}

  /// Builds a value from its raw mantissa (no conversion).
  static constexpr ap_fixed_base from_mantissa(ap_sim::i128 m) {
    ap_fixed_base r;
    r.V = m;
    return r;
  }

  double to_double() const { return std::ldexp(static_cast<double>(V), -(W - I)); }

  /// The mantissa's bits [hi:lo] (0 <= lo <= hi < W), as an unsigned bit field (read only).
  ap_sim::range_ref range(int hi, int lo) const {
    if (lo < 0 || hi < lo || hi >= W) std::abort();
    const int n = hi - lo + 1;
    const ap_sim::u128 mask = n >= 128 ? ~ap_sim::u128{0} : (ap_sim::u128{1} << n) - 1;
    return {(static_cast<ap_sim::u128>(V) >> lo) & mask};
  }
  /// All W bits of the mantissa.
  ap_sim::range_ref range() const { return range(W - 1, 0); }
  float to_float() const { return static_cast<float>(to_double()); }

  template <int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2>
  ap_fixed_base& operator+=(const ap_fixed_base<W2, I2, S2, Q2, O2, N2>& x);
  template <int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2>
  ap_fixed_base& operator-=(const ap_fixed_base<W2, I2, S2, Q2, O2, N2>& x);
  template <int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2>
  ap_fixed_base& operator*=(const ap_fixed_base<W2, I2, S2, Q2, O2, N2>& x);
};

template <int W, int I, ap_q_mode Q = AP_TRN, ap_o_mode O = AP_WRAP, int N = 0>
struct ap_fixed : ap_fixed_base<W, I, true, Q, O, N> {
  typedef ap_fixed_base<W, I, true, Q, O, N> Base;
  constexpr ap_fixed() {}
  template <int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2>
  constexpr ap_fixed(const ap_fixed_base<W2, I2, S2, Q2, O2, N2>& x) : Base(x) {}
  constexpr ap_fixed(double d) : Base(d) {}
  constexpr ap_fixed(float d) : Base(d) {}
  constexpr ap_fixed(int x) : Base(x) {}
  constexpr ap_fixed(unsigned x) : Base(x) {}
  constexpr ap_fixed(long x) : Base(x) {}
  constexpr ap_fixed(unsigned long x) : Base(x) {}
  constexpr ap_fixed(long long x) : Base(x) {}
  constexpr ap_fixed(unsigned long long x) : Base(x) {}
};

template <int W, int I, ap_q_mode Q = AP_TRN, ap_o_mode O = AP_WRAP, int N = 0>
struct ap_ufixed : ap_fixed_base<W, I, false, Q, O, N> {
  typedef ap_fixed_base<W, I, false, Q, O, N> Base;
  constexpr ap_ufixed() {}
  template <int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2>
  constexpr ap_ufixed(const ap_fixed_base<W2, I2, S2, Q2, O2, N2>& x) : Base(x) {}
  constexpr ap_ufixed(double d) : Base(d) {}
  constexpr ap_ufixed(float d) : Base(d) {}
  constexpr ap_ufixed(int x) : Base(x) {}
  constexpr ap_ufixed(unsigned x) : Base(x) {}
  constexpr ap_ufixed(long x) : Base(x) {}
  constexpr ap_ufixed(unsigned long x) : Base(x) {}
  constexpr ap_ufixed(long long x) : Base(x) {}
  constexpr ap_ufixed(unsigned long long x) : Base(x) {}
};

namespace ap_sim {
/// Result types of the arithmetic operators (quantization.md section 9).
template <int W1, int I1, bool S1, int W2, int I2, bool S2>
struct result {
  enum {
    F1 = W1 - I1,
    F2 = W2 - I2,
    F = F1 > F2 ? F1 : F2,
    IA = I1 + (S2 && !S1),
    IB = I2 + (S1 && !S2),
    plus_i = (IA > IB ? IA : IB) + 1,
    plus_w = plus_i + F
  };
  typedef ap_fixed_base<W1 + W2, I1 + I2, S1 || S2> mult;
  typedef ap_fixed_base<plus_w, plus_i, S1 || S2> plus;
  typedef ap_fixed_base<plus_w, plus_i, true> minus;
};
}  // namespace ap_sim

#define HGQT_AP_SIM_TPARAMS                                                             \
  int W1, int I1, bool S1, ap_q_mode Q1, ap_o_mode O1, int N1, int W2, int I2, bool S2, \
      ap_q_mode Q2, ap_o_mode O2, int N2
#define HGQT_AP_SIM_A const ap_fixed_base<W1, I1, S1, Q1, O1, N1>& a
#define HGQT_AP_SIM_B const ap_fixed_base<W2, I2, S2, Q2, O2, N2>& b

template <HGQT_AP_SIM_TPARAMS>
typename ap_sim::result<W1, I1, S1, W2, I2, S2>::mult operator*(HGQT_AP_SIM_A, HGQT_AP_SIM_B) {
  typedef typename ap_sim::result<W1, I1, S1, W2, I2, S2>::mult R;
  return R::from_mantissa(a.V * b.V);  // |a.V| < 2^W1, |b.V| < 2^W2, W1 + W2 <= 126
}

template <HGQT_AP_SIM_TPARAMS>
typename ap_sim::result<W1, I1, S1, W2, I2, S2>::plus operator+(HGQT_AP_SIM_A, HGQT_AP_SIM_B) {
  typedef ap_sim::result<W1, I1, S1, W2, I2, S2> T;
  typedef typename T::plus R;
  return R::from_mantissa(a.V * ap_sim::pow2(T::F - T::F1) + b.V * ap_sim::pow2(T::F - T::F2));
}

template <HGQT_AP_SIM_TPARAMS>
typename ap_sim::result<W1, I1, S1, W2, I2, S2>::minus operator-(HGQT_AP_SIM_A, HGQT_AP_SIM_B) {
  typedef ap_sim::result<W1, I1, S1, W2, I2, S2> T;
  typedef typename T::minus R;
  return R::from_mantissa(a.V * ap_sim::pow2(T::F - T::F1) - b.V * ap_sim::pow2(T::F - T::F2));
}

template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O, int N>
template <int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2>
ap_fixed_base<W, I, S, Q, O, N>& ap_fixed_base<W, I, S, Q, O, N>::operator+=(
    const ap_fixed_base<W2, I2, S2, Q2, O2, N2>& x) {
  *this = ap_fixed_base(*this + x);
  return *this;
}

template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O, int N>
template <int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2>
ap_fixed_base<W, I, S, Q, O, N>& ap_fixed_base<W, I, S, Q, O, N>::operator-=(
    const ap_fixed_base<W2, I2, S2, Q2, O2, N2>& x) {
  *this = ap_fixed_base(*this - x);
  return *this;
}

template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O, int N>
template <int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2>
ap_fixed_base<W, I, S, Q, O, N>& ap_fixed_base<W, I, S, Q, O, N>::operator*=(
    const ap_fixed_base<W2, I2, S2, Q2, O2, N2>& x) {
  *this = ap_fixed_base(*this * x);
  return *this;
}

#define HGQT_AP_SIM_COMPARE(OP)                                          \
  template <HGQT_AP_SIM_TPARAMS>                                         \
  bool operator OP(HGQT_AP_SIM_A, HGQT_AP_SIM_B) {                       \
    return ap_sim::compare(a.V, W1 - I1, b.V, W2 - I2) OP 0;             \
  }                                                                      \
  template <int W1, int I1, bool S1, ap_q_mode Q1, ap_o_mode O1, int N1> \
  bool operator OP(HGQT_AP_SIM_A, long long b) {                         \
    return ap_sim::compare(a.V, W1 - I1, b, 0) OP 0;                     \
  }                                                                      \
  template <int W2, int I2, bool S2, ap_q_mode Q2, ap_o_mode O2, int N2> \
  bool operator OP(long long a, HGQT_AP_SIM_B) {                         \
    return ap_sim::compare(a, 0, b.V, W2 - I2) OP 0;                     \
  }

HGQT_AP_SIM_COMPARE(==)
HGQT_AP_SIM_COMPARE(!=)
HGQT_AP_SIM_COMPARE(<)
HGQT_AP_SIM_COMPARE(>)
HGQT_AP_SIM_COMPARE(<=)
HGQT_AP_SIM_COMPARE(>=)

#undef HGQT_AP_SIM_COMPARE
#undef HGQT_AP_SIM_TPARAMS
#undef HGQT_AP_SIM_A
#undef HGQT_AP_SIM_B

#endif  // HGQT_AP_TYPES_SIM_AP_FIXED_H
