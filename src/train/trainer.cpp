// The training loop.
#include "hgqt/train/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

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

torch::Tensor task_loss(const torch::Tensor& out, const torch::Tensor& y, const std::string& loss) {
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
  int64_t correct = 0;
  for (int64_t s = 0; s < r.samples; s += batch_size) {
    const int64_t e = std::min(r.samples, s + batch_size);
    auto xb = split.x.slice(0, s, e).to(device);
    auto yb = split.y.slice(0, s, e).to(device);
    auto out = model->forward(xb);
    loss_sum += task_loss(out, yb, loss).item<double>() * static_cast<double>(e - s);
    if (loss == "cross_entropy") correct += (out.argmax(1) == yb).sum().item<int64_t>();
  }
  model->train(was_training);
  r.loss = loss_sum / static_cast<double>(r.samples);
  if (loss == "cross_entropy") r.accuracy = static_cast<double>(correct) / static_cast<double>(r.samples);
  return r;
}

namespace {

double cosine_lr(const config::TrainSpec& t, int64_t step, int64_t total) {
  if (t.lr_schedule != "cosine" || total <= 1) return t.lr;
  const double progress = static_cast<double>(step) / static_cast<double>(total);
  return t.min_lr + 0.5 * (t.lr - t.min_lr) * (1.0 + std::cos(M_PI * progress));
}

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

TrainResult train_model(model::HGQModel& model, const config::RunConfig& config,
                        const data::TensorSplit& train_split, const data::TensorSplit& val_split,
                        const data::TensorSplit& test_split, const data::Standardizer& standardizer,
                        const TrainOptions& options) {
  const auto& t = config.train;
  const bool classification = t.loss == "cross_entropy";
  if (train_split.size() == 0) throw std::runtime_error("the training split is empty");
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
  const int64_t total_steps = steps_per_epoch * t.epochs;
  auto gen = at::detail::createCPUGenerator(t.seed);

  TrainResult result;
  ParetoFront front;
  double best_score = -std::numeric_limits<double>::infinity();
  int64_t global_step = 0;
  model::CheckpointMeta meta;
  meta.loss = t.loss;
  meta.feature_mean = standardizer.mean;
  meta.feature_std = standardizer.stddev;
  meta.config_yaml = config_yaml;

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
      lr = cosine_lr(t, global_step, total_steps);
      set_lr(*optimizer, lr);
      auto out = model->forward(xb);
      auto task = task_loss(out, yb, t.loss);
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
    meta.val_accuracy = m.val_accuracy;
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
  }
  result.best_checkpoint = best_path;

  if (test_split.size() > 0) {
    auto best = model::load_checkpoint(best_path);
    best.model->to(device);
    result.test = evaluate(best.model, test_split, t.loss);
    result.test_ebops = best.meta.ebops;
  }
  nlohmann::json summary{{"best_checkpoint", best_path},
                         {"best_epoch", result.best.epoch},
                         {"val_accuracy", json_number(result.best.val_accuracy)},
                         {"val_loss", json_number(result.best.val_loss)},
                         {"ebops", result.best.ebops},
                         {"test_samples", result.test.samples},
                         {"test_accuracy", json_number(result.test.samples ? result.test.accuracy : std::nan(""))},
                         {"test_loss", json_number(result.test.samples ? result.test.loss : std::nan(""))}};
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
  auto tr = data::to_tensors(splits.train, shape, outputs, cls, "training data");
  auto va = data::to_tensors(splits.validation, shape, outputs, cls, "validation data");
  auto te = data::to_tensors(splits.test, shape, outputs, cls, "test data");
  if (!options.quiet)
    std::printf("data: %lld train, %lld validation, %lld test samples\n",
                static_cast<long long>(tr.size()), static_cast<long long>(va.size()),
                static_cast<long long>(te.size()));
  return train_model(model, config, tr, va, te, splits.standardizer, options);
}

}  // namespace hgqt::train
