// The HLS exporter and the ap_fixed simulation header: the header against quantization.md
// section 9 and the archive's integer quantizer; generated projects compiled with the C++
// compiler and run on 10,000 inputs (some scaled to overflow every quantizer), bit-exact with
// the emulator.
#include "hgqt/export/hls.h"

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "ap_types_sim/ap_fixed.h"
#include "hgqt/archive/emulator.h"
#include "hgqt/export/netlist.h"
#include "support/process.h"
#include "support/random_archive.h"

using namespace hgqt;
using archive::FixedType;
using archive::int128;
using archive::LayerKind;
using quant::OverflowMode;
using quant::RoundingMode;
namespace fs = std::filesystem;
using hgqt::testing::ap_include_dir;
using hgqt::testing::CommandResult;
using hgqt::testing::count_of;
using hgqt::testing::quoted;
using hgqt::testing::read_text;
using hgqt::testing::run_command;

namespace {

// ------------------------------------------------------------------- simulation header helpers
template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O>
double sim(double x) {
  return ap_fixed_base<W, I, S, Q, O>(x).to_double();
}

/// Rounds x (exact at 2^-3) to an integer with mode Q, from a double and from an ap_fixed.
template <ap_q_mode Q>
void expect_rounding(const double (&xs)[7], const int (&want)[7], const char* mode) {
  for (int n = 0; n < 7; ++n) {
    EXPECT_EQ((ap_fixed<8, 8, Q>(xs[n]).to_double()), want[n]) << mode << " from double " << xs[n];
    const ap_fixed<12, 6> src(xs[n]);
    const ap_fixed<8, 8, Q> dst = src;
    EXPECT_EQ(dst.to_double(), want[n]) << mode << " from ap_fixed " << xs[n];
  }
}

RoundingMode rounding_of(ap_q_mode q) {
  return q == AP_TRN ? RoundingMode::TRN
                     : (q == AP_RND ? RoundingMode::RND : RoundingMode::RND_CONV);
}
OverflowMode overflow_of(ap_o_mode o) {
  return o == AP_WRAP ? OverflowMode::WRAP
                      : (o == AP_SAT ? OverflowMode::SAT : OverflowMode::SAT_SYM);
}

/// The sim header's conversions into ap_fixed_base<W, I, S, Q, O> against the archive's integer
/// quantizer (quantize_double, quantize_exact) on dyadic values around the type's range,
/// ties and far overflows included.
template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O>
void cross_check(uint64_t seed) {
  typedef ap_fixed_base<W, I, S, Q, O> T;
  archive::QuantSpec q;
  q.shape = std::vector<int64_t>{1};
  q.k = {S ? 1 : 0};
  q.i = {I - (S ? 1 : 0)};
  q.f = {W - I};
  q.round = rounding_of(Q);
  q.overflow = overflow_of(O);
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> mant(-(int64_t{1} << 14), int64_t{1} << 14);
  std::uniform_int_distribution<int> shift(-4, 6);
  const std::string what =
      FixedType{S, W, W - I}.to_string() + " Q" + std::to_string(Q) + " O" + std::to_string(O);
  for (int n = 0; n < 3000; ++n) {
    const int64_t m = mant(rng);
    const int frac = (W - I) + shift(rng);  // the value m * 2^-frac, finer or coarser than T
    const double x = std::ldexp(static_cast<double>(m), -frac);
    ASSERT_EQ(archive::to_string(T(x).V), archive::to_string(archive::quantize_double(x, q, 0)))
        << what << " from double " << x;
    // From an ap_fixed holding the same value (W - I + 6 fractional bits, 32 bits wide).
    typedef ap_fixed_base<32, 32 - (W - I + 6), true> Src;
    const Src src = Src::from_mantissa(static_cast<int128>(m) * (int128{1} << (W - I + 6 - frac)));
    ASSERT_EQ(archive::to_string(T(src).V),
              archive::to_string(archive::quantize_exact(src.V, W - I + 6, q, 0)))
        << what << " from ap_fixed " << x;
  }
  // Far outside the range: 1e30 and -3e25 wrap to their low bits or saturate (within the
  // 2^120 that quantize_double handles).
  for (double x : {1e30, -3e25, 7.0e-30, -7.0e-30}) {
    if (W - I > 20) break;
    ASSERT_EQ(archive::to_string(T(x).V), archive::to_string(archive::quantize_double(x, q, 0)))
        << what << " from double " << x;
  }
}

template <int W, int I, bool S>
void cross_check_modes(uint64_t seed) {
  cross_check<W, I, S, AP_TRN, AP_WRAP>(seed);
  cross_check<W, I, S, AP_RND, AP_SAT>(seed + 1);
  cross_check<W, I, S, AP_RND_CONV, AP_SAT_SYM>(seed + 2);
  cross_check<W, I, S, AP_RND, AP_WRAP>(seed + 3);
  cross_check<W, I, S, AP_TRN, AP_SAT_SYM>(seed + 4);
  cross_check<W, I, S, AP_RND_CONV, AP_SAT>(seed + 5);
}

// ------------------------------------------------------------------- project helpers
fs::path fresh_dir(const std::string& name) {
  return hgqt::testing::fresh_test_dir("hls_test", name, false);
}

/// 5,000 normal and 5,000 scaled-by-16 input rows.
std::vector<double> test_inputs(const archive::Archive& a, uint64_t seed) {
  auto x = hgqt::testing::random_inputs(a, 5000, seed);
  const auto big = hgqt::testing::random_inputs(a, 5000, seed + 1, 16.0);
  x.insert(x.end(), big.begin(), big.end());
  return x;
}

/// Compiles the project's testbench and firmware; returns the testbench binary.
fs::path compile_project(const fs::path& dir, const std::string& name) {
  const fs::path exe = dir / (name + "_tb");
  const std::string cmd =
      std::string(quoted(HGQT_CXX_COMPILER)) + " -O1 -std=c++17 -I" + quoted(ap_include_dir()) +
      " " + quoted((dir / (name + "_test.cpp")).string()) + " " +
      quoted((dir / "firmware" / (name + ".cpp")).string()) + " -o " + quoted(exe.string());
  const CommandResult r = run_command(cmd);
  EXPECT_EQ(r.status, 0) << cmd << "\n" << r.output.substr(0, 4000);
  return exe;
}

CommandResult run_testbench(const fs::path& dir, const fs::path& exe) {
  return run_command("cd " + quoted(dir.string()) + " && " + quoted(exe.string()));
}

/// Exports `a`, compiles and runs the testbench on 10,000 inputs: every output bit-exact.
void export_and_check(const archive::Archive& a, const std::string& name, uint64_t seed,
                      const fs::path& dir) {
  const auto x = test_inputs(a, seed);
  const int64_t n = 10000;
  // The scaled inputs overflow the quantizers: the test covers WRAP and saturation.
  archive::EmulatorStats stats;
  archive::Emulator(a).run_batch(x, n, &stats);
  EXPECT_GT(stats.wrapped + stats.saturated, 0);
  exporters::HlsOptions o;
  o.name = name;
  exporters::export_hls(a, dir.string(), o, x, n);
  const fs::path exe = compile_project(dir, name);
  const CommandResult r = run_testbench(dir, exe);
  EXPECT_EQ(r.status, 0) << r.output.substr(0, 4000);
  EXPECT_NE(r.output.find("hls testbench: 10000 samples, 0 mismatches"), std::string::npos)
      << r.output.substr(0, 4000);
  // csim_results.log: one line per sample, equal to the emulator's outputs.
  EXPECT_EQ(read_text(dir / "tb_data" / "csim_results.log"),
            read_text(dir / "tb_data" / "tb_output_predictions.dat"));
}

/// A constant whose elements all have fractional bits f (quantizer k = 1, i = 8).
archive::Constant constant(std::vector<int64_t> shape, std::vector<int64_t> mantissa, int f) {
  archive::Constant c;
  c.shape = shape;
  c.mantissa = std::move(mantissa);
  c.exponent.assign(c.mantissa.size(), -f);
  c.quantizer.shape = std::move(shape);
  c.quantizer.k.assign(c.mantissa.size(), 1);
  c.quantizer.i.assign(c.mantissa.size(), 8);
  c.quantizer.f.assign(c.mantissa.size(), f);
  c.quantizer.round = RoundingMode::RND;
  c.quantizer.overflow = OverflowMode::SAT_SYM;
  return c;
}

hgqt::testing::RandomArchiveOptions mlp(uint64_t seed, std::vector<int64_t> sizes) {
  hgqt::testing::RandomArchiveOptions o;
  o.seed = seed;
  o.sizes = std::move(sizes);
  return o;
}

}  // namespace

