// lower(): an archive as one typed netlist of scalar operations (hgqt/export/netlist.h), and the
// netlist's exact interpreter.
#include "hgqt/export/netlist.h"

#include <algorithm>
#include <map>
#include <stdexcept>
#include <tuple>

#include "hgqt/export/adder_graph.h"
#include "hgqt/util/checked_int.h"

namespace hgqt::netlist {

using archive::ArchiveError;
using archive::Layer;
using archive::LayerKind;
using archive::QuantSpec;
using exporters::adder_signed_width;

const char* op_name(OpKind k) {
  switch (k) {
    case OpKind::Input:
      return "input";
    case OpKind::Const:
      return "const";
    case OpKind::Quantize:
      return "quantize";
    case OpKind::Relu:
      return "relu";
    case OpKind::Sum:
      return "sum";
    case OpKind::Max:
      return "max";
    case OpKind::Table:
      return "table";
    case OpKind::Mul:
      return "mul";
  }
  return "?";
}

std::pair<int128, int128> term_range(const Op& x, const Operand& t, const std::string& what) {
  const int128 a = archive::align(util::checked_mul<ArchiveError>(x.lo, t.coef, what), 0, t.shift);
  const int128 b = archive::align(util::checked_mul<ArchiveError>(x.hi, t.coef, what), 0, t.shift);
  return {std::min(a, b), std::max(a, b)};
}

namespace {

class Lowering {
 public:
  explicit Lowering(const archive::Archive& a) : a_(a), types_(archive::infer_types(a)) {}
  Netlist run();

 private:
  // ---- building blocks
  int32_t add(Op op) {
    if (op.kind != OpKind::Const && op.kind != OpKind::Input) op.step = step_;
    n_.ops.push_back(std::move(op));
    return static_cast<int32_t>(n_.ops.size() - 1);
  }
  int32_t constant(int128 v, const FixedType& t) {
    if (t.width == 0) v = 0;
    const auto key = std::make_tuple(v, t.is_signed, t.width, t.frac);
    auto it = consts_.find(key);
    if (it != consts_.end()) return it->second;
    if (t.width > 0 && (v < t.min_mantissa() || v > t.max_mantissa()))
      throw std::logic_error("lower: constant " + archive::to_string(v) + " outside " +
                             t.to_string());
    Op op;
    op.kind = OpKind::Const;
    op.type = t;
    op.konst = op.lo = op.hi = v;
    const int32_t id = add(std::move(op));
    consts_.emplace(key, id);
    return id;
  }
  const Op& op(int32_t id) const { return n_.ops[id]; }
  bool is_const(int32_t id) const { return op(id).kind == OpKind::Const; }
  int128 value(int32_t id) const { return op(id).konst; }
  void begin_step(size_t li, std::string what, bool matrix = false) {
    Step s;
    s.layer = li;
    s.what = std::move(what);
    s.matrix = matrix;
    n_.steps.push_back(std::move(s));
    step_ = static_cast<int32_t>(n_.steps.size() - 1);
  }
  int32_t quant_index(const QuantSpec& q, int64_t n);
  int32_t table_index(const FixedType& index, const FixedType& out, std::vector<int64_t> entries,
                      const std::string& name);

  // ---- operations (constant-folded)
  int32_t quantize(int32_t v, const QuantSpec& q, int64_t n);
  int32_t relu(int32_t v, const FixedType& t);
  int32_t lookup(int32_t v, const FixedType& out, const int64_t* entries, int64_t size,
                 const std::string& name);
  /// konst + sum of the operands (coefficients and shifts given), of type t; folds constants.
  int32_t sum(std::vector<Operand> terms, int128 konst, const FixedType& t, const std::string& what,
              const int128* range = nullptr);
  int32_t maximum(const std::vector<Operand>& terms, int frac, const FixedType* type);
  /// a * b exactly (frac: the sum of theirs), of type `type`, or (null) the smallest type holding
  /// the product of their ranges; a constant factor makes it a constant sum (or a constant).
  int32_t product(int32_t a, int32_t b, const FixedType* type, const std::string& what);

  // ---- layers
  void analyze();
  const std::vector<int32_t>& input(size_t li, size_t slot) const;
  std::vector<int32_t> quantized_input(size_t li);
  void linear(size_t li);
  void post(size_t li, std::vector<int32_t>& v);
  void pool(size_t li);
  void add_layer(size_t li);
  void lut(size_t li);
  void softmax(size_t li);
  void einsum(size_t li);
  void check(const std::vector<int32_t>& v, const std::vector<FixedType>& want,
             const std::string& what) const;

