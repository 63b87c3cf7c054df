// Verilog generator: the network as one module of constant multiplications, exact adder trees,
// ReLUs and per-element quantizers (rounding and overflow as bit slicing and comparisons),
// bit-exact with archive::quantize_exact and the emulator.
//
// Arithmetic scheme: every value is a wire holding its mantissa at its exact type (infer_types).
// Products are signed wires at the exact width of the product's range. An accumulator of type
// (W, frac) is computed as a signed sum modulo 2^W: each term is shifted to the accumulator's frac
// and every operand is signed, so the low W bits of the sum are exact; since infer_types derives W
// from the exact range of the sum, those W bits are the sum itself (no overflow is possible).
//
// Constant multiplications (VerilogOptions::const_mult):
//  - "mul": products are signed wires `x * c` at the exact width of the product's range (weights
//    of +-2^e become shifts), summed in one expression at the accumulator's width as above.
//  - "csd": each weight mantissa c is recoded in canonical signed digits (non-adjacent
//    form, c = sum_k d_k 2^k with d_k in {-1, 0, 1} and no two adjacent nonzero digits), and
//    every digit contributes the term d_k * x * 2^(k + s) straight to the accumulator's adder
//    tree (no product wires). The tree is balanced and every inner node is a signed wire at the
//    exact width of its partial sum's range, computed from the node's exact linear form
//    (sum of coefficient * input over distinct inputs, plus a constant); a node's common
//    trailing zero bits (the smallest shift of its terms) are factored out of it and applied by
//    its parent. Each node is a sum modulo 2^w of sign-extended operands whose exact value fits
//    its w bits, so it equals the partial sum exactly, and so does the accumulator.
//
//  - "shared" (default): the same signed digits of all accumulators of a linear layer form one
//    constant matrix-vector product, summed by one adder graph (adder_graph.h): two-term patterns
//    that recur across accumulators become shared adders, the rest is summed per accumulator with
//    positive and negative terms apart; each adder is a signed wire at the exact width of its
//    node's range (from the node's exact linear form), so every node is exact as above. A layer
//    where sharing saves no logic bits gets the graph's plain trees (reported).
//
// Linear layers (dense, conv1d, conv2d, scale) all go through archive::linear_map: accumulator o
// sums the products of its terms (zero weights and pruned inputs vanish). add is the exact-width
// tree of its inputs aligned to the accumulator's frac; avg pool the same tree over a window
// (its mantissa read at frac + shift is the average); max pool a tree of signed comparators at a
// width holding every window element aligned to the common frac (pruned elements and constants
// fold into one constant operand). lut: the input quantizer, then one ROM
// per element (a case statement indexed by the quantized input's bits, sign bit inverted, i.e. the
// mantissa minus its minimum) giving the output mantissa. softmax (softmax_step): the input
// quantizer, each row's max as a comparator tree, x - max exactly and the exp table's input
// quantizer, the exp table (a Verilog function per layer, called per element), each row's exact
// sum as an adder tree, the reciprocal table's input quantizer and table (a function, called per
// row), the products e * r at the exact width of their range and the output quantizer.
// flatten, reshape and concatenate are wiring.
//
// Graphs: the layers are generated in layer order; each layer's output is a vector of values
// (wires, registers or constants) that the layers reading it (archive::layer_inputs) use.
// Register stages go after steps (a layer's input quantizer, its sums, its activation and output
// quantizer); a stage registers every value still to be read after it, so every path from data_in
// to data_out crosses every stage exactly once.
#include "hgqt/export/verilog.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "hgqt/archive/emulator.h"
#include "hgqt/export/adder_graph.h"
#include "hgqt/util/checked_int.h"
#include "hgqt/util/files.h"
#include "verilog_internal.h"

namespace hgqt::exporters {

using archive::ArchiveError;
using archive::FixedType;
using archive::int128;
using archive::LayerKind;
using quant::OverflowMode;
using quant::RoundingMode;

namespace {
using u128 = unsigned __int128;

int128 pow2(int e) {
  return static_cast<int128>(1) << e;
}

u128 low_mask(int w) {
  return w >= 128 ? ~u128{0} : (u128{1} << w) - 1;
}

// Width of the smallest two's complement integer holding every value of [lo, hi] (at least 1).
int signed_width(int128 lo, int128 hi) {
  const FixedType t = archive::type_of_range(lo, hi, 0);
  if (t.width == 0) return 1;
  return t.is_signed ? t.width : t.width + 1;
}

std::string hex(u128 v) {
  if (v == 0) return "0";
  std::string s;
  while (v != 0) {
    s.push_back("0123456789abcdef"[static_cast<int>(v & 15)]);
    v >>= 4;
  }
  std::reverse(s.begin(), s.end());
  return s;
}

// Sized literal holding the low `w` bits of v: signed ("8'sh..") or unsigned ("8'h..").
std::string literal(int128 v, int w, bool is_signed) {
  return std::to_string(w) + (is_signed ? "'sh" : "'h") + hex(static_cast<u128>(v) & low_mask(w));
}

// A signed literal of value v at its minimal width (at least 2 bits).
std::string signed_literal(int128 v) {
  return literal(v, std::max(2, signed_width(v, v)), true);
}

// Text safe inside a // comment: control characters become '?'.
std::string comment_text(const std::string& text) {
  std::string s = text;
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return s;
}

std::string range_decl(bool is_signed, int w) {
  return std::string(is_signed ? "signed " : "") + "[" + std::to_string(w - 1) + ":0]";
}

constexpr auto& checked_mul = util::checked_mul<ArchiveError>;

// A value in the netlist: a named wire/reg, or a constant.
struct Sig {
  std::string name;  // empty: the constant `value`
  int128 value = 0;
  FixedType type;  // width 0: the constant 0
  bool is_const() const { return name.empty(); }
};

Sig constant(int128 v, const FixedType& t) {
  Sig s;
  s.value = t.width == 0 ? 0 : v;
  s.type = t;
  return s;
}

// Adds the bias element `bn` (-1: none) of linear layer l to the constant part `konst` of an
// accumulator of type `at`. When the accumulator has no variable terms it is that constant: sets
// `acc` and returns true.
bool constant_accumulator(const archive::Layer& l, int64_t bn, const FixedType& at, bool no_terms,
                          int128& konst, Sig& acc) {
  if (bn >= 0 && l.bias && l.bias->mantissa[bn] != 0)
    konst += archive::align(l.bias->mantissa[bn], -l.bias->exponent[bn], at.frac);
  if (at.width != 0 && !no_terms) return false;
  if (konst < at.min_mantissa() || konst > at.max_mantissa())
    throw std::logic_error("verilog generator: constant accumulator out of its type");
  acc = constant(konst, at);
  return true;
}

// The value as a signed Verilog expression and that expression's width.
std::string signed_view(const Sig& s) {
  if (s.is_const()) return signed_literal(s.value);
  if (s.type.is_signed) return s.name;
  return "$signed({1'b0, " + s.name + "})";
}
int signed_view_width(const Sig& s) {
  if (s.is_const()) return std::max(2, signed_width(s.value, s.value));
  return s.type.width + (s.type.is_signed ? 0 : 1);
}

// The low `w` bits of x * 2^t (t >= 0) as an unsigned w-bit expression (two's complement bits).
std::string low_bits_shifted(const Sig& x, int t, int w) {
  if (t >= w) return literal(0, w, false);
  const int need = w - t;
  const int wx = x.type.width;
  std::string bits;
  if (need <= wx) {
    bits = x.name + "[" + std::to_string(need - 1) + ":0]";
  } else {
    const std::string sign =
        x.type.is_signed ? x.name + "[" + std::to_string(wx - 1) + "]" : std::string("1'b0");
    bits = "{{" + std::to_string(need - wx) + "{" + sign + "}}, " + x.name + "}";
  }
  if (t == 0) return bits;
  return "{" + bits + ", {" + std::to_string(t) + "{1'b0}}}";
}

// A node of a CSD adder tree: its Verilog expression (signed) holds
// (neg ? -1 : 1) * value / 2^tz, where value = konst + sum coef * input (at the accumulator's
// frac).
struct CsdNode {
  std::string expr;
  int tz = 0;
  bool neg = false;
  std::vector<std::pair<int64_t, int128>> coef;  // (input index, coefficient), sorted by index
  int128 konst = 0;
};

std::string shifted_expr(const CsdNode& n, int to) {
  const int d = n.tz - to;
  return d > 0 ? "(" + n.expr + " <<< " + std::to_string(d) + ")" : n.expr;
}

// What a step of the data flow does; registers may follow any step. Flatten, reshape and
// concatenate are wiring and have no step.
enum class StepKind {
  Quantize,    // a quantize layer, or a linear layer's input quantizer
  Acc,         // linear: products and sums; pool: max / sum; add: the sum
  Post,        // linear and add: relu and output quantizer
  Activation,  // activation layer: relu and quantizer
  Lut,         // lut layer: one ROM per element, indexed by the quantized input's bits
  // softmax layer, after its input quantizer (the values between its steps: see softmax_step)
  SmMax,   // each row's max (comparator tree)
  SmDiff,  // d = x - max, exp table input quantizer
  SmExp,   // exp ROM per element
  SmSum,   // each row's sum (adder tree)
  SmInvQ,  // reciprocal table input quantizer
  SmInv,   // reciprocal ROM per row
  SmMul,   // e * r per element
  SmOut,   // output quantizer
};
struct Step {
  StepKind kind;
  size_t layer;
  double cost;  // estimated logic depth
};

/// flatten, reshape and concatenate: they only rename signals.
bool is_wiring(LayerKind k) {
  switch (k) {
    case LayerKind::Flatten:
    case LayerKind::Reshape:
    case LayerKind::Concatenate:
      return true;
    case LayerKind::Quantize:
    case LayerKind::Dense:
    case LayerKind::Conv1d:
    case LayerKind::Conv2d:
    case LayerKind::Scale:
    case LayerKind::Pool:
    case LayerKind::Add:
    case LayerKind::Activation:
    case LayerKind::Lut:
    case LayerKind::Softmax:
      return false;
  }
  return false;
}

class Generator {
 public:
  Generator(const archive::Archive& a, const VerilogOptions& o)
      : a_(a), o_(o), types_(archive::infer_types(a)) {
    analyze();
  }

  VerilogLayout layout() const;
  std::string generate();
  /// The layer whose quantizer makes data_in (the first quantizer; see analyze).
  const archive::Layer& first_quantizer() const { return a_.layers[li0_]; }

