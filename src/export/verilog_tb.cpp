// The Verilator testbench of the Verilog exporter: C++ source, build script and Makefile.
#include <string>

#include "verilog_internal.h"

namespace hgqt::exporters::detail {

namespace {
// A C++ array initializer of one field of the bus elements that are present.
template <typename F>
std::string table(const std::vector<VerilogBusElement>& els, F field) {
  std::string s = "{";
  int count = 0;
  for (const auto& e : els) {
    if (e.type.width == 0) continue;
    s += (count ? "," : "") + std::string(count % 16 == 0 ? "\n    " : " ") + field(e);
    ++count;
  }
  if (count == 0) s += "0";  // keeps the array non-empty; never read
  return s + "}";
}

int64_t present(const std::vector<VerilogBusElement>& els) {
  int64_t n = 0;
  for (const auto& e : els) n += e.type.width > 0;
  return n;
}

// The part of the testbench that does not depend on the design.
const char* kTestbenchBody = R"TB(
typedef __int128 i128;
typedef unsigned __int128 u128;

// Bus words (32 bits each) to and from Verilator's port types: integers up to 64 bits, VlWide
// above.
template <typename T>
void put_port(T& port, const std::vector<uint32_t>& w) {
  uint64_t v = w[0];
  if (w.size() > 1) v |= static_cast<uint64_t>(w[1]) << 32;
  port = static_cast<T>(v);
}
template <std::size_t N>
void put_port(VlWide<N>& port, const std::vector<uint32_t>& w) {
  for (std::size_t i = 0; i < N; ++i) port.at(i) = w[i];
}
template <typename T>
void get_port(const T& port, std::vector<uint32_t>& w) {
  const uint64_t v = static_cast<uint64_t>(port);
  w[0] = static_cast<uint32_t>(v);
  if (w.size() > 1) w[1] = static_cast<uint32_t>(v >> 32);
}
template <std::size_t N>
void get_port(const VlWide<N>& port, std::vector<uint32_t>& w) {
  for (std::size_t i = 0; i < N; ++i) w[i] = port.at(i);
}

void set_field(std::vector<uint32_t>& w, int lsb, int width, i128 m) {
  const u128 u = static_cast<u128>(m);
  for (int b = 0; b < width; ++b) {
    const int bit = lsb + b;
    if ((u >> b) & 1)
      w[bit / 32] |= 1u << (bit % 32);
    else
      w[bit / 32] &= ~(1u << (bit % 32));
  }
}

i128 get_field(const std::vector<uint32_t>& w, int lsb, int width, bool is_signed) {
  u128 u = 0;
  for (int b = 0; b < width; ++b) {
    const int bit = lsb + b;
    if ((w[bit / 32] >> (bit % 32)) & 1) u |= static_cast<u128>(1) << b;
  }
  if (is_signed && width < 128 && ((u >> (width - 1)) & 1)) u |= ~static_cast<u128>(0) << width;
  return static_cast<i128>(u);
}

std::string to_text(i128 v) {
  if (v == 0) return "0";
  const bool neg = v < 0;
  std::string s;
  while (v != 0) {
    const int d = static_cast<int>(v % 10);
    s.insert(s.begin(), static_cast<char>('0' + (d < 0 ? -d : d)));
    v /= 10;
  }
  return neg ? "-" + s : s;
}

// One sample per line, `count` decimal integers each.
std::vector<std::vector<i128>> read_rows(const char* path, int count) {
  std::ifstream in(path);
  if (!in) {
    std::fprintf(stderr, "tb: cannot open %s\n", path);
    std::exit(2);
  }
  std::vector<std::vector<i128>> rows;
  std::string line;
  while (std::getline(in, line)) {
    std::vector<i128> row;
    std::size_t p = 0;
    while (true) {
      while (p < line.size() && (line[p] == ' ' || line[p] == '\t' || line[p] == '\r')) ++p;
      if (p >= line.size()) break;
      const bool neg = line[p] == '-';
      if (neg) ++p;
      i128 v = 0;
      const std::size_t start = p;
      while (p < line.size() && line[p] >= '0' && line[p] <= '9') v = v * 10 + (line[p++] - '0');
      if (p == start) {
        std::fprintf(stderr, "tb: %s line %zu: not an integer\n", path, rows.size() + 1);
        std::exit(2);
      }
      row.push_back(neg ? -v : v);
    }
    if (static_cast<int>(row.size()) != count) {
      std::fprintf(stderr, "tb: %s line %zu: %zu values, expected %d\n", path, rows.size() + 1,
                   row.size(), count);
      std::exit(2);
    }
    rows.push_back(row);
  }
  return rows;
}
}  // namespace

int main(int argc, char** argv) {
  const char* in_path = argc > 1 ? argv[1] : "tb_data/tb_input_mantissas.dat";
  const char* out_path = argc > 2 ? argv[2] : "tb_data/tb_output_mantissas.dat";
  const auto inputs = read_rows(in_path, kNumIn);
  const auto expected = read_rows(out_path, kNumOut);
  if (inputs.size() != expected.size()) {
    std::fprintf(stderr, "tb: %zu input rows but %zu output rows\n", inputs.size(),
                 expected.size());
    return 2;
  }
  const std::size_t n = inputs.size();

  VerilatedContext ctx;
  ctx.randReset(2);  // registers start with random bits: the valid pipeline must not need them
  TopModule top{&ctx};
  std::vector<uint32_t> in_words((kInBits + 31) / 32, 0), out_words((kOutBits + 31) / 32, 0);
  uint64_t junk = 0x9e3779b97f4a7c15ull;
  auto random_input = [&]() {
    for (auto& w : in_words) {
      junk ^= junk << 13;
      junk ^= junk >> 7;
      junk ^= junk << 17;
      w = static_cast<uint32_t>(junk);
    }
    if (kInBits % 32) in_words.back() &= (1u << (kInBits % 32)) - 1;
  };
  auto tick = [&](int level) {
    top.clk = level;
    top.eval();
  };

  // Synchronous reset for a few cycles.
  top.rst = 1;
  top.valid_in = 0;
  for (int c = 0; c < 3; ++c) {
    tick(0);
    tick(1);
  }
  top.rst = 0;

  std::size_t next_in = 0, next_out = 0, mismatches = 0, errors = 0;
  std::vector<long> in_cycle(n, -1);
  auto check = [&](long cycle) {
    if (next_out >= n) {
      std::fprintf(stderr, "tb: cycle %ld: valid_out without a pending sample\n", cycle);
      ++errors;
      return;
    }
    if (cycle - in_cycle[next_out] != (kStages == 0 ? 0 : kStages - 1)) {
      if (errors++ < 10)
        std::fprintf(stderr, "tb: sample %zu came out %ld cycle(s) after it went in, expected %d\n",
                     next_out, cycle - in_cycle[next_out] + (kStages == 0 ? 0 : 1), kStages);
    }
    get_port(top.data_out, out_words);
    bool bad = false;
    for (int e = 0; e < kNumOut; ++e) {
      const i128 got = get_field(out_words, kOutLsb[e], kOutWidth[e], kOutSigned[e]);
      const i128 want = expected[next_out][e];
      if (got != want) {
        bad = true;
        if (mismatches < 10)
          std::fprintf(stderr, "tb: sample %zu output element %d: got %s, want %s\n", next_out,
                       kOutIndex[e], to_text(got).c_str(), to_text(want).c_str());
      }
    }
    mismatches += bad;
    ++next_out;
  };

  const long limit = static_cast<long>(n + n / 4) + kStages + 16;
  for (long cycle = 0; next_out < n && cycle < limit; ++cycle) {
    const bool idle = cycle % 5 == 3;  // idle cycles carry random data with valid_in low
    if (next_in < n && !idle) {
      for (int e = 0; e < kNumIn; ++e)
        set_field(in_words, kInLsb[e], kInWidth[e], inputs[next_in][e]);
      top.valid_in = 1;
      in_cycle[next_in++] = cycle;
    } else {
      random_input();
      top.valid_in = 0;
    }
    put_port(top.data_in, in_words);
    tick(0);
    if (kStages == 0 && top.valid_out) check(cycle);
    if (kStages == 0 && top.valid_out != top.valid_in) ++errors;
    tick(1);
    if (kStages > 0 && top.valid_out) check(cycle);
  }
  top.final();
  if (next_out != n) {
    std::fprintf(stderr, "tb: only %zu of %zu samples came out\n", next_out, n);
    ++errors;
  }
  std::printf("verilator: %zu samples, %zu mismatches\n", n, mismatches);
  if (errors) std::printf("verilator: %zu protocol errors (valid / latency)\n", errors);
  return mismatches || errors ? 1 : 0;
}
)TB";
}  // namespace

