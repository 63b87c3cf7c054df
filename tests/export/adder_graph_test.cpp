// The shared adder graph of constant matrix-vector products (hgqt/export/adder_graph.h): hand-made
// matrices whose best sharing is known, and random matrices checked against the direct sums.
#include "hgqt/export/adder_graph.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <stdexcept>

namespace hgqt::exporters {
namespace {

using int128 = adder_int;

// A problem from an integer matrix W [n_out][n_in] (y = W x + konst) in signed digits.
CmvmProblem from_matrix(const std::vector<std::vector<int64_t>>& w, std::vector<int128> lo,
                        std::vector<int128> hi, std::vector<int128> konst = {}) {
  CmvmProblem p;
  p.input_lo = std::move(lo);
  p.input_hi = std::move(hi);
  p.konst = std::move(konst);
  for (const auto& row : w) {
    std::vector<DigitTerm> ds;
    for (size_t j = 0; j < row.size(); ++j)
      for (const auto& [k, d] : naf_digits(row[j]))
        ds.push_back({static_cast<int64_t>(j), k, d < 0});
    p.outputs.push_back(ds);
  }
  return p;
}

// y = W x + konst computed directly (the second implementation the graph is compared with).
std::vector<int128> direct(const std::vector<std::vector<int64_t>>& w, const std::vector<int128>& x,
                           const std::vector<int128>& konst) {
  std::vector<int128> y(w.size(), 0);
  for (size_t o = 0; o < w.size(); ++o) {
    y[o] = konst.empty() ? 0 : konst[o];
    for (size_t j = 0; j < x.size(); ++j) y[o] += static_cast<int128>(w[o][j]) * x[j];
  }
  return y;
}

int tree_depth(int64_t leaves) {
  int d = 0;
  while ((int64_t{1} << d) < leaves) ++d;
  return d;
}

TEST(AdderGraph, NafDigitsRecodeTheValue) {
  for (int64_t m = -300; m <= 300; ++m) {
    int128 v = 0;
    int prev = -2;
    for (const auto& [k, d] : naf_digits(m)) {
      EXPECT_TRUE(d == 1 || d == -1);
      EXPECT_GE(k, prev + 2) << "adjacent nonzero digits in " << m;  // non-adjacent
      prev = k;
      v += static_cast<int128>(d) << k;
    }
    EXPECT_TRUE(v == m) << m;
  }
  EXPECT_EQ(naf_digits(7).size(), 2u);  // 8 - 1
  EXPECT_TRUE(naf_digits(0).empty());
}

// y0 = x0 + x1 + x2, y1 = x0 + x1 - x2, y2 = x0 + x1 + x3: one tree each needs 6 adders; sharing
// x0 + x1 needs 4 (the minimum: 3 outputs of 3 terms each need at least one adder of their own
// beyond a shared pair).
TEST(AdderGraph, SharesTheCommonPairOfThreeOutputs) {
  const std::vector<std::vector<int64_t>> w = {{1, 1, 1, 0}, {1, 1, -1, 0}, {1, 1, 0, 1}};
  const auto p = from_matrix(w, {-8, -8, -8, -8}, {7, 7, 7, 7});
  AdderGraphOptions tree;
  tree.share = false;
  const auto gt = build_adder_graph(p, tree);
  const auto gs = build_adder_graph(p, AdderGraphOptions{});
  EXPECT_EQ(gt.adders, 6);
  EXPECT_EQ(gt.shared_adders, 0);
  EXPECT_EQ(gs.adders, 4);
  EXPECT_EQ(gs.shared_adders, 1);
  EXPECT_EQ(gs.depth, 2);
  for (int128 a = -8; a <= 7; a += 5)
    for (int128 b = -8; b <= 7; b += 3) {
      const std::vector<int128> x = {a, b, -1 - a, -8};
      EXPECT_TRUE(evaluate(gs, x) == direct(w, x, {}));
      EXPECT_TRUE(evaluate(gt, x) == direct(w, x, {}));
    }
}

// 3x, 6x and 12x from one input: the digits of 3 = 4 - 1 recur shifted in 6 and 12, so one
// adder (x << 2) - x serves all three; the trees need three.
TEST(AdderGraph, OneAdderForShiftedMultiplesOfAConstant) {
  const std::vector<std::vector<int64_t>> w = {{3}, {6}, {-12}};
  const auto p = from_matrix(w, {0}, {255});
  AdderGraphOptions tree;
  tree.share = false;
  EXPECT_EQ(build_adder_graph(p, tree).adders, 3);
  const auto g = build_adder_graph(p, AdderGraphOptions{});
  EXPECT_EQ(g.adders, 1);
  EXPECT_EQ(g.shared_adders, 1);
  for (int128 v : {0, 1, 77, 255}) EXPECT_TRUE(evaluate(g, {v}) == direct(w, {v}, {}));
}

// Nothing to share (every pair occurs once): the graph is the trees, adder for adder.
TEST(AdderGraph, NoSharingLeavesTheTrees) {
  const std::vector<std::vector<int64_t>> w = {{1, 1, 0, 0}, {0, 0, 1, -1}, {1, 0, 0, 0}};
  const auto p = from_matrix(w, {0, 0, 0, 0}, {1, 1, 1, 1});
  AdderGraphOptions tree;
  tree.share = false;
  const auto gt = build_adder_graph(p, tree);
  const auto gs = build_adder_graph(p, AdderGraphOptions{});
  EXPECT_EQ(gs.adders, 2);
  EXPECT_EQ(gt.adders, gs.adders);
  EXPECT_EQ(gs.adder_bits, gt.adder_bits);
  EXPECT_EQ(gs.logic_bits, gt.logic_bits);
  EXPECT_EQ(gs.shared_adders, 0);
}

// Exact widths: the sum of 16 unsigned 4-bit inputs lies in [0, 240]: 9 signed bits; a
// constant joins as one more leaf; a zero output has no node.
TEST(AdderGraph, ExactRangesAndConstants) {
  std::vector<std::vector<int64_t>> w = {std::vector<int64_t>(16, 1), std::vector<int64_t>(16, 0)};
  const auto p = from_matrix(w, std::vector<int128>(16, 0), std::vector<int128>(16, 15), {-5, 12});
  const auto g = build_adder_graph(p, AdderGraphOptions{});
  const auto& root = g.nodes[g.outputs[0].node];
  EXPECT_TRUE(root.lo == -5 && root.hi == 235);
  EXPECT_EQ(root.width, 9);
  EXPECT_EQ(g.outputs[0].shift, 0);
  ASSERT_GE(g.outputs[1].node, 0);
  EXPECT_EQ(g.nodes[g.outputs[1].node].kind, AdderNode::Kind::Const);
  EXPECT_TRUE(g.nodes[g.outputs[1].node].value == 3 && g.outputs[1].shift == 2);  // 12 = 3 << 2
  EXPECT_EQ(g.adders, 16);  // 15 for the sum, one for the constant
  EXPECT_EQ(g.depth, 5);
  std::vector<int128> x(16, 15);
  EXPECT_TRUE(evaluate(g, x) == direct(w, x, {-5, 12}));
  // Digits that cancel: x - x = 0.
  CmvmProblem c;
  c.input_lo = {-3};
  c.input_hi = {3};
  c.outputs = {{{0, 0, false}, {0, 0, true}}};
  const auto gc = build_adder_graph(c, AdderGraphOptions{});
  EXPECT_EQ(gc.outputs[0].node, -1);
  EXPECT_TRUE(gc.nodes.empty());
}

// Logic bits: positions where both operands may be nonzero. Never-negative operands are zero
// above their magnitude, signed ones extend their sign to the top; below the larger shift one
// operand is zero.
TEST(AdderGraph, LogicBitsCountOverlappingBits) {
  AdderNode u4;  // [0, 15]
  u4.lo = 0;
  u4.hi = 15;
  AdderNode s4;  // [-8, 7]
  s4.lo = -8;
  s4.hi = 7;
  EXPECT_EQ(logic_bits(u4, 0, u4, 2, 7), 2);  // bits 2..3
  EXPECT_EQ(logic_bits(u4, 0, u4, 0, 5), 4);
  EXPECT_EQ(logic_bits(u4, 0, u4, 4, 9), 0);  // no overlap: wiring
  EXPECT_EQ(logic_bits(s4, 0, u4, 2, 8), 4);  // bits 2..5: the sign of s4 reaches them
  EXPECT_EQ(logic_bits(s4, 0, s4, 0, 5), 5);
}

// Positive and negative terms are summed apart: x0 + x1 + x2 - x3 - x4 - x5 over never-negative
// inputs has never-negative partial sums below the final subtraction.
TEST(AdderGraph, PositiveAndNegativeTermsSummedApart) {
  const std::vector<std::vector<int64_t>> w = {{1, 1, 1, -1, -1, -1}};
  const auto p = from_matrix(w, std::vector<int128>(6, 0), std::vector<int128>(6, 7));
  const auto g = build_adder_graph(p, AdderGraphOptions{});
  ASSERT_GE(g.outputs[0].node, 0);
  EXPECT_FALSE(g.outputs[0].neg);
  for (size_t i = 0; i < g.nodes.size(); ++i) {
    if (static_cast<int>(i) != g.outputs[0].node) {
      EXPECT_GE(g.nodes[i].lo, 0) << "node " << i;
    }
  }
  EXPECT_EQ(g.depth, 3);
  for (int128 v = 0; v <= 7; ++v) {
    const std::vector<int128> x = {v, 7 - v, v, 0, v, 7};
    EXPECT_TRUE(evaluate(g, x) == direct(w, x, {}));
  }
}

struct RandomCase {
  std::vector<std::vector<int64_t>> w;
  CmvmProblem p;
  std::vector<int128> konst;
};

RandomCase random_case(std::mt19937_64& rng, int n_out, int n_in, int bits, double zeros) {
  RandomCase c;
  std::uniform_int_distribution<int64_t> wd(-(int64_t{1} << (bits - 1)),
                                            (int64_t{1} << (bits - 1)) - 1);
  std::uniform_real_distribution<double> u(0, 1);
  c.w.assign(n_out, std::vector<int64_t>(n_in, 0));
  for (auto& row : c.w)
    for (auto& v : row) v = u(rng) < zeros ? 0 : wd(rng);
  std::vector<int128> lo(n_in), hi(n_in);
  for (int j = 0; j < n_in; ++j) {
    const int b = 1 + static_cast<int>(rng() % 9);
    if (rng() % 2) {
      lo[j] = 0;
      hi[j] = (static_cast<int128>(1) << b) - 1;
    } else {
      lo[j] = -(static_cast<int128>(1) << (b - 1));
      hi[j] = (static_cast<int128>(1) << (b - 1)) - 1;
    }
  }
  for (int o = 0; o < n_out; ++o) c.konst.push_back(rng() % 3 == 0 ? 0 : wd(rng) * 37);
  c.p = from_matrix(c.w, lo, hi, c.konst);
  return c;
}

// Random matrices: the graph computes W x + konst exactly (extreme and random inputs), every
// node within its range (evaluate checks), no output deeper than its tree plus the bound, never
// more adders than the trees.
TEST(AdderGraph, RandomMatricesMatchTheDirectSums) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 40; ++trial) {
    const int n_out = 1 + static_cast<int>(rng() % 24), n_in = 1 + static_cast<int>(rng() % 24);
    const int bits = 1 + static_cast<int>(rng() % 8);
    const auto c = random_case(rng, n_out, n_in, bits, (rng() % 4) * 0.25);
    AdderGraphOptions so;
    so.extra_depth = static_cast<int>(rng() % 4);
    AdderGraphOptions to;
    to.share = false;
    const auto gs = build_adder_graph(c.p, so);
    const auto gt = build_adder_graph(c.p, to);
    EXPECT_LE(gs.adders, gt.adders) << "trial " << trial;
    for (int o = 0; o < n_out; ++o) {
      const int leaves = static_cast<int>(c.p.outputs[o].size()) + (c.konst[o] != 0);
      const auto& out = gs.outputs[o];
      if (out.node < 0) continue;
      EXPECT_LE(gs.nodes[out.node].depth, tree_depth(leaves) + so.extra_depth)
          << "trial " << trial << " output " << o;
    }
    for (int s = 0; s < 30; ++s) {
      std::vector<int128> x(n_in);
      for (int j = 0; j < n_in; ++j) {
        const int128 lo = c.p.input_lo[j], hi = c.p.input_hi[j];
        x[j] = s == 0   ? lo
               : s == 1 ? hi
                        : lo + static_cast<int128>(rng() % static_cast<uint64_t>(hi - lo + 1));
      }
      const auto want = direct(c.w, x, c.konst);
      EXPECT_TRUE(evaluate(gs, x) == want) << "trial " << trial;
      EXPECT_TRUE(evaluate(gt, x) == want) << "trial " << trial;
    }
  }
}

