// The `hgqt` command line: parses arguments, calls the library, prints. Nothing else.
#include <torch/torch.h>
#include <torch/version.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "export_cmds.h"
#include "hgqt/archive/archive.h"
#include "hgqt/config/config.h"
#include "hgqt/data/dataset.h"
#include "hgqt/model/checkpoint.h"
#include "hgqt/model/summary.h"
#include "hgqt/train/distill.h"
#include "hgqt/train/trainer.h"
#include "hgqt/util/allocator.h"
#include "hgqt/util/blas_info.h"
#include "report_cmds.h"

namespace fs = std::filesystem;
using namespace hgqt;

namespace {

std::string blas_line() {
  // libblas.so.3 is loaded lazily: run one product first.
  auto a = torch::ones({64, 64});
  (void)torch::mm(a, a);
  return util::describe(util::detect_blas());
}

std::string version_text() {
  return std::string("hgqt ") + HGQT_VERSION + " (LibTorch " + TORCH_VERSION + ", " +
         std::to_string(torch::get_num_threads()) + " threads)";
}

int cmd_doctor() {
  std::printf("%s\n", version_text().c_str());
  std::printf("BLAS:    %s\n", blas_line().c_str());
  std::printf("threads: intra-op %d, inter-op %d\n", torch::get_num_threads(),
              at::get_num_interop_threads());
  std::printf("CUDA:    %s\n",
              torch::cuda::is_available()
                  ? (std::to_string(torch::cuda::device_count()) + " device(s)").c_str()
                  : "not available (CPU only)");
  // A quick matrix-product rate, to spot a reference BLAS at a glance.
  auto a = torch::randn({512, 512}), b = torch::randn({512, 512});
  (void)torch::mm(a, b);
  const int reps = 20;
  auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; ++r) (void)torch::mm(a, b);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("sgemm:   %.1f GFLOP/s (512x512x512, %d reps)\n",
              reps * 2.0 * 512 * 512 * 512 / s / 1e9, reps);
  const bool fmnist = fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz");
  std::printf("data:    Fashion-MNIST %s\n",
              fmnist ? "installed (/usr/share/datasets/fashion-mnist)"
                     : "missing (apt-get install dataset-fashion-mnist)");
  return 0;
}

void print_result(const train::TrainResult& r, const std::string& run_dir) {
  auto best = model::load_checkpoint(r.best_checkpoint);
  std::printf("\nbest checkpoint: %s (epoch %lld)\n", r.best_checkpoint.c_str(),
              static_cast<long long>(r.best.epoch));
  std::printf("%s", model::format_summary(model::summarize(best.model)).c_str());
  if (r.anomaly.samples > 0) {
    std::printf("%s", train::format_anomaly(r.anomaly, "test", r.test_ebops).c_str());
  } else if (r.test.samples > 0) {
    if (std::isnan(r.test.accuracy))
      std::printf("test loss: %.5f on %lld samples, EBOPs %.0f\n", r.test.loss,
                  static_cast<long long>(r.test.samples), r.test_ebops);
    else
      std::printf("test accuracy: %.2f%% on %lld samples, EBOPs %.0f\n", 100.0 * r.test.accuracy,
                  static_cast<long long>(r.test.samples), r.test_ebops);
  }
  std::printf("run directory: %s (config.yaml, metrics.jsonl, last.pt, best.pt, pareto/)\n",
              run_dir.c_str());
}

// Ctrl-C (SIGINT) or SIGTERM during training: the trainer saves resume.pt before the next step
// and returns. A second signal ends the process at once (the default action).
volatile std::sig_atomic_t g_stop_signal = 0;
extern "C" void on_stop_signal(int sig) {
  g_stop_signal = sig;
  std::signal(sig, SIG_DFL);
}

