// Times training steps of the jet-tagger shape (16-64-32-32-5): a float LibTorch model and the
// HGQ model (per-element input, kernel and bias quantizers, EBOPs in the loss), side by side in
// one process, interleaved, and prints the ratio HGQ / float.
//
// Usage: bench_train_step [--batches 1024,33200] [--rounds 7] [--threads 1] [--seconds 0.5]
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "bench_util.h"
#include "hgqt/config/config.h"
#include "hgqt/model/model.h"
#include "hgqt/quant/quantize.h"
#include "hgqt/train/optim.h"
#include "hgqt/train/trainer.h"
#include "hgqt/util/allocator.h"
#include "hgqt/util/blas_info.h"

using namespace hgqt;
using bench::median;
using bench::parse_list;
using bench::seconds_per_step;

namespace {

struct FloatNetImpl : torch::nn::Module {
  FloatNetImpl() {
    l1 = register_module("l1", torch::nn::Linear(16, 64));
    l2 = register_module("l2", torch::nn::Linear(64, 32));
    l3 = register_module("l3", torch::nn::Linear(32, 32));
    l4 = register_module("l4", torch::nn::Linear(32, 5));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::relu(l1(x));
    x = torch::relu(l2(x));
    x = torch::relu(l3(x));
    return l4(x);
  }
  torch::nn::Linear l1{nullptr}, l2{nullptr}, l3{nullptr}, l4{nullptr};
};
TORCH_MODULE(FloatNet);

config::ModelSpec jet_spec() {
  return config::parse_model_yaml(R"(
input_shape: [16]
layers:
  - {type: dense, units: 64, activation: relu}
  - {type: dense, units: 32, activation: relu}
  - {type: dense, units: 32, activation: relu}
  - {type: dense, units: 5}
)",
                                  "bench");
}

}  // namespace

int main(int argc, char** argv) {
  const auto alloc = util::tune_allocator();
  std::vector<int64_t> batches{1024, 33200};
  bool breakdown = false;
  bench::StepOptions o{7, 1, 0.5};
  const bool ok = bench::parse_step_options(argc, argv, o,
                                            [&](const std::string& flag, const char* value) {
                                              if (flag == "--breakdown")
                                                breakdown = true;
                                              else if (flag == "--batches")
                                                batches = parse_list(value);
                                              else
                                                return false;
                                              return true;
                                            },
                                            {"--breakdown"});
  if (!ok) return 2;
  const int rounds = o.rounds, threads = o.threads;
  const double budget = o.seconds;
  torch::set_num_threads(threads);
  torch::manual_seed(0);
  (void)torch::mm(torch::ones({8, 8}), torch::ones({8, 8}));
  std::printf(
      "bench_train_step: jet tagger 16-64-32-32-5, Adam, cross-entropy; %d thread(s); "
      "median of %d interleaved rounds of >= %.2fs each\n",
      threads, rounds, budget);
  std::printf("BLAS: %s\n", util::describe(util::detect_blas()).c_str());
  std::printf("allocator: %s\n\n",
              alloc.applied ? "glibc malloc tuned (util::tune_allocator)" : alloc.reason);
  std::printf("%8s %14s %14s %14s %10s %12s\n", "batch", "float ms/step", "hgqt ms/step",
              "ATen-path ms", "hgqt/float", "ATen/float");
  for (auto batch : batches) {
    auto x = torch::randn({batch, 16});
    auto y = torch::randint(0, 5, {batch}, torch::kLong);
    FloatNet fnet;
    torch::optim::Adam fopt(fnet->parameters(), torch::optim::AdamOptions(1e-3));
    model::HGQModel hnet(jet_spec());
    hnet->train();
    train::FusedAdam hopt(hnet->parameters(), torch::optim::AdamOptions(1e-3));  // as the trainer
    auto float_step = [&] {
      auto loss = torch::nn::functional::cross_entropy(fnet->forward(x), y);
      fopt.zero_grad();
      loss.backward();
      fopt.step();
    };
    auto hgq_step = [&] {
      auto loss = train::task_loss(hnet->forward(x), y, "cross_entropy") + 1e-6 * hnet->ebops();
      train::zero_grad_to_none(hopt);
      loss.backward();
      hopt.step();
      hnet->constrain();
    };
    if (breakdown) {
      // Where an HGQ step spends its time, phase by phase (one thread of the machine's noise).
      using clk = std::chrono::steady_clock;
      double t_fwd = 0, t_ebops = 0, t_bwd = 0, t_opt = 0, t_con = 0;
      const int reps = 200;
      for (int r = 0; r < reps; ++r) {
        auto t0 = clk::now();
        auto out = hnet->forward(x);
        auto loss = train::task_loss(out, y, "cross_entropy");
        auto t1 = clk::now();
        loss = loss + 1e-6 * hnet->ebops();
        auto t2 = clk::now();
        train::zero_grad_to_none(hopt);
        loss.backward();
        auto t3 = clk::now();
        hopt.step();
        auto t4 = clk::now();
        hnet->constrain();
        auto t5 = clk::now();
        auto d = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
        t_fwd += d(t0, t1);
        t_ebops += d(t1, t2);
        t_bwd += d(t2, t3);
        t_opt += d(t3, t4);
        t_con += d(t4, t5);
      }
      std::printf(
          "  batch %lld hgqt breakdown (ms): forward %.3f  ebops %.3f  backward %.3f  adam %.3f  "
          "constrain %.3f\n",
          static_cast<long long>(batch), t_fwd / reps * 1e3, t_ebops / reps * 1e3,
          t_bwd / reps * 1e3, t_opt / reps * 1e3, t_con / reps * 1e3);
      double f_fwd = 0, f_bwd = 0, f_opt = 0;
      for (int r = 0; r < reps; ++r) {
        auto t0 = clk::now();
        auto loss = torch::nn::functional::cross_entropy(fnet->forward(x), y);
        auto t1 = clk::now();
        fopt.zero_grad();
        loss.backward();
        auto t2 = clk::now();
        fopt.step();
        auto t3 = clk::now();
        auto d = [](auto a, auto b) { return std::chrono::duration<double>(b - a).count(); };
        f_fwd += d(t0, t1);
        f_bwd += d(t1, t2);
        f_opt += d(t2, t3);
      }
      std::printf("  batch %lld float breakdown (ms): forward %.3f  backward %.3f  adam %.3f\n",
                  static_cast<long long>(batch), f_fwd / reps * 1e3, f_bwd / reps * 1e3,
                  f_opt / reps * 1e3);
    }
    std::vector<double> tf, th, tr;
    for (int r = 0; r < rounds; ++r) {
      tf.push_back(seconds_per_step(float_step, budget));
      quant::set_force_reference_path(false);
      th.push_back(seconds_per_step(hgq_step, budget));
      quant::set_force_reference_path(true);
      tr.push_back(seconds_per_step(hgq_step, budget));
      quant::set_force_reference_path(false);
    }
    const double f = median(tf), h = median(th), a = median(tr);
    std::printf("%8lld %14.3f %14.3f %14.3f %10.2f %12.2f\n", static_cast<long long>(batch),
                f * 1e3, h * 1e3, a * 1e3, h / f, a / f);
    std::fflush(stdout);
  }
  std::printf(
      "\nhgqt: fused quantizer kernel (the default); ATen-path: the same model with the "
      "quantizer composed of ATen ops (the CUDA path).\n");
  return 0;
}
