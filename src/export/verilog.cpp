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
//  - "csd" (default): each weight mantissa c is recoded in canonical signed digits (non-adjacent
//    form, c = sum_k d_k 2^k with d_k in {-1, 0, 1} and no two adjacent nonzero digits), and
//    every digit contributes the term d_k * x * 2^(k + s) straight to the accumulator's adder
//    tree (no product wires). The tree is balanced and every inner node is a signed wire at the
//    exact width of its partial sum's range, computed from the node's exact linear form
//    (sum of coefficient * input over distinct inputs, plus a constant); a node's common
//    trailing zero bits (the smallest shift of its terms) are factored out of it and applied by
//    its parent. Each node is a sum modulo 2^w of sign-extended operands whose exact value fits
//    its w bits, so it equals the partial sum exactly, and so does the accumulator.
#include "hgqt/export/verilog.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <iterator>
#include <stdexcept>

#include "hgqt/archive/emulator.h"
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

int128 pow2(int e) { return static_cast<int128>(1) << e; }

u128 low_mask(int w) { return w >= 128 ? ~u128{0} : (u128{1} << w) - 1; }

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
std::string signed_literal(int128 v) { return literal(v, std::max(2, signed_width(v, v)), true); }

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

int128 checked_mul(int128 a, int128 b, const std::string& what) {
  int128 r;
  if (__builtin_mul_overflow(a, b, &r)) throw ArchiveError(what + ": exceeds 127 bits");
  return r;
}

// A value in the netlist: a named wire/reg, or a constant.
struct Sig {
  std::string name;  // empty: the constant `value`
  int128 value = 0;
  FixedType type;    // width 0: the constant 0
  bool is_const() const { return name.empty(); }
};

Sig constant(int128 v, const FixedType& t) {
  Sig s;
  s.value = t.width == 0 ? 0 : v;
  s.type = t;
  return s;
}

