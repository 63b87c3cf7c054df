// The integer emulator: the exact path (exact products and sums in __int128, each quantizer's
// rounding and overflow in integers) and the public entry points; the batched path is in
// emulator_batch.cpp.
#include "hgqt/archive/emulator.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "emulator_batch.h"
#include "hgqt/data/dataset.h"

namespace hgqt::archive {

namespace {
// Counts an overflow of quantizer q (`clipped`: its overflow changed the rounded value).
void count_clip(EmulatorStats* stats, const QuantSpec& q, bool clipped) {
  if (clipped && stats)
    ++(q.overflow == quant::OverflowMode::WRAP ? stats->wrapped : stats->saturated);
}

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
    count_clip(stats, q, clipped);
  }
}
}  // namespace

Emulator::Emulator(Archive a, EmulatorOptions options) : a_(std::move(a)), options_(options) {
  validate(a_, "archive '" + a_.name + "'");
  types_ = infer_types(a_);
  for (const auto& t : output_types()) widest_output_ = std::max(widest_output_, t.width);
  const LayerGraph g = layer_graph(a_);
  for (size_t li = 0; li < a_.layers.size(); ++li) {
    Plan p;
    p.inputs = g.inputs[li];
    const Layer& l = a_.layers[li];
    if (is_linear(l.kind)) p.linear = linear_map(l);
    if (l.kind == LayerKind::Pool) p.pool = pool_map(l);
    if (l.kind == LayerKind::Lut) p.lut_offsets = lut_offsets(l);
    if (l.kind == LayerKind::Concatenate) p.concat = concat_map(a_, li);
    if (l.kind == LayerKind::Add) p.add = add_map(a_, li);
    if (l.kind == LayerKind::Einsum) p.einsum = einsum_map(a_, li);
    p.float_output = g.float_output[li];
    plans_.push_back(std::move(p));
  }
  batch_ = BatchPlan::build(*this);
}

