// Batch normalization: folded into dense / conv layers, and stand-alone scale and offset.
#include "hgqt/nn/batchnorm.h"

#include <cmath>
#include <stdexcept>

#include "hgqt/nn/layers.h"

namespace hgqt::nn {

using quant::Place;
using quant::QuantizerOptions;

namespace {
// Per-channel (last axis) mean and biased variance over every other axis.
std::pair<torch::Tensor, torch::Tensor> channel_moments(const torch::Tensor& z) {
  std::vector<int64_t> dims;
  for (int64_t d = 0; d < z.dim() - 1; ++d) dims.push_back(d);
  auto mu = z.mean(dims);
  auto var = (z - mu).square().mean(dims);
  return {mu, var};
}

// moving = momentum * moving + (1 - momentum) * batch (Keras), without gradient.
void update_moving(torch::Tensor& moving_mean, torch::Tensor& moving_var, const torch::Tensor& mu,
                   const torch::Tensor& var, double momentum) {
  torch::NoGradGuard no_grad;
  moving_mean.mul_(momentum).add_(mu.detach(), 1.0 - momentum);
  moving_var.mul_(momentum).add_(var.detach(), 1.0 - momentum);
}

// The statistics folded in: moving ones, or those of the last training batch.
std::pair<torch::Tensor, torch::Tensor> statistics(const torch::Tensor& moving_mean,
                                                   const torch::Tensor& moving_var,
                                                   const torch::Tensor& batch_mean,
                                                   const torch::Tensor& batch_var, bool use_moving,
                                                   const std::string& name) {
  if (use_moving) return {moving_mean, moving_var};
  if (!batch_mean.defined())
    throw std::logic_error(name + ": folded(false) needs a training forward pass first");
  return {batch_mean, batch_var};
}

// The forward pass of a folded layer L (dense: no spatial axes, strides / padding unused).
template <class L>
torch::Tensor folded_forward(L& l, const torch::Tensor& x, const std::vector<int64_t>& strides,
                             const std::string& padding) {
  auto xq = l.iq->forward(x);
  torch::Tensor mu, var;
  if (l.is_training()) {
    // Batch statistics of the float, unfolded layer output (unquantized kernel), with gradient.
    auto z = conv_nd(xq, l.kernel, l.bias, strides, padding);
    std::tie(mu, var) = channel_moments(z);
    update_moving(l.moving_mean, l.moving_var, mu, var, l.options.momentum());
    l.batch_mean = mu.detach().clone();
    l.batch_var = var.detach().clone();
  } else {
    mu = l.moving_mean;
    var = l.moving_var;
  }
  auto [wf, bf] = fold_batchnorm(l.kernel, l.bias, l.gamma, l.beta, mu, var, l.options.eps());
  auto y = conv_nd(xq, l.kq->forward(wf), l.bq->forward(bf), strides, padding);
  y = apply_activation(y, l.options.activation());
  return l.oq ? l.oq->forward(y) : y;
}

template <class L>
std::pair<torch::Tensor, torch::Tensor> folded_constants(const L& l, bool use_moving) {
  torch::NoGradGuard no_grad;
  auto [mu, var] =
      statistics(l.moving_mean, l.moving_var, l.batch_mean, l.batch_var, use_moving, l.type_name());
  auto [wf, bf] = fold_batchnorm(l.kernel, l.bias, l.gamma, l.beta, mu, var, l.options.eps());
  return {wf.detach(), bf.detach()};
}

template <class L>
std::vector<NamedQuantizer> folded_quantizers(const L& l) {
  auto [wf, bf] = l.folded(true);
  std::vector<NamedQuantizer> qs{{"input", l.iq, {}}, {"kernel", l.kq, wf}, {"bias", l.bq, bf}};
  if (l.oq) qs.push_back({"output", l.oq, {}});
  return qs;
}

void check_bn_options(const std::string& name, double momentum, double eps) {
  if (!(momentum >= 0 && momentum <= 1))
    throw std::invalid_argument(name + ": momentum must be in [0, 1], got " +
                                std::to_string(momentum));
  if (!(eps > 0))
    throw std::invalid_argument(name + ": eps must be positive, got " + std::to_string(eps));
}
}  // namespace

std::pair<torch::Tensor, torch::Tensor> fold_batchnorm(
    const torch::Tensor& w, const torch::Tensor& b, const torch::Tensor& gamma,
    const torch::Tensor& beta, const torch::Tensor& mean, const torch::Tensor& var, double eps) {
  auto s = gamma * torch::rsqrt(var + eps);
  auto wf = w * s;  // broadcasts over the kernel's last (output channel) axis
  // The mean moves into the bias scaled by s.
  auto bf = (b.defined() ? (b - mean) : -mean) * s + beta;
  return {wf, bf};
}

// ------------------------------------------------------------------------- QDenseBatchNorm
QDenseBatchNormImpl::QDenseBatchNormImpl(QDenseBatchNormOptions options_)
    : options(std::move(options_)) {
  reset();
}

void QDenseBatchNormImpl::reset() {
  const int64_t in = options.in_features(), out = options.out_features();
  if (in <= 0 || out <= 0)
    throw std::invalid_argument("QDenseBatchNorm: in and out features must be positive, got " +
                                std::to_string(in) + " and " + std::to_string(out));
  check_bn_options("QDenseBatchNorm", options.momentum(), options.eps());
  options.input_shape(dense_input_shape("QDenseBatchNorm", in, options.input_shape()));
  const auto& in_shape = options.input_shape();
  kernel = register_parameter("kernel", glorot_uniform({in, out}));
  if (options.bias()) bias = register_parameter("bias", torch::zeros({out}));
  gamma = register_parameter("gamma", torch::ones({out}));
  beta = register_parameter("beta", torch::zeros({out}));
  moving_mean = register_buffer("moving_mean", torch::zeros({out}));
  moving_var = register_buffer("moving_var", torch::ones({out}));
  batch_mean = batch_var = torch::Tensor();
  iq = register_module("iq", quant::FixedQuantizer(quantizer_for(options.input_quantizer(),
                                                                 Place::Datalane, in_shape)));
  kq = register_module("kq", quant::FixedQuantizer(quantizer_for(options.kernel_quantizer(),
                                                                 Place::Weight, {in, out})));
  bq = register_module(
      "bq", quant::FixedQuantizer(quantizer_for(options.bias_quantizer(), Place::Bias, {out})));
  if (options.output_quantizer())
    oq = register_module(
        "oq", quant::FixedQuantizer(quantizer_for(options.output_quantizer(), Place::Datalane,
                                                  dense_output_shape(in_shape, out))));
}

void QDenseBatchNormImpl::pretty_print(std::ostream& s) const {
  s << "hgqt::QDenseBatchNorm(";
  if (options.input_shape().size() > 1) s << shape_string(options.input_shape()) << ", ";
  s << options.in_features() << " -> " << options.out_features() << ", "
    << to_string(options.activation()) << ")";
}

torch::Tensor QDenseBatchNormImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == static_cast<int64_t>(options.input_shape().size()) + 1 &&
                  x.sizes().slice(1).vec() == options.input_shape(),
              "QDenseBatchNorm expects input [batch, ", c10::IntArrayRef(options.input_shape()),
              "], got ", x.sizes());
  return folded_forward(*this, x, {}, "valid");
}

