// The integer emulator: exact products and sums in __int128, each quantizer's rounding and
// overflow in integers.
#include "hgqt/archive/emulator.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace hgqt::archive {

namespace {
// Applies quantizer q to the current values: mantissas at `types[n].frac`, or the doubles of
// `xin` before the first quantizer.
void quantize_values(std::vector<int128>& v, const std::vector<FixedType>& types,
                     const QuantSpec& q, const double* xin, int64_t sample, EmulatorStats* stats) {
  const int64_t size = q.size();
  v.resize(size);
  for (int64_t n = 0; n < size; ++n) {
    bool clipped = false;
    if (xin) {
      try {
        v[n] = quantize_double(xin[n], q, n, &clipped);
      } catch (const ArchiveError& e) {
        throw ArchiveError("sample " + std::to_string(sample) + ", input element " +
                           std::to_string(n) + ": " + e.what());
      }
    } else {
      v[n] = quantize_exact(v[n], types[n].frac, q, n, &clipped);
    }
    if (clipped && stats) ++(q.overflow == quant::OverflowMode::WRAP ? stats->wrapped : stats->saturated);
  }
}
}  // namespace

Emulator::Emulator(Archive a) : a_(std::move(a)) {
  validate(a_, "archive '" + a_.name + "'");
  types_ = infer_types(a_);
  for (const auto& t : output_types()) widest_output_ = std::max(widest_output_, t.width);
}

void Emulator::run_exact(const double* x, int128* y, EmulatorStats* stats) const {
  std::vector<int128> v, acc;
  const double* xin = x;  // non-null until the first quantizer has run
  const int64_t sample = stats ? stats->samples : 0;
  for (size_t li = 0; li < a_.layers.size(); ++li) {
    const Layer& l = a_.layers[li];
    const LayerTypes& t = types_[li];
    if (l.type == "flatten") continue;
    if (l.type == "quantize") {
      quantize_values(v, t.input, *l.input_quantizer, xin, sample, stats);
      xin = nullptr;
      continue;
    }
    if (l.type == "activation") {
      if (l.activation == "relu")
        for (auto& m : v) m = m < 0 ? 0 : m;
      // relu keeps each value's frac: the types after relu share the input's frac.
      quantize_values(v, t.input, *l.output_quantizer, nullptr, sample, stats);
      continue;
    }
    // dense
    if (l.input_quantizer) {
      quantize_values(v, t.input, *l.input_quantizer, xin, sample, stats);
      xin = nullptr;
    }
    const Constant& w = *l.kernel;
    const int64_t in = w.shape[0], n_out = w.shape[1];
    acc.assign(n_out, 0);
    for (int64_t j = 0; j < in; ++j) {
      const FixedType& xt = t.quantized_input[j];
      if (xt.width == 0 || v[j] == 0) continue;
      const int128 xv = v[j];
      const int64_t* wrow = w.mantissa.data() + j * n_out;
      const int32_t* erow = w.exponent.data() + j * n_out;
      for (int64_t o = 0; o < n_out; ++o) {
        if (wrow[o] == 0) continue;
        const int shift = t.accumulator[o].frac - (xt.frac - erow[o]);
        acc[o] += (xv * wrow[o]) << shift;
      }
    }
    for (int64_t o = 0; o < n_out; ++o) {
      if (l.bias && l.bias->mantissa[o] != 0)
        acc[o] += static_cast<int128>(l.bias->mantissa[o])
                  << (t.accumulator[o].frac + l.bias->exponent[o]);
      if (acc[o] < t.acc_lo[o] || acc[o] > t.acc_hi[o])
        throw ArchiveError("emulator: accumulator " + std::to_string(o) + " of layer '" + l.name +
                           "' left its inferred range (" + to_string(acc[o]) + " not in [" +
                           to_string(t.acc_lo[o]) + ", " + to_string(t.acc_hi[o]) + "])");
    }
    if (l.activation == "relu")
      for (auto& m : acc) m = m < 0 ? 0 : m;
    v.swap(acc);
    if (l.output_quantizer) quantize_values(v, t.accumulator, *l.output_quantizer, nullptr, sample, stats);
  }
  for (int64_t o = 0; o < output_size(); ++o) y[o] = v[o];
  if (stats) ++stats->samples;
}

void Emulator::run(const double* x, double* y, EmulatorStats* stats) const {
  if (widest_output_ > 53)
    throw ArchiveError("emulator: an output is " + std::to_string(widest_output_) +
                       " bits wide, more than a double holds exactly; use run_exact");
  const auto& ot = output_types();
  std::vector<int128> m(output_size());
  run_exact(x, m.data(), stats);
  for (int64_t o = 0; o < output_size(); ++o)
    y[o] = std::ldexp(static_cast<double>(m[o]), -ot[o].frac);
}

std::vector<double> Emulator::run_batch(const std::vector<double>& x, int64_t n,
                                        EmulatorStats* stats) const {
  const int64_t in = input_size(), out = output_size();
  if (static_cast<int64_t>(x.size()) != n * in)
    throw ArchiveError("emulator: got " + std::to_string(x.size()) + " input values for " +
                       std::to_string(n) + " samples of " + std::to_string(in) + " features");
  std::vector<double> y(n * out);
  EmulatorStats local;
  EmulatorStats* s = stats ? stats : &local;
  for (int64_t r = 0; r < n; ++r) run(x.data() + r * in, y.data() + r * out, s);
  return y;
}

void preprocess(const Archive& a, std::vector<float>& x, int64_t n) {
  if (a.feature_mean.empty()) return;
  const int64_t d = static_cast<int64_t>(a.feature_mean.size());
  if (static_cast<int64_t>(x.size()) != n * d)
    throw ArchiveError("preprocess: got " + std::to_string(x.size()) + " values for " +
                       std::to_string(n) + " samples of " + std::to_string(d) + " features");
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < d; ++c) {
      float& v = x[r * d + c];
      v = (v - a.feature_mean[c]) / a.feature_std[c];
    }
}

}  // namespace hgqt::archive
