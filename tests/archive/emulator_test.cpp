// The integer emulator and its arithmetic, against the tables of quantization.md and against an
// independent double-precision evaluation of the archive's data flow.
#include "hgqt/archive/emulator.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "support/random_archive.h"

using namespace hgqt;
using archive::int128;
using archive::LayerKind;
using quant::OverflowMode;
using quant::RoundingMode;

namespace {
using hgqt::testing::scalar_quantizer;

// The data flow of archive.h evaluated in double with quantize_fixed (exact for these widths).
std::vector<double> reference_forward(const archive::Archive& a, const double* x) {
  std::vector<double> v(x, x + a.input_size());
  auto quantize = [](std::vector<double>& v, const archive::QuantSpec& q) {
    for (int64_t n = 0; n < q.size(); ++n) v[n] = q.apply(v[n], n);
  };
  auto relu = [](std::vector<double>& v) {
    for (auto& e : v) e = std::max(e, 0.0);
  };
  for (const auto& l : a.layers) {
    if (l.kind == LayerKind::Quantize) quantize(v, *l.input_quantizer);
    if (l.kind == LayerKind::Activation) {
      if (l.activation == "relu") relu(v);
      quantize(v, *l.output_quantizer);
    }
    if (l.kind != LayerKind::Dense) continue;
    if (l.input_quantizer) quantize(v, *l.input_quantizer);
    const int64_t in = l.kernel->shape[0], out = l.kernel->shape[1];
    std::vector<double> y(out, 0.0);
    for (int64_t o = 0; o < out; ++o) {
      for (int64_t j = 0; j < in; ++j) y[o] += v[j] * l.kernel->value(j * out + o);
      if (l.bias) y[o] += l.bias->value(o);
    }
    if (l.activation == "relu") relu(y);
    if (l.output_quantizer) quantize(y, *l.output_quantizer);
    v = y;
  }
  return v;
}
}  // namespace

// quantization.md section 9, rounding to an integer grid: value x = m * 2^-1 rounded at f = 0.
TEST(ArchiveFixed, RoundingTableOfSection9) {
  const double xs[] = {2.5, 1.5, 0.75, -0.25, -1.5, -2.5, -1.25};
  const int rnd[] = {3, 2, 1, 0, -1, -2, -1};
  const int conv[] = {2, 2, 1, 0, -2, -2, -1};
  const int trn[] = {2, 1, 0, -1, -2, -3, -2};
  for (int n = 0; n < 7; ++n) {
    const auto m = static_cast<int128>(xs[n] * 4);  // exact at frac 2
    EXPECT_EQ(static_cast<int>(archive::round_shift(m, 2, RoundingMode::RND)), rnd[n]) << xs[n];
    EXPECT_EQ(static_cast<int>(archive::round_shift(m, 2, RoundingMode::RND_CONV)), conv[n])
        << xs[n];
    EXPECT_EQ(static_cast<int>(archive::round_shift(m, 2, RoundingMode::TRN)), trn[n]) << xs[n];
  }
}

// 100 into ap_fixed<6,4>: SAT 7.75, SAT(-100) -8, SAT_SYM(-100) -7.75, WRAP 4.
TEST(ArchiveFixed, OverflowTableOfSection9) {
  auto q = [](double x, OverflowMode o) {
    auto s = scalar_quantizer(1, 3, 2, RoundingMode::TRN, o);
    return std::ldexp(static_cast<double>(archive::quantize_double(x, s, 0)), -2);
  };
  EXPECT_EQ(q(100, OverflowMode::SAT), 7.75);
  EXPECT_EQ(q(-100, OverflowMode::SAT), -8.0);
  EXPECT_EQ(q(-100, OverflowMode::SAT_SYM), -7.75);
  EXPECT_EQ(q(100, OverflowMode::WRAP), 4.0);
  bool clipped = false;
  auto s = scalar_quantizer(1, 3, 2, RoundingMode::TRN, OverflowMode::WRAP);
  archive::quantize_double(100, s, 0, &clipped);
  EXPECT_TRUE(clipped);
  archive::quantize_double(1.5, s, 0, &clipped);
  EXPECT_FALSE(clipped);
}

// quantize_exact on exact values agrees with the scalar double definition everywhere.
TEST(ArchiveFixed, QuantizeExactMatchesScalarDefinition) {
  std::mt19937_64 rng(3);
  const RoundingMode rounds[] = {RoundingMode::TRN, RoundingMode::RND, RoundingMode::RND_CONV};
  const OverflowMode ovs[] = {OverflowMode::WRAP, OverflowMode::SAT, OverflowMode::SAT_SYM};
  for (int t = 0; t < 20000; ++t) {
    const int k = rng() % 2, i = static_cast<int>(rng() % 9) - 3,
              f = static_cast<int>(rng() % 11) - 3;
    const int frac = static_cast<int>(rng() % 14) - 4;
    const auto m = static_cast<int128>(static_cast<int64_t>(rng() % 200001) - 100000);
    auto q = scalar_quantizer(k, i, f, rounds[rng() % 3], ovs[rng() % 3]);
    const double x = std::ldexp(static_cast<double>(m), -frac);
    const double want = q.apply(x, 0);
    const int128 got = archive::quantize_exact(m, frac, q, 0);
    ASSERT_EQ(std::ldexp(static_cast<double>(got), -f), want)
        << "m=" << static_cast<int64_t>(m) << " frac=" << frac << " k=" << k << " i=" << i
        << " f=" << f;
  }
}

