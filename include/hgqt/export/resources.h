// FPGA resource estimates of the generated Verilog by Yosys synthesis (synth_xilinx), next to the
// exact EBOPs of the archive; no LibTorch.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "hgqt/archive/archive.h"

namespace hgqt::exporters {

struct YosysOptions {
  std::string yosys = "yosys";  ///< the executable
  std::string family = "xcup";  ///< synth_xilinx -family: xcup (CARRY8, DSP48E2), xcu, xc7, ...
  bool nodsp = false;           ///< synth_xilinx -nodsp: multipliers in LUTs, no DSP48
  bool keep_log = true;         ///< keep the script and the full log next to the Verilog
};

/// What `stat` reports after synth_xilinx, summed by kind.
struct ResourceReport {
  std::string top, family;
  bool nodsp = false;
  int64_t luts = 0;                            ///< LUT1 .. LUT6
  int64_t carry = 0;                           ///< CARRY4 / CARRY8
  int64_t ffs = 0;                             ///< FDRE, FDSE, FDCE, FDPE (and any other FD*)
  int64_t dsps = 0;                            ///< DSP48E1 / DSP48E2
  int64_t muxes = 0;                           ///< MUXF7 / MUXF8 / MUXF9
  int64_t srls = 0;                            ///< SRL16E / SRLC32E
  int64_t cells = 0;                           ///< all cells
  std::map<std::string, int64_t> cell_counts;  ///< per cell type
  double seconds = 0;                          ///< Yosys run time
};

/// Parses the (last) `stat` report of a Yosys log. Throws std::runtime_error when there is none.
ResourceReport parse_yosys_stat(const std::string& log);

/// Synthesizes `dir`/<top>.v with
///   yosys -p "read_verilog <top>.v; synth_xilinx -top <top> -flatten -noiopad -family F [-nodsp];
///   stat"
/// in `dir` (writing yosys_<family>[_nodsp].ys and .log there when keep_log) and parses `stat`.
/// Throws std::runtime_error naming the command and the end of the log when Yosys fails.
ResourceReport run_yosys(const std::string& dir, const std::string& top,
                         const YosysOptions& options = {});

/// A table of the resources next to the archive's exact EBOPs (per dense layer and summed) and
/// the rule of thumb EBOPs ~ LUTs + 55 * DSPs.
std::string format_resources(const ResourceReport& r, const archive::Archive& a);

}  // namespace hgqt::exporters