// ------------------------------------------------------------------- simulation header

// quantization.md section 9: rounding of values to an integer grid, all seven modes.
TEST(HlsApFixedSim, RoundingTableOfSection9) {
  const double xs[7] = {2.5, 1.5, 0.75, -0.25, -1.5, -2.5, -1.25};
  expect_rounding<AP_RND>(xs, {3, 2, 1, 0, -1, -2, -1}, "AP_RND");
  expect_rounding<AP_RND_CONV>(xs, {2, 2, 1, 0, -2, -2, -1}, "AP_RND_CONV");
  expect_rounding<AP_TRN>(xs, {2, 1, 0, -1, -2, -3, -2}, "AP_TRN");
  expect_rounding<AP_RND_ZERO>(xs, {2, 1, 1, 0, -1, -2, -1}, "AP_RND_ZERO");
  expect_rounding<AP_RND_INF>(xs, {3, 2, 1, 0, -2, -3, -1}, "AP_RND_INF");
  expect_rounding<AP_RND_MIN_INF>(xs, {2, 1, 1, 0, -2, -3, -1}, "AP_RND_MIN_INF");
  expect_rounding<AP_TRN_ZERO>(xs, {2, 1, 0, 0, -1, -2, -1}, "AP_TRN_ZERO");
}

// 100 into ap_fixed<6,4>: SAT 7.75, SAT(-100) -8, SAT_SYM(-100) -7.75, SAT_ZERO 0, WRAP 4.
TEST(HlsApFixedSim, OverflowTableOfSection9) {
  EXPECT_EQ((sim<6, 4, true, AP_TRN, AP_SAT>(100)), 7.75);
  EXPECT_EQ((sim<6, 4, true, AP_TRN, AP_SAT>(-100)), -8.0);
  EXPECT_EQ((sim<6, 4, true, AP_TRN, AP_SAT_SYM>(-100)), -7.75);
  EXPECT_EQ((sim<6, 4, true, AP_TRN, AP_SAT_SYM>(100)), 7.75);
  EXPECT_EQ((sim<6, 4, true, AP_TRN, AP_SAT_ZERO>(100)), 0.0);
  EXPECT_EQ((sim<6, 4, true, AP_TRN, AP_WRAP>(100)), 4.0);
  // The same from a wider ap_fixed, and SAT_SYM on the in-range minimum (section 2: clamp to
  // -m_max).
  const ap_fixed<16, 10> hundred(100.0), minus8(-8.0);
  EXPECT_EQ((ap_fixed<6, 4, AP_TRN, AP_SAT>(hundred).to_double()), 7.75);
  EXPECT_EQ((ap_fixed<6, 4, AP_TRN, AP_WRAP>(hundred).to_double()), 4.0);
  EXPECT_EQ((ap_fixed<6, 4, AP_TRN, AP_SAT_SYM>(minus8).to_double()), -7.75);
  EXPECT_EQ((ap_fixed<6, 4, AP_TRN, AP_SAT>(minus8).to_double()), -8.0);
  // Unsigned: negative values saturate to 0 or wrap modulo 2^W.
  EXPECT_EQ((sim<4, 2, false, AP_TRN, AP_SAT>(-1.0)), 0.0);
  EXPECT_EQ((sim<4, 2, false, AP_TRN, AP_SAT_SYM>(-1.0)), 0.0);
  EXPECT_EQ((sim<4, 2, false, AP_TRN, AP_WRAP>(-1.0)), 3.0);
  // Rounding comes before overflow: 7.9 rounds to 8, which then saturates or wraps.
  EXPECT_EQ((sim<6, 4, true, AP_RND, AP_SAT>(7.9)), 7.75);
  EXPECT_EQ((sim<6, 4, true, AP_RND, AP_WRAP>(7.9)), -8.0);
  EXPECT_EQ((sim<6, 4, true, AP_TRN, AP_WRAP>(7.9)), 7.75);
}

