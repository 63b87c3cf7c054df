// The HLS exporter's ac_fixed dialects (Catapult, oneAPI) and the ac_fixed simulation header: the
// header against quantization.md section 9 and the archive's integer quantizer; project files;
// generated projects of a small MLP and a small CNN (and lut / softmax graphs) compiled with the
// C++ compiler and run by their testbench on 2,000 inputs (half scaled to overflow the
// quantizers), bit-exact with the emulator.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "ac_types_sim/ac_fixed.h"
#include "hgqt/archive/emulator.h"
#include "hgqt/export/hls.h"
#include "support/hls_sim.h"
#include "support/process.h"
#include "support/random_archive.h"

using namespace hgqt;
using archive::FixedType;
using archive::int128;
using archive::LayerKind;
using exporters::HlsDialect;
using hgqt::testing::CommandResult;
using hgqt::testing::count_of;
using hgqt::testing::GraphKind;
using hgqt::testing::quoted;
using hgqt::testing::read_text;
using hgqt::testing::run_command;
using quant::OverflowMode;
using quant::RoundingMode;
namespace fs = std::filesystem;

namespace {

// ------------------------------------------------------------------- simulation header helpers
template <int W, int I, bool S, ac_q_mode Q, ac_o_mode O>
double sim(double x) {
  return ac_fixed<W, I, S, Q, O>(x).to_double();
}

/// Rounds x (exact at 2^-3) to an integer with mode Q, from a double and from an ac_fixed.
template <ac_q_mode Q>
void expect_rounding(const double (&xs)[7], const int (&want)[7], const char* mode) {
  for (int n = 0; n < 7; ++n) {
    EXPECT_EQ((ac_fixed<8, 8, true, Q>(xs[n]).to_double()), want[n])
        << mode << " from double " << xs[n];
    const ac_fixed<12, 6, true> src(xs[n]);
    const ac_fixed<8, 8, true, Q> dst = src;
    EXPECT_EQ(dst.to_double(), want[n]) << mode << " from ac_fixed " << xs[n];
  }
}

RoundingMode rounding_of(ac_q_mode q) {
  return q == AC_TRN ? RoundingMode::TRN
                     : (q == AC_RND ? RoundingMode::RND : RoundingMode::RND_CONV);
}
OverflowMode overflow_of(ac_o_mode o) {
  return o == AC_WRAP ? OverflowMode::WRAP
                      : (o == AC_SAT ? OverflowMode::SAT : OverflowMode::SAT_SYM);
}

/// The sim header's conversions into ac_fixed<W, I, S, Q, O> against the archive's integer
/// quantizer (quantize_double, quantize_exact) on dyadic values around the type's range, ties
/// and far overflows included.
template <int W, int I, bool S, ac_q_mode Q, ac_o_mode O>
void cross_check(uint64_t seed) {
  typedef ac_fixed<W, I, S, Q, O> T;
  const archive::QuantSpec q = hgqt::testing::scalar_quantizer(S ? 1 : 0, I - (S ? 1 : 0), W - I,
                                                               rounding_of(Q), overflow_of(O));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int64_t> mant(-(int64_t{1} << 14), int64_t{1} << 14);
  std::uniform_int_distribution<int> shift(-4, 6);
  const std::string what =
      FixedType{S, W, W - I}.to_string() + " Q" + std::to_string(Q) + " O" + std::to_string(O);
  for (int n = 0; n < 3000; ++n) {
    const int64_t m = mant(rng);
    const int frac = (W - I) + shift(rng);  // the value m * 2^-frac, finer or coarser than T
    const double x = std::ldexp(static_cast<double>(m), -frac);
    ASSERT_EQ(archive::to_string(T(x).sim_mantissa()),
              archive::to_string(archive::quantize_double(x, q, 0)))
        << what << " from double " << x;
    // From an ac_fixed holding the same value (W - I + 6 fractional bits, 32 bits wide).
    typedef ac_fixed<32, 32 - (W - I + 6), true> Src;
    const Src src =
        Src::sim_from_mantissa(static_cast<int128>(m) * (int128{1} << (W - I + 6 - frac)));
    ASSERT_EQ(archive::to_string(T(src).sim_mantissa()),
              archive::to_string(archive::quantize_exact(src.sim_mantissa(), W - I + 6, q, 0)))
        << what << " from ac_fixed " << x;
  }
  for (double x : {1e30, -3e25, 7.0e-30, -7.0e-30}) {
    if (W - I > 20) break;
    ASSERT_EQ(archive::to_string(T(x).sim_mantissa()),
              archive::to_string(archive::quantize_double(x, q, 0)))
        << what << " from double " << x;
  }
}

template <int W, int I, bool S>
void cross_check_modes(uint64_t seed) {
  cross_check<W, I, S, AC_TRN, AC_WRAP>(seed);
  cross_check<W, I, S, AC_RND, AC_SAT>(seed + 1);
  cross_check<W, I, S, AC_RND_CONV, AC_SAT_SYM>(seed + 2);
  cross_check<W, I, S, AC_RND, AC_WRAP>(seed + 3);
  cross_check<W, I, S, AC_TRN, AC_SAT_SYM>(seed + 4);
  cross_check<W, I, S, AC_RND_CONV, AC_SAT>(seed + 5);
}

// ------------------------------------------------------------------- project helpers
fs::path fresh_dir(const std::string& name) {
  return hgqt::testing::fresh_test_dir("hls_acfixed_test", name, false);
}

constexpr int64_t kSamples = 10000;  // half of them scaled x16: overflow-inducing

/// Gives every signed 1-bit SAT_SYM activation quantizer element (which ac_fixed cannot express,
/// see RefusesSigned1BitSatSym) a second bit, and refills the lut tables.
archive::Archive ac_expressible(archive::Archive a) {
  for (archive::Layer& l : a.layers) {
    for (auto* q : {&l.input_quantizer, &l.output_quantizer, &l.exp_input_quantizer,
                    &l.exp_output_quantizer, &l.inv_input_quantizer, &l.inv_output_quantizer}) {
      if (!q->has_value() || (*q)->overflow != OverflowMode::SAT_SYM) continue;
      for (int64_t n = 0; n < (*q)->size(); ++n)
        if ((*q)->k[n] == 1 && (*q)->i[n] + (*q)->f[n] == 0) (*q)->f[n] += 1;
    }
    if (l.kind == LayerKind::Lut) hgqt::testing::fill_lut_table(l);
  }
  archive::validate(a);
  return a;
}

bool on_path_cmake() {
  return hgqt::testing::on_path("cmake");
}

hgqt::testing::RandomArchiveOptions options(uint64_t seed, std::vector<int64_t> sizes = {}) {
  hgqt::testing::RandomArchiveOptions o;
  o.seed = seed;
  if (!sizes.empty()) o.sizes = std::move(sizes);
  return o;
}

using Case = hgqt::testing::HlsSimCase;
using hgqt::testing::dialect_tag;

/// Exports every case in its dialect and checks its C simulation (support/hls_sim.h).
std::vector<fs::path> check_cases(const std::vector<Case>& cases) {
  return hgqt::testing::check_hls_cases(cases, "hls_acfixed_test", kSamples);
}

}  // namespace

