// The batched path of archive::Emulator: blocks of samples, layer by layer, in exact double /
// float arithmetic where the inferred types prove it exact (see emulator_batch.h), blocks in
// parallel with OpenMP.
//
// Why the double arithmetic is exact (quantization.md section 2 on values held as doubles):
// - a stored value is m * 2^-frac with |m| < 2^53 and |frac| <= kMaxFrac: an exact double;
// - a quantizer computes y = x * 2^f, a power-of-two scaling (exact). Where the types prove
//   |y| < 2^52 and a source mantissa |m| < 2^52 (raw model inputs: checked element by element),
//   floor and rint (rint52, floor52) are exact, and so is RND's floor(y + 0.5): y = m * 2^-s, and
//   for s <= 53 y + 0.5 = (m + 2^(s-1)) 2^-s is exact, for s > 53 |y| < 1/4 and y + 0.5 rounds
//   inside (1/4, 3/4), floor 0 either way (for raw inputs the rounded fl(y + 0.5) is itself the
//   definition, quant::round_fixed). The overflow steps stay below 2^53 (overflow_to);
// - a linear layer's partial sums are multiples of 2^-af no larger than its bound S (emulator.h):
//   exact in float32 below 2^24 and in float64 below 2^53, in whatever order BLAS adds them;
//   pool and add sums likewise below 2^53.
#include "emulator_batch.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <exception>
#include <limits>
#include <sstream>

#include "hgqt/util/simd.h"

namespace hgqt::archive {

using quant::OverflowMode;
using quant::RoundingMode;
using Kind = BatchLayer::Kind;

namespace {
constexpr double k2p52 = 4503599627370496.0;  // 2^52
/// Fractional bits of a stored value: values stay far inside double's exponent range.
constexpr int kMaxFrac = 400;
/// Raw inputs smaller than this (and nonzero) go through quantize_double: x * 2^f stays normal.
constexpr double kTinyInput = 0x1p-900;

// rint for |y| <= 2^52 (round half to even): adding 2^52 leaves no fractional bits.
inline double rint52(double y) {
  const double c = std::copysign(k2p52, y);
  return (y + c) - c;
}
// r - [y < r] without a comparison (GCC does not vectorize a conditional subtraction):
// copysign(1, y - r) is -1 exactly when y < r, once y + 0 has turned -0 into +0 (r is never -0,
// so y - r is -0 for no y).
inline double floor52(double y) {
  y += 0.0;
  const double r = rint52(y);
  return r - 0.5 * (1.0 - std::copysign(1.0, y - r));
}

template <RoundingMode R>
inline double round_to(double y) {
  if constexpr (R == RoundingMode::TRN)
    return floor52(y);
  else if constexpr (R == RoundingMode::RND_CONV)
    return rint52(y);
  else
    return floor52(y + 0.5);  // RND, and S_RND in eval (quant::round_fixed)
}

// Overflow of an integer m with |m| <= 2^52 (W <= 52: lo in [-2^51, 0], hi in [0, 2^52)). The
// clamp max(m, lo) = ((m + lo) + |m - lo|) / 2, then min likewise: every intermediate is an
// integer of magnitude at most 2^53, so exact; without ordered comparisons GCC vectorizes it.
// The wrap's m - m_min stays below 2^53 and its quotient below 2^52.
template <OverflowMode O>
inline double overflow_to(double m, double lo, double hi, double span, double inv_span) {
  if constexpr (O == OverflowMode::WRAP) {
    return m - span * floor52((m - lo) * inv_span);
  } else {
    const double a = 0.5 * ((m + lo) + std::fabs(m - lo));
    return 0.5 * ((a + hi) - std::fabs(a - hi));
  }
}

// Whether a raw input x (scaled: t = x 2^f) lies inside the double kernel's proof: finite,
// |t| < 2^52 and x zero or not tiny. 1 or 0; quiet comparisons (std::isless) keep the kernel's
// loop vectorizable.
inline double raw_ok(double x, double t) {
  const double a = std::fabs(x);
  const double tiny = std::isless(a, kTinyInput) ? a : 0.0;  // nonzero only for tiny x
  return std::isless(std::fabs(t), k2p52) ? (tiny == 0.0 ? 1.0 : 0.0) : 0.0;
}

// The double kernel of one row. Raw: elements outside its proof are counted in `bad` (their
// outputs and clips are left to RowQuantizer::apply).
template <RoundingMode R, OverflowMode O, bool Raw>
HGQT_VECTOR_CLONES int64_t quantize_row(const RowQuantizer& q, const double* x, double* y,
                                        int64_t* bad) {
  const int64_t n = q.size;
  const double *sc = q.scale.data(), *un = q.unscale.data(), *lo = q.lo.data(), *hi = q.hi.data();
  const double *sp = q.span.data(), *isp = q.inv_span.data();
  double clipped = 0, nbad = 0;  // counts in double (exact below 2^53): the loop vectorizes
#pragma omp simd reduction(+ : clipped, nbad)
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i];
    const double t = v * sc[i];
    const double m = round_to<R>(t);
    const double o = overflow_to<O>(m, lo[i], hi[i], sp[i], isp[i]);
    y[i] = o * un[i];
    if constexpr (Raw) {
      const double ok = raw_ok(v, t);
      nbad += 1.0 - ok;
      clipped += o != m ? ok : 0.0;
    } else {
      clipped += o != m ? 1.0 : 0.0;
    }
  }
  if (bad) *bad = static_cast<int64_t>(nbad);
  return static_cast<int64_t>(clipped);
}

