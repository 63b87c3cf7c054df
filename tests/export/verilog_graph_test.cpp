// The Verilog exporter on graph models (conv1d, conv2d, scale, max / avg pool, add, concatenate,
// reshape, flatten, lut, softmax, branches and skip connections): Verilator simulations against the
// integer emulator, bit-exact with overflowing inputs, combinational and pipelined, for both ways
// of writing constant multiplications; and the generator's graph checks without tools.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>

#include "hgqt/archive/emulator.h"
#include "hgqt/export/verilog.h"
#include "support/process.h"
#include "support/random_archive.h"

using namespace hgqt;
namespace fs = std::filesystem;
using hgqt::testing::count_of;
using hgqt::testing::on_path;
using hgqt::testing::read_text;
using hgqt::testing::run_command;

using hgqt::testing::GraphKind;

namespace {
fs::path fresh_dir(const std::string& name) {
  return hgqt::testing::fresh_test_dir("verilog_graph_test_tmp", name, true);
}

std::pair<long, long> verilator_counts(const std::string& out) {
  std::smatch m;
  if (!std::regex_search(out, m, std::regex("verilator: (\\d+) samples, (\\d+) mismatches")))
    return {-1, -1};
  return {std::stol(m[1]), std::stol(m[2])};
}

struct GraphCase {
  const char* label;
  GraphKind kind;
  int stages;
  const char* const_mult;
  uint64_t seed;
  double clock_ns = 0;  ///< > 0: registers placed for this period (stages: the least expected)
};

std::ostream& operator<<(std::ostream& os, const GraphCase& c) {
  return os << c.label;
}

archive::Archive graph(GraphKind kind, uint64_t seed) {
  hgqt::testing::RandomArchiveOptions o;
  o.seed = seed;
  return hgqt::testing::random_graph_archive(kind, o);
}
}  // namespace

// ------------------------------------------------------------------ Verilator against the emulator

class VerilogGraphVerilator : public ::testing::TestWithParam<GraphCase> {};

TEST_P(VerilogGraphVerilator, MatchesEmulatorBitExactly) {
  if (!on_path("verilator")) GTEST_SKIP() << "verilator is not on PATH: Verilog simulation skipped";
  const GraphCase& c = GetParam();
  const auto a = graph(c.kind, c.seed);
  // 2000 samples: half in range, half scaled x16 to overflow the quantizers.
  const int64_t n_in = 1000, n_big = 1000, n = n_in + n_big;
  auto x = hgqt::testing::random_inputs(a, n_in, 10 + c.seed, 1.0);
  const auto big = hgqt::testing::random_inputs(a, n_big, 30 + c.seed, 16.0);
  x.insert(x.end(), big.begin(), big.end());

  const fs::path dir = fresh_dir(c.label);
  exporters::VerilogOptions vo;
  vo.name = std::string("g_") + c.label;
  vo.pipeline_stages = c.stages;
  vo.const_mult = c.const_mult;
  vo.clock_period_ns = c.clock_ns;
  const auto report = exporters::export_verilog(a, dir.string(), vo, x, n);

  const auto ports = nlohmann::json::parse(read_text(dir / "ports.json"));
  const int latency = ports["latency_cycles"].get<int>();
  EXPECT_EQ(latency, report.latency_cycles);
  if (c.clock_ns > 0)
    EXPECT_GE(latency, c.stages) << "registers placed for " << c.clock_ns << " ns";
  else
    EXPECT_EQ(latency, c.stages);
  EXPECT_EQ(ports["testbench"]["samples"].get<int64_t>(), n);
  EXPECT_GT(
      ports["testbench"]["wrapped"].get<int64_t>() + ports["testbench"]["saturated"].get<int64_t>(),
      0)
      << "the scaled inputs should overflow some quantizer";
  const std::string source = read_text(dir / (vo.name + ".v"));
  EXPECT_EQ(count_of(source, "pipeline register stage"), static_cast<size_t>(latency));
  EXPECT_EQ(std::regex_search(source, std::regex(" \\* [0-9]+'sh")),
            std::string(c.const_mult) == "mul");

  const auto sim = run_command("bash '" + (dir / "run_verilator.sh").string() + "'");
  ASSERT_EQ(sim.status, 0) << sim.output.substr(sim.output.size() > 6000 ? sim.output.size() - 6000
                                                                         : 0);
  const auto [samples, mismatches] = verilator_counts(sim.output);
  EXPECT_EQ(samples, n) << sim.output;
  EXPECT_EQ(mismatches, 0) << sim.output;
  std::printf("[ verilator ] %s: %ld samples, %ld mismatches\n", c.label, samples, mismatches);
  if (!HasFailure()) fs::remove_all(dir);
}

