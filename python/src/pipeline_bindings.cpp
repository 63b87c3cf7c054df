// _hgqt: training (with a Python per-epoch callback, the GIL released), checkpoints, trace, the
// model archive, the integer emulator, the exporters and the summary table.
#include <chrono>
#include <cmath>
#include <functional>
#include <map>

#include "common.h"
#include "hgqt/archive/archive.h"
#include "hgqt/archive/emulator.h"
#include "hgqt/export/hls.h"
#include "hgqt/export/qonnx.h"
#include "hgqt/export/verilog.h"
#include "hgqt/model/archive_bridge.h"
#include "hgqt/model/summary.h"
#include "hgqt/train/trainer.h"

namespace hgqt::python {

py::dict meta_to_dict(const model::CheckpointMeta& m) {
  py::dict d;
  d["epoch"] = m.epoch;
  d["val_accuracy"] = m.val_accuracy;
  d["val_loss"] = m.val_loss;
  d["ebops"] = m.ebops;
  d["beta"] = m.beta;
  d["loss"] = m.loss;
  d["feature_mean"] = m.feature_mean;
  d["feature_std"] = m.feature_std;
  d["config_yaml"] = m.config_yaml;
  return d;
}

model::CheckpointMeta meta_from_dict(const py::dict& d) {
  model::CheckpointMeta m;
  // One setter per key: the keys of CheckpointMeta (meta_to_dict writes the same).
  const std::map<std::string, std::function<void(py::handle)>> setters = {
      {"epoch", [&](py::handle v) { m.epoch = v.cast<int64_t>(); }},
      {"val_accuracy", [&](py::handle v) { m.val_accuracy = v.cast<double>(); }},
      {"val_loss", [&](py::handle v) { m.val_loss = v.cast<double>(); }},
      {"ebops", [&](py::handle v) { m.ebops = v.cast<double>(); }},
      {"beta", [&](py::handle v) { m.beta = v.cast<double>(); }},
      {"loss", [&](py::handle v) { m.loss = v.cast<std::string>(); }},
      {"feature_mean", [&](py::handle v) { m.feature_mean = v.cast<std::vector<float>>(); }},
      {"feature_std", [&](py::handle v) { m.feature_std = v.cast<std::vector<float>>(); }},
      {"config_yaml", [&](py::handle v) { m.config_yaml = v.cast<std::string>(); }}};
  for (const auto& item : d) {
    const auto key = py::str(item.first).cast<std::string>();
    auto it = setters.find(key);
    if (it == setters.end()) {
      std::string known;
      for (const auto& kv : setters) known += (known.empty() ? "" : ", ") + kv.first;
      throw std::invalid_argument("checkpoint meta: unknown key '" + key + "' (known: " + known +
                                  ")");
    }
    it->second(item.second);
  }
  return m;
}

namespace {

// An epoch's metrics as a dict: its metrics.jsonl line (the same keys; NaN as None).
py::dict epoch_dict(const train::EpochMetrics& e) {
  return py::module_::import("json").attr("loads")(train::metrics_line(e));
}

py::dict anomaly_dict(const train::AnomalyResult& a) {
  py::dict d;
  d["samples"] = a.samples;
  d["mse"] = a.mse;
  d["mse_normal"] = a.mse_normal;
  d["mse_anomalous"] = a.mse_anomalous;
  d["roc_auc"] = a.roc_auc;
  d["normal"] = a.normal;
  d["anomalous"] = a.anomalous;
  d["score"] = a.score;
  return d;
}

py::dict result_dict(const train::TrainResult& r, const std::string& run_dir) {
  py::list history;
  for (const auto& e : r.history) history.append(epoch_dict(e));
  py::dict d;
  d["run_dir"] = run_dir;
  d["history"] = history;
  d["best_checkpoint"] = r.best_checkpoint;
  d["best"] = meta_to_dict(r.best);
  py::dict test;
  test["samples"] = r.test.samples;
  test["loss"] = r.test.samples ? r.test.loss : std::nan("");
  test["accuracy"] = r.test.samples ? r.test.accuracy : std::nan("");
  test["ebops"] = r.test.samples ? r.test_ebops : std::nan("");
  d["test"] = test;
  d["anomaly"] = r.anomaly.samples > 0 ? py::object(anomaly_dict(r.anomaly)) : py::none();
  d["stopped_early"] = r.stopped_early;
  d["stopped_epoch"] = r.stopped_epoch;
  d["interrupted"] = r.interrupted;
  d["interrupted_epoch"] = r.interrupted_epoch;
  d["interrupted_step"] = r.interrupted_step;
  d["steps_per_epoch"] = r.steps_per_epoch;
  d["resumed"] = r.resumed;
  return d;
}

// Rows [N, input_size] of `x` as doubles, after the archive's preprocessing when asked (in
// float32, as training did).
std::vector<double> archive_rows(const archive::Archive& a, const torch::Tensor& x, bool preprocess,
                                 int64_t& n) {
  if (x.dim() < 1)
    throw std::invalid_argument("inputs: expected [samples, features...], got a scalar");
  n = x.size(0);
  const int64_t width = n ? x.numel() / n : 0;
  if (n > 0 && width != a.input_size())
    throw std::invalid_argument("inputs: " + std::to_string(width) +
                                " values per sample, the archive's model takes " +
                                std::to_string(a.input_size()));
  std::vector<double> rows;
  const bool pre = preprocess && !a.feature_mean.empty();
  if (pre) {
    auto xf = x.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    std::vector<float> v(xf.data_ptr<float>(), xf.data_ptr<float>() + xf.numel());
    archive::preprocess(a, v, n);
    rows.assign(v.begin(), v.end());
  } else {
    auto xd = x.detach().to(torch::kCPU, torch::kFloat64).contiguous();
    rows.assign(xd.data_ptr<double>(), xd.data_ptr<double>() + xd.numel());
  }
  for (size_t j = 0; j < rows.size(); ++j)
    if (!std::isfinite(rows[j]))
      throw std::invalid_argument("inputs: sample " +
                                  std::to_string(j / std::max<int64_t>(width, 1)) +
                                  " holds a non-finite value (" + std::to_string(rows[j]) + ")");
  return rows;
}

// Testbench rows: the given raw features (preprocessed like the model input), or `tb_samples`
// of the exporters' default random inputs (as `hgqt export` without --tb-data).
std::vector<double> testbench_rows(const archive::Archive& a,
                                   const c10::optional<torch::Tensor>& tb, int64_t tb_samples,
                                   int64_t& n) {
  if (tb) return archive_rows(a, *tb, true, n);
  n = tb_samples;
  return exporters::random_testbench_inputs(n, a.input_size());
}

void check_batch(const torch::Tensor& x, int64_t batch_size, const std::string& what) {
  if (batch_size < 1)
    throw std::invalid_argument(what + ": batch_size must be at least 1, got " +
                                std::to_string(batch_size));
  if (x.dim() < 1 || x.size(0) == 0)
    throw std::invalid_argument(what + ": needs at least one sample, got a tensor of shape " +
                                c10::str(x.sizes()));
}

py::dict trace_dict(const archive::TraceInfo& t) {
  py::dict d;
  d["traced"] = t.traced;
  d["samples"] = t.samples;
  d["data"] = t.data;
  d["exact_ebops"] = t.exact_ebops;
  d["checkpoint"] = t.checkpoint;
  d["epoch"] = t.epoch;
  return d;
}

// hgqt.train: the C++ trainer with the GIL released. At most every 50 ms, before a step, it takes
// the GIL and runs Python's signal handlers; Ctrl-C (a notebook's interrupt), any exception of
// another signal handler, or a callback that returned False saves resume.pt and ends the run,
// and the exception is raised once the trainer has returned. The callback gets every epoch's
// metrics with the GIL held.
py::dict train_from_python(const config::RunConfig& cfg, const std::string& run_dir, bool resume,
                           bool progress, bool quiet, const py::object& callback) {
  train::TrainOptions opt;
  opt.run_dir = run_dir;
  opt.resume = resume;
  opt.progress = progress;
  opt.quiet = quiet;
  bool stop = false, signalled = false;
  PyObject *err_type = nullptr, *err_value = nullptr, *err_tb = nullptr;
  auto last_poll = std::chrono::steady_clock::now();
  opt.interrupted = [&] {
    if (stop || signalled) return true;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_poll < std::chrono::milliseconds(50)) return false;
    last_poll = now;
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) {
      PyErr_Fetch(&err_type, &err_value, &err_tb);
      signalled = true;
    }
    return signalled;
  };
  if (!callback.is_none())
    opt.on_epoch = [&](const train::EpochMetrics& e) {
      py::gil_scoped_acquire gil;
      py::object r;
      try {
        r = callback(epoch_dict(e));
      } catch (py::error_already_set& err) {
        // Ctrl-C while the callback ran: this epoch is saved; stop as for any Ctrl-C.
        if (!err.matches(PyExc_KeyboardInterrupt)) throw;
        signalled = true;
        return;
      }
      if (r.ptr() == Py_False) stop = true;  // only False stops (None, 0, dicts do not)
    };
  train::TrainResult r;
  {
    py::gil_scoped_release release;
    r = train::train(cfg, opt);
  }
  if (signalled && err_type && !PyErr_GivenExceptionMatches(err_type, PyExc_KeyboardInterrupt)) {
    PyErr_Restore(err_type, err_value, err_tb);  // another handler's exception, as raised
    throw py::error_already_set();
  }
  if (signalled) {
    Py_XDECREF(err_type);
    Py_XDECREF(err_value);
    Py_XDECREF(err_tb);
    const std::string msg =
        !r.interrupted
            ? "Ctrl-C after the last epoch: the run in " + run_dir + " is complete"
            : "training interrupted in epoch " + std::to_string(r.interrupted_epoch) + " at step " +
                  std::to_string(r.interrupted_step) + "/" + std::to_string(r.steps_per_epoch) +
                  ": saved " + train::resume_path(run_dir) + "; continue with hgqt.train('" +
                  run_dir + "', resume=True)";
    PyErr_SetString(PyExc_KeyboardInterrupt, msg.c_str());
    throw py::error_already_set();
  }
  return result_dict(r, run_dir);
}

}  // namespace