// Result widths of section 9 (W = W1 + W2, I = I1 + I2 for products; one more integer bit and
// the finer step for sums), and exact results where the operands' extremes meet.
TEST(HlsApFixedSim, ArithmeticResultWidthsAreExact) {
  const ap_fixed<5, 2> a(-2.0);       // the most negative value, step 1/8
  const ap_ufixed<3, -2> b(0.21875);  // the largest value: 7/32
  const auto p = a * b;
  EXPECT_EQ(decltype(p)::width, 8);
  EXPECT_EQ(decltype(p)::iwidth, 0);
  EXPECT_EQ(p.to_double(), -0.4375);
  const auto pp = a * a;  // (-2)^2 = 4 needs the full W1 + W2
  EXPECT_EQ(decltype(pp)::width, 10);
  EXPECT_EQ(decltype(pp)::iwidth, 4);
  EXPECT_EQ(pp.to_double(), 4.0);
  const ap_ufixed<6, 1> c(1.96875);  // largest: 2 - 2^-5
  const auto s = a + c;              // I = max(2, 1 + 1) + 1 = 3, F = max(3, 5) = 5
  EXPECT_EQ(decltype(s)::width, 8);
  EXPECT_EQ(decltype(s)::iwidth, 3);
  EXPECT_EQ(s.to_double(), -0.03125);
  const ap_fixed<5, 2> d(1.875);  // largest
  const auto s2 = d + d;
  EXPECT_EQ(decltype(s2)::width, 6);
  EXPECT_EQ(decltype(s2)::iwidth, 3);
  EXPECT_EQ(s2.to_double(), 3.75);
  const auto diff = ap_ufixed<4, 4>(0.0) - ap_ufixed<4, 4>(15.0);  // signed, I = 4 + 1
  EXPECT_EQ(decltype(diff)::width, 5);
  EXPECT_EQ(diff.to_double(), -15.0);
  // I > W and I < 0: ap_fixed<3,6> holds multiples of 8, ap_ufixed<2,-3> multiples of 1/32.
  const ap_fixed<3, 6> big(24.0);
  const ap_ufixed<2, -3> tiny(0.09375);
  EXPECT_EQ((big * tiny).to_double(), 2.25);
  EXPECT_EQ((big + tiny).to_double(), 24.09375);
  // += converts the exact sum with the left operand's modes.
  ap_fixed<6, 3> acc(3.5);
  acc += ap_fixed<4, 1>(0.375);
  EXPECT_EQ(acc.to_double(), 3.875);
  acc += ap_fixed<4, 1>(0.5);  // 4.375 wraps in ap_fixed<6,3>
  EXPECT_EQ(acc.to_double(), -3.625);
  // Comparisons, with integers too.
  EXPECT_TRUE(a < b);
  EXPECT_TRUE(a < 0);
  EXPECT_TRUE(b > 0);
  EXPECT_FALSE((ap_fixed<4, 2>(0.0) > 0));
  EXPECT_TRUE((big == ap_fixed<8, 6>(24.0)));
  EXPECT_TRUE(big >= 24);
}

