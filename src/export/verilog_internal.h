// Shared between the Verilog generator's source files (not installed).
#pragma once

#include <string>

#include "hgqt/export/verilog.h"

namespace hgqt::exporters::detail {

/// The Verilator C++ testbench for a design with this layout and latency.
std::string verilator_testbench(const VerilogLayout& layout, const VerilogOptions& options,
                                int latency);
/// run_verilator.sh: builds the testbench with Verilator and runs it on tb_data. The C++ of
/// `large` designs compiles at -O0 (three times faster to build than -O1).
std::string verilator_script(const VerilogOptions& options, bool large);
/// A Makefile wrapping run_verilator.sh.
std::string verilator_makefile(const VerilogOptions& options);

}  // namespace hgqt::exporters::detail
