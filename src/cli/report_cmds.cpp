// `hgqt pareto | plot`: the Pareto front of a run as a table and a plot, and its training curves.
//
// The table is printed here. The plots are drawn by scripts/plot_run.py with matplotlib (Agg),
// run by /usr/bin/python3 (Debian's python3-matplotlib) or by $HGQT_PYTHON. The script is found
// at, in this order: $HGQT_PLOT_SCRIPT; <directory of the hgqt binary>/../scripts/plot_run.py
// (a build directory in the repository), /../../scripts/plot_run.py, ../share/hgqt/plot_run.py
// (an installation); the source tree this file was compiled from (scripts/ next to src/).
#include "report_cmds.h"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <stdexcept>
#include <vector>

extern char** environ;

namespace fs = std::filesystem;
using nlohmann::json;

namespace hgqt::cli {

namespace {

struct FrontRow {
  int64_t epoch = 0;
  double score = NAN;  // val_accuracy or val_loss
  double ebops = NAN;
  std::string path;          // as written in pareto.json
  std::string file;          // where it is now (relative to the run dir when found there)
  double exact_ebops = NAN;  // from a traced archive, when one is known to come from it
  std::string exact_from;    // that archive
  bool exact_assumed = false;
};

struct Front {
  std::string score_name;  // "val_accuracy" or "val_loss"
  std::vector<FrontRow> rows;
};

fs::path require_run_dir(const std::string& run) {
  std::error_code ec;
  if (!fs::exists(run, ec)) throw std::runtime_error("run directory '" + run + "' does not exist");
  if (!fs::is_directory(run, ec))
    throw std::runtime_error("'" + run + "' is not a run directory (not a directory)");
  return fs::path(run);
}

std::string read_text(const fs::path& p, const std::string& what) {
  std::error_code ec;
  if (!fs::is_regular_file(p, ec)) throw std::runtime_error(p.string() + " not found: " + what);
  std::ifstream in(p, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + p.string());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

bool is_number(const json& j, const char* key) {
  return j.contains(key) && j[key].is_number();
}

// Checks metrics.jsonl: one JSON object per line with numeric "epoch" and "ebops". Returns the
// number of epochs; sets `has_accuracy` when an epoch has a numeric val_accuracy.
size_t check_metrics(const fs::path& run, bool* has_accuracy = nullptr) {
  const fs::path p = run / "metrics.jsonl";
  const auto text = read_text(p, "is this a run directory written by `hgqt train`?");
  size_t line_no = 0, epochs = 0;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    start = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) {
      if (end == text.size()) break;
      continue;
    }
    json j;
    try {
      j = json::parse(line);
    } catch (const json::parse_error& e) {
      throw std::runtime_error(p.string() + " is corrupt: line " + std::to_string(line_no) +
                               " is not valid JSON (" + e.what() + ")");
    }
    if (!j.is_object() || !is_number(j, "epoch") || !is_number(j, "ebops"))
      throw std::runtime_error(p.string() + " is corrupt: line " + std::to_string(line_no) +
                               " is not an epoch record (a JSON object with numbers 'epoch' and "
                               "'ebops')");
    ++epochs;
    if (has_accuracy && is_number(j, "val_accuracy")) *has_accuracy = true;
    if (end == text.size()) break;
  }
  if (epochs == 0) throw std::runtime_error(p.string() + " holds no epochs");
  return epochs;
}

Front read_front(const fs::path& run, bool has_accuracy) {
  const fs::path p = run / "pareto.json";
  const auto text = read_text(p, "is this a run directory written by `hgqt train`?");
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw std::runtime_error(p.string() + " is corrupt: not valid JSON (" + e.what() + ")");
  }
  if (!j.is_array())
    throw std::runtime_error(p.string() + " is corrupt: expected a JSON array of checkpoints");
  Front f;
  size_t i = 0;
  for (const auto& e : j) {
    const std::string where = p.string() + " is corrupt: entry " + std::to_string(i++);
    if (!e.is_object() || !is_number(e, "epoch") || !is_number(e, "ebops"))
      throw std::runtime_error(where + " lacks the numbers 'epoch' and 'ebops'");
    std::string name = is_number(e, "val_accuracy") ? "val_accuracy"
                       : is_number(e, "val_loss")   ? "val_loss"
                                                    : "";
    if (name.empty())
      throw std::runtime_error(where + " has neither 'val_accuracy' nor 'val_loss'");
    if (!f.score_name.empty() && f.score_name != name)
      throw std::runtime_error(where + " scores '" + name + "', the others '" + f.score_name + "'");
    f.score_name = name;
    FrontRow r;
    r.epoch = e["epoch"].get<int64_t>();
    r.score = e[name].get<double>();
    r.ebops = e["ebops"].get<double>();
    r.path = e.contains("path") && e["path"].is_string() ? e["path"].get<std::string>() : "";
    // The path was written relative to the directory training ran in; the run directory may
    // have moved since, so look for the file name in <run>/pareto/ first.
    std::error_code ec;
    const fs::path here = run / "pareto" / fs::path(r.path).filename();
    if (!r.path.empty() && fs::is_regular_file(here, ec))
      r.file = here.string();
    else if (!r.path.empty() && fs::is_regular_file(r.path, ec))
      r.file = r.path;
    else
      r.file = r.path.empty() ? "(no path)" : r.path + " (missing)";
    f.rows.push_back(r);
  }
  std::sort(f.rows.begin(), f.rows.end(),
            [](const FrontRow& a, const FrontRow& b) { return a.ebops < b.ebops; });
  if (f.score_name.empty()) f.score_name = has_accuracy ? "val_accuracy" : "val_loss";
  return f;
}