// ------------------------------------------------------------------- simulation header

// quantization.md section 9: rounding of values to an integer grid, the modes both libraries
// share and the others of ac_fixed (AC_RND_CONV_ODD: ties to odd).
TEST(HlsAcFixedSim, RoundingTableOfSection9) {
  const double xs[7] = {2.5, 1.5, 0.75, -0.25, -1.5, -2.5, -1.25};
  expect_rounding<AC_RND>(xs, {3, 2, 1, 0, -1, -2, -1}, "AC_RND");
  expect_rounding<AC_RND_CONV>(xs, {2, 2, 1, 0, -2, -2, -1}, "AC_RND_CONV");
  expect_rounding<AC_TRN>(xs, {2, 1, 0, -1, -2, -3, -2}, "AC_TRN");
  expect_rounding<AC_RND_ZERO>(xs, {2, 1, 1, 0, -1, -2, -1}, "AC_RND_ZERO");
  expect_rounding<AC_RND_INF>(xs, {3, 2, 1, 0, -2, -3, -1}, "AC_RND_INF");
  expect_rounding<AC_RND_MIN_INF>(xs, {2, 1, 1, 0, -2, -3, -1}, "AC_RND_MIN_INF");
  expect_rounding<AC_TRN_ZERO>(xs, {2, 1, 0, 0, -1, -2, -1}, "AC_TRN_ZERO");
  expect_rounding<AC_RND_CONV_ODD>(xs, {3, 1, 1, 0, -1, -3, -1}, "AC_RND_CONV_ODD");
}