  const archive::Archive& a_;
  std::vector<archive::LayerTypes> types_;
  Netlist n_;
  int32_t step_ = -1;
  std::map<std::tuple<int128, bool, int, int>, int32_t> consts_;
  std::map<std::tuple<int, int, int, int, int>, int32_t> quants_;
  std::map<std::tuple<bool, int, int, bool, int, int, std::vector<int64_t>>, int32_t> tables_;
  archive::LayerGraph graph_;
  std::vector<char> reads_bus_;
  std::vector<int32_t> bus_;
  std::vector<std::vector<int32_t>> vals_;  // each layer's output (empty: the float input)
};

int32_t Lowering::quant_index(const QuantSpec& q, int64_t n) {
  const auto key = std::make_tuple(q.k[n], q.i[n], q.f[n], static_cast<int>(q.round),
                                   static_cast<int>(q.overflow));
  auto it = quants_.find(key);
  if (it != quants_.end()) return it->second;
  QuantSpec s;
  s.shape = {1};
  s.k = {q.k[n]};
  s.i = {q.i[n]};
  s.f = {q.f[n]};
  s.round = q.round;
  s.overflow = q.overflow;
  n_.quants.push_back(std::move(s));
  const auto id = static_cast<int32_t>(n_.quants.size() - 1);
  quants_.emplace(key, id);
  return id;
}

int32_t Lowering::table_index(const FixedType& index, const FixedType& out,
                              std::vector<int64_t> entries, const std::string& name) {
  auto key = std::make_tuple(index.is_signed, index.width, index.frac, out.is_signed, out.width,
                             out.frac, std::move(entries));
  auto it = tables_.find(key);
  if (it != tables_.end()) return it->second;
  Table t;
  t.index = index;
  t.out = out;
  t.entries = std::get<6>(key);
  t.name = name;
  n_.tables.push_back(std::move(t));
  const auto id = static_cast<int32_t>(n_.tables.size() - 1);
  tables_.emplace(std::move(key), id);
  return id;
}

// Q(v) with element n of q. Folds a constant input, and an input whose whole range rounds to
// one value.
int32_t Lowering::quantize(int32_t v, const QuantSpec& q, int64_t n) {
  const FixedType out = archive::quantizer_type(q, n);
  if (out.width == 0) return constant(0, out);
  const Op& x = op(v);
  if (x.kind == OpKind::Const)
    return constant(archive::quantize_exact(x.konst, x.type.frac, q, n), out);
  const int shift = x.type.frac - q.f[n];
  if (shift > 0) {
    const int s = std::min(shift, 120);
    const int128 rlo = archive::round_shift(x.type.min_mantissa(), s, q.round);
    const int128 rhi = archive::round_shift(x.type.max_mantissa(), s, q.round);
    if (rlo == rhi)
      return constant(archive::overflow_int(rlo, q.k[n], q.i[n], q.f[n], q.overflow), out);
  }
  Op o;
  o.kind = OpKind::Quantize;
  o.type = out;
  o.lo = out.min_mantissa();
  o.hi = out.max_mantissa();
  o.in = {Operand{v}};
  o.quant = quant_index(q, n);
  return add(std::move(o));
}

// max(v, 0) of type t (which holds it).
int32_t Lowering::relu(int32_t v, const FixedType& t) {
  const Op& x = op(v);
  if (t.width == 0) return constant(0, t);
  if (x.kind == OpKind::Const) return constant(std::max<int128>(x.konst, 0), t);
  if (!x.type.is_signed && x.type == t) return v;
  Op o;
  o.kind = OpKind::Relu;
  o.type = t;
  o.lo = std::max<int128>(x.lo, 0);
  o.hi = std::max<int128>(x.hi, 0);
  o.in = {Operand{v}};
  return add(std::move(o));
}

// entries[index mantissa - smallest mantissa of v's type] of type `out`.
int32_t Lowering::lookup(int32_t v, const FixedType& out, const int64_t* entries, int64_t size,
                         const std::string& name) {
  const Op& x = op(v);
  if (out.width == 0) return constant(0, out);
  if (x.type.width == 0 || x.kind == OpKind::Const) {
    const int128 e = x.type.width == 0 ? 0 : x.konst - x.type.min_mantissa();
    if (e < 0 || e >= size) throw std::logic_error("lower: table index out of range");
    return constant(entries[static_cast<int64_t>(e)], out);
  }
  if (size != (int64_t{1} << x.type.width))
    throw std::logic_error("lower: table " + name + " does not match its index");
  if (std::all_of(entries, entries + size, [&](int64_t e) { return e == entries[0]; }))
    return constant(entries[0], out);
  Op o;
  o.kind = OpKind::Table;
  o.type = out;
  o.lo = *std::min_element(entries, entries + size);
  o.hi = *std::max_element(entries, entries + size);
  o.in = {Operand{v}};
  o.table = table_index(x.type, out, std::vector<int64_t>(entries, entries + size), name);
  return add(std::move(o));
}

int32_t Lowering::sum(std::vector<Operand> terms, int128 konst, const FixedType& t,
                      const std::string& what, const int128* range) {
  std::vector<Operand> live;
  for (const Operand& term : terms) {
    const Op& x = op(term.value);
    if (term.coef == 0 || x.type.width == 0) continue;
    if (term.shift < 0 || term.shift > 126)
      throw std::logic_error("lower: " + what + ": shift " + std::to_string(term.shift));
    if (x.kind == OpKind::Const) {
      konst = util::checked_add<ArchiveError>(
          konst,
          archive::align(util::checked_mul<ArchiveError>(x.konst, term.coef, what), 0, term.shift),
          what);
      continue;
    }
    live.push_back(term);
  }
  int128 lo = konst, hi = konst;
  for (const Operand& term : live) {
    const auto [a, b] = term_range(op(term.value), term, what);
    lo = util::checked_add<ArchiveError>(lo, a, what);
    hi = util::checked_add<ArchiveError>(hi, b, what);
  }
  if (live.empty()) return constant(konst, t);
  if (range) {  // a tighter range the caller knows (softmax: x - max <= 0)
    lo = std::max(lo, range[0]);
    hi = std::min(hi, range[1]);
  }
  if (t.width == 0 || lo < t.min_mantissa() || hi > t.max_mantissa())
    throw std::logic_error("lower: " + what + ": range [" + archive::to_string(lo) + ", " +
                           archive::to_string(hi) + "] outside " + t.to_string());
  Op o;
  o.kind = OpKind::Sum;
  o.type = t;
  o.lo = lo;
  o.hi = hi;
  o.in = std::move(live);
  o.konst = konst;
  return add(std::move(o));
}

// The largest operand, each shifted left to `frac`; constant and pruned (0) operands fold into
// one constant operand. Of type `type`, or (null) the signed type at `frac` holding every
// operand's type range and the constant: the comparators work at one width.
int32_t Lowering::maximum(const std::vector<Operand>& terms, int frac, const FixedType* type) {
  Op m;
  m.kind = OpKind::Max;
  for (const Operand& term : terms) {
    const Op& x = op(term.value);
    if (x.type.width == 0 || x.kind == OpKind::Const) {
      const int128 c = x.type.width == 0 ? 0 : archive::align(x.konst, 0, term.shift);
      m.konst = m.has_konst ? std::max(m.konst, c) : c;
      m.has_konst = true;
      continue;
    }
    m.in.push_back(term);
  }
  if (m.in.empty())
    return constant(m.konst,
                    type ? *type : FixedType{true, adder_signed_width(m.konst, m.konst), frac});
  bool first = !m.has_konst;
  m.lo = m.hi = m.konst;
  int128 all_lo = m.konst, all_hi = m.konst;
  for (const Operand& term : m.in) {
    const Op& x = op(term.value);
    const int128 a = archive::align(x.lo, 0, term.shift), b = archive::align(x.hi, 0, term.shift);
    const int128 ta = archive::align(x.type.min_mantissa(), 0, term.shift);
    const int128 tb = archive::align(x.type.max_mantissa(), 0, term.shift);
    m.lo = first ? a : std::max(m.lo, a);
    m.hi = first ? b : std::max(m.hi, b);
    all_lo = first ? ta : std::min(all_lo, ta);
    all_hi = first ? tb : std::max(all_hi, tb);
    first = false;
  }
  m.type = type ? *type : FixedType{true, adder_signed_width(all_lo, all_hi), frac};
  int128 lo = m.konst, hi = m.konst;  // the operands' ranges, for the comparisons
  first = !m.has_konst;
  for (const Operand& term : m.in) {
    const Op& x = op(term.value);
    const int128 a = archive::align(x.lo, 0, term.shift), b = archive::align(x.hi, 0, term.shift);
    lo = first ? a : std::min(lo, a);
    hi = first ? b : std::max(hi, b);
    first = false;
  }
  m.cmp = lo >= m.type.min_mantissa() && hi <= m.type.max_mantissa()
              ? m.type
              : archive::type_of_range(lo, hi, frac);
  return add(std::move(m));
}

// The graph: each layer's inputs, which outputs are still the float model input, which layers
// quantize it (they read data_in: the first, and later ones with the same quantizer).
void Lowering::analyze() {
  const size_t n = a_.layers.size();
  graph_ = archive::layer_graph(a_);
  reads_bus_.assign(n, 0);
  bool found = false;
  for (size_t li = 0; li < n; ++li) {
    const Layer& l = a_.layers[li];
    const bool in_float = graph_.reads_float(li);
    const bool quantizer = l.kind == LayerKind::Quantize || l.kind == LayerKind::Lut ||
                           l.kind == LayerKind::Softmax ||
                           (archive::is_linear(l.kind) && l.input_quantizer);
    if (!in_float || !quantizer) continue;
    if (found) {
      const QuantSpec& q0 = *a_.layers[n_.input_layer].input_quantizer;
      const QuantSpec& q = *l.input_quantizer;
      if (q.k != q0.k || q.i != q0.i || q.f != q0.f || q.round != q0.round ||
          q.overflow != q0.overflow)
        throw ArchiveError(
            "layers '" + a_.layers[n_.input_layer].name + "' and '" + l.name +
            "' both quantize the raw model input, with different quantizers; the design's input "
            "carries the mantissas of one quantizer only, so quantize the input once (a quantize "
            "layer both read) or give them the same quantizer");
    } else {
      found = true;
      n_.input_layer = li;
    }
    reads_bus_[li] = 1;
  }
  if (!found) throw ArchiveError("the archive has no input quantizer");
}

const std::vector<int32_t>& Lowering::input(size_t li, size_t slot) const {
  if (graph_.reads_float(li, slot)) {
    if (!reads_bus_[li])
      throw std::logic_error("lower: layer '" + a_.layers[li].name +
                             "' reads the float model input");
    return bus_;
  }
  return vals_[static_cast<size_t>(graph_.inputs[li][slot])];
}

void Lowering::check(const std::vector<int32_t>& v, const std::vector<FixedType>& want,
                     const std::string& what) const {
  if (v.size() != want.size())
    throw std::logic_error("lower: " + what + " has " + std::to_string(v.size()) +
                           " values, infer_types " + std::to_string(want.size()));
  for (size_t e = 0; e < v.size(); ++e)
    if (op(v[e]).type != want[e])
      throw std::logic_error("lower: " + what + " element " + std::to_string(e) + " is " +
                             op(v[e]).type.to_string() + ", infer_types says " +
                             want[e].to_string());
}

// The values after layer li's input quantizer (data_in for the layers that quantize it).
std::vector<int32_t> Lowering::quantized_input(size_t li) {
  const Layer& l = a_.layers[li];
  if (reads_bus_[li]) return bus_;
  std::vector<int32_t> v = input(li, 0);
  if (!l.input_quantizer) return v;
  begin_step(li, "input quantizer");
  for (size_t e = 0; e < v.size(); ++e) v[e] = quantize(v[e], *l.input_quantizer, e);
  return v;
}

// Linear layers (archive::linear_map): accumulator o is the bias plus the products of its live
// terms, each input times its weight mantissa shifted to the accumulator's frac.
void Lowering::linear(size_t li) {
  const Layer& l = a_.layers[li];
  const auto& t = types_[li];
  const std::vector<int32_t> x = quantized_input(li);
  check(x, t.quantized_input, "layer '" + l.name + "' quantized input");
  const archive::LinearMap m = archive::linear_map(l);
  const archive::Constant& w = *l.kernel;
  begin_step(li, "products and sums", true);
  std::vector<int32_t> acc(m.n_out());
  for (int64_t o = 0; o < m.n_out(); ++o) {
    const FixedType& at = t.accumulator[o];
    int128 konst = 0;
    const int64_t bn = m.bias[o];
    if (bn >= 0 && l.bias->mantissa[bn] != 0)
      konst = archive::align(l.bias->mantissa[bn], -l.bias->exponent[bn], at.frac);
    std::vector<Operand> terms;
    for (int64_t k = m.begin[o]; k < m.begin[o + 1]; ++k) {
      const int64_t j = m.input[k], wn = m.weight[k];
      const int128 c = w.mantissa[wn];
      const Op& xj = op(x[j]);
      if (c == 0 || xj.type.width == 0) continue;
      const int s = at.frac - (xj.type.frac - w.exponent[wn]);
      if (s < 0)
        throw std::logic_error("lower: layer '" + l.name + "' weight " + std::to_string(wn) +
                               " has a negative shift");
      terms.push_back(Operand{x[j], c, s});
    }
    acc[o] =
        sum(std::move(terms), konst, at, "layer '" + l.name + "' accumulator " + std::to_string(o));
  }
  check(acc, t.accumulator, "layer '" + l.name + "' accumulator");
  post(li, acc);
  vals_[li] = std::move(acc);
}

// Linear layers and add: relu, then the output quantizer.
void Lowering::post(size_t li, std::vector<int32_t>& v) {
  const Layer& l = a_.layers[li];
  const auto& t = types_[li];
  const bool relu_on = l.activation == "relu";
  if (relu_on || l.output_quantizer) begin_step(li, "activation and output quantizer");
  for (size_t o = 0; o < v.size(); ++o) {
    if (relu_on)
      v[o] = relu(v[o],
                  archive::type_of_range(std::max<int128>(t.acc_lo[o], 0),
                                         std::max<int128>(t.acc_hi[o], 0), t.accumulator[o].frac));
    if (l.output_quantizer) v[o] = quantize(v[o], *l.output_quantizer, o);
  }
}

// Pool: max of the window elements aligned to the output's frac; avg: their exact sum at
// frac - shift (whose mantissa read at frac is the average), over a window that is not a power of
// two that sum (its own exact type) times the scale's mantissa mult.
void Lowering::pool(size_t li) {
  const Layer& l = a_.layers[li];
  const auto& t = types_[li];
  const std::vector<int32_t>& x = input(li, 0);
  check(x, t.input, "layer '" + l.name + "' input");
  const archive::PoolMap m = archive::pool_map(l);
  begin_step(li, l.pool + " pool");
  std::vector<int32_t> out(m.n_out());
  for (int64_t o = 0; o < m.n_out(); ++o) {
    const FixedType& at = t.accumulator[o];
    const std::string what = "layer '" + l.name + "' output " + std::to_string(o);
    const int frac = at.frac - (m.max ? 0 : m.shift);
    std::vector<Operand> terms;
    for (int64_t k = m.begin[o]; k < m.begin[o + 1]; ++k) {
      const Op& xk = op(x[m.input[k]]);
      const int s = frac - xk.type.frac;
      if (xk.type.width > 0 && s < 0)
        throw std::logic_error("lower: " + what + " has a negative shift");
      terms.push_back(Operand{x[m.input[k]], 1, std::max(s, 0)});
    }
    if (!m.max && m.mult != 1) {
      // The inferred range is the sum's times mult (infer_types): divided back, exactly.
      const FixedType st = archive::type_of_range(t.acc_lo[o] / m.mult, t.acc_hi[o] / m.mult, frac);
      const int32_t s = sum(std::move(terms), 0, st, what);
      out[o] = sum({Operand{s, m.mult, 0}}, 0, at, what);
    } else if (!m.max) {
      out[o] = sum(std::move(terms), 0, at, what);
    } else {
      out[o] = maximum(terms, at.frac, &at);
    }
  }
  check(out, t.accumulator, "layer '" + l.name + "' output");
  vals_[li] = std::move(out);
}

// add: the exact sum of the inputs aligned to the accumulator's frac, then relu and quantizer.
void Lowering::add_layer(size_t li) {
  const Layer& l = a_.layers[li];
  const auto& t = types_[li];
  const int64_t n = static_cast<int64_t>(t.accumulator.size());
  const archive::AddMap m = archive::add_map(a_, li);
  begin_step(li, "sum");
  std::vector<int32_t> acc(n);
  for (int64_t o = 0; o < n; ++o) {
    const FixedType& at = t.accumulator[o];
    std::vector<Operand> terms;
    for (size_t slot = 0; slot < graph_.inputs[li].size(); ++slot) {
      const int32_t v = input(li, slot).at(m.element[slot][o]);
      const Op& x = op(v);
      const int s = at.frac - x.type.frac;
      if (x.type.width > 0 && s < 0)
        throw std::logic_error("lower: layer '" + l.name + "' has a negative shift");
      terms.push_back(Operand{v, 1, std::max(s, 0)});
    }
    acc[o] = sum(std::move(terms), 0, at, "layer '" + l.name + "' element " + std::to_string(o));
  }
  check(acc, t.accumulator, "layer '" + l.name + "' accumulator");
  post(li, acc);
  vals_[li] = std::move(acc);
}

// lut: element n is its table's entry at the quantized input.
void Lowering::lut(size_t li) {
  const Layer& l = a_.layers[li];
  const auto& t = types_[li];
  std::vector<int32_t> v = quantized_input(li);
  check(v, t.quantized_input, "layer '" + l.name + "' quantized input");
  const std::vector<int64_t> off = archive::lut_offsets(l);
  begin_step(li, "lookup tables");
  for (size_t e = 0; e < v.size(); ++e)
    v[e] = lookup(v[e], t.output[e], l.table.data() + off[e], off[e + 1] - off[e],
                  "layer '" + l.name + "' element " + std::to_string(e));
  vals_[li] = std::move(v);
}

// softmax (archive.h, archive::SoftmaxTypes) over rows of n elements.
void Lowering::softmax(size_t li) {
  const Layer& l = a_.layers[li];
  const auto& t = types_[li];
  const archive::SoftmaxTypes& s = t.softmax;
  const std::string what = "layer '" + l.name + "'";
  const std::vector<int32_t> x = quantized_input(li);
  check(x, t.quantized_input, what + " quantized input");
  const int64_t n = s.n, rows = s.rows, total = rows * n;
  auto shift_of = [&](int32_t v) {
    const int sh = s.max.frac - op(v).type.frac;
    if (op(v).type.width > 0 && sh < 0)
      throw std::logic_error("lower: " + what + " has a negative shift");
    return std::max(sh, 0);
  };
  // each row's max over x aligned to max.frac (pruned elements are 0)
  begin_step(li, "softmax row max");
  std::vector<int32_t> mx(rows);
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<Operand> row;
    for (int64_t j = 0; j < n; ++j) row.push_back(Operand{x[r * n + j], 1, shift_of(x[r * n + j])});
    mx[r] = maximum(row, s.max.frac, nullptr);
  }
  // u = Q_ei(x - max), exactly: x <= max, so the difference lies in [x_lo - max_hi, 0]
  begin_step(li, "softmax x - max and exp table input quantizer");
  std::vector<int32_t> u(total);
  for (int64_t j = 0; j < total; ++j) {
    const int32_t v = x[j], m = mx[j / n];
    const int sh = shift_of(v);
    const Op& xv = op(v);
    const int128 xlo = xv.type.width == 0 ? 0 : archive::align(xv.type.min_mantissa(), 0, sh);
    const int128 mhi = op(m).kind == OpKind::Const ? op(m).konst : op(m).type.max_mantissa();
    const int128 range[2] = {std::min<int128>(xlo - mhi, 0), 0};
    int32_t d;
    if (xv.kind == OpKind::Const && op(m).kind == OpKind::Const) {
      const int128 dv = archive::align(xv.type.width == 0 ? 0 : xv.konst, 0, sh) - op(m).konst;
      d = constant(dv, FixedType{true, adder_signed_width(dv, dv), s.max.frac});
    } else {
      d = sum({Operand{v, 1, sh}, Operand{m, -1, 0}}, 0,
              FixedType{true, adder_signed_width(range[0], 0), s.max.frac},
              what + " x - max " + std::to_string(j), range);
    }
    u[j] = quantize(d, *l.exp_input_quantizer, 0);
    if (op(u[j]).type != s.exp_in)
      throw std::logic_error("lower: " + what + " exp table index type");
  }
  begin_step(li, "softmax exp tables");
  std::vector<int32_t> e(total);
  for (int64_t j = 0; j < total; ++j)
    e[j] = lookup(u[j], s.exp_out, s.exp_table.data(), static_cast<int64_t>(s.exp_table.size()),
                  what + " exp");
  begin_step(li, "softmax row sums");
  std::vector<int32_t> sums(rows);
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<Operand> terms;
    for (int64_t j = 0; j < n; ++j) terms.push_back(Operand{e[r * n + j], 1, 0});
    sums[r] = sum(std::move(terms), 0, s.sum, what + " row sum " + std::to_string(r));
  }
  begin_step(li, "softmax reciprocal table input quantizer");
  std::vector<int32_t> inv_in(rows);
  for (int64_t r = 0; r < rows; ++r) inv_in[r] = quantize(sums[r], *l.inv_input_quantizer, 0);
  begin_step(li, "softmax reciprocal tables");
  std::vector<int32_t> inv(rows);
  for (int64_t r = 0; r < rows; ++r)
    inv[r] = lookup(inv_in[r], s.inv_out, s.inv_table.data(),
                    static_cast<int64_t>(s.inv_table.size()), what + " reciprocal");
  begin_step(li, "softmax products e * r");
  std::vector<int32_t> p(total);
  for (int64_t j = 0; j < total; ++j)
    p[j] = product(e[j], inv[j / n], &t.accumulator[j], what + " product " + std::to_string(j));
  check(p, t.accumulator, what + " products");
  begin_step(li, "softmax output quantizer");
  for (int64_t j = 0; j < total; ++j) p[j] = quantize(p[j], *l.output_quantizer, j);
  vals_[li] = std::move(p);
}

