// Quantized layers and their EBOPs.
#include "hgqt/nn/layers.h"

#include <stdexcept>

#include "hgqt/nn/conv.h"

namespace hgqt::nn {

using quant::Place;
using quant::QuantizerOptions;

torch::Tensor QLayer::ebops() const {
  return torch::zeros({});
}

torch::Tensor QLayer::forward_many(const std::vector<torch::Tensor>& xs) {
  if (xs.size() != 1)
    throw std::invalid_argument(type_name() + " layer takes one input, got " +
                                std::to_string(xs.size()));
  return forward(xs[0]);
}

std::vector<int64_t> QLayer::output_shape_many(
    const std::vector<std::vector<int64_t>>& input_shapes) const {
  if (input_shapes.size() != 1)
    throw std::invalid_argument(type_name() + " layer takes one input, got " +
                                std::to_string(input_shapes.size()));
  return output_shape(input_shapes[0]);
}

Activation parse_activation(const std::string& s) {
  if (s == "linear") return Activation::Linear;
  if (s == "relu") return Activation::ReLU;
  throw std::invalid_argument("unknown activation '" + s + "' (expected linear or relu)");
}

const char* to_string(Activation a) {
  return a == Activation::ReLU ? "relu" : "linear";
}

torch::Tensor apply_activation(const torch::Tensor& x, Activation a) {
  return a == Activation::ReLU ? torch::relu(x) : x;
}

torch::Tensor glorot_uniform(const std::vector<int64_t>& shape) {
  if (shape.size() < 2)
    throw std::invalid_argument("glorot_uniform: a kernel has two or more axes");
  int64_t receptive = 1;
  for (size_t d = 0; d + 2 < shape.size(); ++d) receptive *= shape[d];
  const int64_t fan_in = receptive * shape[shape.size() - 2];
  const int64_t fan_out = receptive * shape.back();
  const double limit = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  return torch::empty(shape).uniform_(-limit, limit);
}

QuantizerOptions quantizer_for(const std::optional<QuantizerOptions>& given, Place place,
                               std::vector<int64_t> shape) {
  QuantizerOptions o = given ? *given : quant::default_quantizer_options(place, shape);
  o.shape(std::move(shape));
  o.batch_axis(place == Place::Datalane);
  return o;
}

int64_t shape_numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

std::string shape_string(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t n = 0; n < s.size(); ++n) out += (n ? ", " : "") + std::to_string(s[n]);
  return out + "]";
}

std::vector<int64_t> dense_input_shape(const std::string& layer, int64_t in_features,
                                       const std::vector<int64_t>& input_shape) {
  if (input_shape.empty()) return {in_features};
  for (int64_t d : input_shape)
    if (d <= 0)
      throw std::invalid_argument(layer + ": input_shape " + shape_string(input_shape) +
                                  " has a size that is not positive");
  if (input_shape.back() != in_features)
    throw std::invalid_argument(layer + ": input_shape " + shape_string(input_shape) +
                                " must end in in_features = " + std::to_string(in_features));
  return input_shape;
}

std::vector<int64_t> dense_output_shape(const std::vector<int64_t>& input_shape,
                                        int64_t out_features) {
  std::vector<int64_t> out = input_shape;
  out.back() = out_features;
  return out;
}

// ------------------------------------------------------------------------- QDense
QDenseImpl::QDenseImpl(QDenseOptions options_) : options(std::move(options_)) {
  reset();
}

void QDenseImpl::reset() {
  const int64_t in = options.in_features(), out = options.out_features();
  if (in <= 0 || out <= 0)
    throw std::invalid_argument("QDense: in and out features must be positive, got " +
                                std::to_string(in) + " and " + std::to_string(out));
  options.input_shape(dense_input_shape("QDense", in, options.input_shape()));
  const auto& in_shape = options.input_shape();
  // Glorot uniform kernel, zero bias (the Keras defaults HGQ models are trained with).
  kernel = register_parameter("kernel", glorot_uniform({in, out}));
  if (options.bias()) bias = register_parameter("bias", torch::zeros({out}));
  iq = register_module("iq", quant::FixedQuantizer(quantizer_for(options.input_quantizer(),
                                                                 Place::Datalane, in_shape)));
  kq = register_module("kq", quant::FixedQuantizer(quantizer_for(options.kernel_quantizer(),
                                                                 Place::Weight, {in, out})));
  if (options.bias())
    bq = register_module(
        "bq", quant::FixedQuantizer(quantizer_for(options.bias_quantizer(), Place::Bias, {out})));
  if (options.output_quantizer())
    oq = register_module(
        "oq", quant::FixedQuantizer(quantizer_for(options.output_quantizer(), Place::Datalane,
                                                  dense_output_shape(in_shape, out))));
}

