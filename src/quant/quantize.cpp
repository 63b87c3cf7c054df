// The fixed-point quantize op: a fused CPU kernel and a generic ATen path, both behind one
// prepared QuantPlan, and the torch::autograd::Function whose backward implements the surrogate
// gradients.
#include "hgqt/quant/quantize.h"

#include <ATen/ExpandUtils.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>

#include "hgqt/util/simd.h"

namespace hgqt::quant {

namespace {

constexpr double kLn2 = 0.69314718055994530942;
// Integer bits are held inside this range in the forward pass (2^i stays finite and exact).
constexpr double kMaxAbsIntegerBits = 64.0;
// Fractional bits used for 2^f and 2^-f. Only pruned elements (k + i + f <= 0) can lie outside
// [-64, 87]; clamping keeps their (unused) scale finite in float32.
constexpr double kMaxAbsScaleBits = 126.0;

std::atomic<bool> g_force_reference{false};

bool clips(OverflowMode m) {
  return m != OverflowMode::WRAP;
}

// Exact round-half-even / 2^n without libm calls. Doubles hold every integer below 2^52 exactly;
// larger values are integers already.
constexpr double kTwo52 = 4503599627370496.0;
inline double rint_even_nb(double y) {
  const double big = std::copysign(kTwo52, y);
  const double r = (y + big) - big;  // round to nearest even, |y| < 2^52
  return std::abs(y) < kTwo52 ? r : y;
}
inline double exp2_int(int n) {
  if (n < -1022 || n > 1023) return std::ldexp(1.0, n);
  uint64_t bits = static_cast<uint64_t>(n + 1023) << 52;
  double out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

// Below this magnitude every value of T is a multiple of at most 2^-1 and floor(y + 0.5),
// floor(y) and round-half-even are exact in T; at or above it every value is an integer.
template <typename T>
constexpr T exact_limit() {
  return static_cast<T>(std::numeric_limits<T>::digits == 24 ? 8388608.0 : kTwo52);
}

// R(y) of section 2 in T, exact for |y| < exact_limit<T>() (the callers guarantee it or replace
// the result). Branch-free, so the row loops vectorize (SSE4.1 roundps/roundpd for floor).
// `x` is the value y was scaled from: a negative x whose x 2^f underflows to -0 truncates to -1.
template <typename T, RoundingMode RM>
inline T round_t(T y, T x) {
  if constexpr (RM == RoundingMode::TRN)
    return std::floor(y) - static_cast<T>((y == T(0)) & (x < T(0)));
  if constexpr (RM == RoundingMode::RND) {
    // floor(y + 1/2) without forming y + 1/2, which float rounds (0.49999997f + 0.5f == 1.0f):
    // y - floor(y) is exact.
    const T fl = std::floor(y);
    return fl + static_cast<T>(y - fl >= T(0.5));
  }
  if constexpr (RM == RoundingMode::RND_CONV) {
    const T big = std::copysign(exact_limit<T>(), y);
    return (y + big) - big;  // round half to even
  }
  return y;
}

// The legacy double rounding of the S_RND and eval-WRAP loops.
template <RoundingMode RM>
inline double round_fast(double y, double u) {
  if constexpr (RM == RoundingMode::S_RND) return std::floor(y + u);
  return round_fixed(y, RM);
}

// Per-element parameters of the per-sample shape.
struct ElementParams {
  double scale;  // 2^f
  double inv;    // 2^-f
  double hi;     // 2^i - 2^-f
  double lo;     // -k 2^i (SAT) or -k hi (SAT_SYM)
  double two_i;  // 2^i
  int k, i, f;
  bool pruned;  // W <= 0
};

std::vector<int64_t> broadcast_map(c10::IntArrayRef param, c10::IntArrayRef sample) {
  if (param.equals(sample)) return {};
  const int64_t rank = static_cast<int64_t>(sample.size());
  const int64_t offset = rank - static_cast<int64_t>(param.size());
  std::vector<int64_t> pstride(static_cast<size_t>(rank), 0);
  int64_t st = 1;
  for (int64_t d = rank - 1; d >= offset; --d) {
    const int64_t pd = param[static_cast<size_t>(d - offset)];
    pstride[static_cast<size_t>(d)] = pd == 1 ? 0 : st;
    st *= pd;
  }
  int64_t n = 1;
  for (auto v : sample) n *= v;
  std::vector<int64_t> map(static_cast<size_t>(n));
  std::vector<int64_t> coord(static_cast<size_t>(rank), 0);
  int64_t idx = 0;
  for (int64_t j = 0; j < n; ++j) {
    map[static_cast<size_t>(j)] = idx;
    for (int64_t d = rank - 1; d >= 0; --d) {  // odometer increment
      const auto ud = static_cast<size_t>(d);
      ++coord[ud];
      idx += pstride[ud];
      if (coord[ud] < sample[ud]) break;
      idx -= pstride[ud] * coord[ud];
      coord[ud] = 0;
    }
  }
  return map;
}

// A bit-parameter tensor read on the CPU as float, with its broadcast map.
struct ParamView {
  torch::Tensor data;  // contiguous float
  std::vector<int64_t> map;
  const float* ptr;
  float at(int64_t j) const { return ptr[map.empty() ? j : map[static_cast<size_t>(j)]]; }
};

ParamView view_param(const torch::Tensor& t, c10::IntArrayRef sample) {
  ParamView v;
  v.data = t.detach().to(torch::kCPU, torch::kFloat).contiguous();
  v.map = broadcast_map(v.data.sizes(), sample);
  v.ptr = v.data.data_ptr<float>();
  return v;
}

ElementParams make_params(double k, double i, double f, OverflowMode overflow) {
  ElementParams p;
  p.k = static_cast<int>(k);
  p.i = static_cast<int>(i);
  p.f = static_cast<int>(f);
  p.pruned = p.k + p.i + p.f <= 0;
  const int fs = static_cast<int>(std::min(kMaxAbsScaleBits, std::max(-kMaxAbsScaleBits, f)));
  p.scale = exp2_int(fs);
  p.inv = exp2_int(-fs);
  p.two_i = exp2_int(p.i);
  p.hi = p.two_i - exp2_int(-p.f);
  p.lo = overflow == OverflowMode::SAT_SYM ? -p.k * p.hi : -p.k * p.two_i;
  return p;
}

// The effective (k, i, f) of every element, by the rule of effective_kif().
std::vector<ElementParams> element_params(const ParamView& k, const ParamView& a,
                                          const ParamView& c, int64_t features,
                                          Parameterization param, OverflowMode overflow) {
  std::vector<ElementParams> out(static_cast<size_t>(features));
  for (int64_t j = 0; j < features; ++j) {
    const double kk = std::min(1.0, std::max(0.0, rint_even_nb(k.at(j))));
    double i, f;
    if (param == Parameterization::KIF) {
      i = std::min(kMaxAbsIntegerBits, std::max(-kMaxAbsIntegerBits, rint_even_nb(a.at(j))));
      f = std::min(rint_even_nb(c.at(j)), kMaxMagnitudeBits - i);
    } else {
      const double b = std::min<double>(kMaxMagnitudeBits, std::max(0.0, rint_even_nb(a.at(j))));
      i = std::min(kMaxAbsIntegerBits, std::max(-kMaxAbsIntegerBits, rint_even_nb(c.at(j))));
      f = b - i;
    }
    out[static_cast<size_t>(j)] = make_params(kk, i, f, overflow);
  }
  return out;
}

// Structure-of-arrays copy of the element parameters in the compute type of the vectorized loops.
// Pruned elements: lo = hi = 0 (the clip gives 0), mask bounds +-inf (never "clipped").
template <typename T>
struct ParamArrays {
  std::vector<T> scale, inv, hi, lo, keep, mask_hi, mask_lo;
  // Eval WRAP (float inputs, computed in double): 2^f, 2^-f, 2^(k+i+f), -k 2^(i+f).
  std::vector<double> scale_d, inv_d, span, m_min;
  void fill(const std::vector<ElementParams>& ps) {
    const size_t n = ps.size();
    for (auto* v : {&scale, &inv, &hi, &lo, &keep, &mask_hi, &mask_lo}) v->resize(n);
    for (auto* v : {&scale_d, &inv_d, &span, &m_min}) v->resize(n);
    const T inf = std::numeric_limits<T>::infinity();
    for (size_t j = 0; j < n; ++j) {
      const auto& p = ps[j];
      scale[j] = static_cast<T>(p.scale);
      inv[j] = static_cast<T>(p.inv);
      hi[j] = p.pruned ? T(0) : static_cast<T>(p.hi);
      lo[j] = p.pruned ? T(0) : static_cast<T>(p.lo);
      keep[j] = p.pruned ? T(0) : T(1);
      mask_hi[j] = p.pruned ? inf : static_cast<T>(p.hi);
      mask_lo[j] = p.pruned ? -inf : static_cast<T>(p.lo);
      scale_d[j] = p.scale;
      inv_d[j] = p.inv;
      span[j] = p.pruned ? 1.0 : exp2_int(p.k + p.i + p.f);
      m_min[j] = p.pruned ? 0.0 : -p.k * exp2_int(p.i + p.f);
    }
  }
};

int64_t grain_for(int64_t features) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, features));
}

