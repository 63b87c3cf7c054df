// The training loop.
#include "hgqt/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "hgqt/train/metrics.h"
#include "hgqt/train/pareto.h"
#include "hgqt/util/files.h"
#include "hgqt/util/progress.h"

namespace hgqt::train {

namespace fs = std::filesystem;

torch::Device select_device(const std::string& name) {
  if (name == "cpu") return torch::kCPU;
  if (name == "cuda") {
    if (!torch::cuda::is_available())
      throw std::runtime_error("train.device is 'cuda' but no CUDA device is available");
    return torch::kCUDA;
  }
  return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
}

// Quantized probabilities may be exactly 0: the floor (2^-8, under the default output step of
// 2^-7) keeps the log finite and bounds the gradient; a floor of 2^-20 let the 1 / p gradient of
// such samples swamp training (65% after 3 epochs on fashion_mnist_softmax, 85% with 2^-8).
torch::Tensor task_loss(const torch::Tensor& out, const torch::Tensor& y, const std::string& loss,
                        bool probabilities) {
  if (loss == "cross_entropy" && probabilities)
    return torch::nll_loss(torch::log(out + 0x1p-8), y);
  if (loss == "cross_entropy") return torch::nn::functional::cross_entropy(out, y);
  return torch::mse_loss(out, y);
}

EvalResult evaluate(model::HGQModel& model, const data::TensorSplit& split, const std::string& loss,
                    int64_t batch_size) {
  EvalResult r;
  r.samples = split.size();
  r.accuracy = loss == "cross_entropy" ? 0.0 : std::nan("");
  if (r.samples == 0) return r;
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  const auto device = model->parameters().front().device();
  double loss_sum = 0;
  const bool probabilities = model->outputs_probabilities();
  int64_t correct = 0;
  for (int64_t s = 0; s < r.samples; s += batch_size) {
    const int64_t e = std::min(r.samples, s + batch_size);
    auto xb = split.x.slice(0, s, e).to(device);
    auto yb = split.y.slice(0, s, e).to(device);
    auto out = model->forward(xb);
    loss_sum += task_loss(out, yb, loss, probabilities).item<double>() * static_cast<double>(e - s);
    if (loss == "cross_entropy") correct += (out.argmax(1) == yb).sum().item<int64_t>();
  }
  model->train(was_training);
  r.loss = loss_sum / static_cast<double>(r.samples);
  if (loss == "cross_entropy") r.accuracy = static_cast<double>(correct) / static_cast<double>(r.samples);
  return r;
}

namespace {

std::string list_text(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

std::string shape_text(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return list_text(shape) + " (" + std::to_string(n) + " values)";
}

}  // namespace

std::vector<double> reconstruction_errors(model::HGQModel& model, const data::TensorSplit& split,
                                          int64_t batch_size) {
  std::vector<double> out;
  const int64_t n = split.size();
  if (n == 0) return out;
  out.reserve(static_cast<size_t>(n));
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  const auto device = model->parameters().front().device();
  for (int64_t s = 0; s < n; s += batch_size) {
    const int64_t e = std::min(n, s + batch_size);
    auto xb = split.x.slice(0, s, e).to(device);
    auto yb = split.y.slice(0, s, e).to(device);
    auto err = (model->forward(xb) - yb).to(torch::kDouble).pow(2).reshape({e - s, -1}).mean(1);
    err = err.to(torch::kCPU).contiguous();
    out.insert(out.end(), err.data_ptr<double>(), err.data_ptr<double>() + (e - s));
  }
  model->train(was_training);
  return out;
}

AnomalyResult evaluate_anomaly(model::HGQModel& model, const data::TensorSplit& split,
                               const config::DataSpec& data, int64_t batch_size) {
  AnomalyResult r;
  const auto err = reconstruction_errors(model, split, batch_size);
  r.samples = static_cast<int64_t>(err.size());
  if (err.empty()) return r;
  double sum = 0;
  for (double e : err) sum += e;
  r.mse = sum / static_cast<double>(err.size());
  if (data.classes.empty() || !split.labels.defined()) return r;
  auto labels_t = split.labels.to(torch::kCPU).to(torch::kLong).contiguous();
  const int64_t* labels = labels_t.data_ptr<int64_t>();
  r.normal_classes = data.classes;
  std::sort(r.normal_classes.begin(), r.normal_classes.end());
  r.anomaly_classes = data.anomaly_classes;
  if (r.anomaly_classes.empty()) {
    std::vector<int64_t> present(labels, labels + r.samples);
    std::sort(present.begin(), present.end());
    present.erase(std::unique(present.begin(), present.end()), present.end());
    for (int64_t c : present)
      if (!std::binary_search(r.normal_classes.begin(), r.normal_classes.end(), c))
        r.anomaly_classes.push_back(c);
  }
  std::sort(r.anomaly_classes.begin(), r.anomaly_classes.end());
  std::vector<double> scores;
  std::vector<bool> positive;
  double sum_normal = 0, sum_anomalous = 0;
  for (int64_t i = 0; i < r.samples; ++i) {
    const bool normal = std::binary_search(r.normal_classes.begin(), r.normal_classes.end(), labels[i]);
    const bool anomalous =
        std::binary_search(r.anomaly_classes.begin(), r.anomaly_classes.end(), labels[i]);
    if (!normal && !anomalous) continue;
    scores.push_back(err[static_cast<size_t>(i)]);
    positive.push_back(anomalous);
    (anomalous ? sum_anomalous : sum_normal) += err[static_cast<size_t>(i)];
    ++(anomalous ? r.anomalous : r.normal);
  }
  if (r.normal > 0) r.mse_normal = sum_normal / static_cast<double>(r.normal);
  if (r.anomalous > 0) r.mse_anomalous = sum_anomalous / static_cast<double>(r.anomalous);
  r.roc_auc = roc_auc(scores, positive);
  return r;
}

std::string format_anomaly(const AnomalyResult& r, const std::string& what, double ebops) {
  char buf[512];
  std::string out;
  std::snprintf(buf, sizeof buf, "%s MSE: %.6f on %lld samples", what.c_str(), r.mse,
                static_cast<long long>(r.samples));
  out += buf;
  if (r.normal > 0 || r.anomalous > 0) {
    std::snprintf(buf, sizeof buf, " (normal %.6f, anomalies %.6f)", r.mse_normal, r.mse_anomalous);
    out += buf;
  }
  if (ebops >= 0) {
    std::snprintf(buf, sizeof buf, ", EBOPs %.0f", ebops);
    out += buf;
  }
  out += "\n";
  if (r.normal > 0 || r.anomalous > 0) {
    std::snprintf(buf, sizeof buf,
                  "ROC AUC (anomaly score = reconstruction MSE; normal classes %s, anomalies %s): "
                  "%.4f (%lld normal, %lld anomalous %s samples)\n",
                  list_text(r.normal_classes).c_str(), list_text(r.anomaly_classes).c_str(),
                  r.roc_auc, static_cast<long long>(r.normal), static_cast<long long>(r.anomalous),
                  what.c_str());
    out += buf;
  } else {
    out += "ROC AUC: not computed (set data.classes to the normal classes; the " + what +
           " data needs class labels)\n";
  }
  return out;
}

void check_target(model::HGQModel& model, const config::RunConfig& config) {
  if (config.train.target != "input") return;
  int64_t in = 1, out = 1;
  for (auto d : model->input_shape()) in *= d;
  for (auto d : model->output_shape()) out *= d;
  if (in == out) return;
  const std::string where = config.source_path.empty() ? config.name : config.source_path;
  throw config::ConfigError(
      where + ": train.target: 'input' (an autoencoder) needs the model's output size to equal "
              "its input size, but the model takes " + shape_text(model->input_shape()) +
      " and outputs " + shape_text(model->output_shape()) + "; make the last dense layer " +
      std::to_string(in) + " units");
}

namespace {

void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& group : opt.param_groups()) {
    if (auto* a = dynamic_cast<torch::optim::AdamOptions*>(&group.options()))
      a->lr(lr);
    else if (auto* s = dynamic_cast<torch::optim::SGDOptions*>(&group.options()))
      s->lr(lr);
  }
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(model::HGQModel& m, const config::TrainSpec& t) {
  if (t.optimizer == "sgd")
    return std::make_unique<torch::optim::SGD>(
        m->parameters(), torch::optim::SGDOptions(t.lr).momentum(t.momentum).weight_decay(t.weight_decay));
  return std::make_unique<torch::optim::Adam>(
      m->parameters(), torch::optim::AdamOptions(t.lr).weight_decay(t.weight_decay));
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

nlohmann::json json_number(double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); }

}  // namespace

bool EarlyStopper::update(int64_t epoch, double value, double ebops) {
  if (!spec_.enabled) return false;
  if (spec_.ebops_below && !(ebops < *spec_.ebops_below)) return false;  // not counted
  last_epoch_ = epoch;
  const bool higher = spec_.monitor != "val_loss";
  if (!std::isfinite(value)) {
    ++wait_;  // a NaN figure never improves
  } else if (best_epoch_ == 0 ||
             (higher ? value > best_ + spec_.min_delta : value < best_ - spec_.min_delta)) {
    best_ = value;
    best_epoch_ = epoch;
    wait_ = 0;
  } else {
    ++wait_;
  }
  return wait_ >= spec_.patience;
}

std::string EarlyStopper::describe(int64_t epochs) const {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "early stopping after epoch %lld/%lld: %s has not improved by more than %g on "
                "its best %.6g (epoch %lld) for %lld epoch%s (patience %lld)",
                static_cast<long long>(last_epoch_), static_cast<long long>(epochs),
                spec_.monitor.c_str(), spec_.min_delta, best_, static_cast<long long>(best_epoch_),
                static_cast<long long>(wait_), wait_ == 1 ? "" : "s",
                static_cast<long long>(spec_.patience));
  std::string out = buf;
  if (spec_.ebops_below) {
    std::snprintf(buf, sizeof buf, "; only epochs with EBOPs below %g are counted",
                  *spec_.ebops_below);
    out += buf;
  }
  return out;
}

