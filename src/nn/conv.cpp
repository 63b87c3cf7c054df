// Quantized convolutions and the shared convolution / EBOPs helpers.
#include "hgqt/nn/conv.h"

#include <cmath>
#include <stdexcept>

namespace hgqt::nn {

using quant::Place;
using quant::QuantizerOptions;

namespace {
// Channels-last [B, S..., C] -> channels-first [B, C, S...] (and the inverse).
torch::Tensor to_channels_first(const torch::Tensor& x) {
  std::vector<int64_t> perm{0, x.dim() - 1};
  for (int64_t d = 1; d < x.dim() - 1; ++d) perm.push_back(d);
  return x.permute(perm);
}
torch::Tensor to_channels_last(const torch::Tensor& x) {
  std::vector<int64_t> perm{0};
  for (int64_t d = 2; d < x.dim(); ++d) perm.push_back(d);
  perm.push_back(1);
  return x.permute(perm);
}
// Keras kernel [K..., C, F] -> torch [F, C, K...].
torch::Tensor to_torch_kernel(const torch::Tensor& w) {
  const int64_t d = w.dim() - 2;
  std::vector<int64_t> perm{d + 1, d};
  for (int64_t a = 0; a < d; ++a) perm.push_back(a);
  return w.permute(perm);
}
// constant_pad_nd's pad list (last axis first) for a channels-first tensor.
std::vector<int64_t> torch_pad(const ConvGeometry& g) {
  std::vector<int64_t> pad;
  for (size_t d = g.in.size(); d-- > 0;) {
    pad.push_back(g.pad_before[d]);
    pad.push_back(g.pad_after[d]);
  }
  return pad;
}
bool any_padding(const ConvGeometry& g) {
  for (size_t d = 0; d < g.in.size(); ++d)
    if (g.pad_before[d] || g.pad_after[d]) return true;
  return false;
}
// Channels-first convolution with explicit asymmetric zero padding.
torch::Tensor conv_cf(torch::Tensor x, const torch::Tensor& w_torch, const torch::Tensor& b,
                      const ConvGeometry& g, const std::vector<int64_t>& strides) {
  if (any_padding(g)) x = torch::constant_pad_nd(x, torch_pad(g), 0);
  if (strides.size() == 1) return torch::conv1d(x, w_torch, b, strides);
  if (strides.size() == 2) return torch::conv2d(x, w_torch, b, strides);
  throw std::invalid_argument("conv: only 1-D and 2-D convolutions are supported, got " +
                              std::to_string(strides.size()) + " spatial axes");
}
}  // namespace

ConvGeometry conv_geometry(const std::vector<int64_t>& in, const std::vector<int64_t>& k,
                           const std::vector<int64_t>& s, const std::string& padding) {
  if (k.size() != in.size() || s.size() != in.size())
    throw std::invalid_argument("conv geometry: spatial input " + shape_string(in) + ", window " +
                                shape_string(k) + " and strides " + shape_string(s) +
                                " need the same number of axes");
  if (padding != "valid" && padding != "same")
    throw std::invalid_argument("unknown padding '" + padding + "' (expected valid or same)");
  ConvGeometry g;
  g.in = in;
  for (size_t d = 0; d < in.size(); ++d) {
    if (in[d] <= 0 || k[d] <= 0 || s[d] <= 0)
      throw std::invalid_argument("conv geometry: sizes must be positive, got input " +
                                  shape_string(in) + ", window " + shape_string(k) + ", strides " +
                                  shape_string(s));
    if (padding == "valid") {
      if (k[d] > in[d])
        throw std::invalid_argument("window " + shape_string(k) + " is larger than the input " +
                                    shape_string(in) + " with valid padding");
      g.out.push_back((in[d] - k[d]) / s[d] + 1);
      g.pad_before.push_back(0);
      g.pad_after.push_back(0);
    } else {
      const int64_t out = (in[d] + s[d] - 1) / s[d];
      const int64_t total = std::max<int64_t>((out - 1) * s[d] + k[d] - in[d], 0);
      g.out.push_back(out);
      g.pad_before.push_back(total / 2);
      g.pad_after.push_back(total - total / 2);
    }
  }
  return g;
}

torch::Tensor conv_nd(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b,
                      const std::vector<int64_t>& strides, const std::string& padding) {
  const int64_t d = w.dim() - 2;
  TORCH_CHECK(d >= 0 && (x.dim() == d + 2 || (d == 0 && x.dim() > 2)), "conv_nd: kernel ",
              w.sizes(), " needs a batch with ", d + 2, " axes, got ", x.sizes());
  TORCH_CHECK(x.size(-1) == w.size(d), "conv_nd: input has ", x.size(-1),
              " channels, the kernel expects ", w.size(d), " (input ", x.sizes(), ", kernel ",
              w.sizes(), ")");
  if (d == 0 && x.dim() == 2) return b.defined() ? torch::addmm(b, x, w) : torch::mm(x, w);
  if (d == 0) {  // a dense layer at every position of [B, S..., C]
    auto y = torch::matmul(x, w);
    return b.defined() ? y + b : y;
  }
  const auto xs = x.sizes().vec(), ws = w.sizes().vec();
  const ConvGeometry g =
      conv_geometry({xs.begin() + 1, xs.end() - 1}, {ws.begin(), ws.end() - 2}, strides, padding);
  return to_channels_last(conv_cf(to_channels_first(x), to_torch_kernel(w), b, g, strides));
}

torch::Tensor conv_ebops(const torch::Tensor& b_in, const std::vector<int64_t>& input_shape,
                         const torch::Tensor& b_w, const std::vector<int64_t>& kernel_shape,
                         const std::vector<int64_t>& strides, const std::string& padding) {
  auto bi = b_in.expand(input_shape).unsqueeze(0);  // [1, S..., C]
  auto bw = b_w.expand(kernel_shape);
  // The bits of an input element times the bits of every weight it meets: exactly the
  // convolution of the bit maps (padding zeros cost nothing), summed over all outputs.
  return conv_nd(bi, bw, torch::Tensor(), strides, padding).sum();
}

torch::Tensor bias_ebops(const torch::Tensor& b_bias, int64_t n_outputs) {
  return b_bias.mean() * static_cast<double>(n_outputs);
}

// ------------------------------------------------------------------------- QConv
template <int64_t D>
QConvImpl<D>::QConvImpl(QConvOptions options_) : options(std::move(options_)) {
  reset();
}

template <int64_t D>
std::vector<int64_t> QConvImpl<D>::kernel_shape() const {
  return conv_kernel_shape(options.kernel_size(), options.in_channels(), options.filters());
}

template <int64_t D>
void QConvImpl<D>::reset() {
  const std::string name = type_name();
  const int64_t c = options.in_channels(), f = options.filters();
  check_conv_options(name, D, c, f, options.kernel_size(), options.input_shape());
  if (options.strides().empty()) options.strides(std::vector<int64_t>(D, 1));
  const auto& in = options.input_shape();
  const auto out_shape = output_shape(in);  // validates strides / padding / sizes
  const auto ks = kernel_shape();
  // Glorot uniform kernel, zero bias (Keras defaults).
  kernel = this->register_parameter("kernel", glorot_uniform(ks));
  if (options.bias()) bias = this->register_parameter("bias", torch::zeros({f}));
  iq = this->register_module(
      "iq", quant::FixedQuantizer(quantizer_for(options.input_quantizer(), Place::Datalane, in)));
  kq = this->register_module(
      "kq", quant::FixedQuantizer(quantizer_for(options.kernel_quantizer(), Place::Weight, ks)));
  if (options.bias())
    bq = this->register_module(
        "bq", quant::FixedQuantizer(quantizer_for(options.bias_quantizer(), Place::Bias, {f})));
  if (options.output_quantizer())
    oq = this->register_module("oq", quant::FixedQuantizer(quantizer_for(
                                         options.output_quantizer(), Place::Datalane, out_shape)));
}

template <int64_t D>
void QConvImpl<D>::pretty_print(std::ostream& s) const {
  s << "hgqt::QConv" << D << "d(" << shape_string(options.input_shape()) << ", "
    << options.filters() << " filters, kernel " << shape_string(options.kernel_size())
    << ", strides " << shape_string(options.strides()) << ", " << options.padding() << ", "
    << to_string(options.activation()) << ")";
}

template <int64_t D>
torch::Tensor QConvImpl<D>::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() == D + 2 && x.sizes().slice(1).vec() == options.input_shape(), type_name(),
              " expects input [batch, ", c10::IntArrayRef(options.input_shape()), "], got ",
              x.sizes());
  auto xq = iq->forward(x);
  auto w = kq->forward(kernel);
  auto y = conv_nd(xq, w, bias.defined() ? bq->forward(bias) : torch::Tensor(), options.strides(),
                   options.padding());
  y = apply_activation(y, options.activation());
  return oq ? oq->forward(y) : y;
}