void Emulator::exact_layer(size_t li, const std::vector<std::vector<int128>>& vals, const double* x,
                           std::vector<int128>& v, int64_t sample, EmulatorStats* stats) const {
  const Layer& l = a_.layers[li];
  const LayerTypes& t = types_[li];
  const Plan& p = plans_[li];
  const int64_t src = p.inputs[0];
  const bool in_float = src < 0 || plans_[src].float_output;
  static const std::vector<int128> kNone;
  const std::vector<int128>& in = in_float ? kNone : vals[src];
  auto check_range = [&](const char* what, int64_t o, int128 r, int128 lo, int128 hi) {
    if (r < lo || r > hi)
      throw ArchiveError("emulator: " + std::string(what) + " " + std::to_string(o) +
                         " of layer '" + l.name + "' left its inferred range (" + to_string(r) +
                         " not in [" + to_string(lo) + ", " + to_string(hi) + "])");
  };
  switch (l.kind) {
    case LayerKind::Flatten:
    case LayerKind::Reshape: {
      if (!in_float) v = in;
      return;
    }
    case LayerKind::Quantize: {
      if (!in_float) v = in;
      quantize_values(v, t.input, *l.input_quantizer, in_float ? x : nullptr, sample, stats);
      return;
    }
    case LayerKind::Activation: {
      v = in;
      if (l.activation == "relu")
        for (auto& m : v) m = m < 0 ? 0 : m;
      // relu keeps each value's frac: the types after relu share the input's frac.
      quantize_values(v, t.input, *l.output_quantizer, nullptr, sample, stats);
      return;
    }
    case LayerKind::Lut: {
      if (!in_float) v = in;
      quantize_values(v, t.input, *l.input_quantizer, in_float ? x : nullptr, sample, stats);
      const QuantSpec& q = *l.input_quantizer;
      for (int64_t n = 0; n < q.size(); ++n) {
        const FixedType qt = t.quantized_input[n];
        const int64_t index = qt.width == 0 ? 0 : static_cast<int64_t>(v[n] - qt.min_mantissa());
        v[n] = l.table[p.lut_offsets[n] + index];
      }
      return;
    }
    case LayerKind::Softmax: {
      if (!in_float) v = in;
      quantize_values(v, t.input, *l.input_quantizer, in_float ? x : nullptr, sample, stats);
      const SoftmaxTypes& s = t.softmax;
      std::vector<int64_t> e(s.n);
      for (int64_t r = 0; r < s.rows; ++r) {
        int128* row = v.data() + r * s.n;
        const FixedType* ty = t.quantized_input.data() + r * s.n;
        for (int64_t j = 0; j < s.n; ++j)
          row[j] = ty[j].width == 0 ? 0 : row[j] << (s.max.frac - ty[j].frac);
        const int128 max = *std::max_element(row, row + s.n);
        int128 sum = 0;
        for (int64_t j = 0; j < s.n; ++j) {
          bool clipped = false;
          const int128 u =
              quantize_exact(row[j] - max, s.max.frac, *l.exp_input_quantizer, 0, &clipped);
          count_clip(stats, *l.exp_input_quantizer, clipped);
          e[j] = SoftmaxTypes::entry(s.exp_table, s.exp_in, u);
          sum += e[j];
        }
        bool clipped = false;
        const int128 si = quantize_exact(sum, s.exp_out.frac, *l.inv_input_quantizer, 0, &clipped);
        count_clip(stats, *l.inv_input_quantizer, clipped);
        const int128 inv = SoftmaxTypes::entry(s.inv_table, s.inv_in, si);
        for (int64_t j = 0; j < s.n; ++j) row[j] = int128{e[j]} * inv;
      }
      quantize_values(v, t.accumulator, *l.output_quantizer, nullptr, sample, stats);
      return;
    }
    case LayerKind::Concatenate: {
      v.resize(p.concat.slot.size());
      for (size_t o = 0; o < v.size(); ++o)
        v[o] = vals[p.inputs[p.concat.slot[o]]][p.concat.element[o]];
      return;
    }
    case LayerKind::Pool: {
      const PoolMap& m = p.pool;
      v.assign(m.n_out(), 0);
      for (int64_t o = 0; o < m.n_out(); ++o) {
        const int frac = t.accumulator[o].frac - (m.max ? 0 : m.shift);
        int128 r = 0;
        for (int64_t k = m.begin[o]; k < m.begin[o + 1]; ++k) {
          const int64_t j = m.input[k];
          const int128 e = t.input[j].width == 0 ? 0 : in[j] << (frac - t.input[j].frac);
          r = m.max ? (k == m.begin[o] ? e : std::max(r, e)) : r + e;
        }
        if (!m.max) r *= m.mult;  // avg over a window that is not a power of two: the scale
        check_range("output", o, r, t.acc_lo[o], t.acc_hi[o]);
        v[o] = r;
      }
      return;
    }
    case LayerKind::Add: {
      const int64_t n = static_cast<int64_t>(t.accumulator.size());
      v.assign(n, 0);
      for (int64_t s = 0; s < static_cast<int64_t>(p.inputs.size()); ++s) {
        const std::vector<int128>& xs = vals[p.inputs[s]];
        const std::vector<FixedType>& ts = types_[p.inputs[s]].output;
        const std::vector<int64_t>& el = p.add.element[s];
        for (int64_t o = 0; o < n; ++o)
          if (ts[el[o]].width > 0) v[o] += xs[el[o]] << (t.accumulator[o].frac - ts[el[o]].frac);
      }
      for (int64_t o = 0; o < n; ++o) check_range("sum", o, v[o], t.acc_lo[o], t.acc_hi[o]);
      if (l.activation == "relu")
        for (auto& m : v) m = m < 0 ? 0 : m;
      if (l.output_quantizer)
        quantize_values(v, t.accumulator, *l.output_quantizer, nullptr, sample, stats);
      return;
    }
    case LayerKind::Einsum: {
      // Both operands are fixed-point (infer_types): quantize each, then exact sums of products.
      std::vector<int128> xa = in, xb = vals[p.inputs[1]];
      quantize_values(xa, t.input, *l.input_quantizer, nullptr, sample, stats);
      quantize_values(xb, types_[p.inputs[1]].output, *l.input2_quantizer, nullptr, sample, stats);
      const util::EinsumMap& m = p.einsum;
      v.assign(m.n_out(), 0);
      for (int64_t o = 0; o < m.n_out(); ++o) {
        const int af = t.accumulator[o].frac;
        int128 acc = 0;
        for (int64_t k = m.begin[o]; k < m.begin[o + 1]; ++k) {
          const FixedType &ta = t.quantized_input[m.first[k]],
                          &tb = t.quantized_input2[m.second[k]];
          if (ta.width == 0 || tb.width == 0) continue;
          acc += (xa[m.first[k]] * xb[m.second[k]]) << (af - ta.frac - tb.frac);
        }
        check_range("sum", o, acc, t.acc_lo[o], t.acc_hi[o]);
        v[o] = acc;
      }
      if (l.output_quantizer)
        quantize_values(v, t.accumulator, *l.output_quantizer, nullptr, sample, stats);
      return;
    }
    case LayerKind::Dense:
    case LayerKind::Conv1d:
    case LayerKind::Conv2d:
    case LayerKind::Scale:
    case LayerKind::EinsumDense:
      break;  // the linear layers, after the switch
  }
  std::vector<int128> xq;
  const std::vector<int128>* xin = &in;
  if (l.input_quantizer) {
    if (!in_float) xq = in;
    quantize_values(xq, t.input, *l.input_quantizer, in_float ? x : nullptr, sample, stats);
    xin = &xq;
  }
  const LinearMap& m = p.linear;
  const Constant& w = *l.kernel;
  v.assign(m.n_out(), 0);
  for (int64_t o = 0; o < m.n_out(); ++o) {
    const int af = t.accumulator[o].frac;
    int128 acc = 0;
    for (int64_t k = m.begin[o]; k < m.begin[o + 1]; ++k) {
      const int64_t j = m.input[k], wn = m.weight[k];
      const FixedType& xt = t.quantized_input[j];
      const int128 xv = (*xin)[j];
      if (xt.width == 0 || xv == 0 || w.mantissa[wn] == 0) continue;
      acc += (xv * w.mantissa[wn]) << (af - (xt.frac - w.exponent[wn]));
    }
    const int64_t bn = m.bias[o];
    if (bn >= 0 && l.bias->mantissa[bn] != 0)
      acc += static_cast<int128>(l.bias->mantissa[bn]) << (af + l.bias->exponent[bn]);
    check_range("accumulator", o, acc, t.acc_lo[o], t.acc_hi[o]);
    v[o] = acc;
  }
  if (l.activation == "relu")
    for (auto& e : v) e = e < 0 ? 0 : e;
  if (l.output_quantizer)
    quantize_values(v, t.accumulator, *l.output_quantizer, nullptr, sample, stats);
}

