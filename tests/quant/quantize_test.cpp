// Quantizer forward against quantization.md sections 2 and 9; gradients against section 3.
#include "hgqt/quant/quantize.h"

#include <gtest/gtest.h>

#include <cmath>

#include "hgqt/quant/quantizer.h"

using namespace hgqt::quant;

namespace {

constexpr double kLn2 = 0.69314718055994530942;

struct Kif {
  int k, i, f;
};

// Quantizes a vector of values with one (k, i, f) shared by all, through the fused kernel
// (batch axis), in eval or training mode.
std::vector<double> q(const std::vector<double>& xs, Kif p, RoundingMode r, OverflowMode o,
                      bool training = false, bool reference = false) {
  auto x = torch::tensor(xs, torch::kDouble).reshape({-1, 1});
  auto k = torch::full({1}, p.k, torch::kDouble);
  auto i = torch::full({1}, p.i, torch::kDouble);
  auto f = torch::full({1}, p.f, torch::kDouble);
  QuantizeSettings s{Parameterization::KIF, r, o, training, true};
  auto y = reference ? fixed_quantize_reference(x, k, i, f, s) : fixed_quantize(x, k, i, f, s);
  auto yc = y.reshape({-1}).contiguous();
  return std::vector<double>(yc.data_ptr<double>(), yc.data_ptr<double>() + yc.numel());
}

const std::vector<double> kTableX{2.5, 1.5, 0.75, -0.25, -1.5, -2.5, -1.25};

}  // namespace

// Section 9: rounding to the integer grid (f = 0), wide enough that nothing overflows.
TEST(Quantize, RoundingTableOfSection9) {
  const std::vector<double> rnd{3, 2, 1, 0, -1, -2, -1};
  const std::vector<double> rnd_conv{2, 2, 1, 0, -2, -2, -1};
  const std::vector<double> trn{2, 1, 0, -1, -2, -3, -2};
  for (bool reference : {false, true}) {
    EXPECT_EQ(q(kTableX, {1, 8, 0}, RoundingMode::RND, OverflowMode::SAT, false, reference), rnd);
    EXPECT_EQ(q(kTableX, {1, 8, 0}, RoundingMode::RND_CONV, OverflowMode::SAT, false, reference),
              rnd_conv);
    EXPECT_EQ(q(kTableX, {1, 8, 0}, RoundingMode::TRN, OverflowMode::SAT, false, reference), trn);
    // S_RND acts as RND in eval.
    EXPECT_EQ(q(kTableX, {1, 8, 0}, RoundingMode::S_RND, OverflowMode::WRAP, false, reference),
              rnd);
  }
  for (size_t n = 0; n < kTableX.size(); ++n) {
    EXPECT_EQ(round_fixed(kTableX[n], RoundingMode::RND), rnd[n]);
    EXPECT_EQ(round_fixed(kTableX[n], RoundingMode::RND_CONV), rnd_conv[n]);
    EXPECT_EQ(round_fixed(kTableX[n], RoundingMode::TRN), trn[n]);
  }
}

// Section 9: 100 into ap_fixed<6,4> (k=1, i=3, f=2).
TEST(Quantize, OverflowTableOfSection9) {
  for (bool reference : {false, true}) {
    EXPECT_EQ(q({100, -100}, {1, 3, 2}, RoundingMode::RND, OverflowMode::SAT, false, reference),
              (std::vector<double>{7.75, -8}));
    EXPECT_EQ(q({100, -100}, {1, 3, 2}, RoundingMode::RND, OverflowMode::SAT_SYM, false, reference),
              (std::vector<double>{7.75, -7.75}));
    EXPECT_EQ(q({100, -100}, {1, 3, 2}, RoundingMode::RND, OverflowMode::WRAP, false, reference),
              (std::vector<double>{4, -4}));
  }
  EXPECT_EQ(quantize_fixed(100, 1, 3, 2, RoundingMode::RND, OverflowMode::WRAP), 4.0);
}