template <int64_t D>
torch::Tensor QConvImpl<D>::ebops() const {
  auto e = conv_ebops(iq->bits(), options.input_shape(), kq->bits(), kernel_shape(),
                      options.strides(), options.padding());
  // One bias add per output element (positions x filters).
  if (bq) e = e + bias_ebops(bq->bits(), shape_numel(output_shape(options.input_shape())));
  return e;
}

template <int64_t D>
std::vector<NamedQuantizer> QConvImpl<D>::quantizers() const {
  std::vector<NamedQuantizer> qs{{"input", iq, {}}, {"kernel", kq, kernel}};
  if (bq) qs.push_back({"bias", bq, bias});
  if (oq) qs.push_back({"output", oq, {}});
  return qs;
}

template <int64_t D>
std::vector<int64_t> QConvImpl<D>::output_shape(const std::vector<int64_t>& in) const {
  return conv_output_shape(type_name(), options.in_channels(), options.filters(),
                           options.kernel_size(), options.strides(), options.padding(), in);
}

template <int64_t D>
std::vector<int64_t> QConvImpl<D>::pad_before(const std::vector<int64_t>& in) const {
  return conv_pad_before(type_name(), options.kernel_size(), options.strides(), options.padding(),
                         in);
}

std::vector<int64_t> conv_output_shape(const std::string& layer, int64_t in_channels,
                                       int64_t filters, const std::vector<int64_t>& kernel_size,
                                       const std::vector<int64_t>& strides,
                                       const std::string& padding, const std::vector<int64_t>& in) {
  const size_t d = kernel_size.size();
  if (in.size() != d + 1 || in.back() != in_channels)
    throw std::invalid_argument(layer + " layer expects a per-sample input with " +
                                std::to_string(d + 1) + " axes and " + std::to_string(in_channels) +
                                " channels, got " + shape_string(in));
  auto g = conv_geometry({in.begin(), in.end() - 1}, kernel_size, strides, padding);
  g.out.push_back(filters);
  return g.out;
}