// Every conversion of the simulation header equals the archive's quantizer (section 2).
TEST(HlsApFixedSim, ConversionsMatchArchiveQuantizer) {
  cross_check_modes<6, 4, true>(10);
  cross_check_modes<3, -2, false>(20);
  cross_check_modes<4, 7, true>(30);
  cross_check_modes<5, 9, false>(40);
  cross_check_modes<1, 1, true>(50);
  cross_check_modes<1, 0, false>(60);
  cross_check_modes<9, 0, true>(70);
  cross_check_modes<100, 60, true>(80);
}

// ------------------------------------------------------------------- generator pieces

TEST(HlsExport, TypeNames) {
  EXPECT_EQ(exporters::hls_type(FixedType{true, 8, 5}, RoundingMode::RND, OverflowMode::SAT),
            "ap_fixed<8,3,AP_RND,AP_SAT>");
  EXPECT_EQ(
      exporters::hls_type(FixedType{false, 3, 5}, RoundingMode::RND_CONV, OverflowMode::SAT_SYM),
      "ap_ufixed<3,-2,AP_RND_CONV,AP_SAT_SYM>");
  EXPECT_EQ(exporters::hls_type(FixedType{true, 4, -3}, RoundingMode::S_RND, OverflowMode::WRAP),
            "ap_fixed<4,7,AP_RND,AP_WRAP>");
  EXPECT_EQ(exporters::hls_type(FixedType{false, 4, 1}), "ap_ufixed<4,3>");
  EXPECT_THROW(exporters::hls_type(FixedType{false, 0, 1}), std::invalid_argument);
}

