// Times the integer emulator against LibTorch float32 eval of the same model, side by side in one
// process with the same thread count: LibTorch (model::from_archive, eval, no grad, one forward
// of the whole batch in float32), the emulator's batched path and its exact path (run_exact per
// sample, single-threaded; timed on the first --exact-samples samples). Checks that the batched
// outputs and overflow counts equal the exact path's, bit for bit.
//
// Usage: bench_emulator ARCHIVE DATA.h5 [--features x_test] [--samples 0] [--threads 1,2]
//                       [--rounds 7] [--block 0] [--exact-samples 1000] [--check-all]
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.h"
#include "hgqt/archive/emulator.h"
#include "hgqt/data/dataset.h"
#include "hgqt/model/archive_bridge.h"
#include "hgqt/util/allocator.h"
#include "hgqt/util/blas_info.h"

using namespace hgqt;
using bench::median;
using bench::parse_list;

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

bool same_bits(const std::vector<double>& a, const std::vector<double>& b, size_t n) {
  return std::memcmp(a.data(), b.data(), n * sizeof(double)) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  util::tune_allocator();
  if (argc < 3) {
    std::fprintf(stderr,
                 "usage: bench_emulator ARCHIVE DATA.h5 [--features x_test] [--samples 0] "
                 "[--threads 1,2] [--rounds 7] [--block 0] [--exact-samples 1000] [--check-all]\n");
    return 2;
  }
  const std::string archive_path = argv[1], data_path = argv[2];
  std::string features = "x_test";
  int64_t samples = 0, block = 0, exact_samples = 1000;
  std::vector<int64_t> thread_counts{1, 2};
  int rounds = 7;
  bool check_all = false;
  for (int k = 3; k < argc; ++k) {
    const std::string opt = argv[k];
    if (opt == "--check-all") {
      check_all = true;
      continue;
    }
    if (k + 1 >= argc) {
      std::fprintf(stderr, "option %s needs a value\n", opt.c_str());
      return 2;
    }
    const std::string v = argv[++k];
    if (opt == "--features")
      features = v;
    else if (opt == "--samples")
      samples = std::stoll(v);
    else if (opt == "--threads")
      thread_counts = parse_list(v);
    else if (opt == "--rounds")
      rounds = std::stoi(v);
    else if (opt == "--block")
      block = std::stoll(v);
    else if (opt == "--exact-samples")
      exact_samples = std::stoll(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", opt.c_str());
      return 2;
    }
  }

  const auto a = archive::read_archive(archive_path);
  int64_t n = 0;
  const auto x = archive::load_model_inputs(a, data_path, features, samples, n);
  const int64_t n_exact = std::min(n, exact_samples);
  const int64_t out = a.output_size();

  auto m = model::from_archive(a);
  m->eval();
  std::vector<int64_t> shape{n};
  for (auto d : a.input_shape) shape.push_back(d);
  const auto xt = torch::from_blob(const_cast<double*>(x.data()), shape, torch::kDouble)
                      .to(torch::kFloat)
                      .contiguous();

  archive::Emulator emu(a);
  archive::EmulatorOptions exact_options;
  exact_options.exact = true;
  const archive::Emulator exact(a, exact_options);

  (void)torch::mm(torch::ones({8, 8}), torch::ones({8, 8}));
  std::printf("bench_emulator: %s, %lld samples of %s:%s; median of %d rounds\n",
              archive_path.c_str(), static_cast<long long>(n), data_path.c_str(), features.c_str(),
              rounds);
  std::printf("BLAS: %s\n", util::describe(util::detect_blas()).c_str());
  std::printf("batched path:\n%s", emu.describe_plan().c_str());

  // The exact path: the reference outputs of the first n_exact samples, and its time.
  std::vector<double> y_exact(n_exact * out);
  archive::EmulatorStats exact_stats;
  const double t_exact0 = now();
  exact.run_batch(x.data(), n_exact, y_exact.data(), &exact_stats);
  const double exact_us = 1e6 * (now() - t_exact0) / std::max<int64_t>(n_exact, 1);

  std::printf("\n%8s %16s %16s %16s %12s %12s\n", "threads", "torch f32 us/s", "batched us/s",
              "exact us/s", "batch/torch", "exact/torch");
  bool all_same = true;
  for (int64_t threads : thread_counts) {
    torch::set_num_threads(static_cast<int>(threads));
    archive::EmulatorOptions o;
    o.threads = static_cast<int>(threads);
    o.block = block;
    emu.set_options(o);
    std::vector<double> y(n * out);
    std::vector<double> t_torch, t_fast;
    torch::Tensor ref;
    archive::EmulatorStats fast_stats;
    // Interleaved rounds (round 0 warms up), with a pause before each timed run: thread pools
    // that spin after their work (LibTorch's, OpenMP's) must not take the cores of the other.
    auto pause = [] { std::this_thread::sleep_for(std::chrono::milliseconds(50)); };
    for (int r = 0; r <= rounds; ++r) {
      pause();
      double t0 = now();
      {
        torch::NoGradGuard no_grad;
        ref = m->forward(xt);
      }
      const double t_torch_round = now() - t0;
      pause();
      archive::EmulatorStats s;
      t0 = now();
      emu.run_batch(x.data(), n, y.data(), &s);
      const double t_fast_round = now() - t0;
      if (r == 0) {
        fast_stats = s;
        continue;
      }
      t_torch.push_back(t_torch_round);
      t_fast.push_back(t_fast_round);
    }
    // Identical to the exact path on the samples it ran (all of them with --check-all).
    archive::EmulatorStats sub;
    std::vector<double> y_sub(n_exact * out);
    emu.run_batch(x.data(), n_exact, y_sub.data(), &sub);
    bool same = same_bits(y_sub, y_exact, y_exact.size()) && sub.wrapped == exact_stats.wrapped &&
                sub.saturated == exact_stats.saturated;
    if (check_all) {
      std::vector<double> y_all(n * out);
      archive::EmulatorStats all;
      exact.run_batch(x.data(), n, y_all.data(), &all);
      same = same && same_bits(y, y_all, y.size()) && all.wrapped == fast_stats.wrapped &&
             all.saturated == fast_stats.saturated;
    }
    all_same = all_same && same;
    const double torch_us = 1e6 * median(t_torch) / n, fast_us = 1e6 * median(t_fast) / n;
    std::printf("%8lld %16.3f %16.3f %16.1f %12.3f %12.1f   %s\n", static_cast<long long>(threads),
                torch_us, fast_us, exact_us, fast_us / torch_us, exact_us / torch_us,
                same ? "identical to exact" : "MISMATCH with exact");
    if (threads == thread_counts.back()) {
      // How far LibTorch's float32 eval is from the exact outputs (quantization.md section 8).
      const auto r32 = ref.to(torch::kDouble).contiguous();
      const double* p = r32.data_ptr<double>();
      int64_t bad = 0;
      for (int64_t k = 0; k < n * out; ++k) bad += p[k] != y[k];
      std::printf(
          "\noverflows over %lld samples: %lld wrapped, %lld saturated; float32 eval differs "
          "from the exact outputs in %lld of %lld values\n",
          static_cast<long long>(n), static_cast<long long>(fast_stats.wrapped),
          static_cast<long long>(fast_stats.saturated), static_cast<long long>(bad),
          static_cast<long long>(n * out));
    }
    std::fflush(stdout);
  }
  std::printf("exact us/s: run_exact, one thread, on the first %lld samples%s.\n",
              static_cast<long long>(n_exact),
              check_all ? "; batched outputs checked against all samples" : "");
  return all_same ? 0 : 1;
}