INSTANTIATE_TEST_SUITE_P(
    VerilogGraph, VerilogGraphVerilator,
    ::testing::Values(GraphCase{"cnn2d_shared_comb", GraphKind::Cnn2d, 0, "shared", 1},
                      GraphCase{"cnn2d_csd_stages2", GraphKind::Cnn2d, 2, "csd", 2},
                      GraphCase{"cnn2d_mul_comb", GraphKind::Cnn2d, 0, "mul", 3},
                      GraphCase{"cnn2d_mul_stages2", GraphKind::Cnn2d, 2, "mul", 4},
                      GraphCase{"conv1d_shared_comb", GraphKind::Conv1dBranches, 0, "shared", 1},
                      GraphCase{"conv1d_shared_stages2", GraphKind::Conv1dBranches, 2, "shared", 2},
                      GraphCase{"conv1d_mul_comb", GraphKind::Conv1dBranches, 0, "mul", 3},
                      GraphCase{"conv1d_mul_stages2", GraphKind::Conv1dBranches, 2, "mul", 4},
                      GraphCase{"lut_shared_comb", GraphKind::Lut, 0, "shared", 1},
                      GraphCase{"lut_csd_stages2", GraphKind::Lut, 2, "csd", 2},
                      GraphCase{"lut_mul_comb", GraphKind::Lut, 0, "mul", 3},
                      GraphCase{"lut_mul_stages2", GraphKind::Lut, 2, "mul", 4},
                      GraphCase{"softmax_shared_comb", GraphKind::Softmax, 0, "shared", 1},
                      GraphCase{"softmax_csd_stages2", GraphKind::Softmax, 2, "csd", 2},
                      GraphCase{"softmax_mul_comb", GraphKind::Softmax, 0, "mul", 3},
                      GraphCase{"softmax_mul_stages2", GraphKind::Softmax, 2, "mul", 4},
                      GraphCase{"softmax_shared_stages5", GraphKind::Softmax, 5, "shared", 5},
                      GraphCase{"particles_shared_comb", GraphKind::Particles, 0, "shared", 1},
                      GraphCase{"particles_mul_stages2", GraphKind::Particles, 2, "mul", 2},
                      GraphCase{"attention_shared_comb", GraphKind::Attention, 0, "shared", 1},
                      GraphCase{"attention_csd_stages3", GraphKind::Attention, 3, "csd", 2},
                      GraphCase{"linformer_shared_stages2", GraphKind::Linformer, 2, "shared", 3},
                      GraphCase{"lut_dense_shared_comb", GraphKind::LutDense, 0, "shared", 1},
                      GraphCase{"lut_dense_csd_stages2", GraphKind::LutDense, 2, "csd", 2},
                      GraphCase{"cnn2d_shared_clock2ns", GraphKind::Cnn2d, 2, "shared", 6, 2.0},
                      GraphCase{"softmax_shared_clock1ns", GraphKind::Softmax, 3, "shared", 6,
                                1.0}),
    [](const ::testing::TestParamInfo<GraphCase>& info) { return std::string(info.param.label); });

// Deep Sets and attention models are permutation invariant in RTL: the inputs are rows followed by
// the same rows with their particles shuffled; the emulator gives identical outputs for the two
// halves and the Verilator simulation matches the emulator on every row.
class VerilogPermutation : public ::testing::TestWithParam<GraphKind> {};

