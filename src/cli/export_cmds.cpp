// `hgqt archive | trace | emulate | export | resources`: from a checkpoint to bit-exact hardware.
#include "export_cmds.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "hgqt/archive/emulator.h"
#include "hgqt/data/dataset.h"
#include "hgqt/data/tensors.h"
#include "hgqt/export/hls.h"
#include "hgqt/export/qonnx.h"
#include "hgqt/export/resources.h"
#include "hgqt/export/verilog.h"
#include "hgqt/model/archive_bridge.h"
#include "hgqt/model/checkpoint.h"
#include "hgqt/train/metrics.h"

namespace fs = std::filesystem;

namespace hgqt::cli {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Features of an HDF5 data set as rows for the archive, after its preprocessing (float32, as in
// training), at most `limit` rows (0: all).
// Rows made to overflow: sample r of `x` times `scale`, with the sign flipped on odd rows.
std::vector<double> overflow_rows(const std::vector<double>& x, int64_t width, int64_t n,
                                  double scale) {
  const int64_t have = static_cast<int64_t>(x.size()) / width;
  std::vector<double> out(n * width);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < width; ++c)
      out[r * width + c] = x[(r % have) * width + c] * scale * (r % 2 ? -1.0 : 1.0);
  return out;
}

archive::Archive load_traced(const std::string& path, bool allow_untraced) {
  auto a = archive::read_archive(path);
  if (!a.trace.traced && !allow_untraced)
    throw std::runtime_error(
        "archive '" + path +
        "' is not traced: its activation integer bits and signs were never calibrated, so the "
        "hardware may wrap on real data and the widths are not minimal. Run `hgqt trace` first, "
        "or pass --allow-untraced to export it as it is");
  return a;
}

// Loads the calibration features of a checkpoint's config format from `file`, standardized.
torch::Tensor checkpoint_features(const model::Checkpoint& ck, const std::string& ck_path,
                                  const std::string& file, const std::string& features,
                                  int64_t limit) {
  auto splits = load_checkpoint_data(ck, ck_path, file, features, "", false);
  auto& x = splits.train.x;
  int64_t rows = x.rows();
  if (limit > 0 && rows > limit) {
    rows = limit;
    x.values.resize(rows * x.row_size());
    x.shape[0] = rows;
  }
  std::vector<int64_t> shape{rows};
  for (auto d : ck.model->input_shape()) shape.push_back(d);
  int64_t per = 1;
  for (auto d : ck.model->input_shape()) per *= d;
  if (x.row_size() != per)
    throw data::DataError(file + ": rows of " + std::to_string(x.row_size()) +
                          " features, but the model takes " + std::to_string(per));
  return torch::from_blob(x.values.data(), shape, torch::kFloat).clone();
}

}  // namespace

data::Splits load_checkpoint_data(const model::Checkpoint& ck, const std::string& ck_path,
                                  const std::string& file, const std::string& features,
                                  const std::string& labels, bool prefer_test_names) {
  auto cfg = config::parse_run_config(ck.meta.config_yaml, ck_path + " (embedded config)");
  config::DataSpec spec = cfg.data;
  const auto& src = prefer_test_names && cfg.data.test.present() ? cfg.data.test : cfg.data.train;
  // No teacher outputs: evaluating, tracing and exporting use the features and labels only.
  spec.train = {file, features.empty() ? src.features : features,
                labels.empty() ? src.labels : labels, /*teacher=*/""};
  spec.validation = {};
  spec.test = {};
  spec.validation_split = 0;
  spec.test_split = 0;
  spec.standardize = false;
  spec.classes.clear();  // evaluation and calibration use every row of the given file
  spec.anomaly_classes.clear();
  auto splits = data::load_splits(spec, ".");
  if (!ck.meta.feature_mean.empty()) {
    data::Standardizer st{ck.meta.feature_mean, ck.meta.feature_std};
    st.apply(splits.train.x);
  }
  return splits;
}

