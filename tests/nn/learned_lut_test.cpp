// QLearnedLUT (the connections of a lut_dense block, HGQ-LUT): the cost formula by hand, the
// functions against a loop written from the formula, one training step moving both quantizers of
// a connection, frozen tables, and the lut_dense block's config errors.
#include <gtest/gtest.h>

#include <cmath>

#include "hgqt/archive/archive.h"
#include "hgqt/config/config.h"
#include "hgqt/model/archive_bridge.h"
#include "hgqt/model/model.h"
#include "hgqt/nn/lut.h"

using namespace hgqt;

namespace {
quant::QuantizerOptions kif(std::vector<int64_t> shape, int k, double i, double f) {
  return quant::QuantizerOptions(std::move(shape))
      .k(k)
      .i(i)
      .f(f)
      .overflow(quant::OverflowMode::SAT);
}

std::string error_of(const std::string& yaml) {
  try {
    model::HGQModel m(config::parse_model_yaml(yaml, "t"));
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}
}  // namespace

// c(b) = 2^(b - 5) for b >= 5, b / 5 below; cost = c(b_in) * b_out / 2 + b_out.
TEST(LearnedLut, CostByHand) {
  EXPECT_DOUBLE_EQ(util::lut_connection_cost(6, 8), 2.0 * 8 / 2 + 8);  // 16
  EXPECT_DOUBLE_EQ(util::lut_connection_cost(5, 8), 1.0 * 8 / 2 + 8);  // 12
  EXPECT_DOUBLE_EQ(util::lut_connection_cost(3, 4), 0.6 * 4 / 2 + 4);  // 5.2
  EXPECT_DOUBLE_EQ(util::lut_connection_cost(10, 3), 32.0 * 3 / 2 + 3);
  EXPECT_DOUBLE_EQ(util::lut_connection_cost(0, 8), 0.0);  // pruned
  EXPECT_DOUBLE_EQ(util::lut_connection_cost(6, 0), 0.0);  // an empty table
  // The exponent is clamped at 16: finite for any width.
  EXPECT_DOUBLE_EQ(util::lut_connection_cost(40, 2), 65536.0 * 2 / 2 + 2);

  // The layer: 2 x 3 connections with inputs k1 i3 f2 (6 bits) and outputs k1 i1 f6 (8 bits):
  // 6 * 16 = 96; with unsigned 4-bit inputs (k0 i2 f2): c = 0.8, 6 * (0.8 * 4 + 8) = 67.2.
  nn::QLearnedLUTOptions o({2, 3});
  o.input_quantizer(kif({2, 3}, 1, 3, 2)).output_quantizer(kif({2, 3}, 1, 1, 6));
  EXPECT_DOUBLE_EQ(nn::QLearnedLUT(o)->ebops().item<double>(), 96.0);
  o.input_quantizer(kif({2, 3}, 0, 2, 2));
  EXPECT_NEAR(nn::QLearnedLUT(o)->ebops().item<double>(), 67.2, 1e-4);
  // A pruned input (i + f = 0) costs nothing.
  o.input_quantizer(kif({2, 3}, 0, 0, 0));
  EXPECT_DOUBLE_EQ(nn::QLearnedLUT(o)->ebops().item<double>(), 0.0);
}

// g(u) = b2 + sum_j w2[j] tanh(w1[j] u + b1[j]) per element, written out with std::tanh.
TEST(LearnedLut, FunctionsAreTheSmallMlpOfEachConnection) {
  torch::manual_seed(1);
  nn::QLearnedLUTOptions o({3, 2});
  o.hidden(4).input_quantizer(kif({3, 2}, 1, 6, 12)).output_quantizer(kif({3, 2}, 1, 5, 16));
  nn::QLearnedLUT l(o);
  l->to(torch::kDouble);
  l->eval();
  auto x = torch::round(torch::randn({5, 3, 2}, torch::kDouble) * 256) / 256;  // on the grid
  const auto g = l->functions(x);
  for (int64_t b = 0; b < 5; ++b)
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t c = 0; c < 2; ++c) {
        double want = l->b2[i][c].item<double>();
        for (int64_t j = 0; j < 4; ++j)
          want += l->w2[i][c][j].item<double>() *
                  std::tanh(l->w1[i][c][j].item<double>() * x[b][i][c].item<double>() +
                            l->b1[i][c][j].item<double>());
        EXPECT_NEAR(g[b][i][c].item<double>(), want, 1e-12);
      }
  // The forward is the output quantizer of that (wide quantizers: within 2^-17).
  EXPECT_LE((l->forward(x) - g).abs().max().item<double>(), std::ldexp(1.0, -17));
  // Without a hidden layer: w u + b.
  o.hidden_layers(0);
  nn::QLearnedLUT lin(o);
  lin->to(torch::kDouble);
  EXPECT_TRUE(torch::allclose(lin->functions(x), x * lin->w2 + lin->b2, 0, 1e-15));
  EXPECT_THROW(nn::QLearnedLUT(nn::QLearnedLUTOptions({3, 2}).hidden_layers(2)),
               std::invalid_argument);
}