// The trace record of an archive directory: exact EBOPs (NaN when untraced or unreadable) and
// the epoch of the checkpoint traced (-1 when the archive does not record it).
struct TraceRecord {
  double exact_ebops = NAN;
  int64_t epoch = -1;
};
TraceRecord trace_record(const fs::path& archive) {
  TraceRecord rec;
  std::error_code ec;
  const fs::path mj = archive / "model.json";
  if (!fs::is_regular_file(mj, ec)) return rec;
  try {
    std::ifstream in(mj);
    const auto j = json::parse(in);
    const auto& t = j.at("trace");
    if (t.value("traced", false) && is_number(t, "exact_ebops")) {
      rec.exact_ebops = t["exact_ebops"].get<double>();
      if (t.contains("epoch") && t["epoch"].is_number_integer())
        rec.epoch = t["epoch"].get<int64_t>();
    }
  } catch (const std::exception&) {
  }
  return rec;
}

// Fills exact EBOPs from the traced archives in the run directory and in pareto/:
//  - an archive that records the epoch of the checkpoint it traced (`hgqt trace` writes
//    trace.epoch), whatever its name;
//  - for older archives, one named after the epoch: epoch0007.hgqt, epoch7.hgqt, e7.hgqt;
//  - an older <run>/model.hgqt (the default output of `hgqt trace RUN_DIR`, which traces best.pt):
//    taken for result.json's best epoch when it is newer than best.pt (marked as assumed).
void find_exact_ebops(const fs::path& run, Front& f) {
  std::error_code ec;
  const std::regex epoch_name(R"(^e(?:poch)?0*([0-9]+)\.hgqt$)");
  auto assign = [&](int64_t epoch, double exact, const fs::path& from, bool assumed) {
    for (auto& r : f.rows)
      if (r.epoch == epoch && (std::isnan(r.exact_ebops) || r.exact_assumed)) {
        r.exact_ebops = exact;
        r.exact_from = from.string();
        r.exact_assumed = assumed;
      }
  };
  for (const fs::path& dir : {run, run / "pareto"}) {
    if (!fs::is_directory(dir, ec)) continue;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      if (!entry.is_directory(ec)) continue;
      const TraceRecord rec = trace_record(entry.path());
      if (std::isnan(rec.exact_ebops)) continue;
      if (rec.epoch >= 0) {
        assign(rec.epoch, rec.exact_ebops, entry.path(), false);
        continue;
      }
      const std::string name = entry.path().filename().string();
      std::smatch m;
      if (std::regex_match(name, m, epoch_name))
        assign(std::stoll(m[1].str()), rec.exact_ebops, entry.path(), false);
    }
  }
  const fs::path model = run / "model.hgqt", best = run / "best.pt", result = run / "result.json";
  const TraceRecord rec = trace_record(model);
  const double exact = rec.exact_ebops;
  if (std::isnan(exact) || rec.epoch >= 0 || !fs::is_regular_file(best, ec) ||
      !fs::is_regular_file(result, ec))
    return;
  if (fs::last_write_time(model / "model.json", ec) < fs::last_write_time(best, ec)) return;
  int64_t best_epoch = -1;
  try {
    std::ifstream in(result);
    const auto j = json::parse(in);
    if (is_number(j, "best_epoch")) best_epoch = j["best_epoch"].get<int64_t>();
  } catch (const std::exception&) {
    return;
  }
  for (auto& r : f.rows)
    if (r.epoch == best_epoch && std::isnan(r.exact_ebops)) {
      r.exact_ebops = exact;
      r.exact_from = model.string();
      r.exact_assumed = true;
    }
}