// The surrogate gradients of one element, in the parameter terms of section 3, from the three
// sums the row loops accumulate: s_in = sum (x - x_hat) g over unclipped rows (pruned included),
// s_up and s_low = sum g over rows clipped at the upper and lower bound.
void finish_element_grads(const ElementParams& p, OverflowMode overflow, double s_in, double s_up,
                          double s_low, double& di, double& df) {
  df = kLn2 * s_in;
  di = 0.0;
  if (p.pruned || !clips(overflow)) return;
  const double inv = exp2_int(-p.f);
  df += kLn2 * inv * s_up;
  di = kLn2 * p.two_i * s_up - p.k * kLn2 * p.two_i * s_low;
  if (overflow == OverflowMode::SAT_SYM) df -= p.k * kLn2 * inv * s_low;
}

}  // namespace

// ---------------------------------------------------------------- the plan
struct QuantPlan {
  QuantizeSettings s;
  std::vector<int64_t> shape;               // per-sample shape
  torch::ScalarType dtype = torch::kFloat;  // of the inputs it was made for
  torch::Device device = torch::kCPU;
  int64_t features = 1;
  bool kernel = false;  // fused CPU kernel (x on the CPU, float or double), else ATen ops
  // The vectorized row loops apply: training or eval with clipping overflow, or training WRAP,
  // with a deterministic rounding. Eval WRAP and training S_RND use the double element loops.
  bool fast = false;
  bool eval_fast = false;  // eval of float inputs: eval_rows (WRAP included), calibration record
  bool any_pruned = false;
  RoundingMode round = RoundingMode::RND;  // S_RND is RND outside training
  std::vector<int64_t> a_shape, c_shape;
  torch::TensorOptions a_opts, c_opts;
  // kernel
  std::vector<int64_t> a_map, c_map;
  std::vector<ElementParams> ps;
  ParamArrays<float> f32;
  ParamArrays<double> f64;
  // ATen path: compute dtype and parameter tensors broadcastable to x
  torch::ScalarType compute = torch::kFloat;
  torch::Tensor k, i, f;  // effective, float64 (legacy double ops)
  torch::Tensor scale, inv, hi, lo, keep, limit, mask_hi, mask_lo;
  bool legacy_aten = false;  // eval WRAP or S_RND: the double ATen ops
};

namespace {

// ---------------------------------------------------------------- fused CPU kernel: fast loops
// CLIP: SAT/SAT_SYM (clip, then round); else WRAP in training (round only).
template <typename T, RoundingMode RM, bool CLIP, bool AM, bool RELU>
HGQT_VECTOR_CLONES void fast_forward_rows(const T* x, T* out, T* am, int64_t begin, int64_t end,
                                          int64_t features, const ParamArrays<T>& pa) {
  const T* scale = pa.scale.data();
  const T* inv = pa.inv.data();
  const T* hi = pa.hi.data();
  const T* lo = pa.lo.data();
  const T* keep = pa.keep.data();
  const T limit = exact_limit<T>();
  for (int64_t n = begin; n < end; ++n) {
    const T* xr = x + n * features;
    T* outr = out + n * features;
    if constexpr (CLIP) {
      // |v 2^f| <= 2^(i+f) <= 2^23: the rounding is exact.
      // Pruned elements have lo = hi = 0.
      for (int64_t j = 0; j < features; ++j) {
        const T xv = RELU ? std::max(xr[j], T(0)) : xr[j];
        const T v = std::min(std::max(xv, lo[j]), hi[j]);
        const T r = round_t<T, RM>(v * scale[j], v) * inv[j];
        if constexpr (AM) am[j] = std::max(am[j], std::abs(r));
        outr[j] = r;
      }
    } else {
      // Every value computed on every lane, then selected: the loop vectorizes.
      for (int64_t j = 0; j < features; ++j) {
        const T xv = RELU ? std::max(xr[j], T(0)) : xr[j];
        const T y = xv * scale[j];
        const T rounded = round_t<T, RM>(y, xv) * inv[j];
        // At or above the limit y is an integer: x is on the grid already.
        const T r = std::abs(y) < limit ? rounded : xv;
        if constexpr (AM) am[j] = std::max(am[j], std::abs(r));
        const T kept = keep[j];
        outr[j] = kept != T(0) ? r : T(0);
      }
    }
  }
}

// Rows per block of the backward sums: within a block the sums run in T (float for float
// inputs, vectorized across features), then each block's sums are added in double.
constexpr int64_t kSumBlock = 32;

// Writes dx (DX) and accumulates per feature s_in, and s_up, s_low when CLIP (PARAMS), over the
// rows [begin, end). One pass over g, x, x_hat.
template <typename T, bool CLIP, bool DX, bool PARAMS, bool RELU>
HGQT_VECTOR_CLONES void backward_rows(const T* g, const T* x, const T* xh, T* dx, double* s_in,
                                      double* s_up, double* s_low, T* acc, int64_t begin,
                                      int64_t end, int64_t features, const T* keep, const T* mhi,
                                      const T* mlo) {
  T* a_in = acc;
  T* a_up = acc + features;
  T* a_low = acc + 2 * features;
  for (int64_t n0 = begin; n0 < end; n0 += kSumBlock) {
    const int64_t n1 = std::min(end, n0 + kSumBlock);
    if constexpr (PARAMS) std::fill(acc, acc + 3 * features, T(0));
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t base = n * features;
      const T* gr = g + base;
      const T* xr = x + base;
      const T* hr = xh + base;
      T* dr = DX ? dx + base : nullptr;
      for (int64_t j = 0; j < features; ++j) {
        // Bitwise & and selects of values computed on every lane: the loop vectorizes.
        const T gv = gr[j];
        const T x0 = xr[j];
        const T xv = RELU ? std::max(x0, T(0)) : x0;
        const bool up = CLIP & (xv > mhi[j]);
        const bool low = CLIP & (xv < mlo[j]);
        const bool inside = !(up | low);
        if constexpr (DX) {
          const bool pass = inside & (keep[j] != T(0)) & (!RELU | (x0 > T(0)));
          dr[j] = pass ? gv : T(0);
        }
        if constexpr (PARAMS) {
          const T d = (xv - hr[j]) * gv;
          a_in[j] += inside ? d : T(0);
          if constexpr (CLIP) {
            a_up[j] += up ? gv : T(0);
            a_low[j] += low ? gv : T(0);
          }
        }
      }
    }
    if constexpr (PARAMS) {
      for (int64_t j = 0; j < features; ++j) {
        s_in[j] += static_cast<double>(a_in[j]);
        if constexpr (CLIP) {
          s_up[j] += static_cast<double>(a_up[j]);
          s_low[j] += static_cast<double>(a_low[j]);
        }
      }
    }
  }
}

