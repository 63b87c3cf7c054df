// Pooling and reshaping.
#include "hgqt/nn/pool.h"

#include <stdexcept>

#include "hgqt/nn/conv.h"

namespace hgqt::nn {

// ------------------------------------------------------------------------- Pool
PoolImpl::PoolImpl(Kind kind_, PoolOptions options_) : kind(kind_), options(std::move(options_)) {
  check_options();
}

std::string PoolImpl::type_name() const {
  std::string base = kind == Kind::Max ? "max_pool" : kind == Kind::Avg ? "avg_pool" : "sum_pool";
  return options.global_pool() ? "global_" + base : base;
}

void PoolImpl::check_options() {
  const auto& k = options.pool_size();
  if (options.padding() != "valid")
    throw std::invalid_argument(type_name() + ": only valid padding is supported, got '" +
                                options.padding() + "'");
  if (!options.global_pool() && k.size() != 1 && k.size() != 2)
    throw std::invalid_argument(type_name() + ": pool_size needs 1 or 2 entries, got " +
                                shape_string(k));
  for (auto d : k)
    if (d <= 0)
      throw std::invalid_argument(type_name() + ": pool_size entries must be positive, got " +
                                  shape_string(k));
  if (options.global_pool()) {
    if (!options.strides().empty() && options.strides() != k)
      throw std::invalid_argument(type_name() + ": a global pool takes no strides");
  } else {
    if (options.strides().empty()) options.strides(k);
    if (options.strides().size() != k.size())
      throw std::invalid_argument(type_name() + ": strides " + shape_string(options.strides()) +
                                  " do not match pool_size " + shape_string(k));
    for (auto d : options.strides())
      if (d <= 0)
        throw std::invalid_argument(type_name() + ": strides must be positive, got " +
                                    shape_string(options.strides()));
  }
  if (kind == Kind::Avg && (options.scale_bits() < util::kMinAvgScaleBits ||
                            options.scale_bits() > util::kMaxAvgScaleBits))
    throw std::invalid_argument(type_name() + ": scale_bits " +
                                std::to_string(options.scale_bits()) + " outside [" +
                                std::to_string(util::kMinAvgScaleBits) + ", " +
                                std::to_string(util::kMaxAvgScaleBits) + "]");
}

util::AvgScale PoolImpl::avg_scale(int64_t window_elements) const {
  return util::avg_scale(window_elements, options.scale_bits());
}

std::vector<int64_t> PoolImpl::window(const std::vector<int64_t>& in) const {
  if (in.size() != 2 && in.size() != 3)
    throw std::invalid_argument(
        type_name() + " expects a per-sample input [L, C] or [H, W, C], got " + shape_string(in));
  const std::vector<int64_t> spatial(in.begin(), in.end() - 1);
  if (!options.global_pool()) {
    if (options.pool_size().size() != spatial.size())
      throw std::invalid_argument(type_name() + " with pool_size " +
                                  shape_string(options.pool_size()) + " got input " +
                                  shape_string(in));
    return options.pool_size();
  }
  if (!options.pool_size().empty() && options.pool_size() != spatial)
    throw std::invalid_argument(
        type_name() + " with pool_size " + shape_string(options.pool_size()) +
        " needs the spatial extent to match, got input " + shape_string(in));
  return spatial;
}

std::vector<int64_t> PoolImpl::window_strides(const std::vector<int64_t>& in) const {
  auto w = window(in);
  return options.global_pool() ? w : options.strides();
}

std::vector<int64_t> PoolImpl::output_shape(const std::vector<int64_t>& in) const {
  const auto w = window(in);
  if (options.global_pool()) return {in.back()};
  auto g = conv_geometry({in.begin(), in.end() - 1}, w, options.strides(), "valid");
  g.out.push_back(in.back());
  return g.out;
}

torch::Tensor PoolImpl::pool(const torch::Tensor& x) const {
  TORCH_CHECK(x.dim() == 3 || x.dim() == 4, type_name(),
              " expects a batch [B, L, C] or [B, H, W, C], got ", x.sizes());
  const std::vector<int64_t> in = x.sizes().slice(1).vec();
  const auto w = window(in);
  output_shape(in);  // validates the geometry
  // Avg over a window that is not a power of two: the exact sum times the quantized scale, what
  // the archive and the hardware compute.
  const util::AvgScale scale = kind == Kind::Avg ? avg_scale(shape_numel(w)) : util::AvgScale{};
  const bool scaled_sum = kind == Kind::Avg && scale.mult != 1;
  if (options.global_pool()) {
    std::vector<int64_t> dims;
    for (int64_t d = 1; d < x.dim() - 1; ++d) dims.push_back(d);
    if (scaled_sum) return x.sum(dims) * scale.value();
    if (kind == Kind::Sum) return x.sum(dims);
    return kind == Kind::Max ? x.amax(dims) : x.mean(dims);
  }
  // Channels-last -> channels-first and back.
  const bool two_d = w.size() == 2;
  auto xc = two_d ? x.permute({0, 3, 1, 2}) : x.permute({0, 2, 1});
  torch::Tensor y;
  if (kind == Kind::Max) {
    y = two_d ? torch::max_pool2d(xc, w, options.strides())
              : torch::max_pool1d(xc, w, options.strides());
  } else if (kind == Kind::Sum || scaled_sum) {
    // A depthwise convolution with a kernel of ones: the exact window sums.
    std::vector<int64_t> ks{xc.size(1), 1};
    ks.insert(ks.end(), w.begin(), w.end());
    const auto ones = torch::ones(ks, xc.options());
    const std::vector<int64_t> zero(w.size(), 0), one(w.size(), 1);
    y = two_d ? torch::conv2d(xc, ones, torch::Tensor(), options.strides(), zero, one, xc.size(1))
              : torch::conv1d(xc, ones, torch::Tensor(), options.strides(), zero, one, xc.size(1));
    if (scaled_sum) y = y * scale.value();
  } else
    y = two_d ? torch::avg_pool2d(xc, w, options.strides())
              : torch::avg_pool1d(xc, w, options.strides());
  return two_d ? y.permute({0, 2, 3, 1}) : y.permute({0, 2, 1});
}

template <PoolImpl::Kind K>
void KindPoolImpl<K>::pretty_print(std::ostream& s) const {
  s << "hgqt::"
    << (K == Kind::Max   ? "MaxPool("
        : K == Kind::Avg ? "AvgPool("
                         : "SumPool(")
    << (options.global_pool() ? "global" : shape_string(options.pool_size())) << ")";
}

template class KindPoolImpl<PoolImpl::Kind::Max>;
template class KindPoolImpl<PoolImpl::Kind::Avg>;
template class KindPoolImpl<PoolImpl::Kind::Sum>;

// ------------------------------------------------------------------------- Reshape
ReshapeImpl::ReshapeImpl(ReshapeOptions options_) : options(std::move(options_)) {
  reset();
}

void ReshapeImpl::reset() {
  int wild = 0;
  for (auto d : options.shape()) {
    if (d == -1)
      ++wild;
    else if (d <= 0)
      throw std::invalid_argument("reshape: target entries must be positive or -1, got " +
                                  shape_string(options.shape()));
  }
  if (wild > 1)
    throw std::invalid_argument("reshape: at most one -1 allowed, got " +
                                shape_string(options.shape()));
}

void ReshapeImpl::pretty_print(std::ostream& s) const {
  s << "hgqt::Reshape(" << shape_string(options.shape()) << ")";
}

std::vector<int64_t> ReshapeImpl::output_shape(const std::vector<int64_t>& in) const {
  const int64_t n = shape_numel(in);
  auto out = options.shape();
  int64_t known = 1;
  int64_t wild = -1;
  for (size_t d = 0; d < out.size(); ++d) {
    if (out[d] == -1)
      wild = static_cast<int64_t>(d);
    else
      known *= out[d];
  }
  if (wild >= 0 && known > 0 && n % known == 0) out[wild] = n / known;
  if (shape_numel(out) != n || (wild >= 0 && out[wild] <= 0))
    throw std::invalid_argument("reshape: cannot reshape per-sample " + shape_string(in) + " (" +
                                std::to_string(n) + " elements) to " +
                                shape_string(options.shape()));
  return out;
}

torch::Tensor ReshapeImpl::forward(const torch::Tensor& x) {
  TORCH_CHECK(x.dim() >= 1, "reshape expects a batch, got a scalar");
  auto out = output_shape(x.sizes().slice(1).vec());
  out.insert(out.begin(), x.size(0));
  return x.reshape(out);
}

}  // namespace hgqt::nn
