// The emulator's batched path against its exact path (run_exact, __int128, one sample at a time):
// identical outputs (bit for bit) and overflow counts on random archives of every layer kind and
// mode, in range and overflowing, with several thread counts and blocks that do not divide the
// batch; linear layers whose bound forces float64 or the int128 sums; raw inputs outside the
// double kernel's proof (huge, tiny, ties); and the same errors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <random>

#include "hgqt/archive/emulator.h"
#include "support/random_archive.h"

using namespace hgqt;
using archive::EmulatorOptions;
using archive::LayerKind;
using archive::LinearPrecision;
using hgqt::testing::GraphKind;

namespace {

struct Result {
  std::vector<double> y;
  archive::EmulatorStats stats;
};

Result run(const archive::Archive& a, const std::vector<double>& x, int64_t n, EmulatorOptions o) {
  archive::Emulator emu(a, o);
  Result r;
  r.y = emu.run_batch(x, n, &r.stats);
  return r;
}

EmulatorOptions exact_options() {
  EmulatorOptions o;
  o.exact = true;
  return o;
}

EmulatorOptions fast_options(int threads, int64_t block) {
  EmulatorOptions o;
  o.threads = threads;
  o.block = block;
  return o;
}

// Bit-for-bit equality (also the sign of zeros) and equal counts.
void expect_same(const Result& fast, const Result& exact, const std::string& what) {
  ASSERT_EQ(fast.y.size(), exact.y.size()) << what;
  for (size_t k = 0; k < fast.y.size(); ++k)
    ASSERT_EQ(std::memcmp(&fast.y[k], &exact.y[k], sizeof(double)), 0)
        << what << ": value " << k << ": " << fast.y[k] << " vs exact " << exact.y[k];
  EXPECT_EQ(fast.stats.samples, exact.stats.samples) << what;
  EXPECT_EQ(fast.stats.wrapped, exact.stats.wrapped) << what;
  EXPECT_EQ(fast.stats.saturated, exact.stats.saturated) << what;
}

// Inputs in range, overflowing, and outside the double kernel's proof: huge (|x 2^f| >= 2^52),
// tiny and subnormal, signed zeros, and values on rounding ties of the quantizer grids.
std::vector<double> mixed_inputs(const archive::Archive& a, int64_t n, uint64_t seed,
                                 double scale) {
  auto x = hgqt::testing::random_inputs(a, n, seed, scale);
  std::mt19937_64 rng(seed * 31 + 7);
  const double specials[] = {1e30, -1e30, 0x1p60, -0x1p52, 1e-310, -1e-300, 0.0,     -0.0,
                             0.5,  -0.5,  1.5,    -2.5,    0.25,   -0.125,  0x1p-40, 3.0 * 0x1p-7};
  for (auto& v : x)
    if (rng() % 10 == 0) v = specials[rng() % std::size(specials)];
  return x;
}

// Runs `a` on the exact path and on the batched path with several thread counts and block sizes
// (203 = 7 * 29 samples: blocks of 16 and 50 end with a partial one), and requires identical
// results.
void check_archive(const archive::Archive& a, uint64_t seed, const std::string& what) {
  const int64_t n = 203;
  for (double scale : {0.5, 1.0, 16.0, 1e3}) {
    const auto x = mixed_inputs(a, n, seed, scale);
    const Result exact = run(a, x, n, exact_options());
    for (int threads : {1, 2, 3})
      for (int64_t block : {0, 1, 16, 50}) {
        const std::string label = what + " scale " + std::to_string(scale) + " threads " +
                                  std::to_string(threads) + " block " + std::to_string(block);
        expect_same(run(a, x, n, fast_options(threads, block)), exact, label);
        if (::testing::Test::HasFatalFailure()) return;
      }
  }
}

// Widens the weights of linear layer `li` by `bits`: mantissas times 2^bits at 2^bits finer
// exponents (same values, same outputs), so its products' bound grows by 2^bits.
void widen_weights(archive::Archive& a, size_t li, int bits) {
  auto& w = *a.layers[li].kernel;
  for (int64_t n = 0; n < w.size(); ++n) {
    w.mantissa[n] *= int64_t{1} << bits;
    w.exponent[n] -= bits;
    w.quantizer.f[n] += bits;
  }
}

// The linear layer of `a` with an output quantizer (its accumulator is not stored, so it may be
// wider than a double).
size_t quantized_linear_layer(const archive::Archive& a) {
  for (size_t li = 0; li < a.layers.size(); ++li)
    if (archive::is_linear(a.layers[li].kind) && a.layers[li].output_quantizer) return li;
  ADD_FAILURE() << "no linear layer with an output quantizer in " << a.name;
  return 0;
}

}  // namespace