// `acc`: 3 * features values of scratch when need_params.
template <typename T, bool CLIP, bool RELU>
void fast_backward_rows(const T* g, const T* x, const T* xh, T* dx, double* s_in, double* s_up,
                        double* s_low, int64_t begin, int64_t end, int64_t features,
                        const ParamArrays<T>& pa, bool need_params, std::vector<T>& acc) {
  const T* k = pa.keep.data();
  const T* hi = pa.mask_hi.data();
  const T* lo = pa.mask_lo.data();
  if (dx && need_params)
    backward_rows<T, CLIP, true, true, RELU>(g, x, xh, dx, s_in, s_up, s_low, acc.data(), begin,
                                             end, features, k, hi, lo);
  else if (dx)
    backward_rows<T, CLIP, true, false, RELU>(g, x, xh, dx, s_in, s_up, s_low, acc.data(), begin,
                                              end, features, k, hi, lo);
  else if (need_params)
    backward_rows<T, CLIP, false, true, RELU>(g, x, xh, dx, s_in, s_up, s_low, acc.data(), begin,
                                              end, features, k, hi, lo);
}

// ---------------------------------------------------------------- fused CPU kernel: eval loops
// Eval of float inputs. CLIP: as in training. Else WRAP: x 2^f and its rounding in double (exact
// for every float x), then m mod 2^(k+i+f) into [m_min, m_min + 2^(k+i+f)) as
// m - span trunc(m / span) (exact: a power-of-2 division and Sterbenz) and one correction.
// CAL: per-element min and max over the rows of the value before WRAP (pruned: 0), the
// calibration record of FixedQuantizer.
template <RoundingMode RM, bool CLIP, bool CAL>
HGQT_VECTOR_CLONES void eval_rows(const float* x, float* out, double* cmin, double* cmax,
                                  int64_t begin, int64_t end, int64_t features,
                                  const ParamArrays<float>& pa) {
  const float* scale = pa.scale.data();
  const float* inv = pa.inv.data();
  const float* hi = pa.hi.data();
  const float* lo = pa.lo.data();
  const float* keep = pa.keep.data();
  const double* scale_d = pa.scale_d.data();
  const double* inv_d = pa.inv_d.data();
  const double* span = pa.span.data();
  const double* m_min = pa.m_min.data();
  for (int64_t n = begin; n < end; ++n) {
    const float* xr = x + n * features;
    float* outr = out + n * features;
    for (int64_t j = 0; j < features; ++j) {
      if constexpr (CLIP) {
        const float v = std::min(std::max(xr[j], lo[j]), hi[j]);
        const float r = round_t<float, RM>(v * scale[j], v) * inv[j];  // pruned: lo = hi = 0
        if constexpr (CAL) {
          cmin[j] = std::min(cmin[j], static_cast<double>(r));
          cmax[j] = std::max(cmax[j], static_cast<double>(r));
        }
        outr[j] = r;
      } else {
        const double xv = static_cast<double>(xr[j]);
        const double y = xv * scale_d[j];
        const double m = std::abs(y) < kTwo52 ? round_t<double, RM>(y, xv) : y;
        const bool kept = keep[j] != 0.0f;
        const double unwrapped = m * inv_d[j];
        if constexpr (CAL) {
          const double r = kept ? unwrapped : 0.0;
          cmin[j] = std::min(cmin[j], r);
          cmax[j] = std::max(cmax[j], r);
        }
        const double sp = span[j];
        const double q = m - sp * std::trunc(m / sp);  // in (-span, span)
        const double t0 = q - m_min[j];
        const double t1 = t0 < 0.0 ? t0 + sp : t0;
        const double t = t1 >= sp ? t1 - sp : t1;
        const float w = static_cast<float>((m_min[j] + t) * inv_d[j]);
        outr[j] = kept ? w : 0.0f;
      }
    }
  }
}

template <RoundingMode RM>
void eval_dispatch(bool clip, const float* x, float* out, double* cmin, double* cmax, int64_t b,
                   int64_t e, int64_t features, const ParamArrays<float>& pa) {
  if (clip && cmin)
    eval_rows<RM, true, true>(x, out, cmin, cmax, b, e, features, pa);
  else if (clip)
    eval_rows<RM, true, false>(x, out, cmin, cmax, b, e, features, pa);
  else if (cmin)
    eval_rows<RM, false, true>(x, out, cmin, cmax, b, e, features, pa);
  else
    eval_rows<RM, false, false>(x, out, cmin, cmax, b, e, features, pa);
}

// Eval of float rows through eval_rows; `calib` (two arrays of `features`) receives the min and
// max when given.
void kernel_eval(const QuantPlan& p, const float* x, float* out, int64_t rows, double* cal_min,
                 double* cal_max);

// ---------------------------------------------------------------- fused CPU kernel: legacy loops
enum class Mode { Clip, Wrap, Plain };  // SAT modes; WRAP in eval; WRAP in training (no wrap)