TEST(ArchiveFixed, BitSpanCountsBetweenOuterNonzeroBits) {
  EXPECT_EQ(archive::bit_span(0b001011000), 4);
  EXPECT_EQ(archive::bit_span(-0b001011000), 4);
  EXPECT_EQ(archive::bit_span(0), 0);
  EXPECT_EQ(archive::bit_span(1), 1);
  EXPECT_EQ(archive::bit_span(0b1000001), 7);
}

TEST(ArchiveFixed, TypeOfRange) {
  EXPECT_EQ(archive::type_of_range(0, 255, 3), (archive::FixedType{false, 8, 3}));
  EXPECT_EQ(archive::type_of_range(-128, 127, 0), (archive::FixedType{true, 8, 0}));
  EXPECT_EQ(archive::type_of_range(-129, 0, 0), (archive::FixedType{true, 9, 0}));
  EXPECT_EQ(archive::type_of_range(-1, 0, 5), (archive::FixedType{true, 1, 5}));
  EXPECT_EQ(archive::type_of_range(0, 0, 5).width, 0);
  EXPECT_EQ((archive::FixedType{true, 8, 3}).to_string(), "ap_fixed<8,5>");
  EXPECT_EQ((archive::FixedType{false, 3, 5}).to_string(), "ap_ufixed<3,-2>");
}

// Exact EBOPs of a hand-made dense layer: inputs of 3 and 2 magnitude bits (one pruned),
// weights 0b0110 (span 2), 0b101 (span 3), 0, 1 (span 1); bias 0b1100 (span 2) and 0.
TEST(ArchiveFixed, ExactEbopsByHand) {
  archive::Archive a;
  a.input_shape = {3};
  a.output_shape = {2};
  archive::Layer l;
  l.name = "d";
  l.kind = LayerKind::Dense;
  l.input_shape = {3};
  l.output_shape = {2};
  archive::QuantSpec iq;
  iq.shape = {3};
  iq.k = {1, 0, 0};
  iq.i = {1, 2, -3};
  iq.f = {2, 0, 2};  // bits (sign excluded): 3, 2, pruned
  l.input_quantizer = iq;
  archive::Constant w;
  w.shape = {3, 2};
  w.mantissa = {6, 5, 0, 1, 7, 7};
  w.exponent = {-4, -4, -4, -4, -4, -4};
  w.quantizer.shape = {3, 2};
  w.quantizer.k = std::vector<int32_t>(6, 1);
  w.quantizer.i = std::vector<int32_t>(6, 0);
  w.quantizer.f = std::vector<int32_t>(6, 4);
  w.quantizer.overflow = OverflowMode::SAT_SYM;
  l.kernel = w;
  archive::Constant b;
  b.shape = {2};
  b.mantissa = {12, 0};
  b.exponent = {-4, -4};
  b.quantizer.shape = {2};
  b.quantizer.k = {1, 1};
  b.quantizer.i = {0, 0};
  b.quantizer.f = {4, 4};
  b.quantizer.overflow = OverflowMode::SAT_SYM;
  l.bias = b;
  a.layers.push_back(l);
  const auto e = archive::exact_ebops(a);
  // 3 * (2 + 3) + 2 * (0 + 1) + pruned input * anything + bias 2.
  EXPECT_EQ(e[0], 3.0 * 5 + 2.0 * 1 + 2.0);
}

class EmulatorRandom : public ::testing::TestWithParam<int> {};

TEST_P(EmulatorRandom, MatchesDoubleReferenceInRangeAndOverflowing) {
  hgqt::testing::RandomArchiveOptions o;
  o.seed = GetParam();
  o.sizes = {12, 9, 7, 5};
  o.quantize_layer = GetParam() % 2 == 0;
  const auto a = hgqt::testing::random_mlp_archive(o);
  archive::Emulator emu(a);
  for (double scale : {0.5, 1.0, 16.0}) {
    const int64_t n = 300;
    const auto x = hgqt::testing::random_inputs(a, n, 100 + GetParam(), scale);
    archive::EmulatorStats stats;
    const auto y = emu.run_batch(x, n, &stats);
    for (int64_t r = 0; r < n; ++r) {
      const auto want = reference_forward(a, x.data() + r * a.input_size());
      for (int64_t c = 0; c < a.output_size(); ++c)
        ASSERT_EQ(y[r * a.output_size() + c], want[c]) << "sample " << r << " output " << c;
    }
    if (scale > 8) {
      EXPECT_GT(stats.wrapped + stats.saturated, 0);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, EmulatorRandom, ::testing::Range(1, 9));

TEST(Emulator, RejectsNonFiniteInputWithItsIndex) {
  const auto a = hgqt::testing::random_mlp_archive();
  archive::Emulator emu(a);
  std::vector<double> x(a.input_size(), 0.5);
  x[3] = std::nan("");
  std::vector<double> y(a.output_size());
  try {
    emu.run(x.data(), y.data());
    FAIL() << "expected an error";
  } catch (const archive::ArchiveError& e) {
    EXPECT_NE(std::string(e.what()).find("input element 3"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("NaN"), std::string::npos) << e.what();
  }
}