TEST(HlsExport, ExactDecimals) {
  EXPECT_EQ(exporters::exact_decimal(3, 3), "0.375");
  EXPECT_EQ(exporters::exact_decimal(-12, 0), "-12.0");
  EXPECT_EQ(exporters::exact_decimal(1, -10), "1024.0");
  EXPECT_EQ(exporters::exact_decimal(-5, -1), "-10.0");
  EXPECT_EQ(exporters::exact_decimal(0, 7), "0.0");
  EXPECT_EQ(exporters::exact_decimal(-1, 1), "-0.5");
  EXPECT_EQ(exporters::exact_decimal(1, 20), "0.00000095367431640625");
  EXPECT_EQ(exporters::exact_decimal(int128{1} << 100, 0), "1267650600228229401496703205376.0");
  // Every dyadic value of up to 53 bits reads back exactly.
  std::mt19937_64 rng(5);
  for (int t = 0; t < 2000; ++t) {
    const int64_t m = static_cast<int64_t>(rng() >> 11) - (int64_t{1} << 52);
    const int frac = static_cast<int>(rng() % 140) - 40;
    const std::string s = exporters::exact_decimal(m, frac);
    ASSERT_EQ(std::strtod(s.c_str(), nullptr), std::ldexp(static_cast<double>(m), -frac)) << s;
  }
}

TEST(HlsExport, RejectsBadOptionsAndInputs) {
  const auto a = hgqt::testing::random_mlp_archive(mlp(1, {4, 3, 2}));
  const fs::path dir = fresh_dir("bad_options");
  const std::vector<double> x(8, 0.5);
  exporters::HlsOptions o;
  o.name = "9lives";
  EXPECT_THROW(exporters::export_hls(a, dir.string(), o, x, 2), std::invalid_argument);
  o.name = "ok";
  o.part = "xc7 ; rm";
  EXPECT_THROW(exporters::export_hls(a, dir.string(), o, x, 2), std::invalid_argument);
  o.part = "xcvu9p-flga2104-2-e";
  o.clock_ns = 0;
  EXPECT_THROW(exporters::export_hls(a, dir.string(), o, x, 2), std::invalid_argument);
  o.clock_ns = 4;
  EXPECT_THROW(exporters::export_hls(a, dir.string(), o, x, 3), std::invalid_argument);
  // A model whose input is never quantized has no fixed-point input type.
  auto unquantized = a;
  unquantized.layers[0].input_quantizer.reset();
  EXPECT_THROW(exporters::export_hls(unquantized, dir.string(), o, x, 2), archive::ArchiveError);
  EXPECT_FALSE(fs::exists(dir / "firmware"));
}