// 100 into ac_fixed<6,4,true>: SAT 7.75, SAT(-100) -8, SAT_SYM(-100) -7.75, SAT_ZERO 0, WRAP 4;
// and the one place AC_SAT_SYM differs from hgqt's SAT_SYM: a signed 1-bit type.
TEST(HlsAcFixedSim, OverflowTableOfSection9) {
  EXPECT_EQ((sim<6, 4, true, AC_TRN, AC_SAT>(100)), 7.75);
  EXPECT_EQ((sim<6, 4, true, AC_TRN, AC_SAT>(-100)), -8.0);
  EXPECT_EQ((sim<6, 4, true, AC_TRN, AC_SAT_SYM>(-100)), -7.75);
  EXPECT_EQ((sim<6, 4, true, AC_TRN, AC_SAT_SYM>(100)), 7.75);
  EXPECT_EQ((sim<6, 4, true, AC_TRN, AC_SAT_ZERO>(100)), 0.0);
  EXPECT_EQ((sim<6, 4, true, AC_TRN, AC_WRAP>(100)), 4.0);
  const ac_fixed<16, 10, true> hundred(100.0), minus8(-8.0);
  EXPECT_EQ((ac_fixed<6, 4, true, AC_TRN, AC_SAT>(hundred).to_double()), 7.75);
  EXPECT_EQ((ac_fixed<6, 4, true, AC_TRN, AC_WRAP>(hundred).to_double()), 4.0);
  EXPECT_EQ((ac_fixed<6, 4, true, AC_TRN, AC_SAT_SYM>(minus8).to_double()), -7.75);
  EXPECT_EQ((ac_fixed<6, 4, true, AC_TRN, AC_SAT>(minus8).to_double()), -8.0);
  EXPECT_EQ((sim<4, 2, false, AC_TRN, AC_SAT>(-1.0)), 0.0);
  EXPECT_EQ((sim<4, 2, false, AC_TRN, AC_SAT_SYM>(-1.0)), 0.0);
  EXPECT_EQ((sim<4, 2, false, AC_TRN, AC_WRAP>(-1.0)), 3.0);
  EXPECT_EQ((sim<6, 4, true, AC_RND, AC_SAT>(7.9)), 7.75);
  EXPECT_EQ((sim<6, 4, true, AC_RND, AC_WRAP>(7.9)), -8.0);
  EXPECT_EQ((sim<6, 4, true, AC_TRN, AC_WRAP>(7.9)), 7.75);
  // Signed, one bit: hgqt's SAT_SYM range [-max, max] is {0}; ac_fixed's overflow handling sets
  // the minimum and then its lowest bit, which is the minimum itself: -1 (as AC_SAT).
  EXPECT_EQ((sim<1, 1, true, AC_TRN, AC_SAT_SYM>(-0.75)), -1.0);
  EXPECT_EQ((sim<1, 1, true, AC_TRN, AC_SAT_SYM>(0.75)), 0.0);
  archive::QuantSpec q1 =
      hgqt::testing::scalar_quantizer(1, 0, 0, RoundingMode::TRN, OverflowMode::SAT_SYM);
  EXPECT_EQ(archive::quantize_double(-0.75, q1, 0), 0);
}