TEST(Quantize, UnsignedRanges) {
  // ap_ufixed<4,2>: [0, 3.75] in steps of 0.25.
  EXPECT_EQ(q({-1, 5, 1.3, 3.9}, {0, 2, 2}, RoundingMode::RND, OverflowMode::SAT),
            (std::vector<double>{0, 3.75, 1.25, 3.75}));
  EXPECT_EQ(q({5, -0.25, 4.0}, {0, 2, 2}, RoundingMode::RND, OverflowMode::WRAP),
            (std::vector<double>{1, 3.75, 0}));
}

TEST(Quantize, NegativeFractionalBits) {
  // f = -2: step 4; i = 4: range [-16, 12].
  EXPECT_EQ(q({5, 6, 7, 10, -6}, {1, 4, -2}, RoundingMode::RND, OverflowMode::SAT),
            (std::vector<double>{4, 8, 8, 12, -4}));
  EXPECT_EQ(q({6, 10, -6}, {1, 4, -2}, RoundingMode::RND_CONV, OverflowMode::SAT),
            (std::vector<double>{8, 8, -8}));
  EXPECT_EQ(q({7, -1}, {1, 4, -2}, RoundingMode::TRN, OverflowMode::SAT),
            (std::vector<double>{4, -4}));
}

TEST(Quantize, NegativeIntegerBits) {
  // k=0, i=-2, f=4: [0, 0.1875] in steps of 1/16.
  EXPECT_EQ(q({0.1, 0.5, -0.1}, {0, -2, 4}, RoundingMode::RND, OverflowMode::SAT),
            (std::vector<double>{0.125, 0.1875, 0}));
}

TEST(Quantize, ZeroWidthPrunes) {
  // W = k + i + f <= 0 gives exactly 0 in every mode.
  for (auto o : {OverflowMode::SAT, OverflowMode::SAT_SYM, OverflowMode::WRAP}) {
    EXPECT_EQ(q({0.3, -0.7, 5}, {0, -2, 2}, RoundingMode::RND, o), (std::vector<double>{0, 0, 0}));
    EXPECT_EQ(q({0.3, -0.7, 5}, {1, -3, 2}, RoundingMode::RND, o), (std::vector<double>{0, 0, 0}));
  }
  // W = 1 (sign bit only, i = -1, f = 1): values {-0.5, 0}.
  EXPECT_EQ(q({0.3, -0.4, -3}, {1, -1, 1}, RoundingMode::RND, OverflowMode::SAT),
            (std::vector<double>{0, -0.5, -0.5}));
}

TEST(Quantize, TrainingDoesNotWrap) {
  EXPECT_EQ(q({100, -100}, {1, 3, 2}, RoundingMode::RND, OverflowMode::WRAP, true),
            (std::vector<double>{100, -100}));
}

// Kernel, ATen path and the scalar definition agree on random values and per-element k, i, f.
TEST(Quantize, KernelMatchesReferenceAndScalar) {
  torch::manual_seed(7);
  const int64_t rows = 64, feats = 40;
  auto x = (torch::randn({rows, feats}, torch::kDouble) * 6).round() / 8 +
           torch::randn({rows, feats}, torch::kDouble) * 0.01;
  auto k = torch::randint(0, 2, {feats}, torch::kDouble);
  auto i = torch::randint(-3, 5, {feats}, torch::kDouble);
  auto f = torch::randint(-2, 7, {feats}, torch::kDouble);
  for (auto r : {RoundingMode::TRN, RoundingMode::RND, RoundingMode::RND_CONV}) {
    for (auto o : {OverflowMode::SAT, OverflowMode::SAT_SYM, OverflowMode::WRAP}) {
      for (bool training : {false, true}) {
        QuantizeSettings s{Parameterization::KIF, r, o, training, true};
        for (auto dtype : {torch::kDouble, torch::kFloat}) {
          auto xd = x.to(dtype);
          auto a = fixed_quantize(xd, k, i, f, s);
          auto b = fixed_quantize_reference(xd, k, i, f, s);
          ASSERT_TRUE(torch::equal(a, b))
              << to_string(r) << " " << to_string(o) << " training=" << training;
        }
        if (training && o == OverflowMode::WRAP) continue;
        auto a = fixed_quantize(x, k, i, f, s);
        for (int64_t n = 0; n < rows; ++n)
          for (int64_t j = 0; j < feats; ++j) {
            const double expect = quantize_fixed(x[n][j].item<double>(), k[j].item<int>(),
                                                 i[j].item<int>(), f[j].item<int>(), r, o);
            ASSERT_EQ(a[n][j].item<double>(), expect) << "x=" << x[n][j].item<double>();
          }
      }
    }
  }
}

