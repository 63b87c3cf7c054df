// C simulation of generated HLS projects (every dialect) against the emulator: export, compile two
// at a time, run each testbench, compare with the emulator's outputs. Shared by the HLS tests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "hgqt/archive/archive.h"
#include "hgqt/export/hls.h"

namespace hgqt::testing {

/// One model to export in one dialect and simulate.
struct HlsSimCase {
  std::string name;  ///< project (and directory) name
  archive::Archive a;
  exporters::HlsDialect dialect = exporters::HlsDialect::Vitis;
  uint64_t seed = 1;       ///< of the inputs
  bool via_cmake = false;  ///< oneAPI: build the C simulation with the project's CMake (csim)
  /// The input rows (samples x input size); empty: overflow_test_inputs(a, samples, seed).
  std::vector<double> inputs;
};

/// The folder holding ac_fixed.h: $AC_TYPES_INCLUDE (the ac_types headers) when set, else the
/// simulation header of tests/ac_types_sim.
std::string ac_include_dir();

/// The testbench's name of a dialect ("hls", "catapult", "oneapi"): what its messages begin with.
std::string dialect_tag(exporters::HlsDialect d);

/// `n` input rows: the first half standard normal, the second scaled by 16 (overflow-inducing).
std::vector<double> overflow_test_inputs(const archive::Archive& a, int64_t n, uint64_t seed);

/// Exports every case under <build dir>/<group>/<name> with `samples` inputs of
/// overflow_test_inputs or the case's own `inputs` (checking that they make the emulator wrap or
/// saturate), compiles the C simulations (two at a time), runs each testbench and expects every
/// output bit-exact with the emulator ("<dialect> testbench: N samples, 0 mismatches",
/// csim_results.log equal to the expected outputs, which vary over the inputs). Returns the project
/// directories.
std::vector<std::filesystem::path> check_hls_cases(const std::vector<HlsSimCase>& cases,
                                                   const std::string& group, int64_t samples);

}  // namespace hgqt::testing