// Result widths (the same as ap_fixed's) and exact results where the operands' extremes meet.
TEST(HlsAcFixedSim, ArithmeticResultWidthsAreExact) {
  const ac_fixed<5, 2, true> a(-2.0);       // the most negative value, step 1/8
  const ac_fixed<3, -2, false> b(0.21875);  // the largest value: 7/32
  const auto p = a * b;
  EXPECT_EQ(decltype(p)::width, 8);
  EXPECT_EQ(decltype(p)::i_width, 0);
  EXPECT_EQ(p.to_double(), -0.4375);
  const auto pp = a * a;
  EXPECT_EQ(decltype(pp)::width, 10);
  EXPECT_EQ(pp.to_double(), 4.0);
  const ac_fixed<6, 1, false> c(1.96875);
  const auto s = a + c;  // I = max(2, 1 + 1) + 1 = 3, F = max(3, 5) = 5
  EXPECT_EQ(decltype(s)::width, 8);
  EXPECT_EQ(decltype(s)::i_width, 3);
  EXPECT_EQ(s.to_double(), -0.03125);
  const auto diff = ac_fixed<4, 4, false>(0.0) - ac_fixed<4, 4, false>(15.0);
  EXPECT_EQ(decltype(diff)::width, 5);
  EXPECT_TRUE(decltype(diff)::sign);
  EXPECT_EQ(diff.to_double(), -15.0);
  // I > W and I < 0.
  const ac_fixed<3, 6, true> big(24.0);
  const ac_fixed<2, -3, false> tiny(0.09375);
  EXPECT_EQ((big * tiny).to_double(), 2.25);
  EXPECT_EQ((big + tiny).to_double(), 24.09375);
  ac_fixed<6, 3, true> acc(3.5);
  acc += ac_fixed<4, 1, true>(0.375);
  EXPECT_EQ(acc.to_double(), 3.875);
  acc += ac_fixed<4, 1, true>(0.5);  // 4.375 wraps
  EXPECT_EQ(acc.to_double(), -3.625);
  EXPECT_TRUE(a < b);
  EXPECT_TRUE(a < 0);
  EXPECT_TRUE(b > 0);
  EXPECT_FALSE((ac_fixed<4, 2, true>(0.0) > 0));
  EXPECT_TRUE((big == ac_fixed<8, 6, true>(24.0)));
  EXPECT_TRUE(big >= 24);
}

// Every conversion of the simulation header equals the archive's quantizer (section 2).
TEST(HlsAcFixedSim, ConversionsMatchArchiveQuantizer) {
  cross_check_modes<6, 4, true>(10);
  cross_check_modes<3, -2, false>(20);
  cross_check_modes<4, 7, true>(30);
  cross_check_modes<5, 9, false>(40);
  cross_check_modes<1, 0, false>(60);
  cross_check_modes<9, 0, true>(70);
  cross_check_modes<100, 60, true>(80);
  // Signed 1-bit: every mode but SAT_SYM (see OverflowTableOfSection9).
  cross_check<1, 1, true, AC_TRN, AC_WRAP>(50);
  cross_check<1, 1, true, AC_RND, AC_SAT>(51);
  cross_check<1, 1, true, AC_RND_CONV, AC_WRAP>(52);
}

