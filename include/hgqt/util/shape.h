// Per-sample shape rules shared by the layers and the archive (no LibTorch).
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

namespace hgqt::util {

/// The broadcast of per-sample shapes (numpy rules, aligned at the last axis: [C] and [P, C] give
/// [P, C]; the batch axis is not part of them), or std::nullopt when they do not broadcast.
inline std::optional<std::vector<int64_t>> broadcast_shape(
    const std::vector<std::vector<int64_t>>& shapes) {
  size_t rank = 0;
  for (const auto& s : shapes) rank = std::max(rank, s.size());
  std::vector<int64_t> out(rank, 1);
  for (const auto& s : shapes)
    for (size_t d = 0; d < s.size(); ++d) {
      int64_t& o = out[rank - s.size() + d];
      if (s[d] == o || s[d] == 1) continue;
      if (o != 1) return std::nullopt;
      o = s[d];
    }
  return out;
}

}  // namespace hgqt::util