void add_export_commands(CLI::App& app, ExportCommands& c) {
  c.archive_cmd =
      app.add_subcommand("archive", "Write the model archive of a checkpoint (untraced)");
  c.archive_cmd->add_option("checkpoint", c.target, "Run directory or checkpoint file")->required();
  c.archive_cmd->add_option("--out", c.out, "Archive directory (default <run>/model.hgqt)");

  c.trace_cmd = app.add_subcommand(
      "trace", "Calibrate activation integer bits and signs on data, then write the archive");
  c.trace_cmd->add_option("checkpoint", c.target, "Run directory or checkpoint file")->required();
  c.trace_cmd
      ->add_option("--data", c.data_file, "Calibration data file (format of the run's config)")
      ->required();
  c.trace_cmd->add_option("--features", c.features,
                          "HDF5 data set of the features (default: the config's train features)");
  c.trace_cmd->add_option("--samples", c.samples, "Use at most this many samples (0: all)");
  c.trace_cmd->add_option("--out", c.out, "Archive directory (default <run>/model.hgqt)");

  c.emulate_cmd = app.add_subcommand("emulate", "Run an archive with the integer emulator");
  c.emulate_cmd->add_option("archive", c.target, "Archive directory")->required();
  c.emulate_cmd->add_option("--data", c.emu_data, "HDF5 data file")->required();
  c.emulate_cmd->add_option("--features", c.emu_features, "Data set of the features")
      ->default_val("x_test");
  c.emulate_cmd
      ->add_option("--labels", c.labels, "Data set of the labels (accuracy; skipped when absent)")
      ->default_val("y_test");
  c.emulate_cmd->add_option("--samples", c.emu_samples, "Use at most this many samples (0: all)");
  c.emulate_cmd->add_option("--scale", c.emu_scale,
                            "Multiply the inputs by this factor (overflow tests)");
  c.emulate_cmd->add_option("--print", c.print_rows, "Print the outputs of the first N samples");
  c.emulate_cmd->add_option("--out", c.emu_out,
                            "Write the outputs to this HDF5 file (data set 'outputs')");
  c.emulate_cmd->add_flag("--check", c.check,
                          "Compare with the LibTorch model's eval forward (float64 and float32)");
  c.emulate_cmd->add_option("--threads", c.emu_threads, "Threads of the emulator (0: all cores)")
      ->check(CLI::NonNegativeNumber)
      ->default_val(0);
  c.emulate_cmd->add_flag(
      "--exact", c.emu_exact,
      "Run the exact path (int128, one sample at a time) instead of the batched one");

  c.export_cmd = app.add_subcommand(
      "export", "Export an archive: hls (Vitis), catapult, oneapi, verilog or qonnx");
  c.export_cmd->add_option("archive", c.target, "Archive directory")->required();
  c.export_cmd
      ->add_option("--format", c.format,
                   "hls (Vitis HLS, ap_fixed), catapult or oneapi (ac_fixed), verilog or qonnx")
      ->required()
      ->check(CLI::IsMember({"hls", "catapult", "oneapi", "verilog", "qonnx"}));
  c.export_cmd
      ->add_option("--out", c.export_out,
                   "Output directory (hls, catapult, oneapi, verilog) or .onnx file (qonnx)")
      ->required();
  c.export_cmd->add_option("--name", c.export_name, "Top function / module name")
      ->default_val("myproject");
  c.export_cmd->add_option("--part", c.part,
                           "hls: FPGA part (default xcvu13p-flga2577-2-e); catapult: technology "
                           "library or Xilinx part (default nangate-45nm_beh); oneapi: device "
                           "family, part or BSP:variant (default Agilex7)");
  c.export_cmd
      ->add_option("--clock-ns", c.clock_ns,
                   "Clock period in ns (hls, catapult, oneapi; verilog: place the registers by "
                   "estimated delay for it, instead of --pipeline-stages)")
      ->default_val(5.0);
  c.export_cmd
      ->add_option("--pipeline-stages", c.pipeline_stages,
                   "Register stages (verilog; 0: combinational)")
      ->default_val(1);
  c.export_cmd
      ->add_option("--const-mult", c.const_mult,
                   "Constant multiplications (verilog): shared (one adder graph per layer), csd "
                   "(one shift-add tree per output) or mul")
      ->check(CLI::IsMember({"shared", "csd", "mul"}))
      ->default_val("shared");
  c.export_cmd
      ->add_option("--adder-depth", c.adder_extra_depth,
                   "verilog, --const-mult shared: adder levels sharing may add to an output")
      ->check(CLI::Range(0, 16))
      ->default_val(2);
  c.export_cmd->add_flag(
      "--allow-widening", c.allow_widening,
      "qonnx: widen heterogeneous/WRAP activation quantizers to one type per tensor");
  c.export_cmd->add_flag("--rnd-offset", c.rnd_offset,
                         "qonnx: export RND (half up) exactly as Add(x, scale/2) + a FLOOR Quant");
  c.export_cmd->add_flag("--allow-untraced", c.allow_untraced,
                         "Export an archive that was never traced");
  c.export_cmd->add_option("--tb-data", c.tb_data,
                           "HDF5 file with testbench inputs (default: random inputs)");
  c.export_cmd->add_option("--tb-features", c.tb_features, "Data set of the testbench inputs")
      ->default_val("x_test");
  c.export_cmd
      ->add_option("--tb-samples", c.tb_samples, "Testbench samples taken from --tb-data (0: all)")
      ->default_val(0);
  c.export_cmd
      ->add_option("--tb-overflow", c.tb_overflow,
                   "Extra testbench samples scaled to overflow the quantizers")
      ->default_val(0);
  c.export_cmd->add_option("--tb-overflow-scale", c.tb_scale, "Scale of those samples")
      ->default_val(8.0);

  c.resources_cmd = app.add_subcommand(
      "resources", "Synthesize exported Verilog with Yosys; LUTs next to exact EBOPs");
  c.resources_cmd
      ->add_option("dir", c.target, "Directory written by `hgqt export --format verilog`")
      ->required();
  c.resources_cmd
      ->add_option("--archive", c.res_archive, "The archive it was exported from (for EBOPs)")
      ->required();
  c.resources_cmd->add_option("--name", c.name, "Top module")->default_val("myproject");
  c.resources_cmd->add_option("--family", c.family, "synth_xilinx -family")->default_val("xcup");
  c.resources_cmd->add_flag("--nodsp", c.nodsp, "Map multipliers to LUTs (no DSP48)");
  c.resources_cmd->add_option("--json", c.res_json, "Also write the figures to this JSON file");
}

