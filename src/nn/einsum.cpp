// QEinsum (einsum.h).
#include "hgqt/nn/einsum.h"

#include <cmath>
#include <stdexcept>

namespace hgqt::nn {

QEinsumImpl::QEinsumImpl(QEinsumOptions options_)
    : options(std::move(options_)), equation(util::parse_einsum(options.equation())) {
  reset();
}

void QEinsumImpl::reset() {
  equation = util::parse_einsum(options.equation());
  const auto out = util::einsum_output_shape(equation, options.shape_a(), options.shape_b());
  torch_equation_ = "..." + equation.a + ",..." + equation.b + "->..." + equation.out;
  iq = register_module(
      "iq", quant::FixedQuantizer(quantizer_for(options.input_quantizer(), quant::Place::Datalane,
                                                options.shape_a())));
  iq2 = register_module(
      "iq2", quant::FixedQuantizer(quantizer_for(options.input2_quantizer(), quant::Place::Datalane,
                                                 options.shape_b())));
  if (options.output_quantizer())
    oq = register_module("oq", quant::FixedQuantizer(quantizer_for(options.output_quantizer(),
                                                                   quant::Place::Datalane, out)));
}

void QEinsumImpl::pretty_print(std::ostream& s) const {
  s << "hgqt::QEinsum(" << equation.text() << ", " << shape_string(options.shape_a()) << ", "
    << shape_string(options.shape_b()) << ")";
}

torch::Tensor QEinsumImpl::forward(const torch::Tensor&) {
  throw std::invalid_argument("einsum layer takes two inputs, got 1 (use forward_many)");
}

torch::Tensor QEinsumImpl::forward_many(const std::vector<torch::Tensor>& xs) {
  if (xs.size() != 2)
    throw std::invalid_argument("einsum layer takes two inputs, got " + std::to_string(xs.size()));
  for (const auto& x : xs)
    if (!x.defined() || x.dim() < 1 || x.size(0) != xs[0].size(0))
      throw std::invalid_argument("einsum: inputs must be batch tensors of one batch size");
  output_shape_many({xs[0].sizes().slice(1).vec(), xs[1].sizes().slice(1).vec()});
  const auto y = torch::einsum(torch_equation_, {iq->forward(xs[0]), iq2->forward(xs[1])});
  return oq ? oq->forward(y) : y;
}

torch::Tensor QEinsumImpl::ebops() const {
  // Every product meets one element of each operand: the same einsum over the bit maps, summed
  // over the outputs, counts sum bits(a) * bits(b) over all products.
  const auto ba = iq->bits().expand(options.shape_a());
  const auto bb = iq2->bits().expand(options.shape_b());
  return torch::einsum(equation.text(), {ba, bb}).sum();
}

std::vector<NamedQuantizer> QEinsumImpl::quantizers() const {
  std::vector<NamedQuantizer> out{{"input", iq, {}}, {"input2", iq2, {}}};
  if (oq) out.push_back({"output", oq, {}});
  return out;
}

std::vector<int64_t> QEinsumImpl::output_shape(const std::vector<int64_t>&) const {
  throw std::invalid_argument("einsum layer takes two inputs, got 1");
}

std::vector<int64_t> QEinsumImpl::output_shape_many(
    const std::vector<std::vector<int64_t>>& shapes) const {
  if (shapes.size() != 2)
    throw std::invalid_argument("einsum layer takes two inputs, got " +
                                std::to_string(shapes.size()));
  if (shapes[0] != options.shape_a() || shapes[1] != options.shape_b())
    throw std::invalid_argument("einsum layer " + equation.text() + " built for " +
                                shape_string(options.shape_a()) + " and " +
                                shape_string(options.shape_b()) + " got " +
                                shape_string(shapes[0]) + " and " + shape_string(shapes[1]));
  return util::einsum_output_shape(equation, shapes[0], shapes[1]);
}

// ------------------------------------------------------------------------- QEinsumDense
QEinsumDenseImpl::QEinsumDenseImpl(QEinsumDenseOptions options_)
    : options(std::move(options_)), equation(util::parse_einsum(options.equation())) {
  reset();
}

void QEinsumDenseImpl::reset() {
  equation = util::parse_einsum(options.equation());
  const auto& ks = options.kernel_shape();
  out_shape_ = util::einsum_output_shape(equation, options.input_shape(), ks);
  torch_equation_ = "..." + equation.a + "," + equation.b + "->..." + equation.out;
  // Glorot uniform over the kernel's summed (fan in) and output (fan out) axes.
  int64_t fan_in = 1, fan_out = 1;
  for (size_t d = 0; d < ks.size(); ++d)
    (equation.out.find(equation.b[d]) == std::string::npos ? fan_in : fan_out) *= ks[d];
  const double limit = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  kernel = register_parameter("kernel", torch::empty(ks).uniform_(-limit, limit));
  const int64_t last = out_shape_.empty() ? 1 : out_shape_.back();
  if (options.bias()) bias = register_parameter("bias", torch::zeros({last}));
  iq = register_module(
      "iq", quant::FixedQuantizer(quantizer_for(options.input_quantizer(), quant::Place::Datalane,
                                                options.input_shape())));
  kq = register_module("kq", quant::FixedQuantizer(quantizer_for(options.kernel_quantizer(),
                                                                 quant::Place::Weight, ks)));
  if (options.bias())
    bq = register_module("bq", quant::FixedQuantizer(quantizer_for(options.bias_quantizer(),
                                                                   quant::Place::Bias, {last})));
  if (options.output_quantizer())
    oq =
        register_module("oq", quant::FixedQuantizer(quantizer_for(
                                  options.output_quantizer(), quant::Place::Datalane, out_shape_)));
}

void QEinsumDenseImpl::pretty_print(std::ostream& s) const {
  s << "hgqt::QEinsumDense(" << equation.text() << ", " << shape_string(options.input_shape())
    << " -> " << shape_string(out_shape_) << ")";
}

torch::Tensor QEinsumDenseImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() >= 1 && x.sizes().slice(1).vec() == options.input_shape(),
              "einsum_dense expects input [batch, ", c10::IntArrayRef(options.input_shape()),
              "], got ", x.sizes());
  auto y = torch::einsum(torch_equation_, {iq->forward(x), kq->forward(kernel)});
  if (bias.defined()) y = y + bq->forward(bias);
  y = apply_activation(y, options.activation());
  return oq ? oq->forward(y) : y;
}

torch::Tensor QEinsumDenseImpl::ebops() const {
  const auto bx = iq->bits().expand(options.input_shape());
  const auto bw = kq->bits().expand(options.kernel_shape());
  auto e = torch::einsum(equation.text(), {bx, bw}).sum();
  if (bq) e = e + bq->bits().mean() * static_cast<double>(shape_numel(out_shape_));
  return e;
}

std::vector<NamedQuantizer> QEinsumDenseImpl::quantizers() const {
  std::vector<NamedQuantizer> out{{"input", iq, {}}, {"kernel", kq, kernel}};
  if (bq) out.push_back({"bias", bq, bias});
  if (oq) out.push_back({"output", oq, {}});
  return out;
}

std::vector<int64_t> QEinsumDenseImpl::output_shape(const std::vector<int64_t>& in) const {
  if (in != options.input_shape())
    throw std::invalid_argument("einsum_dense layer built for " +
                                shape_string(options.input_shape()) + " got " + shape_string(in));
  return out_shape_;
}

}  // namespace hgqt::nn