TEST_P(VerilogPermutation, ParticleModelsArePermutationInvariant) {
  const auto a = graph(GetParam(), 3);
  const int64_t half = 500;
  const auto x = hgqt::testing::with_permuted_particles(
      hgqt::testing::random_inputs(a, half, 77, 2.0), half, a.input_shape[0], a.input_shape[1], 5);
  const auto y = archive::Emulator(a).run_batch(x, 2 * half);
  const int64_t n_out = a.output_size();
  ASSERT_EQ(y.size(), static_cast<size_t>(2 * half * n_out));
  EXPECT_TRUE(std::equal(y.begin(), y.begin() + half * n_out, y.begin() + half * n_out));
  std::set<double> distinct(y.begin(), y.end());
  EXPECT_GT(distinct.size(), 20u) << "the outputs hardly depend on the input";
  if (!on_path("verilator")) GTEST_SKIP() << "verilator is not on PATH: Verilog simulation skipped";
  const std::string name =
      GetParam() == GraphKind::Particles ? "particles_permuted" : "attention_permuted";
  const fs::path dir = fresh_dir(name);
  exporters::VerilogOptions vo;
  vo.name = name;
  vo.pipeline_stages = 1;
  exporters::export_verilog(a, dir.string(), vo, x, 2 * half);
  const auto sim = run_command("bash '" + (dir / "run_verilator.sh").string() + "'");
  ASSERT_EQ(sim.status, 0) << sim.output;
  EXPECT_EQ(verilator_counts(sim.output), std::make_pair(2 * half, 0L)) << sim.output;
  if (!HasFailure()) fs::remove_all(dir);
}
INSTANTIATE_TEST_SUITE_P(VerilogGraphExport, VerilogPermutation,
                         ::testing::Values(GraphKind::Particles, GraphKind::Attention),
                         [](const ::testing::TestParamInfo<GraphKind>& info) {
                           return std::string(info.param == GraphKind::Particles ? "DeepSets"
                                                                                 : "Attention");
                         });

// ------------------------------------------------------------------------- generation, no tools

// Every stage count generates, deterministically, with exactly that many register stages, and
// the outputs come from the last stage's registers.
TEST(VerilogGraphExport, StageCountsAndDeterminism) {
  for (GraphKind kind :
       {GraphKind::Cnn2d, GraphKind::Conv1dBranches, GraphKind::Lut, GraphKind::Softmax}) {
    const auto a = graph(kind, 5);
    for (int stages : {0, 1, 3, 7, 20}) {
      SCOPED_TRACE(stages);
      exporters::VerilogOptions vo;
      vo.pipeline_stages = stages;
      const std::string s = exporters::verilog_source(a, vo);
      EXPECT_EQ(s, exporters::verilog_source(a, vo));
      EXPECT_EQ(count_of(s, "pipeline register stage"), static_cast<size_t>(stages));
      if (stages > 0) {
        const auto at = s.find("assign data_out = {");
        ASSERT_NE(at, std::string::npos);
        const std::string line = s.substr(at, s.find('\n', at) - at);
        EXPECT_NE(line.find("s" + std::to_string(stages) + "_"), std::string::npos) << line;
      }
    }
  }
}