template <typename scalar_t, RoundingMode RM, Mode MODE>
void slow_forward_rows(const scalar_t* x, scalar_t* out, const scalar_t* noise, double* am,
                       int64_t begin, int64_t end, int64_t features, const ElementParams* ps) {
  for (int64_t n = begin; n < end; ++n) {
    const scalar_t* xr = x + n * features;
    scalar_t* outr = out + n * features;
    const scalar_t* nr = noise ? noise + n * features : nullptr;
    for (int64_t j = 0; j < features; ++j) {
      const ElementParams& p = ps[j];
      double v = static_cast<double>(xr[j]);
      if constexpr (MODE == Mode::Clip) v = p.pruned ? 0.0 : std::min(std::max(v, p.lo), p.hi);
      double m = round_fast<RM>(v * p.scale, nr ? static_cast<double>(nr[j]) : 0.5);
      if (!(std::abs(v * p.scale) < kTwo52)) m = v * p.scale;
      if (am) am[j] = std::max(am[j], std::abs(m * p.inv));
      if constexpr (MODE == Mode::Wrap) {
        if (!p.pruned) m = overflow_fixed(m, p.k, p.i, p.f, OverflowMode::WRAP);
      }
      outr[j] = p.pruned ? scalar_t(0) : static_cast<scalar_t>(m * p.inv);
    }
  }
}

template <typename scalar_t, RoundingMode RM>
void slow_dispatch_mode(Mode mode, const scalar_t* x, scalar_t* out, const scalar_t* noise,
                        double* am, int64_t b, int64_t e, int64_t features,
                        const ElementParams* ps) {
  switch (mode) {
    case Mode::Clip:
      return slow_forward_rows<scalar_t, RM, Mode::Clip>(x, out, noise, am, b, e, features, ps);
    case Mode::Wrap:
      return slow_forward_rows<scalar_t, RM, Mode::Wrap>(x, out, noise, am, b, e, features, ps);
    case Mode::Plain:
      return slow_forward_rows<scalar_t, RM, Mode::Plain>(x, out, noise, am, b, e, features, ps);
  }
}

template <typename T>
const ParamArrays<T>& arrays_of(const QuantPlan& p) {
  if constexpr (std::is_same_v<T, float>)
    return p.f32;
  else
    return p.f64;
}

template <typename T, RoundingMode RM, bool RELU>
void fast_forward_relu(bool clip, const T* x, T* out, T* am, int64_t b, int64_t e, int64_t features,
                       const ParamArrays<T>& pa) {
  if (clip && am)
    fast_forward_rows<T, RM, true, true, RELU>(x, out, am, b, e, features, pa);
  else if (clip)
    fast_forward_rows<T, RM, true, false, RELU>(x, out, am, b, e, features, pa);
  else if (am)
    fast_forward_rows<T, RM, false, true, RELU>(x, out, am, b, e, features, pa);
  else
    fast_forward_rows<T, RM, false, false, RELU>(x, out, am, b, e, features, pa);
}

template <typename T, RoundingMode RM>
void fast_forward_dispatch(bool clip, bool relu, const T* x, T* out, T* am, int64_t b, int64_t e,
                           int64_t features, const ParamArrays<T>& pa) {
  if (relu) return fast_forward_relu<T, RM, true>(clip, x, out, am, b, e, features, pa);
  fast_forward_relu<T, RM, false>(clip, x, out, am, b, e, features, pa);
}

void kernel_eval(const QuantPlan& p, const float* x, float* out, int64_t rows, double* cal_min,
                 double* cal_max) {
  const int64_t features = p.features;
  const int nthreads = at::get_num_threads();
  const bool clip = clips(p.s.overflow);
  const bool cal = cal_min != nullptr;
  const size_t nf = static_cast<size_t>(features);
  std::vector<double> pmin, pmax;
  if (cal) {
    pmin.assign(nf * static_cast<size_t>(nthreads), std::numeric_limits<double>::infinity());
    pmax.assign(nf * static_cast<size_t>(nthreads), -std::numeric_limits<double>::infinity());
  }
  at::parallel_for(0, rows, grain_for(features), [&](int64_t begin, int64_t end) {
    const size_t off = nf * static_cast<size_t>(at::get_thread_num());
    double* mn = cal ? pmin.data() + off : nullptr;
    double* mx = cal ? pmax.data() + off : nullptr;
    switch (p.round) {
      case RoundingMode::TRN:
        return eval_dispatch<RoundingMode::TRN>(clip, x, out, mn, mx, begin, end, features, p.f32);
      case RoundingMode::RND_CONV:
        return eval_dispatch<RoundingMode::RND_CONV>(clip, x, out, mn, mx, begin, end, features,
                                                     p.f32);
      default:
        return eval_dispatch<RoundingMode::RND>(clip, x, out, mn, mx, begin, end, features, p.f32);
    }
  });
  if (!cal) return;
  for (size_t j = 0; j < nf; ++j) {
    cal_min[j] = std::numeric_limits<double>::infinity();
    cal_max[j] = -std::numeric_limits<double>::infinity();
    for (int t = 0; t < nthreads; ++t) {
      cal_min[j] = std::min(cal_min[j], pmin[nf * static_cast<size_t>(t) + j]);
      cal_max[j] = std::max(cal_max[j], pmax[nf * static_cast<size_t>(t) + j]);
    }
  }
}

template <typename T>
void kernel_forward(const QuantPlan& p, const T* x, T* out, const T* noise, double* absmax,
                    int64_t rows, bool relu) {
  const int64_t features = p.features;
  if constexpr (std::is_same_v<T, float>) {
    if (p.eval_fast) return kernel_eval(p, x, out, rows, nullptr, nullptr);
  }
  const int nthreads = at::get_num_threads();
  const bool clip = clips(p.s.overflow);
  if (p.fast) {
    const auto& pa = arrays_of<T>(p);
    std::vector<T> partial;
    if (absmax) partial.assign(static_cast<size_t>(nthreads * features), T(0));
    at::parallel_for(0, rows, grain_for(features), [&](int64_t begin, int64_t end) {
      T* am = absmax ? partial.data() + at::get_thread_num() * features : nullptr;
      switch (p.round) {
        case RoundingMode::TRN:
          return fast_forward_dispatch<T, RoundingMode::TRN>(clip, relu, x, out, am, begin, end,
                                                             features, pa);
        case RoundingMode::RND_CONV:
          return fast_forward_dispatch<T, RoundingMode::RND_CONV>(clip, relu, x, out, am, begin,
                                                                  end, features, pa);
        default:
          return fast_forward_dispatch<T, RoundingMode::RND>(clip, relu, x, out, am, begin, end,
                                                             features, pa);
      }
    });
    if (absmax)
      for (int t = 0; t < nthreads; ++t)
        for (int64_t j = 0; j < features; ++j)
          absmax[j] = std::max(absmax[j],
                               static_cast<double>(partial[static_cast<size_t>(t * features + j)]));
    return;
  }
  const Mode mode = clip ? Mode::Clip : (p.s.training ? Mode::Plain : Mode::Wrap);
  std::vector<double> partial;
  if (absmax) partial.assign(static_cast<size_t>(nthreads * features), 0.0);
  at::parallel_for(0, rows, grain_for(features), [&](int64_t begin, int64_t end) {
    double* am = absmax ? partial.data() + at::get_thread_num() * features : nullptr;
    const ElementParams* ps = p.ps.data();
    switch (p.round) {
      case RoundingMode::TRN:
        return slow_dispatch_mode<T, RoundingMode::TRN>(mode, x, out, noise, am, begin, end,
                                                        features, ps);
      case RoundingMode::RND:
        return slow_dispatch_mode<T, RoundingMode::RND>(mode, x, out, noise, am, begin, end,
                                                        features, ps);
      case RoundingMode::RND_CONV:
        return slow_dispatch_mode<T, RoundingMode::RND_CONV>(mode, x, out, noise, am, begin, end,
                                                             features, ps);
      case RoundingMode::S_RND:
        return slow_dispatch_mode<T, RoundingMode::S_RND>(mode, x, out, noise, am, begin, end,
                                                          features, ps);
    }
  });
  if (absmax)
    for (int t = 0; t < nthreads; ++t)
      for (int64_t j = 0; j < features; ++j)
        absmax[j] = std::max(absmax[j], partial[static_cast<size_t>(t * features + j)]);
}

