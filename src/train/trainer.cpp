// The training loop.
#include "hgqt/train/trainer.h"

#include <c10/util/accumulate.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "hgqt/train/beta_pid.h"
#include "hgqt/train/distill.h"
#include "hgqt/train/metrics.h"
#include "hgqt/train/optim.h"
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
  if (loss == "cross_entropy" && probabilities) return torch::nll_loss(torch::log(out + 0x1p-8), y);
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
  if (loss == "cross_entropy")
    r.accuracy = static_cast<double>(correct) / static_cast<double>(r.samples);
  return r;
}

namespace {

std::string list_text(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

std::string shape_text(const std::vector<int64_t>& shape) {
  return list_text(shape) + " (" + std::to_string(c10::multiply_integers(shape)) + " values)";
}

// The config's file for error messages (its name when it was built in code).
std::string origin(const config::RunConfig& config) {
  return config.source_path.empty() ? config.name : config.source_path;
}

}  // namespace

namespace {
// One double per sample of `split`: `per_batch(output, targets)` maps a batch's model output (eval
// mode, no gradients) to [batch] values.
template <typename F>
std::vector<double> per_sample(model::HGQModel& model, const data::TensorSplit& split,
                               int64_t batch_size, F per_batch) {
  std::vector<double> out;
  const int64_t n = split.size();
  out.reserve(static_cast<size_t>(n));
  torch::NoGradGuard no_grad;
  const bool was_training = model->is_training();
  model->eval();
  const auto device = model->parameters().front().device();
  for (int64_t s = 0; s < n; s += batch_size) {
    const int64_t e = std::min(n, s + batch_size);
    torch::Tensor values =
        per_batch(model->forward(split.x.slice(0, s, e).to(device)).reshape({e - s, -1}),
                  split.y.slice(0, s, e).to(device).reshape({e - s, -1}));
    values = values.to(torch::kCPU).to(torch::kDouble).contiguous();
    out.insert(out.end(), values.data_ptr<double>(), values.data_ptr<double>() + (e - s));
  }
  model->train(was_training);
  return out;
}

// The model's single output per sample (a distilled anomaly score).
std::vector<double> predicted_scores(model::HGQModel& model, const data::TensorSplit& split,
                                     int64_t batch_size = 4096) {
  return per_sample(model, split, batch_size, [](const torch::Tensor& out, const torch::Tensor&) {
    return out.select(1, 0);
  });
}
}  // namespace

std::vector<double> reconstruction_errors(model::HGQModel& model, const data::TensorSplit& split,
                                          int64_t batch_size) {
  return per_sample(model, split, batch_size, [](const torch::Tensor& out, const torch::Tensor& y) {
    return (out - y).to(torch::kDouble).pow(2).mean(1);
  });
}

AnomalyResult score_anomaly(const std::vector<double>& err, const torch::Tensor& labels_in,
                            const config::DataSpec& data) {
  AnomalyResult r;
  r.samples = static_cast<int64_t>(err.size());
  if (err.empty()) return r;
  double sum = 0;
  for (double e : err) sum += e;
  r.mse = sum / static_cast<double>(err.size());
  if (data.classes.empty() || !labels_in.defined()) return r;
  auto labels_t = labels_in.to(torch::kCPU).to(torch::kLong).contiguous();
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
    const bool normal =
        std::binary_search(r.normal_classes.begin(), r.normal_classes.end(), labels[i]);
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

AnomalyResult evaluate_anomaly(model::HGQModel& model, const data::TensorSplit& split,
                               const config::DataSpec& data, int64_t batch_size) {
  return score_anomaly(reconstruction_errors(model, split, batch_size), split.labels, data);
}

std::string format_anomaly(const AnomalyResult& r, const std::string& what, double ebops) {
  char buf[512];
  std::string out;
  std::snprintf(buf, sizeof buf, "%s %s: %.6f on %lld samples", what.c_str(),
                r.score == "reconstruction MSE" ? "MSE" : "mean score", r.mse,
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
                  "ROC AUC (anomaly score = %s; normal classes %s, anomalies %s): "
                  "%.4f (%lld normal, %lld anomalous %s samples)\n",
                  r.score.c_str(), list_text(r.normal_classes).c_str(),
                  list_text(r.anomaly_classes).c_str(), r.roc_auc, static_cast<long long>(r.normal),
                  static_cast<long long>(r.anomalous), what.c_str());
    out += buf;
  } else {
    out += "ROC AUC: not computed (set data.classes to the normal classes; the " + what +
           " data needs class labels)\n";
  }
  return out;
}

void check_target(model::HGQModel& model, const config::RunConfig& config) {
  if (config.train.target != "input") return;
  const int64_t in = c10::multiply_integers(model->input_shape());
  if (in == c10::multiply_integers(model->output_shape())) return;
  throw config::ConfigError(
      origin(config) +
      ": train.target: 'input' (an autoencoder) needs the model's output size to equal "
      "its input size, but the model takes " +
      shape_text(model->input_shape()) + " and outputs " + shape_text(model->output_shape()) +
      "; make the last dense layer " + std::to_string(in) + " units");
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

std::unique_ptr<torch::optim::Optimizer> make_optimizer(model::HGQModel& m,
                                                        const config::TrainSpec& t) {
  if (t.optimizer == "sgd")
    return std::make_unique<torch::optim::SGD>(
        m->parameters(),
        torch::optim::SGDOptions(t.lr).momentum(t.momentum).weight_decay(t.weight_decay));
  return std::make_unique<FusedAdam>(m->parameters(),
                                     torch::optim::AdamOptions(t.lr).weight_decay(t.weight_decay));
}

std::string fmt(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

nlohmann::json json_number(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json();
}

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

std::string resume_path(const std::string& run_dir) {
  return (fs::path(run_dir) / "resume.pt").string();
}

namespace {

constexpr const char* kResumeState = "hgqt_resume_state";
constexpr const char* kResumeOptimizer = "hgqt_resume_optimizer";
constexpr const char* kResumeGenerator = "hgqt_resume_generator";
constexpr const char* kResumeTorchRng = "hgqt_resume_torch_rng";
constexpr int kResumeVersion = 1;

// Where the loop is, besides the model and optimizer: what resume.pt records as JSON.
struct LoopState {
  int64_t epoch = 0;        // epochs finished
  int64_t step = 0;         // steps done in the next epoch (0: at its start)
  int64_t global_step = 0;  // optimizer steps so far
  double loss_sum = 0;      // of the epoch in progress
  int64_t correct = 0;
  model::CheckpointMeta best;  // epoch 0: none yet
  std::vector<ParetoEntry> front;
  EarlyStopper::State stopper;
  BetaPID::State pid;
  double pid_sum = 0;  // EBOPs summed since the controller's last update (interval_steps)
  int64_t pid_count = 0;
  bool finished = false;  // the run went the distance or stopped early: nothing to resume
};

double number_of(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nan("");
  return it->get<double>();
}

nlohmann::json to_json(const LoopState& s, const std::string& config_yaml,
                       const std::string& source) {
  nlohmann::json front = nlohmann::json::array();
  for (const auto& e : s.front)
    front.push_back({{"epoch", e.epoch},
                     {"score", json_number(e.accuracy)},
                     {"ebops", e.ebops},
                     {"path", e.path}});
  return {{"version", kResumeVersion},
          {"config", config_yaml},
          {"config_source", source},
          {"epoch", s.epoch},
          {"step", s.step},
          {"global_step", s.global_step},
          {"loss_sum", s.loss_sum},
          {"correct", s.correct},
          {"best",
           {{"epoch", s.best.epoch},
            {"val_accuracy", json_number(s.best.val_accuracy)},
            {"val_loss", json_number(s.best.val_loss)},
            {"ebops", s.best.ebops},
            {"beta", s.best.beta}}},
          {"front", front},
          {"stopper",
           {{"best", json_number(s.stopper.best)},
            {"best_epoch", s.stopper.best_epoch},
            {"wait", s.stopper.wait},
            {"last_epoch", s.stopper.last_epoch}}},
          {"pid",
           {{"beta", s.pid.beta},
            {"integral", s.pid.integral},
            {"previous_error", s.pid.previous_error},
            {"updates", s.pid.updates},
            {"start", s.pid.start_ebops},
            {"start_time", s.pid.start_time},
            {"sum", s.pid_sum},
            {"count", s.pid_count}}},
          {"finished", s.finished}};
}

LoopState loop_state_from_json(const nlohmann::json& j) {
  LoopState s;
  s.epoch = j.at("epoch").get<int64_t>();
  s.step = j.at("step").get<int64_t>();
  s.global_step = j.at("global_step").get<int64_t>();
  s.loss_sum = j.at("loss_sum").get<double>();
  s.correct = j.at("correct").get<int64_t>();
  const auto& b = j.at("best");
  s.best.epoch = b.at("epoch").get<int64_t>();
  s.best.val_accuracy = number_of(b, "val_accuracy");
  s.best.val_loss = number_of(b, "val_loss");
  s.best.ebops = b.at("ebops").get<double>();
  s.best.beta = b.at("beta").get<double>();
  for (const auto& e : j.at("front"))
    s.front.push_back({e.at("epoch").get<int64_t>(), number_of(e, "score"),
                       e.at("ebops").get<double>(), e.at("path").get<std::string>()});
  const auto& st = j.at("stopper");
  s.stopper = {number_of(st, "best"), st.at("best_epoch").get<int64_t>(),
               st.at("wait").get<int64_t>(), st.at("last_epoch").get<int64_t>()};
  const auto& p = j.at("pid");
  s.pid = {p.at("beta").get<double>(),
           p.at("integral").get<double>(),
           p.at("previous_error").get<double>(),
           p.at("updates").get<int64_t>(),
           p.value("start", 0.0),
           p.value("start_time", 0.0)};
  s.pid_sum = p.at("sum").get<double>();
  s.pid_count = p.at("count").get<int64_t>();
  s.finished = j.value("finished", false);
  return s;
}

EpochMetrics metrics_from_json(const nlohmann::json& j) {
  EpochMetrics m;
  m.epoch = j.at("epoch").get<int64_t>();
  m.loss = number_of(j, "loss");
  m.accuracy = number_of(j, "accuracy");
  m.val_loss = number_of(j, "val_loss");
  m.val_accuracy = number_of(j, "val_accuracy");
  m.ebops = number_of(j, "ebops");
  m.beta = number_of(j, "beta");
  m.lr = number_of(j, "lr");
  m.seconds = number_of(j, "seconds");
  return m;
}

// The epochs of metrics.jsonl up to `epochs` (a resumed run drops lines written after the state
// it resumes from).
std::vector<EpochMetrics> read_metrics(const std::string& path, int64_t epochs) {
  std::vector<EpochMetrics> out;
  std::ifstream in(path);
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    EpochMetrics m;
    try {
      m = metrics_from_json(nlohmann::json::parse(line));
    } catch (const std::exception& e) {
      throw std::runtime_error("cannot resume: " + path + ":" + std::to_string(n) +
                               " is not a metrics line: " + e.what());
    }
    if (m.epoch <= epochs) out.push_back(m);
  }
  if (static_cast<int64_t>(out.size()) != epochs)
    throw std::runtime_error("cannot resume: " + path + " holds " + std::to_string(out.size()) +
                             " of the " + std::to_string(epochs) +
                             " epochs the resume state has run");
  return out;
}

nlohmann::json metrics_json(const EpochMetrics& m) {
  return {{"epoch", m.epoch},
          {"loss", json_number(m.loss)},
          {"accuracy", json_number(m.accuracy)},
          {"val_loss", json_number(m.val_loss)},
          {"val_accuracy", json_number(m.val_accuracy)},
          {"ebops", m.ebops},
          {"beta", m.beta},
          {"lr", m.lr},
          {"seconds", m.seconds}};
}

}  // namespace

std::string metrics_line(const EpochMetrics& m) {
  return metrics_json(m).dump();
}

namespace {
// What resume.pt holds besides the tensors.
struct SavedState {
  LoopState loop;
  std::string config_yaml;  // the resolved config the run was trained with
  std::string source;       // the original config file (relative paths are relative to its folder)
};

// Opens run_dir/resume.pt: the archive (for the tensors) and its checked loop state.
SavedState open_resume_state(const std::string& run_dir, torch::serialize::InputArchive& archive) {
  const std::string path = resume_path(run_dir);
  if (!fs::is_directory(run_dir))
    throw std::runtime_error("cannot resume: no run directory '" + run_dir + "'");
  if (!fs::is_regular_file(path))
    throw std::runtime_error(
        "cannot resume: " + path +
        " does not exist (the run never finished "
        "an epoch or was interrupted, or was written by an hgqt without resume)");
  SavedState saved;
  try {
    c10::IValue state_v;
    archive.load_from(path);
    if (!archive.try_read(kResumeState, state_v))
      throw std::runtime_error("it holds no resume state");
    const auto j = nlohmann::json::parse(state_v.toStringRef());
    if (j.value("version", 0) > kResumeVersion)
      throw std::runtime_error("its state has version " + std::to_string(j.value("version", 0)) +
                               ", newer than this hgqt reads");
    saved.loop = loop_state_from_json(j);
    saved.config_yaml = j.at("config").get<std::string>();
    saved.source = j.value("config_source", std::string());
  } catch (const std::exception& e) {
    throw std::runtime_error("cannot resume from " + path + ": " + e.what());
  }
  return saved;
}
}  // namespace

config::RunConfig resume_config(const std::string& run_dir) {
  torch::serialize::InputArchive archive;
  const auto saved = open_resume_state(run_dir, archive);
  auto cfg = config::parse_run_config(saved.config_yaml, resume_path(run_dir) + " (resume state)");
  cfg.source_path = saved.source;
  return cfg;
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
  const std::string metrics_path = (fs::path(run_dir) / "metrics.jsonl").string();
  const std::string last_path = (fs::path(run_dir) / "last.pt").string();
  const std::string best_path = (fs::path(run_dir) / "best.pt").string();
  const std::string state_path = resume_path(run_dir);
  const fs::path pareto_dir = fs::path(run_dir) / "pareto";

  const auto& kd = t.distillation;
  const bool kd_output = kd.enabled && kd.target == "output";
  const bool kd_score = kd.enabled && kd.target == "reconstruction_error";
  const bool probabilities = model->outputs_probabilities();  // the model ends in a softmax
  torch::Tensor teacher_train;
  if (kd_output) {
    if (!train_split.teacher.defined() || train_split.teacher.size(0) != train_split.size())
      throw std::runtime_error(
          "train.distillation: the training split has no teacher outputs "
          "(name a teacher, or the data set of precomputed outputs in "
          "data.train.teacher)");
    const int64_t outputs = c10::multiply_integers(model->output_shape());
    if (train_split.teacher.size(1) != outputs)
      throw std::runtime_error(
          "train.distillation: the teacher gives " + std::to_string(train_split.teacher.size(1)) +
          " values per sample but the student has " + std::to_string(outputs) + " outputs");
    teacher_train =
        prepare_teacher_targets(train_split.teacher, kd, kd.teacher_outputs == "probabilities");
  }
  if (kd.enabled && kd.loss == "kl" && probabilities && kd.temperature != 1.0)
    throw config::ConfigError(
        origin(config) +
        ": train.distillation.temperature: the student ends in a softmax layer, whose quantized "
        "probabilities cannot be rescaled by a temperature; use temperature: 1 or end the student "
        "in a dense layer (logits)");

  const uint64_t seed = t.seed;
  const auto device = select_device(t.device);
  const int64_t n = train_split.size();
  const int64_t bs = std::min(t.batch_size, n);
  const int64_t steps_per_epoch = (n + bs - 1) / bs;
  auto gen = at::detail::createCPUGenerator(seed);
  const bool pid_mode = t.beta.kind == "pid";
  config::BetaPIDSpec pid_spec = t.beta.pid;
  if (pid_spec.ramp_epochs < 0) pid_spec.ramp_epochs = static_cast<double>(t.epochs) / 4.0;
  BetaPID pid(pid_spec);

  LoopState st;
  TrainResult result;
  result.steps_per_epoch = steps_per_epoch;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  torch::Tensor epoch_generator;  // the generator state at the start of the epoch in progress
  if (options.resume) {
    torch::serialize::InputArchive archive;
    const auto saved = open_resume_state(run_dir, archive);
    if (saved.config_yaml != config_yaml)
      throw std::runtime_error("cannot resume: the config differs from the one " + state_path +
                               " was trained with (resume with the run's own config.yaml)");
    st = saved.loop;
    if (st.finished)
      throw std::runtime_error("cannot resume: the run in " + run_dir + " has finished (" +
                               std::to_string(st.epoch) + " epochs of " + std::to_string(t.epochs) +
                               (st.epoch < t.epochs ? ", stopped early" : "") +
                               "); start a new run to train further");
    try {
      model->load(archive);
    } catch (const std::exception& e) {
      throw std::runtime_error("cannot resume: " + state_path +
                               " does not match the model: " + e.what());
    }
    model->to(device);
    optimizer = make_optimizer(model, t);
    torch::serialize::InputArchive opt_archive;
    archive.read(kResumeOptimizer, opt_archive);
    optimizer->load(opt_archive);
    archive.read(kResumeGenerator, epoch_generator);
    gen.set_state(epoch_generator);
    torch::Tensor torch_rng;
    archive.read(kResumeTorchRng, torch_rng);
    at::Generator default_generator = at::detail::getDefaultCPUGenerator();  // a shared handle
    default_generator.set_state(torch_rng);
    result.history = read_metrics(metrics_path, st.epoch);
    {
      std::string text;
      for (const auto& m : result.history) text += metrics_line(m) + "\n";
      util::write_text_atomic(metrics_path, text);
    }
    result.resumed = true;
    result.resumed_epoch = st.epoch + 1;
    result.resumed_step = st.step;
    if (!options.quiet)
      std::printf("resuming %s at epoch %lld, step %lld/%lld\n", run_dir.c_str(),
                  static_cast<long long>(st.epoch + 1), static_cast<long long>(st.step),
                  static_cast<long long>(steps_per_epoch));
  } else {
    util::write_text_atomic((fs::path(run_dir) / "config.yaml").string(), config_yaml);
    fs::remove(metrics_path);
    torch::manual_seed(seed);
    model->to(device);
    optimizer = make_optimizer(model, t);
  }
  if (pid_mode && options.resume) pid.restore(st.pid);
  model->train();
  const data::TensorSplit& monitor = val_split.size() > 0 ? val_split : train_split;
  if (val_split.size() == 0 && !options.quiet && !options.resume)
    std::printf(
        "note: no validation split; best and Pareto checkpoints are chosen on training data\n");

  ParetoFront front;
  if (!classification) front.set_score_name("val_loss", true);
  for (const auto& e : st.front) front.insert(e);
  model::CheckpointMeta meta;
  meta.loss = t.loss;
  meta.feature_mean = standardizer.mean;
  meta.feature_std = standardizer.stddev;
  meta.config_yaml = config_yaml;
  const auto& es = t.early_stopping;
  EarlyStopper stopper(es);
  stopper.restore(st.stopper);

  // Score: accuracy for classification, -loss for regression (higher is better).
  auto score_of = [&](double val_accuracy, double val_loss) {
    return classification ? val_accuracy : -val_loss;
  };
  // resume.pt: a checkpoint of the current weights (at `beta`) plus the optimizer, RNG and loop
  // state.
  auto save_state = [&](double beta) {
    model::CheckpointMeta m = meta;
    m.epoch = st.epoch;
    m.beta = beta;
    if (!result.history.empty()) {
      const auto& h = result.history.back();
      m.val_accuracy = h.val_accuracy;
      m.val_loss = h.val_loss;
      m.ebops = h.ebops;
    }
    st.front = front.entries();
    st.stopper = stopper.state();
    st.pid = pid.state();
    const std::string source =
        config.source_path.empty() ? "" : fs::absolute(config.source_path).string();
    const auto json = to_json(st, config_yaml, source).dump();
    auto torch_rng = at::detail::getDefaultCPUGenerator().get_state();
    model->to(torch::kCPU);
    model::save_checkpoint(state_path, model, m, [&](torch::serialize::OutputArchive& a) {
      a.write(kResumeState, c10::IValue(json));
      torch::serialize::OutputArchive opt_archive;
      optimizer->save(opt_archive);
      a.write(kResumeOptimizer, opt_archive);
      a.write(kResumeGenerator, epoch_generator);
      a.write(kResumeTorchRng, torch_rng);
    });
    model->to(device);
  };
  // Ctrl-C, once resume.pt holds the state before step `step` of epoch `epoch` (0-based).
  auto interrupted = [&](int64_t epoch, int64_t step) {
    result.interrupted = true;
    result.interrupted_epoch = epoch + 1;
    result.interrupted_step = step;
    result.best_checkpoint = best_path;
    result.best = st.best;
    return result;
  };
  auto stop_requested = [&] { return options.interrupted && options.interrupted(); };

  for (int64_t epoch = st.epoch; epoch < t.epochs; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    const bool pid_active = pid_mode && epoch >= t.beta.pid.warmup_epochs;
    const int64_t first_step = st.step;
    if (first_step > 0)
      gen.set_state(epoch_generator);  // redraw the permutation of the interrupted epoch
    epoch_generator = gen.get_state();
    auto perm = torch::randperm(n, gen, torch::kLong);
    util::ProgressBar bar(steps_per_epoch,
                          "epoch " + std::to_string(epoch + 1) + "/" + std::to_string(t.epochs),
                          options.progress);
    double loss_sum = first_step > 0 ? st.loss_sum : 0.0;
    int64_t correct = first_step > 0 ? st.correct : 0;
    double lr = t.lr;
    double beta = pid_mode ? pid.beta() : config::beta_at(t.beta, static_cast<double>(epoch));
    for (int64_t s = first_step; s < steps_per_epoch; ++s) {
      if (stop_requested()) {
        bar.finish();
        st.epoch = epoch;
        st.step = s;
        st.loss_sum = loss_sum;
        st.correct = correct;
        save_state(beta);
        return interrupted(epoch, s);
      }
      auto idx = perm.slice(0, s * bs, std::min(n, (s + 1) * bs));
      auto xb = train_split.x.index_select(0, idx).to(device);
      auto yb = train_split.y.index_select(0, idx).to(device);
      lr = config::lr_at(t, st.global_step, steps_per_epoch);
      set_lr(*optimizer, lr);
      if (pid_mode) beta = pid.beta();
      auto out = model->forward(xb);
      auto task =
          kd_score ? distill_loss(out, yb, kd, false) : task_loss(out, yb, t.loss, probabilities);
      auto loss = task;
      if (kd_output) {
        auto tb = teacher_train.index_select(0, idx).to(device);
        loss = kd.alpha * task + (1.0 - kd.alpha) * distill_loss(out, tb, kd, probabilities);
      }
      const bool pid_step = pid_active && t.beta.pid.interval_steps > 0;  // reads this step's EBOPs
      torch::Tensor ebops;
      if (beta > 0 || pid_step) ebops = model->ebops();
      if (beta > 0) loss = loss + beta * ebops;
      if (t.gamma > 0) loss = loss + t.gamma * model->bits_l1();
      zero_grad_to_none(*optimizer);
      loss.backward();
      optimizer->step();
      model->constrain();
      ++st.global_step;
      const double task_v = task.item<double>();
      if (!std::isfinite(task_v))
        throw std::runtime_error("training diverged: the loss is " + fmt("%g", task_v) +
                                 " at epoch " + std::to_string(epoch + 1) + ", step " +
                                 std::to_string(s + 1) +
                                 " (lower train.lr?); checkpoints up to "
                                 "the previous epoch are in " +
                                 run_dir);
      if (pid_step) {
        st.pid_sum += ebops.item<double>();
        if (++st.pid_count == t.beta.pid.interval_steps) {
          // training time in epochs: the target ramp runs from the first update's
          pid.update(st.pid_sum / static_cast<double>(st.pid_count),
                     static_cast<double>(st.global_step) / steps_per_epoch);
          st.pid_sum = 0;
          st.pid_count = 0;
        }
      }
      loss_sum += task_v * static_cast<double>(idx.size(0));
      if (classification) correct += (out.argmax(1) == yb).sum().item<int64_t>();
      bar.update(s + 1,
                 "loss " + fmt("%.4f", loss_sum / static_cast<double>(std::min(n, (s + 1) * bs))));
    }
    bar.finish();
    st.step = 0;

    EpochMetrics m;
    m.epoch = epoch + 1;
    m.loss = loss_sum / static_cast<double>(n);
    m.accuracy =
        classification ? static_cast<double>(correct) / static_cast<double>(n) : std::nan("");
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
    // Once per epoch (interval_steps 0): the next epoch's beta from this epoch's EBOPs.
    if (pid_mode && t.beta.pid.interval_steps == 0 && epoch + 1 >= t.beta.pid.warmup_epochs)
      pid.update(m.ebops, static_cast<double>(epoch + 1));

    util::append_line(metrics_path, metrics_line(m));
    if (!options.quiet) {
      if (classification)
        std::printf(
            "epoch %3lld/%lld  loss %.4f  acc %.4f  val_loss %.4f  val_acc %.4f  EBOPs %10.0f  "
            "beta %.2e  lr %.2e  %.1fs\n",
            static_cast<long long>(m.epoch), static_cast<long long>(t.epochs), m.loss, m.accuracy,
            m.val_loss, m.val_accuracy, m.ebops, m.beta, m.lr, m.seconds);
      else
        std::printf(
            "epoch %3lld/%lld  loss %.5f  val_loss %.5f  EBOPs %10.0f  beta %.2e  lr %.2e  %.1fs\n",
            static_cast<long long>(m.epoch), static_cast<long long>(t.epochs), m.loss, m.val_loss,
            m.ebops, m.beta, m.lr, m.seconds);
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
    const double score = score_of(m.val_accuracy, m.val_loss);
    const double best_score = st.best.epoch == 0 ? -std::numeric_limits<double>::infinity()
                                                 : score_of(st.best.val_accuracy, st.best.val_loss);
    if (score > best_score) {
      util::copy_file_atomic(last_path, best_path);
      st.best = meta;
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
    const bool stop =
        stopper.update(m.epoch, es.monitor == "val_loss" ? m.val_loss : m.val_accuracy, m.ebops);
    st.epoch = m.epoch;
    st.finished = stop || m.epoch == t.epochs;
    epoch_generator = gen.get_state();
    save_state(beta);
    if (options.on_epoch) options.on_epoch(m);
    if (stop) {
      result.stopped_early = true;
      result.stopped_epoch = m.epoch;
      if (!options.quiet) {
        std::printf("%s\n", stopper.describe(t.epochs).c_str());
        std::fflush(stdout);
      }
      break;
    }
    if (m.epoch < t.epochs && stop_requested()) return interrupted(m.epoch, 0);  // saved above
  }
  result.best_checkpoint = best_path;
  result.best = st.best;

  if (test_split.size() > 0) {
    auto best = model::load_checkpoint(best_path);
    best.model->to(device);
    result.test = evaluate(best.model, test_split, t.loss);
    result.test_ebops = best.meta.ebops;
    if (autoencoder) result.anomaly = evaluate_anomaly(best.model, test_split, config.data);
    if (kd_score) {
      result.anomaly =
          score_anomaly(predicted_scores(best.model, test_split), test_split.labels, config.data);
      result.anomaly.score = "the student's predicted reconstruction error";
    }
  }
  nlohmann::json summary{
      {"best_checkpoint", best_path},
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
    summary["early_stopping"] = {
        {"monitor", es.monitor},
        {"patience", es.patience},
        {"min_delta", es.min_delta},
        {"ebops_below", es.ebops_below ? nlohmann::json(*es.ebops_below) : nlohmann::json()},
        {"best", json_number(stopper.best())},
        {"best_epoch", stopper.best_epoch()}};
  }
  if (pid_mode) {
    summary["beta_pid"] = {
        {"target_ebops", t.beta.pid.target_ebops},
        {"ramp_epochs", pid_spec.ramp_epochs},
        {"start_ebops", pid.state().start_ebops},
        {"final_beta", pid.beta()},
        {"updates", pid.state().updates},
        {"final_ebops", result.history.empty() ? 0.0 : result.history.back().ebops}};
  }
  if (kd.enabled) {
    summary["distillation"] = {
        {"teacher", kd.teacher.empty() ? nlohmann::json("data") : nlohmann::json(kd.teacher)},
        {"alpha", kd.alpha},
        {"loss", kd.loss},
        {"target", kd.target}};
    if (kd.loss == "kl") summary["distillation"]["temperature"] = kd.temperature;
  }
  if (autoencoder || kd_score) {
    const auto& a = result.anomaly;
    summary[kd_score ? "test_mean_score" : "test_mse"] =
        json_number(a.samples ? a.mse : std::nan(""));
    summary[kd_score ? "test_mean_score_normal" : "test_mse_normal"] = json_number(a.mse_normal);
    summary[kd_score ? "test_mean_score_anomalous" : "test_mse_anomalous"] =
        json_number(a.mse_anomalous);
    summary["roc_auc"] = json_number(a.roc_auc);
    summary["auc_normal_samples"] = a.normal;
    summary["auc_anomalous_samples"] = a.anomalous;
    summary["normal_classes"] = a.normal_classes;
    summary["anomaly_classes"] = a.anomaly_classes;
  }
  util::write_text_atomic((fs::path(run_dir) / "result.json").string(), summary.dump(2));
  return result;
}

namespace {

// The features as stored in the data file: the standardization undone.
torch::Tensor raw_features(const data::TensorSplit& split, const data::Standardizer& st) {
  if (st.empty() || split.size() == 0) return split.x;
  const auto mean = torch::tensor(st.mean), stddev = torch::tensor(st.stddev);
  return (split.x.reshape({split.size(), -1}) * stddev + mean).reshape(split.x.sizes());
}

// Fills the splits' teacher outputs for train.distillation (loading the teacher, or checking the
// precomputed data); with target reconstruction_error the teacher's score becomes the target.
void prepare_distillation(config::RunConfig& config, const std::string& base_dir,
                          const data::Standardizer& standardizer,
                          std::vector<std::pair<std::string, data::TensorSplit*>> splits,
                          bool quiet) {
  auto& kd = config.train.distillation;
  const std::string where = origin(config);
  if (!kd.teacher.empty()) {
    std::string path = kd.teacher;
    if (fs::path(path).is_relative() && !config.source_path.empty())
      path = (fs::path(base_dir) / path).string();
    auto teacher = Teacher::load(path);
    if (teacher.outputs_probabilities()) kd.teacher_outputs = "probabilities";
    const auto start = std::chrono::steady_clock::now();
    int64_t samples = 0;
    for (auto& [name, split] : splits) {
      if (split->size() == 0) continue;
      split->teacher = teacher_targets(teacher, raw_features(*split, standardizer), kd);
      samples += split->size();
    }
    if (!quiet)
      std::printf(
          "teacher: %s, %s on %lld samples in %.1fs (computed once: the data is not "
          "augmented)\n",
          teacher.description().c_str(),
          kd.target == "output" ? "outputs" : "reconstruction errors",
          static_cast<long long>(samples),
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  } else if (!splits.front().second->teacher.defined()) {
    throw config::ConfigError(where +
                              ": train.distillation names no teacher, and data.train "
                              "names no precomputed teacher outputs (data.train.teacher; see "
                              "hgqt distill-targets)");
  }
  if (kd.target != "reconstruction_error") return;
  for (auto& [name, split] : splits) {
    if (split->size() == 0) continue;
    if (!split->teacher.defined())
      throw config::ConfigError(where + ": train.distillation (target reconstruction_error): the " +
                                name + " split has no teacher scores (name data." + name +
                                ".teacher, or a teacher)");
    if (split->teacher.size(1) != 1)
      throw std::runtime_error("train.distillation: the " + name + " split's teacher scores have " +
                               std::to_string(split->teacher.size(1)) +
                               " values per sample; a reconstruction error is one");
    auto y = split->y.reshape({-1});
    if (y.size(0) == split->size() && (y == y.round()).all().item<bool>())
      split->labels = y.to(torch::kLong);  // class labels, for the ROC AUC
    split->y = split->teacher;
    split->teacher = torch::Tensor();
  }
}

}  // namespace

TrainResult train(const config::RunConfig& config_in, const TrainOptions& options) {
  config::RunConfig config = config_in;
  if (config.train.threads > 0) torch::set_num_threads(static_cast<int>(config.train.threads));
  torch::manual_seed(config.train.seed);
  std::string base_dir =
      config.source_path.empty() ? "." : fs::path(config.source_path).parent_path().string();
  if (base_dir.empty()) base_dir = ".";
  auto splits = data::load_splits(config.data, base_dir);
  model::HGQModel model(config.model);
  const int64_t outputs = c10::multiply_integers(model->output_shape());
  const bool cls = config.train.loss == "cross_entropy";
  if (cls && model->output_shape().size() != 1)
    throw config::ConfigError(
        origin(config) +
        ": train.loss cross_entropy needs a model output of one axis [classes], "
        "but the model's output is " +
        shape_text(model->output_shape()) +
        " (a dense layer on a per-sample input of several axes applies to every position: add "
        "{type: flatten} or a global pool before the classifier)");
  const auto& shape = model->input_shape();
  check_target(model, config);
  const auto& kd = config.train.distillation;
  if (kd.enabled && kd.target == "reconstruction_error" && outputs != 1)
    throw config::ConfigError(origin(config) +
                              ": train.distillation (target reconstruction_error) needs a student "
                              "with one output (the score), but the model has " +
                              std::to_string(outputs));
  data::TensorSplit tr, va, te;
  if (config.train.target == "input") {
    const auto& oshape = model->output_shape();
    tr = data::to_autoencoder_tensors(splits.train, shape, oshape, "training data");
    va = data::to_autoencoder_tensors(splits.validation, shape, oshape, "validation data");
    te = data::to_autoencoder_tensors(splits.test, shape, oshape, "test data");
  } else {
    // A score student's labels are class labels (for the AUC), not targets of its width.
    const bool labels_only = kd.enabled && kd.target == "reconstruction_error";
    auto convert = [&](const data::Dataset& d, const std::string& what) {
      if (!labels_only) return data::to_tensors(d, shape, outputs, cls, what);
      data::Dataset c = d;
      if (c.y.shape.size() == 2 && c.y.shape[1] > 1) c.y = {};  // one-hot rows: no labels
      if (c.y.values.empty()) {
        c.y.values.assign(static_cast<size_t>(c.size()), std::nanf(""));
        c.y.shape = {c.size()};
      }
      return data::to_tensors(c, shape, 1, false, what);
    };
    tr = convert(splits.train, "training data");
    va = convert(splits.validation, "validation data");
    te = convert(splits.test, "test data");
  }
  if (kd.enabled)
    prepare_distillation(config, base_dir, splits.standardizer,
                         {{"train", &tr}, {"validation", &va}, {"test", &te}}, options.quiet);
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
