// Synthesizable Verilog generator (constant multiplications, exact adder trees, per-element
// quantizers as bit slicing with rounding and overflow) and its Verilator testbench; no LibTorch.
//
// The generated top module (Verilog-2005, accepted by Verilator and Yosys):
//
//   module <name>(input clk, input rst, input valid_in, input [IN_BITS-1:0] data_in,
//                 output valid_out, output [OUT_BITS-1:0] data_out);
//
// Every layer type of the archive is supported (dense, conv1d, conv2d, scale, pool, add,
// concatenate, reshape, flatten, quantize, activation, lut, softmax) and so are graphs
// (Layer::inputs): each layer's output is a set of wires that the layers reading it use.
//
// data_in is the concatenation of the model input's quantized mantissas (the integers the first
// quantizer of the archive produces, archive::quantize_double: the first layer, in layer order,
// that quantizes the float model input: a quantize, lut or softmax layer or a linear layer's
// input quantizer, possibly behind flatten / reshape), element 0 at the least significant bits,
// each element at its own width from archive::infer_types; pruned (zero-width) elements are
// absent. An archive
// where a second layer quantizes the float model input is rejected (ArchiveError): the bus
// carries one quantizer's mantissas. data_out concatenates the output mantissas the same way (each
// at its exact type, archive::Emulator::output_types). The layout is stated in the file's header
// comment and in ports.json. With pipeline_stages = N > 0 the result of the sample presented with
// valid_in at a rising edge of clk appears on data_out with valid_out after N rising edges (latency
// N cycles, one new sample per cycle); rst is synchronous and active high and clears the valid
// pipeline. With N = 0 the module is combinational (valid_out = valid_in; clk and rst unused).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hgqt/archive/archive.h"
#include "hgqt/archive/fixed.h"