// Returns the three per-feature sums (s_in, s_up, s_low), each `features` long.
template <typename T>
std::vector<double> kernel_backward(const QuantPlan& p, const T* g, const T* x, const T* xh, T* dx,
                                    int64_t rows, bool need_params, bool relu) {
  const int64_t features = p.features;
  const bool clip = clips(p.s.overflow);
  const ParamArrays<T>& pa = arrays_of<T>(p);
  const size_t per = static_cast<size_t>(3 * features);
  // Fixed blocks of rows, each with its own partial sums, added in block order: the gradients do
  // not depend on the thread count or on which thread ran which block.
  const int64_t block = (grain_for(features) + kSumBlock - 1) / kSumBlock * kSumBlock;
  const int64_t nblocks = (rows + block - 1) / block;
  std::vector<double> part(need_params ? per * static_cast<size_t>(nblocks) : 0, 0.0);
  at::parallel_for(0, nblocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<T> acc(need_params ? per : 0);
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * block, end = std::min(rows, begin + block);
      double* s = need_params ? part.data() + per * static_cast<size_t>(b) : nullptr;
      double* s_in = s;
      double* s_up = s ? s + features : nullptr;
      double* s_low = s ? s + 2 * features : nullptr;
      if (clip && relu)
        fast_backward_rows<T, true, true>(g, x, xh, dx, s_in, s_up, s_low, begin, end, features, pa,
                                          need_params, acc);
      else if (clip)
        fast_backward_rows<T, true, false>(g, x, xh, dx, s_in, s_up, s_low, begin, end, features,
                                           pa, need_params, acc);
      else if (relu)
        fast_backward_rows<T, false, true>(g, x, xh, dx, s_in, s_up, s_low, begin, end, features,
                                           pa, need_params, acc);
      else
        fast_backward_rows<T, false, false>(g, x, xh, dx, s_in, s_up, s_low, begin, end, features,
                                            pa, need_params, acc);
    }
  });
  std::vector<double> sums(need_params ? per : 0, 0.0);
  for (int64_t b = 0; need_params && b < nblocks; ++b)
    for (size_t j = 0; j < per; ++j) sums[j] += part[per * static_cast<size_t>(b) + j];
  return sums;
}

// Sums per-element gradients into a parameter-shaped tensor through its broadcast map.
torch::Tensor reduce_to_param(const std::vector<double>& per_element,
                              const std::vector<int64_t>& map, const std::vector<int64_t>& shape,
                              const torch::TensorOptions& opts) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  std::vector<double> acc(static_cast<size_t>(n), 0.0);
  for (size_t j = 0; j < per_element.size(); ++j)
    acc[map.empty() ? j : static_cast<size_t>(map[j])] += per_element[j];
  return torch::from_blob(acc.data(), shape, torch::kDouble)
      .to(opts, /*non_blocking=*/false, /*copy=*/true);
}

// ---------------------------------------------------------------- generic ATen path
// R(y) in place; `x` is the value y was scaled from (see round_t).
torch::Tensor round_tensor_(torch::Tensor y, RoundingMode rm, const torch::Tensor& x) {
  switch (rm) {
    case RoundingMode::TRN: {
      auto under = (y == 0).logical_and_(x < 0).to(y.scalar_type());
      return y.floor_().sub_(under);
    }
    case RoundingMode::RND_CONV:
      return y.round_();
    default: {
      // floor(y + 1/2) exactly in float (see round_t): floor(y) + (y - floor(y) >= 1/2).
      auto fl = y.floor();
      return fl.add_(y.sub_(fl).ge_(0.5));
    }
  }
}

// The legacy double ATen ops: eval WRAP and training S_RND.
torch::Tensor legacy_forward(const QuantPlan& p, const torch::Tensor& x_in,
                             const torch::Tensor& noise, torch::Tensor* absmax) {
  const auto& s = p.s;
  auto x = x_in.to(torch::kDouble);
  auto kd = p.k, id = p.i, fd = p.f;
  auto two_i = torch::exp2(id);
  auto inv = torch::exp2(-fd);
  auto pruned = (kd + id + fd) <= 0;
  if (clips(s.overflow)) {
    auto hi = two_i - inv;
    auto lo = s.overflow == OverflowMode::SAT_SYM ? -kd * hi : -kd * two_i;
    x = torch::where(pruned, torch::zeros_like(x), torch::max(torch::min(x, hi), lo));
  }
  auto y = x * torch::exp2(fd.clamp(-kMaxAbsScaleBits, kMaxAbsScaleBits));
  torch::Tensor m;
  if (p.round == RoundingMode::S_RND)
    m = torch::floor(y + noise.to(torch::kDouble));
  else
    m = round_tensor_(y.clone(), p.round, x);
  m = torch::where(y.abs() < kTwo52, m, y);
  auto inv_s = torch::exp2(-fd.clamp(-kMaxAbsScaleBits, kMaxAbsScaleBits));
  if (absmax) {
    auto a = (m * inv_s).abs();
    *absmax = s.batch_axis ? std::get<0>(a.reshape({a.size(0), -1}).max(0)) : a.reshape({-1});
  }
  if (s.overflow == OverflowMode::WRAP && !s.training) {
    auto bits = id + fd;
    auto m_min = -kd * torch::exp2(bits);
    auto span = torch::exp2(kd + bits);
    // remainder(m, span) first: m - m_min could round for |m| >= 2^53.
    auto wrapped = m_min + torch::remainder(torch::remainder(m, span) - m_min, span);
    m = torch::where(pruned, m, wrapped);
  }
  auto out = torch::where(pruned, torch::zeros_like(m), m * inv_s);
  return out.to(x_in.scalar_type());
}

torch::Tensor absmax_over_batch(const torch::Tensor& r, bool batch_axis) {
  auto a = r.abs();
  if (!batch_axis) return a.reshape({-1});
  return std::get<0>(a.reshape({a.size(0), -1}).max(0));
}