// The files of a project: pragmas, weight comments, exact constants, one term per nonzero
// weight of a live input (in the sums the outputs depend on), the build script, and one zero
// sample when no inputs are given.
TEST(HlsExport, ProjectFiles) {
  auto opt = mlp(3, {16, 12, 8, 5});
  opt.zero_weights = 0.5;
  const auto a = hgqt::testing::random_mlp_archive(opt);
  const fs::path dir = fresh_dir("files");
  exporters::HlsOptions o;
  o.name = "files_prj";
  o.part = "xcvu9p-flga2104-2-e";
  o.clock_ns = 3.3;
  exporters::export_hls(a, dir.string(), o, {}, 0);
  for (const char* f : {"firmware/files_prj.cpp", "firmware/files_prj.h", "firmware/defines.h",
                        "firmware/parameters.h", "firmware/weights/w0.h", "firmware/weights/b0.h",
                        "files_prj_test.cpp", "build_prj.tcl", "README.md",
                        "tb_data/tb_input_features.dat", "tb_data/tb_output_predictions.dat"})
    EXPECT_TRUE(fs::exists(dir / f)) << f;
  const std::string cpp = read_text(dir / "firmware/files_prj.cpp");
  EXPECT_NE(cpp.find("void files_prj(input_t x_in[N_INPUT], result_t y_out[N_OUTPUT])"),
            std::string::npos);
  EXPECT_NE(cpp.find("#pragma HLS PIPELINE"), std::string::npos);
  EXPECT_NE(cpp.find("#pragma HLS ARRAY_PARTITION variable=x_in complete"), std::string::npos);
  EXPECT_NE(cpp.find("#pragma HLS ARRAY_PARTITION variable=y_out complete"), std::string::npos);
  EXPECT_NE(cpp.find("#pragma HLS INTERFACE ap_vld port=x_in"), std::string::npos);
  // Layer 0 reads the quantized input: one term per nonzero weight of a non-pruned feature in
  // the netlist's sums, and one statement per term of the sums the outputs depend on.
  const auto& l0 = a.layers[0];
  size_t products = 0;
  for (int64_t j = 0; j < 16; ++j)
    for (int64_t o2 = 0; o2 < 12; ++o2)
      if (l0.input_quantizer->width(j) > 0 && l0.kernel->mantissa[j * 12 + o2] != 0) ++products;
  const netlist::Netlist net = netlist::lower(a);
  std::vector<char> live(net.ops.size(), 0);
  for (int32_t id : net.outputs) live[id] = 1;
  for (size_t id = net.ops.size(); id-- > 0;)
    if (live[id])
      for (const auto& t : net.ops[id].in) live[t.value] = 1;
  size_t terms = 0, live_terms = 0;
  for (size_t id = 0; id < net.ops.size(); ++id) {
    const auto& o = net.ops[id];
    if (o.kind != netlist::OpKind::Sum || net.steps[o.step].layer != 0) continue;
    terms += o.in.size();
    if (live[id]) live_terms += o.in.size();
  }
  EXPECT_EQ(terms, products);
  const size_t begin = cpp.find("static void layer0_dense(");
  ASSERT_NE(begin, std::string::npos);
  const std::string fn = cpp.substr(begin, cpp.find("\n}\n", begin) - begin);
  EXPECT_EQ(count_of(fn, " += ") + count_of(fn, " -= "), live_terms);
  EXPECT_GT(live_terms, 0u);
  // Per-element types with the quantizers' modes.
  const std::string defines = read_text(dir / "firmware/defines.h");
  EXPECT_NE(defines.find("typedef ap_"), std::string::npos);
  EXPECT_NE(defines.find("input_q_t_"), std::string::npos);
  EXPECT_NE(defines.find("typedef layer3_t result_t;"), std::string::npos);
  // Weight comments and exact values.
  const std::string w0 = read_text(dir / "firmware/weights/w0.h");
  EXPECT_NE(w0.find("shape [16, 12]"), std::string::npos);
  int64_t zeros = 0;
  for (int64_t m : l0.kernel->mantissa) zeros += m == 0;
  EXPECT_NE(w0.find(", " + std::to_string(zeros) + " zeros"), std::string::npos)
      << w0.substr(0, 400);
  EXPECT_NE(w0.find("// min "), std::string::npos);
  EXPECT_NE(w0.find(exporters::exact_decimal(l0.kernel->mantissa[1], -l0.kernel->exponent[1])),
            std::string::npos);
  const std::string tcl = read_text(dir / "build_prj.tcl");
  for (const char* line : {"open_project", "set_top files_prj", "add_files firmware/files_prj.cpp",
                           "add_files -tb files_prj_test.cpp", "set_part {xcvu9p-flga2104-2-e}",
                           "create_clock -period 3.3", "csim_design", "csynth_design",
                           "cosim_design", "export_design -format ip_catalog"})
    EXPECT_NE(tcl.find(line), std::string::npos) << line;
  EXPECT_NE(read_text(dir / "README.md").find("vitis_hls -f build_prj.tcl"), std::string::npos);
  // No inputs: one all-zero sample and its emulator output.
  const std::string tb_in = read_text(dir / "tb_data/tb_input_features.dat");
  EXPECT_EQ(count_of(tb_in, "\n"), 1u);
  EXPECT_EQ(count_of(tb_in, "0"), 16u);
}

