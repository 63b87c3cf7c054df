// Times training steps of the transformer jet tagger (configs/jet_transformer.yaml: P = 32
// particles of 5 features, embedding 16, two 2-head attention blocks of key_dim 8 with residual
// adds, mean, dense 16, 5 classes): the hgqt model built from the config (every weight and
// activation quantized, EBOPs in the loss) and a float LibTorch model of the same shape written
// with plain LibTorch ops, side by side in one process, interleaved; prints the ratio.
//
// Usage: bench_transformer_step [--config configs/jet_transformer.yaml] [--batch 512]
//                               [--rounds 5] [--threads 1] [--seconds 1]
#include <torch/torch.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_util.h"
#include "hgqt/config/config.h"
#include "hgqt/model/model.h"
#include "hgqt/train/optim.h"
#include "hgqt/train/trainer.h"
#include "hgqt/util/allocator.h"
#include "hgqt/util/blas_info.h"

using namespace hgqt;
using bench::median;
using bench::seconds_per_step;

namespace {

// Multi-head self-attention of width E with H heads of key_dim D: Q, K (no bias), V, O.
struct AttentionImpl : torch::nn::Module {
  AttentionImpl(int64_t e, int64_t h, int64_t d) : H(h), D(d) {
    q = register_module("q", torch::nn::Linear(e, h * d));
    k = register_module("k", torch::nn::Linear(torch::nn::LinearOptions(e, h * d).bias(false)));
    v = register_module("v", torch::nn::Linear(e, h * d));
    o = register_module("o", torch::nn::Linear(h * d, e));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const int64_t B = x.size(0), P = x.size(1);
    auto heads = [&](const torch::Tensor& t) { return t.view({B, P, H, D}).transpose(1, 2); };
    auto s = torch::matmul(heads(q(x)), heads(k(x)).transpose(-1, -2)) / std::sqrt(double(D));
    auto c = torch::matmul(torch::softmax(s, -1), heads(v(x)));  // [B, H, P, D]
    return o(c.transpose(1, 2).reshape({B, P, H * D}));
  }
  int64_t H, D;
  torch::nn::Linear q{nullptr}, k{nullptr}, v{nullptr}, o{nullptr};
};
TORCH_MODULE(Attention);

struct FloatTransformerImpl : torch::nn::Module {
  FloatTransformerImpl() {
    embed = register_module("embed", torch::nn::Linear(5, 16));
    a1 = register_module("a1", Attention(16, 2, 8));
    a2 = register_module("a2", Attention(16, 2, 8));
    head = register_module("head", torch::nn::Linear(16, 16));
    out = register_module("out", torch::nn::Linear(16, 5));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto e = torch::relu(embed(x));
    auto r1 = e + a1(e);
    auto r2 = torch::relu(r1 + a2(r1));
    return out(torch::relu(head(r2.mean(1))));
  }
  torch::nn::Linear embed{nullptr}, head{nullptr}, out{nullptr};
  Attention a1{nullptr}, a2{nullptr};
};
TORCH_MODULE(FloatTransformer);

}  // namespace

int main(int argc, char** argv) {
  const auto alloc = util::tune_allocator();
  std::string config = "configs/jet_transformer.yaml";
  bench::StepOptions o;
  o.batch = 512;
  if (!bench::parse_step_options(argc, argv, o, [&](const std::string& flag, const char* value) {
        if (flag != "--config") return false;
        config = value;
        return true;
      }))
    return 2;
  const int rounds = o.rounds, threads = o.threads;
  const double budget = o.seconds;
  const int64_t batch = o.batch;
  try {
    torch::set_num_threads(threads);
    torch::manual_seed(0);
    const config::RunConfig rc = config::load_run_config(config);
    if (rc.model.input_shape != std::vector<int64_t>{32, 5}) {
      std::fprintf(stderr, "%s: the float twin is the [32, 5] transformer of jet_transformer\n",
                   config.c_str());
      return 2;
    }
    std::printf(
        "bench_transformer_step: %s (P = 32, F = 5, embedding 16, 2 blocks of 2 heads x 8), "
        "batch %lld, Adam, cross-entropy; %d thread(s); median of %d interleaved rounds of >= "
        "%.2fs each\n",
        config.c_str(), static_cast<long long>(batch), threads, rounds, budget);
    std::printf("BLAS: %s\n", util::describe(util::detect_blas()).c_str());
    std::printf("allocator: %s\n\n",
                alloc.applied ? "glibc malloc tuned (util::tune_allocator)" : alloc.reason);
    auto x = torch::rand({batch, 32, 5});
    auto y = torch::randint(0, 5, {batch}, torch::kLong);
    FloatTransformer fnet;
    torch::optim::Adam fopt(fnet->parameters(), torch::optim::AdamOptions(1e-3));
    model::HGQModel hnet(rc.model);
    hnet->train();
    train::FusedAdam hopt(hnet->parameters(), torch::optim::AdamOptions(1e-3));
    int64_t fparams = 0, hparams = 0;
    for (const auto& p : fnet->parameters()) fparams += p.numel();
    for (const auto& [name, p] : hnet->named_parameters().pairs())
      if (name.find("kernel") != std::string::npos || name.find("bias") != std::string::npos)
        hparams += p.numel();
    std::printf("weights: float %lld, hgqt %lld (hgqt's K has no bias, as the float twin)\n\n",
                static_cast<long long>(fparams), static_cast<long long>(hparams));
    auto float_step = [&] {
      auto loss = torch::nn::functional::cross_entropy(fnet->forward(x), y);
      fopt.zero_grad();
      loss.backward();
      fopt.step();
    };
    auto hgq_step = [&] {
      auto loss = train::task_loss(hnet->forward(x), y, "cross_entropy") + 1e-7 * hnet->ebops();
      train::zero_grad_to_none(hopt);
      loss.backward();
      hopt.step();
      hnet->constrain();
    };
    std::vector<double> tf, th;
    for (int r = 0; r < rounds; ++r) {
      tf.push_back(seconds_per_step(float_step, budget));
      th.push_back(seconds_per_step(hgq_step, budget));
    }
    const double f = median(tf), h = median(th);
    std::printf("%8s %14s %14s %10s\n", "batch", "float ms/step", "hgqt ms/step", "hgqt/float");
    std::printf("%8lld %14.2f %14.2f %10.2f\n", static_cast<long long>(batch), f * 1e3, h * 1e3,
                h / f);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_transformer_step: %s\n", e.what());
    return 1;
  }
  return 0;
}