torch::Tensor generic_forward(const QuantPlan& p, const torch::Tensor& x_in,
                              const torch::Tensor& noise, torch::Tensor* absmax) {
  if (p.legacy_aten) return legacy_forward(p, x_in, noise, absmax);
  auto x = x_in.to(p.compute);
  torch::Tensor r;
  if (clips(p.s.overflow)) {
    // Clip, scale, round, scale back; pruned elements are clipped to [0, 0].
    auto v = torch::clamp(x, p.lo, p.hi);
    r = round_tensor_(v * p.scale, p.round, v).mul_(p.inv);
  } else {
    auto m = round_tensor_(x * p.scale, p.round, x).mul_(p.inv);
    r = torch::where(x.abs() < p.limit, m, x);  // beyond the limit x is on the grid already
  }
  if (absmax) *absmax = absmax_over_batch(r, p.s.batch_axis);
  if (p.any_pruned && !clips(p.s.overflow))
    r = torch::where(p.keep, r, torch::zeros({}, r.options()));
  return r.to(x_in.scalar_type());
}

// Returns dx (when need_dx) and the per-element sums (s_in, s_up, s_low) reduced over the batch,
// as float64 tensors of the per-sample shape (when need_params).
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor> generic_backward(
    const QuantPlan& p, const torch::Tensor& g_in, const torch::Tensor& x_in,
    const torch::Tensor& xh_in, bool need_dx, bool need_params) {
  const auto ct = p.legacy_aten ? torch::kDouble : p.compute;
  auto g = g_in.to(ct), x = x_in.to(ct), xh = xh_in.to(ct);
  auto mhi = p.mask_hi.to(ct), mlo = p.mask_lo.to(ct);
  auto reduce = [&](const torch::Tensor& t) {
    auto d = t.to(torch::kDouble);
    return p.s.batch_axis ? d.sum(0) : d;
  };
  torch::Tensor dx, s_in, s_up, s_low;
  const auto zero = torch::zeros({}, g.options());
  if (!clips(p.s.overflow)) {
    if (need_dx) dx = p.any_pruned ? torch::where(p.keep, g, zero) : g;
    if (need_params) s_in = reduce((x - xh).mul_(g));
  } else {
    auto up = x > mhi, low = x < mlo;
    auto inside = (up | low).logical_not_();
    if (need_dx) dx = torch::where(p.any_pruned ? inside.logical_and(p.keep) : inside, g, zero);
    if (need_params) {
      s_in = reduce(torch::where(inside, (x - xh).mul_(g), zero));
      s_up = reduce(torch::where(up, g, zero));
      s_low = reduce(torch::where(low, g, zero));
    }
  }
  if (dx.defined()) dx = dx.to(g_in.scalar_type());
  return {dx, s_in, s_up, s_low};
}

std::vector<int64_t> sample_shape(const torch::Tensor& x, bool batch_axis) {
  auto sz = x.sizes().vec();
  if (batch_axis) {
    TORCH_CHECK(!sz.empty(), "fixed_quantize: input needs a batch axis, got a scalar");
    sz.erase(sz.begin());
  }
  return sz;
}

}  // namespace

QuantPlanPtr make_quant_plan(const torch::Tensor& k, const torch::Tensor& a, const torch::Tensor& c,
                             const QuantizeSettings& s, const torch::Tensor& x, bool reference) {
  auto p = std::make_shared<QuantPlan>();
  p->s = s;
  p->shape = sample_shape(x, s.batch_axis);
  p->dtype = x.scalar_type();
  p->device = x.device();
  for (const auto* t : {&k, &a, &c})
    TORCH_CHECK(at::is_expandable_to(t->sizes(), p->shape),
                "fixed_quantize: quantizer parameters of shape ", t->sizes(),
                " do not broadcast to the per-sample shape ", c10::IntArrayRef(p->shape));
  for (auto d : p->shape) p->features *= d;
  p->a_shape = a.sizes().vec();
  p->c_shape = c.sizes().vec();
  p->a_opts = a.options();
  p->c_opts = c.options();
  p->round = (s.round == RoundingMode::S_RND && !s.training) ? RoundingMode::RND : s.round;
  const bool slow_mode =
      (s.overflow == OverflowMode::WRAP && !s.training) || p->round == RoundingMode::S_RND;
  p->kernel = !reference && x.is_cpu() &&
              (x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble);
  if (p->kernel) {
    const auto kv = view_param(k, p->shape), av = view_param(a, p->shape),
               cv = view_param(c, p->shape);
    p->a_map = av.map;
    p->c_map = cv.map;
    p->ps = element_params(kv, av, cv, p->features, s.param, s.overflow);
    for (const auto& e : p->ps) p->any_pruned = p->any_pruned || e.pruned;
    p->fast = !slow_mode;
    p->eval_fast = !s.training && x.scalar_type() == torch::kFloat;
    // The fast forward loops and the backward loops (every mode) read these arrays.
    if (x.scalar_type() == torch::kFloat)
      p->f32.fill(p->ps);
    else
      p->f64.fill(p->ps);
    return p;
  }
  // ATen path: the same element parameters as tensors broadcastable to x, on x's device.
  torch::NoGradGuard no_grad;
  p->legacy_aten = slow_mode;
  p->compute = x.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat;
  auto [ke, ie, fe] = effective_kif(k, a, c, s.param);
  const auto dev = x.device();
  auto kd = ke.to(dev, torch::kDouble), id = ie.to(dev, torch::kDouble),
       fd = fe.to(dev, torch::kDouble);
  p->k = kd;
  p->i = id;
  p->f = fd;
  auto pruned = (kd + id + fd) <= 0;
  auto fs = fd.clamp(-kMaxAbsScaleBits, kMaxAbsScaleBits);
  auto two_i = torch::exp2(id);
  auto hi = two_i - torch::exp2(-fd);
  auto lo = s.overflow == OverflowMode::SAT_SYM ? -kd * hi : -kd * two_i;
  const double inf = std::numeric_limits<double>::infinity();
  const auto ct = p->compute;
  const double limit = ct == torch::kFloat ? 8388608.0 : kTwo52;
  auto zero = torch::zeros({}, kd.options());
  p->scale = torch::exp2(fs).to(ct);
  p->inv = torch::exp2(-fs).to(ct);
  p->hi = torch::where(pruned, zero, hi).to(ct);
  p->lo = torch::where(pruned, zero, lo).to(ct);
  p->limit = (torch::exp2(-fs) * limit).to(ct);
  p->keep = pruned.logical_not();
  p->mask_hi = torch::where(pruned, torch::full({}, inf, kd.options()), hi).to(ct);
  p->mask_lo = torch::where(pruned, torch::full({}, -inf, kd.options()), lo).to(ct);
  p->any_pruned = pruned.any().item<bool>();
  return p;
}