int32_t Lowering::product(int32_t a, int32_t b, const FixedType* type, const std::string& what) {
  const Op &x = op(a), &y = op(b);
  const int frac = x.type.frac + y.type.frac;
  const int128 c[4] = {util::checked_mul<ArchiveError>(x.lo, y.lo, what),
                       util::checked_mul<ArchiveError>(x.lo, y.hi, what),
                       util::checked_mul<ArchiveError>(x.hi, y.lo, what),
                       util::checked_mul<ArchiveError>(x.hi, y.hi, what)};
  const int128 lo = *std::min_element(c, c + 4), hi = *std::max_element(c, c + 4);
  const FixedType pt = type ? *type : archive::type_of_range(lo, hi, frac);
  const bool xc = is_const(a), yc = is_const(b);
  if (pt.width == 0 || x.type.width == 0 || y.type.width == 0 || (xc && value(a) == 0) ||
      (yc && value(b) == 0))
    return constant(0, pt);
  if (xc && yc) return constant(util::checked_mul<ArchiveError>(value(a), value(b), what), pt);
  if (xc || yc)  // a constant factor: a constant sum
    return sum({Operand{xc ? b : a, xc ? value(a) : value(b), 0}}, 0, pt, what);
  Op mul;
  mul.kind = OpKind::Mul;
  mul.type = pt;
  mul.lo = lo;
  mul.hi = hi;
  mul.in = {Operand{a}, Operand{b}};
  return add(std::move(mul));
}