class EmulatorBatchMlp : public ::testing::TestWithParam<int> {};

TEST_P(EmulatorBatchMlp, SameAsExactPathForEveryMode) {
  const int seed = GetParam();
  hgqt::testing::RandomArchiveOptions o;
  o.seed = seed;
  o.sizes = {13, 9, 7, 5};
  o.quantize_layer = seed % 2 == 0;
  o.per_tensor = seed % 3 == 0;
  o.mixed_modes = seed % 4 != 1;
  const auto a = hgqt::testing::random_mlp_archive(o);
  ASSERT_TRUE(archive::Emulator(a).batched());
  check_archive(a, 100 + seed, a.name + " seed " + std::to_string(seed));
}

INSTANTIATE_TEST_SUITE_P(Seeds, EmulatorBatchMlp, ::testing::Range(1, 9));

// Every rounding and overflow mode (archives hold no S_RND) on every activation quantizer of an
// MLP and a CNN.
TEST(EmulatorBatch, EveryRoundingAndOverflowMode) {
  using quant::OverflowMode;
  using quant::RoundingMode;
  for (RoundingMode r : {RoundingMode::TRN, RoundingMode::RND, RoundingMode::RND_CONV})
    for (OverflowMode ov : {OverflowMode::WRAP, OverflowMode::SAT, OverflowMode::SAT_SYM}) {
      hgqt::testing::RandomArchiveOptions o;
      o.seed = 17;
      o.quantize_layer = true;
      std::vector<archive::Archive> archives{
          hgqt::testing::random_mlp_archive(o),
          hgqt::testing::random_graph_archive(GraphKind::Cnn2d, o)};
      for (auto& a : archives) {
        for (auto& l : a.layers)
          for (auto* q : {&l.input_quantizer, &l.output_quantizer})
            if (*q) {
              (*q)->round = r;
              (*q)->overflow = ov;
            }
        check_archive(a, 400, a.name + " " + quant::to_string(r) + "/" + quant::to_string(ov));
        if (HasFatalFailure()) return;
      }
    }
}

class EmulatorBatchGraph : public ::testing::TestWithParam<std::tuple<GraphKind, int>> {};

TEST_P(EmulatorBatchGraph, SameAsExactPath) {
  const auto [kind, seed] = GetParam();
  hgqt::testing::RandomArchiveOptions o;
  o.seed = seed;
  const auto a = hgqt::testing::random_graph_archive(kind, o);
  ASSERT_TRUE(archive::Emulator(a).batched());
  check_archive(a, 200 + seed, a.name + " seed " + std::to_string(seed));
}

INSTANTIATE_TEST_SUITE_P(Seeds, EmulatorBatchGraph,
                         ::testing::Combine(::testing::Values(GraphKind::Cnn2d,
                                                              GraphKind::Conv1dBranches,
                                                              GraphKind::Lut, GraphKind::Softmax),
                                            ::testing::Range(1, 5)));

