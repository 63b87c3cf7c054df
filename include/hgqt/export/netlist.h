// The lowered hardware netlist of an archive: one typed list of scalar operations that the
// hardware printers (Verilog today) print, and that the tests interpret against the emulator.
// No LibTorch.
//
// lower(archive) owns, once, what every hardware back end needs from the layer graph:
//  - the float pass-through (flatten / reshape of the raw input) and the first-quantizer rule:
//    the design's input is the mantissas of the first layer (in layer order) that quantizes the
//    float model input; a later reader of the float input with the same quantizer reads them too,
//    one with a different quantizer is an ArchiveError;
//  - exact types and ranges of every value (from archive::infer_types, checked against it);
//  - pruning and constant folding: zero weights, pruned (zero-width) elements and constant
//    inputs vanish from sums (their value joins the sum's constant); an operation whose operands
//    are all constant is a constant; a product with one constant factor is a constant sum;
//  - the live terms of every linear layer (archive::linear_map) with their shifts to the
//    accumulator's frac, in checked 128-bit arithmetic;
//  - table deduplication (identical tables are one Table).
//
// Every value is an integer mantissa m at its exact FixedType (value m * 2^-frac) with the exact
// range [lo, hi] of m. Operations (Op::kind):
//   Input     mantissa of data_in element `index` (the first quantizer's output element)
//   Const     the constant `konst`
//   Quantize  Q(operand) of quantization.md section 2 with the scalar quantizer `quant`
//   Relu      max(operand, 0)
//   Sum       konst + sum over terms coef * operand * 2^shift (exact; at the op's frac)
//   Max       the largest of the operands, each shifted left by `shift` to the op's frac (and of
//             konst when has_konst)
//   Table     tables[table] at the operand's mantissa minus the smallest mantissa of its type
//   Mul       operand 0 times operand 1 (exact; frac = the sum of their fracs)
// Layers that only rearrange values (flatten, reshape, concatenate) are aliases: a later op reads
// the same value ids. Ops are in topological order (operands first); each belongs to a step (one
// stage of a layer's data flow), the unit of the printers' comments; the Sums of a linear layer
// form one constant matrix (Step::matrix), which the adder-graph pass optimizes as a whole.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "hgqt/archive/archive.h"
#include "hgqt/archive/fixed.h"

namespace hgqt::netlist {

using archive::FixedType;
using int128 = __int128;

enum class OpKind { Input, Const, Quantize, Relu, Sum, Max, Table, Mul };
const char* op_name(OpKind k);

/// An operand: value `value` (an op index) times coef, shifted left by `shift` (Sum: coef any
/// nonzero integer; Max: coef 1; other kinds: coef 1, shift 0).
struct Operand {
  int32_t value = -1;
  int128 coef = 1;
  int shift = 0;
};

struct Op {
  OpKind kind = OpKind::Const;
  FixedType type;           ///< exact type of the result
  int128 lo = 0, hi = 0;    ///< exact range of the result's mantissa (within the type)
  std::vector<Operand> in;  ///< operands (see the kinds above)
  int128 konst = 0;         ///< Const: the value; Sum: the constant term; Max: a constant operand
  bool has_konst = false;   ///< Max: konst is an operand
  int64_t index = 0;        ///< Input: the data_in element
  int32_t quant = -1;       ///< Quantize: index into Netlist::quants
  int32_t table = -1;       ///< Table: index into Netlist::tables
  int32_t step = -1;        ///< the step it belongs to (-1: Input and Const)
  /// Max: the type its comparisons work in, holding every operand's range (shifted) and konst:
  /// `type` when it does, else the smallest type that does (an operand may lie below the result).
  FixedType cmp;
};

/// A lookup table: entry e is the output mantissa for index mantissa e + index.min_mantissa()
/// (a width-0 index has one entry).
struct Table {
  FixedType index, out;
  std::vector<int64_t> entries;
  std::string name;  ///< where it comes from (layer and role), for the printers
};

struct Step {
  size_t layer = 0;     ///< archive layer index
  std::string what;     ///< "input quantizer", "products and sums", ...
  bool matrix = false;  ///< the Sums of a linear layer: one constant matrix-vector product
};

struct Netlist {
  std::string model;                       ///< archive name
  std::vector<Op> ops;                     ///< topological order
  std::vector<Step> steps;                 ///< in order; ops of a step are contiguous
  std::vector<archive::QuantSpec> quants;  ///< scalar quantizers (shape [1]), deduplicated
  std::vector<Table> tables;               ///< deduplicated
  size_t input_layer = 0;                  ///< the layer whose quantizer makes data_in
  archive::QuantSpec input_quantizer;      ///< its input quantizer (data_in holds its mantissas)
  /// Per model input element: its Input op, or a width-0 Const when pruned (absent from data_in);
  /// the op's type is the element's type.
  std::vector<int32_t> inputs;
  /// Per model output element: its op, whose type is the emulator's output type.
  std::vector<int32_t> outputs;
};

/// The exact range [lo, hi] of a Sum term's contribution coef * x * 2^shift (x the operand's op),
/// in checked arithmetic (ArchiveError naming `what` on overflow).
std::pair<int128, int128> term_range(const Op& x, const Operand& t, const std::string& what);

/// Lowers a validated archive (archive::validate, archive::infer_types). Throws ArchiveError.
Netlist lower(const archive::Archive& a);

/// The output mantissas for one sample given as data_in mantissas (one per input element; the
/// pruned elements' entries are ignored), computed by walking the ops with exact integers. Checks
/// every value against its op's range and type (std::logic_error when outside: a lowering bug).
std::vector<int128> evaluate(const Netlist& n, const std::vector<int128>& in);

}  // namespace hgqt::netlist