template <RoundingMode R, bool Raw>
RowQuantizer::Kernel kernel_for(OverflowMode o) {
  switch (o) {
    case OverflowMode::WRAP:
      return &quantize_row<R, OverflowMode::WRAP, Raw>;
    case OverflowMode::SAT:
      return &quantize_row<R, OverflowMode::SAT, Raw>;
    case OverflowMode::SAT_SYM:
      return &quantize_row<R, OverflowMode::SAT_SYM, Raw>;
  }
  return nullptr;
}

template <bool Raw>
RowQuantizer::Kernel kernel_for(RoundingMode r, OverflowMode o) {
  switch (r) {
    case RoundingMode::TRN:
      return kernel_for<RoundingMode::TRN, Raw>(o);
    case RoundingMode::RND_CONV:
      return kernel_for<RoundingMode::RND_CONV, Raw>(o);
    case RoundingMode::RND:
    case RoundingMode::S_RND:
      return kernel_for<RoundingMode::RND, Raw>(o);
  }
  return nullptr;
}

// The values a quantizer reads: the float model input, or fixed-point values of known types and
// mantissa ranges.
struct Source {
  bool raw = true;
  const std::vector<FixedType>* types = nullptr;
  const std::vector<int128>* lo = nullptr;
  const std::vector<int128>* hi = nullptr;
};

int128 abs_max(int128 lo, int128 hi) {
  return std::max(lo < 0 ? -lo : lo, hi < 0 ? -hi : hi);
}

// The quantizer `q` on `src`; nullopt when an output is wider than a double holds.
std::optional<RowQuantizer> make_quantizer(const QuantSpec& q, const Source& src) {
  RowQuantizer r;
  r.spec = q;
  r.size = q.size();
  r.raw = src.raw;
  r.fast = true;
  const size_t n = static_cast<size_t>(r.size);
  for (auto* v : {&r.scale, &r.unscale, &r.lo, &r.hi, &r.span, &r.inv_span, &r.to_source})
    v->assign(n, 0.0);
  r.source_frac.assign(n, 0);
  for (size_t e = 0; e < n; ++e) {
    const int w = q.width(static_cast<int64_t>(e)), f = q.f[e], k = q.k[e];
    if (!src.raw) {
      const FixedType& st = (*src.types)[e];
      r.source_frac[e] = st.frac;
      r.to_source[e] = st.width == 0 ? 0.0 : std::ldexp(1.0, st.frac);
    }
    if (w <= 0) {  // pruned: 0, never clipped
      r.span[e] = r.inv_span[e] = 1.0;
      continue;
    }
    if (w > 53 || std::abs(f) > kMaxFrac) return std::nullopt;
    if (w > 52) r.fast = false;
    const double m_max = std::ldexp(1.0, w - k) - 1.0;  // exact: w - k <= 52
    const double m_min = k ? -std::ldexp(1.0, w - k) : 0.0;
    r.lo[e] = q.overflow == OverflowMode::SAT_SYM ? -k * m_max : m_min;
    r.hi[e] = m_max;
    r.span[e] = std::ldexp(1.0, w);
    r.inv_span[e] = std::ldexp(1.0, -w);
    r.scale[e] = std::ldexp(1.0, f);
    r.unscale[e] = std::ldexp(1.0, -f);
    if (!src.raw) {
      const FixedType& st = (*src.types)[e];
      if (st.width == 0) continue;  // the value 0
      const int128 b = abs_max((*src.lo)[e], (*src.hi)[e]);
      if (b >= (int128{1} << 52) || std::abs(st.frac) > kMaxFrac ||
          std::ldexp(static_cast<double>(b), f - st.frac) >= k2p52)
        r.fast = false;
    }
  }
  r.kernel = r.raw ? kernel_for<true>(q.round, q.overflow) : kernel_for<false>(q.round, q.overflow);
  return r;
}

int64_t to_int(double v) {
  return static_cast<int64_t>(v);
}

// log2 of a bound for messages.
double log2_of(int128 v) {
  return v <= 0 ? -INFINITY : std::log2(static_cast<double>(v));
}

// a + b and a * 2^s saturating at kInf (the bounds only need to be compared with 2^53).
constexpr int128 kInf = int128{1} << 120;
int128 sat_add(int128 a, int128 b) {
  return std::min(a + b, kInf);
}
int128 sat_shift(int128 a, int s) {
  if (a == 0) return 0;
  if (s < 0 || s >= 120 || a >= (kInf >> s)) return kInf;  // s < 0: never (fracs are maxima)
  return a << s;
}
int128 sat_mul(int128 a, int128 b) {
  if (a == 0 || b == 0) return 0;
  if (a >= kInf / b) return kInf;
  return a * b;
}
}  // namespace

int64_t RowQuantizer::apply(const double* in, int64_t in_stride, double* out, int64_t out_stride,
                            int64_t rows) const {
  int64_t clipped = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const double* x = in + r * in_stride;
    double* y = out + r * out_stride;
    if (fast) {
      int64_t bad = 0;
      clipped += kernel(*this, x, y, &bad);
      if (bad == 0) continue;
      for (int64_t e = 0; e < size; ++e) {  // raw elements outside the kernel's proof
        if (raw_ok(x[e], x[e] * scale[e]) != 0.0) continue;
        bool c = false;
        y[e] = static_cast<double>(static_cast<int64_t>(quantize_double(x[e], spec, e, &c))) *
               unscale[e];
        clipped += c;
      }
      continue;
    }
    for (int64_t e = 0; e < size; ++e) {
      bool c = false;
      const int128 m =
          raw ? quantize_double(x[e], spec, e, &c)
              : quantize_exact(to_int(x[e] * to_source[e]), source_frac[e], spec, e, &c);
      y[e] = static_cast<double>(static_cast<int64_t>(m)) * unscale[e];
      clipped += c;
    }
  }
  return clipped;
}

