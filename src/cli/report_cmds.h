// The report subcommands of the hgqt CLI: `hgqt pareto RUN_DIR` and `hgqt plot RUN_DIR`.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace hgqt::cli {

/// Options and subcommand handles, filled by CLI11.
struct ReportCommands {
  CLI::App *pareto_cmd = nullptr, *plot_cmd = nullptr;
  std::string pareto_run, pareto_out, plot_run, plot_out;
  bool no_plot = false;
};

/// Registers the subcommands on `app`.
void add_report_commands(CLI::App& app, ReportCommands& c);
/// Runs the subcommand that was given, if it is one of these; sets `rc`. Returns false otherwise.
/// Errors (missing run directory, unreadable metrics.jsonl or pareto.json, no Python or
/// matplotlib) are thrown as std::runtime_error naming the file.
bool run_report_commands(const ReportCommands& c, int& rc);

}  // namespace hgqt::cli