torch::Tensor QDenseBatchNormImpl::ebops() const {
  const int64_t in = options.in_features(), out = options.out_features();
  return conv_ebops(iq->bits(), options.input_shape(), kq->bits(), {in, out}, {}, "valid") +
         bias_ebops(bq->bits(), shape_numel(dense_output_shape(options.input_shape(), out)));
}

std::vector<NamedQuantizer> QDenseBatchNormImpl::quantizers() const {
  return folded_quantizers(*this);
}

std::pair<torch::Tensor, torch::Tensor> QDenseBatchNormImpl::folded(bool use_moving) const {
  return folded_constants(*this, use_moving);
}

std::vector<int64_t> QDenseBatchNormImpl::output_shape(const std::vector<int64_t>& in) const {
  if (in != options.input_shape())
    throw std::invalid_argument("dense_bn layer expects per-sample input " +
                                shape_string(options.input_shape()) + ", got " + shape_string(in));
  return dense_output_shape(in, options.out_features());
}

// ------------------------------------------------------------------------- QConvBatchNorm
QConvOptions QConvBatchNormOptions::conv() const {
  QConvOptions o(in_channels(), filters(), kernel_size(), input_shape());
  o.strides(strides()).padding(padding()).bias(bias()).activation(activation());
  o.input_quantizer(input_quantizer()).kernel_quantizer(kernel_quantizer());
  o.bias_quantizer(bias_quantizer()).output_quantizer(output_quantizer());
  return o;
}