TEST(Quantize, BitParametersRoundHalfToEven) {
  // f = 2.5 rounds to 2, f = 3.5 rounds to 4.
  auto x = torch::tensor({0.3}, torch::kDouble).reshape({1, 1});
  auto k = torch::ones({1}, torch::kDouble), i = torch::full({1}, 2.0, torch::kDouble);
  QuantizeSettings s{Parameterization::KIF, RoundingMode::RND, OverflowMode::SAT, false, true};
  EXPECT_EQ(fixed_quantize(x, k, i, torch::full({1}, 2.5, torch::kDouble), s).item<double>(), 0.25);
  EXPECT_EQ(fixed_quantize(x, k, i, torch::full({1}, 3.5, torch::kDouble), s).item<double>(),
            0.3125);
}

TEST(Quantize, KbiEqualsKifWithFEqualsBMinusI) {
  torch::manual_seed(3);
  auto x = torch::randn({32, 5}, torch::kDouble) * 3;
  auto k = torch::ones({5}, torch::kDouble);
  auto b = torch::tensor({4., 6., 0., 3., 8.}, torch::kDouble);
  auto i = torch::tensor({1., 2., 0., -1., 3.}, torch::kDouble);
  QuantizeSettings kbi{Parameterization::KBI, RoundingMode::RND, OverflowMode::SAT_SYM, false,
                       true};
  QuantizeSettings kif = kbi;
  kif.param = Parameterization::KIF;
  EXPECT_TRUE(torch::equal(fixed_quantize(x, k, b, i, kbi), fixed_quantize(x, k, i, b - i, kif)));
}

// ---------------------------------------------------------------- gradients

namespace {
struct Grads {
  double dx, da, dc;
};
// Gradient of sum(upstream * Q(x)) for one element, kernel or reference path.
Grads grads_of(double xv, double kv, double av, double cv, Parameterization p, OverflowMode o,
               bool training, bool reference, double upstream = 1.0) {
  auto x = torch::full({1, 1}, xv, torch::kDouble).requires_grad_(true);
  auto k = torch::full({1}, kv, torch::kDouble);
  auto a = torch::full({1}, av, torch::kDouble).requires_grad_(true);
  auto c = torch::full({1}, cv, torch::kDouble).requires_grad_(true);
  QuantizeSettings s{p, RoundingMode::RND, o, training, true};
  auto y = reference ? fixed_quantize_reference(x, k, a, c, s) : fixed_quantize(x, k, a, c, s);
  (y * upstream).sum().backward();
  return {x.grad().item<double>(), a.grad().item<double>(), c.grad().item<double>()};
}
}  // namespace

TEST(QuantizeGrad, InsideRangeIsStraightThroughWithFGradient) {
  for (bool reference : {false, true}) {
    // x = 0.3, f = 2: x_hat = 0.25; d/dx = 1; d/df = ln2 (x - x_hat); d/di = 0.
    auto g = grads_of(0.3, 1, 2, 2, Parameterization::KIF, OverflowMode::SAT, true, reference);
    EXPECT_DOUBLE_EQ(g.dx, 1.0);
    EXPECT_DOUBLE_EQ(g.da, 0.0);
    EXPECT_NEAR(g.dc, kLn2 * (0.3 - 0.25), 1e-12);
  }
}

