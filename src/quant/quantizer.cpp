// FixedQuantizer module: parameters, integer-bit tracking, bits for EBOPs.
#include "hgqt/quant/quantizer.h"

#include <sstream>

namespace hgqt::quant {

QuantizerOptions default_quantizer_options(Place place, std::vector<int64_t> shape) {
  QuantizerOptions o(std::move(shape));
  switch (place) {
    case Place::Weight:
      o.param(Parameterization::KBI).k(1).b(8).i(2).round(RoundingMode::RND)
          .overflow(OverflowMode::SAT_SYM).batch_axis(false);
      break;
    case Place::Bias:
      o.param(Parameterization::KIF).k(1).i(2).f(6).round(RoundingMode::RND)
          .overflow(OverflowMode::WRAP).batch_axis(false);
      break;
    case Place::Datalane:
      o.param(Parameterization::KIF).k(1).i(2).f(6).round(RoundingMode::RND)
          .overflow(OverflowMode::WRAP).batch_axis(true);
      break;
  }
  return o;
}

torch::Tensor round_ste(const torch::Tensor& x) { return x + (torch::round(x) - x).detach(); }

FixedQuantizerImpl::FixedQuantizerImpl(QuantizerOptions options_) : options(std::move(options_)) {
  reset();
}

void FixedQuantizerImpl::reset() {
  const auto& shape = options.shape();
  TORCH_CHECK(options.k() == 0 || options.k() == 1, "FixedQuantizer: k must be 0 or 1, got ",
              options.k());
  for (auto d : shape) TORCH_CHECK(d > 0, "FixedQuantizer: shape entries must be positive, got ", c10::IntArrayRef(shape));
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
  s << "hgqt::FixedQuantizer(" << to_string(options.param()) << ", "
    << to_string(options.round()) << ", " << to_string(options.overflow()) << ", "
    << to_string(options.granularity()) << ", params=" << c10::IntArrayRef(param_shape_) << ")";
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

torch::Tensor FixedQuantizerImpl::apply_eval(const torch::Tensor& x) const {
  return quantize(x, false, nullptr);
}

void FixedQuantizerImpl::set_calibration(bool on) {
  calibrating_ = on;
  if (!on) return;
  calib_min_ = torch::Tensor();
  calib_max_ = torch::Tensor();
}

void FixedQuantizerImpl::record_calibration(const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  auto [ke, ie, fe] = kif();
  auto xd = x.to(torch::kDouble);
  ke = ke.to(xd.device(), torch::kDouble);
  ie = ie.to(xd.device(), torch::kDouble);
  fe = fe.to(xd.device(), torch::kDouble);
  torch::Tensor v;
  if (options.overflow() == OverflowMode::WRAP) {
    auto y = xd * torch::exp2(fe);
    switch (options.round()) {
      case RoundingMode::TRN: y = torch::floor(y); break;
      case RoundingMode::RND_CONV: y = torch::round(y); break;  // half to even
      default: y = torch::floor(y + 0.5); break;                // RND; S_RND acts as RND in eval
    }
    v = y * torch::exp2(-fe);
  } else {
    v = apply_eval(x).to(torch::kDouble);
  }
  v = torch::where((ke + ie + fe) > 0, v, torch::zeros_like(v));
  if (options.batch_axis() && v.dim() > 0) {
    auto lo = std::get<0>(v.min(0)), hi = std::get<0>(v.max(0));
    calib_min_ = calib_min_.defined() ? torch::minimum(calib_min_, lo) : lo;
    calib_max_ = calib_max_.defined() ? torch::maximum(calib_max_, hi) : hi;
  } else {
    calib_min_ = calib_min_.defined() ? torch::minimum(calib_min_, v) : v;
    calib_max_ = calib_max_.defined() ? torch::maximum(calib_max_, v) : v;
  }
}

torch::Tensor FixedQuantizerImpl::forward(const torch::Tensor& x) {
  const bool training = is_training();
  if (calibrating_ && !training) record_calibration(x);
  if (!(training && options.overflow() == OverflowMode::WRAP)) return quantize(x, training, nullptr);
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

torch::Tensor FixedQuantizerImpl::bits_l1() const {
  if (options.param() == Parameterization::KBI) return torch::relu(b).sum();
  return torch::relu(i + f).sum();
}

void FixedQuantizerImpl::constrain() {
  torch::NoGradGuard no_grad;
  i.clamp_(options.i_min(), options.i_max());
  if (f.defined()) f.clamp_(options.f_min(), options.f_max());
  if (b.defined()) b.clamp_(options.b_min(), options.b_max());
}

int64_t FixedQuantizerImpl::param_count() const {
  int64_t n = 1;
  for (auto d : param_shape_) n *= d;
  return n;
}

}  // namespace hgqt::quant
