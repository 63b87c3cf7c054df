#!/usr/bin/env bash
# From a trained run to bit-exact hardware, checked end to end:
#   trace (calibration on the run's training features) -> archive -> emulator (checked against
#   the LibTorch float64 forward) -> HLS project (C simulation with g++) -> Verilog (Verilator)
#   -> QONNX, with testbenches of N test samples plus M overflow-inducing ones.
# Usage: scripts/export_check.sh RUN_DIR DATA.h5 [TEST_SAMPLES (0: all)] [OVERFLOW_SAMPLES]
# The HLS simulation uses the vendor ap_types headers when AP_TYPES_INCLUDE names their folder,
# else hgqt's ap_fixed simulation header (tests/ap_types_sim). Exits non-zero on any mismatch.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

run_dir="${1:?usage: scripts/export_check.sh RUN_DIR DATA.h5 [TEST_SAMPLES] [OVERFLOW_SAMPLES]}"
data="${2:?usage: scripts/export_check.sh RUN_DIR DATA.h5 [TEST_SAMPLES] [OVERFLOW_SAMPLES]}"
samples="${3:-0}"
overflow="${4:-10000}"
hgqt="${HGQT:-build/hgqt}"
cxx="${CXX:-g++}"
ap_include="${AP_TYPES_INCLUDE:-$PWD/tests/ap_types_sim}"
archive="$run_dir/model.hgqt"
export_dir="$run_dir/export"

step() { printf '\n== %s\n' "$*"; }

step "trace: calibrate on the training features"
"$hgqt" trace "$run_dir" --data "$data" --out "$archive"

step "emulate: integer emulator on the test set, checked against LibTorch"
"$hgqt" emulate "$archive" --data "$data" --samples "$samples" --check | tee "$run_dir/emulate.log"
"$hgqt" emulate "$archive" --data "$data" --samples "$samples" --scale 8 --check | tee -a "$run_dir/emulate.log"

step "export: HLS, Verilog, QONNX"
rm -rf "$export_dir"
tb=(--tb-data "$data" --tb-samples "$samples" --tb-overflow "$overflow")
"$hgqt" export "$archive" --format hls --out "$export_dir/hls" "${tb[@]}"
"$hgqt" export "$archive" --format verilog --out "$export_dir/verilog" --pipeline-stages 2 "${tb[@]}"
"$hgqt" export "$archive" --format qonnx --out "$export_dir/model.onnx" --allow-widening --rnd-offset

step "HLS C simulation (g++, ap_fixed from $ap_include)"
(
  cd "$export_dir/hls"
  t0=$(date +%s)
  "$cxx" -O1 -std=c++17 -I"$ap_include" myproject_test.cpp firmware/myproject.cpp -o myproject_tb
  echo "compiled in $(( $(date +%s) - t0 )) s"
  ./myproject_tb > csim.log 2>&1 || { tail -n 20 csim.log; exit 1; }
  grep -E 'hls testbench:' csim.log
)

step "Verilog simulation (Verilator)"
(
  cd "$export_dir/verilog"
  t0=$(date +%s)
  bash run_verilator.sh all > verilator.log 2>&1 || { tail -n 40 verilator.log; exit 1; }
  grep -E 'verilator:' verilator.log
  echo "built and ran in $(( $(date +%s) - t0 )) s"
)

hls_line=$(grep -E 'hls testbench: [0-9]+ samples' "$export_dir/hls/csim.log" | tail -n1)
vl_line=$(grep -E 'verilator: [0-9]+ samples' "$export_dir/verilog/verilator.log" | tail -n1)
printf '\nexport check (%s):\n  %s\n  %s\n' "$run_dir" "$hls_line" "$vl_line"
for line in "$hls_line" "$vl_line"; do
  case "$line" in
    *" 0 mismatches"*) ;;
    *) echo "export check: FAILED: $line" >&2; exit 1 ;;
  esac
done
echo "  LibTorch float64 vs emulator: $(grep -c 'float64: 0 mismatches' "$run_dir/emulate.log") of 2 runs with 0 mismatches"