// ------------------------------------------------------------------- end to end

// Per-element types, dense input quantizers, a relu activation layer, mixed modes; then a
// corrupted expected value must make the testbench fail.
TEST(HlsExport, EndToEndDenseInputQuantizers) {
  const auto a = hgqt::testing::random_mlp_archive(mlp(1, {16, 12, 8, 5}));
  const fs::path dir = fresh_dir("e2e_dense");
  export_and_check(a, "dense_prj", 11, dir);

  // The testbench notices a wrong value: change the last output of sample 3.
  const fs::path pred = dir / "tb_data" / "tb_output_predictions.dat";
  std::stringstream in(read_text(pred));
  std::string line, text;
  for (int r = 0; std::getline(in, line); ++r) {
    if (r == 3) line += "1";  // appends a digit to the last number
    text += line + "\n";
  }
  std::ofstream(pred) << text;
  const CommandResult r = run_testbench(dir, dir / "dense_prj_tb");
  EXPECT_NE(r.status, 0);
  EXPECT_NE(r.output.find("10000 samples, 1 mismatches"), std::string::npos) << r.output;
}

// A quantize layer first, many zero weights and pruned elements.
TEST(HlsExport, EndToEndQuantizeLayerSparse) {
  auto opt = mlp(2, {16, 12, 8, 5});
  opt.quantize_layer = true;
  opt.zero_weights = 0.6;
  opt.pruned_inputs = 0.3;
  export_and_check(hgqt::testing::random_mlp_archive(opt), "sparse_prj", 21,
                   fresh_dir("e2e_sparse"));
}

// Dense after dense without a quantizer in between (the relu'd accumulator is the next input),
// no activation layer, RND / WRAP only.
TEST(HlsExport, EndToEndUnquantizedChain) {
  auto opt = mlp(4, {12, 10, 9, 4});
  opt.output_quantizer = false;
  opt.activation_layer = false;
  opt.mixed_modes = false;
  opt.zero_weights = 0.1;
  auto a = hgqt::testing::random_mlp_archive(opt);
  ASSERT_EQ(a.layers[1].kind, LayerKind::Dense);
  a.layers[1].input_quantizer.reset();
  export_and_check(a, "chain_prj", 31, fresh_dir("e2e_chain"));
}