// Wider weights push a layer's bound past 2^24 (float64) and 2^53 (the int128 sums); its outputs
// and every other layer's stay identical to the exact path's.
TEST(EmulatorBatch, WideLayersChooseFloat64AndInt128) {
  std::map<LinearPrecision, int> seen;
  for (int seed = 1; seed <= 4; ++seed)
    for (int bits : {0, 20, 30, 48}) {
      hgqt::testing::RandomArchiveOptions o;
      o.seed = seed;
      std::vector<archive::Archive> archives{
          hgqt::testing::random_mlp_archive(o),
          hgqt::testing::random_graph_archive(GraphKind::Cnn2d, o)};
      for (auto& a : archives) {
        const size_t li = quantized_linear_layer(a);
        widen_weights(a, li, bits);
        archive::Emulator emu(a);
        ASSERT_TRUE(emu.batched()) << emu.describe_plan();
        const auto p = emu.linear_precision(li);
        ASSERT_TRUE(p.has_value());
        ++seen[*p];
        if (bits >= 48) {
          EXPECT_EQ(*p, LinearPrecision::Int128) << emu.describe_plan();
        }
        if (bits == 20) {
          EXPECT_NE(*p, LinearPrecision::Float32) << emu.describe_plan();
        }
        check_archive(a, 300 + seed, a.name + " widened by " + std::to_string(bits));
        if (HasFatalFailure()) return;
      }
    }
  EXPECT_GT(seen[LinearPrecision::Float32], 0);
  EXPECT_GT(seen[LinearPrecision::Float64], 0);
  EXPECT_GT(seen[LinearPrecision::Int128], 0);
}

// A hand-made dense layer: 4 inputs of 31 bits (k=1, i=20, f=10) times weights of 30 bits sum to
// about 2^62, beyond every float; the output quantizer brings the result back to 16 bits.
TEST(EmulatorBatch, HandMadeInt128LayerWrapsLikeTheExactPath) {
  archive::Archive a;
  a.input_shape = {4};
  a.output_shape = {2};
  archive::Layer l;
  l.name = "wide";
  l.kind = LayerKind::Dense;
  l.input_shape = {4};
  l.output_shape = {2};
  l.input_quantizer = archive::QuantSpec{{4}, {1, 1, 1, 1}, {20, 20, 20, 20}, {10, 10, 10, 10}};
  archive::Constant w;
  w.shape = {4, 2};
  w.mantissa = {(1 << 29) - 3, -(1 << 28) + 5, 12345678, 1 << 29, -7, 99999999, (1 << 29) - 1, 3};
  w.exponent.assign(8, -30);
  w.quantizer.shape = {4, 2};
  w.quantizer.k.assign(8, 1);
  w.quantizer.i.assign(8, 0);
  w.quantizer.f.assign(8, 30);
  w.quantizer.overflow = quant::OverflowMode::SAT_SYM;
  l.kernel = w;
  l.output_quantizer = archive::QuantSpec{{2}, {1, 1}, {5, 5}, {10, 10}};
  l.output_quantizer->round = quant::RoundingMode::RND_CONV;
  a.layers.push_back(l);
  archive::Emulator emu(a);
  ASSERT_TRUE(emu.batched());
  EXPECT_EQ(emu.linear_precision(0), LinearPrecision::Int128) << emu.describe_plan();
  check_archive(a, 11, "hand-made int128 layer");
  // A narrower input quantizer: the same layer fits float64 (4 * 2^20 * 2^30 < 2^53)...
  a.layers[0].input_quantizer->i.assign(4, 10);
  EXPECT_EQ(archive::Emulator(a).linear_precision(0), LinearPrecision::Float64);
  check_archive(a, 12, "hand-made float64 layer");
  // ...also with 13-bit inputs and 20-bit weights (about 2^34), whose sums float32 would round:
  // an output quantizer keeping 38 fractional bits shows any rounding...
  auto& l0 = a.layers[0];
  l0.input_quantizer->i.assign(4, 2);
  for (auto& m : l0.kernel->mantissa) m = m % (1 << 20);
  l0.output_quantizer->i.assign(2, 13);
  l0.output_quantizer->f.assign(2, 38);
  EXPECT_EQ(archive::Emulator(a).linear_precision(0), LinearPrecision::Float64);
  check_archive(a, 13, "hand-made float64 layer, fine output");
  // ...and with weights below 200, float32 (4 * 2^12 * 200 < 2^24).
  for (auto& m : l0.kernel->mantissa) m = m % 200;
  EXPECT_EQ(archive::Emulator(a).linear_precision(0), LinearPrecision::Float32);
  check_archive(a, 14, "hand-made float32 layer");
}