// slc<W>(0) gives the mantissa's bits as an ac_int<W, S>: the generated table index is the
// mantissa minus the type's smallest.
TEST(HlsAcFixedSim, SliceIndexIsMantissaMinusMinimum) {
  for (int m = -8; m < 8; ++m) {
    const auto x = ac_fixed<4, 2, true>::sim_from_mantissa(m);
    EXPECT_EQ(x.slc<4>(0).to_int(), m);
    EXPECT_EQ(x.slc<4>(0).to_int() + 8, m + 8);
    EXPECT_EQ(x.slc<2>(1).to_int(), ac_sim::wrap_bits(m >> 1, 2, true));
  }
  for (int m = 0; m < 16; ++m) {
    const auto x = ac_fixed<4, -1, false>::sim_from_mantissa(m);
    EXPECT_EQ(x.slc<4>(0).to_uint(), static_cast<unsigned>(m));
  }
}

// ------------------------------------------------------------------- generator pieces

TEST(HlsAcFixedExport, TypeNames) {
  EXPECT_EQ(exporters::ac_type(FixedType{true, 8, 5}, RoundingMode::RND, OverflowMode::SAT),
            "ac_fixed<8,3,true,AC_RND,AC_SAT>");
  EXPECT_EQ(
      exporters::ac_type(FixedType{false, 3, 5}, RoundingMode::RND_CONV, OverflowMode::SAT_SYM),
      "ac_fixed<3,-2,false,AC_RND_CONV,AC_SAT_SYM>");
  EXPECT_EQ(exporters::ac_type(FixedType{true, 4, -3}, RoundingMode::S_RND, OverflowMode::WRAP),
            "ac_fixed<4,7,true,AC_RND,AC_WRAP>");
  EXPECT_EQ(exporters::ac_type(FixedType{false, 4, 1}), "ac_fixed<4,3,false>");
  EXPECT_THROW(exporters::ac_type(FixedType{false, 0, 1}), std::invalid_argument);
  EXPECT_EQ(exporters::hls_dialect("hls"), HlsDialect::Vitis);
  EXPECT_EQ(exporters::hls_dialect("catapult"), HlsDialect::Catapult);
  EXPECT_EQ(exporters::hls_dialect("oneapi"), HlsDialect::OneApi);
  EXPECT_THROW(exporters::hls_dialect("vivado_accelerator"), std::invalid_argument);
  EXPECT_EQ(exporters::default_part(HlsDialect::Catapult), "nangate-45nm_beh");
  EXPECT_EQ(exporters::default_part(HlsDialect::OneApi), "Agilex7");
}

// A signed 1-bit SAT_SYM quantizer is refused in one line naming the layer and the element; the
// Vitis dialect exports the same archive.
TEST(HlsAcFixedExport, RefusesSigned1BitSatSym) {
  auto a = ac_expressible(hgqt::testing::random_mlp_archive(options(1, {4, 3, 2})));
  archive::QuantSpec& q = *a.layers[0].input_quantizer;
  q.overflow = OverflowMode::SAT_SYM;
  q.k[2] = 1;
  q.i[2] = 0;
  q.f[2] = 0;
  const fs::path dir = fresh_dir("refuse_sat_sym");
  for (HlsDialect d : {HlsDialect::Catapult, HlsDialect::OneApi}) {
    exporters::HlsOptions o;
    o.dialect = d;
    try {
      exporters::export_hls(a, dir.string(), o, {}, 0);
      ADD_FAILURE() << "no error for " << dialect_tag(d);
    } catch (const archive::ArchiveError& e) {
      const std::string msg = e.what();
      EXPECT_EQ(
          msg.find(dialect_tag(d) + ": layer 0 'dense_0': the model input quantizer element 2 is a "
                                    "signed 1-bit SAT_SYM type (ac_fixed<1,1,true,"),
          0u)
          << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    }
    EXPECT_FALSE(fs::exists(dir / "firmware"));
  }
  exporters::export_hls(a, dir.string(), exporters::HlsOptions{}, {}, 0);  // Vitis
  EXPECT_TRUE(fs::exists(dir / "firmware" / "defines.h"));
}

