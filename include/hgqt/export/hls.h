// HLS project generator (io_parallel, exact fixed-point types per value); no LibTorch. It prints
// the lowered netlist (netlist::lower, include/hgqt/export/netlist.h) in one of three dialects:
// Vitis/Vivado HLS (ap_fixed), Siemens Catapult and Intel oneAPI (both ac_fixed; HlsDialect).
//
// The generated design is bit-exact with archive::Emulator (quantization.md section 8):
// - One C++ statement per netlist op (Quantize, Relu, Sum, Max, Table, Mul), each value in a
//   variable of its op's exact type; constants are literals. Every layer and graph the lowering
//   handles is exported: the ops of one archive layer form one function `layer<L>_<kind>`
//   (split into `_part<k>` functions of at most 4,096 terms, called by it), which reads the
//   arrays earlier layers' values live in and writes the values later layers read into one
//   array `layer<L>_out` of the top function; flatten, reshape and concatenate generate no code
//   (the netlist has none: later ops read the same values).
// - Input convention: the top function receives the model input already quantized by the
//   model's first quantizer (the first layer in order that quantizes the float model input),
//   one `input_t` per feature (input_t holds every element's quantizer type exactly; pruned
//   features are 0). The testbench does this with each element's quantizer type
//   (`input_q_t_<j>`, rounding then overflow, from the double feature). Another layer may read
//   the float input only through an identical quantizer (it reads x_in too); otherwise
//   export_hls throws ArchiveError naming both layers.
// - Types: typedefs per layer and role, one per distinct type (`layer<L>_q_t`, `_acc_t`,
//   `_relu_t`, `_max_t`, `_table_t`, `_prod_t`, with `_<k>` when a role has several); arrays
//   between functions use a type that holds each of their elements exactly, and each element is
//   read back into its own type.
// - Quantize ops are casts to ap_fixed<W, I, AP_RND | AP_TRN | AP_RND_CONV, AP_WRAP | AP_SAT |
//   AP_SAT_SYM> (Vitis) or ac_fixed<W, I, S, AC_RND | AC_TRN | AC_RND_CONV, AC_WRAP | AC_SAT |
//   AC_SAT_SYM> (Catapult, oneAPI: the modes both libraries share, with the same semantics) of
//   the exact value. A Sum is its constant plus one `s += x * coef<L>[k]` per term (`+= x` or
//   `-= x` for 1 and -1), coef<L> the static const array of the layer's distinct exact
//   coefficients (firmware/weights/coef<L>.h), in a type holding every partial sum (`_sum_t`
//   when one leaves the op's range); products are exact (ap_fixed / ac_fixed result widths,
//   which agree), so no intermediate rounds or overflows. Max compares in a type holding
//   every operand (`_cmp_t`); Table reads a static const array (firmware/weights/<kind><L>.h)
//   at the index's bits (its mantissa minus the type's smallest). ac_fixed cannot express one
//   thing hgqt can produce: a signed 1-bit SAT_SYM quantizer (hgqt clamps it to 0, AC_SAT_SYM
//   to -1); the ac_fixed dialects refuse it with an ArchiveError naming the layer.
// - The weights are the sums' coefficients (coef<L>) and the biases their constants; zero
//   weights, pruned (zero-width) elements and constant operands generate no arithmetic (the
//   lowering folds them). firmware/weights/w<L>.h and b<L>.h hold each linear layer's kernel and
//   bias as exact decimal constants for reference (not included by the design).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "hgqt/archive/archive.h"
#include "hgqt/archive/fixed.h"