TEST(QuantizeGrad, WrapInTrainingSignsAsHGQ) {
  for (double xv : {0.3, 0.4, -0.3, 7.9}) {
    auto g = grads_of(xv, 1, 1, 2, Parameterization::KIF, OverflowMode::WRAP, true, false);
    const double xh = std::floor(xv * 4 + 0.5) / 4;
    EXPECT_DOUBLE_EQ(g.dx, 1.0);
    if (xv != xh) {
      EXPECT_EQ(std::signbit(g.dc), std::signbit(xv - xh)) << xv;
    }
    EXPECT_NEAR(g.dc, kLn2 * (xv - xh), 1e-12);
  }
}

TEST(QuantizeGrad, SatClippedUpperBound) {
  for (bool reference : {false, true}) {
    // i = 1, f = 2: upper bound 2 - 0.25 = 1.75; x = 5 is clipped.
    auto g = grads_of(5.0, 1, 1, 2, Parameterization::KIF, OverflowMode::SAT, true, reference);
    EXPECT_DOUBLE_EQ(g.dx, 0.0);
    EXPECT_NEAR(g.da, kLn2 * 2.0, 1e-12);   // d/di = ln2 2^i
    EXPECT_NEAR(g.dc, kLn2 * 0.25, 1e-12);  // d/df = ln2 2^-f
  }
}

TEST(QuantizeGrad, SatClippedLowerBound) {
  for (bool reference : {false, true}) {
    // SAT lower bound -2^i = -2: d/di = -k ln2 2^i, d/df = 0.
    auto g = grads_of(-5.0, 1, 1, 2, Parameterization::KIF, OverflowMode::SAT, true, reference);
    EXPECT_DOUBLE_EQ(g.dx, 0.0);
    EXPECT_NEAR(g.da, -kLn2 * 2.0, 1e-12);
    EXPECT_NEAR(g.dc, 0.0, 1e-12);
    // SAT_SYM lower bound -(2^i - 2^-f): the mirrored pair.
    auto s = grads_of(-5.0, 1, 1, 2, Parameterization::KIF, OverflowMode::SAT_SYM, true, reference);
    EXPECT_DOUBLE_EQ(s.dx, 0.0);
    EXPECT_NEAR(s.da, -kLn2 * 2.0, 1e-12);
    EXPECT_NEAR(s.dc, -kLn2 * 0.25, 1e-12);
    // Unsigned: lower bound 0 carries no gradient to i.
    auto u = grads_of(-5.0, 0, 1, 2, Parameterization::KIF, OverflowMode::SAT, true, reference);
    EXPECT_DOUBLE_EQ(u.dx, 0.0);
    EXPECT_DOUBLE_EQ(u.da, 0.0);
  }
}

TEST(QuantizeGrad, KbiChainRule) {
  // KBI (b, i) with f = b - i: d/db = d/df(KIF), d/di(KBI) = d/di(KIF) - d/df(KIF).
  for (double xv : {0.3, 5.0, -5.0}) {
    for (auto o : {OverflowMode::SAT, OverflowMode::SAT_SYM}) {
      auto kif = grads_of(xv, 1, 1, 2, Parameterization::KIF, o, true, false);
      auto kbi = grads_of(xv, 1, 3, 1, Parameterization::KBI, o, true, false);
      EXPECT_NEAR(kbi.dx, kif.dx, 1e-12);
      EXPECT_NEAR(kbi.da, kif.dc, 1e-12) << xv;
      EXPECT_NEAR(kbi.dc, kif.da - kif.dc, 1e-12) << xv;
    }
  }
}