// The two testbench behaviours every dialect shares with the Vitis one, and option checks.
TEST(HlsAcFixedExport, RejectsBadOptionsAndInputs) {
  const auto a = ac_expressible(hgqt::testing::random_mlp_archive(options(1, {4, 3, 2})));
  const fs::path dir = fresh_dir("bad_options");
  const std::vector<double> x(8, 0.5);
  exporters::HlsOptions o;
  o.dialect = HlsDialect::OneApi;
  try {
    exporters::export_hls(a, dir.string(), o, x, 3);
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("got 8 testbench input values for 3 samples of 4 features"),
              std::string::npos)
        << msg;
  }
  o.part = "xcvu13p-flga2577-2-e";  // a Xilinx part for oneAPI
  EXPECT_THROW(exporters::export_hls(a, dir.string(), o, x, 2), std::invalid_argument);
  o.part = "intel_s10sx_pac:pac_s10";  // BSP:variant is fine
  o.name = "9lives";
  EXPECT_THROW(exporters::export_hls(a, dir.string(), o, x, 2), std::invalid_argument);
  o.dialect = HlsDialect::Catapult;
  o.name = "ok";
  o.part = "lib ; rm";
  EXPECT_THROW(exporters::export_hls(a, dir.string(), o, x, 2), std::invalid_argument);
  o.part = "";
  o.clock_ns = -1;
  EXPECT_THROW(exporters::export_hls(a, dir.string(), o, x, 2), std::invalid_argument);
  EXPECT_FALSE(fs::exists(dir / "firmware"));
}

// Catapult: ac_fixed types, the CCS conventions, the Tcl flow; one zero sample without inputs.
TEST(HlsAcFixedExport, CatapultProjectFiles) {
  auto opt = options(3, {16, 12, 8, 5});
  opt.zero_weights = 0.5;
  const auto a = ac_expressible(hgqt::testing::random_mlp_archive(opt));
  const fs::path dir = fresh_dir("catapult_files");
  exporters::HlsOptions o;
  o.name = "cat_prj";
  o.dialect = HlsDialect::Catapult;
  o.clock_ns = 3.3;
  exporters::export_hls(a, dir.string(), o, {}, 0);
  for (const char* f :
       {"firmware/cat_prj.cpp", "firmware/cat_prj.h", "firmware/defines.h", "firmware/parameters.h",
        "firmware/weights/w0.h", "cat_prj_test.cpp", "build_prj.tcl", "README.md",
        "tb_data/tb_input_features.dat", "tb_data/tb_output_predictions.dat"})
    EXPECT_TRUE(fs::exists(dir / f)) << f;
  EXPECT_FALSE(fs::exists(dir / "CMakeLists.txt"));
  const std::string cpp = read_text(dir / "firmware/cat_prj.cpp");
  const std::string h = read_text(dir / "firmware/cat_prj.h");
  const std::string defines = read_text(dir / "firmware/defines.h");
  EXPECT_NE(cpp.find("#pragma hls_design top\nvoid CCS_BLOCK(cat_prj)(input_t x_in[N_INPUT], "
                     "result_t y_out[N_OUTPUT]) {"),
            std::string::npos);
  EXPECT_EQ(cpp.find("#pragma HLS"), std::string::npos);
  EXPECT_NE(h.find("#include <mc_scverify.h>"), std::string::npos);
  EXPECT_NE(h.find("#define CCS_MAIN(...) int main(__VA_ARGS__)"), std::string::npos);
  EXPECT_NE(defines.find("#include <ac_fixed.h>"), std::string::npos);
  EXPECT_NE(defines.find("typedef ac_fixed<"), std::string::npos);
  EXPECT_EQ(defines.find("ap_"), std::string::npos);
  EXPECT_EQ(read_text(dir / "firmware/weights/w0.h").find("ap_"), std::string::npos);
  const std::string tb = read_text(dir / "cat_prj_test.cpp");
  EXPECT_NE(tb.find("CCS_MAIN(int argc, char** argv) {"), std::string::npos);
  EXPECT_NE(tb.find("CCS_DESIGN(cat_prj)(in, out);"), std::string::npos);
  EXPECT_NE(tb.find("CCS_RETURN(mismatches == 0 ? 0 : 1);"), std::string::npos);
  EXPECT_EQ(count_of(tb.substr(tb.find("CCS_MAIN(int argc")), "return "),
            0u);  // main: CCS_RETURN only
  const std::string tcl = read_text(dir / "build_prj.tcl");
  size_t pos = 0;
  for (const char* line :
       {"set part {nangate-45nm_beh}", "set clock_period 3.3", "AC_TYPES_INCLUDE",
        "project new -name cat_prj_prj", "flow package require /SCVerify",
        "solution file add [file join $sfd firmware cat_prj.cpp]",
        "solution file add [file join $sfd cat_prj_test.cpp] -type C++ -exclude true", "go analyze",
        "solution design set cat_prj -top", "go compile", "Verify_orig_cxx_osci.mk",
        "solution library add", "go libraries", "-CLOCK_PERIOD", "go assembly",
        "-PIPELINE_INIT_INTERVAL 1", "go architect", "go extract", "Verify_rtl_v_msim.mk"}) {
    const size_t at = tcl.find(line, pos);
    EXPECT_NE(at, std::string::npos) << line << " (in this order)\n" << tcl;
    if (at != std::string::npos) pos = at;
  }
  EXPECT_NE(read_text(dir / "README.md").find("catapult -shell -file build_prj.tcl"),
            std::string::npos);
  const std::string tb_in = read_text(dir / "tb_data/tb_input_features.dat");
  EXPECT_EQ(count_of(tb_in, "\n"), 1u);
  EXPECT_EQ(count_of(tb_in, "0"), 16u);
}

