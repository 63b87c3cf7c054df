// Two-operand einsum equations (util/einsum.h): parsing, shapes, and the product map against
// loops written out per equation.
#include "hgqt/util/einsum.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

using hgqt::util::einsum_map;
using hgqt::util::einsum_output_shape;
using hgqt::util::parse_einsum;

namespace {
void expect_invalid(const std::string& eq, const std::string& part) {
  try {
    parse_einsum(eq);
    ADD_FAILURE() << eq << ": no error, expected '" << part << "'";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
  }
}
}  // namespace

TEST(Einsum, ParsesEquations) {
  const auto eq = parse_einsum(" qhd , khd -> hqk ");
  EXPECT_EQ(eq.a, "qhd");
  EXPECT_EQ(eq.b, "khd");
  EXPECT_EQ(eq.out, "hqk");
  EXPECT_EQ(eq.summed, "d");
  EXPECT_EQ(eq.text(), "qhd,khd->hqk");
  EXPECT_EQ(parse_einsum("hqk,khv->qhv").summed, "k");
  EXPECT_EQ(parse_einsum("ab,ab->a").summed, "b");
  expect_invalid("qhd,khd", "not of the form");
  expect_invalid("qhd->hq", "not of the form");
  expect_invalid("a,b,c->abc", "not of the form");
  expect_invalid("q1,k1->qk", "'1' is not an axis letter");
  expect_invalid("qq,kq->qk", "appears twice");
  expect_invalid("qd,kd->qkz", "'z' is in neither operand");
  expect_invalid("qd,k->qk", "'d' is summed over but appears in one operand only");
  expect_invalid(",kd->k", "an operand has no axes");
  expect_invalid("ab,ab->", "the output has no axes");
}

TEST(Einsum, OutputShapesAndShapeErrors) {
  const auto eq = parse_einsum("qhd,khd->hqk");
  EXPECT_EQ(einsum_output_shape(eq, {5, 2, 4}, {7, 2, 4}), (std::vector<int64_t>{2, 5, 7}));
  auto expect_throw = [&](std::vector<int64_t> a, std::vector<int64_t> b, const std::string& part) {
    try {
      einsum_output_shape(eq, a, b);
      ADD_FAILURE() << "no error, expected '" << part << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect_throw({5, 2}, {7, 2, 4}, "operand a has shape [5, 2], but the equation gives it 3 axes");
  expect_throw({5, 2, 4}, {7, 3, 4}, "axis 'h' is 2 in operand a [5, 2, 4] but 3 in operand b");
  expect_throw({5, 2, 4}, {7, 2, 0}, "empty axis");
}

// The map of Q K^T per head against the loop that defines it: s[h, q, k] = sum_d a[q, h, d] *
// b[k, h, d], row-major indices written out.
TEST(Einsum, MapOfScoresMatchesTheLoops) {
  const int64_t Q = 3, K = 4, H = 2, D = 5;
  const auto m = einsum_map(parse_einsum("qhd,khd->hqk"), {Q, H, D}, {K, H, D});
  ASSERT_EQ(m.n_out(), H * Q * K);
  int64_t t = 0;
  for (int64_t h = 0; h < H; ++h)
    for (int64_t q = 0; q < Q; ++q)
      for (int64_t k = 0; k < K; ++k) {
        const int64_t o = (h * Q + q) * K + k;
        ASSERT_EQ(m.begin[o], t);
        for (int64_t d = 0; d < D; ++d, ++t) {
          EXPECT_EQ(m.first[t], (q * H + h) * D + d);
          EXPECT_EQ(m.second[t], (k * H + h) * D + d);
        }
      }
  EXPECT_EQ(m.begin.back(), t);
}

// P V per head: c[q, h, v] = sum_k p[h, q, k] * v[k, h, v]; and an outer product (no summed axis).
TEST(Einsum, MapOfContextAndOuterProducts) {
  const int64_t Q = 3, K = 4, H = 2, V = 3;
  const auto m = einsum_map(parse_einsum("hqk,khv->qhv"), {H, Q, K}, {K, H, V});
  ASSERT_EQ(m.n_out(), Q * H * V);
  for (int64_t q = 0; q < Q; ++q)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t v = 0; v < V; ++v) {
        const int64_t o = (q * H + h) * V + v;
        ASSERT_EQ(m.begin[o + 1] - m.begin[o], K);
        for (int64_t k = 0; k < K; ++k) {
          EXPECT_EQ(m.first[m.begin[o] + k], (h * Q + q) * K + k);
          EXPECT_EQ(m.second[m.begin[o] + k], (k * H + h) * V + v);
        }
      }
  const auto outer = einsum_map(parse_einsum("i,j->ij"), {2}, {3});
  ASSERT_EQ(outer.n_out(), 6);
  for (int64_t o = 0; o < 6; ++o) {
    ASSERT_EQ(outer.begin[o + 1] - outer.begin[o], 1);
    EXPECT_EQ(outer.first[outer.begin[o]], o / 3);
    EXPECT_EQ(outer.second[outer.begin[o]], o % 3);
  }
}