 private:
  void emit_wire(const std::string& name, bool is_signed, int w, const std::string& expr) {
    body_ += "  wire " + range_decl(is_signed, w) + " " + name + " = " + expr + ";\n";
  }
  /// Wire `name` of type t holding expr, as a signal.
  Sig wire(const std::string& name, const FixedType& t, const std::string& expr) {
    emit_wire(name, t.is_signed, t.width, expr);
    Sig s;
    s.name = name;
    s.type = t;
    return s;
  }
  void analyze();
  const std::vector<Sig>& input(size_t li, size_t slot) const;
  std::vector<Step> plan() const;
  std::vector<int> place_registers(const std::vector<Step>& steps) const;
  void input_port(const VerilogLayout& lay);
  void run_step(const Step& s);
  void wiring(size_t li);
  void register_stage(int stage, size_t layer, bool mid_layer);
  Sig quantize(const Sig& v, const archive::QuantSpec& q, int64_t n, const std::string& name);
  Sig relu(const Sig& v, const FixedType& t, const std::string& name);
  Sig sum_tree(std::vector<struct CsdNode> leaves, int128 konst, const std::vector<Sig>& xs,
               const FixedType& at, const std::string& prefix, const std::string& name,
               const std::string& what);
  template <class Term>
  void for_each_term(size_t li, int64_t o, int128& konst, Term&& term) const;
  void linear_acc(size_t li);
  void linear_acc_csd(size_t li);
  void linear_acc_shared(size_t li);
  void pool_acc(size_t li);
  void add_acc(size_t li);
  void post(size_t li);
  void lut(size_t li);
  void softmax_step(const Step& st);
  Sig rom(const Sig& x, const std::vector<int64_t>& table, const FixedType& out,
          const std::string& fn, const std::string& name);
  void check_types(const std::vector<FixedType>& want, const std::string& what) const;
  std::string header(const VerilogLayout& lay) const;

  const archive::Archive& a_;
  const VerilogOptions& o_;
  std::vector<archive::LayerTypes> types_;
  // The graph (analyze): each layer's inputs (-1: the model input), whether its output is still
  // the float model input (flatten / reshape before any quantizer), the first quantizer, the last
  // layer reading each layer's output (the model output counts as read after every layer).
  std::vector<std::vector<int64_t>> inputs_;
  std::vector<char> float_;
  size_t li0_ = 0;
  std::vector<char> reads_bus_;  // the layers whose input quantizer makes data_in (li0_ and any
                                 // later reader of the float input with the same quantizer)
  std::vector<int64_t> last_use_;
  std::vector<archive::LinearMap> linear_;
  std::vector<archive::PoolMap> pool_;
  std::vector<archive::ConcatMap> concat_;
  // Generation state: the values of data_in, each layer's output (once made), the values of the
  // layer in progress.
  std::vector<Sig> bus_;
  std::vector<std::vector<Sig>> vals_;
  std::vector<char> have_;
  std::vector<Sig> cur_;
  std::string body_;
  std::set<std::string> roms_;  // the table functions written so far