namespace {
// A plan serves inputs of the dtype, device and per-sample shape it was made for.
void check_plan(const QuantPlan& p, const torch::Tensor& x, const char* what) {
  TORCH_CHECK(x.scalar_type() == p.dtype && x.device() == p.device, what,
              ": the plan was made for ", p.dtype, " on ", p.device, ", got ", x.scalar_type(),
              " on ", x.device());
  const auto sz = x.sizes();
  const bool batch = p.s.batch_axis;
  TORCH_CHECK(
      sz.size() == p.shape.size() + (batch ? 1 : 0) && sz.slice(batch ? 1 : 0).equals(p.shape),
      what, ": the plan was made for per-sample shape ", c10::IntArrayRef(p.shape), ", got ", sz);
}
}  // namespace

bool records_calibration(const QuantPlan& p) {
  return p.kernel && p.eval_fast;
}

torch::Tensor quant_forward(const QuantPlan& p, const torch::Tensor& x, const torch::Tensor& absmax,
                            bool relu_input, QuantCalibration* calib) {
  check_plan(p, x, "quant_forward");
  if (calib) {
    TORCH_CHECK(records_calibration(p),
                "quant_forward: this plan does not record calibration "
                "(eval of float32 CPU inputs only)");
    TORCH_CHECK(!relu_input, "quant_forward: calibration with relu_input");
    auto xc = x.contiguous();
    auto xh = torch::empty_like(xc);
    const int64_t rows = p.features == 0 ? 0 : xc.numel() / p.features;
    auto opts = torch::TensorOptions().dtype(torch::kDouble);
    calib->min = torch::empty(p.shape, opts);
    calib->max = torch::empty(p.shape, opts);
    kernel_eval(p, xc.data_ptr<float>(), xh.data_ptr<float>(), rows, calib->min.data_ptr<double>(),
                calib->max.data_ptr<double>());
    return xh;
  }
  // The fast loops take max(x, 0) as they read x; every other path gets relu(x).
  if (relu_input && !(p.kernel && p.fast)) return quant_forward(p, torch::relu(x), absmax, false);
  torch::Tensor noise;
  if (p.round == RoundingMode::S_RND) noise = torch::rand_like(x);
  const bool want_absmax = absmax.defined() && absmax.numel() > 0;
  if (p.kernel) {
    auto xc = x.contiguous();
    auto xh = torch::empty_like(xc);
    const int64_t rows = p.features == 0 ? 0 : xc.numel() / p.features;
    double* am = want_absmax ? absmax.data_ptr<double>() : nullptr;
    AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "hgqt_quantize_forward", [&] {
      kernel_forward<scalar_t>(p, xc.data_ptr<scalar_t>(), xh.data_ptr<scalar_t>(),
                               noise.defined() ? noise.data_ptr<scalar_t>() : nullptr, am, rows,
                               relu_input);
    });
    return xh;
  }
  torch::Tensor am;
  auto xh = generic_forward(p, x, noise, want_absmax ? &am : nullptr);
  if (want_absmax) absmax.copy_(am.view(p.shape));
  return xh;
}

QuantGrads quant_backward(const QuantPlan& p, const torch::Tensor& g_in, const torch::Tensor& x,
                          const torch::Tensor& xh, bool need_dx, bool need_params,
                          bool relu_input) {
  check_plan(p, x, "quant_backward");
  TORCH_CHECK(g_in.sizes() == x.sizes() && xh.sizes() == x.sizes(), "quant_backward: gradient ",
              g_in.sizes(), ", input ", x.sizes(), " and output ", xh.sizes(), " differ in shape");
  if (relu_input && !p.kernel) {
    auto r = quant_backward(p, g_in, torch::relu(x), xh, need_dx, need_params, false);
    if (r.dx.defined()) r.dx = at::threshold_backward(r.dx, x, 0);
    return r;
  }
  QuantGrads out;
  std::vector<double> s_in, s_up, s_low;
  const size_t nf = static_cast<size_t>(p.features);
  if (p.kernel) {
    auto g = g_in.to(x.scalar_type()).contiguous();
    auto xc = x.contiguous(), hc = xh.contiguous();
    if (need_dx) out.dx = torch::empty_like(xc);
    const int64_t rows = p.features == 0 ? 0 : xc.numel() / p.features;
    std::vector<double> sums;
    AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "hgqt_quantize_backward", [&] {
      sums = kernel_backward<scalar_t>(
          p, g.data_ptr<scalar_t>(), xc.data_ptr<scalar_t>(), hc.data_ptr<scalar_t>(),
          need_dx ? out.dx.data_ptr<scalar_t>() : nullptr, rows, need_params, relu_input);
    });
    if (!need_params) return out;
    s_in.assign(sums.begin(), sums.begin() + static_cast<int64_t>(nf));
    s_up.assign(sums.begin() + static_cast<int64_t>(nf),
                sums.begin() + 2 * static_cast<int64_t>(nf));
    s_low.assign(sums.begin() + 2 * static_cast<int64_t>(nf), sums.end());
  } else {
    auto [dx, t_in, t_up, t_low] = generic_backward(p, g_in, x, xh, need_dx, need_params);
    out.dx = dx;
    if (!need_params) return out;
    // Combine the sums with the per-element factors in ATen (device-agnostic).
    auto kd = p.k, id = p.i, fd = p.f;
    auto pruned = (kd + id + fd) <= 0;
    auto df = kLn2 * t_in;
    auto di = torch::zeros_like(df);
    if (clips(p.s.overflow)) {
      auto inv = torch::exp2(-fd), two_i = torch::exp2(id);
      auto zero = torch::zeros({}, df.options());
      df = df + torch::where(pruned, zero, kLn2 * inv * t_up);
      di = torch::where(pruned, zero, kLn2 * two_i * t_up - kd * kLn2 * two_i * t_low);
      if (p.s.overflow == OverflowMode::SAT_SYM)
        df = df - torch::where(pruned, zero, kd * kLn2 * inv * t_low);
    }
    torch::Tensor da, dc;
    if (p.s.param == Parameterization::KIF) {
      da = di;
      dc = df;
    } else {
      da = df;
      dc = di - df;
    }
    // Summed over shared elements in float64, then cast to the parameters' dtype.
    out.da = at::sum_to(da.expand(p.shape), p.a_shape).to(p.a_opts);
    out.dc = at::sum_to(dc.expand(p.shape), p.c_shape).to(p.c_opts);
    return out;
  }
  std::vector<double> di(nf), df(nf);
  for (size_t j = 0; j < nf; ++j)
    finish_element_grads(p.ps[j], p.s.overflow, s_in[j], s_up[j], s_low[j], di[j], df[j]);
  // KIF: (a, c) = (i, f). KBI: (a, c) = (b, i), f = b - i: d/db = df, d/di = di - df.
  if (p.s.param == Parameterization::KIF) {
    out.da = reduce_to_param(di, p.a_map, p.a_shape, p.a_opts);
    out.dc = reduce_to_param(df, p.c_map, p.c_shape, p.c_opts);
  } else {
    std::vector<double> dic(nf);
    for (size_t j = 0; j < nf; ++j) dic[j] = di[j] - df[j];
    out.da = reduce_to_param(df, p.a_map, p.a_shape, p.a_opts);
    out.dc = reduce_to_param(dic, p.c_map, p.c_shape, p.c_opts);
  }
  return out;
}

