#!/usr/bin/env bash
# Today's adder trees against the shared adder graph, side by side, on one traced archive:
#   scripts/bench_adders.sh ARCHIVE DATA.h5 OUT_DIR [LABEL]
# For each of --const-mult shared and csd: `hgqt export --format verilog` (2 register stages,
# 2,000 testbench samples from DATA's x_test plus 1,000 overflow-inducing), the Verilator run
# against the emulator (`run_verilator.sh all`), and Yosys synth_xilinx (`hgqt resources`).
# Prints one markdown row per variant: exact EBOPs, adders, LUTs, CARRY, FFs, LUTs per exact
# EBOP, latency and estimated longest path between registers, Verilator mismatches and times.
# Environment: HGQT (default build/hgqt), TB_SAMPLES, TB_OVERFLOW, STAGES, CLOCK_NS (place the
# registers for this period instead of STAGES), FEATURES (default x_test), SKIP_YOSYS=1 (export
# and simulate only).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$#" -lt 3 ]; then
  echo "usage: scripts/bench_adders.sh ARCHIVE DATA.h5 OUT_DIR [LABEL]" >&2
  exit 2
fi
archive="$1" data="$2" out="$3" label="${4:-$(basename "$1")}"
hgqt="${HGQT:-build/hgqt}"
[ -x "$hgqt" ] || { echo "bench_adders: $hgqt is not built (scripts/build.sh)" >&2; exit 1; }
[ -e "$archive" ] || { echo "bench_adders: no archive '$archive'" >&2; exit 1; }
[ -f "$data" ] || { echo "bench_adders: no data file '$data'" >&2; exit 1; }
mkdir -p "$out"

rows=()
for mode in shared csd; do
  dir="$out/$mode"
  rm -rf "$dir"
  t0=$(date +%s.%N)
  "$hgqt" export "$archive" --format verilog --out "$dir" --const-mult "$mode" \
    $( [ -n "${CLOCK_NS:-}" ] && echo "--clock-ns $CLOCK_NS" || echo "--pipeline-stages ${STAGES:-2}" ) --tb-data "$data" --tb-features "${FEATURES:-x_test}" \
    --tb-samples "${TB_SAMPLES:-2000}" --tb-overflow "${TB_OVERFLOW:-1000}" >"$out/$mode.export.log"
  t1=$(date +%s.%N)
  cat "$out/$mode.export.log"
  sim="$(bash "$dir/run_verilator.sh" all 2>&1 | tail -n 3 || true)"
  counts="$(printf '%s\n' "$sim" | sed -n 's/.*verilator: \([0-9]*\) samples, \([0-9]*\) mismatches.*/\1 samples, \2 mismatches/p')"
  [ -n "$counts" ] || counts="simulation failed: $(printf '%s' "$sim" | tail -n 1)"
  if [ "${SKIP_YOSYS:-0}" = 1 ]; then
    echo "{}" >"$out/$mode.json"
  else
    "$hgqt" resources "$dir" --archive "$archive" --json "$out/$mode.json" >"$out/$mode.yosys.log"
  fi
  rows+=("$(/usr/bin/python3 - "$label" "$mode" "$out/$mode.json" "$counts" \
    "$(echo "$t1 - $t0" | bc)" "$out/shared/ports.json" "$dir/ports.json" <<'EOF'
import json, sys
label, mode, res, counts, t_export, shared_ports, own_ports = sys.argv[1:8]
own = json.load(open(own_ports))
timing = f"{own['latency_cycles']} / {own['timing']['estimated_critical_path_ns']:.2f} ns"
g = json.load(open(shared_ports)).get("adder_graphs", [])
r = json.load(open(res))
adders = sum(x["adders"] for x in g)
tree = sum(x["tree_adders"] for x in g)
shared = sum(x["shared_adders"] for x in g)
opt = sum(x["seconds"] for x in g)
depth = max((x["depth"] for x in g), default=0)
tdepth = max((x["tree_depth"] for x in g), default=0)
e = r.get("exact_ebops")
luts = r.get("luts")
f = lambda v: "-" if v is None else f"{v:,}" if isinstance(v, int) else f"{v:,.0f}"
ratio = "-" if not (e and luts is not None) else f"{luts / e:.2f}"
if mode == "csd":
    add, dep, opt_s = f"{tree:,} (trees)", f"{tdepth}", "-"
else:
    add, dep, opt_s = f"{adders:,} ({shared:,} shared)", f"{depth}", f"{opt:.2f} s"
ys = r.get("yosys_seconds")
print(f"| {label} | {mode} | {f(e)} | {add} | {dep} | {f(luts)} | {f(r.get('carry'))} | "
      f"{f(r.get('ffs'))} | {ratio} | {timing} | {counts} | {opt_s} | {float(t_export):.1f} s | "
      f"{'-' if ys is None else f'{ys:.0f} s'} |")
EOF
)")
done
echo
echo "| model | const-mult | exact EBOPs | adders | adder levels | LUTs | CARRY | FFs | LUTs/EBOP | latency / est. path | Verilator | optimizer | export | Yosys |"
echo "|---|---|---:|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
