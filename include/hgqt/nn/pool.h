// Layers without products: max / average / sum pooling (1-D [L, C] or 2-D [H, W, C] per-sample
// inputs, channels-last) and Reshape. No quantizers, EBOPs 0.
#pragma once

#include <string>
#include <vector>

#include "hgqt/nn/layer.h"
#include "hgqt/util/avg_scale.h"

namespace hgqt::nn {

/// Options of MaxPool / AvgPool. Example: `AvgPool p(PoolOptions({2, 2}));` (2-D, strides 2x2);
/// `MaxPool g(PoolOptions({}).global_pool(true));` (global: per-sample output [C]).
struct PoolOptions {
  PoolOptions(std::vector<int64_t> pool_size = {}) : pool_size_(std::move(pool_size)) {}
  /// Window per spatial axis; its length selects 1-D or 2-D. Global pools: empty, or equal to the
  /// input's spatial extent.
  TORCH_ARG(std::vector<int64_t>, pool_size);
  /// Strides per spatial axis; empty = pool_size (the layer stores the filled-in vector).
  TORCH_ARG(std::vector<int64_t>, strides) = {};
  /// Only "valid" is supported.
  TORCH_ARG(std::string, padding) = "valid";
  /// Pool over the whole spatial extent; the per-sample output is [C].
  TORCH_ARG(bool, global_pool) = false;
  /// Avg over a window that is not a power of two: the average is the exact sum times 1 / window
  /// rounded to this many significant bits (util::avg_scale); a power-of-two window is an exact
  /// shift and ignores it.
  TORCH_ARG(int, scale_bits) = util::kDefaultAvgScaleBits;
};

/// Max, average or sum pooling; see MaxPool / AvgPool / SumPool. Over a particle list [P, C], the
/// global pools are the permutation-invariant aggregations of a Deep Sets model.
class PoolImpl : public QLayer {
 public:
  enum class Kind { Max, Avg, Sum };
  PoolImpl(Kind kind, PoolOptions options);
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override;
  /// max_pool, avg_pool, sum_pool, global_max_pool, global_avg_pool, global_sum_pool.
  std::string type_name() const override;

  /// The window for a per-sample input shape (global: the spatial extent). Throws
  /// std::invalid_argument for a bad shape.
  std::vector<int64_t> window(const std::vector<int64_t>& input_shape) const;
  /// The strides for a per-sample input shape (global: the spatial extent).
  std::vector<int64_t> window_strides(const std::vector<int64_t>& input_shape) const;
  /// The pooling itself on a batch [B, S..., C].
  torch::Tensor pool(const torch::Tensor& x) const;
  /// Avg: the scale of the average over a window of this many elements (mult 1, shift s for 2^s
  /// elements).
  util::AvgScale avg_scale(int64_t window_elements) const;

  Kind kind;
  PoolOptions options;

 protected:
  void check_options();
};

/// The pooling layer of kind K: MaxPool, AvgPool (over a power-of-two window the exact average, a
/// shift; over any other window the exact sum times the quantized 1 / window of
/// PoolOptions::scale_bits) and SumPool (the exact sum of any window).
template <PoolImpl::Kind K>
class KindPoolImpl : public torch::nn::Cloneable<KindPoolImpl<K>>, public PoolImpl {
 public:
  explicit KindPoolImpl(PoolOptions options) : PoolImpl(K, std::move(options)) {}
  void reset() override {}
  /// "hgqt::MaxPool(global)", "hgqt::AvgPool([2, 2])", ...
  void pretty_print(std::ostream& stream) const override;
  torch::Tensor forward(const torch::Tensor& x) override { return pool(x); }
};

using MaxPoolImpl = KindPoolImpl<PoolImpl::Kind::Max>;
using AvgPoolImpl = KindPoolImpl<PoolImpl::Kind::Avg>;
using SumPoolImpl = KindPoolImpl<PoolImpl::Kind::Sum>;
TORCH_MODULE(MaxPool);
TORCH_MODULE(AvgPool);
TORCH_MODULE(SumPool);

extern template class KindPoolImpl<PoolImpl::Kind::Max>;
extern template class KindPoolImpl<PoolImpl::Kind::Avg>;
extern template class KindPoolImpl<PoolImpl::Kind::Sum>;

// ------------------------------------------------------------------------- Reshape

/// Options of Reshape: the per-sample target shape, one entry may be -1.
struct ReshapeOptions {
  ReshapeOptions(std::vector<int64_t> shape) : shape_(std::move(shape)) {}
  TORCH_ARG(std::vector<int64_t>, shape);
};

/// Row-major reshape of every sample (a pure view: the channels-last order is kept).
/// Example: `Reshape r(ReshapeOptions({4, -1}));`
class ReshapeImpl : public torch::nn::Cloneable<ReshapeImpl>, public QLayer {
 public:
  explicit ReshapeImpl(ReshapeOptions options);
  void reset() override;
  void pretty_print(std::ostream& stream) const override;
  torch::Tensor forward(const torch::Tensor& x) override;
  /// The target shape with -1 resolved; throws std::invalid_argument naming both shapes when the
  /// sizes differ.
  std::vector<int64_t> output_shape(const std::vector<int64_t>& input_shape) const override;
  std::string type_name() const override { return "reshape"; }

  ReshapeOptions options;
};
TORCH_MODULE(Reshape);

}  // namespace hgqt::nn
