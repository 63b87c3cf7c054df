// HLS project generator: prints the lowered netlist (netlist::lower), one statement per op with
// exact ap_fixed / ac_fixed types, quantizers as casts (see hls.h for the design).
#include "hgqt/export/hls.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "hgqt/archive/emulator.h"
#include "hgqt/export/netlist.h"
#include "hgqt/export/templates.h"
#include "hgqt/util/checked_int.h"
#include "hgqt/util/files.h"

namespace hgqt::exporters {

using archive::ArchiveError;
using archive::Constant;
using archive::FixedType;
using archive::int128;
using archive::Layer;
using archive::LayerKind;
using archive::QuantSpec;
using quant::OverflowMode;
using quant::RoundingMode;

namespace {

/// The vendor's AP_INT_MAX_W default: no generated type may be wider.
constexpr int kMaxHlsWidth = 1024;
/// Terms (operands) per generated function: large layers are split into several inlined functions
/// so that a C++ compiler handles the C simulation in reasonable time.
constexpr int64_t kMaxTermsPerFunction = 4096;

const char* q_name(RoundingMode r) {
  switch (r) {
    case RoundingMode::TRN:
      return "AP_TRN";
    case RoundingMode::RND:
    case RoundingMode::S_RND:  // eval semantics
      return "AP_RND";
    case RoundingMode::RND_CONV:
      return "AP_RND_CONV";
  }
  return "AP_TRN";
}

const char* o_name(OverflowMode o) {
  switch (o) {
    case OverflowMode::WRAP:
      return "AP_WRAP";
    case OverflowMode::SAT:
      return "AP_SAT";
    case OverflowMode::SAT_SYM:
      return "AP_SAT_SYM";
  }
  return "AP_WRAP";
}

const char* ac_q_name(RoundingMode r) {
  switch (r) {
    case RoundingMode::TRN:
      return "AC_TRN";
    case RoundingMode::RND:
    case RoundingMode::S_RND:  // eval semantics
      return "AC_RND";
    case RoundingMode::RND_CONV:
      return "AC_RND_CONV";
  }
  return "AC_TRN";
}

const char* ac_o_name(OverflowMode o) {
  switch (o) {
    case OverflowMode::WRAP:
      return "AC_WRAP";
    case OverflowMode::SAT:
      return "AC_SAT";
    case OverflowMode::SAT_SYM:
      return "AC_SAT_SYM";
  }
  return "AC_WRAP";
}

/// What the dialects print differently. The generator prints the netlist once and asks this for
/// type names, table indices and pragmas; run() branches on `kind` for includes and the top
/// function's form, the project-file templates on its flags (project_vars()).
/// Vitis writes ap_fixed; Catapult and oneAPI write ac_fixed, whose rounding (AC_TRN, AC_RND,
/// AC_RND_CONV) and overflow (AC_WRAP, AC_SAT, AC_SAT_SYM) modes are the ones hgqt uses, with the
/// same semantics, except a signed 1-bit AC_SAT_SYM type (refused, see qtype()).
struct Dialect {
  HlsDialect kind;
  bool ac;          ///< ac_fixed (Catapult, oneAPI) instead of ap_fixed (Vitis)
  std::string tag;  ///< "hls", "catapult", "oneapi": the format in messages and the testbench