bool run_export_commands(const ExportCommands& c, int& rc) {
  rc = 0;
  if (c.archive_cmd && *c.archive_cmd) {
    const auto path = model::resolve_checkpoint_path(c.target);
    auto ck = model::load_checkpoint(path);
    const std::string out =
        c.out.empty() ? (fs::path(path).parent_path() / "model.hgqt").string() : c.out;
    auto a = model::to_archive(ck.model, &ck.meta, fs::path(out).stem().string());
    archive::write_archive(a, out);
    std::printf("wrote %s (untraced: run `hgqt trace` before exporting)\n", out.c_str());
    return true;
  }
  if (c.trace_cmd && *c.trace_cmd) {
    const auto path = model::resolve_checkpoint_path(c.target);
    auto ck = model::load_checkpoint(path);
    auto x = checkpoint_features(ck, path, c.data_file, c.features, c.samples);
    const auto t0 = std::chrono::steady_clock::now();
    const auto r = model::trace(ck.model, x);
    const std::string out =
        c.out.empty() ? (fs::path(path).parent_path() / "model.hgqt").string() : c.out;
    auto a = model::to_archive(ck.model, &ck.meta, fs::path(out).stem().string());
    a.trace = {true,
               r.samples,
               fs::path(c.data_file).filename().string(),
               r.exact_ebops,
               fs::path(path).filename().string(),
               ck.meta.epoch};
    archive::write_archive(a, out);
    std::printf("trace: %lld samples of %s, %lld passes, %.1f s\n",
                static_cast<long long>(r.samples), c.data_file.c_str(),
                static_cast<long long>(r.passes), seconds_since(t0));
    std::printf("  activation quantizers: %lld (%lld parameter elements)\n",
                static_cast<long long>(r.quantizers), static_cast<long long>(r.elements));
    std::printf("  integer bits widened: %lld, widths narrowed: %lld, signs dropped: %lld\n",
                static_cast<long long>(r.widened), static_cast<long long>(r.narrowed),
                static_cast<long long>(r.sign_dropped));
    std::printf("  EBOPs: %.0f in training, %.0f exact after the trace\n", r.ebops_before,
                r.exact_ebops);
    std::printf("wrote %s\n", out.c_str());
    return true;
  }
  if (c.emulate_cmd && *c.emulate_cmd) {
    auto a = archive::read_archive(c.target);
    int64_t rows = 0;
    auto x = archive::load_model_inputs(a, c.emu_data, c.emu_features, c.emu_samples, rows);
    if (c.emu_scale != 1.0)
      for (auto& v : x) v *= c.emu_scale;
    archive::EmulatorOptions options;
    options.threads = c.emu_threads;
    options.exact = c.emu_exact;
    archive::Emulator emu(a, options);
    archive::EmulatorStats stats;
    const auto t0 = std::chrono::steady_clock::now();
    const auto y = emu.run_batch(x, rows, &stats);
    const double secs = seconds_since(t0);
    const int64_t out = emu.output_size();
    const std::string path = !emu.batched() || c.emu_exact ? "exact path"
                             : c.emu_threads > 0
                                 ? "batched, " + std::to_string(c.emu_threads) + " thread(s)"
                                 : "batched, all cores";
    std::printf(
        "emulate: %lld samples in %.2f s (%.1f us/sample, %s); overflows: %lld wrapped, %lld "
        "saturated\n",
        static_cast<long long>(rows), secs, 1e6 * secs / std::max<int64_t>(rows, 1), path.c_str(),
        static_cast<long long>(stats.wrapped), static_cast<long long>(stats.saturated));
    for (int64_t r = 0; r < std::min<int64_t>(c.print_rows, rows); ++r) {
      std::printf("  [%lld]", static_cast<long long>(r));
      for (int64_t o = 0; o < out; ++o) std::printf(" %.17g", y[r * out + o]);
      std::printf("\n");
    }
    const auto names = data::list_h5_datasets(c.emu_data);
    const bool has_labels = std::find(names.begin(), names.end(), c.labels) != names.end();
    if (a.loss == "cross_entropy" && has_labels) {
      auto lab = data::read_h5_array(c.emu_data, c.labels);
      int64_t correct = 0;
      for (int64_t r = 0; r < rows; ++r) {
        int64_t best = 0;
        for (int64_t o = 1; o < out; ++o)
          if (y[r * out + o] > y[r * out + best]) best = o;
        correct += best == static_cast<int64_t>(lab.values[r]);
      }
      std::printf("accuracy: %.4f (%lld of %lld)\n", static_cast<double>(correct) / rows,
                  static_cast<long long>(correct), static_cast<long long>(rows));
    }
    if (a.loss != "cross_entropy" && out == a.input_size()) {
      // An autoencoder: the anomaly score of a sample is its reconstruction MSE against its
      // (preprocessed) input.
      std::vector<double> err(static_cast<size_t>(rows), 0.0);
      double sum = 0;
      for (int64_t r = 0; r < rows; ++r) {
        double e = 0;
        for (int64_t o = 0; o < out; ++o) {
          const double d = y[r * out + o] - x[r * out + o];
          e += d * d;
        }
        err[static_cast<size_t>(r)] = e / static_cast<double>(out);
        sum += err[static_cast<size_t>(r)];
      }
      std::printf("reconstruction MSE (outputs vs inputs): %.6f on %lld samples\n",
                  sum / std::max<int64_t>(rows, 1), static_cast<long long>(rows));
      // The normal classes come from the run's config next to a default-placed archive.
      const fs::path run_cfg = fs::path(c.target).lexically_normal().parent_path() / "config.yaml";
      std::error_code ec;
      if (has_labels && fs::exists(run_cfg, ec)) {
        const auto cfg = config::load_run_config(run_cfg.string());
        if (cfg.train.target == "input" && !cfg.data.classes.empty()) {
          auto lab = data::read_h5_array(c.emu_data, c.labels);
          lab.values.resize(static_cast<size_t>(rows * std::max<int64_t>(lab.row_size(), 1)));
          lab.shape[0] = rows;
          const auto labels = data::class_labels(lab, c.emu_data + ":" + c.labels);
          auto normal = cfg.data.classes, anomalies = cfg.data.anomaly_classes;
          if (anomalies.empty())
            for (int64_t l : labels)
              if (std::find(normal.begin(), normal.end(), l) == normal.end() &&
                  std::find(anomalies.begin(), anomalies.end(), l) == anomalies.end())
                anomalies.push_back(l);
          std::sort(normal.begin(), normal.end());
          std::sort(anomalies.begin(), anomalies.end());
          std::vector<double> scores;
          std::vector<bool> positive;
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t l = labels[static_cast<size_t>(r)];
            const bool is_anomaly = std::binary_search(anomalies.begin(), anomalies.end(), l);
            if (!is_anomaly && !std::binary_search(normal.begin(), normal.end(), l)) continue;
            scores.push_back(err[static_cast<size_t>(r)]);
            positive.push_back(is_anomaly);
          }
          auto list = [](const std::vector<int64_t>& v) {
            std::string t = "[";
            for (size_t i = 0; i < v.size(); ++i) t += (i ? ", " : "") + std::to_string(v[i]);
            return t + "]";
          };
          std::printf(
              "ROC AUC (anomaly score = reconstruction MSE; normal classes %s, anomalies "
              "%s): %.4f (from %s)\n",
              list(normal).c_str(), list(anomalies).c_str(), train::roc_auc(scores, positive),
              run_cfg.string().c_str());
        }
      }
    } else if (a.loss != "cross_entropy" && has_labels) {
      auto lab = data::read_h5_array(c.emu_data, c.labels);
      if (lab.row_size() == out && lab.rows() >= rows) {
        double sum = 0;
        for (int64_t n = 0; n < rows * out; ++n) {
          const double d = y[n] - lab.values[n];
          sum += d * d;
        }
        std::printf("MSE (outputs vs %s): %.6f on %lld samples\n", c.labels.c_str(),
                    sum / std::max<int64_t>(rows * out, 1), static_cast<long long>(rows));
      }
    }
    if (!c.emu_out.empty()) {
      data::Array arr;
      arr.shape = {rows, out};
      arr.values.assign(y.begin(), y.end());
      data::write_h5_array(c.emu_out, "outputs", arr, true);
      std::printf("wrote %s (data set 'outputs', float32)\n", c.emu_out.c_str());
    }
    if (c.check) {
      auto m = model::from_archive(a);
      std::vector<int64_t> shape{rows};
      for (auto d : a.input_shape) shape.push_back(d);
      auto xt = torch::from_blob(const_cast<double*>(x.data()), shape, torch::kDouble).clone();
      auto ref64 = model::forward_float64(m, xt).contiguous();
      torch::Tensor ref32;
      {
        torch::NoGradGuard no_grad;
        m->eval();
        ref32 = m->forward(xt.to(torch::kFloat)).to(torch::kDouble).contiguous();
      }
      int64_t bad64 = 0, bad32 = 0;
      for (int64_t n = 0; n < rows * out; ++n) {
        bad64 += ref64.data_ptr<double>()[n] != y[n];
        bad32 += ref32.data_ptr<double>()[n] != y[n];
      }
      std::printf("check: LibTorch eval float64: %lld mismatches of %lld outputs\n",
                  static_cast<long long>(bad64), static_cast<long long>(rows * out));
      std::printf(
          "check: LibTorch eval float32: %lld mismatches (%.4f%%; float32 cannot hold "
          "every exact sum)\n",
          static_cast<long long>(bad32), 100.0 * bad32 / std::max<int64_t>(rows * out, 1));
      if (bad64 != 0) rc = 2;
    }
    return true;
  }
  if (c.export_cmd && *c.export_cmd) {
    auto a = load_traced(c.target, c.allow_untraced);
    if (c.format == "qonnx") {
      exporters::QonnxOptions o;
      o.allow_widening = c.allow_widening;
      o.rnd_as_offset_floor = c.rnd_offset;
      const auto r = exporters::export_qonnx(a, c.export_out, o);
      std::printf("wrote %s (%lld nodes, %lld Quant)\n", c.export_out.c_str(),
                  static_cast<long long>(r.nodes), static_cast<long long>(r.quant_nodes));
      if (r.widened_elements > 0)
        std::printf(
            "widened: %lld activation elements (%lld of them WRAP, now saturating); outputs "
            "can differ from the emulator there\n",
            static_cast<long long>(r.widened_elements), static_cast<long long>(r.wrap_elements));
      for (const auto& note : r.notes) std::printf("  %s\n", note.c_str());
      return true;
    }
    std::vector<double> tb;
    int64_t n_tb = 0;
    if (!c.tb_data.empty()) {
      tb = archive::load_model_inputs(a, c.tb_data, c.tb_features, c.tb_samples, n_tb);
    } else {
      n_tb = c.tb_samples > 0 ? c.tb_samples : 1000;
      tb = exporters::random_testbench_inputs(n_tb, a.input_size());
    }
    if (c.tb_overflow > 0) {
      auto extra = overflow_rows(tb, a.input_size(), c.tb_overflow, c.tb_scale);
      tb.insert(tb.end(), extra.begin(), extra.end());
      n_tb += c.tb_overflow;
    }
    const auto t0 = std::chrono::steady_clock::now();
    if (c.format == "hls" || c.format == "catapult" || c.format == "oneapi") {
      exporters::HlsOptions o;
      o.name = c.export_name;
      o.dialect = exporters::hls_dialect(c.format);
      o.part = c.part;
      o.clock_ns = c.clock_ns;
      exporters::export_hls(a, c.export_out, o, tb, n_tb);
    } else {
      exporters::VerilogOptions o;
      o.name = c.export_name;
      o.pipeline_stages = c.pipeline_stages;
      o.const_mult = c.const_mult;
      o.adder_extra_depth = c.adder_extra_depth;
      if (c.export_cmd->get_option("--clock-ns")->count() > 0) {
        if (c.export_cmd->get_option("--pipeline-stages")->count() > 0)
          throw std::invalid_argument(
              "export: give --clock-ns (registers placed for a clock period) or "
              "--pipeline-stages (a latency), not both");
        o.clock_period_ns = c.clock_ns;
      }
      const auto r = exporters::export_verilog(a, c.export_out, o, tb, n_tb);
      std::printf("%s", exporters::format_adders(r).c_str());
      std::printf("%s", exporters::format_timing(r).c_str());
    }
    std::printf(
        "wrote %s project to %s (%lld testbench samples, %lld of them overflow-inducing; "
        "%.1f s)\n",
        c.format.c_str(), c.export_out.c_str(), static_cast<long long>(n_tb),
        static_cast<long long>(c.tb_overflow), seconds_since(t0));
    return true;
  }
  if (c.resources_cmd && *c.resources_cmd) {
    auto a = archive::read_archive(c.res_archive);
    exporters::YosysOptions o;
    o.family = c.family;
    o.nodsp = c.nodsp;
    const auto r = exporters::run_yosys(c.target, c.name, o);
    std::printf("%s", exporters::format_resources(r, a).c_str());
    if (!c.res_json.empty()) {
      double ebops = 0;
      for (double e : archive::exact_ebops(a)) ebops += e;
      std::ofstream f(c.res_json);
      f << "{\"top\": \"" << r.top << "\", \"family\": \"" << r.family
        << "\", \"nodsp\": " << (r.nodsp ? "true" : "false") << ", \"luts\": " << r.luts
        << ", \"carry\": " << r.carry << ", \"ffs\": " << r.ffs << ", \"dsps\": " << r.dsps
        << ", \"exact_ebops\": " << ebops << ", \"yosys_seconds\": " << r.seconds << "}\n";
      if (!f) throw std::runtime_error("cannot write '" + c.res_json + "'");
    }
    return true;
  }
  return false;
}

}  // namespace hgqt::cli