void print_table(const fs::path& run, const Front& f, size_t epochs) {
  const bool acc = f.score_name == "val_accuracy";
  std::printf("Pareto front of %s: %zu checkpoint(s) of %zu epoch(s); %s (%s is better) vs EBOPs\n",
              run.string().c_str(), f.rows.size(), epochs, f.score_name.c_str(),
              acc ? "higher" : "lower");
  std::printf("%6s  %12s  %12s  %12s  %s\n", "epoch", f.score_name.c_str(), "EBOPs", "exact EBOPs",
              "file");
  bool any_missing = false;
  for (const auto& r : f.rows) {
    char exact[64];
    if (std::isnan(r.exact_ebops)) {
      std::snprintf(exact, sizeof exact, "-");
      any_missing = true;
    } else {
      std::snprintf(exact, sizeof exact, "%.0f%s", r.exact_ebops, r.exact_assumed ? "*" : "");
    }
    std::printf("%6lld  %12.*f  %12.0f  %12s  %s\n", static_cast<long long>(r.epoch), acc ? 4 : 6,
                r.score, r.ebops, exact, r.file.c_str());
  }
  for (const auto& r : f.rows)
    if (!r.exact_from.empty())
      std::printf("exact EBOPs of epoch %lld: traced archive %s%s\n",
                  static_cast<long long>(r.epoch), r.exact_from.c_str(),
                  r.exact_assumed ? " (* taken as traced from best.pt, which `hgqt trace RUN_DIR` "
                                    "traces; the archive does not record its checkpoint)"
                                  : "");
  if (any_missing)
    std::printf(
        "exact EBOPs (after the trace) not recorded for '-' rows: run `hgqt trace "
        "%s/pareto/epochNNNN.pt --data FILE --out %s/epochNNNN.hgqt`\n",
        run.string().c_str(), run.string().c_str());
}

std::string exe_dir() {
  std::error_code ec;
  auto p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? std::string() : p.parent_path().string();
}

fs::path find_plot_script() {
  std::vector<fs::path> tried;
  if (const char* env = std::getenv("HGQT_PLOT_SCRIPT"); env && *env) {
    std::error_code ec;
    if (!fs::is_regular_file(env, ec))
      throw std::runtime_error(std::string("HGQT_PLOT_SCRIPT names ") + env +
                               ", which does not exist");
    return env;
  }
  const std::string exe = exe_dir();
  if (!exe.empty()) {
    tried.push_back(fs::path(exe) / ".." / "scripts" / "plot_run.py");
    tried.push_back(fs::path(exe) / ".." / ".." / "scripts" / "plot_run.py");
    tried.push_back(fs::path(exe) / ".." / "share" / "hgqt" / "plot_run.py");
  }
  tried.push_back(fs::path(__FILE__).parent_path() / ".." / ".." / "scripts" / "plot_run.py");
  std::string list;
  for (const auto& t : tried) {
    std::error_code ec;
    if (fs::is_regular_file(t, ec)) return t.lexically_normal();
    list += "\n  " + t.lexically_normal().string();
  }
  throw std::runtime_error("plot script plot_run.py not found; looked at:" + list +
                           "\nset HGQT_PLOT_SCRIPT to its path");
}