// The task loss and the LUT cost both reach each connection's input and table quantizers.
TEST(LearnedLut, OneTrainingStepMovesBothQuantizersOfAConnection) {
  torch::manual_seed(2);
  nn::QLearnedLUT l(nn::QLearnedLUTOptions({4, 3}));
  l->train();
  torch::optim::Adam opt(l->parameters(), torch::optim::AdamOptions(0.1));
  auto x = torch::randn({128, 4, 3});
  const auto iq_before = l->iq->f.clone(), oq_before = l->oq->f.clone();
  const auto w1_before = l->w1.clone();
  auto loss = (l->forward(x) - torch::sin(x)).pow(2).mean() + 1e-3 * l->ebops();
  opt.zero_grad();
  loss.backward();
  ASSERT_TRUE(l->iq->f.grad().defined());
  ASSERT_TRUE(l->oq->f.grad().defined());
  EXPECT_TRUE((l->iq->f.grad() != 0).all().item<bool>());  // every connection
  EXPECT_TRUE((l->oq->f.grad() != 0).all().item<bool>());
  opt.step();
  EXPECT_TRUE((l->iq->f != iq_before).all().item<bool>());
  EXPECT_TRUE((l->oq->f != oq_before).all().item<bool>());
  EXPECT_FALSE(torch::equal(l->w1, w1_before));
}

// Frozen: the forward looks the archive's tables up at the quantized input's mantissa.
TEST(LearnedLut, FrozenTablesAreLookedUp) {
  nn::QLearnedLUTOptions o({2});
  // Element 0: signed 2 bits, f = 1 (mantissas -2..1); element 1: unsigned 1 bit, f = 0 (0, 1).
  o.input_quantizer(kif({2}, 1, 0, 1)).output_quantizer(kif({2}, 1, 4, 2));
  nn::QLearnedLUT l(o);
  {
    torch::NoGradGuard no_grad;
    l->iq->k.copy_(torch::tensor({1.0, 0.0}));
    l->iq->i.copy_(torch::tensor({0.0, 1.0}));
    l->iq->f.copy_(torch::tensor({1.0, 0.0}));
  }
  l->freeze({-4, -3, -2, -1, 10, 11}, {0, 4, 6}, {-2, 0});
  l->eval();
  ASSERT_TRUE(l->frozen());
  // x0 = -1 (mantissa -2, entry 0), -0.5 (-1: 1), 0 (0: 2), 0.5 (1: 3); x1 = 0 -> 10, 1 -> 11.
  auto x = torch::tensor({-1.0, 0.0, -0.5, 1.0, 0.0, 0.0, 0.5, 1.0}).view({4, 2});
  auto y = l->forward(x);
  EXPECT_TRUE(
      torch::equal(y, torch::tensor({-4.0, 10.0, -3.0, 11.0, -2.0, 10.0, -1.0, 11.0}).view({4, 2})))
      << y;
  EXPECT_THROW(l->freeze({1, 2}, {0, 1}, {0, 0}), std::invalid_argument);
}

TEST(LearnedLut, BlockConfigErrors) {
  EXPECT_NE(error_of("input_shape: [4, 3]\nlayers:\n  - {type: lut_dense, units: 2}\n")
                .find("a lut_dense block takes a flat input [features], got [4, 3]"),
            std::string::npos);
  EXPECT_NE(error_of("input_shape: [4]\nlayers:\n  - {type: lut_dense}\n").find("units"),
            std::string::npos);
  EXPECT_NE(error_of("input_shape: [4]\nlayers:\n  - {type: lut_dense, units: 2, hidden_layers: "
                     "2}\n")
                .find("hidden_layers"),
            std::string::npos);
  EXPECT_NE(error_of("input_shape: [4]\nlayers:\n  - {type: dense, units: 2, hidden: 4}\n")
                .find("only lut_dense blocks have it"),
            std::string::npos);
  EXPECT_NE(error_of("input_shape: [4]\nlayers:\n  - {type: lut_dense, units: 2, "
                     "kernel_quantizer: {b: 3}}\n")
                .find("allowed quantizers: input_quantizer, table_quantizer, output_quantizer"),
            std::string::npos);
}

// A connection whose table would exceed max_table_bits is refused at export, naming it.
TEST(LearnedLut, TableSizeLimitNamesTheConnection) {
  model::HGQModel m(config::parse_model_yaml(R"(
input_shape: [3]
layers:
  - {type: lut_dense, name: h, units: 2, max_table_bits: 10, input_quantizer: {i: 4, f: 6, overflow: SAT}}
)",
                                             "t"));
  try {
    model::to_archive(m);
    ADD_FAILURE() << "no error";
  } catch (const archive::ArchiveError& e) {
    EXPECT_NE(std::string(e.what()).find("layer 'h_tables': connection 0 -> 0 has a 11-bit input "
                                         "quantizer; its table would have 2^11 entries, above "
                                         "max_table_bits 10"),
              std::string::npos)
        << e.what();
  }
}

// The block is read as its primitive layers and written back as the block.
TEST(LearnedLut, BlockExpandsAndRoundTripsThroughModelYaml) {
  const auto spec = config::parse_model_yaml(R"(
input_shape: [6]
layers:
  - {type: lut_dense, name: h, units: 3, hidden: 4, activation: relu, table_quantizer: {f: 5}}
  - {type: dense, units: 2}
)",
                                             "t");
  std::vector<std::string> names;
  for (const auto& l : spec.layers) names.push_back(l.name);
  EXPECT_EQ(names, (std::vector<std::string>{"h_in", "h_col", "h_fanout", "h_tables", "h_sum", "h",
                                             "dense_1"}));
  EXPECT_EQ(spec.layers[2].inputs.size(), 3u);
  EXPECT_EQ(spec.layers[3].quantizers.at("output").f, 5.0);
  EXPECT_EQ(spec.layers[5].activation, "relu");
  const auto again = config::parse_model_yaml(config::model_to_yaml(spec), "again");
  ASSERT_EQ(again.layers.size(), spec.layers.size());
  EXPECT_EQ(again.layers[3].hidden, 4);
  model::HGQModel m(spec);
  EXPECT_EQ(m->output_shape(), std::vector<int64_t>{2});
}