namespace {

// ---------------------------------------------------------------- autograd function
struct PlanHolder : torch::CustomClassHolder {
  explicit PlanHolder(QuantPlanPtr p) : plan(std::move(p)) {}
  QuantPlanPtr plan;
};

struct QuantizeFunction : public torch::autograd::Function<QuantizeFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x,
                               torch::Tensor k, torch::Tensor a, torch::Tensor c, int64_t param,
                               int64_t round, int64_t overflow, bool training, bool batch_axis,
                               bool reference, torch::Tensor absmax_out) {
    QuantizeSettings s{static_cast<Parameterization>(param), static_cast<RoundingMode>(round),
                       static_cast<OverflowMode>(overflow), training, batch_axis};
    auto plan = make_quant_plan(k, a, c, s, x, reference);
    auto xh = quant_forward(*plan, x, absmax_out);
    // The plan holds the parameters this pass used (tracking rewrites i before backward).
    ctx->save_for_backward({x, xh});
    ctx->saved_data["plan"] = c10::IValue::make_capsule(c10::make_intrusive<PlanHolder>(plan));
    return xh;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    auto holder =
        c10::static_intrusive_pointer_cast<PlanHolder>(ctx->saved_data["plan"].toCapsule());
    const bool need_params = ctx->needs_input_grad(2) || ctx->needs_input_grad(3);
    auto r = quant_backward(*holder->plan, grads[0], saved[0], saved[1], ctx->needs_input_grad(0),
                            need_params);
    return {r.dx,
            torch::Tensor(),
            r.da,
            r.dc,
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor(),
            torch::Tensor()};
  }
};

torch::Tensor apply_quantize(const torch::Tensor& x, const torch::Tensor& k, const torch::Tensor& a,
                             const torch::Tensor& c, const QuantizeSettings& s,
                             torch::Tensor* absmax, bool reference) {
  // LibTorch 1.13 rejects undefined tensors as Function inputs: an empty one means "not asked".
  torch::Tensor am_out = torch::empty({0}, x.options().dtype(torch::kDouble));
  if (absmax)
    am_out = torch::zeros(sample_shape(x, s.batch_axis), x.options().dtype(torch::kDouble));
  auto out = QuantizeFunction::apply(
      x, k, a, c, static_cast<int64_t>(s.param), static_cast<int64_t>(s.round),
      static_cast<int64_t>(s.overflow), s.training, s.batch_axis, reference, am_out);
  if (absmax) *absmax = am_out;
  return out;
}

}  // namespace

std::vector<int64_t> broadcast_index(c10::IntArrayRef param, c10::IntArrayRef full) {
  return broadcast_map(param, full);
}

bool force_reference_path() {
  return g_force_reference.load();
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> effective_kif(const torch::Tensor& k,
                                                                      const torch::Tensor& a,
                                                                      const torch::Tensor& c,
                                                                      Parameterization param) {
  torch::NoGradGuard no_grad;
  torch::Tensor i, f;
  if (param == Parameterization::KIF) {
    i = torch::round(a).clamp(-kMaxAbsIntegerBits, kMaxAbsIntegerBits);
    f = torch::min(torch::round(c), kMaxMagnitudeBits - i);
  } else {
    auto b = torch::round(a).clamp(0, kMaxMagnitudeBits);
    i = torch::round(c).clamp(-kMaxAbsIntegerBits, kMaxAbsIntegerBits);
    f = b - i;
  }
  auto kk = torch::round(k).clamp(0, 1).to(i.scalar_type());
  auto shape = at::infer_size(at::infer_size(kk.sizes(), i.sizes()), f.sizes());
  return {kk.expand(shape), i.expand(shape), f.expand(shape)};
}

torch::Tensor fixed_quantize(const torch::Tensor& x, const torch::Tensor& k, const torch::Tensor& a,
                             const torch::Tensor& c, const QuantizeSettings& settings,
                             torch::Tensor* absmax) {
  return apply_quantize(x, k, a, c, settings, absmax, g_force_reference.load());
}

torch::Tensor fixed_quantize_reference(const torch::Tensor& x, const torch::Tensor& k,
                                       const torch::Tensor& a, const torch::Tensor& c,
                                       const QuantizeSettings& settings, torch::Tensor* absmax) {
  return apply_quantize(x, k, a, c, settings, absmax, true);
}

void set_force_reference_path(bool force) {
  g_force_reference.store(force);
}

void update_integer_bits(torch::Tensor& i, const torch::Tensor& k, const torch::Tensor& a,
                         const torch::Tensor& c, Parameterization param,
                         const torch::Tensor& absmax, double decay, double i_min, double i_max) {
  torch::NoGradGuard no_grad;
  const auto shape = absmax.sizes().vec();
  if (i.is_cpu() && i.scalar_type() == torch::kFloat && i.is_contiguous() &&
      !g_force_reference.load()) {
    int64_t features = absmax.numel();
    const auto kv = view_param(k, shape), av = view_param(a, shape), cv = view_param(c, shape);
    const auto ps = element_params(kv, av, cv, features, param, OverflowMode::WRAP);
    const auto imap = broadcast_map(i.sizes(), shape);
    auto am = absmax.to(torch::kDouble).contiguous();
    const double* amp = am.data_ptr<double>();
    std::vector<double> needed(static_cast<size_t>(i.numel()),
                               -std::numeric_limits<double>::infinity());
    for (int64_t j = 0; j < features; ++j) {
      const size_t p =
          imap.empty() ? static_cast<size_t>(j) : static_cast<size_t>(imap[static_cast<size_t>(j)]);
      needed[p] = std::max(needed[p],
                           std::ceil(std::log2(amp[j] + exp2_int(-ps[static_cast<size_t>(j)].f))));
    }
    float* ip = i.data_ptr<float>();
    for (size_t p = 0; p < needed.size(); ++p)
      ip[p] =
          static_cast<float>(std::min(i_max, std::max(i_min, std::max(ip[p] - decay, needed[p]))));
    return;
  }
  // Generic path: the same rule with ATen ops.
  auto am = absmax;
  for (int64_t d = 0; d < am.dim(); ++d)
    if (i.size(d) == 1 && am.size(d) != 1) am = std::get<0>(am.max(d, true));
  auto f_grouped = std::get<2>(effective_kif(k, a, c, param)).to(torch::kDouble);
  auto needed = torch::ceil(torch::log2(am.to(f_grouped.device()) + torch::exp2(-f_grouped)));
  for (int64_t d = 0; d < needed.dim(); ++d)
    if (i.size(d) == 1 && needed.size(d) != 1) needed = std::get<0>(needed.max(d, true));
  auto updated = torch::max(i.to(torch::kDouble) - decay, needed);
  i.copy_(updated.clamp(i_min, i_max).to(i.scalar_type()));
}

}  // namespace hgqt::quant
