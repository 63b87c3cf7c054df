// The Verilog exporter: Verilator simulations of random archives against the integer emulator
// (bit-exact, with overflowing inputs, for combinational and pipelined designs), the bus layout,
// and the Yosys resource report.
#include "hgqt/export/verilog.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>
#include <string>

#include "hgqt/archive/emulator.h"
#include "hgqt/export/resources.h"
#include "support/process.h"
#include "support/random_archive.h"

using namespace hgqt;
namespace fs = std::filesystem;
using hgqt::testing::on_path;
using hgqt::testing::read_text;
using hgqt::testing::run_command;

namespace {
// Runs a shell command, stdout and stderr together.
fs::path fresh_dir(const std::string& name) {
  return hgqt::testing::fresh_test_dir("verilog_test_tmp", name, true);
}

// "verilator: N samples, M mismatches" -> {N, M}; {-1, -1} when absent.
std::pair<long, long> verilator_counts(const std::string& out) {
  std::smatch m;
  if (!std::regex_search(out, m, std::regex("verilator: (\\d+) samples, (\\d+) mismatches")))
    return {-1, -1};
  return {std::stol(m[1]), std::stol(m[2])};
}

std::vector<double> concat(std::vector<double> a, const std::vector<double>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

struct SimCase {
  const char* label;
  int stages;
  uint64_t seed;
  bool quantize_layer;
  bool output_quantizer;
  double pruned_inputs;
  double zero_weights;
  bool wide;                       // widen every type: accumulators and outputs beyond 64 bits
  const char* const_mult = "csd";  // VerilogOptions::const_mult
};

std::ostream& operator<<(std::ostream& os, const SimCase& c) {
  return os << c.label;
}

// Adds 12 integer and 14 fractional bits to every live activation element and multiplies every
// nonzero weight and bias by 2^29 + 1: products and sums then exceed 64 bits (Verilator's VlWide)
// while the next quantizers, only 12 integer bits wider, overflow.
void widen(archive::Archive& a) {
  auto more_bits = [](archive::QuantSpec& q) {
    for (size_t e = 0; e < q.k.size(); ++e)
      if (q.k[e] + q.i[e] + q.f[e] > 0) {
        q.i[e] += 12;
        q.f[e] += 14;
      }
  };
  for (auto& l : a.layers) {
    if (l.input_quantizer) more_bits(*l.input_quantizer);
    if (l.output_quantizer) more_bits(*l.output_quantizer);
    for (auto* c : {l.kernel ? &*l.kernel : nullptr, l.bias ? &*l.bias : nullptr}) {
      if (!c) continue;
      for (size_t e = 0; e < c->mantissa.size(); ++e)
        if (c->mantissa[e] != 0) {
          c->mantissa[e] *= (int64_t{1} << 29) + 1;
          c->quantizer.i[e] += 30;
        }
    }
  }
}
}  // namespace

// ------------------------------------------------------------------ Verilator against the emulator

class VerilogVerilator : public ::testing::TestWithParam<SimCase> {};

TEST_P(VerilogVerilator, MatchesEmulatorBitExactly) {
  if (!on_path("verilator")) GTEST_SKIP() << "verilator is not on PATH: Verilog simulation skipped";
  const SimCase& c = GetParam();
  hgqt::testing::RandomArchiveOptions o;
  o.sizes = {16, 12, 8, 5};
  o.seed = c.seed;
  o.quantize_layer = c.quantize_layer;
  o.output_quantizer = c.output_quantizer;
  o.pruned_inputs = c.pruned_inputs;
  o.zero_weights = c.zero_weights;
  auto a = hgqt::testing::random_mlp_archive(o);
  if (c.wide) widen(a);
  // 10,000 samples: in range, small (rounding near zero) and scaled up to overflow the quantizers.
  const int64_t n_in = 6000, n_small = 1000, n_big = 3000, n = n_in + n_small + n_big;
  const auto x = concat(concat(hgqt::testing::random_inputs(a, n_in, 10 + c.seed, 1.0),
                               hgqt::testing::random_inputs(a, n_small, 20 + c.seed, 0.125)),
                        hgqt::testing::random_inputs(a, n_big, 30 + c.seed, 16.0));

  const fs::path dir = fresh_dir(std::string("sim_") + c.label);
  exporters::VerilogOptions vo;
  vo.name = "mlp_" + std::string(c.label);
  vo.pipeline_stages = c.stages;
  vo.const_mult = c.const_mult;
  exporters::export_verilog(a, dir.string(), vo, x, n);

  const auto ports = nlohmann::json::parse(read_text(dir / "ports.json"));
  EXPECT_EQ(ports["latency_cycles"].get<int>(), c.stages);
  EXPECT_EQ(ports["testbench"]["samples"].get<int64_t>(), n);
  // The scaled inputs overflow WRAP and SAT quantizers somewhere in the network.
  EXPECT_GT(ports["testbench"]["wrapped"].get<int64_t>(), 0);
  EXPECT_GT(ports["testbench"]["saturated"].get<int64_t>(), 0);
  const std::string source = read_text(dir / (vo.name + ".v"));
  if (c.wide) {  // internal values and the output bus beyond 64 bits
    int widest = 0;
    const std::regex decl("(?:wire|reg) (?:signed )?\\[(\\d+):0\\] [a-z]");
    for (std::sregex_iterator m(source.begin(), source.end(), decl), end; m != end; ++m)
      widest = std::max(widest, std::stoi((*m)[1]) + 1);
    EXPECT_GT(widest, 64);
    EXPECT_GT(ports["output"]["width"].get<int64_t>(), 64);
  }
  size_t stages = 0;
  for (size_t p = source.find("pipeline register stage"); p != std::string::npos;
       p = source.find("pipeline register stage", p + 1))
    ++stages;
  EXPECT_EQ(stages, static_cast<size_t>(c.stages));
  // "shared" and "csd" write no multiplication at all; "mul" one per product that is not a
  // shift. "shared" reports each linear layer's adder graph, never more adder bits than trees.
  if (std::string(c.const_mult) == "shared") {
    ASSERT_TRUE(ports.contains("adder_graphs"));
    EXPECT_EQ(ports["adder_graphs"].size(), 3u);
    for (const auto& g : ports["adder_graphs"]) {
      EXPECT_LE(g["logic_bits"].get<int64_t>(), g["tree_logic_bits"].get<int64_t>());
      EXPECT_LE(g["depth"].get<int>(), g["tree_depth"].get<int>() + 2);
    }
  } else {
    EXPECT_FALSE(ports.contains("adder_graphs"));
  }
  EXPECT_EQ(std::regex_search(source, std::regex(" \\* [0-9]+'sh")),
            std::string(c.const_mult) == "mul");

  const auto sim = run_command("bash '" + (dir / "run_verilator.sh").string() + "'");
  ASSERT_EQ(sim.status, 0) << sim.output.substr(sim.output.size() > 6000 ? sim.output.size() - 6000
                                                                         : 0);
  const auto [samples, mismatches] = verilator_counts(sim.output);
  EXPECT_EQ(samples, n) << sim.output;
  EXPECT_EQ(mismatches, 0) << sim.output;
  std::printf("[ verilator ] %s: %ld samples, %ld mismatches\n", c.label, samples, mismatches);

  // The testbench must notice a wrong expected value: change one output of sample 7 and rerun.
  const fs::path expected = dir / "tb_data" / "tb_output_mantissas.dat";
  std::vector<std::string> lines;
  {
    std::ifstream in(expected);
    for (std::string l; std::getline(in, l);) lines.push_back(l);
  }
  ASSERT_EQ(lines.size(), static_cast<size_t>(n));
  {
    std::istringstream first(lines[7]);
    long long v = 0;
    first >> v;
    const std::string rest = lines[7].substr(std::min(lines[7].find(' '), lines[7].size()));
    lines[7] = std::to_string(v + 1) + rest;
    std::ofstream out(expected);
    for (const auto& l : lines) out << l << "\n";
  }
  const auto bad = run_command("bash '" + (dir / "run_verilator.sh").string() + "' run");
  EXPECT_NE(bad.status, 0) << bad.output;
  EXPECT_EQ(verilator_counts(bad.output), std::make_pair(static_cast<long>(n), 1L)) << bad.output;
  EXPECT_NE(bad.output.find("tb: sample 7 output element"), std::string::npos) << bad.output;
  if (!HasFailure()) fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(
    VerilogRandom, VerilogVerilator,
    ::testing::Values(SimCase{"shared_comb", 0, 1, false, true, 0.15, 0.3, false, "shared"},
                      SimCase{"csd_stages1", 1, 2, true, true, 0.15, 0.3, false, "csd"},
                      SimCase{"shared_stages3", 3, 3, false, false, 0.3, 0.5, false, "shared"},
                      SimCase{"shared_wide_stages2", 2, 4, true, false, 0.15, 0.3, true, "shared"},
                      SimCase{"csd_wide_stages2", 2, 5, true, false, 0.15, 0.3, true, "csd"},
                      SimCase{"mul_comb", 0, 1, false, true, 0.15, 0.3, false, "mul"},
                      SimCase{"mul_stages1", 1, 2, true, true, 0.15, 0.3, false, "mul"},
                      SimCase{"mul_stages3", 3, 3, false, false, 0.3, 0.5, false, "mul"},
                      SimCase{"mul_wide_stages2", 2, 4, true, false, 0.15, 0.3, true, "mul"}),
    [](const ::testing::TestParamInfo<SimCase>& info) { return std::string(info.param.label); });

// ------------------------------------------------------------------------- generation, no tools

TEST(VerilogExport, LayoutMatchesInferredTypesAndPortsJson) {
  hgqt::testing::RandomArchiveOptions o;
  o.sizes = {20, 7, 6};
  o.seed = 11;
  o.pruned_inputs = 0.3;
  const auto a = hgqt::testing::random_mlp_archive(o);
  const auto types = archive::infer_types(a);
  const auto lay = exporters::verilog_layout(a);
  ASSERT_EQ(lay.inputs.size(), 20u);
  ASSERT_EQ(lay.outputs.size(), 6u);
  int64_t bit = 0, pruned = 0;
  for (size_t n = 0; n < lay.inputs.size(); ++n) {
    const auto& e = lay.inputs[n];
    EXPECT_EQ(e.type, types[0].quantized_input[n]);
    if (e.type.width == 0) {
      EXPECT_EQ(e.lsb, -1);
      ++pruned;
      continue;
    }
    EXPECT_EQ(e.lsb, bit) << "inputs are packed in order, element 0 at bit 0";
    bit += e.type.width;
  }
  EXPECT_GT(pruned, 0) << "the case should have pruned inputs";
  EXPECT_EQ(lay.input_bits, bit);
  archive::Emulator emu(a);
  bit = 0;
  for (size_t n = 0; n < lay.outputs.size(); ++n) {
    EXPECT_EQ(lay.outputs[n].type, emu.output_types()[n]);
    if (lay.outputs[n].type.width > 0) bit += lay.outputs[n].type.width;
  }
  EXPECT_EQ(lay.output_bits, bit);

  const fs::path dir = fresh_dir("layout");
  exporters::VerilogOptions vo;
  vo.name = "layout_top";
  vo.pipeline_stages = 2;
  const auto x = hgqt::testing::random_inputs(a, 4, 5, 1.0);
  exporters::export_verilog(a, dir.string(), vo, x, 4);
  for (const char* f :
       {"layout_top.v", "tb_layout_top.cpp", "ports.json", "Makefile", "run_verilator.sh",
        "tb_data/tb_input_mantissas.dat", "tb_data/tb_output_mantissas.dat"})
    EXPECT_TRUE(fs::exists(dir / f)) << f;
  const auto ports = nlohmann::json::parse(read_text(dir / "ports.json"));
  EXPECT_EQ(ports["top"], "layout_top");
  EXPECT_EQ(ports["latency_cycles"], 2);
  EXPECT_EQ(ports["input"]["width"].get<int64_t>(), lay.input_bits);
  EXPECT_EQ(ports["output"]["width"].get<int64_t>(), lay.output_bits);
  for (size_t n = 0; n < lay.inputs.size(); ++n) {
    const auto& j = ports["input"]["elements"][n];
    EXPECT_EQ(j["width"].get<int>(), lay.inputs[n].type.width);
    if (lay.inputs[n].type.width > 0) {
      EXPECT_EQ(j["lsb"].get<int64_t>(), lay.inputs[n].lsb);
    }
  }
  // One testbench line per sample, one value per element present on the bus.
  std::ifstream in(dir / "tb_data" / "tb_input_mantissas.dat");
  int rows = 0;
  for (std::string l; std::getline(in, l); ++rows) {
    std::istringstream ls(l);
    int64_t v, count = 0;
    while (ls >> v) ++count;
    EXPECT_EQ(count, 20 - pruned);
  }
  EXPECT_EQ(rows, 4);
  // The header comment states the layout.
  const std::string v = read_text(dir / "layout_top.v");
  EXPECT_NE(v.find("module layout_top ("), std::string::npos);
  EXPECT_NE(v.find("Latency: 2 clock cycle(s)"), std::string::npos);
  EXPECT_NE(v.find("absent (zero width)"), std::string::npos);
  fs::remove_all(dir);
}

TEST(VerilogExport, DeterministicAndStageCountsAsRequested) {
  hgqt::testing::RandomArchiveOptions o;
  o.sizes = {10, 8, 6, 4};
  o.seed = 4;
  const auto a = hgqt::testing::random_mlp_archive(o);
  for (int stages : {0, 1, 2, 5, 9}) {
    exporters::VerilogOptions vo;
    vo.pipeline_stages = stages;
    const std::string s1 = exporters::verilog_source(a, vo);
    EXPECT_EQ(s1, exporters::verilog_source(a, vo)) << "generation must be deterministic";
    size_t regs = 0;
    for (size_t p = s1.find("pipeline register stage"); p != std::string::npos;
         p = s1.find("pipeline register stage", p + 1))
      ++regs;
    EXPECT_EQ(regs, static_cast<size_t>(stages));
    EXPECT_EQ(s1.find("valid_pipe") != std::string::npos, stages > 0);
    // The last stage registers the outputs: data_out is driven by stage registers only.
    if (stages > 0) {
      const auto at = s1.find("assign data_out = {");
      ASSERT_NE(at, std::string::npos);
      const std::string line = s1.substr(at, s1.find('\n', at) - at);
      EXPECT_NE(line.find("s" + std::to_string(stages) + "_"), std::string::npos) << line;
    }
  }
}

size_t count_lines(const std::string& s) {
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

TEST(VerilogExport, RejectsBadOptionsAndInputs) {
  const auto a = hgqt::testing::random_mlp_archive();
  exporters::VerilogOptions vo;
  vo.name = "1bad name";
  EXPECT_THROW(exporters::verilog_source(a, vo), std::invalid_argument);
  vo.name = "ok";
  vo.pipeline_stages = -1;
  EXPECT_THROW(exporters::verilog_source(a, vo), std::invalid_argument);
  vo.pipeline_stages = 1;
  vo.const_mult = "shift";
  EXPECT_THROW(exporters::verilog_source(a, vo), std::invalid_argument);
  vo.const_mult = "mul";
  EXPECT_NO_THROW(exporters::verilog_source(a, vo));
  vo.const_mult = "shared";
  EXPECT_NO_THROW(exporters::verilog_source(a, vo));
  vo.adder_extra_depth = 17;
  EXPECT_THROW(exporters::verilog_source(a, vo), std::invalid_argument);
  vo.adder_extra_depth = 2;
  vo.const_mult = "csd";
  const fs::path dir = fresh_dir("reject");
  // A testbench of the wrong size is a bad argument, as in the HLS export.
  std::vector<double> x(a.input_size() * 2 - 1, 0.0);
  try {
    exporters::export_verilog(a, dir.string(), vo, x, 2);
    ADD_FAILURE() << "a short testbench input was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("testbench input values"), std::string::npos) << e.what();
  }
  EXPECT_THROW(exporters::export_verilog(a, dir.string(), vo, {}, -1), std::invalid_argument);
  // Zero testbench samples: one all-zero sample, as in the HLS export.
  exporters::export_verilog(a, dir.string(), vo, {}, 0);
  EXPECT_EQ(nlohmann::json::parse(read_text(dir / "ports.json"))["testbench"]["samples"], 1);
  EXPECT_EQ(count_lines(read_text(dir / "tb_data" / "tb_input_mantissas.dat")), 1u);
  EXPECT_EQ(count_lines(read_text(dir / "tb_data" / "tb_output_mantissas.dat")), 1u);
  x.assign(a.input_size() * 2, 0.0);
  x[a.input_size() + 3] = std::nan("");
  try {
    exporters::export_verilog(a, dir.string(), vo, x, 2);
    ADD_FAILURE() << "a NaN input was accepted";
  } catch (const archive::ArchiveError& e) {
    EXPECT_NE(std::string(e.what()).find("sample 1"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

// ------------------------------------------------------------------------------- Yosys resources

TEST(VerilogResources, ParsesYosysStat) {
  const std::string log =
      "2.50. Printing statistics.\n\n=== old ===\n   Number of cells:                  1\n"
      "     LUT2                            1\n\n"
      "3. Printing statistics.\n\n=== top ===\n\n   Number of wires:                 9\n"
      "   Number of cells:                 31\n     BUFG                            1\n"
      "     CARRY8                          4\n     DSP48E2                         2\n"
      "     FDRE                           12\n     FDSE                            1\n"
      "     LUT1                            3\n     LUT6                            5\n"
      "     MUXF7                           3\n\n   Estimated number of LCs:          0\n";
  const auto r = exporters::parse_yosys_stat(log);
  EXPECT_EQ(r.cells, 31);
  EXPECT_EQ(r.luts, 8);
  EXPECT_EQ(r.carry, 4);
  EXPECT_EQ(r.ffs, 13);
  EXPECT_EQ(r.dsps, 2);
  EXPECT_EQ(r.muxes, 3);
  EXPECT_EQ(r.cell_counts.at("BUFG"), 1);
  EXPECT_THROW(exporters::parse_yosys_stat("no statistics here"), std::runtime_error);
  EXPECT_THROW(exporters::parse_yosys_stat("   Number of cells:   5\n     LUT2   1\n\n"),
               std::runtime_error);  // the list does not add up
}

// Yosys must read the Verilog as Verilator does: its synthesized gate netlist, simulated by Icarus
// Verilog, reproduces the emulator's outputs (pipelined, with overflowing inputs).
TEST(VerilogResources, YosysNetlistSimulatesBitExactly) {
  for (const char* tool : {"yosys", "iverilog", "vvp"})
    if (!on_path(tool)) GTEST_SKIP() << tool << " is not on PATH: netlist simulation skipped";
  hgqt::testing::RandomArchiveOptions o;
  o.sizes = {7, 5, 4, 3};
  o.seed = 8;
  const auto a = hgqt::testing::random_mlp_archive(o);
  const int64_t n = 400;
  const auto x = concat(hgqt::testing::random_inputs(a, n / 2, 3, 1.0),
                        hgqt::testing::random_inputs(a, n / 2, 4, 16.0));
  for (const char* mode : {"csd", "mul"}) {  // both ways of writing constant multiplications
    SCOPED_TRACE(mode);
    const fs::path dir = fresh_dir(std::string("netlist_") + mode);
    exporters::VerilogOptions vo;
    vo.name = "gates";
    vo.pipeline_stages = 2;
    vo.const_mult = mode;
    exporters::export_verilog(a, dir.string(), vo, x, n);
    const auto lay = exporters::verilog_layout(a);

    // Packs one line of mantissas (bus order) into a hex string of `bits` bits.
    auto pack = [](const std::string& line, const std::vector<exporters::VerilogBusElement>& els,
                   int64_t bits) {
      std::vector<int> b(std::max<int64_t>(bits, 1), 0);
      std::istringstream in(line);
      for (const auto& e : els) {
        if (e.type.width == 0) continue;
        long long m = 0;
        in >> m;
        for (int k = 0; k < e.type.width; ++k)
          b[e.lsb + k] = k < 63 ? static_cast<int>((m >> k) & 1) : (m < 0 ? 1 : 0);
      }
      std::string hex;
      for (int64_t d = (static_cast<int64_t>(b.size()) + 3) / 4 - 1; d >= 0; --d) {
        int v = 0;
        for (int k = 3; k >= 0; --k)
          v = 2 * v + (d * 4 + k < static_cast<int64_t>(b.size()) ? b[d * 4 + k] : 0);
        hex.push_back("0123456789abcdef"[v]);
      }
      return hex;
    };
    std::vector<std::string> in_hex, want_hex;
    {
      std::ifstream in(dir / "tb_data" / "tb_input_mantissas.dat");
      for (std::string l; std::getline(in, l);)
        in_hex.push_back(pack(l, lay.inputs, lay.input_bits));
      std::ifstream out(dir / "tb_data" / "tb_output_mantissas.dat");
      for (std::string l; std::getline(out, l);)
        want_hex.push_back(pack(l, lay.outputs, lay.output_bits));
    }
    ASSERT_EQ(in_hex.size(), static_cast<size_t>(n));
    std::ofstream tb(dir / "tb_gates.v");
    const int64_t iw = std::max<int64_t>(lay.input_bits, 1);
    const int64_t ow = std::max<int64_t>(lay.output_bits, 1);
    tb << "module tb;\n  reg clk = 0, rst = 1, valid_in = 0;\n  reg [" << iw - 1 << ":0] d = 0;\n"
       << "  wire valid_out;\n  wire [" << ow - 1 << ":0] y;\n"
       << "  gates dut(.clk(clk), .rst(rst), .valid_in(valid_in), .data_in(d), "
          ".valid_out(valid_out), .data_out(y));\n"
       << "  task tick; begin #1 clk = 1; #1 clk = 0; if (valid_out) $display(\"%h\", y); end "
          "endtask\n  initial begin\n    tick; tick; rst = 0;\n";
    for (const auto& h : in_hex) tb << "    valid_in = 1; d = " << iw << "'h" << h << "; tick;\n";
    tb << "    valid_in = 0; tick; tick; tick;\n    $finish;\n  end\nendmodule\n";
    tb.close();
    const std::string cd = "cd '" + dir.string() + "' && ";
    const auto syn = run_command(cd +
                                 "yosys -q -p 'read_verilog gates.v; synth -flatten -top gates; "
                                 "write_verilog -noattr gates_syn.v'");
    ASSERT_EQ(syn.status, 0) << syn.output;
    const auto sim =
        run_command(cd + "iverilog -o tb_gates.vvp tb_gates.v gates_syn.v && vvp -n tb_gates.vvp");
    ASSERT_EQ(sim.status, 0) << sim.output;
    std::vector<std::string> got;
    std::istringstream lines(sim.output);
    for (std::string l; std::getline(lines, l);)
      if (!l.empty() && l.find_first_not_of("0123456789abcdefxz") == std::string::npos)
        got.push_back(l);
    ASSERT_EQ(got.size(), static_cast<size_t>(n)) << sim.output.substr(0, 2000);
    int64_t mismatches = 0;
    for (int64_t r = 0; r < n; ++r)
      if (got[r] != want_hex[r] && mismatches++ < 5)
        ADD_FAILURE() << "sample " << r << ": netlist " << got[r] << ", emulator " << want_hex[r];
    EXPECT_EQ(mismatches, 0);
    if (!HasFailure()) fs::remove_all(dir);
  }
}

TEST(VerilogResources, YosysSynthesizesTinyArchive) {
  if (!on_path("yosys")) GTEST_SKIP() << "yosys is not on PATH: resource estimate skipped";
  hgqt::testing::RandomArchiveOptions o;
  o.sizes = {6, 4, 3};
  o.seed = 5;
  o.pruned_inputs = 0;
  const auto a = hgqt::testing::random_mlp_archive(o);
  const fs::path dir = fresh_dir("yosys");
  exporters::VerilogOptions vo;
  vo.name = "tiny";
  vo.pipeline_stages = 1;
  const auto x = hgqt::testing::random_inputs(a, 2, 1, 1.0);
  exporters::export_verilog(a, dir.string(), vo, x, 2);
  exporters::YosysOptions yo;
  yo.nodsp = true;
  const auto r = exporters::run_yosys(dir.string(), "tiny", yo);
  EXPECT_GT(r.luts, 0);
  EXPECT_EQ(r.dsps, 0) << "-nodsp";
  // One register stage at the outputs, plus the valid bit.
  const auto lay = exporters::verilog_layout(a);
  EXPECT_GE(r.ffs, 1);
  EXPECT_LE(r.ffs, lay.output_bits + 1);
  int64_t sum = 0;
  for (const auto& [type, count] : r.cell_counts) sum += count;
  EXPECT_EQ(sum, r.cells);
  EXPECT_TRUE(fs::exists(dir / "yosys_xcup_nodsp.log"));
  const std::string table = exporters::format_resources(r, a);
  EXPECT_NE(table.find("LUTs"), std::string::npos) << table;
  EXPECT_NE(table.find("total"), std::string::npos) << table;
  EXPECT_THROW(exporters::run_yosys(dir.string(), "missing", yo), std::runtime_error);
  fs::remove_all(dir);
}