// Registers placed by estimated delay: a shorter clock period gives at least as many cycles, no
// path between registers is longer than the period unless a single op is, and more stages never
// lengthen the critical path.
TEST(VerilogGraphExport, ClockPeriodPlacesRegistersByDelay) {
  for (GraphKind kind :
       {GraphKind::Cnn2d, GraphKind::Conv1dBranches, GraphKind::Lut, GraphKind::Softmax}) {
    SCOPED_TRACE(static_cast<int>(kind));
    const auto a = graph(kind, 7);
    const fs::path dir = fresh_dir("clock_" + std::to_string(static_cast<int>(kind)));
    const std::vector<double> none;
    auto timing = [&](double period, int stages) {
      exporters::VerilogOptions vo;
      vo.clock_period_ns = period;
      vo.pipeline_stages = stages;
      return exporters::export_verilog(a, dir.string(), vo, none, 0).timing;
    };
    int previous = 0;
    for (double period : {8.0, 4.0, 2.0, 1.0, 0.5}) {
      SCOPED_TRACE(period);
      const auto t = timing(period, 1);
      EXPECT_GE(t.latency_cycles, std::max(previous, 1));
      previous = t.latency_cycles;
      EXPECT_LE(t.critical_path_ns, std::max(period, t.longest_op_ns) + 1e-9);
      EXPECT_FALSE(t.critical_step.empty());
      const std::string s = read_text(dir / "myproject.v");
      EXPECT_EQ(count_of(s, "pipeline register stage"), static_cast<size_t>(t.latency_cycles));
    }
    double longest = timing(0, 0).critical_path_ns;  // combinational: the whole path
    EXPECT_GT(longest, 0);
    for (int stages : {1, 2, 4, 8}) {
      const auto t = timing(0, stages);
      EXPECT_EQ(t.latency_cycles, stages);
      EXPECT_LE(t.critical_path_ns, longest + 1e-9) << stages << " stages";
      EXPECT_GE(t.critical_path_ns, t.longest_op_ns - 1e-9);
      longest = t.critical_path_ns;
    }
    if (!HasFailure()) fs::remove_all(dir);
  }
}

// The bus carries the quantize layer's mantissas; the layout follows infer_types.
TEST(VerilogGraphExport, LayoutFollowsInferredTypes) {
  const auto a = graph(GraphKind::Conv1dBranches, 3);
  const auto types = archive::infer_types(a);
  const auto lay = exporters::verilog_layout(a);
  EXPECT_EQ(lay.input_layer, "q");
  ASSERT_EQ(lay.inputs.size(), static_cast<size_t>(a.input_size()));
  ASSERT_EQ(lay.outputs.size(), static_cast<size_t>(a.output_size()));
  for (size_t n = 0; n < lay.inputs.size(); ++n) EXPECT_EQ(lay.inputs[n].type, types[0].output[n]);
  for (size_t n = 0; n < lay.outputs.size(); ++n)
    EXPECT_EQ(lay.outputs[n].type, types.back().output[n]);
}

// A second reader of the float model input: with the same quantizer it reads data_in too (as in
// the HLS export), and the design matches the emulator; with another quantizer it is rejected
// (data_in carries one quantizer's mantissas).
TEST(VerilogGraphExport, SecondReaderOfTheModelInput) {
  auto a = graph(GraphKind::Conv1dBranches, 1);
  // c2 reads the model input through its own input quantizer, equal to the first one.
  for (auto& l : a.layers)
    if (l.name == "c2") {
      l.inputs = {archive::kModelInput};
      l.input_quantizer = a.layers[0].input_quantizer;
    }
  archive::validate(a);
  if (on_path("verilator")) {
    const fs::path dir = fresh_dir("second_reader");
    exporters::VerilogOptions vo;
    vo.const_mult = "shared";
    const int64_t n = 500;
    exporters::export_verilog(a, dir.string(), vo, hgqt::testing::random_inputs(a, n, 77, 4.0), n);
    const auto sim = run_command("bash '" + (dir / "run_verilator.sh").string() + "'");
    ASSERT_EQ(sim.status, 0) << sim.output;
    EXPECT_EQ(verilator_counts(sim.output), std::make_pair(static_cast<long>(n), 0L));
    if (!HasFailure()) fs::remove_all(dir);
  } else {
    EXPECT_NO_THROW(exporters::verilog_source(a, exporters::VerilogOptions{}));
  }
  for (auto& l : a.layers)
    if (l.name == "c2") l.input_quantizer->f[0] += 1;
  try {
    exporters::verilog_source(a, exporters::VerilogOptions{});
    ADD_FAILURE() << "two different quantizers of the model input were accepted";
  } catch (const archive::ArchiveError& e) {
    EXPECT_NE(std::string(e.what()).find("different quantizers"), std::string::npos) << e.what();
  }
}