TrainResult train_model(model::HGQModel& model, const config::RunConfig& config,
                        const data::TensorSplit& train_split, const data::TensorSplit& val_split,
                        const data::TensorSplit& test_split, const data::Standardizer& standardizer,
                        const TrainOptions& options) {
  const auto& t = config.train;
  const bool classification = t.loss == "cross_entropy";
  const bool autoencoder = t.target == "input";
  if (train_split.size() == 0) throw std::runtime_error("the training split is empty");
  check_target(model, config);
  const auto& run_dir = options.run_dir;
  fs::create_directories(run_dir);
  const std::string config_yaml = config::to_yaml(config);
  util::write_text_atomic((fs::path(run_dir) / "config.yaml").string(), config_yaml);
  const std::string metrics_path = (fs::path(run_dir) / "metrics.jsonl").string();
  const std::string last_path = (fs::path(run_dir) / "last.pt").string();
  const std::string best_path = (fs::path(run_dir) / "best.pt").string();
  const fs::path pareto_dir = fs::path(run_dir) / "pareto";
  fs::remove(metrics_path);

  torch::manual_seed(t.seed);
  const auto device = select_device(t.device);
  model->to(device);
  model->train();
  auto optimizer = make_optimizer(model, t);
  const data::TensorSplit& monitor = val_split.size() > 0 ? val_split : train_split;
  if (val_split.size() == 0 && !options.quiet)
    std::printf("note: no validation split; best and Pareto checkpoints are chosen on training data\n");

  const int64_t n = train_split.size();
  const int64_t bs = std::min(t.batch_size, n);
  const int64_t steps_per_epoch = (n + bs - 1) / bs;
  const bool probabilities = model->outputs_probabilities();  // the model ends in a softmax
  auto gen = at::detail::createCPUGenerator(t.seed);

  TrainResult result;
  ParetoFront front;
  if (!classification) front.set_score_name("val_loss", true);
  double best_score = -std::numeric_limits<double>::infinity();
  int64_t global_step = 0;
  model::CheckpointMeta meta;
  meta.loss = t.loss;
  meta.feature_mean = standardizer.mean;
  meta.feature_std = standardizer.stddev;
  meta.config_yaml = config_yaml;
  const auto& es = t.early_stopping;
  EarlyStopper stopper(es);

  for (int64_t epoch = 0; epoch < t.epochs; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    const double beta = config::beta_at(t.beta, static_cast<double>(epoch));
    auto perm = torch::randperm(n, gen, torch::kLong);
    util::ProgressBar bar(steps_per_epoch,
                          "epoch " + std::to_string(epoch + 1) + "/" + std::to_string(t.epochs),
                          options.progress);
    double loss_sum = 0;
    int64_t correct = 0;
    double lr = t.lr;
    for (int64_t s = 0; s < steps_per_epoch; ++s, ++global_step) {
      auto idx = perm.slice(0, s * bs, std::min(n, (s + 1) * bs));
      auto xb = train_split.x.index_select(0, idx).to(device);
      auto yb = train_split.y.index_select(0, idx).to(device);
      lr = config::lr_at(t, global_step, steps_per_epoch);
      set_lr(*optimizer, lr);
      auto out = model->forward(xb);
      auto task = task_loss(out, yb, t.loss, probabilities);
      auto loss = task;
      if (beta > 0) loss = loss + beta * model->ebops();
      if (t.gamma > 0) loss = loss + t.gamma * model->bits_l1();
      optimizer->zero_grad();
      loss.backward();
      optimizer->step();
      model->constrain();
      const double task_v = task.item<double>();
      if (!std::isfinite(task_v))
        throw std::runtime_error("training diverged: the loss is " + fmt("%g", task_v) +
                                 " at epoch " + std::to_string(epoch + 1) + ", step " +
                                 std::to_string(s + 1) + " (lower train.lr?); checkpoints up to "
                                 "the previous epoch are in " + run_dir);
      loss_sum += task_v * static_cast<double>(idx.size(0));
      if (classification) correct += (out.argmax(1) == yb).sum().item<int64_t>();
      bar.update(s + 1, "loss " + fmt("%.4f", loss_sum / static_cast<double>(std::min(n, (s + 1) * bs))));
    }
    bar.finish();

    EpochMetrics m;
    m.epoch = epoch + 1;
    m.loss = loss_sum / static_cast<double>(n);
    m.accuracy = classification ? static_cast<double>(correct) / static_cast<double>(n) : std::nan("");
    const auto v = evaluate(model, monitor, t.loss);
    m.val_loss = v.loss;
    m.val_accuracy = v.accuracy;
    {
      torch::NoGradGuard no_grad;
      m.ebops = model->ebops().item<double>();
    }
    m.beta = beta;
    m.lr = lr;
    m.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    result.history.push_back(m);

    nlohmann::json j{{"epoch", m.epoch},         {"loss", json_number(m.loss)},
                     {"accuracy", json_number(m.accuracy)}, {"val_loss", json_number(m.val_loss)},
                     {"val_accuracy", json_number(m.val_accuracy)}, {"ebops", m.ebops},
                     {"beta", m.beta},           {"lr", m.lr},
                     {"seconds", m.seconds}};
    util::append_line(metrics_path, j.dump());
    if (!options.quiet) {
      if (classification)
        std::printf("epoch %3lld/%lld  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  EBOPs %10.0f  beta %.2e  lr %.2e  %.1fs\n",
                    static_cast<long long>(m.epoch), static_cast<long long>(t.epochs), m.loss,
                    m.accuracy, m.val_loss, m.val_accuracy, m.ebops, m.beta, m.lr, m.seconds);
      else
        std::printf("epoch %3lld/%lld  loss %.5f  val_loss %.5f  EBOPs %10.0f  beta %.2e  lr %.2e  %.1fs\n",
                    static_cast<long long>(m.epoch), static_cast<long long>(t.epochs), m.loss,
                    m.val_loss, m.ebops, m.beta, m.lr, m.seconds);
      std::fflush(stdout);
    }

    meta.epoch = m.epoch;
    meta.val_accuracy = m.val_accuracy;  // NaN for regression (JSON null in the checkpoint)
    meta.val_loss = m.val_loss;
    meta.ebops = m.ebops;
    meta.beta = beta;
    model->to(torch::kCPU);
    model::save_checkpoint(last_path, model, meta);
    model->to(device);
    // Score: accuracy for classification, -loss for regression.
    const double score = classification ? m.val_accuracy : -m.val_loss;
    if (score > best_score) {
      best_score = score;
      util::copy_file_atomic(last_path, best_path);
      result.best = meta;
    }
    if (!front.dominated(score, m.ebops)) {
      char name[64];
      std::snprintf(name, sizeof name, "epoch%04lld.pt", static_cast<long long>(m.epoch));
      const std::string p = (pareto_dir / name).string();
      util::copy_file_atomic(last_path, p);
      for (const auto& d : front.insert({m.epoch, score, m.ebops, p})) {
        std::error_code ec;
        fs::remove(d.path, ec);
      }
      util::write_text_atomic((fs::path(run_dir) / "pareto.json").string(), front.to_json());
    }
    if (stopper.update(m.epoch, es.monitor == "val_loss" ? m.val_loss : m.val_accuracy, m.ebops)) {
      result.stopped_early = true;
      result.stopped_epoch = m.epoch;
      if (!options.quiet) {
        std::printf("%s\n", stopper.describe(t.epochs).c_str());
        std::fflush(stdout);
      }
      break;
    }
  }
  result.best_checkpoint = best_path;

  if (test_split.size() > 0) {
    auto best = model::load_checkpoint(best_path);
    best.model->to(device);
    result.test = evaluate(best.model, test_split, t.loss);
    result.test_ebops = best.meta.ebops;
    if (autoencoder) result.anomaly = evaluate_anomaly(best.model, test_split, config.data);
  }
  nlohmann::json summary{{"best_checkpoint", best_path},
                         {"best_epoch", result.best.epoch},
                         {"val_accuracy", json_number(classification ? result.best.val_accuracy : std::nan(""))},
                         {"val_loss", json_number(result.best.val_loss)},
                         {"ebops", result.best.ebops},
                         {"test_samples", result.test.samples},
                         {"test_accuracy", json_number(result.test.samples ? result.test.accuracy : std::nan(""))},
                         {"test_loss", json_number(result.test.samples ? result.test.loss : std::nan(""))}};
  summary["target"] = t.target;
  summary["epochs_run"] = static_cast<int64_t>(result.history.size());
  summary["stopped_early"] = result.stopped_early;
  summary["stopped_epoch"] =
      result.stopped_early ? nlohmann::json(result.stopped_epoch) : nlohmann::json();
  if (es.enabled) {
    summary["early_stopping"] = {{"monitor", es.monitor},
                                 {"patience", es.patience},
                                 {"min_delta", es.min_delta},
                                 {"ebops_below", es.ebops_below ? nlohmann::json(*es.ebops_below)
                                                                : nlohmann::json()},
                                 {"best", json_number(stopper.best())},
                                 {"best_epoch", stopper.best_epoch()}};
  }
  if (autoencoder) {
    const auto& a = result.anomaly;
    summary["test_mse"] = json_number(a.samples ? a.mse : std::nan(""));
    summary["test_mse_normal"] = json_number(a.mse_normal);
    summary["test_mse_anomalous"] = json_number(a.mse_anomalous);
    summary["roc_auc"] = json_number(a.roc_auc);
    summary["auc_normal_samples"] = a.normal;
    summary["auc_anomalous_samples"] = a.anomalous;
    summary["normal_classes"] = a.normal_classes;
    summary["anomaly_classes"] = a.anomaly_classes;
  }
  util::write_text_atomic((fs::path(run_dir) / "result.json").string(), summary.dump(2));
  return result;
}