// A hidden value wider than 53 bits (a linear layer without output quantizer): no batched path;
// run_batch runs the exact path.
TEST(EmulatorBatch, ValuesWiderThanADoubleRunTheExactPath) {
  hgqt::testing::RandomArchiveOptions o;
  o.output_quantizer = false;
  o.sizes = {6, 5, 3};
  auto a = hgqt::testing::random_mlp_archive(o);
  widen_weights(a, a.layers[0].kind == LayerKind::Dense ? 0 : 1, 54);
  archive::Emulator emu(a);
  EXPECT_FALSE(emu.batched());
  EXPECT_NE(emu.describe_plan().find("exact path only"), std::string::npos);
  check_archive(a, 21, "wide hidden value");
}

// Errors name the first offending sample, whatever the threads; the counts up to it match.
TEST(EmulatorBatch, NonFiniteInputGivesTheExactPathsError) {
  const auto a = hgqt::testing::random_graph_archive(GraphKind::Cnn2d);
  const int64_t n = 150;
  auto x = hgqt::testing::random_inputs(a, n, 5, 4.0);
  x[97 * a.input_size() + 5] = std::nan("");
  x[120 * a.input_size() + 2] = INFINITY;
  auto error_of = [&](EmulatorOptions o, archive::EmulatorStats& stats) {
    try {
      archive::Emulator(a, o).run_batch(x, n, &stats);
    } catch (const archive::ArchiveError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  archive::EmulatorStats exact_stats;
  const std::string want = error_of(exact_options(), exact_stats);
  EXPECT_NE(want.find("sample 97, input element 5"), std::string::npos) << want;
  for (int threads : {1, 2, 3}) {
    archive::EmulatorStats stats;
    EXPECT_EQ(error_of(fast_options(threads, 16), stats), want);
    EXPECT_EQ(stats.samples, exact_stats.samples);
    EXPECT_EQ(stats.wrapped, exact_stats.wrapped);
    EXPECT_EQ(stats.saturated, exact_stats.saturated);
  }
}

// run() (one sample, batched unless EmulatorOptions::exact) and run_exact agree; stats add up.
TEST(EmulatorBatch, SingleSamplesAndAccumulatedStats) {
  const auto a = hgqt::testing::random_graph_archive(GraphKind::Conv1dBranches);
  archive::Emulator fast(a), exact(a, exact_options());
  const auto x = mixed_inputs(a, 40, 9, 8.0);
  archive::EmulatorStats sf, se;
  std::vector<double> yf(a.output_size()), ye(a.output_size());
  for (int64_t r = 0; r < 40; ++r) {
    fast.run(x.data() + r * a.input_size(), yf.data(), &sf);
    exact.run(x.data() + r * a.input_size(), ye.data(), &se);
    ASSERT_EQ(yf, ye) << "sample " << r;
  }
  EXPECT_EQ(sf.samples, 40);
  EXPECT_EQ(sf.wrapped, se.wrapped);
  EXPECT_EQ(sf.saturated, se.saturated);
  // run_batch adds to the counts it is given.
  fast.run_batch(x, 40, &sf);
  EXPECT_EQ(sf.samples, 80);
  EXPECT_EQ(sf.wrapped, 2 * se.wrapped);
  EXPECT_EQ(sf.saturated, 2 * se.saturated);
  EXPECT_TRUE(fast.run_batch(std::vector<double>{}, 0).empty());
}

// A copy shares the batched plan and outlives the original.
TEST(EmulatorBatch, CopiesOutliveTheOriginal) {
  const auto a = hgqt::testing::random_graph_archive(GraphKind::Lut);
  auto original = std::make_unique<archive::Emulator>(a);
  const archive::Emulator copy = *original;
  original.reset();
  const auto x = mixed_inputs(a, 30, 4, 4.0);
  EXPECT_EQ(copy.run_batch(x, 30), archive::Emulator(a, exact_options()).run_batch(x, 30));
}

TEST(EmulatorBatch, DescribesEveryLayer) {
  const auto a = hgqt::testing::random_graph_archive(GraphKind::Cnn2d);
  const std::string d = archive::Emulator(a).describe_plan();
  for (const auto& l : a.layers)
    EXPECT_NE(d.find(l.name + " (" + archive::kind_name(l.kind) + ")"), std::string::npos) << d;
  EXPECT_NE(d.find("sgemm"), std::string::npos) << d;
  EXPECT_NE(d.find("im2col"), std::string::npos) << d;
}
