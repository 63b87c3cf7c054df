// FixedQuantizer module: parameters, integer-bit tracking, bits for EBOPs.
#include "hgqt/quant/quantizer.h"

#include <algorithm>
#include <cmath>
#include <sstream>

namespace hgqt::quant {

QuantizerOptions default_quantizer_options(Place place, std::vector<int64_t> shape) {
  QuantizerOptions o(std::move(shape));
  switch (place) {
    case Place::Weight:
      o.param(Parameterization::KBI)
          .k(1)
          .b(8)
          .i(2)
          .round(RoundingMode::RND)
          .overflow(OverflowMode::SAT_SYM)
          .batch_axis(false);
      break;
    case Place::Bias:
      o.param(Parameterization::KIF)
          .k(1)
          .i(2)
          .f(6)
          .round(RoundingMode::RND)
          .overflow(OverflowMode::WRAP)
          .batch_axis(false);
      break;
    case Place::Datalane:
      o.param(Parameterization::KIF)
          .k(1)
          .i(2)
          .f(6)
          .round(RoundingMode::RND)
          .overflow(OverflowMode::WRAP)
          .batch_axis(true);
      break;
  }
  return o;
}

torch::Tensor round_ste(const torch::Tensor& x) {
  return x + (torch::round(x) - x).detach();
}

FixedQuantizerImpl::FixedQuantizerImpl(QuantizerOptions options_) : options(std::move(options_)) {
  reset();
}

void FixedQuantizerImpl::reset() {
  const auto& shape = options.shape();
  TORCH_CHECK(options.k() == 0 || options.k() == 1, "FixedQuantizer: k must be 0 or 1, got ",
              options.k());
  for (auto d : shape)
    TORCH_CHECK(d > 0, "FixedQuantizer: shape entries must be positive, got ",
                c10::IntArrayRef(shape));
  switch (options.granularity()) {
    case Granularity::Tensor:
      param_shape_.assign(shape.size(), 1);
      break;
    case Granularity::Channel:
      param_shape_.assign(shape.size(), 1);
      if (!shape.empty()) param_shape_.back() = shape.back();
      break;
    case Granularity::Element:
      param_shape_ = shape;
      break;
  }
  const bool wrap = options.overflow() == OverflowMode::WRAP;
  const bool train_bits = options.trainable();
  k = register_buffer("k", torch::full(param_shape_, static_cast<float>(options.k())));
  auto i0 = torch::full(param_shape_, static_cast<float>(options.i()));
  // Integer bits of WRAP quantizers follow the data (section 4); SAT ones are learned.
  if (wrap || !train_bits)
    i = register_buffer("i", i0);
  else
    i = register_parameter("i", i0);
  if (options.param() == Parameterization::KIF) {
    f = register_parameter("f", torch::full(param_shape_, static_cast<float>(options.f())),
                           train_bits);
  } else {
    b = register_parameter("b", torch::full(param_shape_, static_cast<float>(options.b())),
                           train_bits);
  }
}

void FixedQuantizerImpl::pretty_print(std::ostream& s) const {
  s << "hgqt::FixedQuantizer(" << to_string(options.param()) << ", " << to_string(options.round())
    << ", " << to_string(options.overflow()) << ", " << to_string(options.granularity())
    << ", params=" << c10::IntArrayRef(param_shape_) << ")";
}

QuantizeSettings FixedQuantizerImpl::settings(bool training) const {
  return QuantizeSettings{options.param(), options.round(), options.overflow(), training,
                          options.batch_axis()};
}

torch::Tensor FixedQuantizerImpl::quantize(const torch::Tensor& x, bool training,
                                           torch::Tensor* absmax) const {
  const bool kif_param = options.param() == Parameterization::KIF;
  return fixed_quantize(x, k, kif_param ? i : b, kif_param ? f : i, settings(training), absmax);
}

QuantPlanPtr FixedQuantizerImpl::plan_for(const torch::Tensor& x, bool training) const {
  return make_quant_plan(k, param_a(), param_c(), settings(training), x, force_reference_path());
}

torch::Tensor FixedQuantizerImpl::apply_eval(const torch::Tensor& x) const {
  return quantize(x, false, nullptr);
}

void FixedQuantizerImpl::set_calibration(bool on) {
  calibrating_ = on;
  if (!on) return;
  calib_min_ = torch::Tensor();
  calib_max_ = torch::Tensor();
}

namespace {
// Widens the calibration record [lo_acc, hi_acc] by [lo, hi] (undefined: empty so far).
void merge_range(torch::Tensor& lo_acc, torch::Tensor& hi_acc, const torch::Tensor& lo,
                 const torch::Tensor& hi) {
  lo_acc = lo_acc.defined() ? torch::minimum(lo_acc, lo) : lo;
  hi_acc = hi_acc.defined() ? torch::maximum(hi_acc, hi) : hi;
}
}  // namespace

void FixedQuantizerImpl::record_calibration(const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  // The value before WRAP is the training form of a WRAP quantizer (rounding, no wrap); SAT modes
  // clip as in eval; S_RND acts as RND outside training; pruned elements give 0. The ATen path,
  // for inputs the eval kernel does not record (other devices and dtypes).
  auto s = settings(options.overflow() == OverflowMode::WRAP);
  if (s.round == RoundingMode::S_RND) s.round = RoundingMode::RND;
  auto v = quant_forward(*make_quant_plan(k, param_a(), param_c(), s, x, /*reference=*/true), x)
               .to(torch::kDouble);
  if (options.batch_axis() && v.dim() > 0)
    merge_range(calib_min_, calib_max_, std::get<0>(v.min(0)), std::get<0>(v.max(0)));
  else
    merge_range(calib_min_, calib_max_, v, v);
}

torch::Tensor FixedQuantizerImpl::forward(const torch::Tensor& x) {
  const bool training = is_training();
  if (calibrating_ && !training) {
    auto plan = plan_for(x, false);
    if (!records_calibration(*plan)) {
      record_calibration(x);
    } else {
      // The record from the quantizing pass itself (float32 CPU inputs).
      QuantCalibration c;
      auto out = quant_forward(*plan, x, {}, false, &c);
      merge_range(calib_min_, calib_max_, c.min, c.max);
      return out;
    }
  }
  if (!(training && options.overflow() == OverflowMode::WRAP))
    return quantize(x, training, nullptr);
  torch::Tensor absmax;
  auto out = quantize(x, true, &absmax);
  track_integer_bits(absmax);
  return out;
}

void FixedQuantizerImpl::track_integer_bits(const torch::Tensor& absmax) {
  const bool kif_param = options.param() == Parameterization::KIF;
  update_integer_bits(i, k, kif_param ? i : b, kif_param ? f : i, options.param(), absmax,
                      options.i_decay(), options.i_min(), options.i_max());
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> FixedQuantizerImpl::kif() const {
  const auto& a = options.param() == Parameterization::KIF ? i : b;
  const auto& c = options.param() == Parameterization::KIF ? f : i;
  return effective_kif(k, a, c, options.param());
}

torch::Tensor FixedQuantizerImpl::bits() const {
  if (options.param() == Parameterization::KBI)
    return torch::relu(round_ste(b.clamp(0, kMaxMagnitudeBits)));
  auto ir = torch::round(i).detach();
  if (i.requires_grad()) ir = round_ste(i);
  return torch::relu(ir + round_ste(f));
}

FixedQuantizerImpl::BitsAndSlopes FixedQuantizerImpl::bits_and_slopes() const {
  torch::NoGradGuard no_grad;
  BitsAndSlopes out;
  const bool kbi = options.param() == Parameterization::KBI;
  const auto& a = param_a();
  const auto& c = param_c();
  const bool slope_a = a.requires_grad();
  const bool slope_c = !kbi && c.requires_grad();  // KBI: bits() does not read i
  if (a.is_cpu() && a.scalar_type() == torch::kFloat && a.is_contiguous() && c.is_cpu() &&
      c.scalar_type() == torch::kFloat && c.is_contiguous() && a.sizes() == c.sizes()) {
    // The definition of bits() element by element (torch::round is half to even: nearbyint).
    const int64_t n = a.numel();
    out.bits = torch::empty_like(a);
    if (slope_a) out.da = torch::empty_like(a);
    if (slope_c) out.dc = torch::empty_like(a);
    const float* pa = a.data_ptr<float>();
    const float* pc = c.data_ptr<float>();
    float* pb = out.bits.data_ptr<float>();
    float* pda = slope_a ? out.da.data_ptr<float>() : nullptr;
    float* pdc = slope_c ? out.dc.data_ptr<float>() : nullptr;
    const float bmax = static_cast<float>(kMaxMagnitudeBits);
    for (int64_t j = 0; j < n; ++j) {
      float raw, pass_a = 1.0f;
      if (kbi) {
        raw = std::nearbyint(std::min(std::max(pa[j], 0.0f), bmax));
        pass_a = (pa[j] >= 0.0f && pa[j] <= bmax) ? 1.0f : 0.0f;
      } else {
        raw = std::nearbyint(pa[j]) + std::nearbyint(pc[j]);
      }
      const float on = raw > 0.0f ? 1.0f : 0.0f;
      pb[j] = raw > 0.0f ? raw : 0.0f;
      if (pda) pda[j] = on * pass_a;
      if (pdc) pdc[j] = on;
    }
    return out;
  }
  // Any device or dtype: the same with ATen ops.
  torch::Tensor raw, pass_a;
  if (kbi) {
    raw = torch::round(a.clamp(0, kMaxMagnitudeBits));
    pass_a = (a >= 0).logical_and_(a <= kMaxMagnitudeBits);
  } else {
    raw = torch::round(a) + torch::round(c);
  }
  auto on = raw > 0;
  out.bits = torch::relu(raw);
  if (slope_a) out.da = (kbi ? on.logical_and(pass_a) : on).to(a.scalar_type());
  if (slope_c) out.dc = on.to(c.scalar_type());
  return out;
}

torch::Tensor FixedQuantizerImpl::bits_l1() const {
  if (options.param() == Parameterization::KBI) return torch::relu(b).sum();
  return torch::relu(i + f).sum();
}

namespace {
void clamp_in_place(torch::Tensor& t, double lo, double hi) {
  if (t.is_cpu() && t.scalar_type() == torch::kFloat && t.is_contiguous()) {
    // One loop instead of an ATen call per tensor: constrain runs after every optimizer step.
    float* p = t.data_ptr<float>();
    const float l = static_cast<float>(lo), h = static_cast<float>(hi);
    for (int64_t j = 0, n = t.numel(); j < n; ++j) p[j] = std::min(std::max(p[j], l), h);
  } else {
    t.clamp_(lo, hi);
  }
}
}  // namespace

void FixedQuantizerImpl::constrain() {
  torch::NoGradGuard no_grad;
  clamp_in_place(i, options.i_min(), options.i_max());
  if (f.defined()) clamp_in_place(f, options.f_min(), options.f_max());
  if (b.defined()) clamp_in_place(b, options.b_min(), options.b_max());
}

int64_t FixedQuantizerImpl::param_count() const {
  int64_t n = 1;
  for (auto d : param_shape_) n *= d;
  return n;
}

}  // namespace hgqt::quant
