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
// The design is printed from the lowered netlist (hgqt/export/netlist.h: lower() owns the graph
// walk, the first-quantizer rule, constant folding, live terms, shifts, types and ranges), one op
// at a time: Quantize as rounding and overflow in bit slices and comparisons; Relu as a sign test;
// a Sum outside the linear layers' matrices (add, avg pool, softmax sums and x - max) as the
// exact-width tree above over the signed digits of its coefficients; Max as a tree of signed
// comparators at a width holding every operand aligned to its frac; Table as a Verilog function
// per distinct table (a case statement indexed by the operand's bits with the sign bit inverted,
// i.e. the mantissa minus its minimum) called by every reader; Mul as the exact product of two
// signed wires. The Sums of one linear layer (dense, conv1d, conv2d, scale) are printed together
// as described under const_mult. Flatten, reshape and concatenate are wiring (no ops).
//
// Registers (VerilogOptions::pipeline_stages, clock_period_ns): every op gets a clock cycle from
// an estimated delay (an adder-width model: a LUT level per adder level plus a carry chain per
// bit; a linear layer's adders as one unit): an op starts in the latest cycle of its operands and
// moves to the next cycle when its arrival would exceed the clock period. A value read in a later
// cycle than its own goes through one register per boundary crossed (one chain per value, shared
// by its readers), and the outputs through the registers up to the last boundary, so every path
// from data_in to data_out crosses every boundary exactly once. With pipeline_stages = N the
// period is the shortest whose placement fits N cycles.
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
#include "hgqt/export/netlist.h"
#include "hgqt/util/checked_int.h"
#include "hgqt/util/files.h"
#include "verilog_internal.h"

namespace hgqt::exporters {

using archive::ArchiveError;
using archive::FixedType;
using archive::int128;
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

// ------------------------------------------------------------------------------ delay model
// Estimated delays (ns) of the printed logic on a current FPGA: one LUT level with its routing,
// plus a carry chain per adder bit. The register placement's cost model and the reported
// critical path are estimates from it, not timing analysis.
constexpr double kLutNs = 0.45;
constexpr double kCarryNsPerBit = 0.015;
double adder_ns(int w) {
  return kLutNs + kCarryNsPerBit * w;
}
// Levels of a balanced tree over `operands` leaves.
int tree_levels(int64_t operands) {
  int l = 0;
  while ((int64_t{1} << l) < operands) ++l;
  return l;
}

// The linear layers' constant matrix-vector products (netlist::Step::matrix): the Sums of one
// step, written as one adder graph ("shared"), one tree per Sum ("csd") or product wires ("mul").
struct Group {
  int32_t step = -1;
  std::vector<int32_t> sums;    // the Sum ops, in order
  std::vector<int32_t> inputs;  // distinct operand ops (graph input i is op inputs[i])
  AdderGraph graph;             // "shared"
  int levels = 0;               // adder levels of the deepest output
  int width = 0;                // the widest result
};

class Generator {
 public:
  Generator(const archive::Archive& a, const VerilogOptions& o)
      : a_(a), o_(o), n_(netlist::lower(a)) {}

  VerilogLayout layout() const;
  std::string generate();
  const archive::QuantSpec& first_quantizer() const { return n_.input_quantizer; }

  /// The adder graphs of the linear layers (const_mult "shared"), in layer order.
  std::vector<LayerAdders> adders_;
  VerilogTiming timing_;

 private:
  using Op = netlist::Op;
  struct Placement {
    std::vector<int> cycle;
    std::vector<double> arrival;
    int cycles = 1;       // cycles used by the logic (max cycle + 1)
    double critical = 0;  // the longest estimated path inside one cycle
    int32_t critical_op = -1;
    std::vector<std::vector<int>> node_cycle;  // "shared": per group, each graph node's cycle
  };

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
  std::string name_of(int32_t id, const char* prefix) const {
    const Op& o = n_.ops[id];
    const std::string layer = o.step >= 0 ? std::to_string(n_.steps[o.step].layer) : "in";
    return prefix + layer + "_" + std::to_string(id);
  }
  void plan_groups();
  double op_delay(int32_t id) const;
  Placement place(double period) const;
  void schedule();
  Sig at(int32_t v, int cycle) { return delayed(sig_[v], cycle_[v], cycle); }
  Sig delayed(const Sig& s, int from, int to);
  void print_op(int32_t id);
  void print_group(const Group& g);
  void print_sum(int32_t id);
  void print_max(int32_t id);
  Sig quantize(const Sig& v, const archive::QuantSpec& q, int64_t n, const std::string& name);
  Sig relu(const Sig& v, const FixedType& t, const std::string& name);
  Sig sum_tree(std::vector<struct CsdNode> leaves, int128 konst, const std::vector<Sig>& xs,
               const FixedType& at, const std::string& prefix, const std::string& name,
               const std::string& what);
  Sig rom(const Sig& x, int32_t table, const std::string& name);
  std::string header(const VerilogLayout& lay) const;