// ------------------------------------------------------------------------------------ plan
namespace {

// The shared-weight structure of a linear map with F filters (see BatchLayer); false when the
// map does not have it.
bool shared_weights(const LinearMap& m, int64_t n_in, BatchLayer& b) {
  const int64_t F = b.F, K = b.K, n_out = m.n_out();
  if (F <= 0 || K <= 0 || n_out % F != 0) return false;
  b.P = n_out / F;
  b.run_begin.assign(1, 0);
  b.runs.clear();
  std::vector<int64_t> seen(K, -1);
  for (int64_t p = 0; p < b.P; ++p) {
    const int64_t o0 = p * F, t0 = m.begin[o0], count = m.begin[o0 + 1] - t0;
    for (int64_t t = 0; t < count; ++t) {
      const int64_t wn = m.weight[t0 + t];
      if (wn % F != 0 || wn / F >= K || seen[wn / F] == p) return false;
      seen[wn / F] = p;
      if (m.input[t0 + t] < 0 || m.input[t0 + t] >= n_in) return false;
    }
    for (int64_t f = 1; f < F; ++f) {
      const int64_t tf = m.begin[o0 + f];
      if (m.begin[o0 + f + 1] - tf != count) return false;
      for (int64_t t = 0; t < count; ++t)
        if (m.input[tf + t] != m.input[t0 + t] || m.weight[tf + t] != m.weight[t0 + t] + f)
          return false;
    }
    for (int64_t t = 0; t < count; ++t) {
      const int64_t row = m.weight[t0 + t] / F, in = m.input[t0 + t];
      GatherRun* last =
          b.runs.size() > static_cast<size_t>(b.run_begin.back()) ? &b.runs.back() : nullptr;
      if (last && last->row + last->length == row && last->input + last->length == in)
        ++last->length;
      else
        b.runs.push_back({row, in, 1});
    }
    b.run_begin.push_back(static_cast<int64_t>(b.runs.size()));
  }
  b.identity = b.P == 1 && b.runs.size() == 1 && b.runs[0].row == 0 && b.runs[0].input == 0 &&
               b.runs[0].length == K && K == n_in;
  return true;
}

void plan_linear(const Emulator& e, size_t li, const Source& in_src, BatchLayer& b) {
  const Layer& l = e.archive().layers[li];
  const LayerTypes& t = e.types()[li];
  const LinearMap m = linear_map(l);
  const Constant& w = *l.kernel;
  b.n_out = m.n_out();
  if (l.input_quantizer) {
    b.in_q = make_quantizer(*l.input_quantizer, in_src);
    if (!b.in_q) {
      b.why_exact = "an input quantizer wider than 53 bits";
      return;
    }
  }
  b.relu = l.activation == "relu";
  // The quantized input's mantissa ranges.
  const size_t n_in = t.quantized_input.size();
  b.n_in = static_cast<int64_t>(n_in);
  std::vector<int128> x_abs(n_in, 0);
  bool f32_ok = true, f64_ok = true;
  for (size_t j = 0; j < n_in; ++j) {
    const FixedType& qt = t.quantized_input[j];
    if (qt.width == 0) continue;
    x_abs[j] = l.input_quantizer ? abs_max(qt.min_mantissa(), qt.max_mantissa())
                                 : abs_max((*in_src.lo)[j], (*in_src.hi)[j]);
    if (qt.frac < -60 || qt.frac > 100) f32_ok = false;
    if (std::abs(qt.frac) > kMaxFrac) f64_ok = false;
  }
  for (int32_t ex : w.exponent) {
    if (ex < -100 || ex > 60) f32_ok = false;
    if (std::abs(ex) > kMaxFrac) f64_ok = false;
  }
  if (l.bias)
    for (int32_t ex : l.bias->exponent)
      if (std::abs(ex) > kMaxFrac) f64_ok = false;
  // The bound S of every output.
  int128 bound = 0;
  for (int64_t o = 0; o < m.n_out(); ++o) {
    const int af = t.accumulator[o].frac;
    if (af < -100 || af > 120) f32_ok = false;
    if (af < -kMaxFrac || af > 2 * kMaxFrac) f64_ok = false;
    int128 s = 0;
    for (int64_t k = m.begin[o]; k < m.begin[o + 1]; ++k) {
      const int64_t j = m.input[k], wn = m.weight[k];
      if (x_abs[j] == 0 || w.mantissa[wn] == 0) continue;
      const int128 wm = w.mantissa[wn] < 0 ? -int128{w.mantissa[wn]} : int128{w.mantissa[wn]};
      s = sat_add(
          s, sat_shift(sat_mul(x_abs[j], wm), af - (t.quantized_input[j].frac - w.exponent[wn])));
    }
    const int64_t bn = m.bias[o];
    if (bn >= 0 && l.bias->mantissa[bn] != 0) {
      const int64_t bm = l.bias->mantissa[bn];
      s = sat_add(s, sat_shift(bm < 0 ? -int128{bm} : int128{bm}, af + l.bias->exponent[bn]));
    }
    bound = std::max(bound, s);
  }
  b.bound_log2 = log2_of(bound);
  if (f32_ok && bound < (int128{1} << 24))
    b.precision = LinearPrecision::Float32;
  else if (f64_ok && bound < (int128{1} << 53))
    b.precision = LinearPrecision::Float64;
  else {
    b.precision = LinearPrecision::Int128;
    b.why_exact =
        "int128 sums (bound 2^" + std::to_string(static_cast<int>(std::ceil(b.bound_log2))) + ")";
    return;
  }
  b.kind = Kind::Linear;
  b.bias.assign(b.n_out, 0.0);
  for (int64_t o = 0; o < m.n_out(); ++o)
    if (m.bias[o] >= 0) b.bias[o] = l.bias->value(m.bias[o]);
  // Products whose input is the constant 0 (pruned) contribute 0 in any case.
  b.F = w.shape.empty() ? 0 : w.shape.back();
  b.K = b.F > 0 ? w.size() / b.F : 0;
  b.gemm = b.F > 0 && b.K * b.F == w.size() && shared_weights(m, b.n_in, b);
  if (b.gemm) {
    if (b.precision == LinearPrecision::Float32) {
      b.w32.resize(w.size());
      for (int64_t n = 0; n < w.size(); ++n) b.w32[n] = static_cast<float>(w.value(n));
    } else {
      b.w64.resize(w.size());
      for (int64_t n = 0; n < w.size(); ++n) b.w64[n] = w.value(n);
    }
  } else {
    b.precision = LinearPrecision::Float64;  // the sparse sums run in double
    b.identity = false;
    b.term_w.resize(m.weight.size());
    for (size_t k = 0; k < m.weight.size(); ++k) b.term_w[k] = w.value(m.weight[k]);
  }
  if (l.output_quantizer) {
    const Source acc{false, &t.accumulator, &t.acc_lo, &t.acc_hi};
    b.out_q = make_quantizer(*l.output_quantizer, acc);
    if (!b.out_q) {
      b.kind = Kind::Exact;
      b.why_exact = "an output quantizer wider than 53 bits";
    }
  }
}

}  // namespace

