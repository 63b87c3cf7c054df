// HLS project generator (io_parallel, exact fixed-point types per element); no LibTorch. One walk
// of the archive prints one of three dialects: Vitis/Vivado HLS (ap_fixed), Siemens Catapult and
// Intel oneAPI (both ac_fixed; HlsDialect).
//
// The generated design is bit-exact with archive::Emulator (quantization.md section 8):
// - Every layer type of the archive and graphs: each computing layer writes one array
//   `layer<L>_out` of the top function and its function reads the arrays its inputs live in;
//   flatten, reshape and concatenate generate no code (references to existing elements only).
//   Linear layers (dense, conv1d, conv2d, scale) follow archive::linear_map, one statement per
//   product; add is the exact sum of its inputs; max pool compares in a type holding the whole
//   window (pruned elements are 0); avg pool is the exact sum times 2^-s. lut and softmax read
//   static const tables (firmware/weights/) indexed by the bits of the quantized value; softmax
//   gives each stage of archive::softmax_types its one type (max, d, u, e, sum, s, r, product).
// - Input convention: the top function receives the model input already quantized by the
//   model's first quantizer (the first layer in order that quantizes the float model input),
//   one `input_t` per feature (input_t holds every element's quantizer type exactly; pruned
//   features are 0). The testbench does this with each element's quantizer type
//   (`input_q_t_<j>`, rounding then overflow, from the double feature). Another layer may read
//   the float input only through an identical quantizer (it reads x_in too); otherwise
//   export_hls throws ArchiveError naming both layers.
// - Every activation element has its own exact type (typedefs `layer<L>_t_<j>`, one per element
//   where the precisions differ); arrays between layers use a union type that holds every
//   element exactly, and each element is read back into its own type.
// - Quantizers are casts to ap_fixed<W, I, AP_RND | AP_TRN | AP_RND_CONV, AP_WRAP | AP_SAT |
//   AP_SAT_SYM> (Vitis) or ac_fixed<W, I, S, AC_RND | AC_TRN | AC_RND_CONV, AC_WRAP | AC_SAT |
//   AC_SAT_SYM> (Catapult, oneAPI: the modes both libraries share, with the same semantics) of
//   the exact value. Products are exact (ap_fixed / ac_fixed result widths, which agree), each
//   accumulator has the exact type of archive::infer_types and every partial sum fits its
//   summation type, so no intermediate rounds or overflows. ac_fixed cannot express one thing
//   hgqt can produce: a signed 1-bit SAT_SYM quantizer (hgqt clamps it to 0, AC_SAT_SYM to -1);
//   the ac_fixed dialects refuse it with an ArchiveError naming the layer.
// - Weights and biases are exact decimal constants in firmware/weights/; zero weights and
//   pruned (zero-width) elements generate no arithmetic.
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
/// - firmware/defines.h (sizes and types), firmware/parameters.h and firmware/weights/*.h
///   (weights and biases, each array with its shape, type, min, max and number of zeros);
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
