// The Verilator testbench of the Verilog exporter: C++ source, build script and Makefile, filled
// into the templates src/export/templates/verilator_tb.cpp.tpl, run_verilator.sh.tpl and
// verilator_Makefile.tpl.
#include <algorithm>
#include <string>

#include "hgqt/export/templates.h"
#include "verilog_internal.h"

namespace hgqt::exporters::detail {

namespace {
// The elements of a C++ array initializer (inside its braces) of one field of the bus elements
// that are present.
template <typename F>
std::string elements(const std::vector<VerilogBusElement>& els, F field) {
  std::string s;
  int count = 0;
  for (const auto& e : els) {
    if (e.type.width == 0) continue;
    s += (count ? "," : "") + std::string(count % 16 == 0 ? "\n    " : " ") + field(e);
    ++count;
  }
  if (count == 0) s += "0";  // keeps the array non-empty; never read
  return s;
}

int64_t present(const std::vector<VerilogBusElement>& els) {
  int64_t n = 0;
  for (const auto& e : els) n += e.type.width > 0;
  return n;
}

}  // namespace

std::string verilator_testbench(const VerilogLayout& lay, const VerilogOptions& o, int latency) {
  auto lsb = [](const VerilogBusElement& e) { return std::to_string(e.lsb); };
  auto width = [](const VerilogBusElement& e) { return std::to_string(e.type.width); };
  auto sgn = [](const VerilogBusElement& e) { return std::string(e.type.is_signed ? "1" : "0"); };
  auto index = [](const VerilogBusElement& e) { return std::to_string(e.index); };
  return render_embedded_template(
      "verilator_tb.cpp.tpl", {{"name", o.name},
                               {"stages", std::to_string(latency)},
                               {"in_bits", std::to_string(std::max<int64_t>(lay.input_bits, 1))},
                               {"out_bits", std::to_string(std::max<int64_t>(lay.output_bits, 1))},
                               {"num_in", std::to_string(present(lay.inputs))},
                               {"num_out", std::to_string(present(lay.outputs))},
                               {"in_lsb", elements(lay.inputs, lsb)},
                               {"in_width", elements(lay.inputs, width)},
                               {"out_lsb", elements(lay.outputs, lsb)},
                               {"out_width", elements(lay.outputs, width)},
                               {"out_signed", elements(lay.outputs, sgn)},
                               {"out_index", elements(lay.outputs, index)}});
}

std::string verilator_script(const VerilogOptions& o, bool large) {
  return render_embedded_template(
      "run_verilator.sh.tpl",
      {{"name", o.name}, {"opt", large ? "-O0" : "-O1"}, {"large", large ? "1" : "0"}});
}

std::string verilator_makefile(const VerilogOptions& o) {
  return render_embedded_template("verilator_Makefile.tpl", {{"name", o.name}});
}

}  // namespace hgqt::exporters::detail