TEST(QuantizeGrad, SharedParameterGetsSumOfGradients) {
  auto x = torch::tensor({{0.3, 5.0, -0.1}}, torch::kDouble).requires_grad_(true);
  auto k = torch::ones({1}, torch::kDouble);
  auto i = torch::full({1}, 1.0, torch::kDouble).requires_grad_(true);
  auto f = torch::full({1}, 2.0, torch::kDouble).requires_grad_(true);
  QuantizeSettings s{Parameterization::KIF, RoundingMode::RND, OverflowMode::SAT, true, true};
  fixed_quantize(x, k, i, f, s).sum().backward();
  // 0.3 -> 0.25 inside; 5 clipped upper; -0.1 -> 0 inside.
  EXPECT_NEAR(f.grad().item<double>(), kLn2 * (0.05 + 0.25 + -0.1), 1e-12);
  EXPECT_NEAR(i.grad().item<double>(), kLn2 * 2.0, 1e-12);
  EXPECT_TRUE(torch::equal(x.grad(), torch::tensor({{1.0, 0.0, 1.0}}, torch::kDouble)));
}

// Independent check: the surrogate equals the derivative of the straight-through relaxation
// x_hat(f) = (m + x 2^f' - x 2^f) 2^-f' around f' = f (m, x 2^f held), and of the bound
// 2^i - 2^-f, taken by central finite differences.
TEST(QuantizeGrad, FiniteDifferenceOfRelaxation) {
  const double eps = 1e-6;
  for (double xv : {0.3, -0.77, 1.13, 0.01}) {
    for (double fv : {1.0, 3.0, -1.0}) {
      const double m = std::floor(xv * std::exp2(fv) + 0.5);
      auto relaxed = [&](double fp) {
        return (m + xv * std::exp2(fp) - xv * std::exp2(fv)) * std::exp2(-fp);
      };
      const double fd = (relaxed(fv + eps) - relaxed(fv - eps)) / (2 * eps);
      auto g = grads_of(xv, 1, 6, fv, Parameterization::KIF, OverflowMode::SAT, true, false);
      EXPECT_NEAR(g.dc, fd, 1e-7) << "x=" << xv << " f=" << fv;
    }
  }
  auto hi = [](double i, double f) { return std::exp2(i) - std::exp2(-f); };
  const double di = (hi(1 + eps, 2) - hi(1 - eps, 2)) / (2 * eps);
  const double df = (hi(1, 2 + eps) - hi(1, 2 - eps)) / (2 * eps);
  auto g = grads_of(5.0, 1, 1, 2, Parameterization::KIF, OverflowMode::SAT, true, false);
  EXPECT_NEAR(g.da, di, 1e-7);
  EXPECT_NEAR(g.dc, df, 1e-7);
}

TEST(QuantizeGrad, KernelMatchesReferenceOnRandomData) {
  torch::manual_seed(11);
  auto x0 = torch::randn({50, 7}, torch::kDouble) * 4;
  auto g0 = torch::randn({50, 7}, torch::kDouble);
  auto k = torch::randint(0, 2, {7}, torch::kDouble);
  auto a0 = torch::randint(-1, 4, {7}, torch::kDouble);
  auto c0 = torch::randint(-1, 5, {7}, torch::kDouble);
  for (auto o : {OverflowMode::SAT, OverflowMode::SAT_SYM, OverflowMode::WRAP}) {
    std::vector<torch::Tensor> results[2];
    for (int ref = 0; ref < 2; ++ref) {
      auto x = x0.clone().requires_grad_(true), a = a0.clone().requires_grad_(true),
           c = c0.clone().requires_grad_(true);
      QuantizeSettings s{Parameterization::KIF, RoundingMode::RND, o, true, true};
      auto y = ref ? fixed_quantize_reference(x, k, a, c, s) : fixed_quantize(x, k, a, c, s);
      (y * g0).sum().backward();
      results[ref] = {x.grad(), a.grad(), c.grad()};
    }
    for (int n = 0; n < 3; ++n)
      EXPECT_TRUE(torch::allclose(results[0][n], results[1][n], 1e-10, 1e-12)) << to_string(o) << n;
  }
}

