// QUnaryLUT and the registry of tabulated functions.
#include "hgqt/nn/lut.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <stdexcept>

namespace hgqt::nn {

namespace {
std::mutex& registry_mutex() {
  static std::mutex m;
  return m;
}

std::map<std::string, LutFunction>& registry() {
  static std::map<std::string, LutFunction> r = {
      {"tanh", [](const torch::Tensor& x) { return torch::tanh(x); }},
      {"sigmoid", [](const torch::Tensor& x) { return torch::sigmoid(x); }},
      {"exp", [](const torch::Tensor& x) { return torch::exp(x); }},
      {"softplus", [](const torch::Tensor& x) { return torch::nn::functional::softplus(x); }},
      {"sin", [](const torch::Tensor& x) { return torch::sin(x); }},
      {"cos", [](const torch::Tensor& x) { return torch::cos(x); }},
      {"gelu", [](const torch::Tensor& x) { return torch::gelu(x); }},
      {"square", [](const torch::Tensor& x) { return x * x; }},
      {"abs", [](const torch::Tensor& x) { return torch::abs(x); }},
  };
  return r;
}

}  // namespace

void register_lut_function(const std::string& name, LutFunction fn) {
  if (name.empty() || !fn)
    throw std::invalid_argument("register_lut_function: empty name or function");
  std::lock_guard<std::mutex> lock(registry_mutex());
  registry()[name] = std::move(fn);
}

const LutFunction& lut_function(const std::string& name) {
  std::lock_guard<std::mutex> lock(registry_mutex());
  auto it = registry().find(name);
  if (it == registry().end()) {
    std::string known;
    for (const auto& [n, f] : registry()) known += (known.empty() ? "" : ", ") + n;
    throw std::invalid_argument("unknown lut function '" + name + "' (known: " + known +
                                "; register others with hgqt::nn::register_lut_function)");
  }
  return it->second;
}

std::vector<std::string> lut_function_names() {
  std::lock_guard<std::mutex> lock(registry_mutex());
  std::vector<std::string> out;
  for (const auto& [n, f] : registry()) out.push_back(n);
  return out;
}

QUnaryLUTImpl::QUnaryLUTImpl(QUnaryLUTOptions options_) : options(std::move(options_)) {
  reset();
}

void QUnaryLUTImpl::reset() {
  fn = lut_function(options.function());
  iq = register_module(
      "iq", quant::FixedQuantizer(
                quantizer_for(options.input_quantizer(), quant::Place::Datalane, options.shape())));
  oq = register_module(
      "oq", quant::FixedQuantizer(quantizer_for(options.output_quantizer(), quant::Place::Datalane,
                                                options.shape())));
}

void QUnaryLUTImpl::pretty_print(std::ostream& s) const {
  s << "hgqt::QUnaryLUT(" << options.function() << ", " << shape_string(options.shape()) << ")";
}

torch::Tensor QUnaryLUTImpl::forward(const torch::Tensor& x) {
  return oq->forward(fn(iq->forward(x)));
}

std::vector<NamedQuantizer> QUnaryLUTImpl::quantizers() const {
  return {{"input", iq, {}}, {"output", oq, {}}};
}

std::vector<int64_t> QUnaryLUTImpl::output_shape(const std::vector<int64_t>& in) const {
  if (in != options.shape())
    throw std::invalid_argument("lut layer built for " + shape_string(options.shape()) + " got " +
                                shape_string(in));
  return in;
}

// ------------------------------------------------------------------------- QLearnedLUT
QLearnedLUTImpl::QLearnedLUTImpl(QLearnedLUTOptions options_) : options(std::move(options_)) {
  reset();
}

void QLearnedLUTImpl::reset() {
  const auto& s = options.shape();
  if (s.empty() || shape_numel(s) <= 0)
    throw std::invalid_argument("learned_lut: needs a non-empty per-sample shape, got " +
                                shape_string(s));
  if (options.hidden_layers() != 0 && options.hidden_layers() != 1)
    throw std::invalid_argument("learned_lut: hidden_layers must be 0 or 1, got " +
                                std::to_string(options.hidden_layers()));
  if (options.hidden() < 1 || options.hidden() > 64)
    throw std::invalid_argument("learned_lut: hidden must be in [1, 64], got " +
                                std::to_string(options.hidden()));
  // The fan-in of the sum the block takes over the first axis: each function's output starts
  // with a spread of about 1 / sqrt(fan-in), so that the sum starts near unit scale.
  const double fan_in = static_cast<double>(s[0]);
  std::vector<int64_t> sh = s;
  sh.push_back(options.hidden());
  if (options.hidden_layers() == 1) {
    const double h = static_cast<double>(options.hidden());
    w1 = register_parameter("w1", torch::randn(sh));
    b1 = register_parameter("b1", torch::randn(sh) * 0.5);
    w2 = register_parameter("w2", torch::randn(sh) / std::sqrt(h * fan_in));
  } else {
    w2 = register_parameter("w2", torch::randn(s) / std::sqrt(fan_in));
  }
  b2 = register_parameter("b2", torch::zeros(s));
  iq = register_module("iq", quant::FixedQuantizer(quantizer_for(options.input_quantizer(),
                                                                 quant::Place::Datalane, s)));
  oq = register_module("oq", quant::FixedQuantizer(quantizer_for(options.output_quantizer(),
                                                                 quant::Place::Datalane, s)));
}

void QLearnedLUTImpl::pretty_print(std::ostream& s) const {
  s << "hgqt::QLearnedLUT(" << shape_string(options.shape()) << ", hidden "
    << (options.hidden_layers() ? options.hidden() : 0) << ")";
}

torch::Tensor QLearnedLUTImpl::functions(const torch::Tensor& u, const torch::Tensor& e) const {
  auto pick = [&](const torch::Tensor& p, bool per_unit) {
    const auto q = p.to(u.scalar_type());
    if (!e.defined()) return q;
    return per_unit ? q.reshape({-1, q.size(-1)}).index_select(0, e)
                    : q.reshape({-1}).index_select(0, e);
  };
  if (options.hidden_layers() == 0) return u * pick(w2, false) + pick(b2, false);
  const auto a = torch::tanh(u.unsqueeze(-1) * pick(w1, true) + pick(b1, true));
  const auto v = pick(w2, true);
  auto g = pick(b2, false);
  for (int64_t j = 0; j < options.hidden(); ++j) g = g + a.select(-1, j) * v.select(-1, j);
  return g;
}

torch::Tensor QLearnedLUTImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == static_cast<int64_t>(options.shape().size()) + 1 &&
                  x.sizes().slice(1).vec() == options.shape(),
              "learned_lut built for ", shape_string(options.shape()), " got a batch ", x.sizes());
  const auto u = iq->forward(x);
  if (!frozen()) return oq->forward(functions(u));
  // The tables: element e's entry at u's mantissa (exact: u is on e's grid).
  const auto f = std::get<2>(iq->kif()).to(torch::kDouble).expand(options.shape()).reshape({-1});
  const int64_t n = f.numel();
  const auto mant =
      torch::round(u.to(torch::kDouble).reshape({u.size(0), n}) * torch::exp2(f)).to(torch::kLong);
  const auto idx = frozen_offsets_.to(u.device()) + (mant - frozen_min_.to(u.device()));
  return frozen_values_.to(u.device()).index({idx}).to(u.scalar_type()).view(u.sizes());
}