// oneAPI: the plain kernel function, its SYCL single_task, the CMake targets.
TEST(HlsAcFixedExport, OneapiProjectFiles) {
  const auto a = ac_expressible(hgqt::testing::random_mlp_archive(options(3, {6, 4, 3})));
  const fs::path dir = fresh_dir("oneapi_files");
  exporters::HlsOptions o;
  o.name = "one_prj";
  o.dialect = HlsDialect::OneApi;
  o.clock_ns = 4;
  exporters::export_hls(a, dir.string(), o, hgqt::testing::random_inputs(a, 7, 1), 7);
  for (const char* f : {"firmware/one_prj.cpp", "firmware/one_prj.h", "firmware/defines.h",
                        "one_prj_test.cpp", "one_prj_sycl.cpp", "CMakeLists.txt", "README.md"})
    EXPECT_TRUE(fs::exists(dir / f)) << f;
  EXPECT_FALSE(fs::exists(dir / "build_prj.tcl"));
  const std::string cpp = read_text(dir / "firmware/one_prj.cpp");
  EXPECT_NE(cpp.find("\nvoid one_prj(input_t x_in[N_INPUT], result_t y_out[N_OUTPUT]) {\n"),
            std::string::npos);
  EXPECT_EQ(cpp.find("#pragma"), std::string::npos);
  const std::string defines = read_text(dir / "firmware/defines.h");
  EXPECT_NE(defines.find("#ifdef SYCL_LANGUAGE_VERSION"), std::string::npos);
  EXPECT_NE(defines.find("#include <sycl/ext/intel/ac_types/ac_fixed.hpp>"), std::string::npos);
  EXPECT_NE(defines.find("#include <ac_fixed.h>"), std::string::npos);
  const std::string sycl = read_text(dir / "one_prj_sycl.cpp");
  EXPECT_NE(sycl.find("#include \"firmware/one_prj.cpp\""), std::string::npos);
  EXPECT_NE(sycl.find("h.single_task<one_prj_kernel>("), std::string::npos);
  EXPECT_NE(sycl.find("one_prj(x_in, y_out);"), std::string::npos);
  EXPECT_NE(sycl.find("fpga_emulator_selector_v"), std::string::npos);
  const std::string tb = read_text(dir / "one_prj_test.cpp");
  EXPECT_NE(tb.find("#ifdef HGQT_SYCL"), std::string::npos);
  EXPECT_NE(tb.find("run_design(in, out);"), std::string::npos);
  EXPECT_NE(tb.find("int main(int argc, char** argv) {"), std::string::npos);
  const std::string cmake = read_text(dir / "CMakeLists.txt");
  for (const char* line :
       {"set(CMAKE_CXX_COMPILER icpx)", "project(one_prj CXX)", "set(FPGA_DEVICE \"Agilex7\"",
        "set(FPGA_CLOCK \"250MHz\"", "-fsycl -fintelfpga -qactypes", "add_executable(fpga_emu ",
        "-DFPGA_EMULATOR", "add_executable(report ", "-fsycl-link=early",
        "add_executable(fpga_sim ", "add_executable(fpga ", "-Xshardware",
        "-Xstarget=${FPGA_DEVICE}", "$ENV{AC_TYPES_INCLUDE}", "add_executable(csim "})
    EXPECT_NE(cmake.find(line), std::string::npos) << line;
  EXPECT_NE(read_text(dir / "README.md").find("make fpga_emu"), std::string::npos);
  EXPECT_EQ(count_of(read_text(dir / "tb_data/tb_output_predictions.dat"), "\n"), 7u);
}

