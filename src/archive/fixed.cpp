// Exact integer fixed-point arithmetic and the type inference every back end shares.
#include "hgqt/archive/fixed.h"

#include <algorithm>
#include <cmath>

#include "hgqt/util/checked_int.h"
#include "hgqt/util/lut_cost.h"

namespace hgqt::archive {

using quant::OverflowMode;
using quant::RoundingMode;

namespace {
constexpr int kMaxShift = 120;

int128 pow2(int e) {
  return static_cast<int128>(1) << e;
}

// Number of bits of a non-negative value (0 -> 0).
int bit_length(int128 v) {
  int n = 0;
  while (v > 0) {
    v >>= 1;
    ++n;
  }
  return n;
}

constexpr auto& checked_add = util::checked_add<ArchiveError>;
constexpr auto& checked_mul = util::checked_mul<ArchiveError>;

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
  if (s >= 127)
    throw ArchiveError("align: shift of " + std::to_string(s) + " bits exceeds 127 bits");
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
    if (q.overflow != OverflowMode::WRAP)
      return overflow_int(m > 0 ? pow2(126) : -pow2(126), k, i, f, q.overflow);
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

// ------------------------------------------------------------------------- layer maps
namespace {
// Product of v[from, to) (to clipped to v.size()).
int64_t prod_range(const std::vector<int64_t>& v, size_t from, size_t to) {
  int64_t p = 1;
  for (auto it = v.begin() + static_cast<std::ptrdiff_t>(std::min(from, v.size()));
       it != v.begin() + static_cast<std::ptrdiff_t>(std::min(to, v.size())); ++it)
    p *= *it;
  return p;
}
int64_t prod(const std::vector<int64_t>& v) {
  return prod_range(v, 0, v.size());
}

// Spatial geometry of a conv or pool layer: input [S..., C], output [O..., F].
struct Geometry {
  size_t rank = 0;  // spatial axes
  std::vector<int64_t> in, out, k, s, pad;
};

Geometry geometry(const Layer& l, size_t rank, bool padded) {
  Geometry g;
  g.rank = rank;
  // A global pool may drop the spatial axes of its output ([C] for [1, ..., 1, C]).
  const bool global = l.kind == LayerKind::Pool && l.output_shape.size() == 1;
  if (l.input_shape.size() != rank + 1 || (l.output_shape.size() != rank + 1 && !global))
    throw ArchiveError("layer '" + l.name + "' (" + kind_name(l.kind) + "): expected " +
                       std::to_string(rank + 1) + "-dimensional channels-last shapes");
  if (l.kernel_size.size() != rank || l.strides.size() != rank ||
      (padded && l.pad_before.size() != rank))
    throw ArchiveError("layer '" + l.name + "' (" + kind_name(l.kind) + "): kernel_size, strides" +
                       (padded ? ", pad_before" : "") + " need " + std::to_string(rank) +
                       " entries");
  for (size_t d = 0; d < rank; ++d) {
    g.in.push_back(l.input_shape[d]);
    g.out.push_back(global ? 1 : l.output_shape[d]);
    g.k.push_back(l.kernel_size[d]);
    g.s.push_back(l.strides[d]);
    g.pad.push_back(padded ? l.pad_before[d] : 0);
  }
  return g;
}

// Calls fn(output position index, input position index or -1, kernel position index) for every
// window element of every output position (positions row-major over the spatial axes).
template <class Fn>
void for_windows(const Geometry& g, Fn fn) {
  const int64_t n_out = prod(g.out), n_k = prod(g.k);
  std::vector<int64_t> op(g.rank), kp(g.rank);
  for (int64_t o = 0; o < n_out; ++o) {
    int64_t r = o;
    for (size_t d = g.rank; d-- > 0;) {
      op[d] = r % g.out[d];
      r /= g.out[d];
    }
    for (int64_t kk = 0; kk < n_k; ++kk) {
      int64_t rk = kk;
      for (size_t d = g.rank; d-- > 0;) {
        kp[d] = rk % g.k[d];
        rk /= g.k[d];
      }
      int64_t in = 0;
      bool inside = true;
      for (size_t d = 0; d < g.rank; ++d) {
        const int64_t p = op[d] * g.s[d] - g.pad[d] + kp[d];
        if (p < 0 || p >= g.in[d]) inside = false;
        in = in * g.in[d] + p;
      }
      fn(o, inside ? in : -1, kk);
    }
  }
}
}  // namespace

LinearMap linear_map(const Layer& l) {
  if (!l.kernel)
    throw ArchiveError("layer '" + l.name + "' (" + kind_name(l.kind) + "): no kernel");
  const Constant& w = *l.kernel;
  LinearMap m;
  m.begin.push_back(0);
  if (l.kind == LayerKind::Dense) {
    // The same kernel at every position of [S..., in] (one position for a flat input).
    const int64_t in = w.shape.at(0), out = w.shape.at(1);
    const int64_t positions = prod(l.input_shape) / in;
    m.input.reserve(positions * in * out);
    m.weight.reserve(positions * in * out);
    for (int64_t p = 0; p < positions; ++p)
      for (int64_t o = 0; o < out; ++o) {
        for (int64_t j = 0; j < in; ++j) {
          m.input.push_back(p * in + j);
          m.weight.push_back(j * out + o);
        }
        m.begin.push_back(static_cast<int64_t>(m.input.size()));
        m.bias.push_back(l.bias ? o : -1);
      }
    return m;
  }
  if (l.kind == LayerKind::Scale) {
    const int64_t c = w.shape.at(0), n = prod(l.input_shape);
    for (int64_t o = 0; o < n; ++o) {
      m.input.push_back(o);
      m.weight.push_back(o % c);
      m.begin.push_back(o + 1);
      m.bias.push_back(l.bias ? o % c : -1);
    }
    return m;
  }
  if (l.kind == LayerKind::EinsumDense) {
    // The kernel is operand b of the equation; the bias runs along the output's last axis.
    util::EinsumMap em;
    try {
      em = util::einsum_map(util::parse_einsum(l.equation), l.input_shape, w.shape);
    } catch (const std::invalid_argument& e) {
      throw ArchiveError("layer '" + l.name + "': " + e.what());
    }
    const int64_t last = l.output_shape.empty() ? 1 : l.output_shape.back();
    m.begin = std::move(em.begin);
    m.input = std::move(em.first);
    m.weight = std::move(em.second);
    for (int64_t o = 0; o < m.n_out(); ++o) m.bias.push_back(l.bias ? o % last : -1);
    return m;
  }
  if (l.kind != LayerKind::Conv1d && l.kind != LayerKind::Conv2d)
    throw ArchiveError("layer '" + l.name + "': " + kind_name(l.kind) + " is not a linear layer");
  const Geometry g = geometry(l, l.kind == LayerKind::Conv1d ? 1 : 2, true);
  const int64_t c_in = l.input_shape.back(), f_out = l.output_shape.back();
  const int64_t n_pos = prod(g.out);
  // Terms of one output position, then repeated per filter.
  std::vector<std::vector<std::pair<int64_t, int64_t>>> pos(n_pos);  // (input pos, kernel pos)
  for_windows(g, [&](int64_t o, int64_t in, int64_t kk) {
    if (in >= 0) pos[o].emplace_back(in, kk);
  });
  for (int64_t o = 0; o < n_pos; ++o)
    for (int64_t f = 0; f < f_out; ++f) {
      for (const auto& [in, kk] : pos[o])
        for (int64_t c = 0; c < c_in; ++c) {
          m.input.push_back(in * c_in + c);
          m.weight.push_back((kk * c_in + c) * f_out + f);
        }
      m.begin.push_back(static_cast<int64_t>(m.input.size()));
      m.bias.push_back(l.bias ? f : -1);
    }
  return m;
}

PoolMap pool_map(const Layer& l) {
  if (l.kind != LayerKind::Pool) throw ArchiveError("layer '" + l.name + "': not a pool layer");
  const Geometry g = geometry(l, l.input_shape.size() - 1, false);
  const int64_t c = l.input_shape.back();
  PoolMap m;
  m.max = l.pool == "max";
  const int64_t window = prod(g.k);
  if (l.pool == "avg") {
    try {
      const util::AvgScale s = util::avg_scale(window, l.scale_bits);
      m.shift = s.shift;
      m.mult = s.mult;
    } catch (const std::invalid_argument& e) {
      throw ArchiveError("layer '" + l.name + "': avg pool: " + e.what());
    }
  }
  std::vector<std::vector<int64_t>> pos(prod(g.out));
  for_windows(g, [&](int64_t o, int64_t in, int64_t) {
    if (in < 0) throw ArchiveError("layer '" + l.name + "': pool window leaves the input");
    pos[o].push_back(in);
  });
  m.begin.push_back(0);
  for (const auto& p : pos)
    for (int64_t ch = 0; ch < c; ++ch) {
      for (int64_t in : p) m.input.push_back(in * c + ch);
      m.begin.push_back(static_cast<int64_t>(m.input.size()));
    }
  return m;
}

namespace {
std::vector<std::vector<int64_t>> input_shapes(const Archive& a, size_t li) {
  std::vector<std::vector<int64_t>> shapes;
  for (int64_t src : layer_inputs(a, li))
    shapes.push_back(src < 0 ? a.input_shape : a.layers[static_cast<size_t>(src)].output_shape);
  return shapes;
}
}  // namespace

ConcatMap concat_map(const Archive& a, size_t li) {
  return concat_map(a.layers[li], input_shapes(a, li));
}

util::EinsumMap einsum_map(const Archive& a, size_t li) {
  const Layer& l = a.layers.at(li);
  const auto shapes = input_shapes(a, li);
  if (l.kind != LayerKind::Einsum || shapes.size() != 2)
    throw ArchiveError("layer '" + l.name + "' is not an einsum of two inputs");
  try {
    return util::einsum_map(util::parse_einsum(l.equation), shapes[0], shapes[1]);
  } catch (const std::invalid_argument& e) {
    throw ArchiveError("layer '" + l.name + "': " + e.what());
  }
}

AddMap add_map(const Archive& a, size_t li) {
  return add_map(a.layers[li], input_shapes(a, li));
}

AddMap add_map(const Layer& l, const std::vector<std::vector<int64_t>>& shapes) {
  const std::vector<int64_t>& out = l.output_shape;
  const size_t rank = out.size();
  const int64_t n = prod(out);
  AddMap m;
  for (const auto& s : shapes) {
    if (s.size() > rank)
      throw ArchiveError("add layer '" + l.name + "': an input has more axes than the output");
    // Row-major strides of the input, 0 along the axes it broadcasts (size 1 or missing).
    std::vector<int64_t> stride(rank, 0);
    int64_t st = 1;
    for (size_t d = s.size(); d-- > 0;) {
      if (s[d] != 1) stride[rank - s.size() + d] = st;
      st *= s[d];
    }
    std::vector<int64_t> el(static_cast<size_t>(n));
    for (int64_t o = 0; o < n; ++o) {
      int64_t r = o, e = 0;
      for (size_t d = rank; d-- > 0;) {
        e += (r % out[d]) * stride[d];
        r /= out[d];
      }
      el[static_cast<size_t>(o)] = e;
    }
    m.element.push_back(std::move(el));
  }
  return m;
}

ConcatMap concat_map(const Layer& l, const std::vector<std::vector<int64_t>>& shapes) {
  const size_t ax = static_cast<size_t>(l.axis);
  ConcatMap m;
  const int64_t outer = prod_range(l.output_shape, 0, ax);
  for (int64_t r = 0; r < outer; ++r)
    for (size_t s = 0; s < shapes.size(); ++s) {
      const int64_t inner =
          prod_range(shapes[s], ax, shapes[s].size());  // elements of one slice of input s
      for (int64_t e = 0; e < inner; ++e) {
        m.slot.push_back(static_cast<int32_t>(s));
        m.element.push_back(r * inner + e);
      }
    }
  return m;
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

void set_type(Flow& acc, int64_t o, int128 lo, int128 hi, int frac, const std::string& what) {
  acc.types[o] = type_of_range(lo, hi, frac);
  if (acc.types[o].width > 126)
    throw ArchiveError(what + ": needs " + std::to_string(acc.types[o].width) +
                       " bits, more than the emulator's 126");
  acc.ranges[o] = {lo, hi};
}

Flow fixed_flow(size_t n) {
  Flow f;
  f.is_float = false;
  f.types.resize(n);
  f.ranges.resize(n);
  return f;
}

// The exact sums of a linear layer over its quantized input `in`.
Flow linear_flow(const Layer& l, const Flow& in, const std::string& label) {
  const LinearMap m = linear_map(l);
  const Constant& w = *l.kernel;
  Flow acc = fixed_flow(m.n_out());
  for (int64_t o = 0; o < m.n_out(); ++o) {
    const std::string what = label + " accumulator " + std::to_string(o);
    int frac = 0;
    bool any = false;
    for (int64_t t = m.begin[o]; t < m.begin[o + 1]; ++t) {
      const int64_t j = m.input[t], wn = m.weight[t];
      if (w.mantissa[wn] == 0 || in.types[j].width == 0) continue;
      const int fr = in.types[j].frac - w.exponent[wn];
      frac = any ? std::max(frac, fr) : fr;
      any = true;
    }
    const int64_t bn = m.bias[o];
    const bool has_bias = bn >= 0 && l.bias->mantissa[bn] != 0;
    if (has_bias) {
      const int fr = -l.bias->exponent[bn];
      frac = any ? std::max(frac, fr) : fr;
    }
    int128 lo = 0, hi = 0;
    for (int64_t t = m.begin[o]; t < m.begin[o + 1]; ++t) {
      const int64_t j = m.input[t], wn = m.weight[t];
      if (w.mantissa[wn] == 0 || in.types[j].width == 0) continue;
      const int128 a1 = checked_mul(in.ranges[j].lo, w.mantissa[wn], what);
      const int128 a2 = checked_mul(in.ranges[j].hi, w.mantissa[wn], what);
      const int fr = in.types[j].frac - w.exponent[wn];
      lo = checked_add(lo, align(std::min(a1, a2), fr, frac), what);
      hi = checked_add(hi, align(std::max(a1, a2), fr, frac), what);
    }
    if (has_bias) {
      const int128 b = align(l.bias->mantissa[bn], -l.bias->exponent[bn], frac);
      lo = checked_add(lo, b, what);
      hi = checked_add(hi, b, what);
    }
    set_type(acc, o, lo, hi, frac, what);
  }
  return acc;
}

Flow add_flow(const std::vector<Flow*>& ins, const AddMap& m, const std::string& label) {
  const size_t n = m.element.at(0).size();
  Flow acc = fixed_flow(n);
  for (size_t o = 0; o < n; ++o) {
    const std::string what = label + " element " + std::to_string(o);
    int frac = 0;
    bool any = false;
    for (size_t s = 0; s < ins.size(); ++s) {
      const FixedType& ty = ins[s]->types[m.element[s][o]];
      if (ty.width > 0) {
        frac = any ? std::max(frac, ty.frac) : ty.frac;
        any = true;
      }
    }
    int128 lo = 0, hi = 0;
    for (size_t s = 0; s < ins.size(); ++s) {
      const int64_t e = m.element[s][o];
      const FixedType& ty = ins[s]->types[e];
      if (ty.width > 0) {
        lo = checked_add(lo, align(ins[s]->ranges[e].lo, ty.frac, frac), what);
        hi = checked_add(hi, align(ins[s]->ranges[e].hi, ty.frac, frac), what);
      }
    }
    set_type(acc, static_cast<int64_t>(o), lo, hi, frac, what);
  }
  return acc;
}

// The exact sums of products of an einsum layer over its quantized operands.
Flow einsum_flow(const util::EinsumMap& m, const Flow& a, const Flow& b, const std::string& label) {
  Flow acc = fixed_flow(static_cast<size_t>(m.n_out()));
  for (int64_t o = 0; o < m.n_out(); ++o) {
    const std::string what = label + " sum " + std::to_string(o);
    int frac = 0;
    bool any = false;
    for (int64_t t = m.begin[o]; t < m.begin[o + 1]; ++t) {
      const FixedType &ta = a.types[m.first[t]], &tb = b.types[m.second[t]];
      if (ta.width == 0 || tb.width == 0) continue;
      frac = any ? std::max(frac, ta.frac + tb.frac) : ta.frac + tb.frac;
      any = true;
    }
    int128 lo = 0, hi = 0;
    for (int64_t t = m.begin[o]; t < m.begin[o + 1]; ++t) {
      const int64_t i = m.first[t], j = m.second[t];
      const FixedType &ta = a.types[i], &tb = b.types[j];
      if (ta.width == 0 || tb.width == 0) continue;
      const int128 c[4] = {checked_mul(a.ranges[i].lo, b.ranges[j].lo, what),
                           checked_mul(a.ranges[i].lo, b.ranges[j].hi, what),
                           checked_mul(a.ranges[i].hi, b.ranges[j].lo, what),
                           checked_mul(a.ranges[i].hi, b.ranges[j].hi, what)};
      const int fr = ta.frac + tb.frac;
      lo = checked_add(lo, align(*std::min_element(c, c + 4), fr, frac), what);
      hi = checked_add(hi, align(*std::max_element(c, c + 4), fr, frac), what);
    }
    set_type(acc, o, lo, hi, frac, what);
  }
  return acc;
}

Flow pool_flow(const Layer& l, const Flow& in, const std::string& label) {
  const PoolMap m = pool_map(l);
  Flow out = fixed_flow(m.n_out());
  for (int64_t o = 0; o < m.n_out(); ++o) {
    const std::string what = label + " output " + std::to_string(o);
    int frac = 0;
    bool any = false;
    for (int64_t t = m.begin[o]; t < m.begin[o + 1]; ++t) {
      const FixedType& ty = in.types[m.input[t]];
      if (ty.width == 0) continue;
      frac = any ? std::max(frac, ty.frac) : ty.frac;
      any = true;
    }
    int128 lo = 0, hi = 0;
    bool first = true;
    for (int64_t t = m.begin[o]; t < m.begin[o + 1]; ++t) {
      const int64_t j = m.input[t];
      const FixedType& ty = in.types[j];
      // A pruned element is the constant 0.
      const int128 a = ty.width == 0 ? 0 : align(in.ranges[j].lo, ty.frac, frac);
      const int128 b = ty.width == 0 ? 0 : align(in.ranges[j].hi, ty.frac, frac);
      if (m.max) {
        lo = first ? a : std::max(lo, a);
        hi = first ? b : std::max(hi, b);
      } else {
        lo = checked_add(lo, a, what);
        hi = checked_add(hi, b, what);
      }
      first = false;
    }
    // avg: the sum's mantissa times mult, read at frac + shift, is the average.
    if (!m.max && m.mult != 1) {
      lo = checked_mul(lo, m.mult, what);
      hi = checked_mul(hi, m.mult, what);
    }
    set_type(out, o, lo, hi, frac + (m.max ? 0 : m.shift), what);
  }
  return out;
}
}  // namespace

std::vector<LayerTypes> infer_types(const Archive& a) {
  std::vector<LayerTypes> out(a.layers.size());
  const std::vector<Flow> flows =
      walk_layers(a, Flow{}, [&](size_t li, const Layer& l, const std::vector<Flow*>& ins) {
        LayerTypes& t = out[li];
        const std::string label = layer_label(l, li);
        Flow flow = *ins.at(0);
        t.input = flow.types;
        auto need_fixed = [&](const Flow& f) {
          if (f.is_float)
            throw ArchiveError(label + " (" + kind_name(l.kind) +
                               "): its input is the float model input, not yet quantized; quantize "
                               "it first (a quantize layer, or an input quantizer on a dense or "
                               "conv layer)");
        };
        // A flow's types and ranges into LayerTypes' output or accumulator fields.
        auto store = [](const Flow& f, std::vector<FixedType>& types, std::vector<int128>& lo,
                        std::vector<int128>& hi) {
          types = f.types;
          lo.resize(f.ranges.size());
          hi.resize(f.ranges.size());
          for (size_t n = 0; n < f.ranges.size(); ++n) {
            lo[n] = f.ranges[n].lo;
            hi[n] = f.ranges[n].hi;
          }
        };
        auto finish = [&](Flow f) {
          store(f, t.output, t.out_lo, t.out_hi);
          return f;
        };
        auto set_acc = [&](const Flow& acc) { store(acc, t.accumulator, t.acc_lo, t.acc_hi); };
        switch (l.kind) {
          case LayerKind::Flatten:
          case LayerKind::Reshape: {
            t.quantized_input = t.input;
            return finish(std::move(flow));
          }
          case LayerKind::Quantize: {
            apply_quantizer(flow, *l.input_quantizer);
            t.quantized_input = flow.types;
            return finish(std::move(flow));
          }
          case LayerKind::Activation: {
            need_fixed(flow);
            t.quantized_input = t.input;
            if (l.activation == "relu") apply_relu(flow);
            apply_quantizer(flow, *l.output_quantizer);
            return finish(std::move(flow));
          }
          case LayerKind::Lut: {
            apply_quantizer(flow, *l.input_quantizer);
            t.quantized_input = flow.types;
            // The outputs are the table's entries: their types come from the output quantizer,
            // their ranges from the entries themselves.
            const std::vector<int64_t> off = lut_offsets(l);
            Flow out = fixed_flow(l.output_quantizer->size());
            for (int64_t n = 0; n < l.output_quantizer->size(); ++n) {
              const FixedType qt = quantizer_type(*l.output_quantizer, n);
              int128 lo = l.table[off[n]], hi = lo;
              for (int64_t e = off[n]; e < off[n + 1]; ++e) {
                lo = std::min<int128>(lo, l.table[e]);
                hi = std::max<int128>(hi, l.table[e]);
              }
              out.types[n] = qt;
              out.ranges[n] = qt.width == 0 ? Range{0, 0} : Range{lo, hi};
            }
            return finish(std::move(out));
          }
          case LayerKind::Softmax: {
            apply_quantizer(flow, *l.input_quantizer);
            t.quantized_input = flow.types;
            std::vector<int128> lo(flow.ranges.size()), hi(flow.ranges.size());
            for (size_t n = 0; n < lo.size(); ++n) {
              lo[n] = flow.ranges[n].lo;
              hi[n] = flow.ranges[n].hi;
            }
            try {
              t.softmax = softmax_types(l, flow.types, lo, hi);
            } catch (const ArchiveError& e) {
              throw ArchiveError(label + ": " + e.what());
            }
            const SoftmaxTypes& s = t.softmax;
            const Range pr{s.product_lo, s.product_hi};  // every e_j * r
            Flow prod = fixed_flow(flow.types.size());
            for (size_t n = 0; n < prod.types.size(); ++n) {
              prod.types[n] = s.product;
              prod.ranges[n] = pr;
            }
            set_acc(prod);
            apply_quantizer(prod, *l.output_quantizer);
            return finish(std::move(prod));
          }
          case LayerKind::Pool: {
            need_fixed(flow);
            t.quantized_input = t.input;
            Flow p = pool_flow(l, flow, label);
            set_acc(p);
            return finish(std::move(p));
          }
          case LayerKind::Concatenate: {
            for (const Flow* f : ins) need_fixed(*f);
            t.quantized_input = t.input;
            const ConcatMap m = concat_map(a, li);
            Flow c = fixed_flow(m.slot.size());
            for (size_t o = 0; o < m.slot.size(); ++o) {
              c.types[o] = ins[m.slot[o]]->types[m.element[o]];
              c.ranges[o] = ins[m.slot[o]]->ranges[m.element[o]];
            }
            return finish(std::move(c));
          }
          case LayerKind::Add: {
            for (const Flow* f : ins) need_fixed(*f);
            t.quantized_input = t.input;
            Flow acc = add_flow(ins, add_map(a, li), label);
            set_acc(acc);
            if (l.activation == "relu") apply_relu(acc);
            if (l.output_quantizer) apply_quantizer(acc, *l.output_quantizer);
            return finish(std::move(acc));
          }
          case LayerKind::Einsum: {
            for (const Flow* f : ins) need_fixed(*f);
            Flow qa = *ins.at(0), qb = *ins.at(1);
            apply_quantizer(qa, *l.input_quantizer);
            apply_quantizer(qb, *l.input2_quantizer);
            t.quantized_input = qa.types;
            t.quantized_input2 = qb.types;
            Flow acc = einsum_flow(einsum_map(a, li), qa, qb, label);
            set_acc(acc);
            if (l.output_quantizer) apply_quantizer(acc, *l.output_quantizer);
            return finish(std::move(acc));
          }
          case LayerKind::Dense:
          case LayerKind::Conv1d:
          case LayerKind::Conv2d:
          case LayerKind::Scale:
          case LayerKind::EinsumDense:
            break;  // the linear layers, after the switch
        }
        if (l.input_quantizer) apply_quantizer(flow, *l.input_quantizer);
        need_fixed(flow);
        t.quantized_input = flow.types;
        Flow acc = linear_flow(l, flow, label);
        set_acc(acc);
        if (l.activation == "relu") apply_relu(acc);
        if (l.output_quantizer) apply_quantizer(acc, *l.output_quantizer);
        return finish(std::move(acc));
      });
  if (flows.back().is_float)
    throw ArchiveError("the model has no quantizer: its output is not fixed-point");
  return out;
}

SoftmaxTypes softmax_types(const Layer& l, const std::vector<FixedType>& types,
                           const std::vector<int128>& lo, const std::vector<int128>& hi) {
  SoftmaxTypes s;
  s.n = l.input_shape.empty() ? 0 : l.input_shape.back();
  if (s.n < 1) throw ArchiveError("softmax layer '" + l.name + "' has an empty last axis");
  s.rows = static_cast<int64_t>(types.size()) / s.n;
  // The row max compares every input at the largest frac; pruned inputs are the value 0.
  int frac = 0;
  bool any = false;
  for (const FixedType& ty : types)
    if (ty.width > 0) {
      frac = any ? std::max(frac, ty.frac) : ty.frac;
      any = true;
    }
  int128 all_lo = 0, all_hi = 0;
  for (size_t n = 0; n < types.size(); ++n) {
    const int128 a = types[n].width == 0 ? 0 : align(lo[n], types[n].frac, frac);
    const int128 b = types[n].width == 0 ? 0 : align(hi[n], types[n].frac, frac);
    all_lo = n == 0 ? a : std::min(all_lo, a);
    all_hi = n == 0 ? b : std::max(all_hi, b);
  }
  s.max = type_of_range(all_lo, all_hi, frac);
  s.diff = type_of_range(std::min<int128>(all_lo - all_hi, 0), 0, frac);

  auto table_index = [&](const QuantSpec& q, const char* what) {
    const FixedType ty = quantizer_type(q, 0);
    if (ty.width > kMaxLutInputBits)
      throw ArchiveError(std::string(what) + " of softmax layer '" + l.name + "' is " +
                         std::to_string(ty.width) + " bits wide; a table takes at most " +
                         std::to_string(kMaxLutInputBits));
    return ty;
  };
  auto fill = [](const FixedType& index, const QuantSpec& out, const auto& fn) {
    const int128 first = index.width == 0 ? 0 : index.min_mantissa();
    const int128 last = index.width == 0 ? 0 : index.max_mantissa();
    std::vector<int64_t> table;
    table.reserve(static_cast<size_t>(last - first + 1));
    for (int128 m = first; m <= last; ++m) {
      const double v = std::ldexp(static_cast<double>(m), -index.frac);
      table.push_back(static_cast<int64_t>(quantize_double(fn(v), out, 0)));
    }
    return table;
  };
  s.exp_in = table_index(*l.exp_input_quantizer, "exp_input_quantizer");
  s.exp_out = quantizer_type(*l.exp_output_quantizer, 0);
  // The scale is folded into the table: EXP[u] = Q_eo(exp(c * min(u, 0))), computed in double
  // as c * u, then exp (the layer's eval forward does the same in float64).
  const double c_scale = l.input_scale;
  s.exp_table = fill(s.exp_in, *l.exp_output_quantizer,
                     [c_scale](double v) { return std::exp(c_scale * std::min(v, 0.0)); });
  const auto [elo, ehi] = std::minmax_element(s.exp_table.begin(), s.exp_table.end());
  s.sum = type_of_range(int128{*elo} * s.n, int128{*ehi} * s.n, s.exp_out.frac);
  s.inv_in = table_index(*l.inv_input_quantizer, "inv_input_quantizer");
  s.inv_out = quantizer_type(*l.inv_output_quantizer, 0);
  s.inv_table = fill(s.inv_in, *l.inv_output_quantizer,
                     [](double v) { return 1.0 / std::max(v, kSoftmaxMinSum); });
  const auto [rlo, rhi] = std::minmax_element(s.inv_table.begin(), s.inv_table.end());
  const int128 c[] = {int128{*elo} * *rlo, int128{*elo} * *rhi, int128{*ehi} * *rlo,
                      int128{*ehi} * *rhi};
  s.product_lo = *std::min_element(std::begin(c), std::end(c));
  s.product_hi = *std::max_element(std::begin(c), std::end(c));
  s.product = type_of_range(s.product_lo, s.product_hi, s.exp_out.frac + s.inv_out.frac);
  return s;
}

std::vector<double> exact_ebops(const Archive& a) {
  const auto types = infer_types(a);
  std::vector<double> out(a.layers.size(), 0.0);
  for (size_t li = 0; li < a.layers.size(); ++li) {
    const Layer& l = a.layers[li];
    if (l.kind == LayerKind::Softmax) {
      const SoftmaxTypes& s = types[li].softmax;
      const int be = std::max(0, s.exp_out.width - (s.exp_out.is_signed ? 1 : 0));
      const int br = std::max(0, s.inv_out.width - (s.inv_out.is_signed ? 1 : 0));
      out[li] = static_cast<double>(s.rows * s.n) * be * br;
      continue;
    }
    auto magnitude_bits = [](const FixedType& ty) {
      return std::max(0, ty.width - (ty.is_signed ? 1 : 0));
    };
    if (l.kind == LayerKind::Einsum) {
      const util::EinsumMap m = einsum_map(a, li);
      double e = 0;
      for (size_t t = 0; t < m.first.size(); ++t)
        e += static_cast<double>(magnitude_bits(types[li].quantized_input[m.first[t]])) *
             magnitude_bits(types[li].quantized_input2[m.second[t]]);
      out[li] = e;
      continue;
    }
    if (l.kind == LayerKind::Lut && l.function == kLearnedLutFunction) {
      // Learned tables: the LUT cost of each connection (its input and table output widths).
      double e = 0;
      for (int64_t n = 0; n < l.output_quantizer->size(); ++n)
        e += util::lut_connection_cost(types[li].quantized_input[n].width,
                                       quantizer_type(*l.output_quantizer, n).width);
      out[li] = e;
      continue;
    }
    if (!is_linear(l.kind)) continue;
    const LinearMap m = linear_map(l);
    const Constant& w = *l.kernel;
    double e = 0;
    for (int64_t o = 0; o < m.n_out(); ++o) {
      for (int64_t t = m.begin[o]; t < m.begin[o + 1]; ++t) {
        const FixedType& ty = types[li].quantized_input[m.input[t]];
        const int bits = std::max(0, ty.width - (ty.is_signed ? 1 : 0));
        if (bits > 0) e += bits * bit_span(w.mantissa[m.weight[t]]);
      }
      if (m.bias[o] >= 0) e += bit_span(l.bias->mantissa[m.bias[o]]);
    }
    out[li] = e;
  }
  return out;
}

}  // namespace hgqt::archive