// einsum: both operands quantized, every product a Mul of two values (real multipliers), each
// output the exact sum of its products aligned to the accumulator's frac, then the quantizer.
void Lowering::einsum(size_t li) {
  const Layer& l = a_.layers[li];
  const auto& t = types_[li];
  const std::string what = "layer '" + l.name + "'";
  std::vector<int32_t> xa = input(li, 0), xb = input(li, 1);
  begin_step(li, "einsum input quantizers");
  for (size_t e = 0; e < xa.size(); ++e) xa[e] = quantize(xa[e], *l.input_quantizer, e);
  for (size_t e = 0; e < xb.size(); ++e) xb[e] = quantize(xb[e], *l.input2_quantizer, e);
  check(xa, t.quantized_input, what + " quantized operand a");
  check(xb, t.quantized_input2, what + " quantized operand b");
  const util::EinsumMap m = archive::einsum_map(a_, li);
  begin_step(li, "einsum products");
  std::vector<int32_t> prods(m.first.size());
  for (size_t k = 0; k < prods.size(); ++k)
    prods[k] =
        product(xa[m.first[k]], xb[m.second[k]], nullptr, what + " product " + std::to_string(k));
  begin_step(li, "einsum sums");
  std::vector<int32_t> acc(m.n_out());
  for (int64_t o = 0; o < m.n_out(); ++o) {
    const FixedType& at = t.accumulator[o];
    std::vector<Operand> terms;
    for (int64_t k = m.begin[o]; k < m.begin[o + 1]; ++k) {
      const Op& p = op(prods[k]);
      if (p.type.width == 0) continue;
      const int s = at.frac - p.type.frac;
      if (s < 0) throw std::logic_error("lower: " + what + " has a negative shift");
      terms.push_back(Operand{prods[k], 1, s});
    }
    acc[o] = sum(std::move(terms), 0, at, what + " sum " + std::to_string(o));
  }
  check(acc, t.accumulator, what + " accumulator");
  post(li, acc);
  vals_[li] = std::move(acc);
}

