// The fixed-point quantize op: a fused CPU kernel and a generic ATen path, both inside one
// torch::autograd::Function whose backward implements the surrogate gradients.
#include "hgqt/quant/quantize.h"

#include <ATen/ExpandUtils.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <cmath>

namespace hgqt::quant {

namespace {

constexpr double kLn2 = 0.69314718055994530942;
// Integer bits are held inside this range in the forward pass (2^i stays finite and exact).
constexpr double kMaxAbsIntegerBits = 64.0;

std::atomic<bool> g_force_reference{false};

// Element classes of the backward pass.
enum : uint8_t { kInside = 0, kUpper = 1, kLower = 2, kPruned = 3 };

bool clips(OverflowMode m) { return m != OverflowMode::WRAP; }

// Per-element parameters of the per-sample shape, precomputed once per call.
struct ElementParams {
  double scale;  // 2^f
  double inv;    // 2^-f
  double hi;     // 2^i - 2^-f
  double lo;     // -k 2^i (SAT) or -k hi (SAT_SYM)
  double two_i;  // 2^i
  int k, i, f;
  bool pruned;   // W <= 0
};

std::vector<ElementParams> element_params(const torch::Tensor& k, const torch::Tensor& i,
                                          const torch::Tensor& f, OverflowMode overflow) {
  auto kd = k.to(torch::kCPU, torch::kDouble).contiguous();
  auto id = i.to(torch::kCPU, torch::kDouble).contiguous();
  auto fd = f.to(torch::kCPU, torch::kDouble).contiguous();
  const int64_t n = kd.numel();
  const double* kp = kd.data_ptr<double>();
  const double* ip = id.data_ptr<double>();
  const double* fp = fd.data_ptr<double>();
  std::vector<ElementParams> out(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    ElementParams& p = out[static_cast<size_t>(j)];
    p.k = static_cast<int>(kp[j]);
    p.i = static_cast<int>(ip[j]);
    p.f = static_cast<int>(fp[j]);
    p.scale = std::ldexp(1.0, p.f);
    p.inv = std::ldexp(1.0, -p.f);
    p.two_i = std::ldexp(1.0, p.i);
    p.hi = p.two_i - p.inv;
    p.lo = overflow == OverflowMode::SAT_SYM ? -p.k * p.hi : -p.k * p.two_i;
    p.pruned = p.k + p.i + p.f <= 0;
  }
  return out;
}

int64_t grain_for(int64_t features) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, features)); }

// ---------------------------------------------------------------- fused CPU kernel
template <typename scalar_t>
void forward_kernel(const scalar_t* x, scalar_t* out, const scalar_t* noise, double* absmax,
                    int64_t rows, int64_t features, const std::vector<ElementParams>& ps,
                    const QuantizeSettings& s) {
  const bool clip = clips(s.overflow);
  const bool wrap = s.overflow == OverflowMode::WRAP && !s.training;
  const RoundingMode rm = (s.round == RoundingMode::S_RND && !s.training) ? RoundingMode::RND : s.round;
  const int nthreads = at::get_num_threads();
  std::vector<double> partial;
  if (absmax) partial.assign(static_cast<size_t>(nthreads * features), 0.0);
  at::parallel_for(0, rows, grain_for(features), [&](int64_t begin, int64_t end) {
    double* am = absmax ? partial.data() + at::get_thread_num() * features : nullptr;
    for (int64_t n = begin; n < end; ++n) {
      const int64_t base = n * features;
      for (int64_t j = 0; j < features; ++j) {
        const ElementParams& p = ps[static_cast<size_t>(j)];
        double v = static_cast<double>(x[base + j]);
        const double u = noise ? static_cast<double>(noise[base + j]) : 0.5;
        if (clip) v = v > p.hi ? p.hi : (v < p.lo ? p.lo : v);
        double m = round_fixed(v * p.scale, rm, u);
        if (am) am[j] = std::max(am[j], std::abs(m * p.inv));
        if (wrap && !p.pruned) m = overflow_fixed(m, p.k, p.i, p.f, OverflowMode::WRAP);
        out[base + j] = p.pruned ? scalar_t(0) : static_cast<scalar_t>(m * p.inv);
      }
    }
  });
  if (absmax) {
    for (int t = 0; t < nthreads; ++t)
      for (int64_t j = 0; j < features; ++j)
        absmax[j] = std::max(absmax[j], partial[static_cast<size_t>(t * features + j)]);
  }
}