void QLearnedLUTImpl::freeze_like(const QLearnedLUTImpl& other) {
  if (other.options.shape() != options.shape())
    throw std::invalid_argument("learned_lut: cannot take the tables of a layer of shape " +
                                shape_string(other.options.shape()));
  frozen_values_ = other.frozen_values_;
  frozen_offsets_ = other.frozen_offsets_;
  frozen_min_ = other.frozen_min_;
}

void QLearnedLUTImpl::freeze(const std::vector<double>& values, const std::vector<int64_t>& offsets,
                             const std::vector<int64_t>& min_mantissa) {
  const int64_t n = shape_numel(options.shape());
  if (static_cast<int64_t>(offsets.size()) != n + 1 ||
      static_cast<int64_t>(min_mantissa.size()) != n ||
      offsets.back() != static_cast<int64_t>(values.size()))
    throw std::invalid_argument("learned_lut: tables of " + std::to_string(values.size()) +
                                " entries do not match " + std::to_string(n) + " elements");
  frozen_values_ = torch::tensor(values, torch::kDouble);
  frozen_offsets_ =
      torch::tensor(std::vector<int64_t>(offsets.begin(), offsets.end() - 1), torch::kLong);
  frozen_min_ = torch::tensor(min_mantissa, torch::kLong);
}

torch::Tensor QLearnedLUTImpl::ebops() const {
  // b = k + i + f: the differentiable bits (i + f) plus the sign bit.
  auto width = [](const quant::FixedQuantizer& q) {
    const auto b = q->bits();
    return b + std::get<0>(q->kif()).to(b.dtype());
  };
  const auto bi = width(iq).expand(options.shape());
  const auto bo = width(oq).expand(options.shape());
  const auto c = torch::where(
      bi >= 5, torch::exp2(torch::clamp_max(bi - 5, util::kMaxLutCostExponent)), bi / 5);
  const auto live = (bi > 0).to(bi.dtype());
  return ((c * bo / 2 + bo) * live).sum();
}

std::vector<NamedQuantizer> QLearnedLUTImpl::quantizers() const {
  return {{"input", iq, {}}, {"output", oq, {}}};
}

std::vector<int64_t> QLearnedLUTImpl::output_shape(const std::vector<int64_t>& in) const {
  if (in != options.shape())
    throw std::invalid_argument("learned_lut layer built for " + shape_string(options.shape()) +
                                " got " + shape_string(in));
  return in;
}

}  // namespace hgqt::nn