 public:
  /// The adder graphs of the linear layers (const_mult "shared"), in layer order.
  std::vector<LayerAdders> adders_;
};

// The model input reaches the design quantized by exactly one quantizer: the first layer (in
// layer order) that quantizes a value that is still the float model input. data_in carries its
// output mantissas. Every other layer must read fixed-point values; a second quantizer of the
// float model input is rejected (the bus carries one set of mantissas).
void Generator::analyze() {
  const size_t n = a_.layers.size();
  inputs_.assign(n, {});
  float_.assign(n, 0);
  reads_bus_.assign(n, 0);
  last_use_.assign(n, -1);
  linear_.assign(n, {});
  pool_.assign(n, {});
  concat_.assign(n, {});
  bool found = false;
  for (size_t li = 0; li < n; ++li) {
    const auto& l = a_.layers[li];
    inputs_[li] = archive::layer_inputs(a_, li);
    const int64_t src = inputs_[li].at(0);
    const bool in_float = src < 0 || float_[src];
    if (l.kind == LayerKind::Flatten || l.kind == LayerKind::Reshape) float_[li] = in_float;
    const bool quantizer = l.kind == LayerKind::Quantize || l.kind == LayerKind::Lut ||
                           l.kind == LayerKind::Softmax ||
                           (archive::is_linear(l.kind) && l.input_quantizer);
    if (in_float && quantizer) {
      if (found) {
        // A second reader of the float model input: fine when it applies the same quantizer
        // (it reads data_in too), as in the HLS design.
        const archive::QuantSpec& q0 = *a_.layers[li0_].input_quantizer;
        const archive::QuantSpec& q = *l.input_quantizer;
        if (q.k != q0.k || q.i != q0.i || q.f != q0.f || q.round != q0.round ||
            q.overflow != q0.overflow)
          throw ArchiveError(
              "verilog: layers '" + a_.layers[li0_].name + "' and '" + l.name +
              "' both quantize the raw model input, with different quantizers; data_in carries "
              "the mantissas of one quantizer only, so quantize the input once (a quantize layer "
              "both read) or give them the same quantizer");
      } else {
        found = true;
        li0_ = li;
      }
      reads_bus_[li] = 1;
    }
    for (int64_t s : inputs_[li])
      if (s >= 0) last_use_[s] = std::max<int64_t>(last_use_[s], static_cast<int64_t>(li));
    if (archive::is_linear(l.kind)) linear_[li] = archive::linear_map(l);
    if (l.kind == LayerKind::Pool) pool_[li] = archive::pool_map(l);
    if (l.kind == LayerKind::Concatenate) {
      std::vector<std::vector<int64_t>> shapes;
      for (int64_t s : inputs_[li])
        shapes.push_back(s < 0 ? a_.input_shape : a_.layers[s].output_shape);
      concat_[li] = archive::concat_map(l, shapes);
    }
  }
  if (!found)
    throw ArchiveError("verilog: the archive has no input quantizer");  // infer_types rejects first
  last_use_[n - 1] = static_cast<int64_t>(n);                           // the model output
}

// The values layer li reads on input `slot` (data_in for the first quantizer).
const std::vector<Sig>& Generator::input(size_t li, size_t slot) const {
  const int64_t src = inputs_[li].at(slot);
  if (src < 0 || float_[src]) {
    if (!reads_bus_[li])
      throw std::logic_error("verilog generator: layer '" + a_.layers[li].name +
                             "' reads the float model input");
    return bus_;
  }
  if (!have_[src])
    throw std::logic_error("verilog generator: layer '" + a_.layers[li].name +
                           "' reads a value not made yet");
  return vals_[src];
}

VerilogLayout Generator::layout() const {
  VerilogLayout lay;
  lay.input_layer = a_.layers[li0_].name;
  const auto& in_types = types_[li0_].quantized_input;
  for (size_t n = 0; n < in_types.size(); ++n) {
    VerilogBusElement e;
    e.index = static_cast<int64_t>(n);
    e.type = in_types[n];
    if (e.type.width > 0) {
      e.lsb = lay.input_bits;
      lay.input_bits += e.type.width;
    }
    lay.inputs.push_back(e);
  }
  const auto& out_types = types_.back().output;
  for (size_t n = 0; n < out_types.size(); ++n) {
    VerilogBusElement e;
    e.index = static_cast<int64_t>(n);
    e.type = out_types[n];
    if (e.type.width > 0) {
      e.lsb = lay.output_bits;
      lay.output_bits += e.type.width;
    }
    lay.outputs.push_back(e);
  }
  return lay;
}

std::vector<Step> Generator::plan() const {
  std::vector<Step> steps;
  auto depth = [](int64_t operands) {  // adder / comparator tree levels, plus one
    return 1 + std::ceil(std::log2(static_cast<double>(std::max<int64_t>(1, operands))));
  };
  for (size_t li = li0_; li < a_.layers.size(); ++li) {
    const auto& l = a_.layers[li];
    if (float_[li]) continue;
    switch (l.kind) {
      case LayerKind::Flatten:
      case LayerKind::Reshape:
      case LayerKind::Concatenate:
        continue;  // wiring: no logic
      case LayerKind::Quantize: {
        if (!reads_bus_[li]) steps.push_back({StepKind::Quantize, li, 1});
        continue;
      }
      case LayerKind::Activation: {
        steps.push_back({StepKind::Activation, li, 1});
        continue;
      }
      case LayerKind::Lut: {  // input quantizer, then the ROMs
        if (!reads_bus_[li]) steps.push_back({StepKind::Quantize, li, 1});
        steps.push_back({StepKind::Lut, li, 2});
        continue;
      }
      case LayerKind::Softmax: {  // input quantizer, then the stages of softmax_step
        if (!reads_bus_[li]) steps.push_back({StepKind::Quantize, li, 1});
        const double row = depth(types_[li].softmax.n);
        steps.push_back({StepKind::SmMax, li, row});
        steps.push_back({StepKind::SmDiff, li, 2});
        steps.push_back({StepKind::SmExp, li, 2});
        steps.push_back({StepKind::SmSum, li, row});
        steps.push_back({StepKind::SmInvQ, li, 1});
        steps.push_back({StepKind::SmInv, li, 2});
        steps.push_back({StepKind::SmMul, li, 2});
        steps.push_back({StepKind::SmOut, li, 1});
        continue;
      }
      case LayerKind::Pool: {
        const auto& m = pool_[li];
        int64_t window = 1;
        for (int64_t o = 0; o < m.n_out(); ++o)
          window = std::max(window, m.begin[o + 1] - m.begin[o]);
        steps.push_back({StepKind::Acc, li, depth(window)});
        continue;
      }
      case LayerKind::Add: {
        steps.push_back({StepKind::Acc, li, depth(static_cast<int64_t>(inputs_[li].size()))});
        if (l.activation == "relu" || l.output_quantizer) steps.push_back({StepKind::Post, li, 1});
        continue;
      }
      case LayerKind::Dense:
      case LayerKind::Conv1d:
      case LayerKind::Conv2d:
      case LayerKind::Scale:
        break;  // after the switch
    }
    // linear: input quantizer, products and adder tree, relu and output quantizer
    if (l.input_quantizer && !reads_bus_[li]) steps.push_back({StepKind::Quantize, li, 1});
    const auto& m = linear_[li];
    const auto& w = *l.kernel;
    int64_t most = 0;
    for (int64_t o = 0; o < m.n_out(); ++o) {
      int64_t terms = 0;
      for (int64_t k = m.begin[o]; k < m.begin[o + 1]; ++k) terms += w.mantissa[m.weight[k]] != 0;
      most = std::max(most, terms);
    }
    steps.push_back({StepKind::Acc, li, depth(most + 1)});
    if (l.activation == "relu" || l.output_quantizer) steps.push_back({StepKind::Post, li, 1});
  }
  return steps;
}

// Register counts after each step: stage s of N goes to the boundary whose cumulative depth is
// closest to s/N of the total (never before the previous stage; stages may stack when there are
// more stages than boundaries). The last stage always lands after the last step.
std::vector<int> Generator::place_registers(const std::vector<Step>& steps) const {
  std::vector<int> count(steps.size(), 0);
  const int n = o_.pipeline_stages;
  if (n == 0 || steps.empty()) return count;
  std::vector<double> cum(steps.size());
  double total = 0;
  for (size_t b = 0; b < steps.size(); ++b) cum[b] = total += steps[b].cost;
  size_t prev = 0;
  for (int s = 1; s <= n; ++s) {
    const double target = total * s / n;
    size_t best = prev;
    for (size_t b = prev; b < steps.size(); ++b)
      if (std::fabs(cum[b] - target) < std::fabs(cum[best] - target) - 1e-9) best = b;
    if (s == n) best = steps.size() - 1;
    ++count[best];
    prev = best;
  }
  return count;
}

void Generator::check_types(const std::vector<FixedType>& want, const std::string& what) const {
  if (want.size() != cur_.size())
    throw std::logic_error("verilog generator: " + what + " has " + std::to_string(cur_.size()) +
                           " values, infer_types " + std::to_string(want.size()));
  for (size_t n = 0; n < want.size(); ++n)
    if (want[n] != cur_[n].type)
      throw std::logic_error("verilog generator: " + what + " element " + std::to_string(n) +
                             " is " + cur_[n].type.to_string() + ", infer_types says " +
                             want[n].to_string());
}

void Generator::input_port(const VerilogLayout& lay) {
  bus_.clear();
  for (const auto& e : lay.inputs) {
    if (e.type.width == 0) {
      bus_.push_back(constant(0, e.type));
      continue;
    }
    Sig s;
    s.name = "in_" + std::to_string(e.index);
    s.type = e.type;
    emit_wire(
        s.name, e.type.is_signed, e.type.width,
        "data_in[" + std::to_string(e.lsb + e.type.width - 1) + ":" + std::to_string(e.lsb) + "]");
    bus_.push_back(s);
  }
}

// Q of quantization.md section 2 on the exact value v (mantissa at v.type.frac), as in
// archive::quantize_exact: rounding to the quantizer's f, then overflow into W = k + i + f bits.
Sig Generator::quantize(const Sig& v, const archive::QuantSpec& q, int64_t n,
                        const std::string& name) {
  const FixedType out = archive::quantizer_type(q, n);
  if (out.width == 0) return constant(0, out);
  if (v.is_const()) return constant(archive::quantize_exact(v.value, v.type.frac, q, n), out);
  const int k = q.k[n], i = q.i[n], f = q.f[n], w = out.width;
  const int128 hi_lim = pow2(w - k) - 1;  // 2^(i+f) - 1
  const int128 lo_lim = k == 0 ? 0 : (q.overflow == OverflowMode::SAT_SYM ? -hi_lim : -pow2(w - 1));
  const bool sat = q.overflow != OverflowMode::WRAP;
  const int128 vmin = v.type.min_mantissa(), vmax = v.type.max_mantissa();
  std::string in_range, over, under;  // the low w bits; the overflow conditions (when possible)
  int shift = v.type.frac - f;
  if (shift > 0) {
    shift = std::min(shift, 120);  // as archive::round_shift
    const int128 rlo = archive::round_shift(vmin, shift, q.round);
    const int128 rhi = archive::round_shift(vmax, shift, q.round);
    if (rlo == rhi) return constant(archive::overflow_int(rlo, k, i, f, q.overflow), out);
    const int wr = signed_width(rlo, rhi);
    const std::string r = name + "_r", sh = std::to_string(shift);
    const int128 half = pow2(shift - 1);
    const int we = std::max(signed_view_width(v), shift + 1) + 1;  // v + half cannot overflow
    switch (q.round) {
      case RoundingMode::TRN:
        emit_wire(r, true, wr, signed_view(v) + " >>> " + sh);
        break;
      case RoundingMode::RND:
      case RoundingMode::S_RND:  // eval semantics: RND
        emit_wire(name + "_e", true, we, signed_view(v));
        emit_wire(r, true, wr, "(" + name + "_e + " + literal(half, we, true) + ") >>> " + sh);
        break;
      case RoundingMode::RND_CONV: {
        // floor, plus one when the dropped bits exceed a half, or equal it and floor is odd
        emit_wire(name + "_e", true, we, signed_view(v));
        emit_wire(name + "_f", true, we, name + "_e >>> " + sh);
        emit_wire(name + "_m", false, shift, name + "_e[" + std::to_string(shift - 1) + ":0]");
        const std::string h = literal(half, shift, false);
        const std::string tie = "((" + name + "_m == " + h + ") & " + name + "_f[0])";
        // with one dropped bit the remainder cannot exceed the half
        emit_wire(name + "_u", false, 1,
                  shift == 1 ? tie : "(" + name + "_m > " + h + ") | " + tie);
        emit_wire(r, true, wr, name + "_f + $signed({1'b0, " + name + "_u})");
        break;
      }
    }
    if (wr >= w)
      in_range = r + "[" + std::to_string(w - 1) + ":0]";
    else
      in_range = "{{" + std::to_string(w - wr) + "{" + r + "[" + std::to_string(wr - 1) + "]}}, " +
                 r + "}";
    if (sat && rhi > hi_lim) over = r + " > " + signed_literal(hi_lim);
    if (sat && rlo < lo_lim) under = r + " < " + signed_literal(lo_lim);
  } else {
    // Exact left shift by t: compare v itself with the bounds divided by 2^t.
    const int t = -shift;
    in_range = low_bits_shifted(v, t, w);
    const int ts = std::min(t, 126);
    const int128 thr_hi = hi_lim >> ts;        // v * 2^t > hi_lim  <=>  v > floor(hi_lim / 2^t)
    const int128 thr_lo = -((-lo_lim) >> ts);  // v * 2^t < lo_lim  <=>  v < ceil(lo_lim / 2^t)
    if (sat && vmax > thr_hi) over = signed_view(v) + " > " + signed_literal(thr_hi);
    if (sat && vmin < thr_lo) under = signed_view(v) + " < " + signed_literal(thr_lo);
  }
  std::string expr = in_range;
  if (!under.empty()) expr = "(" + under + ") ? " + literal(lo_lim, w, false) + " : " + expr;
  if (!over.empty()) expr = "(" + over + ") ? " + literal(hi_lim, w, false) + " : " + expr;
  return wire(name, out, expr);
}

// ReLU of v into type t (which holds max(v, 0) by construction).
Sig Generator::relu(const Sig& v, const FixedType& t, const std::string& name) {
  if (t.width == 0) return constant(0, t);
  if (v.is_const()) return constant(std::max<int128>(v.value, 0), t);
  if (!v.type.is_signed && t == v.type) return v;
  std::string bits;
  if (t.width <= v.type.width)
    bits = v.name + "[" + std::to_string(t.width - 1) + ":0]";
  else
    bits = "{" + std::to_string(t.width - v.type.width) + "'h0, " + v.name + "}";
  std::string expr = bits;
  if (v.type.is_signed)
    expr = v.name + "[" + std::to_string(v.type.width - 1) + "] ? " + literal(0, t.width, false) +
           " : " + bits;
  emit_wire(name, false, t.width, expr);  // unsigned declaration whatever t says: max(v, 0)
  Sig s;
  s.name = name;
  s.type = t;
  return s;
}

// The exact sum `konst` + the leaves (each a signed digit times an element of `xs`, shifted), of
// type `at`, as a balanced tree of exact-width wires named prefix<k>; the root is wire `name`.
// Each node is a sum modulo 2^w of sign-extended operands whose exact value fits its w bits (w
// from the node's exact linear form), so it equals the partial sum exactly, and so does the root.
Sig Generator::sum_tree(std::vector<CsdNode> level, int128 konst, const std::vector<Sig>& xs,
                        const FixedType& at, const std::string& prefix, const std::string& name,
                        const std::string& what) {
  // The range of a node's expression.
  auto range = [&](const CsdNode& n) {
    int128 lo = n.konst, hi = n.konst;
    for (const auto& [j, c] : n.coef) {
      const int128 a = checked_mul(c, xs[j].type.min_mantissa(), what);
      const int128 b = checked_mul(c, xs[j].type.max_mantissa(), what);
      if (__builtin_add_overflow(lo, std::min(a, b), &lo) ||
          __builtin_add_overflow(hi, std::max(a, b), &hi))
        throw ArchiveError(what + ": partial sum exceeds 127 bits");
    }
    if (n.neg) {
      const int128 nlo = -hi;
      hi = -lo;
      lo = nlo;
    }
    return std::make_pair(lo >> n.tz, hi >> n.tz);  // exact: every term is a multiple of 2^tz
  };
  if (konst != 0) {
    CsdNode n;
    n.konst = konst;
    while (n.tz < 126 && ((n.konst >> n.tz) & 1) == 0) ++n.tz;
    n.expr = signed_literal(n.konst >> n.tz);
    level.push_back(std::move(n));
  }
  int count = 0;
  auto combine = [&](const CsdNode& a, const CsdNode& b) {
    CsdNode n;
    n.tz = std::min(a.tz, b.tz);
    n.neg = a.neg && b.neg;
    const std::string sa = shifted_expr(a, n.tz), sb = shifted_expr(b, n.tz);
    std::string e;
    if (a.neg == b.neg)
      e = sa + " + " + sb;
    else if (b.neg)
      e = sa + " - " + sb;
    else
      e = sb + " - " + sa;
    n.konst = a.konst + b.konst;
    std::merge(a.coef.begin(), a.coef.end(), b.coef.begin(), b.coef.end(),
               std::back_inserter(n.coef),
               [](const auto& p, const auto& q) { return p.first < q.first; });
    std::vector<std::pair<int64_t, int128>> merged;
    for (const auto& p : n.coef) {
      if (!merged.empty() && merged.back().first == p.first)
        merged.back().second += p.second;
      else
        merged.push_back(p);
    }
    n.coef.swap(merged);
    const auto [lo, hi] = range(n);
    n.expr = prefix + std::to_string(count++);
    emit_wire(n.expr, true, signed_width(lo, hi), e);
    return n;
  };
  while (level.size() > 1) {  // balanced adder tree of exact-width wires
    std::vector<CsdNode> next;
    next.reserve((level.size() + 1) / 2);
    for (size_t m = 0; m + 1 < level.size(); m += 2)
      next.push_back(combine(level[m], level[m + 1]));
    if (level.size() % 2) next.push_back(std::move(level.back()));
    level.swap(next);
  }
  const CsdNode& root = level[0];
  std::string e = shifted_expr(root, 0);
  if (root.neg) e = "-" + e;
  return wire(name, at, e);
}

// A leaf of a sum tree: xs[j] * 2^shift (negated when `neg`).
CsdNode leaf(const std::vector<Sig>& xs, int64_t j, int shift, bool neg, const std::string& what) {
  if (shift > 126) throw ArchiveError(what + ": exceeds 127 bits");
  CsdNode n;
  n.expr = signed_view(xs[j]);
  n.tz = shift;
  n.neg = neg;
  n.coef.emplace_back(j, neg ? -pow2(shift) : pow2(shift));
  return n;
}

// The leaves of xs[j] * c * 2^shift: one per canonical signed digit of the constant c.
void append_csd_leaves(std::vector<CsdNode>& leaves, const std::vector<Sig>& xs, int64_t j,
                       int shift, int128 c, const std::string& what) {
  for (const auto& [d, digit] : naf_digits(c))
    leaves.push_back(leaf(xs, j, shift + d, digit < 0, what));
}

// The products of accumulator o of linear layer li (archive::linear_map) with the current values
// cur_: a product with a constant input is added to `konst` (aligned to the accumulator's frac);
// for every other live product (nonzero weight, input neither pruned nor the constant 0) calls
// term(j, c, s, what): input j times weight mantissa c, shifted left by s to the accumulator's
// frac. One walk for the three ways of writing constant products (csd, shared, mul).
template <class Term>
void Generator::for_each_term(size_t li, int64_t o, int128& konst, Term&& term) const {
  const auto& l = a_.layers[li];
  const auto& w = *l.kernel;
  const auto& m = linear_[li];
  const FixedType& at = types_[li].accumulator[o];
  for (int64_t k = m.begin[o]; k < m.begin[o + 1]; ++k) {
    const int64_t j = m.input[k], wn = m.weight[k];
    const Sig& x = cur_[j];
    const int128 c = w.mantissa[wn];
    if (c == 0 || x.type.width == 0 || (x.is_const() && x.value == 0)) continue;
    const std::string what = "layer '" + l.name + "' weight " + std::to_string(wn) + " (input " +
                             std::to_string(j) + ", output " + std::to_string(o) + ")";
    const int s = at.frac - (x.type.frac - w.exponent[wn]);
    if (s < 0) throw std::logic_error("verilog generator: " + what + " has a negative shift");
    if (x.is_const())
      konst += archive::align(checked_mul(x.value, c, what), 0, s);
    else
      term(j, c, s, what);
  }
}

// A linear layer's accumulators in canonical signed digits: every digit of every product goes
// straight into the output's adder tree (terms from archive::linear_map).
void Generator::linear_acc_csd(size_t li) {
  const auto& l = a_.layers[li];
  const auto& t = types_[li];
  check_types(t.quantized_input, "layer '" + l.name + "' input");
  const auto& m = linear_[li];
  const int64_t n_out = m.n_out();
  const std::string L = std::to_string(li);
  const std::string what_l = "layer '" + l.name + "'";
  std::vector<Sig> acc(n_out);
  for (int64_t o = 0; o < n_out; ++o) {
    const FixedType& at = t.accumulator[o];
    std::vector<CsdNode> leaves;
    int128 konst = 0;
    for_each_term(li, o, konst, [&](int64_t j, int128 c, int s, const std::string& what) {
      append_csd_leaves(leaves, cur_, j, s, c, what);
    });
    if (constant_accumulator(l, m.bias[o], at, leaves.empty(), konst, acc[o])) continue;
    acc[o] = sum_tree(std::move(leaves), konst, cur_, at, "t" + L + "_" + std::to_string(o) + "_",
                      "acc" + L + "_" + std::to_string(o), what_l);
  }
  cur_.swap(acc);
  check_types(t.accumulator, "layer '" + l.name + "' accumulator");
}

// A linear layer's accumulators as one adder graph over all outputs ("shared"): the signed digits
// of every product (terms from archive::linear_map) form a constant matrix-vector product whose
// two-term patterns are shared across outputs (adder_graph.h). When the shared graph does not
// have fewer adder bits than one tree per output, the trees are written (the report says so).
void Generator::linear_acc_shared(size_t li) {
  const auto& l = a_.layers[li];
  const auto& t = types_[li];
  check_types(t.quantized_input, "layer '" + l.name + "' input");
  const auto& m = linear_[li];
  const int64_t n_out = m.n_out();
  const std::string L = std::to_string(li);
  const std::string what_l = "layer '" + l.name + "'";
  std::vector<Sig> acc(n_out);
  CmvmProblem p;
  p.outputs.resize(n_out);
  p.konst.assign(n_out, 0);
  std::vector<int64_t> graph_input(cur_.size(), -1);  // cur_ index -> graph input
  std::vector<int64_t> cur_of;                        // graph input -> cur_ index
  std::vector<char> in_graph(n_out, 0);
  for (int64_t o = 0; o < n_out; ++o) {
    const FixedType& at = t.accumulator[o];
    std::vector<DigitTerm> digits;
    int128 konst = 0;
    for_each_term(li, o, konst, [&](int64_t j, int128 c, int s, const std::string& what) {
      if (graph_input[j] < 0) {
        graph_input[j] = static_cast<int64_t>(cur_of.size());
        cur_of.push_back(j);
        p.input_lo.push_back(cur_[j].type.min_mantissa());
        p.input_hi.push_back(cur_[j].type.max_mantissa());
      }
      for (const auto& [d, digit] : naf_digits(c)) {
        if (s + d > 126) throw ArchiveError(what + ": exceeds 127 bits");
        digits.push_back({graph_input[j], s + d, digit < 0});
      }
    });
    if (constant_accumulator(l, m.bias[o], at, digits.empty(), konst, acc[o])) continue;
    in_graph[o] = 1;
    p.outputs[o] = std::move(digits);
    p.konst[o] = konst;
  }
  AdderGraphOptions go;
  go.extra_depth = o_.adder_extra_depth;
  AdderGraphOptions tree = go;
  tree.share = false;
  AdderGraph g;
  LayerAdders rep;
  rep.layer = l.name;
  try {
    const auto t0 = std::chrono::steady_clock::now();
    AdderGraph gs = build_adder_graph(p, go, what_l);
    rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    AdderGraph gt = build_adder_graph(p, tree, what_l);
    rep.tree_adders = gt.adders;
    rep.tree_bits = gt.adder_bits;
    rep.tree_depth = gt.depth;
    rep.tree_logic_bits = gt.logic_bits;
    rep.note = gs.note;
    if (gs.logic_bits < gt.logic_bits) {
      g = std::move(gs);
      rep.shared = true;
    } else {
      g = std::move(gt);
      if (rep.note.empty()) rep.note = "trees: sharing saves no logic bits here";
    }
  } catch (const std::overflow_error& e) {
    throw ArchiveError(e.what());
  }
  rep.adders = g.adders;
  rep.shared_adders = g.shared_adders;
  rep.adder_bits = g.adder_bits;
  rep.logic_bits = g.logic_bits;
  rep.depth = g.depth;
  adders_.push_back(rep);
  // Node expressions: inputs and constants inline, every adder a wire at its exact width.
  std::vector<std::string> expr(g.nodes.size());
  const std::string prefix = "g" + L + "_";
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    const auto& n = g.nodes[i];
    switch (n.kind) {
      case AdderNode::Kind::Input:
        expr[i] = signed_view(cur_[cur_of[n.input]]);
        break;
      case AdderNode::Kind::Const:
        expr[i] = signed_literal(n.value);
        break;
      case AdderNode::Kind::Add: {
        auto shifted = [&](int v, int k) {
          return k > 0 ? "(" + expr[v] + " <<< " + std::to_string(k) + ")" : expr[v];
        };
        expr[i] = prefix + std::to_string(i);
        emit_wire(expr[i], true, n.width,
                  shifted(n.a, n.ka) + (n.sub ? " - " : " + ") + shifted(n.b, n.kb));
        break;
      }
    }
  }
  for (int64_t o = 0; o < n_out; ++o) {
    if (!in_graph[o]) continue;
    const auto& r = g.outputs[o];
    const std::string name = "acc" + L + "_" + std::to_string(o);
    if (r.node < 0) {
      acc[o] = wire(name, t.accumulator[o], literal(0, t.accumulator[o].width, true));
      continue;
    }
    std::string e =
        r.shift > 0 ? "(" + expr[r.node] + " <<< " + std::to_string(r.shift) + ")" : expr[r.node];
    if (r.neg) e = "-" + e;
    acc[o] = wire(name, t.accumulator[o], e);
  }
  cur_.swap(acc);
  check_types(t.accumulator, "layer '" + l.name + "' accumulator");
}

// A linear layer's accumulators with a product wire per product ("mul").
void Generator::linear_acc(size_t li) {
  if (o_.const_mult == "csd") return linear_acc_csd(li);
  if (o_.const_mult == "shared") return linear_acc_shared(li);
  const auto& l = a_.layers[li];
  const auto& t = types_[li];
  check_types(t.quantized_input, "layer '" + l.name + "' input");
  const auto& m = linear_[li];
  const int64_t n_out = m.n_out();
  const std::string L = std::to_string(li);
  struct Term {
    std::string expr;  // signed
    int shift;
    bool neg;
  };
  std::vector<Sig> acc(n_out);
  for (int64_t o = 0; o < n_out; ++o) {
    const FixedType& at = t.accumulator[o];
    std::vector<Term> terms;
    int128 konst = 0;
    for_each_term(li, o, konst, [&](int64_t j, int128 c, int s, const std::string& what) {
      const Sig& x = cur_[j];
      const int128 mag = c < 0 ? -c : c;
      if ((mag & (mag - 1)) == 0) {  // +-2^e: a shift
        int e = 0;
        while ((mag >> e) != 1) ++e;
        terms.push_back({signed_view(x), s + e, c < 0});
        return;
      }
      const int128 p1 = checked_mul(x.type.min_mantissa(), c, what);
      const int128 p2 = checked_mul(x.type.max_mantissa(), c, what);
      // An input element meets an output at most once in every linear layer: unique names.
      const std::string p = "p" + L + "_" + std::to_string(j) + "_" + std::to_string(o);
      emit_wire(p, true, signed_width(std::min(p1, p2), std::max(p1, p2)),
                signed_view(x) + " * " + signed_literal(c));
      terms.push_back({p, s, false});
    });
    if (constant_accumulator(l, m.bias[o], at, terms.empty(), konst, acc[o])) continue;
    std::vector<std::string> level;
    level.reserve(terms.size() + 1);
    for (const auto& term : terms) {
      std::string e = term.expr;
      if (term.shift > 0) e = "(" + e + " <<< " + std::to_string(term.shift) + ")";
      if (term.neg) e = "(-" + e + ")";
      level.push_back(std::move(e));
    }
    if (konst != 0) level.push_back(literal(konst, at.width, true));  // modulo 2^W
    while (level.size() > 1) {                                        // balanced adder tree
      std::vector<std::string> next;
      next.reserve((level.size() + 1) / 2);
      for (size_t q = 0; q + 1 < level.size(); q += 2)
        next.push_back("(" + level[q] + " + " + level[q + 1] + ")");
      if (level.size() % 2) next.push_back(std::move(level.back()));
      level.swap(next);
    }
    Sig s;
    s.name = "acc" + L + "_" + std::to_string(o);
    s.type = at;
    emit_wire(s.name, at.is_signed, at.width, level[0]);
    acc[o] = s;
  }
  cur_.swap(acc);
  check_types(t.accumulator, "layer '" + l.name + "' accumulator");
}

// Pool: max as a tree of signed comparators over the window elements aligned to the result's
// frac, in a width holding every element (pruned elements and constants fold into one constant
// leaf); avg as the exact sum of the elements aligned to frac - shift, whose mantissa read at
// frac is the average (no logic beyond the sum).
void Generator::pool_acc(size_t li) {
  const auto& l = a_.layers[li];
  const auto& t = types_[li];
  check_types(t.input, "layer '" + l.name + "' input");
  const auto& m = pool_[li];
  const std::string L = std::to_string(li);
  const std::string what = "layer '" + l.name + "'";
  std::vector<Sig> out(m.n_out());
  for (int64_t o = 0; o < m.n_out(); ++o) {
    const FixedType& at = t.accumulator[o];
    const std::string on = L + "_" + std::to_string(o);
    if (at.width == 0) {
      out[o] = constant(0, at);
      continue;
    }
    const int frac = at.frac - (m.max ? 0 : m.shift);
    std::vector<Sig> xs;
    std::vector<int> shifts;
    bool has_const = false;
    int128 konst = 0;  // avg: the sum of the constants; max: their maximum
    for (int64_t k = m.begin[o]; k < m.begin[o + 1]; ++k) {
      const Sig& x = cur_[m.input[k]];
      const int s = frac - x.type.frac;
      if (x.type.width > 0 && s < 0)
        throw std::logic_error("verilog generator: " + what + " has a negative shift");
      if (x.type.width == 0 || x.is_const()) {
        const int128 v = x.type.width == 0 ? 0 : archive::align(x.value, 0, s);
        konst = !has_const ? v : m.max ? std::max(konst, v) : konst + v;
        has_const = true;
        continue;
      }
      xs.push_back(x);
      shifts.push_back(s);
    }
    if (xs.empty()) {
      if (konst < at.min_mantissa() || konst > at.max_mantissa())
        throw std::logic_error("verilog generator: constant pool output out of its type");
      out[o] = constant(konst, at);
      continue;
    }
    if (!m.max) {
      std::vector<CsdNode> leaves;
      for (size_t q = 0; q < xs.size(); ++q)
        leaves.push_back(leaf(xs, static_cast<int64_t>(q), shifts[q], false, what));
      out[o] = sum_tree(std::move(leaves), has_const ? konst : 0, xs, at, "t" + on + "_",
                        "acc" + on, what);
      continue;
    }
    // max: every operand at one signed width W holding all of them
    int128 lo = has_const ? konst : 0, hi = lo;
    bool first = !has_const;
    for (size_t q = 0; q < xs.size(); ++q) {
      const int128 a = archive::align(xs[q].type.min_mantissa(), 0, shifts[q]);
      const int128 b = archive::align(xs[q].type.max_mantissa(), 0, shifts[q]);
      lo = first ? a : std::min(lo, a);
      hi = first ? b : std::max(hi, b);
      first = false;
    }
    const int wm = signed_width(lo, hi);
    std::vector<std::string> level;
    for (size_t q = 0; q < xs.size(); ++q) {
      const std::string e = "m" + on + "_e" + std::to_string(q);
      const std::string v = signed_view(xs[q]);
      emit_wire(e, true, wm,
                shifts[q] > 0 ? "(" + v + " <<< " + std::to_string(shifts[q]) + ")" : v);
      level.push_back(e);
    }
    if (has_const) level.push_back(literal(konst, wm, true));
    int count = 0;
    while (level.size() > 1) {  // balanced comparator tree
      std::vector<std::string> next;
      for (size_t q = 0; q + 1 < level.size(); q += 2) {
        const std::string n = "m" + on + "_" + std::to_string(count++);
        emit_wire(n, true, wm,
                  "(" + level[q] + " > " + level[q + 1] + ") ? " + level[q] + " : " + level[q + 1]);
        next.push_back(n);
      }
      if (level.size() % 2) next.push_back(std::move(level.back()));
      level.swap(next);
    }
    if (at.width > wm)
      throw std::logic_error("verilog generator: pool output wider than its operands");
    Sig s;
    s.name = "acc" + on;
    s.type = at;
    emit_wire(s.name, at.is_signed, at.width,
              at.width == wm ? level[0] : level[0] + "[" + std::to_string(at.width - 1) + ":0]");
    out[o] = s;
  }
  cur_.swap(out);
  check_types(t.accumulator, "layer '" + l.name + "' output");
}

// add: the exact sum of the inputs aligned to the accumulator's frac.
void Generator::add_acc(size_t li) {
  const auto& l = a_.layers[li];
  const auto& t = types_[li];
  const std::string L = std::to_string(li);
  const std::string what = "layer '" + l.name + "'";
  const int64_t n = static_cast<int64_t>(t.accumulator.size());
  std::vector<const std::vector<Sig>*> ins;
  for (size_t slot = 0; slot < inputs_[li].size(); ++slot) {
    ins.push_back(&input(li, slot));
    if (static_cast<int64_t>(ins.back()->size()) != n)
      throw std::logic_error("verilog generator: " + what + " input sizes differ");
  }
  std::vector<Sig> acc(n);
  for (int64_t o = 0; o < n; ++o) {
    const FixedType& at = t.accumulator[o];
    const std::string on = L + "_" + std::to_string(o);
    std::vector<Sig> xs;
    std::vector<CsdNode> leaves;
    int128 konst = 0;
    for (const auto* in : ins) {
      const Sig& x = (*in)[o];
      if (x.type.width == 0 || (x.is_const() && x.value == 0)) continue;
      const int s = at.frac - x.type.frac;
      if (s < 0) throw std::logic_error("verilog generator: " + what + " has a negative shift");
      if (x.is_const()) {
        konst += archive::align(x.value, 0, s);
        continue;
      }
      xs.push_back(x);
      leaves.push_back(leaf(xs, static_cast<int64_t>(xs.size()) - 1, s, false, what));
    }
    if (at.width == 0 || leaves.empty()) {
      if (konst < at.min_mantissa() || konst > at.max_mantissa())
        throw std::logic_error("verilog generator: constant sum out of its type");
      acc[o] = constant(konst, at);
      continue;
    }
    acc[o] = sum_tree(std::move(leaves), konst, xs, at, "t" + on + "_", "acc" + on, what);
  }
  cur_.swap(acc);
  check_types(t.accumulator, "layer '" + l.name + "' accumulator");
}

// Linear layers and add: relu, then the output quantizer.
void Generator::post(size_t li) {
  const auto& l = a_.layers[li];
  const auto& t = types_[li];
  const std::string L = std::to_string(li);
  for (size_t o = 0; o < cur_.size(); ++o) {
    const std::string on = std::to_string(o);
    if (l.activation == "relu") {
      const FixedType rt =
          archive::type_of_range(std::max<int128>(t.acc_lo[o], 0), std::max<int128>(t.acc_hi[o], 0),
                                 t.accumulator[o].frac);
      cur_[o] = relu(cur_[o], rt, "relu" + L + "_" + on);
    }
    if (l.output_quantizer)
      cur_[o] = quantize(cur_[o], *l.output_quantizer, static_cast<int64_t>(o), "q" + L + "_" + on);
  }
  check_types(t.output, "layer '" + l.name + "' output");
}

// A table (ROM) entry for the value of `x` (of type `x.type`, not constant) is at index
// x - min mantissa: its bits with the sign bit inverted when signed.
std::string rom_index(const Sig& x) {
  const int w = x.type.width;
  if (!x.type.is_signed) return x.name;
  if (w == 1) return "~" + x.name + "[0]";
  return "{~" + x.name + "[" + std::to_string(w - 1) + "], " + x.name + "[" +
         std::to_string(w - 2) + ":0]}";
}

// The items of a ROM's case statement over a `w`-bit index: `target` = table[index] (of type
// `ot`) for the `size` = 2^w indices, 0 by default.
std::string rom_cases(const std::string& target, int w, const int64_t* table, int64_t size,
                      const FixedType& ot, const std::string& indent) {
  std::string c;
  for (int64_t e = 0; e < size; ++e)
    c += indent + literal(e, w, false) + ": " + target + " = " +
         literal(table[e], ot.width, ot.is_signed) + ";\n";
  c += indent + "default: " + target + " = " + literal(0, ot.width, ot.is_signed) + ";\n";
  return c;
}

// lut: element n's output is its table entry at index m - min (m: the quantized input's mantissa,
// min: the smallest mantissa of its type), i.e. the input's bits with the sign bit inverted for
// signed inputs. One ROM (a case statement over every index) per element; constant inputs and
// tables with a single value give constants.
void Generator::lut(size_t li) {
  const auto& l = a_.layers[li];
  const auto& t = types_[li];
  const std::string L = std::to_string(li);
  check_types(t.quantized_input, "layer '" + l.name + "' quantized input");
  const std::vector<int64_t> off = archive::lut_offsets(l);
  for (size_t n = 0; n < cur_.size(); ++n) {
    const FixedType& ot = t.output[n];
    const Sig x = cur_[n];
    const int64_t base = off[n], size = off[n + 1] - off[n];
    if (ot.width == 0) {
      cur_[n] = constant(0, ot);
      continue;
    }
    if (x.is_const() || x.type.width == 0) {
      const int128 index = x.type.width == 0 ? 0 : x.value - x.type.min_mantissa();
      cur_[n] = constant(l.table.at(base + static_cast<int64_t>(index)), ot);
      continue;
    }
    bool same = true;
    for (int64_t e = 1; e < size && same; ++e) same = l.table[base + e] == l.table[base];
    if (same) {
      cur_[n] = constant(l.table[base], ot);
      continue;
    }
    const std::string name = "lut" + L + "_" + std::to_string(n);
    body_ += "  reg " + range_decl(ot.is_signed, ot.width) + " " + name + ";\n";
    body_ += "  always @(*) begin\n    case (" + rom_index(x) + ")\n";
    body_ += rom_cases(name, x.type.width, l.table.data() + base, size, ot, "      ");
    body_ += "    endcase\n  end\n";
    Sig s;
    s.name = name;
    s.type = ot;
    cur_[n] = s;
  }
  check_types(t.output, "layer '" + l.name + "' output");
}

// A table lookup: `out` = table[x - min mantissa of x.type] (a width-0 index: entry 0). The
// table is a Verilog function `fn` (one case statement per layer and table, written at its first
// use) that every element calls; constant indices and tables holding one value give constants.
Sig Generator::rom(const Sig& x, const std::vector<int64_t>& table, const FixedType& out,
                   const std::string& fn, const std::string& name) {
  if (out.width == 0) return constant(0, out);
  if (x.type.width == 0 || x.is_const())
    return constant(archive::SoftmaxTypes::entry(table, x.type, x.value), out);
  if (std::all_of(table.begin(), table.end(), [&](int64_t v) { return v == table[0]; }))
    return constant(table[0], out);
  const int w = x.type.width;
  if (static_cast<int64_t>(table.size()) != (int64_t{1} << w))
    throw std::logic_error("verilog generator: table " + fn + " does not match its index");
  if (roms_.insert(fn).second) {
    body_ += "  function " + range_decl(out.is_signed, out.width) + " " + fn + ";\n";
    body_ += "    input [" + std::to_string(w - 1) + ":0] idx;\n";
    body_ += "    begin\n      case (idx)\n";
    body_ += rom_cases(fn, w, table.data(), static_cast<int64_t>(table.size()), out, "        ");
    body_ += "      endcase\n    end\n  endfunction\n";
  }
  return wire(name, out, fn + "(" + rom_index(x) + ")");
}

// softmax (archive.h; archive::SoftmaxTypes), over rows of n elements, one step at a time. The
// values of the layer in progress (cur_, what a register stage inside the layer registers):
//   after the input quantizer: x (rows * n)      after SmMax: x, then each row's max
//   after SmDiff: u = Q_ei(x - max)               after SmExp: e = EXP[u]
//   after SmSum: e, then each row's exact sum S   after SmInvQ: e, then s = Q_ii(S)
//   after SmInv: e, then r = INV[s]               after SmMul: p = e * r (the accumulator)
//   after SmOut: y = Q_out(p).
// The max compares x aligned to SoftmaxTypes::max.frac (pruned elements are the constant 0) at
// a signed width holding every operand; x - max is exact at the width of its range (<= 0).
void Generator::softmax_step(const Step& st) {
  const size_t li = st.layer;
  const auto& l = a_.layers[li];
  const auto& t = types_[li];
  const archive::SoftmaxTypes& s = t.softmax;
  const std::string P = "sm" + std::to_string(li) + "_";
  const std::string what = "layer '" + l.name + "'";
  const int64_t n = s.n, rows = s.rows, total = rows * n;
  const bool with_rows = st.kind == StepKind::SmDiff || st.kind == StepKind::SmInvQ ||
                         st.kind == StepKind::SmInv || st.kind == StepKind::SmMul;
  const size_t want = static_cast<size_t>(total + (with_rows ? rows : 0));
  if (st.kind == StepKind::SmMax) {
    if (reads_bus_[li]) cur_ = input(li, 0);  // the first quantizer: data_in
    check_types(t.quantized_input, what + " quantized input");
  }
  if (cur_.size() != want)
    throw std::logic_error("verilog generator: " + what + " softmax step has " +
                           std::to_string(cur_.size()) + " values, expected " +
                           std::to_string(want));
  // x aligned to max.frac: a constant (`konst`, true returned) or a signed expression; its range.
  struct Aligned {
    bool is_const;
    int128 value, lo, hi;
    std::string expr;
  };
  auto aligned = [&](const Sig& x) {
    Aligned a{true, 0, 0, 0, ""};
    if (x.type.width == 0) return a;
    const int sh = s.max.frac - x.type.frac;
    if (sh < 0) throw std::logic_error("verilog generator: " + what + " has a negative shift");
    if (x.is_const()) {
      a.value = a.lo = a.hi = archive::align(x.value, 0, sh);
      return a;
    }
    a.is_const = false;
    a.lo = archive::align(x.type.min_mantissa(), 0, sh);
    a.hi = archive::align(x.type.max_mantissa(), 0, sh);
    a.expr = signed_view(x);
    if (sh > 0) a.expr = "(" + a.expr + " <<< " + std::to_string(sh) + ")";
    return a;
  };
  std::vector<Sig> next;
  switch (st.kind) {
    case StepKind::SmMax: {
      next = cur_;
      for (int64_t r = 0; r < rows; ++r) {
        const std::string rn = P + "max" + std::to_string(r);
        std::vector<Aligned> xs;
        bool has_const = false;
        int128 konst = 0, lo = 0, hi = 0;
        for (int64_t j = 0; j < n; ++j) {
          const Aligned a = aligned(cur_[r * n + j]);
          if (a.is_const) {
            konst = has_const ? std::max(konst, a.value) : a.value;
            has_const = true;
          } else {
            xs.push_back(a);
          }
          lo = j == 0 ? a.lo : std::min(lo, a.lo);
          hi = j == 0 ? a.hi : std::max(hi, a.hi);
        }
        if (xs.empty()) {
          next.push_back(constant(konst, FixedType{true, signed_width(konst, konst), s.max.frac}));
          continue;
        }
        const int wm = signed_width(lo, hi);
        std::vector<std::string> level;
        for (size_t q = 0; q < xs.size(); ++q) {
          const std::string e = rn + "_e" + std::to_string(q);
          emit_wire(e, true, wm, xs[q].expr);
          level.push_back(e);
        }
        if (has_const) level.push_back(literal(konst, wm, true));
        int count = 0;
        while (level.size() > 1) {  // balanced comparator tree, as max pool
          std::vector<std::string> up;
          for (size_t q = 0; q + 1 < level.size(); q += 2) {
            const std::string c = rn + "_" + std::to_string(count++);
            emit_wire(
                c, true, wm,
                "(" + level[q] + " > " + level[q + 1] + ") ? " + level[q] + " : " + level[q + 1]);
            up.push_back(c);
          }
          if (level.size() % 2) up.push_back(std::move(level.back()));
          level.swap(up);
        }
        Sig m;
        m.name = level[0];
        m.type = FixedType{true, wm, s.max.frac};
        next.push_back(m);
      }
      break;
    }
    case StepKind::SmDiff:
      for (int64_t j = 0; j < total; ++j) {
        const std::string jn = std::to_string(j);
        const Aligned x = aligned(cur_[j]);
        const Sig& m = cur_[total + j / n];
        const int128 mhi = m.is_const() ? m.value : m.type.max_mantissa();
        Sig d;
        if (x.is_const && m.is_const()) {
          const int128 v = x.value - m.value;
          d = constant(v, FixedType{true, signed_width(v, v), s.max.frac});
        } else {
          // x <= max: the difference lies in [x_lo - max_hi, 0]
          const int wd = signed_width(std::min<int128>(x.lo - mhi, 0), 0);
          d.name = P + "d" + jn;
          d.type = FixedType{true, wd, s.max.frac};
          emit_wire(d.name, true, wd,
                    (x.is_const ? signed_literal(x.value) : x.expr) + " - " + signed_view(m));
        }
        next.push_back(quantize(d, *l.exp_input_quantizer, 0, P + "u" + jn));
        if (next.back().type != s.exp_in)
          throw std::logic_error("verilog generator: " + what + " exp table index type");
      }
      break;
    case StepKind::SmExp:
      for (int64_t j = 0; j < total; ++j)
        next.push_back(
            rom(cur_[j], s.exp_table, s.exp_out, P + "exp", P + "e" + std::to_string(j)));
      break;
    case StepKind::SmSum: {
      next = cur_;
      for (int64_t r = 0; r < rows; ++r) {
        const std::string rn = std::to_string(r);
        std::vector<Sig> xs;
        std::vector<CsdNode> leaves;
        int128 konst = 0;
        for (int64_t j = 0; j < n; ++j) {
          const Sig& e = cur_[r * n + j];
          if (e.type != s.exp_out)
            throw std::logic_error("verilog generator: " + what + " exp table output type");
          if (e.type.width == 0) continue;
          if (e.is_const()) {
            konst += e.value;
            continue;
          }
          xs.push_back(e);
          leaves.push_back(leaf(xs, static_cast<int64_t>(xs.size()) - 1, 0, false, what));
        }
        if (leaves.empty() || s.sum.width == 0)
          next.push_back(constant(konst, s.sum));
        else
          next.push_back(sum_tree(std::move(leaves), konst, xs, s.sum, P + "t" + rn + "_",
                                  P + "sum" + rn, what));
      }
      break;
    }
    case StepKind::SmInvQ:
      next.assign(cur_.begin(), cur_.begin() + total);
      for (int64_t r = 0; r < rows; ++r) {
        next.push_back(
            quantize(cur_[total + r], *l.inv_input_quantizer, 0, P + "s" + std::to_string(r)));
        if (next.back().type != s.inv_in)
          throw std::logic_error("verilog generator: " + what + " reciprocal table index type");
      }
      break;
    case StepKind::SmInv:
      next.assign(cur_.begin(), cur_.begin() + total);
      for (int64_t r = 0; r < rows; ++r)
        next.push_back(
            rom(cur_[total + r], s.inv_table, s.inv_out, P + "inv", P + "r" + std::to_string(r)));
      break;
    case StepKind::SmMul:
      for (int64_t j = 0; j < total; ++j) {
        const std::string name = P + "p" + std::to_string(j);
        const FixedType& pt = t.accumulator[j];
        const Sig& e = cur_[j];
        const Sig& r = cur_[total + j / n];
        const bool ec = e.is_const(), rc = r.is_const();  // width 0: the constant 0
        const int128 ev = e.value, rv = r.value;
        if (pt.width == 0 || (ec && ev == 0) || (rc && rv == 0)) {
          next.push_back(constant(0, pt));
        } else if (ec && rc) {
          next.push_back(constant(checked_mul(ev, rv, what), pt));
        } else if (ec || rc) {
          // a constant factor: as the constant multiplications of the linear layers
          const Sig& x = ec ? r : e;
          const int128 c = ec ? ev : rv;
          if (o_.const_mult != "mul") {
            std::vector<Sig> xs{x};
            std::vector<CsdNode> leaves;
            append_csd_leaves(leaves, xs, 0, 0, c, what);
            next.push_back(sum_tree(std::move(leaves), 0, xs, pt, name + "_t", name, what));
          } else {
            next.push_back(wire(name, pt, signed_view(x) + " * " + signed_literal(c)));
          }
        } else {
          // the exact product at the width of its range (SoftmaxTypes::product)
          next.push_back(wire(name, pt, signed_view(e) + " * " + signed_view(r)));
        }
      }
      cur_.swap(next);
      check_types(t.accumulator, what + " products");
      return;
    case StepKind::SmOut:
      for (int64_t j = 0; j < total; ++j)
        next.push_back(quantize(cur_[j], *l.output_quantizer, j, P + "y" + std::to_string(j)));
      cur_.swap(next);
      check_types(t.output, what + " output");
      return;
    default:
      throw std::logic_error("verilog generator: not a softmax step");
  }
  cur_.swap(next);
}

// A layer's first step reads its inputs; later steps continue on cur_.
void Generator::run_step(const Step& s) {
  const size_t li = s.layer;
  const auto& l = a_.layers[li];
  const std::string L = std::to_string(li);
  switch (s.kind) {
    case StepKind::Quantize: {
      cur_ = input(li, 0);
      check_types(types_[li].input, "layer '" + l.name + "' input");
      for (size_t n = 0; n < cur_.size(); ++n)
        cur_[n] = quantize(cur_[n], *l.input_quantizer, static_cast<int64_t>(n),
                           "iq" + L + "_" + std::to_string(n));
      check_types(types_[li].quantized_input, "layer '" + l.name + "' quantized input");
      break;
    }
    case StepKind::Acc:
      if (l.kind == LayerKind::Add) {
        add_acc(li);
      } else if (l.kind == LayerKind::Pool) {
        cur_ = input(li, 0);
        pool_acc(li);
      } else {
        // linear: after its input quantizer step, or straight from its input (data_in for the
        // first quantizer)
        if (!(l.input_quantizer && !reads_bus_[li])) cur_ = input(li, 0);
        linear_acc(li);
      }
      break;
    case StepKind::Post:
      post(li);
      break;
    case StepKind::Lut:
      // after its input quantizer step, or straight from data_in (the first quantizer)
      if (reads_bus_[li]) cur_ = input(li, 0);
      lut(li);
      break;
    case StepKind::SmMax:
    case StepKind::SmDiff:
    case StepKind::SmExp:
    case StepKind::SmSum:
    case StepKind::SmInvQ:
    case StepKind::SmInv:
    case StepKind::SmMul:
    case StepKind::SmOut:
      softmax_step(s);
      break;
    case StepKind::Activation: {
      cur_ = input(li, 0);
      check_types(types_[li].input, "layer '" + l.name + "' input");
      for (size_t n = 0; n < cur_.size(); ++n) {
        const std::string nn = L + "_" + std::to_string(n);
        Sig v = cur_[n];
        if (l.activation == "relu" && v.type.is_signed)
          v = relu(v, FixedType{false, v.type.width - 1, v.type.frac}, "relu" + nn);
        cur_[n] = quantize(v, *l.output_quantizer, static_cast<int64_t>(n), "q" + nn);
      }
      check_types(types_[li].output, "layer '" + l.name + "' output");
      break;
    }
  }
}

// flatten, reshape (row-major: the same values) and concatenate: no logic.
void Generator::wiring(size_t li) {
  const auto& l = a_.layers[li];
  std::vector<Sig> v;
  if (l.kind == LayerKind::Concatenate) {
    const auto& m = concat_[li];
    v.reserve(m.slot.size());
    for (size_t o = 0; o < m.slot.size(); ++o) v.push_back(input(li, m.slot[o]).at(m.element[o]));
  } else {
    v = input(li, 0);
  }
  vals_[li] = std::move(v);
  have_[li] = 1;
  cur_ = vals_[li];
  check_types(types_[li].output, "layer '" + l.name + "' output");
}

// A register stage at the cut after a step of `layer`: every value still to be read later (the
// outputs of layers read by later layers, the model output, and the values of `layer` itself
// when the cut falls inside it) goes through one register, so every path from data_in to
// data_out crosses every stage exactly once. A wire shared by several values gets one register.
void Generator::register_stage(int stage, size_t layer, bool mid_layer) {
  std::string decl, assign;
  const std::string prefix = "s" + std::to_string(stage) + "_";
  std::vector<std::pair<std::string, std::string>> renamed;  // wire -> register, in order
  std::map<std::string, size_t> index;
  auto reg = [&](Sig& v) {
    if (v.is_const()) return;
    auto it = index.find(v.name);
    if (it == index.end()) {
      const std::string r = prefix + std::to_string(renamed.size());
      decl += "  reg " + range_decl(v.type.is_signed, v.type.width) + " " + r + ";\n";
      assign += "    " + r + " <= " + v.name + ";\n";
      it = index.emplace(v.name, renamed.size()).first;
      renamed.emplace_back(v.name, r);
    }
    v.name = renamed[it->second].second;
  };
  if (mid_layer)
    for (Sig& v : cur_) reg(v);
  for (size_t li = 0; li < vals_.size(); ++li)
    if (have_[li] && last_use_[li] > static_cast<int64_t>(layer))
      for (Sig& v : vals_[li]) reg(v);
  body_ += "  // ---- pipeline register stage " + std::to_string(stage) + "\n" + decl;
  if (!assign.empty()) body_ += "  always @(posedge clk) begin\n" + assign + "  end\n";
}

std::string Generator::header(const VerilogLayout& lay) const {
  std::string h;
  h += "// " + o_.name + ": generated by hgqt from the model archive '" + comment_text(a_.name) +
       "'.\n";
  h += "// Bit-exact with the hgqt integer emulator (archive::Emulator::run_exact).\n//\n";
  h += "// Ports:\n";
  h += "//   clk        clock (rising edge)\n";
  h += "//   rst        synchronous reset, active high: clears the valid pipeline\n";
  h += "//   valid_in   data_in holds a sample\n";
  h += "//   data_in    [" + std::to_string(std::max<int64_t>(lay.input_bits, 1) - 1) +
       ":0] quantized input mantissas (the output of layer '" + comment_text(lay.input_layer) +
       "')\n";
  h += "//   valid_out  data_out holds a result\n";
  h += "//   data_out   [" + std::to_string(std::max<int64_t>(lay.output_bits, 1) - 1) +
       ":0] output mantissas\n";
  h +=
      "// Latency: " + std::to_string(o_.pipeline_stages) + " clock cycle(s) (pipeline_stages)" +
      (o_.pipeline_stages == 0 ? "; combinational, clk and rst unused" : "; one sample per cycle") +
      ".\n//\n";
  h += "// A value with type ap_fixed<W,I> (signed) or ap_ufixed<W,I> is the W-bit mantissa m of\n";
  h += "// m * 2^-(W-I). Elements of zero width (pruned, constant 0) are absent from the buses.\n";
  auto bus = [&](const std::vector<VerilogBusElement>& els, const char* port, int64_t bits) {
    h += "//\n// " + std::string(port) + " layout (element: bits, type):\n";
    if (bits == 0) h += "//   (no element has bits: the port is 1 bit wide and unused / 0)\n";
    for (const auto& e : els) {
      h += "//   [" + std::to_string(e.index) + "]: ";
      if (e.type.width == 0)
        h += "absent (zero width)\n";
      else
        h += "[" + std::to_string(e.lsb + e.type.width - 1) + ":" + std::to_string(e.lsb) + "] " +
             e.type.to_string() + "\n";
    }
  };
  bus(lay.inputs, "data_in", lay.input_bits);
  bus(lay.outputs, "data_out", lay.output_bits);
  return h;
}

std::string Generator::generate() {
  const VerilogLayout lay = layout();
  const auto steps = plan();
  const auto regs = place_registers(steps);
  const int64_t in_bits = std::max<int64_t>(lay.input_bits, 1);
  const int64_t out_bits = std::max<int64_t>(lay.output_bits, 1);
  const size_t n_layers = a_.layers.size();
  body_.clear();
  roms_.clear();
  input_port(lay);
  vals_.assign(n_layers, {});
  have_.assign(n_layers, 0);
  int stage = 0;
  size_t b = 0;
  for (size_t li = 0; li < n_layers; ++li) {
    const auto& l = a_.layers[li];
    if (float_[li]) continue;
    if (reads_bus_[li] && l.kind == LayerKind::Quantize) {  // its output is data_in
      vals_[li] = bus_;
      have_[li] = 1;
      continue;
    }
    if (is_wiring(l.kind)) {
      wiring(li);
      continue;
    }
    for (; b < steps.size() && steps[b].layer == li; ++b) {
      std::string what;
      switch (steps[b].kind) {
        case StepKind::Quantize:
          what = "quantizer";
          break;
        case StepKind::Acc:
          what = l.kind == LayerKind::Add    ? "sum"
                 : l.kind == LayerKind::Pool ? l.pool + " pool"
                                             : "products and sums";
          break;
        case StepKind::Post:
          what = "activation and output quantizer";
          break;
        case StepKind::Activation:
          what = "activation";
          break;
        case StepKind::Lut:
          what = "lookup tables";
          break;
        case StepKind::SmMax:
          what = "softmax row max";
          break;
        case StepKind::SmDiff:
          what = "softmax x - max and exp table input quantizer";
          break;
        case StepKind::SmExp:
          what = "softmax exp tables";
          break;
        case StepKind::SmSum:
          what = "softmax row sums";
          break;
        case StepKind::SmInvQ:
          what = "softmax reciprocal table input quantizer";
          break;
        case StepKind::SmInv:
          what = "softmax reciprocal tables";
          break;
        case StepKind::SmMul:
          what = "softmax products e * r";
          break;
        case StepKind::SmOut:
          what = "softmax output quantizer";
          break;
      }
      body_ += "  // ---- " + what + " of layer '" + comment_text(l.name) + "'\n";
      run_step(steps[b]);
      const bool last = b + 1 == steps.size() || steps[b + 1].layer != li;
      if (last) {
        vals_[li] = cur_;
        have_[li] = 1;
      }
      for (int r = 0; r < regs[b]; ++r) register_stage(++stage, li, !last);
    }
    if (!have_[li]) throw std::logic_error("verilog generator: layer '" + l.name + "' has no step");
  }
  if (steps.empty())  // nothing to compute: all stages register the outputs
    for (int r = 0; r < o_.pipeline_stages; ++r) register_stage(++stage, n_layers - 1, false);
  cur_ = vals_.back();
  check_types(types_.back().output, "the model output");

  std::string v = header(lay);
  v += "\n`default_nettype none\n\n";
  v += "module " + o_.name + " (\n";
  v += "  input  wire clk,\n  input  wire rst,\n  input  wire valid_in,\n";
  v += "  input  wire [" + std::to_string(in_bits - 1) + ":0] data_in,\n";
  v += "  output wire valid_out,\n";
  v += "  output wire [" + std::to_string(out_bits - 1) + ":0] data_out\n);\n";
  v += body_;
  // valid pipeline
  const int n = o_.pipeline_stages;
  if (n == 0) {
    v += "  assign valid_out = valid_in;\n";
  } else {
    v += "  reg [" + std::to_string(n - 1) + ":0] valid_pipe;\n";
    v += "  always @(posedge clk) begin\n";
    v += "    if (rst) valid_pipe <= " + std::to_string(n) + "'b0;\n";
    if (n == 1)
      v += "    else valid_pipe <= valid_in;\n";
    else
      v += "    else valid_pipe <= {valid_pipe[" + std::to_string(n - 2) + ":0], valid_in};\n";
    v += "  end\n";
    v += "  assign valid_out = valid_pipe[" + std::to_string(n - 1) + "];\n";
  }
  // output bus, element 0 at the least significant bits
  std::vector<std::string> parts;
  for (const auto& e : lay.outputs) {
    if (e.type.width == 0) continue;
    const Sig& s = cur_[e.index];
    parts.push_back(s.is_const() ? literal(s.value, e.type.width, false) : s.name);
  }
  if (parts.empty()) {
    v += "  assign data_out = 1'b0;\n";
  } else {
    v += "  assign data_out = {";
    for (size_t m = parts.size(); m-- > 0;) v += parts[m] + (m ? ", " : "");
    v += "};\n";
  }
  v += "endmodule\n\n`default_nettype wire\n";
  return v;
}

void check_options(const VerilogOptions& o) {
  const auto& s = o.name;
  bool ok = !s.empty() && (std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_');
  for (char c : s) ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_');
  if (!ok)
    throw std::invalid_argument("verilog: module name '" + s +
                                "' is not a Verilog identifier (letters, digits, _)");
  if (o.pipeline_stages < 0 || o.pipeline_stages > 64)
    throw std::invalid_argument("verilog: pipeline_stages must be in [0, 64], got " +
                                std::to_string(o.pipeline_stages));
  if (o.const_mult != "csd" && o.const_mult != "mul" && o.const_mult != "shared")
    throw std::invalid_argument(
        "verilog: const_mult must be \"shared\", \"csd\" or \"mul\", got '" + o.const_mult + "'");
  if (o.adder_extra_depth < 0 || o.adder_extra_depth > 16)
    throw std::invalid_argument("verilog: adder_extra_depth must be in [0, 16], got " +
                                std::to_string(o.adder_extra_depth));
}

nlohmann::json bus_json(const std::vector<VerilogBusElement>& els, const char* port, int64_t bits) {
  nlohmann::json j;
  j["port"] = port;
  j["width"] = std::max<int64_t>(bits, 1);
  j["used_bits"] = bits;
  j["elements"] = nlohmann::json::array();
  for (const auto& e : els) {
    nlohmann::json x;
    x["index"] = e.index;
    x["width"] = e.type.width;
    if (e.type.width > 0) {
      x["lsb"] = e.lsb;
      x["signed"] = e.type.is_signed;
      x["frac"] = e.type.frac;
      x["type"] = e.type.to_string();
    } else {
      x["lsb"] = nullptr;
    }
    j["elements"].push_back(x);
  }
  return j;
}
}  // namespace

VerilogLayout verilog_layout(const archive::Archive& a) {
  archive::validate(a, "archive '" + a.name + "'");
  VerilogOptions o;
  return Generator(a, o).layout();
}

std::string verilog_source(const archive::Archive& a, const VerilogOptions& options) {
  check_options(options);
  archive::validate(a, "archive '" + a.name + "'");
  return Generator(a, options).generate();
}

std::string format_adders(const VerilogReport& r) {
  if (r.adders.empty()) return "";
  std::string s =
      "adder graphs (const_mult shared; logic bits: adder bits that need a LUT, an estimate):\n";
  char buf[512];
  std::snprintf(buf, sizeof buf, "  %-20s %15s %9s %19s %7s %8s  %s\n", "layer", "adders (trees)",
                "shared", "logic bits (trees)", "depth", "time", "");
  s += buf;
  int64_t a = 0, ta = 0, b = 0, tb = 0;
  for (const auto& l : r.adders) {
    std::snprintf(buf, sizeof buf,
                  "  %-20s %6lld (%6lld) %9lld %8lld (%8lld) %3d/%-3d %7.2fs  %s\n",
                  l.layer.substr(0, 20).c_str(), static_cast<long long>(l.adders),
                  static_cast<long long>(l.tree_adders), static_cast<long long>(l.shared_adders),
                  static_cast<long long>(l.logic_bits), static_cast<long long>(l.tree_logic_bits),
                  l.depth, l.tree_depth, l.seconds, l.note.c_str());
    s += buf;
    a += l.adders;
    ta += l.tree_adders;
    b += l.logic_bits;
    tb += l.tree_logic_bits;
  }
  std::snprintf(buf, sizeof buf,
                "  %-20s %6lld (%6lld) %9s %8lld (%8lld)  %.1f%% fewer logic bits\n", "total",
                static_cast<long long>(a), static_cast<long long>(ta), "",
                static_cast<long long>(b), static_cast<long long>(tb),
                tb > 0 ? 100.0 * static_cast<double>(tb - b) / static_cast<double>(tb) : 0.0);
  s += buf;
  return s;
}

VerilogReport export_verilog(const archive::Archive& a, const std::string& out_dir,
                             const VerilogOptions& options, const std::vector<double>& tb_inputs,
                             int64_t n_tb) {
  check_options(options);
  const archive::Emulator emu(a);  // validates
  const int64_t in = a.input_size(), out = a.output_size();
  // The same checks and the same zero-sample rule as the HLS export.
  if (n_tb < 0) throw std::invalid_argument("verilog: negative number of testbench samples");
  if (static_cast<int64_t>(tb_inputs.size()) != n_tb * in)
    throw std::invalid_argument("verilog: got " + std::to_string(tb_inputs.size()) +
                                " testbench input values for " + std::to_string(n_tb) +
                                " samples of " + std::to_string(in) + " features");
  std::vector<double> zero;
  const std::vector<double>* tb = &tb_inputs;
  if (n_tb == 0) {  // one all-zero sample, so that the testbench still checks something
    zero.assign(in, 0.0);
    tb = &zero;
    n_tb = 1;
  }
  Generator gen(a, options);
  const VerilogLayout lay = gen.layout();
  const std::string source = gen.generate();

  // Testbench data: the first quantizer's mantissas in, the emulator's mantissas out.
  const archive::QuantSpec& q0 = *gen.first_quantizer().input_quantizer;
  std::string din, dout;
  std::vector<int128> y(out);
  archive::EmulatorStats stats;
  for (int64_t r = 0; r < n_tb; ++r) {
    const double* x = tb->data() + r * in;
    bool sep = false;
    for (const auto& e : lay.inputs) {
      if (e.type.width == 0) continue;
      int128 m;
      try {
        m = archive::quantize_double(x[e.index], q0, e.index);
      } catch (const ArchiveError& err) {
        throw ArchiveError("verilog testbench: sample " + std::to_string(r) + ", input element " +
                           std::to_string(e.index) + ": " + err.what());
      }
      din += (sep ? " " : "") + archive::to_string(m);
      sep = true;
    }
    din += "\n";
    emu.run_exact(x, y.data(), &stats);
    sep = false;
    for (const auto& e : lay.outputs) {
      if (e.type.width == 0) continue;
      dout += (sep ? " " : "") + archive::to_string(y[e.index]);
      sep = true;
    }
    dout += "\n";
  }

  nlohmann::json ports;
  ports["format"] = "hgqt-verilog-ports";
  ports["format_version"] = 1;
  ports["top"] = options.name;
  ports["source"] = options.name + ".v";
  ports["model"] = a.name;
  ports["pipeline_stages"] = options.pipeline_stages;
  ports["latency_cycles"] = options.pipeline_stages;
  ports["initiation_interval"] = 1;
  ports["clock"] = "clk";
  ports["reset"] = "rst";
  ports["reset_kind"] = "synchronous, active high";
  ports["valid_in"] = "valid_in";
  ports["valid_out"] = "valid_out";
  ports["bit_order"] = "element 0 at the least significant bits; value = mantissa * 2^-frac";
  ports["input_quantizer_layer"] = lay.input_layer;
  ports["input_rounding"] = quant::to_string(q0.round);
  ports["input_overflow"] = quant::to_string(q0.overflow);
  ports["input"] = bus_json(lay.inputs, "data_in", lay.input_bits);
  ports["output"] = bus_json(lay.outputs, "data_out", lay.output_bits);
  ports["testbench"] = {{"samples", n_tb},
                        {"input", "tb_data/tb_input_mantissas.dat"},
                        {"output", "tb_data/tb_output_mantissas.dat"},
                        {"wrapped", stats.wrapped},
                        {"saturated", stats.saturated}};
  VerilogReport report;
  report.latency_cycles = options.pipeline_stages;
  report.adders = gen.adders_;
  if (!report.adders.empty()) {
    nlohmann::json g = nlohmann::json::array();
    for (const auto& l : report.adders)
      g.push_back({{"layer", l.layer},
                   {"shared", l.shared},
                   {"adders", l.adders},
                   {"shared_adders", l.shared_adders},
                   {"adder_bits", l.adder_bits},
                   {"depth", l.depth},
                   {"tree_adders", l.tree_adders},
                   {"tree_bits", l.tree_bits},
                   {"logic_bits", l.logic_bits},
                   {"tree_logic_bits", l.tree_logic_bits},
                   {"tree_depth", l.tree_depth},
                   {"seconds", l.seconds},
                   {"note", l.note}});
    ports["adder_graphs"] = g;
  }

  namespace fs = std::filesystem;
  const fs::path dir(out_dir);
  std::error_code ec;
  fs::create_directories(dir / "tb_data", ec);
  if (ec)
    throw std::runtime_error("verilog: cannot create '" + (dir / "tb_data").string() +
                             "': " + ec.message());
  util::write_text_atomic((dir / (options.name + ".v")).string(), source);
  util::write_text_atomic((dir / "ports.json").string(), ports.dump(2) + "\n");
  util::write_text_atomic((dir / ("tb_" + options.name + ".cpp")).string(),
                          detail::verilator_testbench(lay, options));
  util::write_text_atomic((dir / "tb_data" / "tb_input_mantissas.dat").string(), din);
  util::write_text_atomic((dir / "tb_data" / "tb_output_mantissas.dat").string(), dout);
  const std::string script = (dir / "run_verilator.sh").string();
  util::write_text_atomic(script, detail::verilator_script(options, source.size() > 300000));
  fs::permissions(script, fs::perms::owner_exec | fs::perms::group_exec | fs::perms::others_exec,
                  fs::perm_options::add, ec);
  util::write_text_atomic((dir / "Makefile").string(), detail::verilator_makefile(options));
  return report;
}

}  // namespace hgqt::exporters