std::string verilator_testbench(const VerilogLayout& lay, const VerilogOptions& o, int latency) {
  std::string s;
  s += "// Verilator testbench of " + o.name + " (generated by hgqt): streams every sample of\n";
  s += "// tb_data/tb_input_mantissas.dat through the design, one per cycle with idle cycles in\n";
  s += "// between, and compares data_out bit-exactly with tb_data/tb_output_mantissas.dat.\n";
  s += "// Usage: V" + o.name + "_tb [input.dat] [expected_output.dat]\n";
  s += "#include <cstdint>\n#include <cstdio>\n#include <cstdlib>\n#include <fstream>\n";
  s += "#include <string>\n#include <vector>\n\n";
  s += "#include \"V" + o.name + ".h\"\n#include \"verilated.h\"\n\n";
  s += "namespace {\n";
  s += "typedef V" + o.name + " TopModule;\n";
  s += "constexpr int kStages = " + std::to_string(latency) + ";  // latency in cycles\n";
  s += "constexpr int kInBits = " + std::to_string(std::max<int64_t>(lay.input_bits, 1)) + ";\n";
  s += "constexpr int kOutBits = " + std::to_string(std::max<int64_t>(lay.output_bits, 1)) + ";\n";
  s += "constexpr int kNumIn = " + std::to_string(present(lay.inputs)) + ";\n";
  s += "constexpr int kNumOut = " + std::to_string(present(lay.outputs)) + ";\n";
  auto lsb = [](const VerilogBusElement& e) { return std::to_string(e.lsb); };
  auto width = [](const VerilogBusElement& e) { return std::to_string(e.type.width); };
  auto sgn = [](const VerilogBusElement& e) { return std::string(e.type.is_signed ? "1" : "0"); };
  auto index = [](const VerilogBusElement& e) { return std::to_string(e.index); };
  s += "const int kInLsb[] = " + table(lay.inputs, lsb) + ";\n";
  s += "const int kInWidth[] = " + table(lay.inputs, width) + ";\n";
  s += "const int kOutLsb[] = " + table(lay.outputs, lsb) + ";\n";
  s += "const int kOutWidth[] = " + table(lay.outputs, width) + ";\n";
  s += "const bool kOutSigned[] = " + table(lay.outputs, sgn) + ";\n";
  s += "const int kOutIndex[] = " + table(lay.outputs, index) + ";\n";
  s += kTestbenchBody;
  return s;
}