std::shared_ptr<const BatchPlan> BatchPlan::build(const Emulator& e) {
  const Archive& a = e.archive();
  const auto& types = e.types();
  const size_t L = a.layers.size();
  auto plan = std::make_shared<BatchPlan>();
  // Every value a block stores must be an exact double.
  for (size_t li = 0; li < L; ++li) {
    if (e.plans_[li].float_output) continue;
    for (const FixedType& ty : types[li].output)
      if (ty.width > 53 || (ty.width > 0 && std::abs(ty.frac) > kMaxFrac)) return nullptr;
  }
  plan->layers.resize(L);
  plan->storage.resize(L);
  for (size_t li = 0; li < L; ++li) {
    const Layer& l = a.layers[li];
    const LayerTypes& t = types[li];
    const auto& p = e.plans_[li];
    BatchLayer& b = plan->layers[li];
    const int64_t src = p.inputs[0];
    const bool raw = src < 0 || e.plans_[src].float_output;
    const Source in_src =
        raw ? Source{} : Source{false, &types[src].output, &types[src].out_lo, &types[src].out_hi};
    b.n_in = static_cast<int64_t>(t.input.size());
    b.n_out = static_cast<int64_t>(t.output.size());
    if (raw) b.n_in = a.input_size();
    plan->storage[li] = static_cast<int64_t>(li);
    b.kind = Kind::Exact;
    switch (l.kind) {
      case LayerKind::Flatten:
      case LayerKind::Reshape: {
        b.kind = Kind::Alias;
        plan->storage[li] = src < 0 ? -1 : plan->storage[src];
        break;
      }
      case LayerKind::Quantize: {
        b.in_q = make_quantizer(*l.input_quantizer, in_src);
        if (b.in_q)
          b.kind = Kind::Quantize;
        else
          b.why_exact = "a quantizer wider than 53 bits";
        break;
      }
      case LayerKind::Activation: {
        b.relu = l.activation == "relu";
        b.out_q = make_quantizer(*l.output_quantizer, in_src);
        if (b.out_q)
          b.kind = Kind::Activation;
        else
          b.why_exact = "a quantizer wider than 53 bits";
        break;
      }
      case LayerKind::Lut: {
        b.in_q = make_quantizer(*l.input_quantizer, in_src);
        if (b.in_q) {
          b.kind = Kind::Lut;
          const size_t n = t.quantized_input.size();
          b.lut_in_scale.resize(n);
          b.lut_min.resize(n);
          b.lut_out_unscale.resize(n);
          b.lut_offset = p.lut_offsets;
          for (size_t j = 0; j < n; ++j) {
            const FixedType& qt = t.quantized_input[j];
            b.lut_in_scale[j] = qt.width == 0 ? 0.0 : std::ldexp(1.0, qt.frac);
            b.lut_min[j] = static_cast<double>(static_cast<int64_t>(qt.min_mantissa()));
            b.lut_out_unscale[j] =
                t.output[j].width == 0 ? 0.0 : std::ldexp(1.0, -t.output[j].frac);
          }
          b.table.assign(l.table.begin(), l.table.end());
        } else {
          b.why_exact = "a quantizer wider than 53 bits";
        }
        break;
      }
      case LayerKind::Softmax: {
        b.why_exact = "table-based rows (exact path)";
        break;
      }
      case LayerKind::Einsum: {
        b.why_exact = "products of two activations (exact path)";
        break;
      }
      case LayerKind::Concatenate: {
        b.kind = Kind::Concat;
        break;
      }
      case LayerKind::Pool: {
        const PoolMap& m = p.pool;
        b.pool_max = m.max;
        b.pool_scale = m.max ? 1.0 : std::ldexp(static_cast<double>(m.mult), -m.shift);
        // avg: the exact sum, and the sum times the scale's mantissa, must stay below 2^53 at
        // the sum's frac.
        bool exact_sum = true;
        if (!m.max)
          for (int64_t o = 0; o < m.n_out() && exact_sum; ++o) {
            const int frac = t.accumulator[o].frac - m.shift;
            int128 s = 0;
            for (int64_t k = m.begin[o]; k < m.begin[o + 1]; ++k) {
              const int64_t j = m.input[k];
              if (t.input[j].width == 0) continue;
              s = sat_add(s, sat_shift(abs_max(types[src].out_lo[j], types[src].out_hi[j]),
                                       frac - t.input[j].frac));
            }
            exact_sum = s < (int128{1} << 53) && s * m.mult < (int128{1} << 53);
          }
        if (exact_sum) {
          b.kind = Kind::Pool;
          // Channels-last windows: output pos * C + c reads input positions (window) * C + c.
          const int64_t C = l.input_shape.back();
          bool by_channel = C > 0 && m.n_out() % C == 0;
          b.window_begin.assign(1, 0);
          b.window.clear();
          for (int64_t pos = 0; by_channel && pos < m.n_out() / C; ++pos) {
            const int64_t o0 = pos * C, t0 = m.begin[o0], count = m.begin[o0 + 1] - t0;
            for (int64_t c = 0; c < C && by_channel; ++c) {
              const int64_t tc = m.begin[o0 + c];
              if (m.begin[o0 + c + 1] - tc != count) by_channel = false;
              for (int64_t k = 0; k < count && by_channel; ++k)
                if (m.input[tc + k] != m.input[t0 + k] + c || m.input[t0 + k] % C != 0)
                  by_channel = false;
            }
            for (int64_t k = 0; k < count; ++k) b.window.push_back(m.input[t0 + k] / C);
            b.window_begin.push_back(static_cast<int64_t>(b.window.size()));
          }
          b.pool_channels = by_channel;
          b.channels = C;
          if (!by_channel) {
            b.window_begin = m.begin;
            b.window = m.input;
          }
        } else {
          b.why_exact = "an average whose sum (times the scale's mantissa) may exceed 2^53";
        }
        break;
      }
      case LayerKind::Add: {
        bool exact_sum = true;
        for (size_t o = 0; o < t.accumulator.size() && exact_sum; ++o) {
          int128 s = 0;
          for (size_t slot = 0; slot < p.inputs.size(); ++slot) {
            const int64_t in = p.inputs[slot], j = p.add.element[slot][o];
            const FixedType& ty = types[in].output[j];
            if (ty.width == 0) continue;
            s = sat_add(s, sat_shift(abs_max(types[in].out_lo[j], types[in].out_hi[j]),
                                     t.accumulator[o].frac - ty.frac));
          }
          exact_sum = s < (int128{1} << 53);
        }
        b.relu = l.activation == "relu";
        if (!exact_sum) {
          b.why_exact = "a sum that may exceed 2^53";
        } else if (l.output_quantizer) {
          b.out_q = make_quantizer(*l.output_quantizer,
                                   Source{false, &t.accumulator, &t.acc_lo, &t.acc_hi});
          if (b.out_q)
            b.kind = Kind::Add;
          else
            b.why_exact = "a quantizer wider than 53 bits";
        } else {
          b.kind = Kind::Add;
        }
        break;
      }
      case LayerKind::Dense:
      case LayerKind::Conv1d:
      case LayerKind::Conv2d:
      case LayerKind::Scale:
      case LayerKind::EinsumDense: {
        b.linear = true;
        plan_linear(e, li, in_src, b);
        if (raw) b.n_in = a.input_size();
        break;
      }
    }
    if (b.kind == Kind::Exact) {
      b.in_q.reset();
      b.out_q.reset();
      b.from_mantissa.resize(t.output.size());
      for (size_t o = 0; o < t.output.size(); ++o)
        b.from_mantissa[o] = t.output[o].width == 0 ? 0.0 : std::ldexp(1.0, -t.output[o].frac);
    }
    // An exact layer reads its inputs' mantissas: every layer keeps 2^frac of its outputs.
    b.to_mantissa.resize(t.output.size());
    for (size_t o = 0; o < t.output.size(); ++o)
      b.to_mantissa[o] = t.output[o].width == 0 ? 0.0 : std::ldexp(1.0, t.output[o].frac);
  }
  // What a block holds per sample: every own output, quantized inputs and GEMM operands.
  int64_t values = 0;
  for (size_t li = 0; li < L; ++li) {
    const BatchLayer& b = plan->layers[li];
    if (b.kind != Kind::Alias) values += b.n_out;
    if (b.kind == Kind::Linear) {
      if (b.in_q) values += b.n_in;
      if (b.gemm && !(b.identity && b.precision == LinearPrecision::Float64))
        values += b.P * b.K / (b.precision == LinearPrecision::Float32 ? 2 : 1);
      if (b.precision == LinearPrecision::Float32) values += b.n_out / 2;
      if (b.gemm)
        plan->matrix_per_sample = std::max({plan->matrix_per_sample, b.P * b.K, b.P * b.F});
    }
  }
  plan->values_per_sample = std::max<int64_t>(values, 1);
  return plan;
}

