// Helpers of the tests that generate projects and run external tools (g++, Verilator, Yosys).
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>

namespace hgqt::testing {

struct CommandResult {
  int status = -1;     ///< exit status; -1 when it did not exit normally or could not start
  std::string output;  ///< stdout and stderr together
};

/// Runs `cmd` with /bin/sh, capturing stdout and stderr.
CommandResult run_command(const std::string& cmd);
/// Whether `program` is on PATH.
bool on_path(const std::string& program);
/// A file's whole text ("" when it cannot be read).
std::string read_text(const std::filesystem::path& p);
/// `s` in single quotes, for shell commands.
std::string quoted(const std::string& s);
/// Occurrences of `needle` in `s` (overlapping ones included).
size_t count_of(const std::string& s, const std::string& needle);
/// The folder holding ap_fixed.h: $AP_TYPES_INCLUDE (vendor headers) when set, else the
/// simulation header of tests/ap_types_sim.
std::string ap_include_dir();
/// <build dir>/<group>/<name>, emptied; created when `create`.
std::filesystem::path fresh_test_dir(const std::string& group, const std::string& name,
                                     bool create);

}  // namespace hgqt::testing