TEST(Quantize, MismatchedParameterShapeIsAnError) {
  auto x = torch::zeros({4, 3});
  auto p = torch::zeros({5});
  QuantizeSettings s;
  EXPECT_THROW(fixed_quantize(x, p, p, p, s), c10::Error);
}

// Float inputs against the scalar definition evaluated on the same values in double, on values
// where floor(y + 1/2) in float would round up (y just below a half) and near every edge of the
// range, for both paths, every deterministic rounding and every overflow mode, eval and training.
TEST(Quantize, FloatInputsMatchTheDefinition) {
  std::vector<float> xs;
  for (float base : {0.5f, 1.5f, -0.5f, -1.5f, 3.0f, -3.0f, 0.0f, 1e-30f, -1e-30f}) {
    for (int f : {0, 3, 6}) {
      const float v = std::ldexp(base, -f);
      xs.push_back(v);
      xs.push_back(std::nextafter(v, 10.0f));
      xs.push_back(std::nextafter(v, -10.0f));
    }
  }
  for (float big : {1e30f, -1e30f, 3e38f, -3e38f, 8388609.0f, -16777216.0f}) xs.push_back(big);
  for (int n = 0; n < 200; ++n)
    xs.push_back(static_cast<float>(std::ldexp(static_cast<double>(n) - 100.0, -5)) + 0.013f * n);
  const int64_t n = static_cast<int64_t>(xs.size());
  auto x = torch::from_blob(xs.data(), {n, 1}, torch::kFloat).clone();
  for (auto r : {RoundingMode::TRN, RoundingMode::RND, RoundingMode::RND_CONV}) {
    for (auto o : {OverflowMode::WRAP, OverflowMode::SAT, OverflowMode::SAT_SYM}) {
      for (bool training : {false, true}) {
        for (bool reference : {false, true}) {
          for (Kif p : {Kif{1, 2, 3}, Kif{0, 1, 6}, Kif{1, -1, 5}}) {
            QuantizeSettings s{Parameterization::KIF, r, o, training, true};
            auto k = torch::full({1}, static_cast<float>(p.k));
            auto i = torch::full({1}, static_cast<float>(p.i));
            auto f = torch::full({1}, static_cast<float>(p.f));
            auto y =
                reference ? fixed_quantize_reference(x, k, i, f, s) : fixed_quantize(x, k, i, f, s);
            // Training does not wrap (section 4): the definition with the range wide open.
            const OverflowMode def_o = training && o == OverflowMode::WRAP ? OverflowMode::WRAP : o;
            for (int64_t j = 0; j < n; ++j) {
              const double xv = xs[static_cast<size_t>(j)];
              double want;
              if (training && o == OverflowMode::WRAP)
                want = std::ldexp(round_fixed(std::ldexp(xv, p.f), r), -p.f);
              else
                want = quantize_fixed(xv, p.k, p.i, p.f, r, def_o);
              ASSERT_EQ(y[j][0].item<float>(), static_cast<float>(want))
                  << "x=" << xv << " " << to_string(r) << " " << to_string(o)
                  << " training=" << training << " reference=" << reference << " k,i,f=" << p.k
                  << "," << p.i << "," << p.f;
            }
          }
        }
      }
    }
  }
}