int cmd_train(const std::string& config_path, const std::vector<std::string>& sets, std::string out,
              bool overwrite, bool quiet, const std::string& resume_dir) {
  if (!resume_dir.empty() && !config_path.empty())
    throw std::runtime_error(
        "give either a config or --resume RUN_DIR (a resumed run uses the "
        "run's own config), not both");
  if (!resume_dir.empty() && (!sets.empty() || !out.empty() || overwrite))
    throw std::runtime_error(
        "--resume continues a run exactly: --set, --out and --overwrite "
        "do not apply");
  if (resume_dir.empty() && config_path.empty())
    throw std::runtime_error("hgqt train needs a config file (or --resume RUN_DIR)");
  config::RunConfig cfg = resume_dir.empty() ? config::load_run_config(config_path, sets)
                                             : train::resume_config(resume_dir);
  if (!resume_dir.empty()) out = resume_dir;
  if (out.empty()) out = (fs::path("runs") / cfg.name).string();
  if (resume_dir.empty() && fs::exists(fs::path(out) / "last.pt") && !overwrite)
    throw std::runtime_error("run directory '" + out +
                             "' already holds a run; choose another --out, pass --overwrite, or "
                             "continue it with hgqt train --resume " +
                             out);
  std::printf("%s\nBLAS: %s\n", version_text().c_str(), blas_line().c_str());
  train::TrainOptions opt;
  opt.run_dir = out;
  opt.quiet = quiet;
  opt.resume = !resume_dir.empty();
  opt.interrupted = [] { return g_stop_signal != 0; };
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGTERM, on_stop_signal);
  auto result = train::train(cfg, opt);
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGTERM, SIG_DFL);
  if (result.interrupted) {
    std::printf(
        "\ninterrupted (%s) in epoch %lld at step %lld/%lld: saved %s\n"
        "continue with: hgqt train --resume %s\n",
        g_stop_signal == SIGTERM ? "SIGTERM" : "Ctrl-C",
        static_cast<long long>(result.interrupted_epoch),
        static_cast<long long>(result.interrupted_step),
        static_cast<long long>(result.steps_per_epoch), train::resume_path(out).c_str(),
        out.c_str());
    return 130;
  }
  print_result(result, out);
  return 0;
}

