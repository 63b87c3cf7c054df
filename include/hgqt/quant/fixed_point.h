// The scalar definition of fixed-point quantization (quantization.md section 2); no LibTorch.
// Every back end (training kernel, emulator, code generators) mirrors this one definition.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

namespace hgqt::quant {

/// Rounding of x * 2^f to an integer (ap_fixed names).
enum class RoundingMode { TRN, RND, RND_CONV, S_RND };
/// Overflow handling of the rounded integer.
enum class OverflowMode { WRAP, SAT, SAT_SYM };
/// How many elements share one (k, i, f).
enum class Granularity { Tensor, Channel, Element };
/// How the bit parameters are stored.
enum class Parameterization { KIF, KBI };

/// Largest W - k (= i + f) the quantizers allow, so every value is exact in float32.
constexpr int kMaxMagnitudeBits = 23;

RoundingMode parse_rounding(const std::string& s);  ///< throws std::invalid_argument
OverflowMode parse_overflow(const std::string& s);  ///< throws std::invalid_argument
Granularity parse_granularity(const std::string& s);
Parameterization parse_parameterization(const std::string& s);
const char* to_string(RoundingMode m);
const char* to_string(OverflowMode m);
const char* to_string(Granularity g);
const char* to_string(Parameterization p);

/// R(y) of section 2. `u` in [0,1) is the noise of S_RND (ignored by the other modes);
/// S_RND with u = 0.5 is RND, which is how it acts in eval.
inline double round_fixed(double y, RoundingMode mode, double u = 0.5) {
  switch (mode) {
    case RoundingMode::TRN:
      return std::floor(y);
    case RoundingMode::RND: {
      // floor(y + 1/2) without forming y + 1/2, which can round up (0.49999999999999994 + 0.5
      // == 1.0 in double): y - floor(y) is exact.
      const double fl = std::floor(y);
      return fl + (y - fl >= 0.5 ? 1.0 : 0.0);
    }
    case RoundingMode::RND_CONV:
      return std::nearbyint(y);  // default FE_TONEAREST: half to even
    case RoundingMode::S_RND:
      return std::floor(y + u);
  }
  return y;
}

/// Overflow of section 2 on an integer mantissa m with width W = k + i + f (> 0).
inline double overflow_fixed(double m, int k, int i, int f, OverflowMode mode) {
  const int b = i + f;
  const double m_max = std::ldexp(1.0, b) - 1.0;
  const double m_min = -k * std::ldexp(1.0, b);
  switch (mode) {
    case OverflowMode::SAT:
      return m > m_max ? m_max : (m < m_min ? m_min : m);
    case OverflowMode::SAT_SYM: {
      const double lo = -k * m_max;
      return m > m_max ? m_max : (m < lo ? lo : m);
    }
    case OverflowMode::WRAP: {
      const double span = std::ldexp(1.0, k + b);
      // fmod(m, span) is exact for any m; m - m_min could round for |m| >= 2^53.
      double r = std::fmod(std::fmod(m, span) - m_min, span);
      if (r < 0) r += span;
      return m_min + r;
    }
  }
  return m;
}

/// x_hat = Q(x) for one element with integer k, i, f (section 2, eval semantics).
inline double quantize_fixed(double x, int k, int i, int f, RoundingMode round,
                             OverflowMode overflow, double u = 0.5) {
  if (k + i + f <= 0) return 0.0;
  const double m = round_fixed(std::ldexp(x, f), round, u);
  return std::ldexp(overflow_fixed(m, k, i, f, overflow), -f);
}

}  // namespace hgqt::quant
