// Exact integer fixed-point arithmetic and the type inference every back end shares.
#include "hgqt/archive/fixed.h"

#include <algorithm>
#include <cmath>


namespace hgqt::archive {

using quant::OverflowMode;
using quant::RoundingMode;

namespace {
constexpr int kMaxShift = 120;

int128 pow2(int e) { return static_cast<int128>(1) << e; }

// Number of bits of a non-negative value (0 -> 0).
int bit_length(int128 v) {
  int n = 0;
  while (v > 0) {
    v >>= 1;
    ++n;
  }
  return n;
}

int128 checked_add(int128 a, int128 b, const std::string& what) {
  int128 r;
  if (__builtin_add_overflow(a, b, &r)) throw ArchiveError(what + ": exceeds 127 bits");
  return r;
}

int128 checked_mul(int128 a, int128 b, const std::string& what) {
  int128 r;
  if (__builtin_mul_overflow(a, b, &r)) throw ArchiveError(what + ": exceeds 127 bits");
  return r;
}

std::string layer_label(const Layer& l, size_t index) {
  return "layers[" + std::to_string(index) + "] '" + l.name + "'";
}
}  // namespace

std::string to_string(int128 v) {
  if (v == 0) return "0";
  const bool neg = v < 0;
  std::string s;
  // Work on negative values so that the most negative int128 does not overflow.
  int128 t = neg ? v : -v;
  while (t != 0) {
    s.push_back(static_cast<char>('0' - static_cast<int>(t % 10)));
    t /= 10;
  }
  if (neg) s.push_back('-');
  std::reverse(s.begin(), s.end());
  return s;
}

std::string FixedType::to_string() const {
  if (width == 0) return "zero";
  return std::string(is_signed ? "ap_fixed<" : "ap_ufixed<") + std::to_string(width) + "," +
         std::to_string(int_bits()) + ">";
}

int128 FixedType::min_mantissa() const {
  return (width == 0 || !is_signed) ? 0 : -pow2(width - 1);
}

int128 FixedType::max_mantissa() const {
  if (width == 0) return 0;
  return pow2(is_signed ? width - 1 : width) - 1;
}

FixedType quantizer_type(const QuantSpec& q, int64_t n) {
  const int w = q.width(n);
  if (w <= 0) return {false, 0, q.f[n]};
  return {q.k[n] == 1, w, q.f[n]};
}

FixedType type_of_range(int128 lo, int128 hi, int frac) {
  if (lo > hi) std::swap(lo, hi);
  if (lo == 0 && hi == 0) return {false, 0, frac};
  if (lo >= 0) return {false, bit_length(hi), frac};
  const int w = std::max(bit_length(std::max<int128>(hi, 0)), bit_length(-(lo + 1))) + 1;
  return {true, w, frac};
}

int128 align(int128 m, int from_frac, int to_frac) {
  const int s = to_frac - from_frac;
  if (s < 0) throw ArchiveError("align: cannot lower the fractional bits exactly");
  if (m == 0) return 0;
  if (s >= 127) throw ArchiveError("align: shift of " + std::to_string(s) + " bits exceeds 127 bits");
  return checked_mul(m, pow2(s), "align");
}

int128 round_shift(int128 m, int shift, RoundingMode mode) {
  if (shift <= 0) {
    if (m == 0) return 0;
    if (-shift >= 127) throw ArchiveError("round_shift: shift exceeds 127 bits");
    return checked_mul(m, pow2(-shift), "round_shift");
  }
  shift = std::min(shift, kMaxShift);
  const int128 floor_q = m >> shift;  // arithmetic shift: floor
  switch (mode) {
    case RoundingMode::TRN:
      return floor_q;
    case RoundingMode::RND:
    case RoundingMode::S_RND:  // eval semantics
      return (m + pow2(shift - 1)) >> shift;
    case RoundingMode::RND_CONV: {
      const int128 r = m - floor_q * pow2(shift);  // in [0, 2^shift)
      const int128 half = pow2(shift - 1);
      if (r > half) return floor_q + 1;
      if (r < half) return floor_q;
      return (floor_q & 1) ? floor_q + 1 : floor_q;
    }
  }
  return floor_q;
}

int128 overflow_int(int128 m, int k, int i, int f, OverflowMode mode) {
  const int b = i + f;  // >= 0 whenever k + i + f > 0
  const int128 m_max = pow2(b) - 1;
  const int128 m_min = k ? -pow2(b) : 0;
  switch (mode) {
    case OverflowMode::SAT:
      return std::clamp(m, m_min, m_max);
    case OverflowMode::SAT_SYM:
      return std::clamp(m, k ? -m_max : int128{0}, m_max);
    case OverflowMode::WRAP: {
      const int128 mask = pow2(k + b) - 1;
      // (m - m_min) mod 2^(k+b), computed on the low bits (two's complement).
      const auto low = static_cast<unsigned __int128>(m) - static_cast<unsigned __int128>(m_min);
      return m_min + static_cast<int128>(low & static_cast<unsigned __int128>(mask));
    }
  }
  return m;
}

int128 quantize_exact(int128 m, int frac, const QuantSpec& q, int64_t n, bool* clipped) {
  if (clipped) *clipped = false;
  if (q.width(n) <= 0) return 0;
  const int k = q.k[n], i = q.i[n], f = q.f[n], w = k + i + f;
  const int shift = frac - f;
  int128 rounded;
  if (shift < 0 && m != 0 && (-shift >= 126 || m >= pow2(126 + shift) || m < -pow2(126 + shift))) {
    // The left shift leaves 127 bits: the value is far out of range. WRAP keeps the low w bits
    // (zero when the shift is at least that wide); SAT clips by sign.
    if (clipped) *clipped = true;
    if (q.overflow != OverflowMode::WRAP) return overflow_int(m > 0 ? pow2(126) : -pow2(126), k, i, f, q.overflow);
    if (-shift >= w) return overflow_int(0, k, i, f, q.overflow);
    rounded = (m & (pow2(w + shift) - 1)) * pow2(-shift);
    return overflow_int(rounded, k, i, f, q.overflow);
  }
  rounded = round_shift(m, shift, q.round);
  const int128 out = overflow_int(rounded, k, i, f, q.overflow);
  if (clipped) *clipped = out != rounded;
  return out;
}

int128 quantize_double(double x, const QuantSpec& q, int64_t n, bool* clipped) {
  if (clipped) *clipped = false;
  if (!std::isfinite(x))
    throw ArchiveError(std::string("input value is ") + (std::isnan(x) ? "NaN" : "infinite"));
  if (q.width(n) <= 0) return 0;
  const double y = quant::round_fixed(std::ldexp(x, q.f[n]), q.round);
  if (std::fabs(y) >= std::ldexp(1.0, 120))
    throw ArchiveError("input value " + std::to_string(x) + " is too large for exact emulation");
  const auto rounded = static_cast<int128>(y);
  const int128 out = overflow_int(rounded, q.k[n], q.i[n], q.f[n], q.overflow);
  if (clipped) *clipped = out != rounded;
  return out;
}

int bit_span(int128 m) {
  if (m == 0) return 0;
  if (m < 0) m = -m;
  int low = 0;
  while (((m >> low) & 1) == 0) ++low;
  return bit_length(m) - low;
}

// ------------------------------------------------------------------------- type inference
namespace {
struct Range {
  int128 lo = 0, hi = 0;  // mantissas at the element type's frac
};

// Types and ranges of the values flowing between layers; `is_float` before the first quantizer.
struct Flow {
  bool is_float = true;
  std::vector<FixedType> types;
  std::vector<Range> ranges;
};

void apply_quantizer(Flow& flow, const QuantSpec& q) {
  flow.types.resize(q.size());
  flow.ranges.resize(q.size());
  for (int64_t n = 0; n < q.size(); ++n) {
    flow.types[n] = quantizer_type(q, n);
    flow.ranges[n] = {flow.types[n].min_mantissa(), flow.types[n].max_mantissa()};
  }
  flow.is_float = false;
}

void apply_relu(Flow& flow) {
  for (size_t n = 0; n < flow.types.size(); ++n) {
    auto& r = flow.ranges[n];
    r.lo = std::max<int128>(r.lo, 0);
    r.hi = std::max<int128>(r.hi, 0);
    flow.types[n] = type_of_range(r.lo, r.hi, flow.types[n].frac);
  }
}
}  // namespace

std::vector<LayerTypes> infer_types(const Archive& a) {
  std::vector<LayerTypes> out(a.layers.size());
  Flow flow;
  for (size_t li = 0; li < a.layers.size(); ++li) {
    const Layer& l = a.layers[li];
    LayerTypes& t = out[li];
    const std::string label = layer_label(l, li);
    t.input = flow.types;
    auto need_fixed = [&]() {
      if (flow.is_float)
        throw ArchiveError(label + " (" + l.type +
                           "): the model input is not quantized before it; the first layer with "
                           "arithmetic must be a quantize layer or a dense layer with an input "
                           "quantizer");
    };
    if (l.type == "flatten") {
      t.quantized_input = t.input;
      t.output = flow.types;
      continue;
    }
    if (l.type == "quantize") {
      apply_quantizer(flow, *l.input_quantizer);
      t.quantized_input = flow.types;
      t.output = flow.types;
      continue;
    }
    if (l.type == "activation") {
      need_fixed();
      t.quantized_input = t.input;
      if (l.activation == "relu") apply_relu(flow);
      apply_quantizer(flow, *l.output_quantizer);
      t.output = flow.types;
      continue;
    }
    if (l.type != "dense") throw ArchiveError(label + ": unknown layer type '" + l.type + "'");
    if (l.input_quantizer) apply_quantizer(flow, *l.input_quantizer);
    need_fixed();
    t.quantized_input = flow.types;
    const Constant& w = *l.kernel;
    const int64_t in = w.shape[0], n_out = w.shape[1];
    Flow acc;
    acc.is_float = false;
    acc.types.resize(n_out);
    acc.ranges.resize(n_out);
    t.acc_lo.resize(n_out);
    t.acc_hi.resize(n_out);
    for (int64_t o = 0; o < n_out; ++o) {
      const std::string what = label + " accumulator " + std::to_string(o);
      int frac = 0;
      bool any = false;
      for (int64_t j = 0; j < in; ++j) {
        const int64_t wn = j * n_out + o;
        if (w.mantissa[wn] == 0 || flow.types[j].width == 0) continue;
        const int fr = flow.types[j].frac - w.exponent[wn];
        frac = any ? std::max(frac, fr) : fr;
        any = true;
      }
      const bool has_bias = l.bias && l.bias->mantissa[o] != 0;
      if (has_bias) {
        const int fr = -l.bias->exponent[o];
        frac = any ? std::max(frac, fr) : fr;
        any = true;
      }
      int128 lo = 0, hi = 0;
      for (int64_t j = 0; j < in; ++j) {
        const int64_t wn = j * n_out + o;
        if (w.mantissa[wn] == 0 || flow.types[j].width == 0) continue;
        const int128 a1 = checked_mul(flow.ranges[j].lo, w.mantissa[wn], what);
        const int128 a2 = checked_mul(flow.ranges[j].hi, w.mantissa[wn], what);
        const int fr = flow.types[j].frac - w.exponent[wn];
        lo = checked_add(lo, align(std::min(a1, a2), fr, frac), what);
        hi = checked_add(hi, align(std::max(a1, a2), fr, frac), what);
      }
      if (has_bias) {
        const int128 b = align(l.bias->mantissa[o], -l.bias->exponent[o], frac);
        lo = checked_add(lo, b, what);
        hi = checked_add(hi, b, what);
      }
      acc.types[o] = type_of_range(lo, hi, frac);
      if (acc.types[o].width > 126)
        throw ArchiveError(what + ": needs " + std::to_string(acc.types[o].width) +
                           " bits, more than the emulator's 126");
      acc.ranges[o] = {lo, hi};
      t.acc_lo[o] = lo;
      t.acc_hi[o] = hi;
    }
    t.accumulator = acc.types;
    flow = std::move(acc);
    if (l.activation == "relu") apply_relu(flow);
    if (l.output_quantizer) apply_quantizer(flow, *l.output_quantizer);
    t.output = flow.types;
  }
  if (flow.is_float)
    throw ArchiveError("the model has no quantizer: its output is not fixed-point");
  return out;
}

std::vector<double> exact_ebops(const Archive& a) {
  const auto types = infer_types(a);
  std::vector<double> out(a.layers.size(), 0.0);
  for (size_t li = 0; li < a.layers.size(); ++li) {
    const Layer& l = a.layers[li];
    if (l.type != "dense") continue;
    const Constant& w = *l.kernel;
    const int64_t in = w.shape[0], n_out = w.shape[1];
    double e = 0;
    for (int64_t j = 0; j < in; ++j) {
      const FixedType& t = types[li].quantized_input[j];
      const int bits = std::max(0, t.width - (t.is_signed ? 1 : 0));
      if (bits == 0) continue;
      for (int64_t o = 0; o < n_out; ++o) e += bits * bit_span(w.mantissa[j * n_out + o]);
    }
    if (l.bias)
      for (int64_t o = 0; o < n_out; ++o) e += bit_span(l.bias->mantissa[o]);
    out[li] = e;
  }
  return out;
}

}  // namespace hgqt::archive