// Runs scripts/plot_run.py KIND RUN OUT with the plotting Python. Throws on failure.
void run_plot_script(const std::string& kind, const fs::path& run, const fs::path& out) {
  const char* env = std::getenv("HGQT_PYTHON");
  const std::string python = env && *env ? env : "/usr/bin/python3";
  if (access(python.c_str(), X_OK) != 0)
    throw std::runtime_error("Python interpreter " + python + " not found or not executable" +
                             (env && *env ? " (from HGQT_PYTHON)"
                                          : "; install python3-matplotlib (apt-get install "
                                            "python3-matplotlib) or set HGQT_PYTHON"));
  const std::string script = find_plot_script().string();
  std::vector<std::string> args{python, script, kind, run.string(), out.string()};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = 0;
  if (posix_spawn(&pid, python.c_str(), nullptr, nullptr, argv.data(), environ) != 0)
    throw std::runtime_error("cannot run " + python);
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) throw std::runtime_error("waiting for " + python + " failed");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    const int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (code == 3)
      throw std::runtime_error("matplotlib is not available to " + python +
                               ": apt-get install python3-matplotlib, or set HGQT_PYTHON to an "
                               "interpreter that has it");
    throw std::runtime_error(script + " (run by " + python + ") failed with exit status " +
                             std::to_string(code) + "; " + out.string() + " not written");
  }
  std::error_code ec;
  if (!fs::is_regular_file(out, ec) || fs::file_size(out, ec) == 0)
    throw std::runtime_error(script + " did not write " + out.string());
}

}  // namespace

void add_report_commands(CLI::App& app, ReportCommands& c) {
  c.pareto_cmd = app.add_subcommand(
      "pareto", "Table of a run's Pareto-front checkpoints, and a plot of the metric vs EBOPs");
  c.pareto_cmd->add_option("run_dir", c.pareto_run, "Run directory")->required();
  c.pareto_cmd->add_option("--out", c.pareto_out,
                           "PNG file of the plot (default RUN_DIR/pareto.png)");
  c.pareto_cmd->add_flag("--no-plot", c.no_plot, "Print the table only (no Python needed)");

  c.plot_cmd = app.add_subcommand(
      "plot", "Training curves of a run: loss, accuracy, EBOPs and beta vs epoch (PNG)");
  c.plot_cmd->add_option("run_dir", c.plot_run, "Run directory")->required();
  c.plot_cmd->add_option("--out", c.plot_out, "PNG file (default RUN_DIR/training.png)");
}

bool run_report_commands(const ReportCommands& c, int& rc) {
  rc = 0;
  if (c.pareto_cmd && *c.pareto_cmd) {
    const auto run = require_run_dir(c.pareto_run);
    bool has_accuracy = false;
    const size_t epochs = check_metrics(run, &has_accuracy);
    auto front = read_front(run, has_accuracy);
    find_exact_ebops(run, front);
    print_table(run, front, epochs);
    if (!c.no_plot) {
      const fs::path out = c.pareto_out.empty() ? run / "pareto.png" : fs::path(c.pareto_out);
      run_plot_script("pareto", run, out);
      std::printf("wrote %s\n", out.string().c_str());
    }
    return true;
  }
  if (c.plot_cmd && *c.plot_cmd) {
    const auto run = require_run_dir(c.plot_run);
    const size_t epochs = check_metrics(run);
    const fs::path out = c.plot_out.empty() ? run / "training.png" : fs::path(c.plot_out);
    run_plot_script("training", run, out);
    std::printf("wrote %s (%zu epochs)\n", out.string().c_str(), epochs);
    return true;
  }
  return false;
}

}  // namespace hgqt::cli
