// The fixed-point quantize op: a fused CPU kernel and a generic ATen path, both inside one
// torch::autograd::Function whose backward implements the surrogate gradients.
#include "hgqt/quant/quantize.h"

#include <ATen/ExpandUtils.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <cmath>
#include <cstring>

namespace hgqt::quant {

namespace {

constexpr double kLn2 = 0.69314718055994530942;
// Integer bits are held inside this range in the forward pass (2^i stays finite and exact).
constexpr double kMaxAbsIntegerBits = 64.0;

std::atomic<bool> g_force_reference{false};


bool clips(OverflowMode m) { return m != OverflowMode::WRAP; }

// Exact round-half-even / floor / 2^n without libm calls. Doubles hold every integer below
// 2^52 exactly; larger values are integers already.
constexpr double kTwo52 = 4503599627370496.0;
// Branch-free (compiles to selects, so the row loops vectorize).
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

inline double floor_nb(double y) {
#if defined(__SSE4_1__) || !(defined(__x86_64__) || defined(__i386__))
  return std::floor(y);  // one roundsd / frintm instruction
#else
  const double r = rint_even_nb(y);
  return r - static_cast<double>(r > y);
#endif
}

template <RoundingMode RM>
inline double round_fast(double y, double u) {
  if constexpr (RM == RoundingMode::TRN) return floor_nb(y);
  if constexpr (RM == RoundingMode::RND) return floor_nb(y + 0.5);
  if constexpr (RM == RoundingMode::RND_CONV) return rint_even_nb(y);
  return floor_nb(y + u);
}

// Per-element parameters of the per-sample shape, precomputed once per call.
struct ElementParams {
  double scale;  // 2^f
  double inv;    // 2^-f
  double hi;     // 2^i - 2^-f
  double lo;     // -k 2^i (SAT) or -k hi (SAT_SYM)
  double two_i;  // 2^i
  int k, i, f;
  bool pruned;  // W <= 0
};

// For each element of `sample` (row-major), the flat index into a tensor of shape `param`
// broadcast to it. Empty when the shapes are equal (identity).
std::vector<int64_t> broadcast_map(c10::IntArrayRef param, const std::vector<int64_t>& sample) {
  if (param.vec() == sample) return {};
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

ParamView view_param(const torch::Tensor& t, const std::vector<int64_t>& sample) {
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
  p.scale = exp2_int(p.f);
  p.inv = exp2_int(-p.f);
  p.two_i = exp2_int(p.i);
  p.hi = p.two_i - p.inv;
  p.lo = overflow == OverflowMode::SAT_SYM ? -p.k * p.hi : -p.k * p.two_i;
  p.pruned = p.k + p.i + p.f <= 0;
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

// Structure-of-arrays copy of the element parameters for the vectorized row loops.
struct ParamArrays {
  std::vector<double> scale, inv, hi, lo, keep, ln2_inv, ln2_two_i, lo_di, lo_df;
  ParamArrays(const std::vector<ElementParams>& ps, OverflowMode overflow) {
    const size_t n = ps.size();
    for (auto* v : {&scale, &inv, &hi, &lo, &keep, &ln2_inv, &ln2_two_i, &lo_di, &lo_df}) v->resize(n);
    for (size_t j = 0; j < n; ++j) {
      const auto& p = ps[j];
      scale[j] = p.scale;
      inv[j] = p.inv;
      hi[j] = p.hi;
      lo[j] = p.lo;
      keep[j] = p.pruned ? 0.0 : 1.0;
      ln2_inv[j] = kLn2 * p.inv;
      ln2_two_i[j] = kLn2 * p.two_i;
      lo_di[j] = -p.k * kLn2 * p.two_i;
      lo_df[j] = overflow == OverflowMode::SAT_SYM ? -p.k * kLn2 * p.inv : 0.0;
    }
  }
};

int64_t grain_for(int64_t features) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, features)); }

// ---------------------------------------------------------------- fused CPU kernel
enum class Mode { Clip, Wrap, Plain };  // SAT modes; WRAP in eval; WRAP in training (no wrap)

template <typename scalar_t, RoundingMode RM, Mode MODE>
void forward_rows(const scalar_t* x, scalar_t* out, const scalar_t* noise, double* am,
                  int64_t begin, int64_t end, int64_t features, const ElementParams* ps,
                  const ParamArrays& pa) {
  const double* scale = pa.scale.data();
  const double* inv = pa.inv.data();
  const double* hi = pa.hi.data();
  const double* lo = pa.lo.data();
  const double* keep = pa.keep.data();
  for (int64_t n = begin; n < end; ++n) {
    const scalar_t* xr = x + n * features;
    scalar_t* outr = out + n * features;
    const scalar_t* nr = noise ? noise + n * features : nullptr;
    if constexpr (MODE == Mode::Wrap) {  // eval only: not on the training hot path
      for (int64_t j = 0; j < features; ++j) {
        const ElementParams& p = ps[j];
        double m = round_fast<RM>(static_cast<double>(xr[j]) * p.scale, nr ? static_cast<double>(nr[j]) : 0.5);
        if (am) am[j] = std::max(am[j], std::abs(m * p.inv));
        if (!p.pruned) m = overflow_fixed(m, p.k, p.i, p.f, OverflowMode::WRAP);
        outr[j] = p.pruned ? scalar_t(0) : static_cast<scalar_t>(m * p.inv);
      }
    } else {
      for (int64_t j = 0; j < features; ++j) {
        double v = static_cast<double>(xr[j]);
        if constexpr (MODE == Mode::Clip) v = std::min(std::max(v, lo[j]), hi[j]);
        const double u = RM == RoundingMode::S_RND ? static_cast<double>(nr[j]) : 0.5;
        const double xh = round_fast<RM>(v * scale[j], u) * inv[j];
        if (am) am[j] = std::max(am[j], std::abs(xh));
        outr[j] = static_cast<scalar_t>(xh * keep[j]);
      }
    }
  }
}

template <typename scalar_t, RoundingMode RM>
void forward_dispatch_mode(Mode mode, const scalar_t* x, scalar_t* out, const scalar_t* noise,
                           double* am, int64_t b, int64_t e, int64_t features,
                           const ElementParams* ps, const ParamArrays& pa) {
  switch (mode) {
    case Mode::Clip: return forward_rows<scalar_t, RM, Mode::Clip>(x, out, noise, am, b, e, features, ps, pa);
    case Mode::Wrap: return forward_rows<scalar_t, RM, Mode::Wrap>(x, out, noise, am, b, e, features, ps, pa);
    case Mode::Plain: return forward_rows<scalar_t, RM, Mode::Plain>(x, out, noise, am, b, e, features, ps, pa);
  }
}

template <typename scalar_t>
void forward_kernel(const scalar_t* x, scalar_t* out, const scalar_t* noise, double* absmax,
                    int64_t rows, int64_t features, const std::vector<ElementParams>& ps,
                    const QuantizeSettings& s) {
  const Mode mode = clips(s.overflow) ? Mode::Clip : (s.training ? Mode::Plain : Mode::Wrap);
  const RoundingMode rm = (s.round == RoundingMode::S_RND && !s.training) ? RoundingMode::RND : s.round;
  const int nthreads = at::get_num_threads();
  const ParamArrays pa(ps, s.overflow);
  std::vector<double> partial;
  if (absmax) partial.assign(static_cast<size_t>(nthreads * features), 0.0);
  at::parallel_for(0, rows, grain_for(features), [&](int64_t begin, int64_t end) {
    double* am = absmax ? partial.data() + at::get_thread_num() * features : nullptr;
    switch (rm) {
      case RoundingMode::TRN: return forward_dispatch_mode<scalar_t, RoundingMode::TRN>(mode, x, out, noise, am, begin, end, features, ps.data(), pa);
      case RoundingMode::RND: return forward_dispatch_mode<scalar_t, RoundingMode::RND>(mode, x, out, noise, am, begin, end, features, ps.data(), pa);
      case RoundingMode::RND_CONV: return forward_dispatch_mode<scalar_t, RoundingMode::RND_CONV>(mode, x, out, noise, am, begin, end, features, ps.data(), pa);
      case RoundingMode::S_RND: return forward_dispatch_mode<scalar_t, RoundingMode::S_RND>(mode, x, out, noise, am, begin, end, features, ps.data(), pa);
    }
  });
  if (absmax) {
    for (int t = 0; t < nthreads; ++t)
      for (int64_t j = 0; j < features; ++j)
        absmax[j] = std::max(absmax[j], partial[static_cast<size_t>(t * features + j)]);
  }
}

template <typename scalar_t, bool CLIP>
void backward_rows(const scalar_t* g, const scalar_t* x, const scalar_t* xh, scalar_t* dx,
                   double* pi, double* pf, int64_t begin, int64_t end, int64_t features,
                   const ParamArrays& pa) {
  const double* hi = pa.hi.data();
  const double* lo = pa.lo.data();
  const double* keep = pa.keep.data();
  const double* ln2_inv = pa.ln2_inv.data();
  const double* ln2_two_i = pa.ln2_two_i.data();
  const double* lo_di = pa.lo_di.data();
  const double* lo_df = pa.lo_df.data();
  for (int64_t n = begin; n < end; ++n) {
    const int64_t base = n * features;
    for (int64_t j = 0; j < features; ++j) {
      const double gv = static_cast<double>(g[base + j]);
      const double xv = static_cast<double>(x[base + j]);
      // Inside: straight through, d/df = ln2 (x - x_hat). Pruned (x_hat = 0): the same d/df.
      double df = kLn2 * (xv - static_cast<double>(xh[base + j])) * gv;
      double di = 0.0;
      double pass = keep[j];
      if constexpr (CLIP) {
        const bool up = xv > hi[j];
        const bool low = xv < lo[j];
        const double kept = keep[j];
        df = kept > 0 ? (up ? ln2_inv[j] * gv : (low ? lo_df[j] * gv : df)) : df;
        di = kept > 0 ? (up ? ln2_two_i[j] * gv : (low ? lo_di[j] * gv : 0.0)) : 0.0;
        pass = (up || low) ? 0.0 : kept;
      }
      dx[base + j] = static_cast<scalar_t>(gv * pass);
      pf[j] += df;
      pi[j] += di;
    }
  }
}

template <typename scalar_t>
void backward_kernel(const scalar_t* g, const scalar_t* x, const scalar_t* xh, scalar_t* dx,
                     double* di, double* df, int64_t rows, int64_t features,
                     const std::vector<ElementParams>& ps, const QuantizeSettings& s) {
  const bool clip = clips(s.overflow);
  const int nthreads = at::get_num_threads();
  const ParamArrays pa(ps, s.overflow);
  std::vector<double> part(static_cast<size_t>(2 * nthreads * features), 0.0);
  at::parallel_for(0, rows, grain_for(features), [&](int64_t begin, int64_t end) {
    double* pi = part.data() + 2 * at::get_thread_num() * features;
    double* pf = pi + features;
    if (clip)
      backward_rows<scalar_t, true>(g, x, xh, dx, pi, pf, begin, end, features, pa);
    else
      backward_rows<scalar_t, false>(g, x, xh, dx, pi, pf, begin, end, features, pa);
  });
  for (int t = 0; t < nthreads; ++t) {
    const double* pi = part.data() + 2 * t * features;
    const double* pf = pi + features;
    for (int64_t j = 0; j < features; ++j) {
      di[j] += pi[j];
      df[j] += pf[j];
    }
  }
}

// Sums per-element gradients into a parameter-shaped float tensor through its broadcast map.
torch::Tensor reduce_to_param(const std::vector<double>& per_element, const ParamView& v,
                              torch::ScalarType dtype) {
  std::vector<double> acc(static_cast<size_t>(v.data.numel()), 0.0);
  for (size_t j = 0; j < per_element.size(); ++j)
    acc[v.map.empty() ? j : static_cast<size_t>(v.map[j])] += per_element[j];
  return torch::from_blob(acc.data(), v.data.sizes(), torch::kDouble).to(dtype, /*non_blocking=*/false, /*copy=*/true);
}

// ---------------------------------------------------------------- generic ATen path
torch::Tensor round_tensor(const torch::Tensor& y, RoundingMode rm, const torch::Tensor& noise) {
  switch (rm) {
    case RoundingMode::TRN: return torch::floor(y);
    case RoundingMode::RND: return torch::floor(y + 0.5);
    case RoundingMode::RND_CONV: return torch::round(y);
    case RoundingMode::S_RND: return torch::floor(y + noise);
  }
  return y;
}

struct Bounds {
  torch::Tensor two_i, inv, hi, lo, pruned;
};

Bounds bounds_of(const torch::Tensor& k, const torch::Tensor& i, const torch::Tensor& f,
                 OverflowMode overflow) {
  Bounds b;
  b.two_i = torch::exp2(i);
  b.inv = torch::exp2(-f);
  b.hi = b.two_i - b.inv;
  b.lo = overflow == OverflowMode::SAT_SYM ? -k * b.hi : -k * b.two_i;
  b.pruned = (k + i + f) <= 0;
  return b;
}

torch::Tensor forward_reference(const torch::Tensor& x_in, const torch::Tensor& k,
                                const torch::Tensor& i, const torch::Tensor& f,
                                const torch::Tensor& noise, const QuantizeSettings& s,
                                torch::Tensor* absmax) {
  auto x = x_in.to(torch::kDouble);
  auto kd = k.to(x.device(), torch::kDouble), id = i.to(x.device(), torch::kDouble),
       fd = f.to(x.device(), torch::kDouble);
  Bounds b = bounds_of(kd, id, fd, s.overflow);
  if (clips(s.overflow)) x = torch::max(torch::min(x, b.hi), b.lo);
  const RoundingMode rm = (s.round == RoundingMode::S_RND && !s.training) ? RoundingMode::RND : s.round;
  auto m = round_tensor(x * torch::exp2(fd), rm, noise.defined() ? noise.to(torch::kDouble) : noise);
  if (absmax) {
    auto a = (m * b.inv).abs();
    *absmax = s.batch_axis ? std::get<0>(a.reshape({a.size(0), -1}).max(0)) : a.reshape({-1});
  }
  if (s.overflow == OverflowMode::WRAP && !s.training) {
    auto bits = id + fd;
    auto m_min = -kd * torch::exp2(bits);
    auto wrapped = m_min + torch::remainder(m - m_min, torch::exp2(kd + bits));
    m = torch::where(b.pruned, m, wrapped);
  }
  auto out = torch::where(b.pruned, torch::zeros_like(m), m * b.inv);
  return out.to(x_in.scalar_type());
}

// Returns dx and the per-element (broadcast to x) di, df.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> backward_reference(
    const torch::Tensor& g_in, const torch::Tensor& x_in, const torch::Tensor& xh_in,
    const torch::Tensor& k, const torch::Tensor& i, const torch::Tensor& f,
    const QuantizeSettings& s) {
  auto g = g_in.to(torch::kDouble), x = x_in.to(torch::kDouble), xh = xh_in.to(torch::kDouble);
  auto kd = k.to(x.device(), torch::kDouble), id = i.to(x.device(), torch::kDouble),
       fd = f.to(x.device(), torch::kDouble);
  Bounds b = bounds_of(kd, id, fd, s.overflow);
  auto zeros = torch::zeros_like(x);
  auto pruned = b.pruned.expand_as(x);
  torch::Tensor upper = zeros.to(torch::kBool), lower = upper;
  if (clips(s.overflow)) {
    upper = (x > b.hi) & ~pruned;
    lower = (x < b.lo) & ~pruned & ~upper;
  }
  auto inside = ~(pruned | upper | lower);
  auto dx = torch::where(inside, g, zeros);
  auto df = torch::where(inside, kLn2 * (x - xh) * g, zeros);
  df = df + torch::where(pruned, kLn2 * x * g, zeros);
  df = df + torch::where(upper, kLn2 * b.inv * g, zeros);
  auto di = torch::where(upper, kLn2 * b.two_i * g, zeros);
  di = di - torch::where(lower, kd * kLn2 * b.two_i * g, zeros);
  if (s.overflow == OverflowMode::SAT_SYM) df = df - torch::where(lower, kd * kLn2 * b.inv * g, zeros);
  return {dx.to(g_in.scalar_type()), di, df};
}