template <typename scalar_t>
void backward_kernel(const scalar_t* g, const scalar_t* x, const scalar_t* xh, scalar_t* dx,
                     double* di, double* df, int64_t rows, int64_t features,
                     const std::vector<ElementParams>& ps, const QuantizeSettings& s) {
  const bool clip = clips(s.overflow);
  const bool sym = s.overflow == OverflowMode::SAT_SYM;
  const int nthreads = at::get_num_threads();
  std::vector<double> part(static_cast<size_t>(2 * nthreads * features), 0.0);
  at::parallel_for(0, rows, grain_for(features), [&](int64_t begin, int64_t end) {
    double* pi = part.data() + 2 * at::get_thread_num() * features;
    double* pf = pi + features;
    for (int64_t n = begin; n < end; ++n) {
      const int64_t base = n * features;
      for (int64_t j = 0; j < features; ++j) {
        const ElementParams& p = ps[static_cast<size_t>(j)];
        const double gv = static_cast<double>(g[base + j]);
        const double xv = static_cast<double>(x[base + j]);
        if (p.pruned) {
          dx[base + j] = scalar_t(0);
          pf[j] += kLn2 * xv * gv;
        } else if (clip && xv > p.hi) {
          dx[base + j] = scalar_t(0);
          pi[j] += kLn2 * p.two_i * gv;
          pf[j] += kLn2 * p.inv * gv;
        } else if (clip && xv < p.lo) {
          dx[base + j] = scalar_t(0);
          pi[j] -= p.k * kLn2 * p.two_i * gv;
          if (sym) pf[j] -= p.k * kLn2 * p.inv * gv;
        } else {
          dx[base + j] = g[base + j];
          pf[j] += kLn2 * (xv - static_cast<double>(xh[base + j])) * gv;
        }
      }
    }
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
    auto [ke, ie, fe] = effective_kif(k, a, c, s.param);
    const auto shape = sample_shape(x, batch_axis);
    TORCH_CHECK(at::is_expandable_to(ke.sizes(), shape),
                "fixed_quantize: quantizer parameters of shape ", ke.sizes(),
                " do not broadcast to the per-sample shape ", c10::IntArrayRef(shape));
    ke = ke.expand(shape);
    ie = ie.expand(shape);
    fe = fe.expand(shape);
    torch::Tensor noise;
    if (s.round == RoundingMode::S_RND && training) noise = torch::rand_like(x);
    const bool want_absmax = absmax_out.numel() > 0;  // empty: not asked for
    torch::Tensor xh;
    if (use_kernel(x, reference)) {
      auto xc = x.contiguous();
      xh = torch::empty_like(xc);
      const int64_t features = ke.numel();
      const int64_t rows = features == 0 ? 0 : xc.numel() / features;
      auto ps = element_params(ke, ie, fe, s.overflow);
      std::vector<double> am(want_absmax ? static_cast<size_t>(features) : 0, 0.0);
      AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "hgqt_quantize_forward", [&] {
        forward_kernel<scalar_t>(xc.data_ptr<scalar_t>(), xh.data_ptr<scalar_t>(),
                                 noise.defined() ? noise.data_ptr<scalar_t>() : nullptr,
                                 want_absmax ? am.data() : nullptr, rows, features, ps, s);
      });
      if (want_absmax)
        absmax_out.copy_(torch::from_blob(am.data(), {features}, torch::kDouble).view(shape));
      ctx->save_for_backward({xc, xh, ke, ie, fe});
    } else {
      torch::Tensor am;
      xh = forward_reference(x, ke, ie, fe, noise, s, want_absmax ? &am : nullptr);
      if (want_absmax) absmax_out.copy_(am.view(shape));
      ctx->save_for_backward({x, xh, ke, ie, fe});
    }
    ctx->saved_data["param"] = param;
    ctx->saved_data["overflow"] = overflow;
    ctx->saved_data["round"] = round;
    ctx->saved_data["training"] = training;
    ctx->saved_data["batch_axis"] = batch_axis;
    ctx->saved_data["reference"] = reference;
    ctx->saved_data["a_shape"] = a.sizes().vec();
    ctx->saved_data["c_shape"] = c.sizes().vec();
    return xh;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const auto& x = saved[0];
    const auto& xh = saved[1];
    const auto& ke = saved[2];
    const auto& ie = saved[3];
    const auto& fe = saved[4];
    QuantizeSettings s{static_cast<Parameterization>(ctx->saved_data["param"].toInt()),
                       static_cast<RoundingMode>(ctx->saved_data["round"].toInt()),
                       static_cast<OverflowMode>(ctx->saved_data["overflow"].toInt()),
                       ctx->saved_data["training"].toBool(), ctx->saved_data["batch_axis"].toBool()};
    const bool reference = ctx->saved_data["reference"].toBool();
    const auto a_shape = ctx->saved_data["a_shape"].toIntVector();
    const auto c_shape = ctx->saved_data["c_shape"].toIntVector();
    auto g = grads[0];
    torch::Tensor dx, di, df;  // di, df per element of the per-sample shape (double)
    if (use_kernel(x, reference)) {
      g = g.to(x.scalar_type()).contiguous();
      dx = torch::empty_like(x);
      const int64_t features = ke.numel();
      const int64_t rows = features == 0 ? 0 : x.numel() / features;
      auto ps = element_params(ke, ie, fe, s.overflow);
      di = torch::zeros(ke.sizes(), torch::kDouble);
      df = torch::zeros(ke.sizes(), torch::kDouble);
      AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "hgqt_quantize_backward", [&] {
        backward_kernel<scalar_t>(g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                                  xh.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(),
                                  di.data_ptr<double>(), df.data_ptr<double>(), rows, features, ps,
                                  s);
      });
    } else {
      auto [dxr, dir, dfr] = backward_reference(g, x, xh, ke, ie, fe, s);
      dx = dxr;
      di = s.batch_axis ? dir.sum(0) : dir;
      df = s.batch_axis ? dfr.sum(0) : dfr;
    }
    // KIF: (a, c) = (i, f). KBI: (a, c) = (b, i), f = b - i, so d/db = d/df, d/di = di - df.
    torch::Tensor da, dc;
    if (s.param == Parameterization::KIF) {
      da = di;
      dc = df;
    } else {
      da = df;
      dc = di - df;
    }
    auto dtype = fe.scalar_type();
    da = at::sum_to(da.to(dtype), a_shape);
    dc = at::sum_to(dc.to(dtype), c_shape);
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

}  // namespace hgqt::quant