std::string verilator_script(const VerilogOptions& o, bool large) {
  const std::string& n = o.name;
  const std::string opt = large ? "-O0" : "-O1";
  std::string s;
  s += "#!/usr/bin/env bash\n";
  s += "# Builds the Verilator testbench of " + n + " and runs it (generated by hgqt).\n";
  s += "# Usage: ./run_verilator.sh [build|run|all]   (default all)\n";
  s += "# Environment: VERILATOR (default verilator), JOBS (default 2), CXX_OPT (C++\n";
  s += "# optimization of the model, default " + opt +
       (large ? ": a large design, whose C++ builds three times faster than at -O1" : "") +
       "), OBJCACHE (default ccache when installed).\n";
  s += "set -euo pipefail\n";
  s += "cd \"$(dirname \"${BASH_SOURCE[0]}\")\"\n";
  s += "what=\"${1:-all}\"\n";
  s += "if [ \"$what\" = build ] || [ \"$what\" = all ]; then\n";
  s += "  if [ -z \"${OBJCACHE+x}\" ] && command -v ccache >/dev/null 2>&1; then export "
       "OBJCACHE=ccache; fi\n";
  s += "  opt=\"${CXX_OPT:-" + opt + "}\"\n";
  // Verilator 5's DFG optimizer miscompiled some generated CNN designs (5.006: wrong outputs
  // that -O0, -fno-dfg and Icarus Verilog do not show); older versions have no DFG pass.
  s += "  vl=\"${VERILATOR:-verilator}\"\n";
  s += "  dfg=\"\"\n";
  s += "  case \"$(\"$vl\" --version 2>/dev/null || true)\" in \"Verilator \"[5-9]*) dfg=-fno-dfg "
       ";; esac\n";
  s += "  \"$vl\" --cc --exe --build -j \"${JOBS:-2}\" -O1 $dfg "
       "--x-assign fast --x-initial unique \\\n";
  s += "    --output-split 20000 --output-split-cfuncs 20000 -Wno-fatal -Wno-WIDTH "
       "-Wno-UNUSED \\\n";
  s += "    -MAKEFLAGS \"OPT_FAST=$opt OPT_SLOW=-O0 OPT_GLOBAL=-O1\" \\\n";
  s += "    --top-module " + n + " -o V" + n + "_tb " + n + ".v tb_" + n + ".cpp\n";
  s += "fi\n";
  s += "if [ \"$what\" = run ] || [ \"$what\" = all ]; then\n";
  s += "  ./obj_dir/V" + n + "_tb tb_data/tb_input_mantissas.dat tb_data/tb_output_mantissas.dat\n";
  s += "fi\n";
  return s;
}

std::string verilator_makefile(const VerilogOptions& o) {
  std::string s;
  s += "# Verilator simulation of " + o.name + " (generated by hgqt).\n";
  s += "#   make        build and run the testbench\n";
  s += "#   make build  build only;  make run  run a built testbench;  make clean\n";
  s += ".PHONY: all build run clean\n";
  s += "all:\n\tbash run_verilator.sh all\n";
  s += "build:\n\tbash run_verilator.sh build\n";
  s += "run:\n\tbash run_verilator.sh run\n";
  s += "clean:\n\trm -rf obj_dir\n";
  return s;
}

}  // namespace hgqt::exporters::detail