// ---------------------------------------------------------------- autograd function
bool use_kernel(const torch::Tensor& x, bool force_reference) {
  return !force_reference && x.is_cpu() &&
         (x.scalar_type() == torch::kFloat || x.scalar_type() == torch::kDouble);
}

std::vector<int64_t> sample_shape(const torch::Tensor& x, bool batch_axis) {
  auto sz = x.sizes().vec();
  if (batch_axis) {
    TORCH_CHECK(!sz.empty(), "fixed_quantize: input needs a batch axis, got a scalar");
    sz.erase(sz.begin());
  }
  return sz;
}

struct QuantizeFunction : public torch::autograd::Function<QuantizeFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x,
                               torch::Tensor k, torch::Tensor a, torch::Tensor c, int64_t param,
                               int64_t round, int64_t overflow, bool training, bool batch_axis,
                               bool reference, torch::Tensor absmax_out) {
    QuantizeSettings s{static_cast<Parameterization>(param), static_cast<RoundingMode>(round),
                       static_cast<OverflowMode>(overflow), training, batch_axis};
    const auto shape = sample_shape(x, batch_axis);
    for (const auto* t : {&k, &a, &c})
      TORCH_CHECK(at::is_expandable_to(t->sizes(), shape), "fixed_quantize: quantizer parameters of shape ",
                  t->sizes(), " do not broadcast to the per-sample shape ", c10::IntArrayRef(shape));
    torch::Tensor noise;
    if (s.round == RoundingMode::S_RND && training) noise = torch::rand_like(x);
    const bool want_absmax = absmax_out.numel() > 0;  // empty: not asked for
    // Integer-bit tracking rewrites i in place before backward: keep what this pass used.
    auto saved_param = [&](const torch::Tensor& t) { return want_absmax ? t.detach().clone() : t; };
    torch::Tensor xh;
    if (use_kernel(x, reference)) {
      auto xc = x.contiguous();
      xh = torch::empty_like(xc);
      const auto kv = view_param(k, shape), av = view_param(a, shape), cv = view_param(c, shape);
      int64_t features = 1;
      for (auto d : shape) features *= d;
      const int64_t rows = features == 0 ? 0 : xc.numel() / features;
      auto ps = element_params(kv, av, cv, features, s.param, s.overflow);
      double* am = want_absmax ? absmax_out.data_ptr<double>() : nullptr;
      AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "hgqt_quantize_forward", [&] {
        forward_kernel<scalar_t>(xc.data_ptr<scalar_t>(), xh.data_ptr<scalar_t>(),
                                 noise.defined() ? noise.data_ptr<scalar_t>() : nullptr, am, rows,
                                 features, ps, s);
      });
      ctx->save_for_backward({xc, xh, saved_param(k), saved_param(a), saved_param(c)});
    } else {
      auto [ke, ie, fe] = effective_kif(k, a, c, s.param);
      ke = ke.expand(shape);
      ie = ie.expand(shape);
      fe = fe.expand(shape);
      torch::Tensor am;
      xh = forward_reference(x, ke, ie, fe, noise, s, want_absmax ? &am : nullptr);
      if (want_absmax) absmax_out.copy_(am.view(shape));
      ctx->save_for_backward({x, xh, saved_param(k), saved_param(a), saved_param(c)});
    }
    ctx->saved_data["param"] = param;
    ctx->saved_data["overflow"] = overflow;
    ctx->saved_data["round"] = round;
    ctx->saved_data["training"] = training;
    ctx->saved_data["batch_axis"] = batch_axis;
    ctx->saved_data["reference"] = reference;
    return xh;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& xh = saved[1];
    const auto& k = saved[2];
    const auto& a = saved[3];
    const auto& c = saved[4];
    QuantizeSettings s{static_cast<Parameterization>(ctx->saved_data["param"].toInt()),
                       static_cast<RoundingMode>(ctx->saved_data["round"].toInt()),
                       static_cast<OverflowMode>(ctx->saved_data["overflow"].toInt()),
                       ctx->saved_data["training"].toBool(), ctx->saved_data["batch_axis"].toBool()};
    const bool reference = ctx->saved_data["reference"].toBool();
    const auto shape = sample_shape(x, s.batch_axis);
    auto g = grads[0];
    torch::Tensor dx, da, dc;
    const auto dtype = a.scalar_type();
    if (use_kernel(x, reference)) {
      g = g.to(x.scalar_type()).contiguous();
      dx = torch::empty_like(x);
      const auto kv = view_param(k, shape), av = view_param(a, shape), cv = view_param(c, shape);
      int64_t features = 1;
      for (auto d : shape) features *= d;
      const int64_t rows = features == 0 ? 0 : x.numel() / features;
      auto ps = element_params(kv, av, cv, features, s.param, s.overflow);
      std::vector<double> di(static_cast<size_t>(features), 0.0), df(di);
      AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "hgqt_quantize_backward", [&] {
        backward_kernel<scalar_t>(g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                                  xh.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(), di.data(),
                                  df.data(), rows, features, ps, s);
      });
      // KIF: (a, c) = (i, f). KBI: (a, c) = (b, i), f = b - i: d/db = df, d/di = di - df.
      if (s.param == Parameterization::KIF) {
        da = reduce_to_param(di, av, dtype);
        dc = reduce_to_param(df, cv, dtype);
      } else {
        std::vector<double> dic(di.size());
        for (size_t j = 0; j < di.size(); ++j) dic[j] = di[j] - df[j];
        da = reduce_to_param(df, av, dtype);
        dc = reduce_to_param(dic, cv, dtype);
      }
      da = da.to(a.device());
      dc = dc.to(c.device());
    } else {
      auto [ke, ie, fe] = effective_kif(k, a, c, s.param);
      auto [dxr, dir, dfr] = backward_reference(g, x, xh, ke.expand(shape), ie.expand(shape),
                                                fe.expand(shape), s);
      dx = dxr;
      auto di = s.batch_axis ? dir.sum(0) : dir;
      auto df = s.batch_axis ? dfr.sum(0) : dfr;
      if (s.param == Parameterization::KIF) {
        da = di;
        dc = df;
      } else {
        da = df;
        dc = di - df;
      }
      da = at::sum_to(da.to(dtype), a.sizes());
      dc = at::sum_to(dc.to(dtype), c.sizes());
    }
    return {dx, torch::Tensor(), da, dc, torch::Tensor(), torch::Tensor(), torch::Tensor(),
            torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

torch::Tensor apply_quantize(const torch::Tensor& x, const torch::Tensor& k, const torch::Tensor& a,
                             const torch::Tensor& c, const QuantizeSettings& s,
                             torch::Tensor* absmax, bool reference) {
  // LibTorch 1.13 rejects undefined tensors as Function inputs: an empty one means "not asked".
  torch::Tensor am_out = torch::empty({0}, x.options().dtype(torch::kDouble));
  if (absmax) {
    auto shape = sample_shape(x, s.batch_axis);
    am_out = torch::zeros(shape, x.options().dtype(torch::kDouble));
  }
  auto out = QuantizeFunction::apply(x, k, a, c, static_cast<int64_t>(s.param),
                                     static_cast<int64_t>(s.round), static_cast<int64_t>(s.overflow),
                                     s.training, s.batch_axis, reference, am_out);
  if (absmax) *absmax = am_out;
  return out;
}

}  // namespace

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