namespace hgqt::exporters {

struct VerilogOptions {
  std::string name = "myproject";  ///< top module name (a Verilog identifier)
  /// Register stages between input and output (0: combinational): the latency in cycles. The
  /// registers are placed by estimated delay (see clock_period_ns), at the shortest clock period
  /// whose placement fits; the last boundary always registers the outputs. Every path crosses
  /// every boundary once (a value read later than it is made goes through a register per
  /// boundary), so all paths have the same latency: exactly `pipeline_stages` cycles.
  int pipeline_stages = 1;
  /// How a product of a value by a constant weight is written:
  ///  - "csd": shift-and-add following the canonical signed digit (non-adjacent form)
  ///    recoding of the weight's mantissa (7 = 8 - 1: (x <<< 3) - x). The signed digits of all
  ///    products of one accumulator (the terms of archive::linear_map: dense, conv1d, conv2d,
  ///    scale) go straight into its adder tree, a balanced tree of wires at the exact width of
  ///    each partial sum's range (no product wires);
  ///  - "shared" (default): the same signed digits as "csd", but one adder graph per linear layer
  ///  over all its
  ///    accumulators (hgqt/export/adder_graph.h): two-term patterns `(x_a << ka) +/- (x_b << kb)`
  ///    that recur across accumulators are computed once, within `adder_extra_depth` extra adder
  ///    levels; each adder is a wire at the exact width of its value's range. A layer where
  ///    sharing saves no logic bits (AdderGraph::logic_bits) gets the "csd" trees (export_verilog's
  ///    report says so);
  ///  - "mul": a product wire `x * constant` per product (weights of +-2^e as shifts), summed in
  ///    one expression at the accumulator's width.
  /// Both are bit-exact with the emulator. Sums without products (add, avg pool, and an avg
  /// pool's product by its scale's mantissa) always use the exact-width adder tree; max pool is
  /// a tree of signed comparators.
  std::string const_mult = "shared";
  /// const_mult "shared": the most adder levels sharing may add to any accumulator over its
  /// minimal tree (0 to 16).
  int adder_extra_depth = 2;
  /// > 0: place registers so that no estimated path between registers exceeds this many ns (an
  /// adder-width delay model: a LUT level, 0.45 ns, per adder level plus 0.015 ns per carry bit;
  /// "shared" graphs are placed adder by adder, "csd" / "mul" sums of a layer as one unit);
  /// the latency follows (the outputs are registered), and pipeline_stages is ignored.
  double clock_period_ns = 0;
};

/// The estimated timing of a generated design.
struct VerilogTiming {
  int latency_cycles = 0;
  double clock_period_ns = 0;   ///< the target (clock_period_ns), or 0 (pipeline_stages)
  double critical_path_ns = 0;  ///< the longest estimated path between registers
  std::string critical_step;    ///< where it ends ("products and sums of layer 'd1'")
  double longest_op_ns = 0;  ///< the slowest single op (or linear layer), which no register splits
};

/// The adders of one linear layer's accumulators (const_mult "shared").
struct LayerAdders {
  std::string layer;
  bool shared = false;  ///< the shared graph was written (false: one tree per output)
  int64_t adders = 0, shared_adders = 0, adder_bits = 0;  ///< what was written
  int64_t logic_bits = 0;  ///< its adders' estimated logic bits (AdderGraph::logic_bits)
  int depth = 0;           ///< adder levels of the deepest output
  int64_t tree_adders = 0, tree_bits = 0, tree_logic_bits = 0;  ///< one tree per output
  int tree_depth = 0;
  double seconds = 0;  ///< the optimizer's time
  std::string note;    ///< why the trees were written, when they were
};

/// One element of data_in or data_out.
struct VerilogBusElement {
  int64_t index = 0;        ///< element index in the model's (flattened) input or output
  int64_t lsb = -1;         ///< first bit on the bus; -1 when absent (zero width)
  archive::FixedType type;  ///< its mantissa's type (width 0: pruned, absent from the bus)
};

/// Where every element sits on the two buses.
struct VerilogLayout {
  std::vector<VerilogBusElement> inputs, outputs;
  int64_t input_bits = 0, output_bits = 0;  ///< sums of the widths (the ports are at least 1 bit)
  std::string input_layer;                  ///< the layer whose quantizer makes the input mantissas
};

/// The bus layout of an archive (validates it and infers its types; throws ArchiveError).
VerilogLayout verilog_layout(const archive::Archive& a);

/// The Verilog source of the network alone (what export_verilog writes to <name>.v).
std::string verilog_source(const archive::Archive& a, const VerilogOptions& options);

/// Writes to `out_dir`: <name>.v (the network), ports.json (the bus layout and latency),
/// tb_<name>.cpp (a Verilator C++ testbench that streams every sample through the design, one per
/// cycle with idle cycles in between, compares each output bit-exactly, prints
/// "verilator: N samples, M mismatches" and exits non-zero on any mismatch),
/// tb_data/tb_input_mantissas.dat and tb_data/tb_output_mantissas.dat (one sample per line: the
/// quantized input mantissas on data_in and the emulator's output mantissas on data_out, in bus
/// order, decimal), run_verilator.sh and a Makefile (build with Verilator and run the testbench).
/// `tb_inputs` is row-major [n_tb, input_size], after preprocessing. Throws
/// archive::ArchiveError for a bad archive or input, std::invalid_argument for bad options,
/// std::runtime_error when a file cannot be written.
struct VerilogReport {
  int latency_cycles = 0;
  VerilogTiming timing;
  std::vector<LayerAdders> adders;  ///< const_mult "shared": each linear layer's adder graph
};
/// The table of VerilogReport::adders as printed by `hgqt export --format verilog` (empty when
/// there is none).
std::string format_adders(const VerilogReport& r);
/// One line: the latency and the estimated longest path between registers.
std::string format_timing(const VerilogReport& r);
VerilogReport export_verilog(const archive::Archive& a, const std::string& out_dir,
                             const VerilogOptions& options, const std::vector<double>& tb_inputs,
                             int64_t n_tb);

}  // namespace hgqt::exporters