template <int64_t D>
QConvBatchNormImpl<D>::QConvBatchNormImpl(QConvBatchNormOptions options_)
    : options(std::move(options_)) {
  reset();
}

template <int64_t D>
std::vector<int64_t> QConvBatchNormImpl<D>::kernel_shape() const {
  return conv_kernel_shape(options.kernel_size(), options.in_channels(), options.filters());
}

template <int64_t D>
void QConvBatchNormImpl<D>::reset() {
  const std::string name = type_name();
  const int64_t c = options.in_channels(), f = options.filters();
  check_conv_options(name, D, c, f, options.kernel_size(), options.input_shape());
  check_bn_options(name, options.momentum(), options.eps());
  if (options.strides().empty()) options.strides(std::vector<int64_t>(D, 1));
  const auto& in = options.input_shape();
  const auto out_shape = output_shape(in);
  const auto ks = kernel_shape();
  // Glorot uniform kernel, zero bias (Keras defaults).
  kernel = this->register_parameter("kernel", glorot_uniform(ks));
  if (options.bias()) bias = this->register_parameter("bias", torch::zeros({f}));
  gamma = this->register_parameter("gamma", torch::ones({f}));
  beta = this->register_parameter("beta", torch::zeros({f}));
  moving_mean = this->register_buffer("moving_mean", torch::zeros({f}));
  moving_var = this->register_buffer("moving_var", torch::ones({f}));
  batch_mean = batch_var = torch::Tensor();
  iq = this->register_module(
      "iq", quant::FixedQuantizer(quantizer_for(options.input_quantizer(), Place::Datalane, in)));
  kq = this->register_module(
      "kq", quant::FixedQuantizer(quantizer_for(options.kernel_quantizer(), Place::Weight, ks)));
  bq = this->register_module(
      "bq", quant::FixedQuantizer(quantizer_for(options.bias_quantizer(), Place::Bias, {f})));
  if (options.output_quantizer())
    oq = this->register_module("oq", quant::FixedQuantizer(quantizer_for(
                                         options.output_quantizer(), Place::Datalane, out_shape)));
}

template <int64_t D>
void QConvBatchNormImpl<D>::pretty_print(std::ostream& s) const {
  s << "hgqt::QConv" << D << "dBatchNorm(" << shape_string(options.input_shape()) << ", "
    << options.filters() << " filters, kernel " << shape_string(options.kernel_size())
    << ", strides " << shape_string(options.strides()) << ", " << options.padding() << ", "
    << to_string(options.activation()) << ")";
}

template <int64_t D>
torch::Tensor QConvBatchNormImpl<D>::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == D + 2 && x.sizes().slice(1).vec() == options.input_shape(), type_name(),
              " expects input [batch, ", c10::IntArrayRef(options.input_shape()), "], got ",
              x.sizes());
  return folded_forward(*this, x, options.strides(), options.padding());
}

template <int64_t D>
torch::Tensor QConvBatchNormImpl<D>::ebops() const {
  // As the unfolded convolution; one bias add per output element (positions x filters).
  return conv_ebops(iq->bits(), options.input_shape(), kq->bits(), kernel_shape(),
                    options.strides(), options.padding()) +
         bias_ebops(bq->bits(), shape_numel(output_shape(options.input_shape())));
}

template <int64_t D>
std::vector<NamedQuantizer> QConvBatchNormImpl<D>::quantizers() const {
  return folded_quantizers(*this);
}

template <int64_t D>
std::pair<torch::Tensor, torch::Tensor> QConvBatchNormImpl<D>::folded(bool use_moving) const {
  return folded_constants(*this, use_moving);
}

template <int64_t D>
std::vector<int64_t> QConvBatchNormImpl<D>::output_shape(const std::vector<int64_t>& in) const {
  return conv_output_shape(type_name(), options.in_channels(), options.filters(),
                           options.kernel_size(), options.strides(), options.padding(), in);
}

template <int64_t D>
std::vector<int64_t> QConvBatchNormImpl<D>::pad_before(const std::vector<int64_t>& in) const {
  return conv_pad_before(type_name(), options.kernel_size(), options.strides(), options.padding(),
                         in);
}

template class QConvBatchNormImpl<1>;
template class QConvBatchNormImpl<2>;