void QDenseImpl::pretty_print(std::ostream& s) const {
  s << "hgqt::QDense(";
  if (per_position()) s << shape_string(options.input_shape()) << ", ";
  s << options.in_features() << " -> " << options.out_features() << ", "
    << to_string(options.activation()) << ")";
}

torch::Tensor QDenseImpl::forward(const torch::Tensor& x) {
  if (!is_training() || per_position()) return forward_composed(x);
  return forward_chained(x, {});
}

torch::Tensor QDenseImpl::forward_chained(const torch::Tensor& x, DenseChain chain) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == options.in_features() && !per_position(),
              "QDense expects input [batch, ", c10::IntArrayRef(options.input_shape()), "], got ",
              x.sizes());
  TORCH_CHECK(is_training() || (!chain.relu_input && !chain.defer_relu),
              "QDense: chained forward outside training");
  auto y = fused_dense_forward(*this, x, chain);
  return oq ? oq->forward(y) : y;
}

torch::Tensor QDenseImpl::forward_composed(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == static_cast<int64_t>(options.input_shape().size()) + 1 &&
                  x.sizes().slice(1).vec() == options.input_shape(),
              "QDense expects input [batch, ", c10::IntArrayRef(options.input_shape()), "], got ",
              x.sizes());
  auto xq = iq->forward(x);
  auto w = kq->forward(kernel);
  auto y = conv_nd(xq, w, bias.defined() ? bq->forward(bias) : torch::Tensor(), {}, "valid");
  y = apply_activation(y, options.activation());
  return oq ? oq->forward(y) : y;
}

torch::Tensor QDenseImpl::ebops() const {
  return per_position() ? ebops_composed() : fused_dense_ebops(*this);
}

torch::Tensor QDenseImpl::ebops_composed() const {
  const int64_t in = options.in_features(), out = options.out_features();
  auto e = conv_ebops(iq->bits(), options.input_shape(), kq->bits(), {in, out}, {}, "valid");
  if (bq)
    e = e + bias_ebops(bq->bits(), shape_numel(dense_output_shape(options.input_shape(), out)));
  return e;
}

std::vector<NamedQuantizer> QDenseImpl::quantizers() const {
  std::vector<NamedQuantizer> qs{{"input", iq, {}}, {"kernel", kq, kernel}};
  if (bq) qs.push_back({"bias", bq, bias});
  if (oq) qs.push_back({"output", oq, {}});
  return qs;
}

std::vector<int64_t> QDenseImpl::output_shape(const std::vector<int64_t>& in) const {
  if (in != options.input_shape())
    throw std::invalid_argument("dense layer expects per-sample input " +
                                shape_string(options.input_shape()) + ", got " + shape_string(in));
  return dense_output_shape(in, options.out_features());
}

// ------------------------------------------------------------------------- QActivation
QActivationImpl::QActivationImpl(QActivationOptions options_) : options(std::move(options_)) {
  reset();
}

void QActivationImpl::reset() {
  q = register_module("q", quant::FixedQuantizer(quantizer_for(options.quantizer(), Place::Datalane,
                                                               options.shape())));
}

torch::Tensor QActivationImpl::forward(const torch::Tensor& x) {
  return q->forward(apply_activation(x, options.activation()));
}

std::vector<NamedQuantizer> QActivationImpl::quantizers() const {
  return {{"output", q, {}}};
}

std::vector<int64_t> QActivationImpl::output_shape(const std::vector<int64_t>& in) const {
  if (in != options.shape())
    throw std::invalid_argument("activation layer built for " + shape_string(options.shape()) +
                                " got " + shape_string(in));
  return in;
}

// ------------------------------------------------------------------------- Flatten
torch::Tensor FlattenImpl::forward(const torch::Tensor& x) {
  return x.reshape({x.size(0), -1});
}

std::vector<int64_t> FlattenImpl::output_shape(const std::vector<int64_t>& in) const {
  int64_t n = 1;
  for (auto d : in) n *= d;
  return {n};
}

// ------------------------------------------------------------------------- Quantize
QuantizeImpl::QuantizeImpl(QuantizerOptions options_) : options(std::move(options_)) {
  reset();
}

void QuantizeImpl::reset() {
  options.batch_axis(true);
  q = register_module("q", quant::FixedQuantizer(options));
}

torch::Tensor QuantizeImpl::forward(const torch::Tensor& x) {
  return q->forward(x);
}

std::vector<NamedQuantizer> QuantizeImpl::quantizers() const {
  return {{"input", q, {}}};
}

std::vector<int64_t> QuantizeImpl::output_shape(const std::vector<int64_t>& in) const {
  if (in != options.shape())
    throw std::invalid_argument("quantize layer built for " + shape_string(options.shape()) +
                                " got " + shape_string(in));
  return in;
}

}  // namespace hgqt::nn