// ------------------------------------------------------------------- end to end

// A small MLP (per-element types, mixed modes, a relu activation layer, pruned inputs) and a
// small CNN (conv2d same / valid / 1x1, max and avg pool, concatenate, flatten, dense), each as
// a Catapult and a oneAPI project (the oneAPI MLP through its CMakeLists.txt's csim target):
// 2,000 inputs, half of them scaled by 16, 0 mismatches.
TEST(HlsAcFixedExport, DenseAndCnnBitExact) {
  const auto mlp = ac_expressible(hgqt::testing::random_mlp_archive(options(1, {16, 12, 8, 5})));
  const auto cnn = ac_expressible(
      hgqt::testing::random_graph_archive(GraphKind::Cnn2d, options(2)));  // outputs vary
  std::vector<Case> cases = {{"cat_mlp", mlp, HlsDialect::Catapult, 11, false, {}},
                             {"one_mlp", mlp, HlsDialect::OneApi, 12, on_path_cmake(), {}},
                             {"cat_cnn", cnn, HlsDialect::Catapult, 13, false, {}},
                             {"one_cnn", cnn, HlsDialect::OneApi, 14, false, {}}};
  const auto dirs = check_cases(cases);
  const std::string cpp = read_text(dirs[2] / "firmware" / "cat_cnn.cpp");
  for (const char* fn : {"layer1_conv2d(", "layer2_pool(", "layer5_conv2d(", "layer6_pool("})
    EXPECT_NE(cpp.find(std::string("static void ") + fn), std::string::npos) << fn;
  EXPECT_NE(read_text(dirs[2] / "firmware" / "defines.h").find("layer6_coef_t"), std::string::npos);
}

// Table lookups index by slc<W>(0) (lut as Catapult, softmax as oneAPI), bit-exact as well.
TEST(HlsAcFixedExport, LutAndSoftmaxBitExact) {
  std::vector<Case> cases = {
      {"cat_lut",
       ac_expressible(hgqt::testing::random_graph_archive(GraphKind::Lut, options(1))),
       HlsDialect::Catapult,
       21,
       false,
       {}},
      {"one_softmax",
       ac_expressible(hgqt::testing::random_graph_archive(GraphKind::Softmax, options(1))),
       HlsDialect::OneApi,
       22,
       false,
       {}}};
  const auto dirs = check_cases(cases);
  EXPECT_NE(read_text(dirs[0] / "firmware" / "cat_lut.cpp").find(".slc<"), std::string::npos);
  EXPECT_NE(read_text(dirs[1] / "firmware" / "one_softmax.cpp").find(".slc<"), std::string::npos);
}
