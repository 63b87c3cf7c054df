// Knowledge distillation: teachers, targets and losses.
#include "hgqt/train/distill.h"

#include <torch/script.h>

#include <filesystem>
#include <optional>

#include "hgqt/data/dataset.h"
#include "hgqt/model/checkpoint.h"

namespace hgqt::train {

namespace fs = std::filesystem;

namespace {
std::string shape_text(const torch::Tensor& t) {
  return data::shape_to_string(t.sizes().vec());
}
}  // namespace

struct Teacher::Impl {
  std::string description;
  bool hgqt = false;
  model::Checkpoint checkpoint;           // hgqt
  std::optional<torch::jit::Module> jit;  // TorchScript
  torch::Tensor mean, stddev;             // hgqt standardization (undefined: none)

  // One batch of raw inputs through the teacher.
  torch::Tensor forward(const torch::Tensor& raw) {
    if (hgqt) {
      auto x = raw;
      if (mean.defined()) x = (x.reshape({x.size(0), -1}) - mean) / stddev;
      std::vector<int64_t> shape{raw.size(0)};
      const auto& in = checkpoint.model->input_shape();
      shape.insert(shape.end(), in.begin(), in.end());
      return checkpoint.model->forward(x.reshape(shape));
    }
    auto out = jit->forward({raw});
    if (!out.isTensor())
      throw std::runtime_error("it returned a " + out.tagKind() + ", not one tensor");
    return out.toTensor();
  }
};

Teacher::Teacher(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Teacher::~Teacher() = default;
Teacher::Teacher(Teacher&&) noexcept = default;
Teacher& Teacher::operator=(Teacher&&) noexcept = default;

Teacher Teacher::load(const std::string& path_in) {
  auto impl = std::make_unique<Impl>();
  std::string path = path_in;
  if (fs::is_directory(path)) {
    path = model::resolve_checkpoint_path(path);  // throws when the run has no checkpoint
  } else if (!fs::is_regular_file(path)) {
    throw std::runtime_error("teacher '" + path +
                             "' does not exist (expected a TorchScript file, "
                             "an hgqt checkpoint or an hgqt run directory)");
  }
  std::string hgqt_error;
  try {
    impl->checkpoint = model::load_checkpoint(path);
    impl->hgqt = true;
  } catch (const std::exception& e) {
    hgqt_error = e.what();
  }
  if (impl->hgqt) {
    const auto& meta = impl->checkpoint.meta;
    if (!meta.feature_mean.empty()) {
      impl->mean = torch::tensor(meta.feature_mean);
      impl->stddev = torch::tensor(meta.feature_std);
    }
    impl->checkpoint.model->eval();
    impl->description = "hgqt checkpoint '" + path + "' (epoch " + std::to_string(meta.epoch) + ")";
    return Teacher(std::move(impl));
  }
  try {
    impl->jit = torch::jit::load(path, torch::kCPU);
    impl->jit->eval();
  } catch (const std::exception& e) {
    std::string why = e.what();
    if (auto nl = why.find('\n'); nl != std::string::npos) why = why.substr(0, nl);
    throw std::runtime_error("teacher '" + path + "' is neither an hgqt checkpoint (" + hgqt_error +
                             ") nor a TorchScript module (" + why + ")");
  }
  impl->description = "TorchScript module '" + path + "'";
  return Teacher(std::move(impl));
}

const std::string& Teacher::description() const {
  return impl_->description;
}

bool Teacher::outputs_probabilities() const {
  return impl_->hgqt && impl_->checkpoint.model->outputs_probabilities();
}

torch::Tensor Teacher::outputs(const torch::Tensor& raw_x, int64_t batch_size) {
  torch::NoGradGuard no_grad;
  const int64_t n = raw_x.size(0);
  std::vector<torch::Tensor> parts;
  for (int64_t s = 0; s < n; s += batch_size) {
    const int64_t e = std::min(n, s + batch_size);
    auto xb = raw_x.slice(0, s, e).to(torch::kFloat).contiguous();
    torch::Tensor out;
    try {
      out = impl_->forward(xb);
    } catch (const std::exception& ex) {
      std::string why = ex.what();
      if (auto nl = why.find('\n'); nl != std::string::npos) why = why.substr(0, nl);
      throw std::runtime_error("teacher " + impl_->description + " failed on an input of shape " +
                               shape_text(xb) + ": " + why);
    }
    if (out.dim() == 0 || out.size(0) != e - s)
      throw std::runtime_error("teacher " + impl_->description + " returned shape " +
                               shape_text(out) + " for a batch of " + std::to_string(e - s) +
                               " samples (expected the batch first)");
    out = out.to(torch::kCPU).to(torch::kFloat).reshape({e - s, -1});
    if (!torch::isfinite(out).all().item<bool>())
      throw std::runtime_error("teacher " + impl_->description +
                               " gave non-finite outputs (NaN or Inf) on samples " +
                               std::to_string(s) + ".." + std::to_string(e - 1));
    parts.push_back(out);
  }
  if (parts.empty()) return torch::zeros({0, 0});
  return torch::cat(parts);
}

torch::Tensor Teacher::reconstruction_errors(const torch::Tensor& raw_x, int64_t batch_size) {
  auto out = outputs(raw_x, batch_size);
  const int64_t n = raw_x.size(0);
  auto flat = raw_x.reshape({n, -1}).to(torch::kFloat);
  if (out.size(1) != flat.size(1))
    throw std::runtime_error("teacher " + impl_->description + " gives " +
                             std::to_string(out.size(1)) + " values per sample but the input has " +
                             std::to_string(flat.size(1)) +
                             ": a reconstruction error needs an autoencoder teacher");
  return (out.to(torch::kDouble) - flat.to(torch::kDouble)).pow(2).mean(1, true).to(torch::kFloat);
}

torch::Tensor teacher_targets(Teacher& teacher, const torch::Tensor& raw_x,
                              const config::DistillationSpec& spec) {
  return spec.target == "reconstruction_error" ? teacher.reconstruction_errors(raw_x)
                                               : teacher.outputs(raw_x);
}

torch::Tensor prepare_teacher_targets(const torch::Tensor& outputs,
                                      const config::DistillationSpec& spec,
                                      bool teacher_probabilities) {
  if (spec.loss != "kl") return outputs;
  if (teacher_probabilities) return torch::log(outputs.clamp_min(1e-12));
  return torch::log_softmax(outputs, 1);
}

torch::Tensor distill_loss(const torch::Tensor& student, const torch::Tensor& teacher,
                           const config::DistillationSpec& spec, bool student_probabilities) {
  const auto s = student.reshape({student.size(0), -1});
  if (spec.loss == "kl") {
    const double T = spec.temperature;
    const auto log_t = torch::log_softmax(teacher / T, 1);
    const auto log_s =
        student_probabilities ? torch::log(s + 0x1p-8) : torch::log_softmax(s / T, 1);
    return (log_t.exp() * (log_t - log_s)).sum(1).mean() * (T * T);
  }
  if (spec.loss == "huber")
    return torch::huber_loss(s, teacher, at::Reduction::Mean, spec.huber_delta);
  return torch::mse_loss(s, teacher);
}

}  // namespace hgqt::train
