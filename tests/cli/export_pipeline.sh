#!/usr/bin/env bash
# The CLI from training to bit-exact hardware on a tiny model: train, trace, emulate --check,
# export HLS / Verilog / QONNX, simulate both (scripts/export_check.sh), and the error paths a user
# meets (untraced archive, missing archive, wrong data shape).
# Usage: tests/cli/export_pipeline.sh HGQT_BINARY WORK_DIR
set -euo pipefail
hgqt="$(realpath "$1")"
work="$2"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
rm -rf "$work" && mkdir -p "$work"
data="$work/fm.h5"

fail() { echo "export pipeline: FAILED: $*" >&2; exit 1; }
# expect_error MESSAGE_PART COMMAND...: the command must exit non-zero and print MESSAGE_PART.
expect_error() {
  local want="$1"; shift
  local out rc=0
  out="$("$@" 2>&1)" || rc=$?
  [ "$rc" -ne 0 ] || fail "expected an error from: $*"
  grep -qF -- "$want" <<<"$out" || fail "expected '$want' in the error of: $* -- got: $out"
  echo "ok: error as expected: $(head -n1 <<<"$out")"
}

"$hgqt" data fashion-mnist --out "$data" >/dev/null
"$hgqt" train "$root/tests/cli/tiny_mlp.yaml" --out "$work/run" --quiet \
  --set "data.train.file=$data" --set "data.test.file=$data" | tail -n 3

# Untraced archives are refused by export, with the reason.
"$hgqt" archive "$work/run" --out "$work/untraced.hgqt"
expect_error "is not traced" "$hgqt" export "$work/untraced.hgqt" --format hls --out "$work/x"
expect_error "no such archive" "$hgqt" emulate "$work/missing.hgqt" --data "$data"
# Labels as features: wrong row size.
expect_error "the model takes 784" "$hgqt" emulate "$work/untraced.hgqt" --data "$data" --features y_test

HGQT="$hgqt" bash "$root/scripts/export_check.sh" "$work/run" "$data" 2000 2000

# Verilog registers for a clock period: the latency and the estimated path are printed; a
# period and a stage count together are refused.
out="$("$hgqt" export "$work/run/model.hgqt" --format verilog --clock-ns 1 --out "$work/rtl_clk" --tb-samples 10)"
grep -q "timing (estimated): latency" <<<"$out" || fail "no timing line in: $out"
grep -q '"latency_cycles"' "$work/rtl_clk/ports.json" || fail "no latency in ports.json"
expect_error "not both" "$hgqt" export "$work/run/model.hgqt" --format verilog --clock-ns 2 \
  --pipeline-stages 2 --out "$work/rtl_both"

# A truncated tensor file gives an archive error, not a crash.
cp -r "$work/run/model.hgqt" "$work/broken.hgqt"
truncate -s 100 "$work/broken.hgqt/tensors.h5"
expect_error "tensors.h5" "$hgqt" emulate "$work/broken.hgqt" --data "$data"
echo "export pipeline: passed"