std::optional<LinearPrecision> BatchPlan::linear_precision(size_t layer) const {
  if (layer >= layers.size()) return std::nullopt;
  const BatchLayer& b = layers[layer];
  if (!b.linear) return std::nullopt;
  return b.kind == Kind::Linear ? b.precision : LinearPrecision::Int128;
}

std::string BatchPlan::describe(const Emulator& e) const {
  std::ostringstream s;
  const auto& a = e.archive();
  auto quantizer = [](const std::optional<RowQuantizer>& q) -> std::string {
    if (!q) return "";
    return q->fast ? (q->raw ? "double (raw input, checked per element)" : "double")
                   : (q->raw ? "quantize_double per element" : "int128 per element");
  };
  for (size_t li = 0; li < layers.size(); ++li) {
    const BatchLayer& b = layers[li];
    const Layer& l = a.layers[li];
    s << "  " << l.name << " (" << kind_name(l.kind) << "): ";
    switch (b.kind) {
      case Kind::Alias:
        s << "alias of its input";
        break;
      case Kind::Quantize:
        s << "quantizer " << quantizer(b.in_q);
        break;
      case Kind::Activation:
        s << (b.relu ? "relu, " : "") << "quantizer " << quantizer(b.out_q);
        break;
      case Kind::Lut:
        s << "quantizer " << quantizer(b.in_q) << ", table lookup";
        break;
      case Kind::Concat:
        s << "gather";
        break;
      case Kind::Pool:
        s << (b.pool_max ? "max" : "avg") << " over windows"
          << (b.pool_channels ? " (channel rows)" : "");
        break;
      case Kind::Add:
        s << "double sum" << (b.out_q ? ", quantizer " + quantizer(b.out_q) : std::string());
        break;
      case Kind::Linear: {
        if (b.in_q) s << "input quantizer " << quantizer(b.in_q) << "; ";
        s << to_string(b.precision);
        if (b.gemm)
          s << (b.precision == LinearPrecision::Float32 ? " sgemm" : " dgemm") << " [" << b.P
            << " x " << b.K << "] x [" << b.K << " x " << b.F << "] per sample"
            << (b.identity ? "" : " (im2col)");
        else
          s << " sparse sums";
        s << ", bound 2^" << std::round(b.bound_log2 * 10) / 10;
        if (b.out_q) s << "; output quantizer " << quantizer(b.out_q);
        break;
      }
      case Kind::Exact:
        s << "exact path per sample: " << b.why_exact;
        break;
    }
    s << "\n";
  }
  return s.str();
}

