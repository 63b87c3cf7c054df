#include "support/hls_sim.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <set>
#include <sstream>

#include "hgqt/archive/emulator.h"
#include "support/process.h"
#include "support/random_archive.h"

namespace hgqt::testing {

namespace fs = std::filesystem;

std::string ac_include_dir() {
  const char* env = std::getenv("AC_TYPES_INCLUDE");
  if (env && *env) return env;
  return std::string(HGQT_SOURCE_DIR) + "/tests/ac_types_sim";
}

std::vector<double> overflow_test_inputs(const archive::Archive& a, int64_t n, uint64_t seed) {
  auto x = random_inputs(a, n / 2, seed);
  const auto big = random_inputs(a, n - n / 2, seed + 1, 16.0);
  x.insert(x.end(), big.begin(), big.end());
  return x;
}

std::string dialect_tag(exporters::HlsDialect d) {
  switch (d) {
    case exporters::HlsDialect::Catapult:
      return "catapult";
    case exporters::HlsDialect::OneApi:
      return "oneapi";
    default:
      return "hls";
  }
}

std::vector<fs::path> check_hls_cases(const std::vector<HlsSimCase>& cases,
                                      const std::string& group, int64_t samples) {
  std::vector<fs::path> dirs, exes;
  std::string compile = "status=0; ";
  for (size_t c = 0; c < cases.size(); ++c) {
    const HlsSimCase& k = cases[c];
    const fs::path dir = fresh_test_dir(group, k.name, false);
    dirs.push_back(dir);
    const auto x = k.inputs.empty() ? overflow_test_inputs(k.a, samples, k.seed) : k.inputs;
    // The scaled inputs overflow the quantizers: the test covers WRAP and saturation.
    archive::EmulatorStats stats;
    archive::Emulator(k.a).run_batch(x, samples, &stats);
    EXPECT_GT(stats.wrapped + stats.saturated, 0) << k.name;
    exporters::HlsOptions o;
    o.name = k.name;
    o.dialect = k.dialect;
    exporters::export_hls(k.a, dir.string(), o, x, samples);
    const bool ac = k.dialect != exporters::HlsDialect::Vitis;
    const std::string include = ac ? ac_include_dir() : ap_include_dir();
    std::string cmd;
    if (k.via_cmake) {
      // The project's own CMakeLists.txt: the csim target with the host C++ compiler.
      const fs::path build = dir / "build";
      cmd = "cmake -S " + quoted(dir.string()) + " -B " + quoted(build.string()) +
            " -DCMAKE_CXX_COMPILER=" + quoted(HGQT_CXX_COMPILER) +
            " -DCMAKE_CXX_FLAGS=-O1 -DAC_TYPES_INCLUDE=" + quoted(include) + " && cmake --build " +
            quoted(build.string()) + " --target csim";
      exes.push_back(build / (k.name + ".csim"));
    } else {
      cmd = quoted(HGQT_CXX_COMPILER) + " -O1 -std=c++17 -I" + quoted(include) + " " +
            quoted((dir / (k.name + "_test.cpp")).string()) + " " +
            quoted((dir / "firmware" / (k.name + ".cpp")).string()) + " -o " +
            quoted((dir / (k.name + "_tb")).string());
      exes.push_back(dir / (k.name + "_tb"));
    }
    compile += "(" + cmd + ") > " + quoted((dir / "compile.log").string()) + " 2>&1 & p" +
               std::to_string(c) + "=$!; ";
    if (c % 2 == 1 || c + 1 == cases.size()) {  // wait for this pair
      for (size_t w = c - c % 2; w <= c; ++w)
        compile += "wait $p" + std::to_string(w) + " || status=1; ";
    }
  }
  compile += "exit $status";
  const CommandResult built = run_command(compile);
  EXPECT_EQ(built.status, 0) << built.output;
  for (size_t c = 0; c < cases.size(); ++c) {
    const HlsSimCase& k = cases[c];
    const fs::path& dir = dirs[c];
    if (!fs::exists(exes[c])) {
      ADD_FAILURE() << k.name << " did not compile:\n"
                    << read_text(dir / "compile.log").substr(0, 4000);
      continue;
    }
    // The testbench's argument names tb_data (the CMake build runs elsewhere).
    const CommandResult r =
        run_command(quoted(exes[c].string()) + " " + quoted((dir / "tb_data").string()));
    EXPECT_EQ(r.status, 0) << k.name << "\n" << r.output.substr(0, 4000);
    EXPECT_NE(r.output.find(dialect_tag(k.dialect) + " testbench: " + std::to_string(samples) +
                            " samples, 0 mismatches"),
              std::string::npos)
        << k.name << "\n"
        << r.output.substr(0, 4000);
    const std::string expected = read_text(dir / "tb_data" / "tb_output_predictions.dat");
    EXPECT_EQ(read_text(dir / "tb_data" / "csim_results.log"), expected) << k.name;
    // The comparison means something: the outputs vary over the inputs.
    std::set<std::string> rows;
    std::stringstream lines(expected);
    for (std::string line; std::getline(lines, line);) rows.insert(line);
    EXPECT_GE(rows.size(), 20u) << k.name << ": the model's output hardly depends on its input";
  }
  return dirs;
}

}  // namespace hgqt::testing
