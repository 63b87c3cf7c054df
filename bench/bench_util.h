// Helpers the benchmark programs share.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace hgqt::bench {

/// The median of timings (the upper one of an even count).
inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// Seconds per call of `step`: one warm-up call, then calls until `budget` seconds have passed.
template <typename Step>
double seconds_per_step(Step&& step, double budget) {
  step();
  int n = 0;
  const auto t0 = std::chrono::steady_clock::now();
  double elapsed = 0;
  do {
    step();
    ++n;
    elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } while (elapsed < budget);
  return elapsed / n;
}

/// What the step benchmarks share: interleaved rounds, threads, seconds per timing.
struct StepOptions {
  int rounds = 5;
  int threads = 1;
  double seconds = 1.0;
  int64_t batch = 0;  ///< > 0: the program takes --batch (this is its default)
};

/// Parses "--flag value" pairs: --rounds, --threads, --seconds (and --batch where `o.batch` has
/// a default) fill `o`, `own(flag, value)`
/// takes the program's own flags (false: unknown); a flag in `switches` takes no value and goes
/// to `own` with an empty value. Prints the unknown flag and returns false on one.
inline bool parse_step_options(int argc, char** argv, StepOptions& o,
                               const std::function<bool(const std::string&, const char*)>& own,
                               const std::vector<std::string>& switches = {}) {
  const bool takes_batch = o.batch > 0;
  for (int a = 1; a < argc; ++a) {
    const std::string flag = argv[a];
    if (std::find(switches.begin(), switches.end(), flag) != switches.end()) {
      if (own(flag, "")) continue;
    } else if (a + 1 < argc) {
      const char* value = argv[++a];
      if (flag == "--rounds")
        o.rounds = std::atoi(value);
      else if (flag == "--threads")
        o.threads = std::atoi(value);
      else if (flag == "--seconds")
        o.seconds = std::atof(value);
      else if (flag == "--batch" && takes_batch)
        o.batch = std::atoll(value);
      else if (!own(flag, value)) {
        std::fprintf(stderr, "unknown option %s\n", flag.c_str());
        return false;
      }
      continue;
    }
    std::fprintf(stderr, "unknown option or missing value: %s\n", flag.c_str());
    return false;
  }
  if (o.rounds < 1 || o.threads < 1 || !(o.seconds > 0) || (takes_batch && o.batch < 1)) {
    std::fprintf(stderr,
                 "--rounds, --threads and --batch must be positive integers and "
                 "--seconds a positive number\n");
    return false;
  }
  return true;
}

/// "1024,33200" -> {1024, 33200}.
inline std::vector<int64_t> parse_list(const std::string& s) {
  std::vector<int64_t> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(std::stoll(item));
  return out;
}

}  // namespace hgqt::bench