// ------------------------------------------------------------------------------------ run
struct BatchWorkspace {
  std::vector<std::vector<double>> out, qin, a64;
  std::vector<std::vector<float>> a32;
  std::vector<float> c32;
  std::vector<std::vector<int128>> vals;
  std::vector<int128> v;
  EmulatorStats stats;
};

namespace {
template <class T>
T* sized(std::vector<T>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(n, T{});
  return v.data();
}

void count(EmulatorStats& s, const RowQuantizer& q, int64_t clipped) {
  (q.spec.overflow == OverflowMode::WRAP ? s.wrapped : s.saturated) += clipped;
}

void gemm(const float* A, const float* W, float* C, int64_t M, int64_t N, int64_t K, int64_t lda) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(M), static_cast<int>(N),
              static_cast<int>(K), 1.0f, A, static_cast<int>(lda), W, static_cast<int>(N), 0.0f, C,
              static_cast<int>(N));
}
void gemm(const double* A, const double* W, double* C, int64_t M, int64_t N, int64_t K,
          int64_t lda) {
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(M), static_cast<int>(N),
              static_cast<int>(K), 1.0, A, static_cast<int>(lda), W, static_cast<int>(N), 0.0, C,
              static_cast<int>(N));
}

// im2col of `rows` samples (input rows of `stride` values) into A [rows * P, K].
template <class T>
HGQT_VECTOR_CLONES void gather(const BatchLayer& b, const double* x, int64_t stride, int64_t rows,
                               T* A) {
  for (int64_t r = 0; r < rows; ++r) {
    const double* xr = x + r * stride;
    for (int64_t p = 0; p < b.P; ++p) {
      T* ar = A + (r * b.P + p) * b.K;
      for (int64_t g = b.run_begin[p]; g < b.run_begin[p + 1]; ++g) {
        const GatherRun& run = b.runs[g];
        const double* src = xr + run.input;
        T* dst = ar + run.row;
#pragma omp simd
        for (int64_t k = 0; k < run.length; ++k) dst[k] = static_cast<T>(src[k]);
      }
    }
  }
}

// acc = C + bias, then relu (in place when C is `acc`).
template <class T>
HGQT_VECTOR_CLONES void bias_relu(const T* C, const double* bias, bool relu, double* acc,
                                  int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* c = C + r * n;
    double* y = acc + r * n;
    if (relu) {
#pragma omp simd
      for (int64_t o = 0; o < n; ++o) y[o] = std::max(static_cast<double>(c[o]) + bias[o], 0.0);
    } else {
#pragma omp simd
      for (int64_t o = 0; o < n; ++o) y[o] = static_cast<double>(c[o]) + bias[o];
    }
  }
}
// y = x (relu: max(x, 0)) over `rows` rows of n values (y may be x).
HGQT_VECTOR_CLONES void copy_relu(const double* x, int64_t stride, bool relu, double* y, int64_t n,
                                  int64_t rows) {
  for (int64_t r = 0; r < rows; ++r) {
    const double* xr = x + r * stride;
    double* yr = y + r * n;
    if (relu) {
#pragma omp simd
      for (int64_t o = 0; o < n; ++o) yr[o] = std::max(xr[o], 0.0);
    } else {
#pragma omp simd
      for (int64_t o = 0; o < n; ++o) yr[o] = xr[o];
    }
  }
}

