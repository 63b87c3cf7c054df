// Values for the layer tests (LibTorch): inputs on a grid that wide quantizers pass unchanged, and
// TensorFlow's padding written out independently of the library.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "hgqt/quant/quantizer.h"

namespace hgqt::testing {

/// KIF k=1, i=8, f=12, SAT, RND over `shape`: multiples of 2^-6 with |x| < 256, and their products
/// and sums on the 2^-12 grid, pass unchanged.
inline quant::QuantizerOptions wide_quantizer(std::vector<int64_t> shape = {1}) {
  return quant::QuantizerOptions(std::move(shape))
      .param(quant::Parameterization::KIF)
      .k(1)
      .i(8)
      .f(12)
      .overflow(quant::OverflowMode::SAT)
      .round(quant::RoundingMode::RND);
}

/// Random multiples of 2^-6 in [-lim, lim).
inline torch::Tensor grid_rand(std::vector<int64_t> shape, double lim) {
  const int64_t n = static_cast<int64_t>(lim * 64);
  return torch::randint(-n, n, shape).to(torch::kFloat) / 64.0;
}

/// TensorFlow padding of one axis: {before, after}.
inline std::pair<int64_t, int64_t> tf_pad(int64_t in, int64_t k, int64_t s, bool same) {
  if (!same) return {0, 0};
  const int64_t out = (in + s - 1) / s;
  const int64_t total = std::max<int64_t>((out - 1) * s + k - in, 0);
  return {total / 2, total - total / 2};
}

}  // namespace hgqt::testing