Netlist Lowering::run() {
  n_.model = a_.name;
  analyze();
  const size_t nl = a_.layers.size();
  vals_.assign(nl, {});
  // data_in: the first quantizer's output elements (pruned ones are the constant 0)
  n_.input_quantizer = *a_.layers[n_.input_layer].input_quantizer;
  const QuantSpec& q0 = n_.input_quantizer;
  for (int64_t e = 0; e < q0.size(); ++e) {
    const FixedType t = archive::quantizer_type(q0, e);
    if (t.width == 0) {
      bus_.push_back(constant(0, t));
      continue;
    }
    Op in;
    in.kind = OpKind::Input;
    in.type = t;
    in.lo = t.min_mantissa();
    in.hi = t.max_mantissa();
    in.index = e;
    bus_.push_back(add(std::move(in)));
  }
  n_.inputs = bus_;
  for (size_t li = 0; li < nl; ++li) {
    const Layer& l = a_.layers[li];
    if (graph_.float_output[li]) continue;
    const std::string what = "layer '" + l.name + "'";
    switch (l.kind) {
      case LayerKind::Flatten:
      case LayerKind::Reshape:  // row-major: the same values
        vals_[li] = input(li, 0);
        break;
      case LayerKind::Concatenate: {
        const archive::ConcatMap m = archive::concat_map(a_, li);
        std::vector<int32_t> v;
        v.reserve(m.slot.size());
        for (size_t o = 0; o < m.slot.size(); ++o)
          v.push_back(input(li, m.slot[o]).at(m.element[o]));
        vals_[li] = std::move(v);
        break;
      }
      case LayerKind::Quantize:
        vals_[li] = quantized_input(li);
        break;
      case LayerKind::Activation: {
        std::vector<int32_t> v = input(li, 0);
        begin_step(li, "activation");
        for (size_t e = 0; e < v.size(); ++e) {
          if (l.activation == "relu" && op(v[e]).lo < 0)
            v[e] = relu(v[e], archive::type_of_range(0, std::max<int128>(op(v[e]).hi, 0),
                                                     op(v[e]).type.frac));
          v[e] = quantize(v[e], *l.output_quantizer, e);
        }
        vals_[li] = std::move(v);
        break;
      }
      case LayerKind::Dense:
      case LayerKind::Conv1d:
      case LayerKind::Conv2d:
      case LayerKind::Scale:
      case LayerKind::EinsumDense: {
        linear(li);
        break;
      }
      case LayerKind::Pool:
        pool(li);
        break;
      case LayerKind::Add:
        add_layer(li);
        break;
      case LayerKind::Lut:
        lut(li);
        break;
      case LayerKind::Softmax:
        softmax(li);
        break;
      case LayerKind::Einsum:
        einsum(li);
        break;
    }
    check(vals_[li], types_[li].output, what + " output");
  }
  n_.outputs = vals_.back();
  return std::move(n_);
}

}  // namespace

