// FusedAdam: Adam's update for every float32 CPU parameter in one loop per tensor, without the
// temporaries of the per-op implementation.
#include "hgqt/train/optim.h"

#include <c10/util/string_utils.h>

#include <cmath>

namespace hgqt::train {

namespace {

bool fusable(const torch::Tensor& p) {
  const auto& g = p.grad();
  return p.is_cpu() && p.scalar_type() == torch::kFloat && p.is_contiguous() && g.is_cpu() &&
         g.scalar_type() == torch::kFloat && g.is_contiguous() && !g.is_sparse();
}

// m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; p -= step_size * m / (sqrt(v) / sqrt(bc2) + eps),
// with weight decay added to g first (Adam's L2 form). The same operations in the same order as
// torch::optim::Adam, each rounded to float.
void adam_update(float* p, const float* g, float* m, float* v, int64_t n, float b1, float b2,
                 float wd, float sqrt_bc2, float eps, float step_size) {
  const float c1 = 1.0f - b1, c2 = 1.0f - b2;
  for (int64_t j = 0; j < n; ++j) {
    const float gj = wd != 0.0f ? g[j] + wd * p[j] : g[j];
    const float mj = m[j] * b1 + c1 * gj;
    const float vj = v[j] * b2 + c2 * (gj * gj);
    m[j] = mj;
    v[j] = vj;
    p[j] -= step_size * (mj / (std::sqrt(vj) / sqrt_bc2 + eps));
  }
}

}  // namespace

torch::Tensor FusedAdam::step(LossClosure closure) {
  for (const auto& group : param_groups())
    for (const auto& p : group.params())
      if (p.grad().defined() &&
          (!fusable(p) || static_cast<const torch::optim::AdamOptions&>(group.options()).amsgrad()))
        return torch::optim::Adam::step(std::move(closure));
  torch::NoGradGuard no_grad;
  torch::Tensor loss;
  if (closure) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  for (auto& group : param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamOptions&>(group.options());
    const double b1 = std::get<0>(o.betas()), b2 = std::get<1>(o.betas());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const auto key = c10::guts::to_string(p.unsafeGetTensorImpl());
      auto it = state_.find(key);
      if (it == state_.end()) {
        auto s = std::make_unique<torch::optim::AdamParamState>();
        s->step(0);
        s->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
        s->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
        it = state_.emplace(key, std::move(s)).first;
      }
      auto& s = static_cast<torch::optim::AdamParamState&>(*it->second);
      s.step(s.step() + 1);
      const double bc1 = 1.0 - std::pow(b1, static_cast<double>(s.step()));
      const double bc2 = 1.0 - std::pow(b2, static_cast<double>(s.step()));
      auto m = s.exp_avg().contiguous(), v = s.exp_avg_sq().contiguous();
      adam_update(p.data_ptr<float>(), p.grad().data_ptr<float>(), m.data_ptr<float>(),
                  v.data_ptr<float>(), p.numel(), static_cast<float>(b1), static_cast<float>(b2),
                  static_cast<float>(o.weight_decay()), static_cast<float>(std::sqrt(bc2)),
                  static_cast<float>(o.eps()), static_cast<float>(o.lr() / bc1));
      if (!m.is_same(s.exp_avg())) s.exp_avg(m);
      if (!v.is_same(s.exp_avg_sq())) s.exp_avg_sq(v);
    }
  }
  return loss;
}

void zero_grad_to_none(torch::optim::Optimizer& optimizer) {
  for (auto& group : optimizer.param_groups())
    for (auto& p : group.params())
      if (p.grad().defined()) p.mutable_grad() = torch::Tensor();
}

}  // namespace hgqt::train
