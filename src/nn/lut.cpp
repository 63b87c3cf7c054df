// QUnaryLUT and the registry of tabulated functions.
#include "hgqt/nn/lut.h"

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

}  // namespace hgqt::nn