// Adds dense layer l's bias to the constant part `konst` of accumulator o (type `at`). When the
// accumulator has no variable terms it is that constant: sets `acc` and returns true.
bool constant_accumulator(const archive::Layer& l, int64_t o, const FixedType& at, bool no_terms,
                          int128& konst, Sig& acc) {
  if (l.bias && l.bias->mantissa[o] != 0)
    konst += archive::align(l.bias->mantissa[o], -l.bias->exponent[o], at.frac);
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

// What a step of the data flow does; registers may follow any step.
enum class StepKind { Quantize, DenseAcc, DensePost, Activation };
struct Step {
  StepKind kind;
  size_t layer;
  double cost;  // estimated logic depth
};

class Generator {
 public:
  Generator(const archive::Archive& a, const VerilogOptions& o)
      : a_(a), o_(o), types_(archive::infer_types(a)) {}

  VerilogLayout layout() const;
  std::string generate();

 private:
  void emit_wire(const std::string& name, bool is_signed, int w, const std::string& expr) {
    body_ += "  wire " + range_decl(is_signed, w) + " " + name + " = " + expr + ";\n";
  }
  size_t first_quantizer() const;
  std::vector<Step> plan() const;
  std::vector<int> place_registers(const std::vector<Step>& steps) const;
  void input_port(const VerilogLayout& lay);
  void run_step(const Step& s);
  void register_stage(int stage);
  Sig quantize(const Sig& v, const archive::QuantSpec& q, int64_t n, const std::string& name);
  Sig relu(const Sig& v, const FixedType& t, const std::string& name);
  void dense_acc(size_t li);
  void dense_acc_csd(size_t li);
  void dense_post(size_t li);
  void check_types(const std::vector<FixedType>& want, const std::string& what) const;
  std::string header(const VerilogLayout& lay) const;

  const archive::Archive& a_;
  const VerilogOptions& o_;
  std::vector<archive::LayerTypes> types_;
  std::vector<Sig> cur_;  // the values flowing between steps
  std::string body_;
};

size_t Generator::first_quantizer() const {
  for (size_t li = 0; li < a_.layers.size(); ++li) {
    const auto& l = a_.layers[li];
    if (l.type == "quantize" || (l.type == "dense" && l.input_quantizer)) return li;
  }
  throw ArchiveError("verilog: the archive has no input quantizer");  // infer_types rejects first
}

VerilogLayout Generator::layout() const {
  VerilogLayout lay;
  const size_t li0 = first_quantizer();
  lay.input_layer = a_.layers[li0].name;
  const auto& in_types = types_[li0].quantized_input;
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
  const size_t li0 = first_quantizer();
  for (size_t li = li0; li < a_.layers.size(); ++li) {
    const auto& l = a_.layers[li];
    if (l.type == "flatten") continue;
    if (l.type == "quantize") {
      if (li != li0) steps.push_back({StepKind::Quantize, li, 1});
      continue;
    }
    if (l.type == "activation") {
      steps.push_back({StepKind::Activation, li, 1});
      continue;
    }
    // dense: input quantizer, products and adder tree, relu and output quantizer
    if (l.input_quantizer && li != li0) steps.push_back({StepKind::Quantize, li, 1});
    const auto& w = *l.kernel;
    const int64_t in = w.shape[0], out = w.shape[1];
    std::vector<int64_t> terms(out, 0);
    for (int64_t j = 0; j < in; ++j)
      for (int64_t o = 0; o < out; ++o) terms[o] += w.mantissa[j * out + o] != 0;
    const int64_t most = std::max<int64_t>(1, *std::max_element(terms.begin(), terms.end()) + 1);
    steps.push_back({StepKind::DenseAcc, li, 1 + std::ceil(std::log2(static_cast<double>(most)))});
    if (l.activation == "relu" || l.output_quantizer) steps.push_back({StepKind::DensePost, li, 1});
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
  cur_.clear();
  for (const auto& e : lay.inputs) {
    if (e.type.width == 0) {
      cur_.push_back(constant(0, e.type));
      continue;
    }
    Sig s;
    s.name = "in_" + std::to_string(e.index);
    s.type = e.type;
    emit_wire(s.name, e.type.is_signed, e.type.width,
              "data_in[" + std::to_string(e.lsb + e.type.width - 1) + ":" + std::to_string(e.lsb) +
                  "]");
    cur_.push_back(s);
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
  emit_wire(name, out.is_signed, w, expr);
  Sig s;
  s.name = name;
  s.type = out;
  return s;
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
  emit_wire(name, false, t.width, expr);
  Sig s;
  s.name = name;
  s.type = t;
  return s;
}

// The non-adjacent form of m > 0: (position, digit) pairs with digit +-1, lowest first.
std::vector<std::pair<int, int>> naf_digits(u128 m) {
  std::vector<std::pair<int, int>> d;
  for (int k = 0; m != 0; ++k, m >>= 1) {
    if ((m & 1) == 0) continue;
    const int digit = (m & 3) == 1 ? 1 : -1;  // 2 - (m mod 4)
    d.emplace_back(k, digit);
    if (digit == 1)
      m -= 1;
    else
      m += 1;
  }
  return d;
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

void Generator::dense_acc_csd(size_t li) {
  const auto& l = a_.layers[li];
  const auto& t = types_[li];
  check_types(t.quantized_input, "layer '" + l.name + "' input");
  const auto& w = *l.kernel;
  const int64_t in = w.shape[0], n_out = w.shape[1];
  const std::string L = std::to_string(li);
  const std::string what_l = "layer '" + l.name + "'";
  std::vector<std::vector<CsdNode>> leaves(n_out);
  std::vector<int128> konst(n_out, 0);
  for (int64_t j = 0; j < in; ++j) {
    const Sig& x = cur_[j];
    if (x.type.width == 0 || (x.is_const() && x.value == 0)) continue;
    for (int64_t o = 0; o < n_out; ++o) {
      const int64_t wn = j * n_out + o;
      const int128 c = w.mantissa[wn];
      if (c == 0) continue;
      const std::string what =
          what_l + " weight [" + std::to_string(j) + "," + std::to_string(o) + "]";
      const int s = t.accumulator[o].frac - (x.type.frac - w.exponent[wn]);
      if (s < 0) throw std::logic_error("verilog generator: " + what + " has a negative shift");
      if (x.is_const()) {
        konst[o] += archive::align(checked_mul(x.value, c, what), 0, s);
        continue;
      }
      const u128 mag = c < 0 ? static_cast<u128>(-c) : static_cast<u128>(c);
      for (const auto& [k, digit] : naf_digits(mag)) {
        CsdNode n;
        n.expr = signed_view(x);
        n.tz = s + k;
        if (n.tz > 126) throw ArchiveError(what + ": exceeds 127 bits");
        n.neg = (digit < 0) != (c < 0);
        n.coef.emplace_back(j, n.neg ? -pow2(n.tz) : pow2(n.tz));
        leaves[o].push_back(std::move(n));
      }
    }
  }
  // The range of a node's expression.
  auto range = [&](const CsdNode& n) {
    int128 lo = n.konst, hi = n.konst;
    for (const auto& [j, c] : n.coef) {
      const int128 a = checked_mul(c, cur_[j].type.min_mantissa(), what_l);
      const int128 b = checked_mul(c, cur_[j].type.max_mantissa(), what_l);
      if (__builtin_add_overflow(lo, std::min(a, b), &lo) ||
          __builtin_add_overflow(hi, std::max(a, b), &hi))
        throw ArchiveError(what_l + ": partial sum exceeds 127 bits");
    }
    if (n.neg) {
      const int128 nlo = -hi;
      hi = -lo;
      lo = nlo;
    }
    return std::make_pair(lo >> n.tz, hi >> n.tz);  // exact: every term is a multiple of 2^tz
  };
  std::vector<Sig> acc(n_out);
  for (int64_t o = 0; o < n_out; ++o) {
    const FixedType& at = t.accumulator[o];
    if (constant_accumulator(l, o, at, leaves[o].empty(), konst[o], acc[o])) continue;
    std::vector<CsdNode> level = std::move(leaves[o]);
    if (konst[o] != 0) {
      CsdNode n;
      n.konst = konst[o];
      while (n.tz < 126 && ((n.konst >> n.tz) & 1) == 0) ++n.tz;
      n.expr = signed_literal(n.konst >> n.tz);
      level.push_back(std::move(n));
    }
    const std::string prefix = "t" + L + "_" + std::to_string(o) + "_";
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
    Sig s;
    s.name = "acc" + L + "_" + std::to_string(o);
    s.type = at;
    emit_wire(s.name, at.is_signed, at.width, e);
    acc[o] = s;
  }
  cur_.swap(acc);
  check_types(t.accumulator, "layer '" + l.name + "' accumulator");
}

void Generator::dense_acc(size_t li) {
  if (o_.const_mult == "csd") return dense_acc_csd(li);
  const auto& l = a_.layers[li];
  const auto& t = types_[li];
  check_types(t.quantized_input, "layer '" + l.name + "' input");
  const auto& w = *l.kernel;
  const int64_t in = w.shape[0], n_out = w.shape[1];
  const std::string L = std::to_string(li);
  struct Term {
    std::string expr;  // signed
    int shift;
    bool neg;
  };
  std::vector<std::vector<Term>> terms(n_out);
  std::vector<int128> konst(n_out, 0);
  for (int64_t j = 0; j < in; ++j) {
    const Sig& x = cur_[j];
    if (x.type.width == 0 || (x.is_const() && x.value == 0)) continue;
    for (int64_t o = 0; o < n_out; ++o) {
      const int64_t wn = j * n_out + o;
      const int128 c = w.mantissa[wn];
      if (c == 0) continue;
      const std::string what = "layer '" + l.name + "' weight [" + std::to_string(j) + "," +
                               std::to_string(o) + "]";
      const int s = t.accumulator[o].frac - (x.type.frac - w.exponent[wn]);
      if (s < 0) throw std::logic_error("verilog generator: " + what + " has a negative shift");
      if (x.is_const()) {
        konst[o] += archive::align(checked_mul(x.value, c, what), 0, s);
        continue;
      }
      const int128 mag = c < 0 ? -c : c;
      if ((mag & (mag - 1)) == 0) {  // +-2^e: a shift
        int e = 0;
        while ((mag >> e) != 1) ++e;
        terms[o].push_back({signed_view(x), s + e, c < 0});
        continue;
      }
      const int128 p1 = checked_mul(x.type.min_mantissa(), c, what);
      const int128 p2 = checked_mul(x.type.max_mantissa(), c, what);
      const std::string p = "p" + L + "_" + std::to_string(j) + "_" + std::to_string(o);
      emit_wire(p, true, signed_width(std::min(p1, p2), std::max(p1, p2)),
                signed_view(x) + " * " + signed_literal(c));
      terms[o].push_back({p, s, false});
    }
  }
  std::vector<Sig> acc(n_out);
  for (int64_t o = 0; o < n_out; ++o) {
    const FixedType& at = t.accumulator[o];
    if (constant_accumulator(l, o, at, terms[o].empty(), konst[o], acc[o])) continue;
    std::vector<std::string> level;
    level.reserve(terms[o].size() + 1);
    for (const auto& term : terms[o]) {
      std::string e = term.expr;
      if (term.shift > 0) e = "(" + e + " <<< " + std::to_string(term.shift) + ")";
      if (term.neg) e = "(-" + e + ")";
      level.push_back(std::move(e));
    }
    if (konst[o] != 0) level.push_back(literal(konst[o], at.width, true));  // modulo 2^W
    while (level.size() > 1) {  // balanced adder tree
      std::vector<std::string> next;
      next.reserve((level.size() + 1) / 2);
      for (size_t m = 0; m + 1 < level.size(); m += 2)
        next.push_back("(" + level[m] + " + " + level[m + 1] + ")");
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

void Generator::dense_post(size_t li) {
  const auto& l = a_.layers[li];
  const auto& t = types_[li];
  const std::string L = std::to_string(li);
  for (size_t o = 0; o < cur_.size(); ++o) {
    const std::string on = std::to_string(o);
    if (l.activation == "relu") {
      const FixedType rt = archive::type_of_range(std::max<int128>(t.acc_lo[o], 0),
                                                  std::max<int128>(t.acc_hi[o], 0),
                                                  t.accumulator[o].frac);
      cur_[o] = relu(cur_[o], rt, "relu" + L + "_" + on);
    }
    if (l.output_quantizer)
      cur_[o] = quantize(cur_[o], *l.output_quantizer, static_cast<int64_t>(o), "q" + L + "_" + on);
  }
  check_types(t.output, "layer '" + l.name + "' output");
}

void Generator::run_step(const Step& s) {
  const auto& l = a_.layers[s.layer];
  const std::string L = std::to_string(s.layer);
  switch (s.kind) {
    case StepKind::Quantize: {
      check_types(types_[s.layer].input, "layer '" + l.name + "' input");
      for (size_t n = 0; n < cur_.size(); ++n)
        cur_[n] = quantize(cur_[n], *l.input_quantizer, static_cast<int64_t>(n),
                           "iq" + L + "_" + std::to_string(n));
      check_types(types_[s.layer].quantized_input, "layer '" + l.name + "' quantized input");
      break;
    }
    case StepKind::DenseAcc:
      dense_acc(s.layer);
      break;
    case StepKind::DensePost:
      dense_post(s.layer);
      break;
    case StepKind::Activation: {
      check_types(types_[s.layer].input, "layer '" + l.name + "' input");
      for (size_t n = 0; n < cur_.size(); ++n) {
        const std::string nn = L + "_" + std::to_string(n);
        Sig v = cur_[n];
        if (l.activation == "relu" && v.type.is_signed)
          v = relu(v, FixedType{false, v.type.width - 1, v.type.frac}, "relu" + nn);
        cur_[n] = quantize(v, *l.output_quantizer, static_cast<int64_t>(n), "q" + nn);
      }
      check_types(types_[s.layer].output, "layer '" + l.name + "' output");
      break;
    }
  }
}

void Generator::register_stage(int stage) {
  std::string decl, assign;
  const std::string prefix = "s" + std::to_string(stage) + "_";
  for (size_t n = 0; n < cur_.size(); ++n) {
    Sig& v = cur_[n];
    if (v.is_const()) continue;
    const std::string r = prefix + std::to_string(n);
    decl += "  reg " + range_decl(v.type.is_signed, v.type.width) + " " + r + ";\n";
    assign += "    " + r + " <= " + v.name + ";\n";
    v.name = r;
  }
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
  h += "// Latency: " + std::to_string(o_.pipeline_stages) + " clock cycle(s) (pipeline_stages)" +
       (o_.pipeline_stages == 0 ? "; combinational, clk and rst unused"
                                : "; one sample per cycle") +
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
  body_.clear();
  input_port(lay);
  int stage = 0;
  for (size_t b = 0; b < steps.size(); ++b) {
    static const char* const kWhat[] = {"quantizer", "products and sums",
                                        "activation and output quantizer", "activation"};
    body_ += "  // ---- " + std::string(kWhat[static_cast<int>(steps[b].kind)]) + " of layer '" +
             comment_text(a_.layers[steps[b].layer].name) + "'\n";
    run_step(steps[b]);
    for (int r = 0; r < regs[b]; ++r) register_stage(++stage);
  }
  if (steps.empty())  // nothing to compute: all stages register the inputs
    for (int r = 0; r < o_.pipeline_stages; ++r) register_stage(++stage);
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
  if (o.const_mult != "csd" && o.const_mult != "mul")
    throw std::invalid_argument("verilog: const_mult must be \"csd\" or \"mul\", got '" +
                                o.const_mult + "'");
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

void export_verilog(const archive::Archive& a, const std::string& out_dir,
                    const VerilogOptions& options, const std::vector<double>& tb_inputs,
                    int64_t n_tb) {
  check_options(options);
  const archive::Emulator emu(a);  // validates
  const int64_t in = a.input_size(), out = a.output_size();
  if (n_tb < 0 || static_cast<int64_t>(tb_inputs.size()) != n_tb * in)
    throw ArchiveError("verilog: got " + std::to_string(tb_inputs.size()) +
                       " testbench input values for " + std::to_string(n_tb) + " samples of " +
                       std::to_string(in) + " features");
  Generator gen(a, options);
  const VerilogLayout lay = gen.layout();
  const std::string source = gen.generate();

  // Testbench data: the first quantizer's mantissas in, the emulator's mantissas out.
  const archive::Layer* first = nullptr;
  for (const auto& l : a.layers)
    if (l.type == "quantize" || (l.type == "dense" && l.input_quantizer)) {
      first = &l;
      break;
    }
  const archive::QuantSpec& q0 = *first->input_quantizer;
  std::string din, dout;
  std::vector<int128> y(out);
  archive::EmulatorStats stats;
  for (int64_t r = 0; r < n_tb; ++r) {
    const double* x = tb_inputs.data() + r * in;
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
}

}  // namespace hgqt::exporters