void init_pipeline(py::module_& m) {
  // ---- training
  m.def("resume_config", &train::resume_config, py::arg("run_dir"));
  m.def("train", &train_from_python, py::arg("config"), py::arg("run_dir"), py::arg("resume"),
        py::arg("progress"), py::arg("quiet"), py::arg("callback"));

  // ---- checkpoints
  m.def("resolve_checkpoint_path", &model::resolve_checkpoint_path);
  m.def("load_checkpoint", [](const std::string& path) {
    const auto resolved = model::resolve_checkpoint_path(path);
    auto ck = model::load_checkpoint(resolved);
    return py::make_tuple(CppModule{ck.model.ptr()}, meta_to_dict(ck.meta), resolved);
  });
  m.def("save_checkpoint", [](const std::string& path, const CppModule& c, const py::dict& meta) {
    auto model = c.model("save_checkpoint");
    model::save_checkpoint(path, model, meta_from_dict(meta));
  });

  // ---- trace, float64 reference, summary
  m.def("trace", [](const CppModule& c, const torch::Tensor& x, int64_t batch_size) {
    auto model = c.model("trace");
    check_batch(x, batch_size, "trace");
    model::TraceResult r;
    {
      py::gil_scoped_release release;
      r = model::trace(model, x, batch_size);
    }
    py::dict d;
    d["samples"] = r.samples;
    d["passes"] = r.passes;
    d["quantizers"] = r.quantizers;
    d["elements"] = r.elements;
    d["widened"] = r.widened;
    d["narrowed"] = r.narrowed;
    d["sign_dropped"] = r.sign_dropped;
    d["ebops_before"] = r.ebops_before;
    d["exact_ebops"] = r.exact_ebops;
    return d;
  });
  m.def("copy_model", [](const CppModule& c) {
    auto model = c.model("copy");
    return CppModule{model::copy_model(model).ptr()};
  });
  m.def("forward_float64", [](const CppModule& c, const torch::Tensor& x, int64_t batch_size) {
    auto model = c.model("forward_exact");
    check_batch(x, batch_size, "forward_exact");
    py::gil_scoped_release release;
    return model::forward_float64(model, x, batch_size);
  });
  m.def("summarize", [](const CppModule& c) {
    auto rows = model::summarize(c.model("summary"));
    py::list out;
    for (const auto& r : rows) {
      py::dict d;
      d["name"] = r.name;
      d["type"] = r.type;
      d["shape"] = r.shape;
      d["parameters"] = r.parameters;
      d["weight_bits_mean"] = r.weight_bits.count ? r.weight_bits.mean : std::nan("");
      d["weight_bits_min"] = r.weight_bits.count ? r.weight_bits.min : std::nan("");
      d["weight_bits_max"] = r.weight_bits.count ? r.weight_bits.max : std::nan("");
      d["activation_bits_mean"] = r.activation_bits.count ? r.activation_bits.mean : std::nan("");
      d["activation_bits_min"] = r.activation_bits.count ? r.activation_bits.min : std::nan("");
      d["activation_bits_max"] = r.activation_bits.count ? r.activation_bits.max : std::nan("");
      d["zero_weight_share"] = r.zero_weight_share;
      d["ebops"] = r.ebops;
      out.append(d);
    }
    return out;
  });
  m.def("format_summary", [](const CppModule& c) {
    return model::format_summary(model::summarize(c.model("summary")));
  });

  // ---- archive
  py::class_<archive::Archive>(m, "Archive", py::module_local())
      .def_readonly("name", &archive::Archive::name)
      .def_property_readonly("input_size", &archive::Archive::input_size)
      .def_property_readonly("output_size", &archive::Archive::output_size)
      .def_readonly("input_shape", &archive::Archive::input_shape)
      .def_readonly("loss", &archive::Archive::loss)
      .def_readonly("model_yaml", &archive::Archive::model_yaml)
      .def_readonly("feature_mean", &archive::Archive::feature_mean)
      .def_readonly("feature_std", &archive::Archive::feature_std)
      .def_property_readonly("trace", [](const archive::Archive& a) { return trace_dict(a.trace); })
      .def("save", &archive::write_archive, py::arg("dir"))
      .def("__repr__",
           [](const archive::Archive& a) {
             return "<hgqt.Archive '" + a.name + "': " + std::to_string(a.layers.size()) +
                    " layers, " + std::to_string(a.input_size()) + " inputs, " +
                    std::to_string(a.output_size()) + " outputs, " +
                    (a.trace.traced ? "traced" : "untraced") + ">";
           })
      .def_property_readonly("layers", [](const archive::Archive& a) {
        py::list out;
        for (const auto& l : a.layers)
          out.append(py::make_tuple(l.name, archive::kind_name(l.kind)));
        return out;
      });
  m.def("to_archive",
        [](const CppModule& c, py::object meta, const std::string& name, py::object trace) {
          auto model = c.model("to_archive");
          model::CheckpointMeta cm;
          if (!meta.is_none()) cm = meta_from_dict(meta.cast<py::dict>());
          auto a = model::to_archive(model, meta.is_none() ? nullptr : &cm, name);
          if (!trace.is_none()) {
            auto t = trace.cast<py::dict>();
            a.trace.traced = true;
            a.trace.samples = t["samples"].cast<int64_t>();
            a.trace.exact_ebops = t["exact_ebops"].cast<double>();
            if (t.contains("data")) a.trace.data = t["data"].cast<std::string>();
            if (t.contains("checkpoint")) a.trace.checkpoint = t["checkpoint"].cast<std::string>();
            if (t.contains("epoch")) a.trace.epoch = t["epoch"].cast<int64_t>();
          }
          return a;
        });
  m.def("read_archive", &archive::read_archive, py::arg("path"));
  m.def("write_archive", &archive::write_archive, py::arg("archive"), py::arg("dir"));
  m.def("from_archive",
        [](const archive::Archive& a) { return CppModule{model::from_archive(a).ptr()}; });

  // ---- emulator
  m.def("emulate", [](const archive::Archive& a, const torch::Tensor& x, bool preprocess) {
    int64_t n = 0;
    auto rows = archive_rows(a, x, preprocess, n);
    archive::EmulatorStats stats;
    std::vector<double> y;
    {
      py::gil_scoped_release release;
      archive::Emulator emu(a);
      y = emu.run_batch(rows, n, &stats);
    }
    auto out = torch::from_blob(y.data(), {n, a.output_size()}, torch::kFloat64).clone();
    py::dict s;
    s["samples"] = stats.samples;
    s["wrapped"] = stats.wrapped;
    s["saturated"] = stats.saturated;
    return py::make_tuple(out, s);
  });

  // ---- exporters
  // dialect: "hls" (Vitis, ap_fixed), "catapult" or "oneapi" (ac_fixed); part "": its default.
  m.def(
      "export_hls",
      [](const archive::Archive& a, const std::string& out, const std::string& name,
         const std::string& part, double clock_ns, const c10::optional<torch::Tensor>& tb,
         int64_t tb_samples, const std::string& dialect) {
        exporters::HlsOptions o;
        o.name = name;
        o.dialect = exporters::hls_dialect(dialect);
        o.part = part;
        o.clock_ns = clock_ns;
        int64_t n = 0;
        auto rows = testbench_rows(a, tb, tb_samples, n);
        py::gil_scoped_release release;
        exporters::export_hls(a, out, o, rows, n);
      },
      py::arg("archive"), py::arg("out"), py::arg("name"), py::arg("part"), py::arg("clock_ns"),
      py::arg("tb"), py::arg("tb_samples"), py::arg("dialect") = "hls");
  m.def(
      "export_verilog",
      [](const archive::Archive& a, const std::string& out, const std::string& name,
         int pipeline_stages, const std::string& const_mult, const c10::optional<torch::Tensor>& tb,
         int64_t tb_samples, int adder_depth, double clock_period_ns) {
        exporters::VerilogOptions o;
        o.name = name;
        o.pipeline_stages = pipeline_stages;
        o.clock_period_ns = clock_period_ns;
        o.const_mult = const_mult;
        o.adder_extra_depth = adder_depth;
        int64_t n = 0;
        auto rows = testbench_rows(a, tb, tb_samples, n);
        py::gil_scoped_release release;
        exporters::export_verilog(a, out, o, rows, n);
      },
      py::arg("archive"), py::arg("out"), py::arg("name"), py::arg("pipeline_stages"),
      py::arg("const_mult"), py::arg("tb"), py::arg("tb_samples"), py::arg("adder_depth") = 2,
      py::arg("clock_period_ns") = 0.0);
  m.def("export_qonnx", [](const archive::Archive& a, const std::string& path, bool allow_widening,
                           bool rnd_as_offset_floor, bool include_preprocessing) {
    exporters::QonnxOptions o;
    o.allow_widening = allow_widening;
    o.rnd_as_offset_floor = rnd_as_offset_floor;
    o.include_preprocessing = include_preprocessing;
    const auto r = exporters::export_qonnx(a, path, o);
    py::dict d;
    d["nodes"] = r.nodes;
    d["quant_nodes"] = r.quant_nodes;
    d["widened_elements"] = r.widened_elements;
    d["wrap_elements"] = r.wrap_elements;
    d["notes"] = r.notes;
    return d;
  });
}

}  // namespace hgqt::python