void set_force_reference_path(bool force) { g_force_reference.store(force); }

void update_integer_bits(torch::Tensor& i, const torch::Tensor& k, const torch::Tensor& a,
                         const torch::Tensor& c, Parameterization param,
                         const torch::Tensor& absmax, double decay, double i_min, double i_max) {
  torch::NoGradGuard no_grad;
  const auto shape = absmax.sizes().vec();
  if (i.is_cpu() && i.scalar_type() == torch::kFloat && i.is_contiguous() && !g_force_reference.load()) {
    int64_t features = absmax.numel();
    const auto kv = view_param(k, shape), av = view_param(a, shape), cv = view_param(c, shape);
    const auto ps = element_params(kv, av, cv, features, param, OverflowMode::WRAP);
    const auto imap = broadcast_map(i.sizes(), shape);
    auto am = absmax.to(torch::kDouble).contiguous();
    const double* amp = am.data_ptr<double>();
    std::vector<double> needed(static_cast<size_t>(i.numel()), -std::numeric_limits<double>::infinity());
    for (int64_t j = 0; j < features; ++j) {
      const size_t p = imap.empty() ? static_cast<size_t>(j) : static_cast<size_t>(imap[static_cast<size_t>(j)]);
      needed[p] = std::max(needed[p], std::ceil(std::log2(amp[j] + ps[static_cast<size_t>(j)].inv)));
    }
    float* ip = i.data_ptr<float>();
    for (size_t p = 0; p < needed.size(); ++p)
      ip[p] = static_cast<float>(std::min(i_max, std::max(i_min, std::max(ip[p] - decay, needed[p]))));
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