Netlist lower(const archive::Archive& a) {
  return Lowering(a).run();
}

std::vector<int128> evaluate(const Netlist& n, const std::vector<int128>& in) {
  if (in.size() != n.inputs.size())
    throw std::invalid_argument("netlist evaluate: " + std::to_string(in.size()) + " inputs for " +
                                std::to_string(n.inputs.size()));
  std::vector<int128> v(n.ops.size(), 0);
  for (size_t id = 0; id < n.ops.size(); ++id) {
    const Op& o = n.ops[id];
    auto arg = [&](size_t k) { return v[o.in.at(k).value]; };
    int128 r = 0;
    switch (o.kind) {
      case OpKind::Input:
        r = in.at(o.index);
        break;
      case OpKind::Const:
        r = o.konst;
        break;
      case OpKind::Quantize:
        r = archive::quantize_exact(arg(0), n.ops[o.in[0].value].type.frac, n.quants.at(o.quant),
                                    0);
        break;
      case OpKind::Relu:
        r = std::max<int128>(arg(0), 0);
        break;
      case OpKind::Sum:
        r = o.konst;
        for (const Operand& x : o.in)
          r = util::checked_add<ArchiveError>(
              r,
              archive::align(util::checked_mul<ArchiveError>(v[x.value], x.coef, "netlist"), 0,
                             x.shift),
              "netlist");
        break;
      case OpKind::Max: {
        bool first = !o.has_konst;
        r = o.konst;
        for (const Operand& x : o.in) {
          const int128 a = archive::align(v[x.value], 0, x.shift);
          r = first ? a : std::max(r, a);
          first = false;
        }
        break;
      }
      case OpKind::Table: {
        const Table& t = n.tables.at(o.table);
        const int128 e = arg(0) - t.index.min_mantissa();
        if (e < 0 || e >= static_cast<int128>(t.entries.size()))
          throw std::logic_error("netlist evaluate: table index out of range at op " +
                                 std::to_string(id));
        r = t.entries[static_cast<size_t>(e)];
        break;
      }
      case OpKind::Mul:
        r = util::checked_mul<ArchiveError>(arg(0), arg(1), "netlist");
        break;
    }
    if (o.kind != OpKind::Input &&
        (r < o.lo || r > o.hi ||
         (o.type.width > 0 && (r < o.type.min_mantissa() || r > o.type.max_mantissa()))))
      throw std::logic_error("netlist evaluate: op " + std::to_string(id) + " (" + op_name(o.kind) +
                             ") = " + archive::to_string(r) + " outside its range or type " +
                             o.type.to_string());
    v[id] = r;
  }
  std::vector<int128> out;
  out.reserve(n.outputs.size());
  for (int32_t id : n.outputs) out.push_back(v[id]);
  return out;
}

}  // namespace hgqt::netlist