TrainResult train(const config::RunConfig& config, const TrainOptions& options) {
  if (config.train.threads > 0) torch::set_num_threads(static_cast<int>(config.train.threads));
  torch::manual_seed(config.train.seed);
  const std::string base_dir =
      config.source_path.empty() ? "." : fs::path(config.source_path).parent_path().string();
  auto splits = data::load_splits(config.data, base_dir.empty() ? "." : base_dir);
  model::HGQModel model(config.model);
  int64_t outputs = 1;
  for (auto d : model->output_shape()) outputs *= d;
  const bool cls = config.train.loss == "cross_entropy";
  const auto& shape = model->input_shape();
  check_target(model, config);
  data::TensorSplit tr, va, te;
  if (config.train.target == "input") {
    const auto& oshape = model->output_shape();
    tr = data::to_autoencoder_tensors(splits.train, shape, oshape, "training data");
    va = data::to_autoencoder_tensors(splits.validation, shape, oshape, "validation data");
    te = data::to_autoencoder_tensors(splits.test, shape, oshape, "test data");
  } else {
    tr = data::to_tensors(splits.train, shape, outputs, cls, "training data");
    va = data::to_tensors(splits.validation, shape, outputs, cls, "validation data");
    te = data::to_tensors(splits.test, shape, outputs, cls, "test data");
  }
  if (!options.quiet)
    std::printf("data: %lld train, %lld validation, %lld test samples\n",
                static_cast<long long>(tr.size()), static_cast<long long>(va.size()),
                static_cast<long long>(te.size()));
  if (!options.quiet && !config.data.classes.empty())
    std::printf("data: train and validation restricted to classes %s\n",
                list_text(config.data.classes).c_str());
  return train_model(model, config, tr, va, te, splits.standardizer, options);
}

}  // namespace hgqt::train