// Per-tensor activation quantizers (one typedef per array), and a layer large enough to be split
// into several functions.
TEST(HlsExport, EndToEndPerTensorLargeLayer) {
  auto opt = mlp(5, {112, 64, 5});
  opt.per_tensor = true;
  opt.zero_weights = 0.1;
  const auto a = hgqt::testing::random_mlp_archive(opt);
  const fs::path dir = fresh_dir("e2e_large");
  export_and_check(a, "large_prj", 41, dir);
  const std::string cpp = read_text(dir / "firmware/large_prj.cpp");
  EXPECT_NE(cpp.find("layer0_dense_part1"), std::string::npos);
  EXPECT_EQ(read_text(dir / "firmware/defines.h").find("input_t_0"), std::string::npos);
}

// Partial sums outside the accumulator's range: the relu'd accumulators of layer d0 are always
// positive (x0 + 4 in [2, 5.75], x1 + 4 in [4, 4.875]), so d1's first product -(x0 + 4) is
// negative while its result 2 (x1 + 4) - (x0 + 4) lies in [2.25, 7.75] (an unsigned type).
// The generator sums in a wider signed type and converts at the end.
TEST(HlsExport, EndToEndPartialSumsWiderThanAccumulator) {
  archive::Archive a;
  a.name = "partial_sums";
  a.input_shape = std::vector<int64_t>{2};
  a.output_shape = std::vector<int64_t>{1};
  archive::Layer d0;
  d0.name = "d0";
  d0.kind = LayerKind::Dense;
  d0.input_shape = d0.output_shape = std::vector<int64_t>{2};
  d0.activation = "relu";
  d0.input_quantizer =
      archive::QuantSpec{{2}, {1, 0}, {1, 0}, {2, 3}, RoundingMode::RND_CONV, OverflowMode::WRAP};
  d0.kernel = constant({2, 2}, {1, 0, 0, 1}, 0);
  d0.bias = constant({2}, {4, 4}, 0);
  archive::Layer d1;
  d1.name = "d1";
  d1.kind = LayerKind::Dense;
  d1.input_shape = std::vector<int64_t>{2};
  d1.output_shape = std::vector<int64_t>{1};
  d1.kernel = constant({2, 1}, {-1, 2}, 0);
  a.layers = {d0, d1};
  const fs::path dir = fresh_dir("e2e_partial_sums");
  export_and_check(a, "psum_prj", 51, dir);
  const std::string defines = read_text(dir / "firmware/defines.h");
  EXPECT_NE(defines.find("typedef ap_fixed<7,4> layer1_sum_t;"), std::string::npos) << defines;
  EXPECT_NE(defines.find("typedef ap_ufixed<6,3> layer1_acc_t;"), std::string::npos) << defines;
}

// Weights of more than 53 significant bits are written as the exact sum of two double literals;
// products and the accumulator are 63 and 64 bits wide before the output quantizer wraps them.
TEST(HlsExport, EndToEndWideWeights) {
  archive::Archive a;
  a.name = "wide_weights";
  a.input_shape = std::vector<int64_t>{2};
  a.output_shape = std::vector<int64_t>{1};
  archive::Layer d;
  d.name = "d";
  d.kind = LayerKind::Dense;
  d.input_shape = std::vector<int64_t>{2};
  d.output_shape = std::vector<int64_t>{1};
  d.input_quantizer =
      archive::QuantSpec{{2}, {1, 1}, {2, 1}, {1, 3}, RoundingMode::TRN, OverflowMode::SAT};
  d.kernel = constant({2, 1}, {(int64_t{1} << 57) + 12345, -((int64_t{1} << 56) + 999)}, 50);
  d.bias = constant({1}, {3}, 2);
  d.output_quantizer =
      archive::QuantSpec{{1}, {1}, {6}, {12}, RoundingMode::RND_CONV, OverflowMode::WRAP};
  a.layers = {d};
  const fs::path dir = fresh_dir("e2e_wide_weights");
  export_and_check(a, "wide_prj", 61, dir);
  const std::string w = read_text(dir / "firmware/weights/w0.h");
  EXPECT_NE(w.find("(layer0_weight_t)((layer0_weight_t)128.0"), std::string::npos) << w;
  EXPECT_EQ(archive::infer_types(a)[0].accumulator[0].width, 64);
}