// ------------------------------------------------------------------------- QBatchNorm
QBatchNormImpl::QBatchNormImpl(QBatchNormOptions options_) : options(std::move(options_)) {
  reset();
}

void QBatchNormImpl::reset() {
  const auto& shape = options.shape();
  if (shape.empty())
    throw std::invalid_argument("QBatchNorm: the per-sample shape must have at least one axis");
  for (auto d : shape)
    if (d <= 0)
      throw std::invalid_argument("QBatchNorm: shape entries must be positive, got " +
                                  shape_string(shape));
  check_bn_options("QBatchNorm", options.momentum(), options.eps());
  const int64_t c = channels();
  gamma = register_parameter("gamma", torch::ones({c}));
  beta = register_parameter("beta", torch::zeros({c}));
  moving_mean = register_buffer("moving_mean", torch::zeros({c}));
  moving_var = register_buffer("moving_var", torch::ones({c}));
  batch_mean = batch_var = torch::Tensor();
  if (options.quantize_input())
    iq = register_module("iq", quant::FixedQuantizer(quantizer_for(options.input_quantizer(),
                                                                   Place::Datalane, shape)));
  kq = register_module(
      "kq", quant::FixedQuantizer(quantizer_for(options.kernel_quantizer(), Place::Weight, {c})));
  bq = register_module(
      "bq", quant::FixedQuantizer(quantizer_for(options.bias_quantizer(), Place::Bias, {c})));
  if (options.output_quantizer())
    oq = register_module("oq", quant::FixedQuantizer(quantizer_for(options.output_quantizer(),
                                                                   Place::Datalane, shape)));
}

void QBatchNormImpl::pretty_print(std::ostream& s) const {
  s << "hgqt::QBatchNorm(" << shape_string(options.shape()) << ", "
    << to_string(options.activation()) << ")";
}

torch::Tensor QBatchNormImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == static_cast<int64_t>(options.shape().size()) + 1 &&
                  x.sizes().slice(1).vec() == options.shape(),
              "QBatchNorm expects input [batch, ", c10::IntArrayRef(options.shape()), "], got ",
              x.sizes());
  auto xq = iq ? iq->forward(x) : x;
  torch::Tensor mu, var;
  if (is_training()) {
    std::tie(mu, var) = channel_moments(xq);
    update_moving(moving_mean, moving_var, mu, var, options.momentum());
    batch_mean = mu.detach().clone();
    batch_var = var.detach().clone();
  } else {
    mu = moving_mean;
    var = moving_var;
  }
  auto s = gamma * torch::rsqrt(var + options.eps());
  auto o = beta - mu * s;
  auto y = apply_activation(xq * kq->forward(s) + bq->forward(o), options.activation());
  return oq ? oq->forward(y) : y;
}

torch::Tensor QBatchNormImpl::ebops() const {
  const auto& shape = options.shape();
  const int64_t n = shape_numel(shape), c = channels();
  // sum over elements of b_in(element) * b_s(channel): per channel, the summed input bits.
  auto b_s = kq->bits().expand({c});
  torch::Tensor products;
  if (iq)
    products = (iq->bits().expand(shape).reshape({-1, c}).sum(0) * b_s).sum();
  else
    products = b_s.sum() * static_cast<double>(n / c);
  return products + bias_ebops(bq->bits(), n);
}

std::vector<NamedQuantizer> QBatchNormImpl::quantizers() const {
  auto [s, o] = folded(true);
  std::vector<NamedQuantizer> qs;
  if (iq) qs.push_back({"input", iq, {}});
  qs.push_back({"kernel", kq, s});
  qs.push_back({"bias", bq, o});
  if (oq) qs.push_back({"output", oq, {}});
  return qs;
}

std::pair<torch::Tensor, torch::Tensor> QBatchNormImpl::folded(bool use_moving) const {
  torch::NoGradGuard no_grad;
  auto [mu, var] =
      statistics(moving_mean, moving_var, batch_mean, batch_var, use_moving, type_name());
  auto s = gamma * torch::rsqrt(var + options.eps());
  return {s.detach(), (beta - mu * s).detach()};
}

std::vector<int64_t> QBatchNormImpl::output_shape(const std::vector<int64_t>& in) const {
  if (in != options.shape())
    throw std::invalid_argument("batchnorm layer built for " + shape_string(options.shape()) +
                                " got " + shape_string(in));
  return in;
}

}  // namespace hgqt::nn