// Rows of doubles to float (exact where it matters: see plan_linear).
HGQT_VECTOR_CLONES void to_float(const double* x, int64_t stride, float* y, int64_t n,
                                 int64_t rows) {
  for (int64_t r = 0; r < rows; ++r) {
    const double* xr = x + r * stride;
    float* yr = y + r * n;
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) yr[k] = static_cast<float>(xr[k]);
  }
}

// Max or average pooling of `rows` rows: by channel rows (vectorized over the channels) or
// element by element.
HGQT_VECTOR_CLONES void pool(const BatchLayer& b, const double* x, int64_t stride, double* y,
                             int64_t rows) {
  const int64_t n = b.n_out;
  for (int64_t r = 0; r < rows; ++r) {
    const double* xr = x + r * stride;
    double* yr = y + r * n;
    if (!b.pool_channels) {
      for (int64_t o = 0; o < n; ++o) {
        double v = xr[b.window[b.window_begin[o]]];
        for (int64_t k = b.window_begin[o] + 1; k < b.window_begin[o + 1]; ++k)
          v = b.pool_max ? std::max(v, xr[b.window[k]]) : v + xr[b.window[k]];
        yr[o] = b.pool_max ? v : v * b.pool_scale;
      }
      continue;
    }
    const int64_t C = b.channels;
    for (size_t pos = 0; pos + 1 < b.window_begin.size(); ++pos) {
      double* yp = yr + pos * C;
      const int64_t w0 = b.window_begin[pos], w1 = b.window_begin[pos + 1];
      std::copy(xr + b.window[w0] * C, xr + b.window[w0] * C + C, yp);
      for (int64_t k = w0 + 1; k < w1; ++k) {
        const double* xs = xr + b.window[k] * C;
        if (b.pool_max) {
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) yp[c] = std::max(yp[c], xs[c]);
        } else {
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) yp[c] += xs[c];
        }
      }
      if (!b.pool_max) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) yp[c] *= b.pool_scale;
      }
    }
  }
}
}  // namespace

void BatchPlan::run_block(const Emulator& e, const double* x, int64_t rows, double* y,
                          BatchWorkspace& ws) const {
  const Archive& a = e.archive();
  const int64_t n_input = a.input_size();
  const size_t L = layers.size();
  if (ws.out.size() != L) {
    ws.out.resize(L);
    ws.qin.resize(L);
    ws.a32.resize(L);
    ws.a64.resize(L);
    ws.vals.resize(L);
  }
  // The rows of layer src's output (stride: its size) or of the model input.
  auto rows_of = [&](int64_t src, int64_t& stride) -> const double* {
    const int64_t s = src < 0 ? -1 : storage[src];
    if (s < 0) {
      stride = n_input;
      return x;
    }
    stride = layers[s].n_out;
    return ws.out[s].data();
  };
  for (size_t li = 0; li < L; ++li) {
    const BatchLayer& b = layers[li];
    if (b.kind == Kind::Alias) continue;
    const auto& inputs = e.plans_[li].inputs;
    int64_t in_stride = 0;
    const double* in = rows_of(inputs[0], in_stride);
    double* out = sized(ws.out[li], rows * b.n_out);
    const int64_t n = b.n_out;
    switch (b.kind) {
      case Kind::Alias:
        break;
      case Kind::Quantize:
        count(ws.stats, *b.in_q, b.in_q->apply(in, in_stride, out, n, rows));
        break;
      case Kind::Activation:
        copy_relu(in, in_stride, b.relu, out, n, rows);
        count(ws.stats, *b.out_q, b.out_q->apply(out, n, out, n, rows));
        break;
      case Kind::Lut: {
        count(ws.stats, *b.in_q, b.in_q->apply(in, in_stride, out, n, rows));
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t o = 0; o < n; ++o) {
            double& v = out[r * n + o];
            const int64_t index =
                b.lut_in_scale[o] == 0.0 ? 0 : to_int(v * b.lut_in_scale[o] - b.lut_min[o]);
            v = b.table[b.lut_offset[o] + index] * b.lut_out_unscale[o];
          }
        break;
      }
      case Kind::Concat: {
        const ConcatMap& m = e.plans_[li].concat;
        std::vector<const double*> srcs(inputs.size());
        std::vector<int64_t> strides(inputs.size());
        for (size_t s = 0; s < inputs.size(); ++s) srcs[s] = rows_of(inputs[s], strides[s]);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t o = 0; o < n; ++o)
            out[r * n + o] = srcs[m.slot[o]][r * strides[m.slot[o]] + m.element[o]];
        break;
      }
      case Kind::Pool:
        pool(b, in, in_stride, out, rows);
        break;
      case Kind::Add: {
        const AddMap& m = e.plans_[li].add;  // broadcast inputs read their elements through it
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t o = 0; o < n; ++o) out[r * n + o] = in[r * in_stride + m.element[0][o]];
        for (size_t s = 1; s < inputs.size(); ++s) {
          int64_t st = 0;
          const double* xs = rows_of(inputs[s], st);
          const std::vector<int64_t>& el = m.element[s];
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t o = 0; o < n; ++o) out[r * n + o] += xs[r * st + el[o]];
        }
        if (b.relu) copy_relu(out, n, true, out, n, rows);
        if (b.out_q) count(ws.stats, *b.out_q, b.out_q->apply(out, n, out, n, rows));
        break;
      }
      case Kind::Linear: {
        const double* xq = in;
        int64_t xs = in_stride;
        if (b.in_q) {
          double* q = sized(ws.qin[li], rows * b.n_in);
          count(ws.stats, *b.in_q, b.in_q->apply(in, in_stride, q, b.n_in, rows));
          xq = q;
          xs = b.n_in;
        }
        if (!b.gemm) {
          const LinearMap& m = e.plans_[li].linear;
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t o = 0; o < n; ++o) {
              double s = 0;
              for (int64_t k = m.begin[o]; k < m.begin[o + 1]; ++k)
                s += xq[r * xs + m.input[k]] * b.term_w[k];
              out[r * n + o] = s;
            }
          bias_relu(out, b.bias.data(), b.relu, out, rows, n);
        } else if (b.precision == LinearPrecision::Float32) {
          float* A = sized(ws.a32[li], rows * b.P * b.K);
          if (b.identity) {
            to_float(xq, xs, A, b.K, rows);
          } else {
            gather(b, xq, xs, rows, A);
          }
          float* C = sized(ws.c32, rows * n);
          gemm(A, b.w32.data(), C, rows * b.P, b.F, b.K, b.K);
          bias_relu(C, b.bias.data(), b.relu, out, rows, n);
        } else {
          const double* A = xq;
          int64_t lda = xs;
          if (!b.identity) {
            double* g = sized(ws.a64[li], rows * b.P * b.K);
            gather(b, xq, xs, rows, g);
            A = g;
            lda = b.K;
          }
          gemm(A, b.w64.data(), out, rows * b.P, b.F, b.K, lda);
          bias_relu(out, b.bias.data(), b.relu, out, rows, n);
        }
        if (b.out_q) count(ws.stats, *b.out_q, b.out_q->apply(out, n, out, n, rows));
        break;
      }
      case Kind::Exact: {
        // The exact path's code, sample by sample: the inputs' mantissas in, the output's out.
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t src : inputs) {
            if (src < 0 || storage[src] < 0) continue;
            int64_t st = 0;
            const double* xs = rows_of(src, st) + r * st;
            const std::vector<double>& to = layers[src].to_mantissa;
            std::vector<int128>& v = ws.vals[src];
            v.resize(to.size());
            for (size_t j = 0; j < to.size(); ++j) v[j] = to_int(xs[j] * to[j]);
          }
          e.exact_layer(li, ws.vals, x + r * n_input, ws.v, 0, &ws.stats);
          for (int64_t o = 0; o < n; ++o)
            out[r * n + o] =
                static_cast<double>(static_cast<int64_t>(ws.v[o])) * b.from_mantissa[o];
        }
        break;
      }
    }
  }
  int64_t stride = 0;
  const double* last = rows_of(static_cast<int64_t>(L) - 1, stride);
  const int64_t n_output = e.output_size();
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < n_output; ++o) y[r * n_output + o] = last[r * stride + o] + 0.0;
}

