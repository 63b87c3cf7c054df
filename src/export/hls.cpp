// Vitis/Vivado HLS project generator: one statement per nonzero product, exact per-element
// ap_fixed types from archive::infer_types, quantizers as casts (see hls.h for the design).
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
using archive::LayerTypes;
using archive::QuantSpec;
using quant::OverflowMode;
using quant::RoundingMode;

namespace {

/// The vendor's AP_INT_MAX_W default: no generated type may be wider.
constexpr int kMaxHlsWidth = 1024;
/// Products per generated function: large dense layers are split into several inlined functions
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

/// What the dialects print differently. The generator walks the archive once and asks this for
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

// ------------------------------------------------------------------------------- numbers
/// Checked int128 arithmetic for the range computations.
int128 mul_checked(int128 a, int128 b, const std::string& what) {
  return util::checked_mul<ArchiveError>(a, b, "hls: " + what);
}
int128 add_checked(int128 a, int128 b, const std::string& what) {
  return util::checked_add<ArchiveError>(a, b, "hls: " + what);
}
int128 shl_checked(int128 a, int s, const std::string& what) {
  return util::checked_shl<ArchiveError>(a, s, "hls: " + what);
}

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

/// Does type t hold every mantissa in [lo, hi] (at t.frac)?
bool holds(const FixedType& t, int128 lo, int128 hi) {
  return t.width > 0 && lo >= t.min_mantissa() && hi <= t.max_mantissa();
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

// ------------------------------------------------------------------------- data flow
/// One element of an array passed between layers.
struct Value {
  bool zero = true;       ///< always 0 (pruned, or computed from zeros only): nothing is generated
  FixedType type;         ///< exact storage type (width > 0 when !zero)
  int128 lo = 0, hi = 0;  ///< value range, mantissas at type.frac
};

/// A C++ array of the top function: x_in or a layer's output, of a union type that holds each of
/// its elements exactly.
struct Source {
  std::string var;   ///< variable (or parameter) name
  std::string type;  ///< element (union) type name
  int64_t size = 0;
};

/// The values one layer passes on. Element j lives in C++ array srcs[src[j]] at index idx[j] and
/// is read back in its exact type names[j]. Layers that compute something write one new array
/// (srcs of size 1, idx the identity); the rewiring layers (flatten, reshape, concatenate) only
/// pass on references to existing arrays and generate no code.
struct Array {
  std::vector<Source> srcs;
  std::vector<int> src;
  std::vector<int64_t> idx;
  std::vector<std::string> names;  ///< per element exact type name ("" when zero)
  std::vector<Value> v;
  int64_t size() const { return static_cast<int64_t>(v.size()); }
  const std::string& var() const { return srcs.at(0).var; }
  const std::string& type() const { return srcs.at(0).type; }
};

/// A new array `var` of n elements (all zero until set).
Array new_array(const std::string& var, int64_t n) {
  Array a;
  a.srcs.push_back({var, "", n});
  a.src.assign(n, 0);
  a.idx.resize(n);
  for (int64_t j = 0; j < n; ++j) a.idx[j] = j;
  a.names.resize(n);
  a.v.resize(n);
  return a;
}

/// The parameters of a layer function: the distinct C++ arrays its input Arrays refer to, then
/// the output. A single input array is called `in`, several `in0`, `in1`, ...
class Params {
 public:
  explicit Params(const std::vector<const Array*>& ins) {
    for (const Array* a : ins)
      for (const Source& s : a->srcs)
        if (find(s.var) < 0) srcs_.push_back(s);
  }
  /// The expression of element j of `a` (one of the inputs) inside the function.
  std::string ref(const Array& a, int64_t j) const {
    return name(static_cast<size_t>(find(a.srcs[a.src[j]].var))) + "[" + std::to_string(a.idx[j]) +
           "]";
  }
  std::string signature(const std::string& fn, const Array& out, const Dialect& d) const {
    std::string s = "static void " + fn + "(";
    for (size_t k = 0; k < srcs_.size(); ++k)
      s += "const " + srcs_[k].type + " " + name(k) + "[" + std::to_string(srcs_[k].size) + "], ";
    return s + out.type() + " out[" + std::to_string(out.size()) + "]) {\n" + d.function_pragmas();
  }
  /// The argument list of a call from the top function (or from a split function's wrapper).
  std::string args(const std::string& out_var, bool inner = false) const {
    std::string s;
    for (size_t k = 0; k < srcs_.size(); ++k) s += (inner ? name(k) : srcs_[k].var) + ", ";
    return s + out_var;
  }

 private:
  std::string name(size_t k) const { return srcs_.size() == 1 ? "in" : "in" + std::to_string(k); }
  int find(const std::string& var) const {
    for (size_t k = 0; k < srcs_.size(); ++k)
      if (srcs_[k].var == var) return static_cast<int>(k);
    return -1;
  }
  std::vector<Source> srcs_;
};

Value full_range(const FixedType& t) {
  Value v;
  if (t.width <= 0) return v;
  v.zero = false;
  v.type = t;
  v.lo = t.min_mantissa();
  v.hi = t.max_mantissa();
  return v;
}

/// The mantissa m at `from` frac re-expressed at `to` >= from (checked).
int128 align_to(int128 m, int from, int to, const std::string& what) {
  if (to < from) throw ArchiveError("hls: " + what + ": a value is finer than its result type");
  return shl_checked(m, to - from, what);
}

/// One weight array written to firmware/weights/.
struct WeightFile {
  std::string file, text;
};

/// The literal of the exact value m * 2^exponent of a constant whose type is `type_name`:
/// one double literal (exact when |m| has at most 53 significant bits), else the sum of two.
std::string constant_literal(int64_t m, int32_t exponent, const std::string& type_name,
                             const std::string& what) {
  auto exact_double = [&](int128 part) {
    const double d = std::ldexp(static_cast<double>(part), exponent);
    if (!std::isfinite(d) || d == 0 || static_cast<int128>(std::ldexp(d, -exponent)) != part)
      throw ArchiveError("hls: " + what + " (" + archive::to_string(part) + " * 2^" +
                         std::to_string(exponent) + ") cannot be written exactly as a C++ literal");
    return exact_decimal(part, -exponent);
  };
  if (m == 0) return "0.0";
  if (archive::bit_span(m) <= 53) return exact_double(m);
  const int128 mag = m < 0 ? -static_cast<int128>(m) : static_cast<int128>(m);
  const int128 low = mag & ((static_cast<int128>(1) << 32) - 1), high = mag - low;
  const int128 sign = m < 0 ? -1 : 1;
  std::string s = "(" + type_name + ")((" + type_name + ")" + exact_double(sign * high);
  if (low != 0) s += " + (" + type_name + ")" + exact_double(sign * low);
  return s + ")";
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
  void check_activation(size_t li, const Layer& l) const {
    if (l.activation != "relu" && l.activation != "linear")
      throw ArchiveError("hls: " + label(li) + ": unsupported activation '" + l.activation + "'");
  }
  /// The type of a quantizer's element `t` with its modes, for `what` (the layer and role).
  /// Refuses what the dialect's type library cannot express exactly: a signed 1-bit type with
  /// SAT_SYM, whose range [-max, max] is {0}, becomes -1 for negative values in ac_fixed
  /// (AC_SAT_SYM sets the minimum's lowest bit, which is the minimum itself).
  std::string qtype(const FixedType& t, RoundingMode r, OverflowMode o,
                    const std::string& what) const;
  /// Registers the exact type names of a new array's elements (a family with a union type).
  void name_array(Array& arr, const std::string& prefix, const std::string& comment);
  /// The model input quantized by `q` (layer li reads the raw model input through it): x_in.
  const Array& model_input(size_t li, const QuantSpec& q);
  void first_quantizer(size_t li, const QuantSpec& q);
  std::vector<std::string> quantized(const QuantSpec& q, const std::string& var,
                                     const std::function<bool(int64_t)>& zero, Array& out,
                                     const std::string& what, bool check = false);
  Array quantize_layer(size_t li, const QuantSpec& q, const Array& cur);
  Array activation_layer(size_t li, const Layer& l, const Array& cur);
  Array linear_layer(size_t li, const Layer& l, const LayerTypes& t, const Array& cur,
                     bool first_q);
  Array pool_layer(size_t li, const Layer& l, const LayerTypes& t, const Array& cur);
  Array add_layer(size_t li, const Layer& l, const LayerTypes& t,
                  const std::vector<const Array*>& ins);
  Array concat_layer(size_t li, const Layer& l, const std::vector<const Array*>& ins);
  Array lut_layer(size_t li, const Layer& l, const LayerTypes& t, const Array& cur, bool first_q);
  Array softmax_layer(size_t li, const Layer& l, const LayerTypes& t, const Array& cur,
                      bool first_q);
  /// The output array of a layer with an activation and an optional output quantizer (linear
  /// layers, add) from its accumulators `acc` (types of infer_types, ranges of the generator).
  struct Outputs {
    Array out;
    std::vector<std::string> oq_names;  ///< output quantizer type per element
    std::vector<char> do_relu;          ///< relu needs a comparison
    bool relu = false, quantize = false;
  };
  Outputs outputs(size_t li, const Layer& l, const LayerTypes& t, const std::vector<Value>& acc);
  /// The statement writing output o from the accumulator variable a_var.
  static std::string output_statement(const Outputs& O, int64_t o, const std::string& a_var);
  std::string constant_file(size_t li, const Constant& c, const std::string& var,
                            const std::string& type_name, const std::string& what);
  /// Declares `out` in the top function and emits a call.
  void call(const std::string& fn, const Params& ps, const Array& out);

  const archive::Archive& a_;
  const HlsOptions& o_;
  const Dialect d_;
  Typedefs td_;
  std::string functions_;  ///< layer functions of <name>.cpp
  std::string body_;       ///< the top function's body
  std::vector<std::string> weight_includes_;
  bool have_input_ = false;  ///< x_in exists
  size_t input_layer_ = 0;   ///< the layer whose quantizer defines x_in
  Array x_in_;
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

void Generator::name_array(Array& arr, const std::string& prefix, const std::string& comment) {
  std::vector<std::string> types(arr.v.size());
  std::vector<FixedType> fts(arr.v.size());
  for (size_t j = 0; j < arr.v.size(); ++j)
    if (!arr.v[j].zero) {
      types[j] = d_.type(arr.v[j].type);
      fts[j] = arr.v[j].type;
    }
  const FixedType u = union_type(fts);
  check_width(u, comment);
  arr.names = td_.family(prefix, types, comment, &u);
  arr.srcs.at(0).type = prefix;
}

void Generator::call(const std::string& fn, const Params& ps, const Array& out) {
  body_ += "\n  " + out.type() + " " + out.var() + "[" + std::to_string(out.size()) + "];\n";
  body_ += d_.array_pragmas(out.var());
  body_ += "  " + fn + "(" + ps.args(out.var()) + ");\n";
}

// The per-element HLS types of quantizer q ("" where pruned) and the array `var` it produces:
// element j holds the quantizer's full range unless pruned or `zero(j)` (the constant 0 then).
std::vector<std::string> Generator::quantized(const QuantSpec& q, const std::string& var,
                                              const std::function<bool(int64_t)>& zero, Array& out,
                                              const std::string& what, bool check) {
  std::vector<std::string> qtypes(q.size());
  out = new_array(var, q.size());
  for (int64_t j = 0; j < q.size(); ++j) {
    const FixedType t = archive::quantizer_type(q, j);
    if (t.width <= 0) continue;
    if (check) check_width(t, "input element " + std::to_string(j));
    qtypes[j] = qtype(t, q.round, q.overflow, what + " element " + std::to_string(j));
    if (!zero(j)) out.v[j] = full_range(t);
  }
  return qtypes;
}

void Generator::first_quantizer(size_t li, const QuantSpec& q) {
  // The model input arrives quantized by this quantizer (the input convention of hls.h).
  Array in;
  const auto qtypes = quantized(
      q, "x_in", [](int64_t) { return false; }, in, label(li) + ": the model input quantizer",
      true);
  const auto qnames = td_.family(
      "input_q_t", qtypes,
      "The model input quantizer (" + label(li) +
          "), per element: the testbench casts each double feature to it (rounding, then "
          "overflow) and passes the value as input_t.");
  name_array(in, "input_t",
             "The top function's input: features already quantized by input_q_t (exact types)");
  tb_quantize.clear();
  for (int64_t j = 0; j < q.size(); ++j) {
    tb_quantize += "  in[" + std::to_string(j) + "] = ";
    tb_quantize += in.v[j].zero ? std::string("0;  // pruned\n")
                                : "(" + qnames[j] + ")x[" + std::to_string(j) + "];\n";
  }
  x_in_ = in;
  have_input_ = true;
  input_layer_ = li;
}

const Array& Generator::model_input(size_t li, const QuantSpec& q) {
  if (!have_input_) {
    first_quantizer(li, q);
    return x_in_;
  }
  // A second reader of the raw model input: fine when it applies the same quantizer.
  const QuantSpec& q0 = a_.layers[input_layer_].input_quantizer.value();
  if (q.k != q0.k || q.i != q0.i || q.f != q0.f || q.round != q0.round || q.overflow != q0.overflow)
    throw ArchiveError(
        "hls: " + label(input_layer_) + " and " + label(li) +
        " both quantize the raw model input, with different quantizers; the generated design "
        "takes the input already quantized by one quantizer (x_in), so quantize the input once "
        "(a quantize layer both read) or give them the same quantizer");
  return x_in_;
}

Array Generator::quantize_layer(size_t li, const QuantSpec& q, const Array& cur) {
  const std::string p = "layer" + std::to_string(li);
  Array out;
  const auto qtypes = quantized(
      q, p + "_out", [&](int64_t j) { return cur.v[j].zero; }, out, label(li) + ": quantizer");
  const auto qnames = td_.family(p + "_q_t", qtypes, label(li) + ": quantizer, per element");
  name_array(out, p + "_t", label(li) + ": output, per element");
  const Params ps({&cur});
  std::string f = "\n// " + label(li) + ": quantize\n" + ps.signature(p + "_quantize", out, d_);
  for (int64_t j = 0; j < q.size(); ++j) {
    const std::string js = std::to_string(j);
    if (out.v[j].zero)
      f += "  out[" + js + "] = 0;\n";
    else
      f += "  out[" + js + "] = (" + qnames[j] + ")(" + cur.names[j] + ")" + ps.ref(cur, j) + ";\n";
  }
  functions_ += f + "}\n";
  call(p + "_quantize", ps, out);
  return out;
}

Array Generator::activation_layer(size_t li, const Layer& l, const Array& cur) {
  const std::string p = "layer" + std::to_string(li);
  const QuantSpec& q = *l.output_quantizer;
  check_activation(li, l);
  const bool relu = l.activation == "relu";
  Array out;
  // Q(relu(x)) is 0 when x is 0 or cannot be positive.
  const auto qtypes = quantized(
      q, p + "_out", [&](int64_t j) { return cur.v[j].zero || (relu && cur.v[j].hi <= 0); }, out,
      label(li) + ": output quantizer");
  const auto qnames = td_.family(p + "_q_t", qtypes, label(li) + ": output quantizer, per element");
  name_array(out, p + "_t", label(li) + ": output, per element");
  const Params ps({&cur});
  std::string f = "\n// " + label(li) + ": " + l.activation + ", then the output quantizer\n" +
                  ps.signature(p + "_activation", out, d_);
  for (int64_t j = 0; j < q.size(); ++j) {
    const std::string js = std::to_string(j);
    if (out.v[j].zero) {
      f += "  out[" + js + "] = 0;\n";
      continue;
    }
    if (relu && cur.v[j].lo < 0) {
      f += "  const " + cur.names[j] + " x" + js + " = " + ps.ref(cur, j) + ";\n";
      f += "  out[" + js + "] = x" + js + " > 0 ? (" + qnames[j] + ")x" + js + " : (" + qnames[j] +
           ")0;\n";
    } else {
      f += "  out[" + js + "] = (" + qnames[j] + ")(" + cur.names[j] + ")" + ps.ref(cur, j) + ";\n";
    }
  }
  functions_ += f + "}\n";
  call(p + "_activation", ps, out);
  return out;
}

std::string Generator::constant_file(size_t li, const Constant& c, const std::string& var,
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
  s += "// " + what + " of " + label(li) + "\n";
  s += "// shape " + shape_text(c.shape) + " (row-major), " + std::to_string(c.size()) +
       " values of type " + type_name + "\n";
  s += "// min " + val(imin) + ", max " + val(imax) + ", " + std::to_string(zeros) + " zeros\n";
  s += "// Each value is exactly mantissa * 2^exponent, written as its exact decimal.\n";
  s += "#ifndef " + guard + "\n#define " + guard + "\n\n";
  s += "static const " + type_name + " " + var + "[" + std::to_string(c.size()) + "] = {";
  for (int64_t n = 0; n < c.size(); ++n) {
    s += (n % 8 == 0) ? "\n    " : " ";
    s += constant_literal(c.mantissa[n], c.exponent[n], type_name,
                          what + " element " + std::to_string(n) + " of " + label(li));
    if (n + 1 < c.size()) s += ",";
  }
  s += "\n};\n\n#endif\n";
  return s;
}

Generator::Outputs Generator::outputs(size_t li, const Layer& l, const LayerTypes& t,
                                      const std::vector<Value>& acc) {
  const std::string p = "layer" + std::to_string(li);
  const int64_t n_out = static_cast<int64_t>(acc.size());
  Outputs O;
  O.relu = l.activation == "relu";
  O.quantize = l.output_quantizer.has_value();
  O.out = new_array(p + "_out", n_out);
  O.oq_names.resize(n_out);
  O.do_relu.assign(n_out, 0);
  for (int64_t o = 0; o < n_out; ++o) {
    if (acc[o].zero) continue;
    Value v = acc[o];
    if (O.relu) {
      if (v.hi <= 0) continue;  // relu gives 0
      O.do_relu[o] = v.lo < 0;
      v.lo = std::max<int128>(v.lo, 0);
    }
    if (!O.quantize) {
      v.type = t.output[o];
      if (!holds(v.type, v.lo, v.hi))
        throw ArchiveError("hls: " + label(li) + " output " + std::to_string(o) +
                           ": inferred type " + v.type.to_string() + " does not hold its range");
      O.out.v[o] = v;
    } else {
      const FixedType qt = archive::quantizer_type(*l.output_quantizer, o);
      if (qt.width > 0) O.out.v[o] = full_range(qt);
    }
  }
  if (O.quantize) {
    const QuantSpec& q = *l.output_quantizer;
    std::vector<std::string> qtypes(n_out);
    for (int64_t o = 0; o < n_out; ++o) {
      const FixedType qt = archive::quantizer_type(q, o);
      if (qt.width > 0)
        qtypes[o] = qtype(qt, q.round, q.overflow,
                          label(li) + ": output quantizer element " + std::to_string(o));
    }
    O.oq_names = td_.family(p + "_oq_t", qtypes, label(li) + ": output quantizer, per element");
  }
  name_array(O.out, p + "_t", label(li) + ": output, per element");
  return O;
}

std::string Generator::output_statement(const Outputs& O, int64_t o, const std::string& a_var) {
  const std::string idx = "[" + std::to_string(o) + "]";
  const std::string target = O.quantize ? O.oq_names[o] : O.out.names[o];
  if (O.do_relu[o])
    return "  out" + idx + " = " + a_var + " > 0 ? (" + target + ")" + a_var + " : (" + target +
           ")0;\n";
  if (O.quantize || O.relu) return "  out" + idx + " = (" + target + ")" + a_var + ";\n";
  return "  out" + idx + " = " + a_var + ";\n";
}

Array Generator::linear_layer(size_t li, const Layer& l, const LayerTypes& t, const Array& cur,
                              bool first_q) {
  const std::string p = "layer" + std::to_string(li);
  const std::string L = std::to_string(li);
  const Constant& w = *l.kernel;
  const archive::LinearMap m = archive::linear_map(l);
  const int64_t n_in = archive::shape_size(l.input_shape), n_out = m.n_out();
  check_activation(li, l);
  if (cur.size() != n_in)
    throw ArchiveError("hls: " + label(li) + ": the layer has " + std::to_string(n_in) +
                       " inputs, it receives " + std::to_string(cur.size()));

  // Inputs: the (quantized) values the products use.
  std::vector<Value> x(n_in);
  std::vector<std::string> iq_names(n_in);
  const bool apply_iq = l.input_quantizer && !first_q;
  if (apply_iq) {
    const QuantSpec& q = *l.input_quantizer;
    std::vector<std::string> qtypes(n_in);
    for (int64_t j = 0; j < n_in; ++j) {
      const FixedType qt = archive::quantizer_type(q, j);
      if (qt.width <= 0) continue;
      qtypes[j] = qtype(qt, q.round, q.overflow,
                        label(li) + ": input quantizer element " + std::to_string(j));
      if (!cur.v[j].zero) x[j] = full_range(qt);
    }
    iq_names = td_.family(p + "_iq_t", qtypes, label(li) + ": input quantizer, per element");
  } else {
    x = cur.v;
  }

  // Weights and biases: one array each, of a type that holds every value exactly.
  std::vector<FixedType> wts(w.size());
  for (int64_t n = 0; n < w.size(); ++n) wts[n] = constant_type(w, n);
  FixedType wu = union_type(wts);
  if (wu.width == 0) wu = {false, 1, 0};
  check_width(wu, label(li) + " kernel type");
  td_.single(p + "_weight_t", d_.type(wu), "kernel of " + label(li) + ", holds every value");
  const std::string wvar = "w" + L, bvar = "b" + L;
  weights.push_back({"w" + L + ".h", constant_file(li, w, wvar, p + "_weight_t", "kernel")});
  weight_includes_.push_back("w" + L + ".h");
  const bool has_bias = l.bias.has_value();
  if (has_bias) {
    std::vector<FixedType> bts(l.bias->size());
    for (int64_t n = 0; n < l.bias->size(); ++n) bts[n] = constant_type(*l.bias, n);
    FixedType bu = union_type(bts);
    if (bu.width == 0) bu = {false, 1, 0};
    check_width(bu, label(li) + " bias type");
    td_.single(p + "_bias_t", d_.type(bu), "bias of " + label(li) + ", holds every value");
    weights.push_back({"b" + L + ".h", constant_file(li, *l.bias, bvar, p + "_bias_t", "bias")});
    weight_includes_.push_back("b" + L + ".h");
  }

  // Accumulators: exact sums over the live terms (nonzero weight, input not always 0).
  struct Acc {
    std::vector<int64_t> terms;  ///< positions k in the linear map
    int64_t bias = -1;           ///< bias element added, or -1
    bool need_sum = false;       ///< partial sums need a wider summation type
    FixedType sum_type;
  };
  std::vector<Acc> acc(n_out);
  std::vector<Value> acc_v(n_out);
  std::vector<std::string> acc_types(n_out);
  for (int64_t o = 0; o < n_out; ++o) {
    Acc& A = acc[o];
    const FixedType& at = t.accumulator[o];
    const std::string what = label(li) + " accumulator " + std::to_string(o);
    const int64_t bn = m.bias[o];
    if (has_bias && bn >= 0 && l.bias->mantissa[bn] != 0) A.bias = bn;
    for (int64_t k = m.begin[o]; k < m.begin[o + 1]; ++k)
      if (!x[m.input[k]].zero && w.mantissa[m.weight[k]] != 0) A.terms.push_back(k);
    if (A.terms.empty() && A.bias < 0) continue;  // the constant 0
    // The range of every partial sum in the order generated (bias first, then the products):
    // the summation variable holds each of them, and `s += x * w` is exact in ap_fixed.
    int128 run_lo = 0, run_hi = 0, hull_lo = 0, hull_hi = 0;
    bool first = true;
    auto add = [&](int128 lo, int128 hi) {
      run_lo = add_checked(run_lo, lo, what);
      run_hi = add_checked(run_hi, hi, what);
      hull_lo = first ? run_lo : std::min(hull_lo, run_lo);
      hull_hi = first ? run_hi : std::max(hull_hi, run_hi);
      first = false;
    };
    if (A.bias >= 0) {
      const int shift = at.frac + l.bias->exponent[A.bias];
      if (shift < 0) throw ArchiveError("hls: " + what + ": bias finer than the accumulator");
      const int128 b = shl_checked(l.bias->mantissa[A.bias], shift, what);
      add(b, b);
    }
    for (int64_t k : A.terms) {
      const int64_t j = m.input[k], wn = m.weight[k];
      const int64_t mw = w.mantissa[wn];
      const int shift = at.frac - (x[j].type.frac - w.exponent[wn]);
      if (shift < 0)
        throw ArchiveError("hls: " + what + ": a product is finer than the accumulator");
      const int128 p1 = shl_checked(mul_checked(x[j].lo, mw, what), shift, what);
      const int128 p2 = shl_checked(mul_checked(x[j].hi, mw, what), shift, what);
      add(std::min(p1, p2), std::max(p1, p2));
    }
    if (run_lo == 0 && run_hi == 0) {
      A.terms.clear();
      A.bias = -1;
      continue;
    }
    if (!holds(at, run_lo, run_hi))
      throw ArchiveError("hls: " + what + ": the inferred accumulator type " + at.to_string() +
                         " does not hold the range [" + archive::to_string(run_lo) + ", " +
                         archive::to_string(run_hi) + "] (internal error)");
    acc_v[o] = {false, at, run_lo, run_hi};
    if (!holds(at, hull_lo, hull_hi)) {
      A.need_sum = true;
      A.sum_type = archive::type_of_range(hull_lo, hull_hi, at.frac);
      check_width(A.sum_type, what + " summation type");
    }
    check_width(at, what);
    acc_types[o] = d_.type(at);
  }
  const auto acc_names =
      td_.family(p + "_acc_t", acc_types, label(li) + ": accumulators, exact (infer_types)");
  for (int64_t o = 0; o < n_out; ++o)
    if (acc[o].need_sum)
      td_.single(p + "_sum_t_" + std::to_string(o), d_.type(acc[o].sum_type),
                 "partial sums of accumulator " + std::to_string(o) + " (wider than its range)");

  // Outputs: relu, then the output quantizer.
  const Outputs O = outputs(li, l, t, acc_v);
  const Array& out = O.out;

  // The code: input reads, then one statement per product. Large layers are split into parts.
  const Params ps({&cur});
  auto read_input = [&](int64_t j) {
    const std::string js = std::to_string(j);
    if (apply_iq)
      return "  const " + iq_names[j] + " x" + js + " = (" + cur.names[j] + ")" + ps.ref(cur, j) +
             ";\n";
    return "  const " + cur.names[j] + " x" + js + " = " + ps.ref(cur, j) + ";\n";
  };
  std::vector<std::string> parts;
  std::string f;
  int64_t terms_in_part = 0;
  std::vector<bool> read(n_in, false);
  auto start_part = [&]() {
    f.clear();
    terms_in_part = 0;
    std::fill(read.begin(), read.end(), false);
  };
  start_part();
  for (int64_t o = 0; o < n_out; ++o) {
    const Acc& A = acc[o];
    const std::string os = std::to_string(o);
    if (out.v[o].zero) {
      f += "  out[" + os + "] = 0;\n";
      continue;
    }
    const int64_t n_terms = static_cast<int64_t>(A.terms.size());
    if (terms_in_part > 0 && terms_in_part + n_terms > kMaxTermsPerFunction) {
      parts.push_back(f);
      start_part();
    }
    terms_in_part += n_terms;
    for (int64_t k : A.terms) {
      const int64_t j = m.input[k];
      if (!read[j]) {
        f += read_input(j);
        read[j] = true;
      }
    }
    const std::string acc_t = acc_names[o];
    const std::string sum_t = A.need_sum ? p + "_sum_t_" + os : acc_t;
    const std::string s_var = (A.need_sum ? "s" : "a") + os;
    f += "  // output " + os + ": " + std::to_string(n_terms) + " products" +
         (A.bias >= 0 ? " + bias" : "") + "\n";
    auto product = [&](int64_t k) {
      return "x" + std::to_string(m.input[k]) + " * " + wvar + "[" + std::to_string(m.weight[k]) +
             "]";
    };
    size_t k = 0;
    if (A.bias >= 0) {
      f += "  " + sum_t + " " + s_var + " = " + bvar + "[" + std::to_string(A.bias) + "];\n";
    } else {
      f += "  " + sum_t + " " + s_var + " = " + product(A.terms[0]) + ";\n";
      k = 1;
    }
    for (; k < A.terms.size(); ++k) f += "  " + s_var + " += " + product(A.terms[k]) + ";\n";
    std::string a_var = s_var;
    if (A.need_sum) {
      a_var = "a" + os;
      f += "  const " + acc_t + " " + a_var + " = " + s_var + ";\n";
    }
    f += output_statement(O, o, a_var);
  }
  if (!f.empty() || parts.empty()) parts.push_back(f);

  const std::string kind = archive::kind_name(l.kind);
  const std::string fn = p + "_" + kind;
  std::string what = kind + " " +
                     (l.kind == LayerKind::Dense
                          ? std::to_string(n_in) + " -> " + std::to_string(n_out)
                          : shape_text(l.input_shape) + " -> " + shape_text(l.output_shape));
  if (l.kind == LayerKind::Conv1d || l.kind == LayerKind::Conv2d)
    what += ", kernel " + shape_text(l.kernel_size) + ", strides " + shape_text(l.strides) +
            ", padding before " + shape_text(l.pad_before);
  std::string code =
      "\n// " + label(li) + ": " + what + (O.relu ? ", relu" : "") +
      (l.input_quantizer ? (first_q ? ", input already quantized (x_in)" : ", input quantizer")
                         : "") +
      (O.quantize ? ", output quantizer" : "") + "\n";
  // The weights are read at constant indices from const tables: they fold into constants.
  if (parts.size() == 1) {
    code += ps.signature(fn, out, d_) + parts[0] + "}\n";
  } else {
    for (size_t pi = 0; pi < parts.size(); ++pi)
      code += ps.signature(fn + "_part" + std::to_string(pi), out, d_) + parts[pi] + "}\n";
    code += ps.signature(fn, out, d_);
    for (size_t pi = 0; pi < parts.size(); ++pi)
      code += "  " + fn + "_part" + std::to_string(pi) + "(" + ps.args("out", true) + ");\n";
    code += "}\n";
  }
  functions_ += code;
  call(fn, ps, out);
  return out;
}

Array Generator::pool_layer(size_t li, const Layer& l, const LayerTypes& t, const Array& cur) {
  const std::string p = "layer" + std::to_string(li);
  const archive::PoolMap m = archive::pool_map(l);
  const int64_t n_out = m.n_out();
  // Per output: the live window elements, and whether some element is the constant 0.
  std::vector<std::vector<int64_t>> live(n_out);
  std::vector<char> has_zero(n_out, 0);
  Array out = new_array(p + "_out", n_out);
  std::vector<std::string> win_types(n_out);
  for (int64_t o = 0; o < n_out; ++o) {
    const FixedType& at = t.accumulator[o];
    const std::string what = label(li) + " output " + std::to_string(o);
    const int frac = at.frac - (m.max ? 0 : m.shift);  // where the elements are compared / summed
    int128 lo = 0, hi = 0;
    bool first = true;
    std::vector<FixedType> wt;
    for (int64_t k = m.begin[o]; k < m.begin[o + 1]; ++k) {
      const int64_t j = m.input[k];
      int128 a = 0, b = 0;
      if (cur.v[j].zero) {
        has_zero[o] = 1;
      } else {
        live[o].push_back(j);
        wt.push_back(cur.v[j].type);
        a = align_to(cur.v[j].lo, cur.v[j].type.frac, frac, what);
        b = align_to(cur.v[j].hi, cur.v[j].type.frac, frac, what);
      }
      if (m.max) {
        lo = first ? a : std::max(lo, a);
        hi = first ? b : std::max(hi, b);
      } else {
        lo = add_checked(lo, a, what);
        hi = add_checked(hi, b, what);
      }
      first = false;
    }
    if (live[o].empty() || (lo == 0 && hi == 0)) {
      live[o].clear();
      continue;
    }
    // avg: the sum's mantissa at frac is the average's mantissa at at.frac = frac + shift.
    if (!holds(at, lo, hi))
      throw ArchiveError("hls: " + what + ": the inferred type " + at.to_string() +
                         " does not hold the range [" + archive::to_string(lo) + ", " +
                         archive::to_string(hi) + "] (internal error)");
    check_width(at, what);
    out.v[o] = {false, at, lo, hi};
    if (m.max && live[o].size() > 1) {
      const FixedType u = union_type(wt);  // holds every element (and 0)
      check_width(u, what + " comparison type");
      win_types[o] = d_.type(u);
    }
  }
  std::vector<std::string> win_names;
  if (m.max)
    win_names = td_.family(p + "_win_t", win_types,
                           label(li) + ": max pool comparisons, per window (holds each element)");
  else
    td_.single(p + "_scale_t", d_.type(FixedType{false, 1, m.shift}),
               "2^-" + std::to_string(m.shift) + ": the exact window sum times it is the average");
  name_array(out, p + "_t", label(li) + ": output, per element (exact, infer_types)");

  const Params ps({&cur});
  std::string f = "\n// " + label(li) + ": " + (m.max ? "max" : "avg") + " pool " +
                  shape_text(l.input_shape) + " -> " + shape_text(l.output_shape) + ", window " +
                  shape_text(l.kernel_size) + ", strides " + shape_text(l.strides) +
                  (m.max ? "; pruned elements are the constant 0"
                         : "; the exact sum times 2^-" + std::to_string(m.shift)) +
                  "\n" + ps.signature(p + "_pool", out, d_);
  if (!m.max) f += "  const " + p + "_scale_t scale = " + exact_decimal(1, m.shift) + ";\n";
  for (int64_t o = 0; o < n_out; ++o) {
    const std::string os = std::to_string(o);
    if (out.v[o].zero) {
      f += "  out[" + os + "] = 0;\n";
      continue;
    }
    const std::string& ot = out.names[o];
    auto elem = [&](int64_t j) { return "(" + cur.names[j] + ")" + ps.ref(cur, j); };
    if (live[o].size() == 1 && (!m.max || !has_zero[o])) {
      // max of one element (and no zero) is the element; avg of one live element.
      f += "  out[" + os + "] = (" + ot + ")" +
           (m.max ? elem(live[o][0]) : "(" + elem(live[o][0]) + " * scale)") + ";\n";
      continue;
    }
    if (m.max) {
      const std::string wtn = live[o].size() > 1 ? win_names[o] : cur.names[live[o][0]];
      const std::string mv = "m" + os;
      f += "  " + wtn + " " + mv + " = " + (has_zero[o] ? "0" : elem(live[o][0])) + ";\n";
      for (size_t k = has_zero[o] ? 0 : 1; k < live[o].size(); ++k) {
        const std::string e = "e" + os + "_" + std::to_string(k);
        f += "  const " + wtn + " " + e + " = " + elem(live[o][k]) + ";\n";
        f += "  " + mv + " = " + e + " > " + mv + " ? " + e + " : " + mv + ";\n";
      }
      f += "  out[" + os + "] = (" + ot + ")" + mv + ";\n";
    } else {
      std::string sum;
      for (size_t k = 0; k < live[o].size(); ++k) sum += (k ? " + " : "") + elem(live[o][k]);
      f += "  out[" + os + "] = (" + ot + ")((" + sum + ") * scale);\n";
    }
  }
  functions_ += f + "}\n";
  call(p + "_pool", ps, out);
  return out;
}

Array Generator::add_layer(size_t li, const Layer& l, const LayerTypes& t,
                           const std::vector<const Array*>& ins) {
  const std::string p = "layer" + std::to_string(li);
  check_activation(li, l);
  const int64_t n = static_cast<int64_t>(t.accumulator.size());
  for (const Array* a : ins)
    if (a->size() != n) throw ArchiveError("hls: " + label(li) + ": inputs of different sizes");
  std::vector<Value> acc(n);
  std::vector<std::string> acc_types(n);
  std::vector<std::vector<size_t>> live(n);
  for (int64_t o = 0; o < n; ++o) {
    const FixedType& at = t.accumulator[o];
    const std::string what = label(li) + " sum " + std::to_string(o);
    int128 lo = 0, hi = 0;
    for (size_t s = 0; s < ins.size(); ++s) {
      const Value& v = ins[s]->v[o];
      if (v.zero) continue;
      live[o].push_back(s);
      lo = add_checked(lo, align_to(v.lo, v.type.frac, at.frac, what), what);
      hi = add_checked(hi, align_to(v.hi, v.type.frac, at.frac, what), what);
    }
    if (live[o].empty() || (lo == 0 && hi == 0)) {
      live[o].clear();
      continue;
    }
    if (!holds(at, lo, hi))
      throw ArchiveError("hls: " + what + ": the inferred type " + at.to_string() +
                         " does not hold the range [" + archive::to_string(lo) + ", " +
                         archive::to_string(hi) + "] (internal error)");
    check_width(at, what);
    acc[o] = {false, at, lo, hi};
    acc_types[o] = d_.type(at);
  }
  const auto acc_names =
      td_.family(p + "_acc_t", acc_types, label(li) + ": sums, exact (infer_types)");
  const Outputs O = outputs(li, l, t, acc);
  const Params ps(ins);
  std::string f = "\n// " + label(li) + ": add of " + std::to_string(ins.size()) + " inputs " +
                  shape_text(l.output_shape) + (O.relu ? ", relu" : "") +
                  (O.quantize ? ", output quantizer" : "") + "\n" +
                  ps.signature(p + "_add", O.out, d_);
  for (int64_t o = 0; o < n; ++o) {
    const std::string os = std::to_string(o);
    if (O.out.v[o].zero) {
      f += "  out[" + os + "] = 0;\n";
      continue;
    }
    std::string sum;
    for (size_t k = 0; k < live[o].size(); ++k) {
      const Array& a = *ins[live[o][k]];
      sum += (k ? " + (" : "(") + a.names[o] + ")" + ps.ref(a, o);
    }
    f += "  const " + acc_names[o] + " a" + os + " = " + sum + ";\n";
    f += output_statement(O, o, "a" + os);
  }
  functions_ += f + "}\n";
  call(p + "_add", ps, O.out);
  return O.out;
}

Array Generator::concat_layer(size_t li, const Layer& l, const std::vector<const Array*>& ins) {
  std::vector<std::vector<int64_t>> shapes;
  for (int64_t s : archive::layer_inputs(a_, li))
    shapes.push_back(s < 0 ? a_.input_shape : a_.layers[s].output_shape);
  const archive::ConcatMap m = archive::concat_map(l, shapes);
  Array out;
  auto src_of = [&](const Source& s) {
    for (size_t k = 0; k < out.srcs.size(); ++k)
      if (out.srcs[k].var == s.var) return static_cast<int>(k);
    out.srcs.push_back(s);
    return static_cast<int>(out.srcs.size()) - 1;
  };
  for (size_t o = 0; o < m.slot.size(); ++o) {
    const Array& a = *ins.at(m.slot[o]);
    const int64_t e = m.element[o];
    out.src.push_back(src_of(a.srcs[a.src[e]]));
    out.idx.push_back(a.idx[e]);
    out.names.push_back(a.names[e]);
    out.v.push_back(a.v[e]);
  }
  return out;
}

// lut: element j reads its table at the quantized input's mantissa minus the type's minimum: the
// input's W bits (x.range(W - 1, 0)) with the sign bit inverted when signed. One static const
// table per distinct (input type, output type, contents), in firmware/weights/lut<L>.h; its
// entries are the exact output values (mantissa * 2^-f of the output quantizer).
Array Generator::lut_layer(size_t li, const Layer& l, const LayerTypes& t, const Array& cur,
                           bool first_q) {
  const std::string p = "layer" + std::to_string(li);
  const std::string L = std::to_string(li);
  const QuantSpec& iq = *l.input_quantizer;
  const int64_t n = iq.size();
  if (cur.size() != n)
    throw ArchiveError("hls: " + label(li) + ": the layer has " + std::to_string(n) +
                       " inputs, it receives " + std::to_string(cur.size()));
  const std::vector<int64_t> off = archive::lut_offsets(l);
  // The input quantizer (not for the first quantizer: x_in is already quantized).
  std::vector<std::string> iq_names(n);
  if (!first_q) {
    std::vector<std::string> qtypes(n);
    for (int64_t j = 0; j < n; ++j) {
      const FixedType qt = archive::quantizer_type(iq, j);
      if (qt.width > 0)
        qtypes[j] = qtype(qt, iq.round, iq.overflow,
                          label(li) + ": input quantizer element " + std::to_string(j));
    }
    iq_names = td_.family(p + "_iq_t", qtypes, label(li) + ": input quantizer, per element");
  }
  // Per element: a constant index (pruned or always-0 input), or the input's bits.
  Array out = new_array(p + "_out", n);
  std::vector<int64_t> const_index(n, -1);
  for (int64_t j = 0; j < n; ++j) {
    const FixedType it = archive::quantizer_type(iq, j);
    if (it.width <= 0)
      const_index[j] = 0;
    else if (cur.v[j].zero)  // Q(0) = 0
      const_index[j] = static_cast<int64_t>(-it.min_mantissa());
    const FixedType& ot = t.output[j];
    if (ot.width <= 0) continue;
    int128 lo = 0, hi = 0;
    if (const_index[j] >= 0) {
      lo = hi = l.table.at(off[j] + const_index[j]);
    } else {
      lo = hi = l.table[off[j]];
      for (int64_t e = off[j]; e < off[j + 1]; ++e) {
        lo = std::min<int128>(lo, l.table[e]);
        hi = std::max<int128>(hi, l.table[e]);
      }
    }
    if (lo == 0 && hi == 0) continue;  // always 0
    out.v[j] = {false, ot, lo, hi};
  }
  name_array(out, p + "_t", label(li) + ": output, per element");
  // The tables, deduplicated.
  std::map<std::string, std::string> tables;  // key -> name
  std::string tf = "// Lookup tables of " + label(li) + " (function '" + comment_text(l.function) +
                   "'): entry e of a table is the output for the input mantissa min + e.\n";
  const std::string guard = "HGQT_LUT" + L + "_H_";
  tf += "#ifndef " + guard + "\n#define " + guard + "\n";
  const Params ps({&cur});
  std::string f = "\n// " + label(li) + ": lookup table '" + comment_text(l.function) +
                  "' per element, indexed by the quantized input's mantissa minus its minimum\n" +
                  ps.signature(p + "_lut", out, d_);
  for (int64_t j = 0; j < n; ++j) {
    const std::string js = std::to_string(j);
    if (out.v[j].zero) {
      f += "  out[" + js + "] = 0;\n";
      continue;
    }
    const FixedType& ot = t.output[j];
    const std::string otype = d_.type(ot);
    const std::string what = label(li) + " table of element " + js;
    if (const_index[j] >= 0 || out.v[j].lo == out.v[j].hi) {
      const int64_t e = const_index[j] >= 0 ? const_index[j] : 0;
      f += "  out[" + js +
           "] = " + constant_literal(l.table.at(off[j] + e), -ot.frac, otype, what) + ";\n";
      continue;
    }
    const FixedType it = archive::quantizer_type(iq, j);
    std::string key = d_.type(it) + "|" + otype + "|";
    for (int64_t e = off[j]; e < off[j + 1]; ++e) key += std::to_string(l.table[e]) + ",";
    auto found = tables.find(key);
    if (found == tables.end()) {
      const std::string name = "table_" + L + "_" + js;
      const int64_t size = off[j + 1] - off[j];
      tf += "\n// input " + d_.type(it) + ", output " + otype + "\n";
      tf += "static const " + otype + " " + name + "[" + std::to_string(size) + "] = {";
      for (int64_t e = 0; e < size; ++e) {
        tf += (e % 8 == 0) ? "\n    " : " ";
        tf += constant_literal(l.table[off[j] + e], -ot.frac, otype, what);
        if (e + 1 < size) tf += ",";
      }
      tf += "\n};\n";
      found = tables.emplace(key, name).first;
    }
    const std::string xt = first_q ? cur.names[j] : iq_names[j];
    f += "  " + xt + " x" + js + " = ";
    f += first_q ? ps.ref(cur, j) : "(" + iq_names[j] + ")(" + cur.names[j] + ")" + ps.ref(cur, j);
    f += ";\n";
    f += "  out[" + js + "] = " + found->second + "[" + d_.index("x" + js, it) + "];\n";
  }
  tf += "\n#endif\n";
  if (!tables.empty()) {
    weights.push_back({"lut" + L + ".h", tf});
    weight_includes_.push_back("lut" + L + ".h");
  }
  functions_ += f + "}\n";
  call(p + "_lut", ps, out);
  return out;
}

// softmax: rows of n elements (the last axis), the stages of archive::softmax_types, each in its
// one type for the layer (typedefs layer<L>_max_t, _diff_t, _ei_t, _eo_t, _sum_t, _ii_t, _io_t,
// _prod_t): every quantized input read into max_t (pruned or always-0 inputs are the constant 0),
// the row max by comparisons as in max pool, d = x - max exactly, u = the exp table input
// quantizer's cast of d, e = EXP[u], the exact row sum of e, s = the reciprocal table input
// quantizer's cast of the sum, r = INV[s], p = e * r exactly, then the output quantizer's cast per
// element. The two tables are static const arrays of the exact entries in
// firmware/weights/softmax<L>.h, indexed like the lut tables by the index's bits (sign bit
// flipped when signed). What cannot vary (a zero-width stage, a row of constant-0 inputs, a
// reciprocal that is always 0) is computed here as the emulator does and written as constants.
Array Generator::softmax_layer(size_t li, const Layer& l, const LayerTypes& t, const Array& cur,
                               bool first_q) {
  const std::string p = "layer" + std::to_string(li);
  const std::string L = std::to_string(li);
  const QuantSpec& iq = *l.input_quantizer;
  const QuantSpec& oq = *l.output_quantizer;
  const QuantSpec& eiq = *l.exp_input_quantizer;
  const QuantSpec& iiq = *l.inv_input_quantizer;
  const archive::SoftmaxTypes& s = t.softmax;
  const int64_t size = iq.size();
  if (cur.size() != size || s.rows * s.n != size || oq.size() != size)
    throw ArchiveError("hls: " + label(li) + ": the layer has " + std::to_string(size) +
                       " inputs, it receives " + std::to_string(cur.size()));
  // The quantized inputs: element j is the constant 0 when pruned or always 0 (Q(0) = 0).
  std::vector<char> live(size, 0);
  std::vector<std::string> iq_names(size);
  {
    std::vector<std::string> qtypes(size);
    for (int64_t j = 0; j < size; ++j) {
      const FixedType qt = archive::quantizer_type(iq, j);
      if (qt.width <= 0) continue;
      live[j] = !cur.v[j].zero;
      if (!first_q)
        qtypes[j] = qtype(qt, iq.round, iq.overflow,
                          label(li) + ": input quantizer element " + std::to_string(j));
    }
    if (!first_q)
      iq_names = td_.family(p + "_iq_t", qtypes, label(li) + ": input quantizer, per element");
  }
  // What can vary. e varies when d, the exp table's index and its entries do; r when the
  // reciprocal table's index and entries do (else r is INV's only entry, or 0).
  const bool exp_var = s.diff.width > 0 && s.exp_in.width > 0 && s.exp_out.width > 0;
  const bool inv_var = s.inv_in.width > 0 && s.inv_out.width > 0;
  const bool all_zero = s.product.width == 0;  // every e * r is 0
  const int64_t r_const = s.inv_table.at(0);
  const std::string what = label(li) + " softmax";
  // The value of every e of a row whose d are all 0 (or whose e cannot vary).
  const int128 e_const = archive::SoftmaxTypes::entry(
      s.exp_table, s.exp_in, archive::quantize_exact(0, s.max.frac, eiq, 0));
  std::vector<char> row_var(s.rows, 0);
  bool any_var = false;
  for (int64_t r = 0; r < s.rows; ++r) {
    bool any_live = false;
    for (int64_t k = 0; k < s.n; ++k) any_live = any_live || live[r * s.n + k];
    row_var[r] = exp_var && !all_zero && any_live && (inv_var || r_const != 0);
    any_var = any_var || row_var[r];
  }
  // Outputs: the output quantizer's full range where a row varies, else the constant.
  Array out = new_array(p + "_out", size);
  std::vector<std::string> oq_types(size);
  for (int64_t r = 0; r < s.rows; ++r) {
    // A constant row: every e is e_const (d = 0, or e cannot vary), or r is always 0 (INV's
    // entries are then all 0 or it has one entry, 0), or every product is 0: in each case the
    // product is e_const * INV[Q_ii(n * e_const)].
    int128 pc = 0;
    if (!row_var[r]) {
      const int128 sum = mul_checked(e_const, s.n, what + " sum");
      const int128 si = archive::quantize_exact(sum, s.exp_out.frac, iiq, 0);
      pc = mul_checked(e_const, archive::SoftmaxTypes::entry(s.inv_table, s.inv_in, si), what);
    }
    for (int64_t k = 0; k < s.n; ++k) {
      const int64_t j = r * s.n + k;
      const FixedType qt = archive::quantizer_type(oq, j);
      if (qt.width <= 0) continue;
      check_width(qt, what + " output " + std::to_string(j));
      if (row_var[r]) {
        oq_types[j] = qtype(qt, oq.round, oq.overflow,
                            label(li) + ": output quantizer element " + std::to_string(j));
        out.v[j] = full_range(qt);
        continue;
      }
      const int128 c = archive::quantize_exact(pc, s.product.frac, oq, j);
      if (c != 0) out.v[j] = {false, qt, c, c};
    }
  }
  const auto oq_names =
      td_.family(p + "_oq_t", oq_types, label(li) + ": output quantizer, per element");
  name_array(out, p + "_t", label(li) + ": output, per element");

  // The stage types (only those a varying row uses).
  const std::string max_t = p + "_max_t", diff_t = p + "_diff_t", ei_t = p + "_ei_t",
                    eo_t = p + "_eo_t", sum_t = p + "_sum_t", ii_t = p + "_ii_t",
                    io_t = p + "_io_t", prod_t = p + "_prod_t";
  auto stage = [&](const std::string& name, const FixedType& ft, const std::string& type,
                   const std::string& comment) {
    check_width(ft, what + " " + comment);
    td_.single(name, type, comment);
  };
  if (any_var) {
    td_.raw("\n// " + label(li) +
            ": softmax stages, one type each for the layer (softmax_types)\n");
    stage(max_t, s.max, d_.type(s.max), "every quantized input at one frac, and the row max");
    stage(diff_t, s.diff, d_.type(s.diff), "d = x - max (exact)");
    stage(ei_t, s.exp_in,
          qtype(s.exp_in, eiq.round, eiq.overflow, label(li) + ": the exp table's input quantizer"),
          "u = Q_ei(d): the exp table's index");
    stage(eo_t, s.exp_out, d_.type(s.exp_out), "e = EXP[u]");
    if (inv_var) {
      stage(sum_t, s.sum, d_.type(s.sum), "the exact row sum of e");
      stage(ii_t, s.inv_in,
            qtype(s.inv_in, iiq.round, iiq.overflow,
                  label(li) + ": the reciprocal table's input quantizer"),
            "s = Q_ii(sum): the reciprocal table's index");
    }
    stage(io_t, s.inv_out, d_.type(s.inv_out), "r = INV[s]");
    stage(prod_t, s.product, d_.type(s.product), "p = e * r (exact)");
  }

  // The tables.
  auto index = [&](const std::string& var, const FixedType& it) { return d_.index(var, it); };
  const std::string exp_table = "exp_table_" + L, inv_table = "inv_table_" + L;
  if (any_var) {
    auto table = [&](const std::string& name, const std::string& type,
                     const std::vector<int64_t>& entries, int frac, const std::string& comment) {
      std::string tf = "\n// " + comment + "\n";
      tf += "static const " + type + " " + name + "[" + std::to_string(entries.size()) + "] = {";
      for (size_t e = 0; e < entries.size(); ++e) {
        tf += (e % 8 == 0) ? "\n    " : " ";
        tf += constant_literal(entries[e], -frac, type,
                               what + " " + name + " entry " + std::to_string(e));
        if (e + 1 < entries.size()) tf += ",";
      }
      return tf + "\n};\n";
    };
    const std::string guard = "HGQT_SOFTMAX" + L + "_H_";
    std::string tf =
        "// Tables of " + label(li) +
        " (softmax): entry e of a table is its value for the index mantissa min + e.\n";
    tf += "#ifndef " + guard + "\n#define " + guard + "\n";
    tf += table(exp_table, eo_t, s.exp_table, s.exp_out.frac,
                "exp: index " + ei_t + " (" + d_.type(s.exp_in) + "), entries " + eo_t + " (" +
                    d_.type(s.exp_out) + "): Q_eo(exp(min(u, 0)))");
    if (inv_var)
      tf += table(inv_table, io_t, s.inv_table, s.inv_out.frac,
                  "reciprocal: index " + ii_t + " (" + d_.type(s.inv_in) + "), entries " + io_t +
                      " (" + d_.type(s.inv_out) + "): Q_io(1 / max(s, 2^-30))");
    tf += "\n#endif\n";
    weights.push_back({"softmax" + L + ".h", tf});
    weight_includes_.push_back("softmax" + L + ".h");
  }

  // The code, row after row.
  const Params ps({&cur});
  std::string f = "\n// " + label(li) + ": softmax over rows of " + std::to_string(s.n) + " (" +
                  std::to_string(s.rows) + " rows), max-subtracted, exp and reciprocal tables" +
                  (first_q ? ", input already quantized (x_in)" : ", input quantizer") + "\n" +
                  ps.signature(p + "_softmax", out, d_);
  for (int64_t r = 0; r < s.rows; ++r) {
    const std::string rs = std::to_string(r);
    const int64_t j0 = r * s.n;
    f += "  // row " + rs + "\n";
    if (!row_var[r]) {
      for (int64_t j = j0; j < j0 + s.n; ++j) {
        const std::string js = std::to_string(j);
        f += "  out[" + js + "] = " +
             (out.v[j].zero
                  ? std::string("0")
                  : constant_literal(static_cast<int64_t>(out.v[j].lo), -out.v[j].type.frac,
                                     out.names[j], what + " output " + js)) +
             ";\n";
      }
      continue;
    }
    bool has_zero = false;
    int64_t first_live = -1;
    for (int64_t j = j0; j < j0 + s.n; ++j) {
      const std::string js = std::to_string(j);
      if (!live[j]) {
        has_zero = true;
        f += "  const " + max_t + " x" + js + " = 0;  // pruned or always 0\n";
        continue;
      }
      if (first_live < 0) first_live = j;
      f += "  const " + max_t + " x" + js + " = " +
           (first_q ? "(" + cur.names[j] + ")" + ps.ref(cur, j)
                    : "(" + iq_names[j] + ")(" + cur.names[j] + ")" + ps.ref(cur, j)) +
           ";\n";
    }
    const std::string m = "m" + rs;
    f += "  " + max_t + " " + m + " = " + (has_zero ? "0" : "x" + std::to_string(first_live)) +
         ";\n";
    for (int64_t j = j0; j < j0 + s.n; ++j) {
      if (!live[j] || (!has_zero && j == first_live)) continue;
      const std::string x = "x" + std::to_string(j);
      f += "  " + m + " = " + x + " > " + m + " ? " + x + " : " + m + ";\n";
    }
    for (int64_t j = j0; j < j0 + s.n; ++j) {
      const std::string js = std::to_string(j);
      f += "  const " + diff_t + " d" + js + " = x" + js + " - " + m + ";\n";
      f += "  " + ei_t + " u" + js + " = (" + ei_t + ")d" + js + ";\n";
      f += "  const " + eo_t + " e" + js + " = " + exp_table + "[" + index("u" + js, s.exp_in) +
           "];\n";
    }
    const std::string rv = "r" + rs;
    if (inv_var) {
      const std::string sum = "sum" + rs, si = "s" + rs;
      f += "  " + sum_t + " " + sum + " = e" + std::to_string(j0) + ";\n";
      for (int64_t j = j0 + 1; j < j0 + s.n; ++j)
        f += "  " + sum + " += e" + std::to_string(j) + ";\n";
      f += "  " + ii_t + " " + si + " = (" + ii_t + ")" + sum + ";\n";
      f += "  const " + io_t + " " + rv + " = " + inv_table + "[" + index(si, s.inv_in) + "];\n";
    } else {
      f += "  const " + io_t + " " + rv + " = " +
           constant_literal(r_const, -s.inv_out.frac, io_t, what + " reciprocal") +
           ";  // the reciprocal table's only value\n";
    }
    for (int64_t j = j0; j < j0 + s.n; ++j) {
      const std::string js = std::to_string(j);
      if (out.v[j].zero) {
        f += "  out[" + js + "] = 0;\n";
        continue;
      }
      f += "  const " + prod_t + " p" + js + " = e" + js + " * " + rv + ";\n";
      f += "  out[" + js + "] = (" + oq_names[j] + ")p" + js + ";\n";
    }
  }
  functions_ += f + "}\n";
  call(p + "_softmax", ps, out);
  return out;
}

void Generator::run() {
  if (!is_identifier(o_.name))
    throw std::invalid_argument("hls: the project name '" + comment_text(o_.name) +
                                "' is not a C identifier (letters, digits, _; not starting with "
                                "a digit)");
  const auto types = archive::infer_types(a_);
  const size_t n_layers = a_.layers.size();
  std::vector<Array> arrays(n_layers);
  // Layers whose output is still the raw (float) model input: flatten and reshape of it.
  std::vector<char> is_float(n_layers, 0);
  for (size_t li = 0; li < n_layers; ++li) {
    const Layer& l = a_.layers[li];
    const std::vector<int64_t> srcs = archive::layer_inputs(a_, li);
    const int64_t src = srcs.at(0);
    const bool in_float = src < 0 || is_float[src];
    const bool merge = l.kind == LayerKind::Add || l.kind == LayerKind::Concatenate;
    if (!in_float && !merge && arrays[src].size() != archive::shape_size(l.input_shape))
      throw ArchiveError("hls: " + label(li) + ": receives " + std::to_string(arrays[src].size()) +
                         " values, expected " + std::to_string(archive::shape_size(l.input_shape)));
    if (l.kind == LayerKind::Flatten || l.kind == LayerKind::Reshape) {
      // Row-major: the elements keep their order and types; nothing is generated.
      if (in_float)
        is_float[li] = 1;
      else
        arrays[li] = arrays[src];
      continue;
    }
    if (l.kind == LayerKind::Quantize) {
      arrays[li] = in_float ? model_input(li, *l.input_quantizer)
                            : quantize_layer(li, *l.input_quantizer, arrays[src]);
      continue;
    }
    std::vector<const Array*> ins;
    for (int64_t s : srcs) {
      if (s < 0 || is_float[s])
        if (!((archive::is_linear(l.kind) || l.kind == LayerKind::Lut ||
               l.kind == LayerKind::Softmax) &&
              l.input_quantizer))
          throw ArchiveError("hls: " + label(li) + " reads the unquantized model input");
      ins.push_back(s < 0 || is_float[s] ? nullptr : &arrays[s]);
    }
    // What a layer with an input quantizer reads: x_in when it quantizes the float model input.
    auto quantizer_input = [&]() -> const Array& {
      return in_float ? model_input(li, *l.input_quantizer) : arrays[src];
    };
    switch (l.kind) {
      case LayerKind::Flatten:
      case LayerKind::Reshape:
      case LayerKind::Quantize:
        break;  // above
      case LayerKind::Activation:
        arrays[li] = activation_layer(li, l, arrays[src]);
        break;
      case LayerKind::Pool:
        arrays[li] = pool_layer(li, l, types[li], arrays[src]);
        break;
      case LayerKind::Add:
        arrays[li] = add_layer(li, l, types[li], ins);
        break;
      case LayerKind::Concatenate:
        arrays[li] = concat_layer(li, l, ins);
        break;
      case LayerKind::Lut:
        arrays[li] = lut_layer(li, l, types[li], quantizer_input(), in_float);
        break;
      case LayerKind::Softmax:
        arrays[li] = softmax_layer(li, l, types[li], quantizer_input(), in_float);
        break;
      case LayerKind::Dense:
      case LayerKind::Conv1d:
      case LayerKind::Conv2d:
      case LayerKind::Scale:
        arrays[li] = linear_layer(li, l, types[li], quantizer_input(), in_float);
        break;
    }
  }
  if (!have_input_ || n_layers == 0 || is_float.back())
    throw ArchiveError("hls: the model has no quantizer");
  const Array& cur = arrays.back();
  if (cur.size() != a_.output_size())
    throw ArchiveError("hls: the last layer gives " + std::to_string(cur.size()) +
                       " values, the model's output_size is " + std::to_string(a_.output_size()));
  // result_t: the last array's type, or (when the output refers to several arrays or only part
  // of one) a type that holds every output element exactly.
  bool identity = cur.srcs.size() == 1 && cur.srcs[0].size == cur.size();
  for (int64_t o = 0; identity && o < cur.size(); ++o) identity = cur.idx[o] == o;
  std::string result_type = identity ? cur.type() : "";
  if (!identity) {
    std::vector<FixedType> ots;
    for (const Value& v : cur.v)
      if (!v.zero) ots.push_back(v.type);
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
  std::string ph = "// Weights and biases of " + n + ", generated by hgqt.\n";
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
  c += "// nonzero product; every product and sum is exact (see defines.h for the types).\n";
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
  for (int64_t o = 0; o < cur.size(); ++o) {
    const std::string os = std::to_string(o);
    c += "  y_out[" + os + "] = " +
         (cur.v[o].zero ? std::string("0")
                        : cur.srcs[cur.src[o]].var + "[" + std::to_string(cur.idx[o]) + "]") +
         ";\n";
  }
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
