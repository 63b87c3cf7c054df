// Per-layer summary of a model's bit widths, pruning and EBOPs.
#pragma once

#include <string>
#include <vector>

#include "hgqt/model/model.h"

namespace hgqt::model {

/// Statistics of bit widths over elements (sign excluded).
struct BitStats {
  double mean = 0, min = 0, max = 0;
  int64_t count = 0;
};

/// One row of the summary table.
struct LayerSummary {
  std::string name, type, shape;
  BitStats weight_bits;          ///< kernel quantizer, per weight (count 0 when none)
  BitStats activation_bits;      ///< input (dense/quantize) or output (activation) quantizer
  double zero_weight_share = 0;  ///< share of weights that quantize to exactly 0
  double ebops = 0;
  int64_t parameters = 0;
};

/// Summarizes every layer (eval-mode quantizer state; does not change the model).
std::vector<LayerSummary> summarize(const HGQModel& model);
/// A fixed-width text table with a total row.
std::string format_summary(const std::vector<LayerSummary>& rows);

}  // namespace hgqt::model