// hgqt distill-targets: a teacher's outputs (or reconstruction errors) on data sets of an HDF5
// file, added as <features><suffix>. The file is copied, extended and renamed into place, so an
// interrupted run leaves the original intact.
int cmd_distill_targets(const std::string& teacher_path, const std::string& file,
                        const std::vector<std::string>& feature_sets, std::string out,
                        const std::string& target, const std::string& suffix) {
  if (out.empty()) out = file;
  if (!fs::is_regular_file(file)) throw data::DataError("'" + file + "': no such data file");
  auto teacher = train::Teacher::load(teacher_path);
  config::DistillationSpec spec;
  spec.target = target;
  const auto present = data::list_h5_datasets(file);
  std::vector<std::pair<std::string, data::Array>> results;
  for (const auto& name : feature_sets) {
    const std::string dest = name + suffix;
    if (std::find(present.begin(), present.end(), dest) != present.end())
      throw data::DataError("'" + file + "' already holds a data set '" + dest +
                            "'; choose another --suffix or --out");
    const auto x = data::read_h5_array(file, name);
    auto t = torch::from_blob(const_cast<float*>(x.values.data()), x.shape, torch::kFloat);
    const auto start = std::chrono::steady_clock::now();
    auto y = train::teacher_targets(teacher, t, spec).contiguous();
    data::Array a;
    a.shape = {y.size(0), y.size(1)};
    a.values.assign(y.data_ptr<float>(), y.data_ptr<float>() + y.numel());
    std::printf("%s: %s [%lld, %lld] from %s (%.1fs)\n", teacher.description().c_str(),
                dest.c_str(), static_cast<long long>(a.shape[0]),
                static_cast<long long>(a.shape[1]), name.c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    results.emplace_back(dest, std::move(a));
  }
  const std::string tmp = out + ".distill.tmp";
  fs::copy_file(file, tmp, fs::copy_options::overwrite_existing);
  try {
    for (const auto& [name, a] : results) data::write_h5_array(tmp, name, a);
    fs::rename(tmp, out);
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  std::printf("wrote %s; use it as data.<split>.teacher with train.distillation (no teacher key)\n",
              out.c_str());
  return 0;
}

int cmd_eval(const std::string& target, const std::string& data_file, const std::string& features,
             const std::string& labels) {
  const auto path = model::resolve_checkpoint_path(target);
  auto ck = model::load_checkpoint(path);
  auto splits = cli::load_checkpoint_data(ck, path, data_file, features, labels, true);
  int64_t outputs = 1;
  for (auto d : ck.model->output_shape()) outputs *= d;
  const bool cls = ck.meta.loss == "cross_entropy";
  const auto cfg = config::parse_run_config(ck.meta.config_yaml, path + " (embedded config)");
  if (cfg.train.target == "input") {
    auto t = data::to_autoencoder_tensors(splits.train, ck.model->input_shape(),
                                          ck.model->output_shape(), data_file);
    auto a = train::evaluate_anomaly(ck.model, t, cfg.data);
    std::printf("checkpoint: %s (epoch %lld)\n", path.c_str(),
                static_cast<long long>(ck.meta.epoch));
    std::printf("%s", train::format_anomaly(a, "eval", ck.meta.ebops).c_str());
    return 0;
  }
  auto t = data::to_tensors(splits.train, ck.model->input_shape(), outputs, cls, data_file);
  auto r = train::evaluate(ck.model, t, ck.meta.loss);
  std::printf("checkpoint: %s (epoch %lld)\n", path.c_str(), static_cast<long long>(ck.meta.epoch));
  if (cls)
    std::printf("accuracy: %.4f  loss: %.5f  samples: %lld  EBOPs: %.0f\n", r.accuracy, r.loss,
                static_cast<long long>(r.samples), ck.meta.ebops);
  else
    std::printf("loss: %.6f  samples: %lld  EBOPs: %.0f\n", r.loss,
                static_cast<long long>(r.samples), ck.meta.ebops);
  return 0;
}

int cmd_summary(const std::string& target) {
  const auto path = model::resolve_checkpoint_path(target);
  auto ck = model::load_checkpoint(path);
  if (ck.meta.loss != "cross_entropy")
    std::printf("checkpoint: %s (epoch %lld, val_loss %.6f)\n", path.c_str(),
                static_cast<long long>(ck.meta.epoch), ck.meta.val_loss);
  else
    std::printf("checkpoint: %s (epoch %lld, val_accuracy %.4f)\n", path.c_str(),
                static_cast<long long>(ck.meta.epoch), ck.meta.val_accuracy);
  std::printf("%s", model::format_summary(model::summarize(ck.model)).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  hgqt::util::tune_allocator();
  CLI::App app{"hgqt: high-granularity quantization-aware training for FPGAs and ASICs"};
  app.require_subcommand(0, 1);
  bool show_version = false;
  app.add_flag("--version", show_version, "Print the version, LibTorch and BLAS in use");

  std::string config_path, out, target, data_file, features, labels, src_dir;
  std::vector<std::string> sets;
  bool overwrite = false, quiet = false;

  std::string resume_dir;
  auto* train_cmd = app.add_subcommand("train", "Train the model of a YAML config");
  train_cmd->add_option("config", config_path, "Config file (YAML)");
  train_cmd->add_option("--resume", resume_dir,
                        "Continue the run in RUN_DIR exactly where it stopped (its resume.pt)");
  train_cmd->add_option("--set", sets, "Override a config key: key.path=value (repeatable)");
  train_cmd->add_option("--out", out, "Run directory (default runs/<name>)");
  train_cmd->add_flag("--overwrite", overwrite, "Replace an existing run in the run directory");
  train_cmd->add_flag("--quiet", quiet, "No per-epoch lines");

  auto* eval_cmd = app.add_subcommand("eval", "Evaluate a run or checkpoint on a data file");
  eval_cmd->add_option("checkpoint", target, "Run directory or checkpoint file")->required();
  eval_cmd->add_option("--data", data_file, "Data file (format of the run's config)")->required();
  eval_cmd->add_option("--features", features,
                       "HDF5 data set of the features (default: the config's)");
  eval_cmd->add_option("--labels", labels, "HDF5 data set of the labels (default: the config's)");

  auto* summary_cmd = app.add_subcommand("summary", "Per-layer bit widths, pruning and EBOPs");
  summary_cmd->add_option("checkpoint", target, "Run directory or checkpoint file")->required();

  auto* data_cmd = app.add_subcommand("data", "Prepare data sets");
  data_cmd->require_subcommand(1);
  auto* fmnist =
      data_cmd->add_subcommand("fashion-mnist", "Convert Debian's Fashion-MNIST to HDF5");
  std::string fm_out = "data/fashion_mnist.h5";
  src_dir = "/usr/share/datasets/fashion-mnist";
  fmnist->add_option("--out", fm_out, "Output HDF5 file");
  fmnist->add_option("--src", src_dir, "Folder of the IDX files");

  auto* doctor_cmd = app.add_subcommand("doctor", "Report LibTorch, BLAS, threads and data");

  std::string kd_teacher, kd_data, kd_out, kd_target = "output", kd_suffix = "_teacher";
  std::vector<std::string> kd_features;
  auto* kd_cmd = app.add_subcommand(
      "distill-targets",
      "Precompute a teacher's outputs on HDF5 data sets (for train.distillation)");
  kd_cmd->add_option("teacher", kd_teacher, "TorchScript file, hgqt checkpoint or run directory")
      ->required();
  kd_cmd->add_option("--data", kd_data, "HDF5 data file")->required();
  kd_cmd->add_option("--features", kd_features, "Data set(s) of features (repeatable)")->required();
  kd_cmd->add_option("--out", kd_out,
                     "Output HDF5 file (default: the data file, replaced atomically)");
  kd_cmd->add_option("--target", kd_target, "output | reconstruction_error")
      ->check(CLI::IsMember({"output", "reconstruction_error"}));
  kd_cmd->add_option("--suffix", kd_suffix, "Name of each new data set: <features><suffix>");

  cli::ExportCommands export_cmds;
  cli::add_export_commands(app, export_cmds);
  cli::ReportCommands report_cmds;
  cli::add_report_commands(app, report_cmds);

  CLI11_PARSE(app, argc, argv);
  try {
    if (show_version) {
      std::printf("%s\nBLAS: %s\n", version_text().c_str(), blas_line().c_str());
      return 0;
    }
    if (*train_cmd) return cmd_train(config_path, sets, out, overwrite, quiet, resume_dir);
    if (*kd_cmd)
      return cmd_distill_targets(kd_teacher, kd_data, kd_features, kd_out, kd_target, kd_suffix);
    if (*eval_cmd) return cmd_eval(target, data_file, features, labels);
    if (*summary_cmd) return cmd_summary(target);
    if (*fmnist) {
      data::convert_fashion_mnist(src_dir, fm_out);
      std::printf("wrote %s (x_train, y_train, x_test, y_test)\n", fm_out.c_str());
      return 0;
    }
    if (*doctor_cmd) return cmd_doctor();
    int rc = 0;
    if (cli::run_export_commands(export_cmds, rc)) return rc;
    if (cli::run_report_commands(report_cmds, rc)) return rc;
    std::cout << app.help();
    return 0;
  } catch (const config::ConfigError& e) {
    std::fprintf(stderr, "config error: %s\n", e.what());
  } catch (const archive::ArchiveError& e) {
    std::fprintf(stderr, "archive error: %s\n", e.what());
  } catch (const data::DataError& e) {
    std::fprintf(stderr, "data error: %s\n", e.what());
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what_without_backtrace());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
  }
  return 1;
}
