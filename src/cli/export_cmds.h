// The archive / trace / emulate / export / resources subcommands of the hgqt CLI.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "hgqt/data/dataset.h"
#include "hgqt/model/checkpoint.h"

namespace hgqt::cli {

/// Options and subcommand handles, filled by CLI11.
struct ExportCommands {
  CLI::App *archive_cmd = nullptr, *trace_cmd = nullptr, *emulate_cmd = nullptr,
           *export_cmd = nullptr, *resources_cmd = nullptr;
  std::string target, out, data_file, features, labels = "y_test", format, name = "myproject";
  std::string part, family = "xcup";
  int64_t samples = 0, print_rows = 0, tb_overflow = 0;
  int pipeline_stages = 1;
  std::string const_mult = "shared";
  int adder_extra_depth = 2;
  double scale = 1.0, clock_ns = 5.0;
  // Per-subcommand copies (CLI11 writes defaults into the variables when options are declared).
  std::string emu_data, emu_features, emu_out, tb_data, tb_features, export_out, export_name;
  std::string res_archive, res_json;
  int64_t emu_samples = 0, tb_samples = 0;
  int emu_threads = 0;
  bool emu_exact = false;
  double emu_scale = 1.0, tb_scale = 8.0;
  bool check = false, allow_widening = false, allow_untraced = false, nodsp = false,
       rnd_offset = false;
};

/// The rows of `file` in the format of the checkpoint's embedded config, as its `train` split,
/// standardized with the checkpoint's standardizer. Empty `features` / `labels` take the config's
/// names (of its test split when `prefer_test_names` and it has one, else of its train split).
data::Splits load_checkpoint_data(const model::Checkpoint& ck, const std::string& ck_path,
                                  const std::string& file, const std::string& features,
                                  const std::string& labels, bool prefer_test_names);

/// Registers the subcommands on `app`.
void add_export_commands(CLI::App& app, ExportCommands& c);
/// Runs the subcommand that was given, if it is one of these; sets `rc`. Returns false otherwise.
bool run_export_commands(const ExportCommands& c, int& rc);

}  // namespace hgqt::cli