  const archive::Archive& a_;
  const VerilogOptions& o_;
  netlist::Netlist n_;
  std::vector<Group> groups_;
  std::vector<int32_t> group_of_;  // per op: its group, or -1
  std::vector<double> delay_;      // per op: op_delay, computed once (place() runs many times)
  std::vector<int> cycle_;         // per op: the clock cycle (after cycle_ registers) computing it
  int latency_ = 0;
  std::vector<Sig> sig_;                                // per op, once printed
  std::vector<std::vector<int>> node_cycle_;            // "shared": per group and graph node
  std::map<std::pair<std::string, int>, Sig> regs_;     // (wire, boundary) -> its register
  std::vector<std::string> stage_decl_, stage_assign_;  // per boundary 1..latency
  std::vector<int> stage_count_;
  std::string body_;
  std::set<int32_t> roms_;  // the table functions written so far
};

VerilogLayout Generator::layout() const {
  VerilogLayout lay;
  lay.input_layer = a_.layers[n_.input_layer].name;
  auto fill = [&](const std::vector<int32_t>& ops, std::vector<VerilogBusElement>& els,
                  int64_t& bits) {
    for (size_t n = 0; n < ops.size(); ++n) {
      VerilogBusElement e;
      e.index = static_cast<int64_t>(n);
      e.type = n_.ops[ops[n]].type;
      if (e.type.width > 0) {
        e.lsb = bits;
        bits += e.type.width;
      }
      els.push_back(e);
    }
  };
  fill(n_.inputs, lay.inputs, lay.input_bits);
  fill(n_.outputs, lay.outputs, lay.output_bits);
  return lay;
}

// The matrix steps' Sums, and for "shared" their adder graph (or the plain trees when sharing
// saves no logic bits: reported).
void Generator::plan_groups() {
  group_of_.assign(n_.ops.size(), -1);
  std::map<int32_t, size_t> by_step;
  for (size_t id = 0; id < n_.ops.size(); ++id) {
    const Op& o = n_.ops[id];
    if (o.kind != netlist::OpKind::Sum || !n_.steps[o.step].matrix) continue;
    auto it = by_step.find(o.step);
    if (it == by_step.end()) {
      it = by_step.emplace(o.step, groups_.size()).first;
      groups_.emplace_back();
      groups_.back().step = o.step;
    }
    groups_[it->second].sums.push_back(static_cast<int32_t>(id));
    group_of_[id] = static_cast<int32_t>(it->second);
  }
  for (Group& g : groups_) {
    const std::string what = "layer '" + a_.layers[n_.steps[g.step].layer].name + "'";
    std::map<int32_t, int64_t> input_index;
    CmvmProblem p;
    for (int32_t id : g.sums) {
      const Op& o = n_.ops[id];
      g.width = std::max(g.width, o.type.width);
      std::vector<DigitTerm> digits;
      for (const auto& t : o.in) {
        auto it = input_index.find(t.value);
        if (it == input_index.end()) {
          it = input_index.emplace(t.value, static_cast<int64_t>(g.inputs.size())).first;
          g.inputs.push_back(t.value);
          p.input_lo.push_back(n_.ops[t.value].type.min_mantissa());
          p.input_hi.push_back(n_.ops[t.value].type.max_mantissa());
        }
        for (const auto& [d, digit] : naf_digits(t.coef)) {
          if (t.shift + d > 126) throw ArchiveError(what + ": exceeds 127 bits");
          digits.push_back({it->second, t.shift + d, digit < 0});
        }
      }
      if (o_.const_mult != "shared") {
        const int64_t leaves = static_cast<int64_t>(digits.size()) + (o.konst != 0);
        const int64_t mul_leaves = static_cast<int64_t>(o.in.size()) + (o.konst != 0);
        // "mul": a constant multiplier is about a tree over its digits, then the sum's tree
        g.levels = std::max(
            g.levels, o_.const_mult == "csd" ? tree_levels(leaves) : tree_levels(mul_leaves) + 2);
        continue;
      }
      p.outputs.push_back(std::move(digits));
      p.konst.push_back(o.konst);
    }
    if (o_.const_mult != "shared") continue;
    AdderGraphOptions go;
    go.extra_depth = o_.adder_extra_depth;
    AdderGraphOptions tree = go;
    tree.share = false;
    LayerAdders rep;
    rep.layer = a_.layers[n_.steps[g.step].layer].name;
    try {
      const auto t0 = std::chrono::steady_clock::now();
      AdderGraph gs = build_adder_graph(p, go, what);
      rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      AdderGraph gt = build_adder_graph(p, tree, what);
      rep.tree_adders = gt.adders;
      rep.tree_bits = gt.adder_bits;
      rep.tree_depth = gt.depth;
      rep.tree_logic_bits = gt.logic_bits;
      rep.note = gs.note;
      if (gs.logic_bits < gt.logic_bits) {
        g.graph = std::move(gs);
        rep.shared = true;
      } else {
        g.graph = std::move(gt);
        if (rep.note.empty()) rep.note = "trees: sharing saves no logic bits here";
      }
    } catch (const std::overflow_error& e) {
      throw ArchiveError(e.what());
    }
    rep.adders = g.graph.adders;
    rep.shared_adders = g.graph.shared_adders;
    rep.adder_bits = g.graph.adder_bits;
    rep.logic_bits = g.graph.logic_bits;
    rep.depth = g.graph.depth;
    g.levels = g.graph.depth;
    adders_.push_back(rep);
  }
}

// The estimated delay of op `id` (of its whole group for a matrix Sum), from its operands'
// arrival to its result.
double Generator::op_delay(int32_t id) const {
  const Op& o = n_.ops[id];
  using netlist::OpKind;
  switch (o.kind) {
    case OpKind::Input:
    case OpKind::Const:
      return 0;
    case OpKind::Quantize: {
      const FixedType& in = n_.ops[o.in[0].value].type;
      const archive::QuantSpec& q = n_.quants[o.quant];
      const bool rounding = in.frac > q.f[0] && q.round != RoundingMode::TRN;
      const bool sat = q.overflow != OverflowMode::WRAP;
      return (rounding ? adder_ns(in.width + 1) : 0) + (sat ? adder_ns(in.width) + kLutNs : 0);
    }
    case OpKind::Relu:
      return n_.ops[o.in[0].value].type.is_signed ? kLutNs : 0;
    case OpKind::Sum: {
      if (group_of_[id] >= 0) {
        const Group& g = groups_[group_of_[id]];
        if (o_.const_mult == "shared") {  // placed adder by adder: the widest adder
          int w = 0;
          for (const auto& nd : g.graph.nodes)
            if (nd.kind == AdderNode::Kind::Add) w = std::max(w, nd.width);
          return adder_ns(w);
        }
        return g.levels * adder_ns(g.width);
      }
      int64_t leaves = o.konst != 0;
      for (const auto& t : o.in) leaves += static_cast<int64_t>(naf_digits(t.coef).size());
      return tree_levels(leaves) * adder_ns(o.type.width);
    }
    case OpKind::Max: {
      const int64_t operands = static_cast<int64_t>(o.in.size()) + (o.has_konst ? 1 : 0);
      return tree_levels(operands) * (adder_ns(o.type.width) + kLutNs);
    }
    case OpKind::Table: {
      // a LUT6 per output bit up to 6 index bits, F7/F8 muxes to 8, a LUT level per 2 bits more
      const int w = n_.ops[o.in[0].value].type.width;
      return kLutNs + (w <= 6 ? 0 : 0.15 + kLutNs * ((std::max(w, 8) - 8 + 1) / 2));
    }
    case OpKind::Mul: {
      const int wa = n_.ops[o.in[0].value].type.width, wb = n_.ops[o.in[1].value].type.width;
      return (tree_levels(std::min(wa, wb)) + 1) * adder_ns(wa + wb);
    }
  }
  return 0;
}

// Greedy placement: each op (a matrix step's Sums as one) starts in the latest cycle of its
// operands; when its estimated arrival would exceed `period` (> 0), it moves to the next cycle,
// behind registers. period 0: one cycle (no registers inside the logic).
Generator::Placement Generator::place(double period) const {
  Placement pl;
  const size_t n = n_.ops.size();
  pl.cycle.assign(n, 0);
  pl.arrival.assign(n, 0.0);
  std::vector<char> group_done(groups_.size(), 0);
  pl.node_cycle.assign(groups_.size(), {});
  // Cycle and arrival of a value made from operands (cycle c, arrival t_in) by logic of delay d.
  auto settle = [&](int& c, double t_in, double d, int32_t id) {
    double t = t_in + d;
    if (period > 0 && t_in > 0 && t > period) {
      ++c;
      t = d;
    }
    pl.cycles = std::max(pl.cycles, c + 1);
    if (t > pl.critical) {
      pl.critical = t;
      pl.critical_op = id;
    }
    return t;
  };
  const bool shared = o_.const_mult == "shared";
  for (size_t id = 0; id < n; ++id) {
    const Op& o = n_.ops[id];
    if (o.kind == netlist::OpKind::Input || o.kind == netlist::OpKind::Const) continue;
    const int32_t gi = group_of_[id];
    if (gi >= 0 && shared) {
      // the layer's adder graph, adder by adder: registers may fall between its levels
      if (group_done[gi]) continue;
      group_done[gi] = 1;
      const Group& g = groups_[gi];
      const auto& nodes = g.graph.nodes;
      std::vector<int> nc(nodes.size(), 0);
      std::vector<double> na(nodes.size(), 0.0);
      std::vector<char> is_const(nodes.size(), 0);
      for (size_t i = 0; i < nodes.size(); ++i) {
        const AdderNode& nd = nodes[i];
        if (nd.kind == AdderNode::Kind::Input) {
          const int32_t v = g.inputs[nd.input];
          nc[i] = pl.cycle[v];
          na[i] = pl.arrival[v];
        } else if (nd.kind == AdderNode::Kind::Const) {
          is_const[i] = 1;
        } else {
          int c = 0;
          double t_in = 0;
          for (int x : {nd.a, nd.b}) {
            if (is_const[x]) continue;
            if (nc[x] > c) {
              c = nc[x];
              t_in = na[x];
            } else if (nc[x] == c) {
              t_in = std::max(t_in, na[x]);
            }
          }
          na[i] = settle(c, t_in, adder_ns(nd.width), g.sums[0]);
          nc[i] = c;
        }
      }
      for (size_t k = 0; k < g.sums.size(); ++k) {
        const int32_t sid = g.sums[k];
        const AdderOutput& r = g.graph.outputs[k];
        int c = 0;
        double t = 0;
        if (r.node >= 0 && !is_const[r.node]) {
          c = nc[r.node];
          t = na[r.node];
          if (r.neg) t = settle(c, t, adder_ns(n_.ops[sid].type.width), sid);  // the negation
        }
        pl.cycle[sid] = c;
        pl.arrival[sid] = t;
      }
      pl.node_cycle[gi] = std::move(nc);
      continue;
    }
    if (gi >= 0 && group_done[gi]) {
      const int32_t first = groups_[gi].sums[0];
      pl.cycle[id] = pl.cycle[first];
      pl.arrival[id] = pl.arrival[first];
      continue;
    }
    int c = 0;
    double t_in = 0;
    auto operand = [&](int32_t v) {
      if (n_.ops[v].kind == netlist::OpKind::Const) return;
      if (pl.cycle[v] > c) {
        c = pl.cycle[v];
        t_in = pl.arrival[v];
      } else if (pl.cycle[v] == c) {
        t_in = std::max(t_in, pl.arrival[v]);
      }
    };
    if (gi >= 0) {
      for (int32_t v : groups_[gi].inputs) operand(v);
      group_done[gi] = 1;
    } else {
      for (const auto& t : o.in) operand(t.value);
    }
    const double t = settle(c, t_in, delay_[id], static_cast<int32_t>(id));
    pl.cycle[id] = c;
    pl.arrival[id] = t;
  }
  return pl;
}

// The clock cycle of every op and the latency: with clock_period_ns, as many cycles as the
// placement at that period needs (plus the output registers); else pipeline_stages cycles, at
// the shortest period whose placement fits them.
void Generator::schedule() {
  plan_groups();
  delay_.resize(n_.ops.size());
  for (size_t id = 0; id < n_.ops.size(); ++id) {
    delay_[id] = op_delay(static_cast<int32_t>(id));
    timing_.longest_op_ns = std::max(timing_.longest_op_ns, delay_[id]);
  }
  Placement pl;
  if (o_.clock_period_ns > 0) {
    pl = place(o_.clock_period_ns);
    latency_ = pl.cycles;
    timing_.clock_period_ns = o_.clock_period_ns;
  } else if (o_.pipeline_stages == 0) {
    pl = place(0);
    latency_ = 0;
  } else {
    const Placement one = place(0);
    double lo = timing_.longest_op_ns, hi = one.critical;
    pl = one;
    if (o_.pipeline_stages > 1 && hi > lo) {
      for (int it = 0; it < 40 && hi - lo > 1e-3; ++it) {
        const double mid = (lo + hi) / 2;
        Placement p = place(mid);
        if (p.cycles <= o_.pipeline_stages) {
          hi = mid;
          pl = std::move(p);
        } else {
          lo = mid;
        }
      }
    }
    latency_ = o_.pipeline_stages;
  }
  cycle_ = std::move(pl.cycle);
  node_cycle_ = std::move(pl.node_cycle);
  timing_.latency_cycles = latency_;
  timing_.critical_path_ns = pl.critical;
  if (pl.critical_op >= 0) {
    const Op& o = n_.ops[pl.critical_op];
    const netlist::Step& s = n_.steps[o.step];
    timing_.critical_step = s.what + " of layer '" + a_.layers[s.layer].name + "'";
  }
  stage_decl_.assign(latency_ + 1, "");
  stage_assign_.assign(latency_ + 1, "");
  stage_count_.assign(latency_ + 1, 0);
}

// Signal s, made in cycle `from`, as read in cycle `to`: itself, or the register holding it after
// the boundaries between (one register per boundary, shared by all readers).
Sig Generator::delayed(const Sig& s, int from, int to) {
  if (s.is_const() || to <= from) return s;
  Sig prev = s;
  for (int k = from + 1; k <= to; ++k) {
    auto it = regs_.find({s.name, k});
    if (it == regs_.end()) {
      Sig r;
      r.type = s.type;
      r.name = "s" + std::to_string(k) + "_" + std::to_string(stage_count_[k]++);
      stage_decl_[k] +=
          "  reg " + range_decl(r.type.is_signed, r.type.width) + " " + r.name + ";\n";
      stage_assign_[k] += "    " + r.name + " <= " + prev.name + ";\n";
      it = regs_.emplace(std::make_pair(s.name, k), r).first;
    }
    prev = it->second;
  }
  return prev;
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

// A Sum outside the matrices (add, avg pool, softmax sums and differences, a product with one
// constant factor): one exact-width tree over the signed digits of its coefficients.
void Generator::print_sum(int32_t id) {
  const Op& o = n_.ops[id];
  const std::string name = name_of(id, "acc");
  const std::string what = "layer '" + a_.layers[n_.steps[o.step].layer].name + "'";
  std::vector<Sig> xs;
  std::vector<CsdNode> leaves;
  for (const auto& t : o.in) {
    xs.push_back(at(t.value, cycle_[id]));
    append_csd_leaves(leaves, xs, static_cast<int64_t>(xs.size()) - 1, t.shift, t.coef, what);
  }
  sig_[id] = sum_tree(std::move(leaves), o.konst, xs, o.type, name + "_", name, what);
}

// Max: a tree of signed comparators over the operands aligned to the result's frac, in a width
// holding every operand (and the constant operand, when there is one).
void Generator::print_max(int32_t id) {
  const Op& o = n_.ops[id];
  const std::string name = name_of(id, "max");
  std::vector<Sig> xs;
  for (const auto& t : o.in) xs.push_back(at(t.value, cycle_[id]));
  // Signed comparisons in the lowering's comparison type (every operand's range: an operand
  // wider than it keeps its value when truncated), at least the result's width.
  const int wm = std::max(o.cmp.width + (o.cmp.is_signed ? 0 : 1), o.type.width);
  std::vector<std::string> level;
  for (size_t q = 0; q < xs.size(); ++q) {
    const std::string e = name + "_e" + std::to_string(q);
    const std::string v = signed_view(xs[q]);
    const int s = o.in[q].shift;
    emit_wire(e, true, wm, s > 0 ? "(" + v + " <<< " + std::to_string(s) + ")" : v);
    level.push_back(e);
  }
  if (o.has_konst) level.push_back(literal(o.konst, wm, true));
  int count = 0;
  while (level.size() > 1) {  // balanced comparator tree
    std::vector<std::string> next;
    for (size_t q = 0; q + 1 < level.size(); q += 2) {
      const std::string c = name + "_" + std::to_string(count++);
      emit_wire(c, true, wm,
                "(" + level[q] + " > " + level[q + 1] + ") ? " + level[q] + " : " + level[q + 1]);
      next.push_back(c);
    }
    if (level.size() % 2) next.push_back(std::move(level.back()));
    level.swap(next);
  }
  sig_[id] = wire(
      name, o.type,
      o.type.width == wm ? level[0] : level[0] + "[" + std::to_string(o.type.width - 1) + ":0]");
}

// A matrix step's Sums: "shared" prints the group's adder graph (inputs and constants inline,
// every adder a wire at its exact width); "csd" one tree of signed digits per Sum; "mul" a
// product wire per product (weights of +-2^e as shifts) summed in one expression modulo 2^W.
void Generator::print_group(const Group& g) {
  const int cycle = cycle_[g.sums[0]];
  const std::string what = "layer '" + a_.layers[n_.steps[g.step].layer].name + "'";
  if (o_.const_mult == "csd") {
    for (int32_t id : g.sums) print_sum(id);
    return;
  }
  if (o_.const_mult == "mul") {
    for (int32_t id : g.sums) {
      const Op& o = n_.ops[id];
      const std::string name = name_of(id, "acc");
      std::vector<std::string> level;
      for (size_t k = 0; k < o.in.size(); ++k) {
        const auto& t = o.in[k];
        const Sig x = at(t.value, cycle);
        const int128 c = t.coef;
        const int128 mag = c < 0 ? -c : c;
        std::string e;
        int shift = t.shift;
        if ((mag & (mag - 1)) == 0) {  // +-2^e: a shift
          int p = 0;
          while ((mag >> p) != 1) ++p;
          shift += p;
          e = signed_view(x);
        } else {
          const int128 p1 = checked_mul(x.type.min_mantissa(), c, what);
          const int128 p2 = checked_mul(x.type.max_mantissa(), c, what);
          e = name + "_p" + std::to_string(k);
          emit_wire(e, true, signed_width(std::min(p1, p2), std::max(p1, p2)),
                    signed_view(x) + " * " + signed_literal(c));
        }
        if (shift > 0) e = "(" + e + " <<< " + std::to_string(shift) + ")";
        if (c < 0 && (mag & (mag - 1)) == 0) e = "(-" + e + ")";
        level.push_back(std::move(e));
      }
      if (o.konst != 0) level.push_back(literal(o.konst, o.type.width, true));  // modulo 2^W
      while (level.size() > 1) {                                                // balanced tree
        std::vector<std::string> next;
        next.reserve((level.size() + 1) / 2);
        for (size_t q = 0; q + 1 < level.size(); q += 2)
          next.push_back("(" + level[q] + " + " + level[q + 1] + ")");
        if (level.size() % 2) next.push_back(std::move(level.back()));
        level.swap(next);
      }
      sig_[id] = wire(name, o.type, level[0]);
    }
    return;
  }
  const AdderGraph& gr = g.graph;
  const std::vector<int>& nc = node_cycle_[&g - groups_.data()];
  std::vector<Sig> node(gr.nodes.size());
  // node i as a signed expression read in `cycle`
  auto ref = [&](int i, int cycle) {
    const AdderNode& nd = gr.nodes[i];
    switch (nd.kind) {
      case AdderNode::Kind::Input:
        return signed_view(at(g.inputs[nd.input], cycle));
      case AdderNode::Kind::Const:
        return signed_literal(nd.value);
      case AdderNode::Kind::Add:
        break;
    }
    return delayed(node[i], nc[i], cycle).name;
  };
  const std::string prefix = "g" + std::to_string(n_.steps[g.step].layer) + "_";
  for (size_t i = 0; i < gr.nodes.size(); ++i) {
    const auto& nd = gr.nodes[i];
    if (nd.kind != AdderNode::Kind::Add) continue;
    auto shifted = [&](int v, int k) {
      const std::string e = ref(v, nc[i]);
      return k > 0 ? "(" + e + " <<< " + std::to_string(k) + ")" : e;
    };
    node[i] = wire(prefix + std::to_string(i), FixedType{true, nd.width, 0},
                   shifted(nd.a, nd.ka) + (nd.sub ? " - " : " + ") + shifted(nd.b, nd.kb));
  }
  for (size_t k = 0; k < g.sums.size(); ++k) {
    const int32_t id = g.sums[k];
    const Op& o = n_.ops[id];
    const auto& r = gr.outputs[k];
    const std::string name = name_of(id, "acc");
    if (r.node < 0) {
      sig_[id] = wire(name, o.type, literal(0, o.type.width, true));
      continue;
    }
    const std::string v = ref(r.node, cycle_[id]);
    std::string e = r.shift > 0 ? "(" + v + " <<< " + std::to_string(r.shift) + ")" : v;
    if (r.neg) e = "-" + e;
    sig_[id] = wire(name, o.type, e);
  }
}

// One op as Verilog, reading its operands in its cycle.
void Generator::print_op(int32_t id) {
  const Op& o = n_.ops[id];
  using netlist::OpKind;
  const int cycle = cycle_[id];
  switch (o.kind) {
    case OpKind::Input:
    case OpKind::Const:
      return;  // made by generate(); constants are literals
    case OpKind::Quantize:
      sig_[id] = quantize(at(o.in[0].value, cycle), n_.quants[o.quant], 0, name_of(id, "q"));
      return;
    case OpKind::Relu:
      sig_[id] = relu(at(o.in[0].value, cycle), o.type, name_of(id, "relu"));
      return;
    case OpKind::Sum:
      if (group_of_[id] < 0) {
        print_sum(id);
      } else if (groups_[group_of_[id]].sums[0] == id) {
        print_group(groups_[group_of_[id]]);
      }
      return;
    case OpKind::Max:
      print_max(id);
      return;
    case OpKind::Table:
      sig_[id] = rom(at(o.in[0].value, cycle), o.table, name_of(id, "rom"));
      return;
    case OpKind::Mul:
      // the exact product at the width of its range
      sig_[id] = wire(
          name_of(id, "p"), o.type,
          signed_view(at(o.in[0].value, cycle)) + " * " + signed_view(at(o.in[1].value, cycle)));
      return;
  }
}

// A table lookup: table `t` at x - min mantissa of x's type: a Verilog function `rom<t>` (one
// case statement per distinct table, written at its first use) that every reader calls.
Sig Generator::rom(const Sig& x, int32_t t, const std::string& name) {
  const netlist::Table& tb = n_.tables[t];
  if (x.is_const() || x.type.width == 0)
    throw std::logic_error("verilog generator: table read at a constant index");
  const int w = x.type.width;
  if (static_cast<int64_t>(tb.entries.size()) != (int64_t{1} << w) || x.type != tb.index)
    throw std::logic_error("verilog generator: table does not match its index");
  const std::string fn = "rom" + std::to_string(t);
  if (roms_.insert(t).second) {
    body_ += "  // " + comment_text(tb.name) + "\n";
    body_ += "  function " + range_decl(tb.out.is_signed, tb.out.width) + " " + fn + ";\n";
    body_ += "    input [" + std::to_string(w - 1) + ":0] idx;\n";
    body_ += "    begin\n      case (idx)\n";
    body_ += rom_cases(fn, w, tb.entries.data(), static_cast<int64_t>(tb.entries.size()), tb.out,
                       "        ");
    body_ += "      endcase\n    end\n  endfunction\n";
  }
  return wire(name, tb.out, fn + "(" + rom_index(x) + ")");
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
  char crit[160];
  std::snprintf(crit, sizeof crit, "%.2f", timing_.critical_path_ns);
  h += "// Latency: " + std::to_string(latency_) + " clock cycle(s) (" +
       (o_.clock_period_ns > 0 ? "registers placed for the clock period" : "pipeline_stages") +
       (latency_ == 0 ? "); combinational, clk and rst unused" : "); one sample per cycle") +
       ".\n// Estimated longest path between registers: " + crit + " ns (" +
       comment_text(timing_.critical_step) +
       "; an estimate from an adder-width delay model).\n//\n";
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
  schedule();
  const int64_t in_bits = std::max<int64_t>(lay.input_bits, 1);
  const int64_t out_bits = std::max<int64_t>(lay.output_bits, 1);
  body_.clear();
  roms_.clear();
  sig_.assign(n_.ops.size(), Sig{});
  for (size_t id = 0; id < n_.ops.size(); ++id) {
    const Op& o = n_.ops[id];
    if (o.kind == netlist::OpKind::Const) sig_[id] = constant(o.konst, o.type);
  }
  for (const auto& e : lay.inputs) {  // data_in
    if (e.type.width == 0) continue;
    const int32_t id = n_.inputs[e.index];
    sig_[id] = wire(
        "in_" + std::to_string(e.index), e.type,
        "data_in[" + std::to_string(e.lsb + e.type.width - 1) + ":" + std::to_string(e.lsb) + "]");
  }
  int32_t step = -1;
  for (size_t id = 0; id < n_.ops.size(); ++id) {
    const Op& o = n_.ops[id];
    if (o.step >= 0 && o.step != step) {
      step = o.step;
      const netlist::Step& s = n_.steps[step];
      body_ += "  // ---- " + s.what + " of layer '" + comment_text(a_.layers[s.layer].name) +
               "' (cycle " + std::to_string(cycle_[id]) + ")\n";
    }
    print_op(static_cast<int32_t>(id));
  }
  // the outputs, through the registers up to the last boundary
  std::vector<Sig> outs;
  for (int32_t id : n_.outputs) outs.push_back(at(id, latency_));

  std::string v = header(lay);
  v += "\n`default_nettype none\n\n";
  v += "module " + o_.name + " (\n";
  v += "  input  wire clk,\n  input  wire rst,\n  input  wire valid_in,\n";
  v += "  input  wire [" + std::to_string(in_bits - 1) + ":0] data_in,\n";
  v += "  output wire valid_out,\n";
  v += "  output wire [" + std::to_string(out_bits - 1) + ":0] data_out\n);\n";
  for (int k = 1; k <= latency_; ++k)
    v += "  // ---- pipeline register stage " + std::to_string(k) + ": " +
         std::to_string(stage_count_[k]) + " register(s)\n" + stage_decl_[k];
  v += body_;
  for (int k = 1; k <= latency_; ++k)
    if (!stage_assign_[k].empty())
      v += "  always @(posedge clk) begin  // stage " + std::to_string(k) + "\n" +
           stage_assign_[k] + "  end\n";
  // valid pipeline
  const int n = latency_;
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
    const Sig& s = outs[e.index];
    if (s.type != e.type) throw std::logic_error("verilog generator: output type mismatch");
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
  if (!(o.clock_period_ns >= 0) || o.clock_period_ns > 1e6)
    throw std::invalid_argument(
        "verilog: clock_period_ns must be 0 (unused) or a positive period "
        "in ns, got " +
        std::to_string(o.clock_period_ns));
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

std::string format_timing(const VerilogReport& r) {
  const VerilogTiming& t = r.timing;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "timing (estimated): latency %d cycle(s)%s; longest path between registers "
                "%.2f ns (%s)%s\n",
                t.latency_cycles, t.latency_cycles == 0 ? ", combinational" : "",
                t.critical_path_ns, t.critical_step.c_str(),
                t.clock_period_ns > 0
                    ? (t.critical_path_ns <= t.clock_period_ns ? ", within the clock period"
                                                               : ", one op alone exceeds the "
                                                                 "clock period")
                    : "");
  return buf;
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
  const archive::QuantSpec& q0 = gen.first_quantizer();
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
  const VerilogTiming& tm = gen.timing_;
  ports["pipeline_stages"] = tm.latency_cycles;
  ports["latency_cycles"] = tm.latency_cycles;
  ports["timing"] = {{"clock_period_ns", tm.clock_period_ns},
                     {"estimated_critical_path_ns", tm.critical_path_ns},
                     {"critical_step", tm.critical_step},
                     {"model",
                      "estimate: 0.45 ns per LUT level (adder level, comparator, mux), "
                      "0.015 ns per carry bit"}};
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
  report.latency_cycles = tm.latency_cycles;
  report.timing = tm;
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
                          detail::verilator_testbench(lay, options, tm.latency_cycles));
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