TEST(Quantize, DefinitionIsExactAtTheEdges) {
  // The largest double below 1/2: y + 1/2 rounds to 1 in double, R(y) is 0.
  EXPECT_EQ(round_fixed(0.49999999999999994, RoundingMode::RND), 0.0);
  EXPECT_EQ(round_fixed(-0.5, RoundingMode::RND), 0.0);
  EXPECT_EQ(round_fixed(-1.5, RoundingMode::RND), -1.0);
  // WRAP of a mantissa beyond 2^53 (ulp 16): m - m_min = 2^56 + 24 would round to 2^56 + 32 and
  // give m_min; m is 0 mod 16, so the result is 0.
  const double m = std::ldexp(1.0, 56) + 16.0;
  EXPECT_EQ(overflow_fixed(m, 1, 2, 1, OverflowMode::WRAP), 0.0);
  EXPECT_EQ(overflow_fixed(-m, 1, 2, 1, OverflowMode::WRAP), 0.0);
  EXPECT_EQ(overflow_fixed(37.0, 1, 2, 1, OverflowMode::WRAP), 5.0);  // 37 - 32
  // TRN of a negative value whose x 2^f underflows in float: -1 ulp of the grid, not -0.
  auto x = torch::full({1, 1}, -std::numeric_limits<float>::denorm_min());
  QuantizeSettings s{Parameterization::KIF, RoundingMode::TRN, OverflowMode::WRAP, true, true};
  auto k = torch::ones({1}), i = torch::full({1}, 12.0f), f = torch::full({1}, -10.0f);
  EXPECT_EQ(fixed_quantize(x, k, i, f, s).item<float>(), -1024.0f);
  EXPECT_EQ(fixed_quantize_reference(x, k, i, f, s).item<float>(), -1024.0f);
}

TEST(Quantize, PlanRefusesOtherTensors) {
  QuantizeSettings s{Parameterization::KIF, RoundingMode::RND, OverflowMode::WRAP, true, true};
  auto k = torch::ones({4}), i = torch::full({4}, 2.0f), f = torch::full({4}, 3.0f);
  auto plan = make_quant_plan(k, i, f, s, torch::zeros({2, 4}));
  EXPECT_NO_THROW(quant_forward(*plan, torch::zeros({7, 4})));
  auto msg = [&](const torch::Tensor& x) {
    try {
      quant_forward(*plan, x);
    } catch (const c10::Error& e) {
      return std::string(e.what_without_backtrace());
    }
    return std::string("no error");
  };
  EXPECT_NE(msg(torch::zeros({2, 5})).find("per-sample shape [4]"), std::string::npos);
  EXPECT_NE(msg(torch::zeros({2, 4}, torch::kDouble)).find("the plan was made for Float"),
            std::string::npos);
}

// The calibration record the eval kernel keeps in its quantizing pass equals the one of the ATen
// reference (FixedQuantizer::record_calibration), and so do the outputs.
TEST(Quantize, CalibrationRecordKernelMatchesReference) {
  for (auto r : {RoundingMode::RND, RoundingMode::TRN, RoundingMode::RND_CONV}) {
    for (auto o : {OverflowMode::WRAP, OverflowMode::SAT}) {
      torch::manual_seed(2);
      FixedQuantizer a(QuantizerOptions({6}).round(r).overflow(o).i(1).f(3));
      {
        torch::NoGradGuard g;
        a->f.copy_(torch::tensor({3.f, 2.f, -4.f, 0.f, 5.f, 1.f}));  // element 2 is pruned
      }
      auto x = torch::randn({300, 6}) * 5;
      a->eval();
      std::pair<torch::Tensor, torch::Tensor> rec[2];
      torch::Tensor out[2];
      for (bool reference : {false, true}) {
        set_force_reference_path(reference);
        a->set_calibration(true);
        out[reference] = a->forward(x.narrow(0, 0, 100));
        out[reference] = torch::cat({out[reference], a->forward(x.narrow(0, 100, 200))});
        a->set_calibration(false);
        rec[reference] = a->calibration_range();
      }
      set_force_reference_path(false);
      EXPECT_TRUE(torch::equal(out[0], out[1])) << to_string(r) << " " << to_string(o);
      EXPECT_TRUE(torch::equal(rec[0].first, rec[1].first)) << to_string(r) << " " << to_string(o);
      EXPECT_TRUE(torch::equal(rec[0].second, rec[1].second))
          << to_string(r) << " " << to_string(o);
      EXPECT_EQ(rec[0].second[2].item<double>(), 0.0);  // pruned
    }
  }
}