void Emulator::run_exact(const double* x, int128* y, EmulatorStats* stats) const {
  const size_t n_layers = a_.layers.size();
  std::vector<std::vector<int128>> vals(n_layers);
  const int64_t sample = stats ? stats->samples : 0;
  for (size_t li = 0; li < n_layers; ++li)
    if (!plans_[li].float_output) exact_layer(li, vals, x, vals[li], sample, stats);
  const std::vector<int128>& out = vals.back();
  for (int64_t o = 0; o < output_size(); ++o) y[o] = out[o];
  if (stats) ++stats->samples;
}

void Emulator::check_output_width() const {
  if (widest_output_ > 53)
    throw ArchiveError("emulator: an output is " + std::to_string(widest_output_) +
                       " bits wide, more than a double holds exactly; use run_exact");
}

void Emulator::run(const double* x, double* y, EmulatorStats* stats) const {
  check_output_width();
  EmulatorStats local;
  if (!options_.exact && batch_ && run_batch_fast(x, 1, y, stats ? stats : &local)) return;
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
  run_batch(x.data(), n, y.data(), stats);
  return y;
}

void Emulator::run_batch(const double* x, int64_t n, double* y, EmulatorStats* stats) const {
  if (n <= 0) return;
  check_output_width();
  EmulatorStats local;
  EmulatorStats* s = stats ? stats : &local;
  if (!options_.exact && batch_ && run_batch_fast(x, n, y, s)) return;
  run_batch_exact(x, n, y, s);
}

void Emulator::run_batch_exact(const double* x, int64_t n, double* y, EmulatorStats* stats) const {
  const int64_t in = input_size(), out = output_size();
  const auto& ot = output_types();
  std::vector<int128> m(out);
  for (int64_t r = 0; r < n; ++r) {
    run_exact(x + r * in, m.data(), stats);
    for (int64_t o = 0; o < out; ++o)
      y[r * out + o] = std::ldexp(static_cast<double>(m[o]), -ot[o].frac);
  }
}

bool Emulator::run_batch_fast(const double* x, int64_t n, double* y, EmulatorStats* stats) const {
  EmulatorStats counted;
  if (!batch_->run(*this, x, n, y, counted)) return false;
  stats->samples += counted.samples;
  stats->wrapped += counted.wrapped;
  stats->saturated += counted.saturated;
  return true;
}

std::optional<LinearPrecision> Emulator::linear_precision(size_t layer) const {
  if (!batch_) return std::nullopt;
  return batch_->linear_precision(layer);
}

std::string Emulator::describe_plan() const {
  if (!batch_) return "exact path only: a value of the archive is wider than a double holds\n";
  return batch_->describe(*this);
}

const char* to_string(LinearPrecision p) {
  switch (p) {
    case LinearPrecision::Float32:
      return "float32";
    case LinearPrecision::Float64:
      return "float64";
    case LinearPrecision::Int128:
      return "int128";
  }
  return "?";
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

std::vector<double> load_model_inputs(const Archive& a, const std::string& file,
                                      const std::string& dataset, int64_t limit, int64_t& rows) {
  auto arr = data::read_h5_array(file, dataset);
  if (arr.row_size() != a.input_size())
    throw data::DataError(file + ":" + dataset + ": rows of " + std::to_string(arr.row_size()) +
                          " values (shape " + data::shape_to_string(arr.shape) +
                          "), but the model takes " + std::to_string(a.input_size()) + " (" +
                          data::shape_to_string(a.input_shape) + ")");
  rows = arr.rows();
  if (limit > 0 && rows > limit) {
    rows = limit;
    arr.values.resize(rows * a.input_size());
  }
  preprocess(a, arr.values, rows);
  return std::vector<double>(arr.values.begin(), arr.values.end());
}

}  // namespace hgqt::archive
