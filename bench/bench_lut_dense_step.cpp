// Training speed of learned lookup-table layers (lut_dense, HGQ-LUT) against dense layers of the
// same shape: three hgqt models of one layer stack, I -> H1 -> H2 -> C, whose hidden layers are
// `dense`, `lut_dense` with one tanh hidden layer of width 8 per connection (the default), or
// `lut_dense` with g(u) = w u + b (hidden_layers 0), each with its cost term in the loss. One
// training step (forward, backward, Adam, constrain) is timed for each, interleaved round by
// round in one process, and the ratios to dense are printed.
//
// Usage: bench_lut_dense_step [--shape 16,16,8,5] [--batch 1024] [--rounds 5] [--threads 1]
//                             [--seconds 1]
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "bench_util.h"
#include "hgqt/config/config.h"
#include "hgqt/model/model.h"
#include "hgqt/train/optim.h"
#include "hgqt/train/trainer.h"
#include "hgqt/util/allocator.h"

using namespace hgqt;
using bench::median;
using bench::seconds_per_step;

namespace {

// The model section of a config: hidden layers of `kind` (dense or lut_dense with `extra` keys),
// a dense output layer.
std::string model_yaml(const std::vector<int64_t>& shape, const std::string& kind,
                       const std::string& extra) {
  std::string y = "input_shape: [" + std::to_string(shape[0]) + "]\nlayers:\n";
  for (size_t n = 1; n + 1 < shape.size(); ++n)
    y += "  - {type: " + kind + ", units: " + std::to_string(shape[n]) + ", activation: relu" +
         extra + "}\n";
  y += "  - {type: dense, units: " + std::to_string(shape.back()) + "}\n";
  return y;
}

}  // namespace

int main(int argc, char** argv) {
  const auto alloc = util::tune_allocator();
  std::vector<int64_t> shape = {16, 16, 8, 5};
  bench::StepOptions o;
  o.batch = 1024;
  if (!bench::parse_step_options(argc, argv, o, [&](const std::string& flag, const char* value) {
        if (flag != "--shape") return false;
        shape = bench::parse_list(value);
        return true;
      }))
    return 2;
  const int rounds = o.rounds, threads = o.threads;
  const double budget = o.seconds;
  const int64_t batch = o.batch;
  if (shape.size() < 3 || *std::min_element(shape.begin(), shape.end()) < 1) {
    std::fprintf(stderr,
                 "bench_lut_dense_step: --shape needs positive widths: an input, at least "
                 "one hidden layer and an output\n");
    return 2;
  }
  try {
    torch::set_num_threads(threads);
    torch::manual_seed(0);
    std::string shape_text;
    for (auto d : shape) shape_text += (shape_text.empty() ? "" : "-") + std::to_string(d);
    std::printf(
        "bench_lut_dense_step: %s, hidden layers dense vs lut_dense, batch %lld, Adam, "
        "cross-entropy + 1e-6 x cost; %d thread(s); median of %d interleaved rounds of >= "
        "%.2fs each\nallocator: %s\n\n",
        shape_text.c_str(), static_cast<long long>(batch), threads, rounds, budget,
        alloc.applied ? "glibc malloc tuned (util::tune_allocator)" : alloc.reason);
    struct Variant {
      std::string name;
      model::HGQModel net{nullptr};
      std::unique_ptr<train::FusedAdam> opt;
      std::vector<double> t;
    };
    std::vector<Variant> vs;
    for (const auto& [name, kind, extra] :
         std::vector<std::tuple<std::string, std::string, std::string>>{
             {"dense", "dense", ""},
             {"lut_dense (hidden 8)", "lut_dense", ""},
             {"lut_dense (w u + b)", "lut_dense", ", hidden_layers: 0"}}) {
      Variant v;
      v.name = name;
      v.net = model::HGQModel(config::parse_model_yaml(model_yaml(shape, kind, extra), name));
      v.net->train();
      v.opt =
          std::make_unique<train::FusedAdam>(v.net->parameters(), torch::optim::AdamOptions(1e-3));
      vs.push_back(std::move(v));
    }
    auto x = torch::randn({batch, shape[0]});
    auto y = torch::randint(0, shape.back(), {batch}, torch::kLong);
    for (int r = 0; r < rounds; ++r)
      for (auto& v : vs)
        v.t.push_back(seconds_per_step(
            [&] {
              auto loss =
                  train::task_loss(v.net->forward(x), y, "cross_entropy") + 1e-6 * v.net->ebops();
              train::zero_grad_to_none(*v.opt);
              loss.backward();
              v.opt->step();
              v.net->constrain();
            },
            budget));
    const double dense = median(vs[0].t);
    std::printf("%-22s %12s %12s\n", "hidden layers", "ms/step", "vs dense");
    for (const auto& v : vs)
      std::printf("%-22s %12.3f %12.2f\n", v.name.c_str(), median(v.t) * 1e3, median(v.t) / dense);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_lut_dense_step: %s\n", e.what());
    return 1;
  }
  return 0;
}