namespace hgqt::exporters {

/// The tool (and fixed-point type library) a generated project is written for.
enum class HlsDialect {
  Vitis,     ///< Vitis / Vivado HLS: ap_fixed; build_prj.tcl (csim, csynth, cosim, export)
  Catapult,  ///< Siemens Catapult: ac_fixed; build_prj.tcl (C simulation, synthesis, SCVerify)
  OneApi,    ///< Intel oneAPI: ac_fixed; a SYCL kernel and CMakeLists.txt (fpga_emu, report, fpga)
};

struct HlsOptions {
  std::string name = "myproject";  ///< top function and file names (a C identifier)
  HlsDialect dialect = HlsDialect::Vitis;
  /// Vitis: the FPGA part; Catapult: a technology library (nangate-45nm_beh) or a Xilinx part
  /// (xc...); oneAPI: the device of -Xstarget (family, part number or BSP:variant). Empty: the
  /// dialect's default_part().
  std::string part;
  double clock_ns = 5.0;
};

/// The default part of a dialect: xcvu13p-flga2577-2-e (Vitis), nangate-45nm_beh (Catapult),
/// Agilex7 (oneAPI).
std::string default_part(HlsDialect dialect);
/// The dialect of a format name: "hls" or "vitis", "catapult", "oneapi"; throws
/// std::invalid_argument naming the accepted names otherwise.
HlsDialect hls_dialect(const std::string& format);

/// Writes an HLS project of `options.dialect` to `out_dir`:
/// - firmware/<name>.cpp/.h: the top function `void <name>(input_t x_in[N_INPUT],
///   result_t y_out[N_OUTPUT])` (io_parallel; Vitis: PIPELINE, complete ARRAY_PARTITION, ap_vld
///   ports; Catapult: `#pragma hls_design top`, CCS_BLOCK(<name>); oneAPI: a plain function);
/// - firmware/defines.h (sizes and types), firmware/parameters.h (includes the lookup tables,
///   firmware/weights/<kind><L>.h, and coefficients, coef<L>.h) and, for reference,
///   firmware/weights/w<L>.h and b<L>.h
///   (each linear layer's kernel and bias, with shape, type, min, max and number of zeros);
/// - <name>_test.cpp: the C simulation testbench (reads tb_data, compares exactly, writes
///   tb_data/csim_results.log, prints "<hls|catapult|oneapi> testbench: N samples, M
///   mismatches", exits non-zero on any mismatch; Catapult: CCS_MAIN / CCS_DESIGN / CCS_RETURN,
///   plain C++ without Catapult's mc_scverify.h; oneAPI: plain C++, or with -DHGQT_SYCL calling
///   run_design() of <name>_sycl.cpp);
/// - tb_data/tb_input_features.dat (`tb_inputs`, row-major [n_tb, input_size], after
///   preprocessing) and tb_output_predictions.dat (the emulator's outputs); with n_tb == 0 a
///   single all-zero sample is written so that the testbench still has something to check;
/// - Vitis: build_prj.tcl (csim, csynth, cosim, export as IP); Catapult: build_prj.tcl (SCVerify
///   C simulation, go compile / libraries / assembly / architect / extract, SCVerify RTL
///   simulation); oneAPI: <name>_sycl.cpp (the SYCL single_task kernel calling <name>) and
///   CMakeLists.txt (icpx -fsycl targets fpga_emu, report, fpga_sim, fpga; csim when
///   AC_TYPES_INCLUDE is set); README.md.
/// Throws archive::ArchiveError (bad archive) or std::runtime_error / std::invalid_argument
/// naming the problem (options, sizes, files).
void export_hls(const archive::Archive& a, const std::string& out_dir, const HlsOptions& options,
                const std::vector<double>& tb_inputs, int64_t n_tb);

/// The default testbench inputs of the HLS and Verilog exports (`hgqt export` and hgqt.export
/// without testbench data): `n` rows of `input_size` standard-normal values, seed 1, row-major.
std::vector<double> random_testbench_inputs(int64_t n, int64_t input_size);

/// The HLS type of `t` with explicit modes, e.g. "ap_fixed<8,3,AP_RND,AP_SAT>" or
/// "ap_ufixed<4,-1,AP_TRN,AP_WRAP>" (S_RND is written as AP_RND, its eval semantics).
/// Throws std::invalid_argument when t.width is 0 (a pruned element has no type).
std::string hls_type(const archive::FixedType& t, quant::RoundingMode round,
                     quant::OverflowMode overflow);
/// The HLS type of `t` with the default modes (AP_TRN, AP_WRAP): "ap_fixed<8,3>".
std::string hls_type(const archive::FixedType& t);

/// The ac_fixed type of `t` with explicit modes, e.g. "ac_fixed<8,3,true,AC_RND,AC_SAT>" or
/// "ac_fixed<4,-1,false,AC_TRN,AC_WRAP>" (S_RND is written as AC_RND, its eval semantics).
/// Throws std::invalid_argument when t.width is 0.
std::string ac_type(const archive::FixedType& t, quant::RoundingMode round,
                    quant::OverflowMode overflow);
/// The ac_fixed type of `t` with the default modes (AC_TRN, AC_WRAP): "ac_fixed<8,3,true>".
std::string ac_type(const archive::FixedType& t);

/// The exact decimal expansion of m * 2^-frac (a dyadic rational always has a finite one),
/// with at least one fractional digit: "0.375", "-12.0", "1024.0".
std::string exact_decimal(archive::int128 m, int frac);

}  // namespace hgqt::exporters