// Dense 8-bit matrices share a lot: a 16 x 32 layer needs clearly fewer adders than its trees.
TEST(AdderGraph, DenseMatricesNeedFewerAdders) {
  std::mt19937_64 rng(3);
  const auto c = random_case(rng, 32, 16, 8, 0.0);
  AdderGraphOptions to;
  to.share = false;
  const auto gs = build_adder_graph(c.p, AdderGraphOptions{});
  const auto gt = build_adder_graph(c.p, to);
  EXPECT_LT(gs.adders, gt.adders * 3 / 4) << gs.adders << " vs " << gt.adders;
  EXPECT_LT(gs.adder_bits, gt.adder_bits);
  EXPECT_LT(gs.logic_bits, gt.logic_bits);
  EXPECT_GT(gs.shared_adders, 0);
}

TEST(AdderGraph, RejectsMalformedProblems) {
  CmvmProblem p;
  p.input_lo = {0};
  p.input_hi = {1};
  p.outputs = {{{1, 0, false}}};
  EXPECT_THROW(build_adder_graph(p, {}), std::invalid_argument);
  p.outputs = {{{0, 127, false}}};
  EXPECT_THROW(build_adder_graph(p, {}), std::invalid_argument);
  p.outputs = {{{0, 126, false}, {0, 126, false}}};  // 2^127: beyond 127 bits
  EXPECT_THROW(build_adder_graph(p, {}), std::overflow_error);
  p.input_lo = {2};
  p.outputs = {{{0, 0, false}}};
  EXPECT_THROW(build_adder_graph(p, {}), std::invalid_argument);
}

}  // namespace
}  // namespace hgqt::exporters
