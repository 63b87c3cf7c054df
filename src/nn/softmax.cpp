// QSoftmax: the table softmax of softmax.h.
#include "hgqt/nn/softmax.h"

#include <cmath>
#include <stdexcept>

#include "hgqt/archive/fixed.h"

namespace hgqt::nn {

using quant::Granularity;
using quant::OverflowMode;
using quant::QuantizerOptions;
using quant::RoundingMode;

namespace {

const char* stage_name(SoftmaxStage s) {
  switch (s) {
    case SoftmaxStage::ExpInput:
      return "exp_input";
    case SoftmaxStage::ExpOutput:
      return "exp_output";
    case SoftmaxStage::InvInput:
      return "inv_input";
    case SoftmaxStage::InvOutput:
      return "inv_output";
  }
  return "?";
}
}  // namespace

QuantizerOptions softmax_stage_defaults(SoftmaxStage stage, int64_t n) {
  QuantizerOptions o({1});
  o.param(quant::Parameterization::KIF).round(RoundingMode::RND).overflow(OverflowMode::SAT);
  o.granularity(Granularity::Tensor).batch_axis(true);
  const double table_bits = archive::kMaxLutInputBits;
  switch (stage) {
    case SoftmaxStage::ExpInput:
      // d <= 0: exp(-8) < 2^-11 is below the exp table's finest default step.
      o.k(1).i(3).f(3).i_max(8).f_max(table_bits - 1 - 8);
      break;
    case SoftmaxStage::ExpOutput:
    case SoftmaxStage::InvOutput:
      o.k(0).i(1).f(7);
      break;
    case SoftmaxStage::InvInput: {
      // The sum of n values of at most 1 is at most n: i bits with 2^i > n.
      int i = 0;
      while ((int64_t{1} << i) <= n) ++i;
      o.k(0).i(i).f(3).i_max(i).f_max(table_bits - i);
      break;
    }
  }
  return o;
}

QuantizerOptions softmax_output_defaults(std::vector<int64_t> shape) {
  QuantizerOptions o(std::move(shape));
  o.param(quant::Parameterization::KIF).k(0).i(1).f(7).round(RoundingMode::RND);
  o.overflow(OverflowMode::SAT).granularity(Granularity::Element).batch_axis(true);
  return o;
}

QSoftmaxImpl::QSoftmaxImpl(QSoftmaxOptions options_) : options(std::move(options_)) {
  reset();
}

void QSoftmaxImpl::reset() {
  const auto& shape = options.shape();
  if (!(options.input_scale() > 0) || !std::isfinite(options.input_scale()))
    throw std::invalid_argument("softmax: input_scale " + std::to_string(options.input_scale()) +
                                " is not a finite positive number");
  if (shape.empty() || shape.back() < 1)
    throw std::invalid_argument("softmax: the input shape " + shape_string(shape) +
                                " has no last axis to take the softmax over");
  const int64_t n = shape.back();
  std::vector<int64_t> row_shape = shape;
  row_shape.back() = 1;  // the sums and reciprocals: one per row
  auto stage = [&](SoftmaxStage s, const std::optional<QuantizerOptions>& given,
                   const std::vector<int64_t>& sh) {
    QuantizerOptions o = given ? *given : softmax_stage_defaults(s, n);
    if (o.granularity() != Granularity::Tensor)
      throw std::invalid_argument(std::string("softmax: ") + stage_name(s) +
                                  "_quantizer has one type for the whole layer (its tables are "
                                  "shared); granularity must be tensor");
    o.shape(sh).batch_axis(true);
    return quant::FixedQuantizer(o);
  };
  iq = register_module("iq", quant::FixedQuantizer(quantizer_for(options.input_quantizer(),
                                                                 quant::Place::Datalane, shape)));
  eiq = register_module("eiq", stage(SoftmaxStage::ExpInput, options.exp_input_quantizer(), shape));
  eoq =
      register_module("eoq", stage(SoftmaxStage::ExpOutput, options.exp_output_quantizer(), shape));
  iiq = register_module("iiq",
                        stage(SoftmaxStage::InvInput, options.inv_input_quantizer(), row_shape));
  ioq = register_module("ioq",
                        stage(SoftmaxStage::InvOutput, options.inv_output_quantizer(), row_shape));
  oq =
      register_module("oq", quant::FixedQuantizer(options.output_quantizer()
                                                      ? quantizer_for(options.output_quantizer(),
                                                                      quant::Place::Datalane, shape)
                                                      : softmax_output_defaults(shape)));
}

void QSoftmaxImpl::pretty_print(std::ostream& s) const {
  s << "hgqt::QSoftmax(" << shape_string(options.shape());
  if (options.input_scale() != 1.0) s << ", input_scale " << options.input_scale();
  s << ")";
}

torch::Tensor QSoftmaxImpl::forward(const torch::Tensor& x_in) {
  const auto x = iq->forward(x_in);
  const auto d = x - std::get<0>(x.max(-1, /*keepdim=*/true));
  auto u = torch::clamp_max(eiq->forward(d), 0.0);
  if (options.input_scale() != 1.0) u = u * options.input_scale();
  const auto e = eoq->forward(torch::exp(u));
  const auto s = iiq->forward(e.sum(-1, /*keepdim=*/true));
  const auto r = ioq->forward(1.0 / torch::clamp_min(s, archive::kSoftmaxMinSum));
  return oq->forward(e * r);
}

torch::Tensor QSoftmaxImpl::ebops() const {
  int64_t elements = 1;
  for (int64_t d : options.shape()) elements *= d;
  return (eoq->bits().sum() * ioq->bits().sum()) * static_cast<double>(elements);
}

std::vector<NamedQuantizer> QSoftmaxImpl::quantizers() const {
  return {{"input", iq, {}},      {"exp_input", eiq, {}},  {"exp_output", eoq, {}},
          {"inv_input", iiq, {}}, {"inv_output", ioq, {}}, {"output", oq, {}}};
}

std::vector<int64_t> QSoftmaxImpl::output_shape(const std::vector<int64_t>& in) const {
  if (in != options.shape())
    throw std::invalid_argument("softmax layer built for " + shape_string(options.shape()) +
                                " got " + shape_string(in));
  return in;
}

}  // namespace hgqt::nn