void check_conv_options(const std::string& layer, int64_t d, int64_t c, int64_t f,
                        const std::vector<int64_t>& kernel_size, const std::vector<int64_t>& in) {
  if (c <= 0 || f <= 0)
    throw std::invalid_argument(layer + ": in_channels and filters must be positive, got " +
                                std::to_string(c) + " and " + std::to_string(f));
  if (static_cast<int64_t>(kernel_size.size()) != d)
    throw std::invalid_argument(layer + ": kernel_size needs " + std::to_string(d) +
                                " entries, got " + shape_string(kernel_size));
  if (static_cast<int64_t>(in.size()) != d + 1 || in.back() != c)
    throw std::invalid_argument(
        layer + ": input_shape (per sample, channels-last) must have " + std::to_string(d + 1) +
        " entries ending in in_channels = " + std::to_string(c) + ", got " + shape_string(in));
}

std::vector<int64_t> conv_kernel_shape(const std::vector<int64_t>& kernel_size, int64_t in_channels,
                                       int64_t filters) {
  auto s = kernel_size;
  s.push_back(in_channels);
  s.push_back(filters);
  return s;
}

std::vector<int64_t> conv_pad_before(const std::string& layer,
                                     const std::vector<int64_t>& kernel_size,
                                     const std::vector<int64_t>& strides,
                                     const std::string& padding, const std::vector<int64_t>& in) {
  const size_t d = kernel_size.size();
  if (in.size() != d + 1)
    throw std::invalid_argument(layer + ": pad_before needs a per-sample input with " +
                                std::to_string(d + 1) + " axes, got " + shape_string(in));
  return conv_geometry({in.begin(), in.end() - 1}, kernel_size, strides, padding).pad_before;
}

template class QConvImpl<1>;
template class QConvImpl<2>;

}  // namespace hgqt::nn