  explicit Dialect(HlsDialect k)
      : kind(k),
        ac(k != HlsDialect::Vitis),
        tag(k == HlsDialect::Catapult ? "catapult" : (k == HlsDialect::OneApi ? "oneapi" : "hls")) {
  }
  std::string type(const FixedType& t) const { return ac ? ac_type(t) : hls_type(t); }
  std::string type(const FixedType& t, RoundingMode r, OverflowMode o) const {
    return ac ? ac_type(t, r, o) : hls_type(t, r, o);
  }
  /// The index into a table read by the quantized value `var` of type `it`: its W bits with the
  /// sign bit flipped when signed, i.e. the mantissa minus the type's smallest. ap_fixed reads the
  /// bits with range(); ac_fixed slices them into an ac_int with slc<W>() (signed when the type
  /// is: its value plus 2^(W-1)).
  std::string index(const std::string& var, const FixedType& it) const {
    const std::string w = std::to_string(it.width);
    if (!ac) {
      std::string e = var + ".range(" + std::to_string(it.width - 1) + ", 0).to_uint()";
      if (it.is_signed) e += " ^ " + std::to_string(1u << (it.width - 1)) + "u";
      return e;
    }
    if (!it.is_signed) return var + ".slc<" + w + ">(0).to_uint()";
    return "(" + var + ".slc<" + w + ">(0).to_int() + " + std::to_string(1u << (it.width - 1)) +
           ")";
  }
  /// The lines after the opening brace of a layer function (Vitis inlines them explicitly;
  /// Catapult inlines every function not marked hls_design, oneAPI every function).
  std::string function_pragmas() const { return ac ? "" : "#pragma HLS INLINE\n"; }
  /// The lines after an array of the top function (Catapult keeps arrays below its
  /// MEM_MAP_THRESHOLD, set in build_prj.tcl, in registers; oneAPI unrolls them).
  std::string array_pragmas(const std::string& var) const {
    return ac ? "" : "#pragma HLS ARRAY_PARTITION variable=" + var + " complete dim=0\n";
  }
};

// ------------------------------------------------------------------------------- helpers
/// The smallest type holding every element of `ts` with width > 0 exactly (width 0 when none).
FixedType union_type(const std::vector<FixedType>& ts) {
  bool any = false, is_signed = false;
  for (const auto& t : ts)
    if (t.width > 0) {
      any = true;
      is_signed = is_signed || t.is_signed;
    }
  if (!any) return {};
  int frac = 0, ibits = 0;
  bool first = true;
  for (const auto& t : ts) {
    if (t.width == 0) continue;
    const int ib = t.int_bits() + (is_signed && !t.is_signed ? 1 : 0);
    frac = first ? t.frac : std::max(frac, t.frac);
    ibits = first ? ib : std::max(ibits, ib);
    first = false;
  }
  return {is_signed, ibits + frac, frac};
}

/// A comment-safe copy of a user string (layer and model names).
std::string comment_text(const std::string& s) {
  std::string out;
  for (char c : s) out += (std::isprint(static_cast<unsigned char>(c)) ? c : '?');
  return out;
}

bool is_identifier(const std::string& s) {
  if (s.empty() || !(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  return true;
}

std::string format_double(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// ------------------------------------------------------------------------- typedefs
/// Collects the typedefs of defines.h. A family is the types of one array's elements: when they
/// all agree one typedef `prefix` serves every element, otherwise each element gets
/// `prefix_<j>` (and, for arrays, `prefix` is the union type that holds them all).
class Typedefs {
 public:
  explicit Typedefs(const Dialect& d) : d_(d) {}
  /// `types[j]` is the element's type string ("" for none). Returns the per-element names.
  std::vector<std::string> family(const std::string& prefix, const std::vector<std::string>& types,
                                  const std::string& comment, const FixedType* union_t = nullptr) {
    std::set<std::string> distinct;
    for (const auto& t : types)
      if (!t.empty()) distinct.insert(t);
    std::vector<std::string> names(types.size());
    text_ += "\n// " + comment + "\n";
    if (distinct.size() <= 1) {
      if (distinct.empty()) {
        if (union_t)
          text_ += "typedef " + d_.type(FixedType{false, 1, 0}) + " " + prefix +
                   ";  // every element is 0\n";
      } else {
        text_ += "typedef " + *distinct.begin() + " " + prefix + ";\n";
      }
      for (size_t j = 0; j < types.size(); ++j)
        if (!types[j].empty()) names[j] = prefix;
      return names;
    }
    if (union_t)
      text_ +=
          "typedef " + d_.type(*union_t) + " " + prefix + ";  // holds every element exactly\n";
    for (size_t j = 0; j < types.size(); ++j) {
      if (types[j].empty()) continue;
      names[j] = prefix + "_" + std::to_string(j);
      text_ += "typedef " + types[j] + " " + names[j] + ";\n";
    }
    return names;
  }
  void single(const std::string& name, const std::string& type, const std::string& comment) {
    text_ +=
        "typedef " + type + " " + name + ";" + (comment.empty() ? "" : "  // " + comment) + "\n";
  }
  void raw(const std::string& s) { text_ += s; }
  const std::string& text() const { return text_; }

 private:
  const Dialect& d_;
  std::string text_;
};

// ------------------------------------------------------------------------- constants
/// One file written to firmware/weights/.
struct WeightFile {
  std::string file, text;
};

/// The literal of the exact value m * 2^-frac for a value of type `type_name`: one double literal
/// when |m| has at most 53 significant bits, else the sum of parts of at most 52 bits each, cast
/// to the type (each part, and their sum, is exact there). Throws ArchiveError naming `what` when
/// a part is not a finite double.
std::string constant_literal(int128 m, int frac, const std::string& type_name,
                             const std::string& what) {
  auto exact_double = [&](int128 part) {
    const double d = std::ldexp(static_cast<double>(part), -frac);
    if (!std::isfinite(d) || d == 0 || static_cast<int128>(std::ldexp(d, frac)) != part)
      throw ArchiveError("hls: " + what + " (" + archive::to_string(part) + " * 2^" +
                         std::to_string(-frac) + ") cannot be written exactly as a C++ literal");
    return exact_decimal(part, frac);
  };
  if (m == 0) return "0.0";
  if (archive::bit_span(m) <= 53) return exact_double(m);
  const unsigned __int128 mag = m < 0 ? static_cast<unsigned __int128>(0) - m : m;
  const int128 sign = m < 0 ? -1 : 1;
  constexpr int kPart = 52;
  std::vector<int128> parts;  // most significant first
  for (int at = 0; at < 128; at += kPart) {
    const unsigned __int128 part = (mag >> at) & ((static_cast<unsigned __int128>(1) << kPart) - 1);
    if (part != 0) parts.insert(parts.begin(), sign * static_cast<int128>(part << at));
  }
  std::string s = "(" + type_name + ")(";
  for (size_t p = 0; p < parts.size(); ++p)
    s += (p ? " + (" : "(") + type_name + ")" + exact_double(parts[p]);
  return s + ")";
}

/// The literal of m * 2^-frac as a value of type `type_name` in an expression.
std::string typed_literal(int128 m, int frac, const std::string& type_name,
                          const std::string& what) {
  const std::string lit = constant_literal(m, frac, type_name, what);
  return lit[0] == '(' ? lit : "(" + type_name + ")" + lit;
}

/// The exact type of one constant element (width 0 for 0).
FixedType constant_type(const Constant& c, int64_t n) {
  const int64_t m = c.mantissa[n];
  if (m == 0) return {};
  return archive::type_of_range(m, m, -c.exponent[n]);
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t d = 0; d < shape.size(); ++d) s += (d ? ", " : "") + std::to_string(shape[d]);
  return s + "]";
}

// ------------------------------------------------------------------------- the printer
using netlist::Op;
using netlist::Operand;
using netlist::OpKind;

/// A Sum term's coefficient as an exact value mant * 2^-frac (mant odd, or +-1 at frac 0).
struct Coef {
  int128 mant = 0;
  int frac = 0;
  bool one() const { return frac == 0 && (mant == 1 || mant == -1); }
};

/// The coefficient that multiplies the operand's value in a term of Sum `o`: the term adds
/// coef * m_x * 2^shift to the sum's mantissa at o.type.frac, i.e. x * coef * 2^(shift + fx - F).
Coef coefficient(const Op& o, const Operand& t, const Op& x) {
  Coef c{t.coef, o.type.frac - x.type.frac - t.shift};
  while (c.mant % 2 == 0) {
    c.mant /= 2;
    --c.frac;
  }
  return c;
}

/// One function of <name>.cpp: the live ops of one layer, or a part of them when the layer is
/// split (at most kMaxTermsPerFunction terms per part).
struct Part {
  std::vector<int32_t> ops;
};

/// The ops of one archive layer (in netlist order) and the functions printing them.
struct Group {
  size_t layer = 0;
  std::vector<Part> parts;
  std::vector<int32_t> out;  ///< ops read outside the layer (other layers, y_out): layer<L>_out
  std::vector<int32_t> tmp;  ///< ops read by another part of the layer: the wrapper's tmp
  std::string fn;            ///< layer<L>_<kind>
  std::vector<std::string> whats;  ///< its steps' descriptions, in order
};

/// Where a value computed in one function is kept for another: its group's out array (read by
/// later layers and y_out) or its tmp array (read by a later part of the same layer). Input ops
/// are read from x_in.
struct Home {
  int group = -1;
  bool tmp = false;
  int64_t index = 0;
};

class Generator {
 public:
  Generator(const archive::Archive& a, const HlsOptions& o)
      : a_(a), o_(o), d_(o.dialect), td_(d_) {}

  void run();

  std::string defines_h, parameters_h, top_h, top_cpp;
  std::vector<WeightFile> weights;
  /// The testbench's quantization of the double features, one statement per element.
  std::string tb_quantize;

 private:
  std::string label(size_t li) const {
    return "layer " + std::to_string(li) + " '" + comment_text(a_.layers[li].name) + "'";
  }
  void check_width(const FixedType& t, const std::string& what) const {
    if (t.width > kMaxHlsWidth)
      throw ArchiveError(d_.tag + ": " + what + " needs " + std::to_string(t.width) +
                         (d_.ac ? " bits, more than the generator's maximum of "
                                : " bits, more than ap_fixed's default maximum of ") +
                         std::to_string(kMaxHlsWidth));
  }
  /// The type of a quantizer's element `t` with its modes, for `what` (the layer and role).
  /// Refuses what the dialect's type library cannot express exactly: a signed 1-bit type with
  /// SAT_SYM, whose range [-max, max] is {0}, becomes -1 for negative values in ac_fixed
  /// (AC_SAT_SYM sets the minimum's lowest bit, which is the minimum itself).
  std::string qtype(const FixedType& t, RoundingMode r, OverflowMode o,
                    const std::string& what) const;
  const Op& op(int32_t id) const { return n_.ops[id]; }
  size_t layer_of(int32_t id) const { return n_.steps[op(id).step].layer; }

  void inputs();
  void liveness();
  void groups();
  void types();
  /// The summation type of Sum `o`: its own type, or a wider one when a partial sum (constant
  /// first, then the terms in order) falls outside it.
  FixedType sum_type(const Op& o) const;
  /// The typedef role of a value op (q, relu, acc, max, table, prod) and its type's text (a
  /// quantizer's with its modes).
  std::pair<const char*, std::string> value_role(const Op& o) const;
  /// Names the typedef of `type` for role `role` of layer li (registered by types()).
  const std::string& tname(size_t li, const std::string& role, const std::string& type) const {
    return names_.at(std::make_tuple(li, role, type));
  }
  void use_type(size_t li, const std::string& role, const std::string& type, const FixedType& t,
                const std::string& what);
  /// The statements computing op `id` into v<id>, reading its operands through `ref`.
  std::string statement(int32_t id, const std::function<std::string(int32_t)>& ref) const;
  std::string print_group(size_t g);
  void tables();
  void coefficients();
  void reference_weights();
  std::string output_ref(int32_t id) const;
  /// The exact type name of op `id`'s value (an Input: its input_t element type).
  std::string value_type(int32_t id) const;

  const archive::Archive& a_;
  const HlsOptions& o_;
  const Dialect d_;
  Typedefs td_;
  netlist::Netlist n_;
  std::vector<char> live_;
  std::vector<Group> groups_;
  std::vector<int> group_of_, part_of_;   ///< per op (-1: Input and Const)
  std::vector<std::vector<Home>> homes_;  ///< per op: its copies in out / tmp arrays
  std::vector<std::string> input_names_;  ///< per x_in element: its exact type name
  /// (layer, role, type string) -> typedef name; per (layer, role) the distinct types in order.
  std::map<std::tuple<size_t, std::string, std::string>, std::string> names_;
  std::map<std::pair<size_t, std::string>, std::vector<std::pair<std::string, FixedType>>> roles_;
  std::map<size_t, FixedType> coef_types_;     ///< per layer: holds every Sum coefficient
  std::map<size_t, std::vector<Coef>> coefs_;  ///< per layer: its distinct coefficients (not +-1)
  std::map<std::tuple<size_t, int128, int>, size_t> coef_index_;  ///< into coefs_
  std::vector<std::string> table_names_;                          ///< per netlist table
  std::string functions_, body_;
  std::vector<std::string> weight_includes_;
};

std::string Generator::qtype(const FixedType& t, RoundingMode r, OverflowMode o,
                             const std::string& what) const {
  if (d_.ac && o == OverflowMode::SAT_SYM && t.is_signed && t.width == 1)
    throw ArchiveError(d_.tag + ": " + what + " is a signed 1-bit SAT_SYM type (" +
                       d_.type(t, r, o) +
                       "), which ac_fixed cannot express exactly: hgqt clamps it to [-0, 0], "
                       "AC_SAT_SYM saturates negative values to -1; use SAT or WRAP there, or "
                       "one more bit");
  return d_.type(t, r, o);
}

// x_in: the model input quantized by the first quantizer (the input convention of hls.h), per
// element its quantizer type with modes (input_q_t, for the testbench) and its exact type
// (input_t, read back from x_in, whose type holds them all).
void Generator::inputs() {
  const QuantSpec& q = n_.input_quantizer;
  const size_t li = n_.input_layer;
  const std::string what = label(li) + ": the model input quantizer";
  std::vector<std::string> qtypes(q.size()), types(q.size());
  std::vector<FixedType> fts(q.size());
  for (int64_t j = 0; j < q.size(); ++j) {
    const FixedType t = archive::quantizer_type(q, j);
    if (t.width <= 0) continue;
    check_width(t, "input element " + std::to_string(j));
    qtypes[j] = qtype(t, q.round, q.overflow, what + " element " + std::to_string(j));
    types[j] = d_.type(t);
    fts[j] = t;
  }
  const auto qnames =
      td_.family("input_q_t", qtypes,
                 "The model input quantizer (" + label(li) +
                     "), per element: the testbench casts each double feature to it (rounding, "
                     "then overflow) and passes the value as input_t.");
  const FixedType u = union_type(fts);
  check_width(u, "the input type input_t");
  input_names_ = td_.family(
      "input_t", types,
      "The top function's input: features already quantized by input_q_t (exact types)", &u);
  tb_quantize.clear();
  for (int64_t j = 0; j < q.size(); ++j) {
    tb_quantize += "  in[" + std::to_string(j) + "] = ";
    tb_quantize += qnames[j].empty() ? std::string("0;  // pruned\n")
                                     : "(" + qnames[j] + ")x[" + std::to_string(j) + "];\n";
  }
}

// The ops the outputs depend on; the others (operands that folded away) print nothing.
void Generator::liveness() {
  live_.assign(n_.ops.size(), 0);
  for (int32_t id : n_.outputs) live_[id] = 1;
  for (size_t id = n_.ops.size(); id-- > 0;)
    if (live_[id])
      for (const Operand& t : n_.ops[id].in) live_[t.value] = 1;
}

// One group per layer (its live ops are contiguous in the netlist), split into parts of at most
// kMaxTermsPerFunction terms; then where each value read outside its part lives.
void Generator::groups() {
  group_of_.assign(n_.ops.size(), -1);
  part_of_.assign(n_.ops.size(), -1);
  std::vector<char> seen(a_.layers.size(), 0);
  int64_t cost = 0;
  for (size_t id = 0; id < n_.ops.size(); ++id) {
    const Op& o = n_.ops[id];
    if (!live_[id] || o.kind == OpKind::Input || o.kind == OpKind::Const) continue;
    const size_t li = layer_of(static_cast<int32_t>(id));
    if (groups_.empty() || groups_.back().layer != li) {
      if (seen[li]) throw std::logic_error("hls: the ops of " + label(li) + " are not contiguous");
      seen[li] = 1;
      Group g;
      g.layer = li;
      const Layer& l = a_.layers[li];
      g.fn = "layer" + std::to_string(li) + "_" + archive::kind_name(l.kind);
      groups_.push_back(std::move(g));
      groups_.back().parts.emplace_back();
      cost = 0;
    }
    Group& g = groups_.back();
    const std::string& what = n_.steps[o.step].what;
    if (g.whats.empty() || g.whats.back() != what) g.whats.push_back(what);
    const int64_t c = std::max<int64_t>(1, static_cast<int64_t>(o.in.size()));
    if (cost > 0 && cost + c > kMaxTermsPerFunction) {
      g.parts.emplace_back();
      cost = 0;
    }
    cost += c;
    g.parts.back().ops.push_back(static_cast<int32_t>(id));
    group_of_[id] = static_cast<int>(groups_.size() - 1);
    part_of_[id] = static_cast<int>(g.parts.size() - 1);
  }
  // out: read by another group or y_out; tmp: read by another part of its group.
  homes_.assign(n_.ops.size(), {});
  std::vector<char> in_out(n_.ops.size(), 0), in_tmp(n_.ops.size(), 0);
  for (int32_t id : n_.outputs)
    if (group_of_[id] >= 0) in_out[id] = 1;
  for (size_t id = 0; id < n_.ops.size(); ++id) {
    if (group_of_[id] < 0) continue;
    for (const Operand& t : n_.ops[id].in) {
      const int32_t v = t.value;
      if (group_of_[v] < 0) continue;
      if (group_of_[v] != group_of_[id])
        in_out[v] = 1;
      else if (part_of_[v] != part_of_[id])
        in_tmp[v] = 1;
    }
  }
  for (size_t id = 0; id < n_.ops.size(); ++id) {
    if (group_of_[id] < 0) continue;
    Group& g = groups_[group_of_[id]];
    if (in_out[id]) {
      homes_[id].push_back({group_of_[id], false, static_cast<int64_t>(g.out.size())});
      g.out.push_back(static_cast<int32_t>(id));
    }
    if (in_tmp[id]) {
      homes_[id].push_back({group_of_[id], true, static_cast<int64_t>(g.tmp.size())});
      g.tmp.push_back(static_cast<int32_t>(id));
    }
  }
}

FixedType Generator::sum_type(const Op& o) const {
  const std::string what = "the partial sums of a sum";
  int128 run_lo = o.konst, run_hi = o.konst, lo = o.konst, hi = o.konst;
  for (const Operand& t : o.in) {
    const auto [a, b] = netlist::term_range(op(t.value), t, what);
    run_lo = util::checked_add<ArchiveError>(run_lo, a, what);
    run_hi = util::checked_add<ArchiveError>(run_hi, b, what);
    lo = std::min(lo, run_lo);
    hi = std::max(hi, run_hi);
  }
  if (lo >= o.type.min_mantissa() && hi <= o.type.max_mantissa()) return o.type;
  return archive::type_of_range(lo, hi, o.type.frac);
}

void Generator::use_type(size_t li, const std::string& role, const std::string& type,
                         const FixedType& t, const std::string& what) {
  auto& v = roles_[{li, role}];
  for (const auto& e : v)
    if (e.first == type) return;
  check_width(t, what);
  v.emplace_back(type, t);
}

// The typedefs: per layer and role (the op kinds, the partial sums, the comparisons, the
// coefficients, the arrays), one per distinct type: layer<L>_<role>_t, or layer<L>_<role>_t_<k>
// when a role has several.
void Generator::types() {
  for (size_t id = 0; id < n_.ops.size(); ++id) {
    const Op& o = n_.ops[id];
    if (group_of_[id] < 0) continue;
    const size_t li = layer_of(static_cast<int32_t>(id));
    const std::string what = label(li) + " (" + n_.steps[o.step].what + ")";
    if (o.kind != OpKind::Input && o.kind != OpKind::Const) {
      const auto [role, type] = value_role(o);
      use_type(li, role, type, o.type, what);
    }
    switch (o.kind) {  // what a kind needs beyond its own type
      case OpKind::Input:
      case OpKind::Const:
        break;
      case OpKind::Quantize: {  // a type ac_fixed cannot express is refused
        const QuantSpec& q = n_.quants.at(o.quant);
        qtype(o.type, q.round, q.overflow, what + ": a quantizer element");
        break;
      }
      case OpKind::Relu:
      case OpKind::Table:
      case OpKind::Mul:
        break;
      case OpKind::Sum: {
        const FixedType s = sum_type(o);
        if (s != o.type) use_type(li, "sum", d_.type(s), s, what + " partial sums");
        for (const Operand& t : o.in) {
          const Coef c = coefficient(o, t, op(t.value));
          if (c.one()) continue;
          const auto key = std::make_tuple(li, c.mant, c.frac);
          if (coef_index_.count(key)) continue;
          coef_index_[key] = coefs_[li].size();
          coefs_[li].push_back(c);
          const FixedType ct = archive::type_of_range(c.mant, c.mant, c.frac);
          auto it = coef_types_.find(li);
          if (it == coef_types_.end())
            coef_types_[li] = ct;
          else
            it->second = union_type({it->second, ct});
        }
        break;
      }
      case OpKind::Max:
        if (o.cmp != o.type) use_type(li, "cmp", d_.type(o.cmp), o.cmp, what + " comparisons");
        break;
    }
  }
  for (auto& [li, t] : coef_types_) {
    check_width(t, label(li) + " coefficients");
    use_type(li, "coef", d_.type(t), t, label(li) + " coefficients");
  }
  for (const auto& [key, types] : roles_) {
    const std::string base = "layer" + std::to_string(key.first) + "_" + key.second + "_t";
    for (size_t k = 0; k < types.size(); ++k)
      names_[std::make_tuple(key.first, key.second, types[k].first)] =
          types.size() == 1 ? base : base + "_" + std::to_string(k);
  }
}

std::string Generator::statement(int32_t id, const std::function<std::string(int32_t)>& ref) const {
  const Op& o = op(id);
  const size_t li = layer_of(id);
  const std::string v = "v" + std::to_string(id);
  const std::string what = label(li) + " " + n_.steps[o.step].what;
  switch (o.kind) {
    case OpKind::Input:
    case OpKind::Const:
      break;
    case OpKind::Quantize: {
      const std::string t = value_type(id);
      return "  const " + t + " " + v + " = (" + t + ")" + ref(o.in[0].value) + ";\n";
    }
    case OpKind::Relu: {
      const std::string& t = tname(li, "relu", d_.type(o.type));
      const std::string x = ref(o.in[0].value);
      if (op(o.in[0].value).lo >= 0) return "  const " + t + " " + v + " = (" + t + ")" + x + ";\n";
      return "  const " + t + " " + v + " = " + x + " > 0 ? (" + t + ")" + x + " : (" + t + ")0;\n";
    }
    case OpKind::Sum: {
      // The exact sum: the constant (or 0), then one statement per term, in a type holding every
      // partial sum; the products are exact, so no intermediate rounds or overflows.
      const std::string& t = tname(li, "acc", d_.type(o.type));
      const FixedType st = sum_type(o);
      const bool wide = st != o.type;
      const std::string& s_t = wide ? tname(li, "sum", d_.type(st)) : t;
      const std::string s = wide ? "s" + std::to_string(id) : v;
      auto term = [&](const Operand& tm) {
        const Coef c = coefficient(o, tm, op(tm.value));
        const std::string x = ref(tm.value);
        if (c.one()) return std::make_pair(c.mant < 0, x);
        return std::make_pair(false, x + " * coef" + std::to_string(li) + "[" +
                                         std::to_string(coef_index_.at({li, c.mant, c.frac})) +
                                         "]");
      };
      std::string f =
          "  " + s_t + " " + s + " = " +
          (o.konst == 0 ? std::string("0") : typed_literal(o.konst, o.type.frac, s_t, what)) +
          ";\n";
      for (const Operand& tm : o.in) {
        const auto x = term(tm);
        f += "  " + s + (x.first ? " -= " : " += ") + x.second + ";\n";
      }
      if (wide) f += "  const " + t + " " + v + " = " + s + ";\n";
      return f;
    }
    case OpKind::Max: {
      // Comparisons in a type holding every operand; pruned and constant operands are one
      // constant operand.
      const std::string& t = tname(li, "max", d_.type(o.type));
      const FixedType& mt = o.cmp;
      const bool wide = mt != o.type;
      const std::string& m_t = wide ? tname(li, "cmp", d_.type(mt)) : t;
      const std::string m = wide ? "m" + std::to_string(id) : v;
      std::string f = "  " + m_t + " " + m + " = ";
      size_t k = 0;
      if (o.has_konst) {
        f += typed_literal(o.konst, o.type.frac, m_t, what) + ";\n";
      } else {
        f += "(" + m_t + ")" + ref(o.in[0].value) + ";\n";
        k = 1;
      }
      for (; k < o.in.size(); ++k) {
        const std::string x = "(" + m_t + ")" + ref(o.in[k].value);
        f += "  " + m + " = " + x + " > " + m + " ? " + x + " : " + m + ";\n";
      }
      if (wide) f += "  const " + t + " " + v + " = (" + t + ")" + m + ";\n";
      return f;
    }
    case OpKind::Table: {
      const std::string& t = tname(li, "table", d_.type(o.type));
      const FixedType& it = op(o.in[0].value).type;
      return "  const " + t + " " + v + " = " + table_names_.at(o.table) + "[" +
             d_.index(ref(o.in[0].value), it) + "];\n";
    }
    case OpKind::Mul: {
      const std::string& t = tname(li, "prod", d_.type(o.type));
      return "  const " + t + " " + v + " = " + ref(o.in[0].value) + " * " + ref(o.in[1].value) +
             ";\n";
    }
  }
  throw std::logic_error("hls: op " + std::to_string(id) + " has no statement");
}

// The lookup tables: static const arrays of the exact entries, in firmware/weights/<kind><L>.h
// of the first layer reading them (a table is written once however many elements read it).
void Generator::tables() {
  table_names_.assign(n_.tables.size(), "");
  std::map<size_t, std::string> files;  // layer -> text
  std::map<size_t, int> count;
  for (size_t id = 0; id < n_.ops.size(); ++id) {
    const Op& o = n_.ops[id];
    if (group_of_[id] < 0 || o.kind != OpKind::Table || !table_names_[o.table].empty()) continue;
    const size_t li = layer_of(static_cast<int32_t>(id));
    const netlist::Table& tb = n_.tables[o.table];
    const std::string name = "table_" + std::to_string(li) + "_" + std::to_string(count[li]++);
    table_names_[o.table] = name;
    const std::string& type = tname(li, "table", d_.type(o.type));
    std::string& tf = files[li];
    tf += "\n// " + comment_text(tb.name) + ": index " + d_.type(tb.index) + ", entries " +
          d_.type(tb.out) + "\n";
    tf += "static const " + type + " " + name + "[" + std::to_string(tb.entries.size()) + "] = {";
    for (size_t e = 0; e < tb.entries.size(); ++e) {
      tf += (e % 8 == 0) ? "\n    " : " ";
      tf += constant_literal(tb.entries[e], tb.out.frac, type,
                             comment_text(tb.name) + " entry " + std::to_string(e));
      if (e + 1 < tb.entries.size()) tf += ",";
    }
    tf += "\n};\n";
  }
  for (const auto& [li, text] : files) {
    const std::string file =
        std::string(archive::kind_name(a_.layers[li].kind)) + std::to_string(li) + ".h";
    std::string guard = "HGQT_" + file;
    for (char& c : guard) c = c == '.' ? '_' : static_cast<char>(std::toupper(c));
    guard += "_";
    std::string s = "// Lookup tables of " + label(li) +
                    ": entry e of a table is its value for the index mantissa min + e (the index's "
                    "bits, sign bit flipped when signed).\n";
    s += "#ifndef " + guard + "\n#define " + guard + "\n" + text + "\n#endif\n";
    weights.push_back({file, s});
    weight_includes_.push_back(file);
  }
}

// The distinct coefficients of each layer's sums (weights, an avg pool's 2^-s or scale, a softmax's
// constant reciprocal; not 1 and -1, which are additions): static const arrays coef<L> of their
// exact values in firmware/weights/coef<L>.h, read at constant indices (the tools fold them).
void Generator::coefficients() {
  for (const auto& [li, cs] : coefs_) {
    const std::string L = std::to_string(li), file = "coef" + L + ".h";
    const std::string& type = tname(li, "coef", d_.type(coef_types_.at(li)));
    std::string s = "// Coefficients of the sums of " + label(li) +
                    ": its distinct constant factors, " + std::to_string(cs.size()) +
                    " values of type " + type + ", exact.\n";
    s += "#ifndef HGQT_COEF" + L + "_H_\n#define HGQT_COEF" + L + "_H_\n\n";
    s += "static const " + type + " coef" + L + "[" + std::to_string(cs.size()) + "] = {";
    for (size_t k = 0; k < cs.size(); ++k) {
      s += (k % 8 == 0) ? "\n    " : " ";
      s += constant_literal(cs[k].mant, cs[k].frac, type,
                            label(li) + " coefficient " + std::to_string(k));
      if (k + 1 < cs.size()) s += ",";
    }
    s += "\n};\n\n#endif\n";
    weights.push_back({file, s});
    weight_includes_.push_back(file);
  }
}

std::string constant_file(const std::string& label, const Constant& c, const std::string& var,
                          const std::string& type_name, const std::string& what) {
  int64_t zeros = 0, imin = -1, imax = -1;
  for (int64_t n = 0; n < c.size(); ++n) {
    if (c.mantissa[n] == 0) ++zeros;
    auto less = [&](int64_t x, int64_t y) {  // exact comparison of two elements
      const int e = std::min(c.exponent[x], c.exponent[y]);
      return static_cast<int128>(c.mantissa[x]) * (static_cast<int128>(1) << (c.exponent[x] - e)) <
             static_cast<int128>(c.mantissa[y]) * (static_cast<int128>(1) << (c.exponent[y] - e));
    };
    if (imin < 0 || less(n, imin)) imin = n;
    if (imax < 0 || less(imax, n)) imax = n;
  }
  auto val = [&](int64_t n) {
    return n < 0 ? std::string("-") : exact_decimal(c.mantissa[n], -c.exponent[n]);
  };
  const std::string guard = "HGQT_" + var + "_H_";
  std::string s;
  s += "// " + what + " of " + label + "\n";
  s += "// shape " + shape_text(c.shape) + " (row-major), " + std::to_string(c.size()) +
       " values of type " + type_name + "\n";
  s += "// min " + val(imin) + ", max " + val(imax) + ", " + std::to_string(zeros) + " zeros\n";
  s += "// Each value is exactly mantissa * 2^exponent, written as its exact decimal.\n";
  s += "// For reference: the design's sums carry these values as constants (parameters.h does\n";
  s += "// not include this file).\n";
  s += "#ifndef " + guard + "\n#define " + guard + "\n\n";
  s += "static const " + type_name + " " + var + "[" + std::to_string(c.size()) + "] = {";
  for (int64_t n = 0; n < c.size(); ++n) {
    s += (n % 8 == 0) ? "\n    " : " ";
    s += constant_literal(c.mantissa[n], -c.exponent[n], type_name,
                          what + " element " + std::to_string(n) + " of " + label);
    if (n + 1 < c.size()) s += ",";
  }
  s += "\n};\n\n#endif\n";
  return s;
}

// The kernels and biases of the linear layers, as hls4ml-style headers for reference
// (firmware/weights/w<L>.h, b<L>.h, with their typedefs layer<L>_weight_t and _bias_t).
void Generator::reference_weights() {
  for (size_t li = 0; li < a_.layers.size(); ++li) {
    const Layer& l = a_.layers[li];
    if (!archive::is_linear(l.kind) || !l.kernel) continue;
    const std::string L = std::to_string(li), p = "layer" + L;
    auto write = [&](const Constant& c, const std::string& var, const std::string& role,
                     const std::string& what) {
      std::vector<FixedType> ts(c.size());
      for (int64_t n = 0; n < c.size(); ++n) ts[n] = constant_type(c, n);
      FixedType u = union_type(ts);
      if (u.width == 0) u = {false, 1, 0};
      check_width(u, label(li) + " " + what + " type");
      const std::string type = p + "_" + role + "_t";
      td_.single(type, d_.type(u),
                 what + " of " + label(li) + " (firmware/weights/" + var +
                     ".h, for reference), holds every value");
      weights.push_back({var + ".h", constant_file(label(li), c, var, type, what)});
    };
    write(*l.kernel, "w" + L, "weight", "kernel");
    if (l.bias) write(*l.bias, "b" + L, "bias", "bias");
  }
}

// A layer's function (or, when split, its parts and a wrapper calling them): its parameters
// are the arrays it reads (x_in, earlier layers' out arrays) in order of first use, then its
// out array. Every value read from an array is first read back into its exact type.
std::string Generator::print_group(size_t gi) {
  const Group& g = groups_[gi];
  const std::string L = std::to_string(g.layer);
  // The arrays the group reads, in order of first use: -1 is x_in, else a group.
  std::vector<int> srcs;
  for (const Part& p : g.parts)
    for (int32_t id : p.ops)
      for (const Operand& t : op(id).in) {
        const int32_t v = t.value;
        if (op(v).kind == OpKind::Const) continue;
        const int src = group_of_[v];
        if (src == static_cast<int>(gi)) continue;
        if (std::find(srcs.begin(), srcs.end(), src) == srcs.end()) srcs.push_back(src);
      }
  auto top_var = [&](int src) {
    return src < 0 ? std::string("x_in") : "layer" + std::to_string(groups_[src].layer) + "_out";
  };
  auto param = [&](size_t k) {
    return srcs.size() == 1 ? std::string("in") : "in" + std::to_string(k);
  };
  std::string params;
  for (size_t k = 0; k < srcs.size(); ++k) {
    const int src = srcs[k];
    const std::string type =
        src < 0 ? "input_t" : "layer" + std::to_string(groups_[src].layer) + "_t";
    const int64_t size = src < 0 ? a_.input_size() : static_cast<int64_t>(groups_[src].out.size());
    params += "const " + type + " " + param(k) + "[" + std::to_string(size) + "], ";
  }
  const std::string out_t = "layer" + L + "_t", tmp_t = "layer" + L + "_tmp_t";
  const std::string out_param = out_t + " out[" + std::to_string(g.out.size()) + "]";
  const std::string tmp_param = tmp_t + " tmp[" + std::to_string(g.tmp.size()) + "]";
  const bool split = g.parts.size() > 1;
  std::string code = "\n// " + label(g.layer) + ": ";
  for (size_t k = 0; k < g.whats.size(); ++k) code += (k ? ", " : "") + g.whats[k];
  code += "\n";
  for (size_t pi = 0; pi < g.parts.size(); ++pi) {
    const Part& p = g.parts[pi];
    std::string f;
    std::set<int32_t> known;
    std::function<std::string(int32_t)> ref = [&](int32_t v) -> std::string {
      const std::string var = "v" + std::to_string(v);
      if (known.count(v)) return var;
      const Op& x = op(v);
      std::string type, from;
      if (x.kind == OpKind::Input) {
        type = input_names_.at(x.index);
        from = param(std::find(srcs.begin(), srcs.end(), -1) - srcs.begin()) + "[" +
               std::to_string(x.index) + "]";
      } else {
        const int src = group_of_[v];
        for (const Home& h : homes_[v]) {
          if (src == static_cast<int>(gi) && h.tmp)
            from = "tmp[" + std::to_string(h.index) + "]";
          else if (src != static_cast<int>(gi) && !h.tmp)
            from = param(std::find(srcs.begin(), srcs.end(), src) - srcs.begin()) + "[" +
                   std::to_string(h.index) + "]";
        }
        if (from.empty()) throw std::logic_error("hls: op " + var + " is not passed on");
        type = value_type(v);
      }
      f += "  const " + type + " " + var + " = " + from + ";\n";
      known.insert(v);
      return var;
    };
    for (int32_t id : p.ops) {
      const std::string st = statement(id, ref);  // after the reads ref() appends to f
      f += st;
      known.insert(id);
      for (const Home& h : homes_[id])
        f += std::string("  ") + (h.tmp ? "tmp[" : "out[") + std::to_string(h.index) + "] = v" +
             std::to_string(id) + ";\n";
    }
    const std::string fn = split ? g.fn + "_part" + std::to_string(pi) : g.fn;
    code += "static void " + fn + "(" + params + (split && !g.tmp.empty() ? tmp_param + ", " : "") +
            out_param + ") {\n" + d_.function_pragmas() + f + "}\n";
  }
  if (split) {
    code += "static void " + g.fn + "(" + params + out_param + ") {\n" + d_.function_pragmas();
    std::string args;
    for (size_t k = 0; k < srcs.size(); ++k) args += param(k) + ", ";
    if (!g.tmp.empty()) {
      code +=
          "  " + tmp_t + " tmp[" + std::to_string(g.tmp.size()) + "];\n" + d_.array_pragmas("tmp");
      args += "tmp, ";
    }
    for (size_t pi = 0; pi < g.parts.size(); ++pi)
      code += "  " + g.fn + "_part" + std::to_string(pi) + "(" + args + "out);\n";
    code += "}\n";
  }
  // The call from the top function.
  const std::string out_var = "layer" + L + "_out";
  body_ += "\n  " + out_t + " " + out_var + "[" + std::to_string(g.out.size()) + "];\n";
  body_ += d_.array_pragmas(out_var);
  body_ += "  " + g.fn + "(";
  for (int src : srcs) body_ += top_var(src) + ", ";
  body_ += out_var + ");\n";
  return code;
}

std::string Generator::value_type(int32_t id) const {
  const Op& o = op(id);
  if (o.kind == OpKind::Input) return input_names_.at(o.index);
  if (o.kind == OpKind::Const) throw std::logic_error("hls: a constant has no variable");
  const auto [role, type] = value_role(o);
  return tname(layer_of(id), role, type);
}

std::pair<const char*, std::string> Generator::value_role(const Op& o) const {
  switch (o.kind) {
    case OpKind::Input:
    case OpKind::Const:
      break;
    case OpKind::Quantize: {
      const QuantSpec& q = n_.quants.at(o.quant);
      return {"q", d_.type(o.type, q.round, q.overflow)};
    }
    case OpKind::Relu:
      return {"relu", d_.type(o.type)};
    case OpKind::Sum:
      return {"acc", d_.type(o.type)};
    case OpKind::Max:
      return {"max", d_.type(o.type)};
    case OpKind::Table:
      return {"table", d_.type(o.type)};
    case OpKind::Mul:
      return {"prod", d_.type(o.type)};
  }
  throw std::logic_error("hls: an input or constant has no typedef role");
}

std::string Generator::output_ref(int32_t id) const {
  const Op& o = op(id);
  if (o.kind == OpKind::Const)
    return o.type.width == 0 || o.konst == 0
               ? std::string("0")
               : typed_literal(o.konst, o.type.frac, "result_t", "a constant output");
  if (o.kind == OpKind::Input) return "x_in[" + std::to_string(o.index) + "]";
  for (const Home& h : homes_[id])
    if (!h.tmp)
      return "layer" + std::to_string(groups_[h.group].layer) + "_out[" + std::to_string(h.index) +
             "]";
  throw std::logic_error("hls: an output is not passed on");
}

void Generator::run() {
  if (!is_identifier(o_.name))
    throw std::invalid_argument("hls: the project name '" + comment_text(o_.name) +
                                "' is not a C identifier (letters, digits, _; not starting with "
                                "a digit)");
  try {
    n_ = netlist::lower(a_);
  } catch (const ArchiveError& e) {
    throw ArchiveError(d_.tag + ": " + e.what());
  }
  inputs();
  liveness();
  groups();
  reference_weights();
  types();
  // Per layer: its typedefs, then the types of its arrays (each holds its elements exactly).
  for (const Group& g : groups_) {
    const size_t li = g.layer;
    const std::string L = std::to_string(li);
    td_.raw("\n// " + label(li) + " (" + archive::kind_name(a_.layers[li].kind) +
            "): the exact type of every value, per role\n");
    for (const auto& [key, types] : roles_) {
      if (key.first != li) continue;
      for (const auto& t : types) td_.single(tname(li, key.second, t.first), t.first, "");
    }
    auto array_type = [&](const std::vector<int32_t>& ids, const std::string& name,
                          const std::string& what) {
      std::vector<FixedType> ts;
      for (int32_t id : ids) ts.push_back(op(id).type);
      const FixedType u = union_type(ts);
      check_width(u, label(li) + " " + what);
      td_.single(name, d_.type(u), what + ", holds every element exactly");
    };
    array_type(g.out, "layer" + L + "_t", "the values read after the layer (layer" + L + "_out)");
    if (!g.tmp.empty())
      array_type(g.tmp, "layer" + L + "_tmp_t",
                 "the values one part of the layer passes to another (tmp)");
  }
  tables();
  coefficients();
  for (size_t gi = 0; gi < groups_.size(); ++gi) functions_ += print_group(gi);

  // result_t: the last layer's array type when the outputs are that array, else a type that
  // holds every output element exactly.
  std::string result_type;
  for (const Group& g : groups_)
    if (g.out == n_.outputs) result_type = "layer" + std::to_string(g.layer) + "_t";
  if (result_type.empty()) {
    std::vector<FixedType> ots;
    for (int32_t id : n_.outputs) ots.push_back(op(id).type);
    const FixedType u = union_type(ots);
    check_width(u, "the output type result_t");
    result_type = u.width > 0 ? d_.type(u) : d_.type(FixedType{false, 1, 0});
  }
  const std::string& n = o_.name;
  std::string upper;
  for (char c : n) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  const std::string model = comment_text(a_.name);

  // defines.h
  std::string d = "// Sizes and types of " + n + " (model '" + model + "'), generated by hgqt.\n";
  d += "// Every element has its exact type; arrays between layers use a type that holds all of\n";
  d += "// their elements exactly. Quantizer types carry their rounding and overflow modes.\n";
  d += "#ifndef " + upper + "_DEFINES_H_\n#define " + upper + "_DEFINES_H_\n\n";
  if (d_.kind == HlsDialect::Vitis) {
    d += "#include \"ap_fixed.h\"\n\n";
  } else if (d_.kind == HlsDialect::Catapult) {
    d += "#include <ac_fixed.h>\n\n";
  } else {
    d += "#ifdef SYCL_LANGUAGE_VERSION  // icpx -fsycl: oneAPI's ac_types\n";
    d += "#include <sycl/ext/intel/ac_types/ac_fixed.hpp>\n";
    d += "#include <sycl/ext/intel/ac_types/ac_int.hpp>\n";
    d += "#else  // C simulation with any C++ compiler and the ac_types headers\n";
    d += "#include <ac_fixed.h>\n";
    d += "#endif\n\n";
  }
  d += "#define N_INPUT " + std::to_string(a_.input_size()) + "\n";
  d += "#define N_OUTPUT " + std::to_string(a_.output_size()) + "\n";
  d += td_.text();
  d += "\n// The top function's output: holds every output element exactly.\n";
  d += "typedef " + result_type + " result_t;\n";
  d += "\n#endif\n";
  defines_h = d;

  // parameters.h
  std::string ph = "// Lookup tables and coefficients of " + n + ", generated by hgqt (the\n";
  ph +=
      "// weights are the coefficients of the sums; firmware/weights/w<L>.h and b<L>.h list each\n";
  ph += "// linear layer's kernel and bias for reference).\n";
  ph += "#ifndef " + upper + "_PARAMETERS_H_\n#define " + upper + "_PARAMETERS_H_\n\n";
  ph += "#include \"defines.h\"\n\n";
  for (const auto& w : weight_includes_) ph += "#include \"weights/" + w + "\"\n";
  ph += "\n#endif\n";
  parameters_h = ph;

  // <name>.h
  const std::string tool = d_.kind == HlsDialect::Catapult ? "Catapult HLS"
                           : d_.kind == HlsDialect::OneApi ? "oneAPI FPGA"
                                                           : "HLS";
  const std::string io = "(input_t x_in[N_INPUT], result_t y_out[N_OUTPUT])";
  // Catapult's top function is CCS_BLOCK(name): SCVerify wraps it to record the design's I/O.
  const std::string top = d_.kind == HlsDialect::Catapult ? "CCS_BLOCK(" + n + ")" : n;
  std::string h =
      "// " + n + ": " + tool + " top function of model '" + model + "', generated by hgqt.\n";
  h += "//\n";
  h += "// Input convention: x_in holds the model input already quantized by the model's input\n";
  h += "// quantizer, element j cast from the (preprocessed) feature to input_q_t_<j> (or "
       "input_q_t\n";
  h += "// when all elements share one type): rounding, then overflow, from the exact value; "
       "pruned\n";
  h += "// elements are 0. The design reads each element back in its exact type and does not\n";
  h += "// quantize it again. y_out receives the model output (each element exact in result_t),\n";
  h += "// bit-exact with hgqt's integer emulator.\n";
  if (d_.kind == HlsDialect::OneApi) {
    h += "// A plain C++ function over ac_fixed values: " + n + "_sycl.cpp calls it from a SYCL\n";
    h += "// single_task kernel, " + n + "_test.cpp (C simulation) directly.\n";
  }
  h += "#ifndef " + upper + "_H_\n#define " + upper + "_H_\n\n";
  h += "#include \"defines.h\"\n\n";
  if (d_.kind == HlsDialect::Catapult) {
    h += "// Catapult's SCVerify macros (mc_scverify.h, on Catapult's include path): CCS_BLOCK "
         "marks "
         "the\n";
    h += "// top function, CCS_MAIN, CCS_DESIGN and CCS_RETURN the testbench's main, its calls of "
         "the\n";
    h +=
        "// design and its return. Without Catapult they are plain C++, so that the C simulation\n";
    h += "// needs nothing but ac_fixed.h.\n";
    h += "#if defined(__has_include)\n#if __has_include(<mc_scverify.h>)\n";
    h += "#include <mc_scverify.h>\n#endif\n#endif\n";
    h += "#ifndef CCS_BLOCK\n#define CCS_BLOCK(f) f\n#endif\n";
    h += "#ifndef CCS_DESIGN\n#define CCS_DESIGN(f) f\n#endif\n";
    h += "#ifndef CCS_MAIN\n#define CCS_MAIN(...) int main(__VA_ARGS__)\n#endif\n";
    h += "#ifndef CCS_RETURN\n#define CCS_RETURN(x) return (x)\n#endif\n\n";
  }
  h += "void " + top + io + ";\n\n#endif\n";
  top_h = h;

  // <name>.cpp
  std::string c =
      "// " + n + ": " + tool + " implementation of model '" + model + "', generated by hgqt.\n";
  if (d_.kind == HlsDialect::Vitis) {
    c += "// io_parallel: every layer is inlined into one pipelined function; one statement per\n";
  } else if (d_.kind == HlsDialect::Catapult) {
    c += "// io_parallel: every layer is inlined into the top block, pipelined with initiation\n";
    c += "// interval 1 by build_prj.tcl; its arrays are registers; one statement per\n";
  } else {
    c += "// io_parallel: a plain function, inlined into the SYCL kernel of " + n +
         "_sycl.cpp; one statement per\n";
  }
  c += "// operation of the lowered netlist (and per term of a sum); every product and sum is\n";
  c += "// exact (see defines.h for the types).\n";
  c += "#include \"" + n + ".h\"\n#include \"parameters.h\"\n";
  c += functions_;
  c += "\n";
  if (d_.kind == HlsDialect::Catapult) c += "#pragma hls_design top\n";
  c += "void " + top + io + " {\n";
  if (d_.kind == HlsDialect::Vitis) {
    c += "#pragma HLS ARRAY_PARTITION variable=x_in complete dim=0\n";
    c += "#pragma HLS ARRAY_PARTITION variable=y_out complete dim=0\n";
    c += "#pragma HLS INTERFACE ap_vld port=x_in\n";
    c += "#pragma HLS INTERFACE ap_vld port=y_out\n";
    c += "#pragma HLS PIPELINE\n";
  }
  c += body_;
  c += "\n";
  for (size_t o = 0; o < n_.outputs.size(); ++o)
    c += "  y_out[" + std::to_string(o) + "] = " + output_ref(n_.outputs[o]) + ";\n";
  c += "}\n";
  top_cpp = c;
}

// ------------------------------------------------------------------------- project files
/// The clock frequency of a period in ns, for oneAPI's -Xsclock ("200MHz").
std::string clock_mhz(double clock_ns) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.6gMHz", 1000.0 / clock_ns);
  return buf;
}

/// The values the project-file templates (src/export/templates/hls_*, vitis_*, catapult_*,
/// oneapi_*) are filled with; every one of them gets all of these. name: the top function; tag:
/// hls, catapult or oneapi (in messages); vitis, catapult, oneapi: the dialect (flags); model: the
/// archive's model name; part: the FPGA part, technology library or device; clock_period: the
/// period in ns for Tcl (%.10g); clock_ns: the period in ns (%.17g); clock_mhz: the frequency
/// ("200MHz"); n_tb: the testbench's samples; standardized: the model standardizes its features
/// (flag); quantize: the testbench's quantization of the features, one statement per element.
util::TemplateVars project_vars(const archive::Archive& a, const HlsOptions& o,
                                const std::string& quantize, int64_t n_tb) {
  auto flag = [](bool b) { return std::string(b ? "1" : "0"); };
  char period[64];
  std::snprintf(period, sizeof period, "%.10g", o.clock_ns);
  return {{"name", o.name},
          {"tag", Dialect(o.dialect).tag},
          {"vitis", flag(o.dialect == HlsDialect::Vitis)},
          {"catapult", flag(o.dialect == HlsDialect::Catapult)},
          {"oneapi", flag(o.dialect == HlsDialect::OneApi)},
          {"model", comment_text(a.name)},
          {"part", o.part},
          {"clock_period", period},
          {"clock_ns", format_double(o.clock_ns)},
          {"clock_mhz", clock_mhz(o.clock_ns)},
          {"n_tb", std::to_string(n_tb)},
          {"standardized", flag(!a.feature_mean.empty())},
          {"quantize", quantize}};
}

}  // namespace

std::string hls_type(const FixedType& t, RoundingMode round, OverflowMode overflow) {
  if (t.width <= 0) throw std::invalid_argument("hls_type: a zero-width element has no type");
  return std::string(t.is_signed ? "ap_fixed<" : "ap_ufixed<") + std::to_string(t.width) + "," +
         std::to_string(t.int_bits()) + "," + q_name(round) + "," + o_name(overflow) + ">";
}

std::string hls_type(const FixedType& t) {
  if (t.width <= 0) throw std::invalid_argument("hls_type: a zero-width element has no type");
  return std::string(t.is_signed ? "ap_fixed<" : "ap_ufixed<") + std::to_string(t.width) + "," +
         std::to_string(t.int_bits()) + ">";
}

std::string ac_type(const FixedType& t, RoundingMode round, OverflowMode overflow) {
  if (t.width <= 0) throw std::invalid_argument("ac_type: a zero-width element has no type");
  return "ac_fixed<" + std::to_string(t.width) + "," + std::to_string(t.int_bits()) + "," +
         (t.is_signed ? "true" : "false") + "," + ac_q_name(round) + "," + ac_o_name(overflow) +
         ">";
}

std::string ac_type(const FixedType& t) {
  if (t.width <= 0) throw std::invalid_argument("ac_type: a zero-width element has no type");
  return "ac_fixed<" + std::to_string(t.width) + "," + std::to_string(t.int_bits()) + "," +
         (t.is_signed ? "true" : "false") + ">";
}

std::string exact_decimal(int128 m, int frac) {
  // Decimal digits of |m| * 2^-frac: |m| * 5^frac with the point `frac` digits from the right,
  // or |m| * 2^-frac when frac < 0. Base 10^9 limbs, least significant first.
  const bool neg = m < 0;
  unsigned __int128 mag =
      neg ? static_cast<unsigned __int128>(0) - static_cast<unsigned __int128>(m)
          : static_cast<unsigned __int128>(m);
  std::vector<uint32_t> limbs;
  constexpr uint32_t kBase = 1000000000u;
  if (mag == 0) limbs.push_back(0);
  while (mag != 0) {
    limbs.push_back(static_cast<uint32_t>(mag % kBase));
    mag /= kBase;
  }
  auto mul_small = [&](uint32_t k, int times) {
    for (int t = 0; t < times; ++t) {
      uint64_t carry = 0;
      for (auto& l : limbs) {
        const uint64_t v = static_cast<uint64_t>(l) * k + carry;
        l = static_cast<uint32_t>(v % kBase);
        carry = v / kBase;
      }
      if (carry) limbs.push_back(static_cast<uint32_t>(carry));
    }
  };
  if (frac > 0)
    mul_small(5, frac);
  else if (frac < 0)
    mul_small(2, -frac);
  std::string digits = std::to_string(limbs.back());
  for (size_t i = limbs.size() - 1; i-- > 0;) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%09u", limbs[i]);
    digits += buf;
  }
  const int point = std::max(frac, 0);
  if (static_cast<int>(digits.size()) <= point)
    digits.insert(0, static_cast<size_t>(point + 1) - digits.size(), '0');
  std::string int_part = digits.substr(0, digits.size() - point);
  std::string frac_part = digits.substr(digits.size() - point);
  while (!frac_part.empty() && frac_part.back() == '0') frac_part.pop_back();
  if (frac_part.empty()) frac_part = "0";
  const bool is_zero = int_part.find_first_not_of('0') == std::string::npos &&
                       frac_part.find_first_not_of('0') == std::string::npos;
  return (neg && !is_zero ? "-" : "") + int_part + "." + frac_part;
}

void export_hls(const archive::Archive& a, const std::string& out_dir, const HlsOptions& opts,
                const std::vector<double>& tb_inputs, int64_t n_tb) {
  const Dialect dl(opts.dialect);
  const std::string& tag = dl.tag;
  HlsOptions options = opts;
  if (options.part.empty()) options.part = default_part(options.dialect);
  if (!(options.clock_ns > 0) || !std::isfinite(options.clock_ns))
    throw std::invalid_argument(tag + ": the clock period must be a positive number of ns, got " +
                                format_double(options.clock_ns));
  // oneAPI also takes BSP:variant names.
  const std::string part_chars = std::string(
                                     "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                     "0123456789-_.") +
                                 (dl.kind == HlsDialect::OneApi ? ":" : "");
  if (options.part.find_first_not_of(part_chars) != std::string::npos)
    throw std::invalid_argument(
        tag + ": the " +
        (dl.kind == HlsDialect::Vitis      ? std::string("FPGA part '")
         : dl.kind == HlsDialect::Catapult ? std::string("technology library or part '")
                                           : std::string("FPGA device '")) +
        comment_text(options.part) + "' holds characters other than letters, digits, '-', '_'" +
        (dl.kind == HlsDialect::OneApi ? ", '.' and ':'" : " and '.'"));
  if (dl.kind == HlsDialect::OneApi && options.part.compare(0, 2, "xc") == 0)
    throw std::invalid_argument("oneapi: '" + options.part +
                                "' is a Xilinx part; give an Intel FPGA device family (Agilex7), "
                                "part number or BSP:variant");
  if (n_tb < 0) throw std::invalid_argument(tag + ": negative number of testbench samples");
  archive::Emulator emu(a);  // validates the archive
  const int64_t in = emu.input_size(), out = emu.output_size();
  if (static_cast<int64_t>(tb_inputs.size()) != n_tb * in)
    throw std::invalid_argument(tag + ": got " + std::to_string(tb_inputs.size()) +
                                " testbench input values for " + std::to_string(n_tb) +
                                " samples of " + std::to_string(in) + " features");
  Generator g(emu.archive(), options);
  g.run();

  std::vector<double> x = tb_inputs;
  int64_t n = n_tb;
  if (n == 0) {
    x.assign(in, 0.0);
    n = 1;
  }
  const std::vector<double> y = emu.run_batch(x, n);
  auto rows = [](const std::vector<double>& v, int64_t n_rows, int64_t cols) {
    std::string s;
    s.reserve(static_cast<size_t>(n_rows * cols * 12));
    char buf[40];
    for (int64_t r = 0; r < n_rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        std::snprintf(buf, sizeof buf, "%.17g", v[r * cols + c]);
        if (c) s += ' ';
        s += buf;
      }
      s += '\n';
    }
    return s;
  };

  namespace fs = std::filesystem;
  const fs::path dir(out_dir);
  const fs::path fw = dir / "firmware";
  const std::string& name = options.name;
  util::write_text_atomic((fw / "defines.h").string(), g.defines_h);
  util::write_text_atomic((fw / "parameters.h").string(), g.parameters_h);
  util::write_text_atomic((fw / (name + ".h")).string(), g.top_h);
  util::write_text_atomic((fw / (name + ".cpp")).string(), g.top_cpp);
  for (const auto& w : g.weights)
    util::write_text_atomic((fw / "weights" / w.file).string(), w.text);
  const util::TemplateVars vars = project_vars(emu.archive(), options, g.tb_quantize, n);
  auto write_project_file = [&](const std::string& file, const std::string& template_name) {
    util::write_text_atomic((dir / file).string(), render_embedded_template(template_name, vars));
  };
  write_project_file(name + "_test.cpp", "hls_testbench.cpp.tpl");
  util::write_text_atomic((dir / "tb_data" / "tb_input_features.dat").string(), rows(x, n, in));
  util::write_text_atomic((dir / "tb_data" / "tb_output_predictions.dat").string(),
                          rows(y, n, out));
  switch (options.dialect) {
    case HlsDialect::Vitis:
      write_project_file("build_prj.tcl", "vitis_build_prj.tcl.tpl");
      break;
    case HlsDialect::Catapult:
      write_project_file("build_prj.tcl", "catapult_build_prj.tcl.tpl");
      break;
    case HlsDialect::OneApi:
      write_project_file(name + "_sycl.cpp", "oneapi_sycl.cpp.tpl");
      write_project_file("CMakeLists.txt", "oneapi_CMakeLists.txt.tpl");
      break;
  }
  write_project_file("README.md", "hls_README.md.tpl");
}

std::string default_part(HlsDialect dialect) {
  switch (dialect) {
    case HlsDialect::Vitis:
      return "xcvu13p-flga2577-2-e";
    case HlsDialect::Catapult:
      return "nangate-45nm_beh";
    case HlsDialect::OneApi:
      return "Agilex7";
  }
  return "";
}

HlsDialect hls_dialect(const std::string& format) {
  if (format == "hls" || format == "vitis") return HlsDialect::Vitis;
  if (format == "catapult") return HlsDialect::Catapult;
  if (format == "oneapi") return HlsDialect::OneApi;
  throw std::invalid_argument("hls: unknown dialect '" + comment_text(format) +
                              "': expected hls (or vitis), catapult or oneapi");
}

std::vector<double> random_testbench_inputs(int64_t n, int64_t input_size) {
  if (n < 0 || input_size < 0)
    throw std::invalid_argument("testbench: needs n >= 0 samples of input_size >= 0 values, got " +
                                std::to_string(n) + " x " + std::to_string(input_size));
  std::mt19937_64 rng(1);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> x(static_cast<size_t>(n * input_size));
  for (auto& v : x) v = normal(rng);
  return x;
}

}  // namespace hgqt::exporters