namespace {
// Runs the calling thread's OpenMP (and so OpenBLAS) calls with `n` threads until destroyed.
class OmpThreads {
 public:
  explicit OmpThreads(int n) : saved_(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~OmpThreads() { omp_set_num_threads(saved_); }
  OmpThreads(const OmpThreads&) = delete;
  OmpThreads& operator=(const OmpThreads&) = delete;

 private:
  int saved_;
};
}  // namespace

bool BatchPlan::run(const Emulator& e, const double* x, int64_t n, double* y,
                    EmulatorStats& stats) const {
  const EmulatorOptions& o = e.options();
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  const int64_t in = e.input_size(), out = e.output_size();
  // Blocks of about 1 MiB of values per thread (at least 8 samples), and work for every thread.
  int64_t block = o.block;
  if (block <= 0) {
    block = 8;
    while (block < 512 && (2 * block) * values_per_sample * 8 <= (int64_t{1} << 20)) block *= 2;
    block = std::min(block, (n + threads - 1) / threads);
  }
  block = std::max<int64_t>(
      1, std::min<int64_t>(block, std::numeric_limits<int>::max() / matrix_per_sample));
  const int64_t n_blocks = (n + block - 1) / block;
  const int team = static_cast<int>(std::min<int64_t>(threads, n_blocks));
  std::atomic<bool> needs_exact{false};
  std::exception_ptr error;
  EmulatorStats total;
  auto one_block = [&](BatchWorkspace& ws, int64_t k) {
    const int64_t r0 = k * block, rows = std::min(block, n - r0);
    try {
      run_block(e, x + r0 * in, rows, y + r0 * out, ws);
    } catch (const ArchiveError&) {
      needs_exact = true;  // the exact path gives the message, naming the first such sample
    } catch (...) {
#pragma omp critical(hgqt_emulator_error)
      if (!error) error = std::current_exception();
      needs_exact = true;
    }
  };
  if (team <= 1) {
    OmpThreads single(1);  // BLAS outside a parallel region would take every core
    BatchWorkspace ws;
    for (int64_t k = 0; k < n_blocks && !needs_exact; ++k) one_block(ws, k);
    total = ws.stats;
  } else {
#pragma omp parallel num_threads(team)
    {
      BatchWorkspace ws;
#pragma omp for schedule(dynamic, 1)
      for (int64_t k = 0; k < n_blocks; ++k)
        if (!needs_exact) one_block(ws, k);
#pragma omp critical(hgqt_emulator_stats)
      {
        total.wrapped += ws.stats.wrapped;
        total.saturated += ws.stats.saturated;
      }
    }
  }
  if (error) std::rethrow_exception(error);
  if (needs_exact) return false;
  stats.samples += n;
  stats.wrapped += total.wrapped;
  stats.saturated += total.saturated;
  return true;
}

}  // namespace hgqt::archive
