#!/usr/bin/env bash
# Knowledge-distillation comparison (BENCHMARKS.md): the quantized Fashion-MNIST MLP of
# configs/fashion_mnist_kd.yaml trained with the float CNN teacher (alpha 0.3, T 4) and without it
# (alpha 1: the distillation term has weight 0), over the same seeds, both held at the same EBOPs
# target by the beta controller. Prints one row per run and the means.
#   scripts/bench_kd.sh [SEED...]      (default seeds: 1 2 3)
# Needs the data (hgqt data fashion-mnist) and the teacher; makes the teacher when missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/build.sh >/dev/null
hgqt="${HGQT_BUILD_DIR:-build}/hgqt"
[ -f data/fashion_mnist.h5 ] || "$hgqt" data fashion-mnist
[ -f teachers/fmnist_cnn.ts ] || /usr/bin/python3 scripts/make_torchscript_teacher.py --out teachers/fmnist_cnn.ts
seeds=("$@")
[ ${#seeds[@]} -gt 0 ] || seeds=(1 2 3)
out=runs/bench_kd
mkdir -p "$out"
printf '%-8s %-5s %-10s %-12s %-10s %-12s\n' variant seed last_acc last_EBOPs best_acc best_EBOPs
rows=()
for seed in "${seeds[@]}"; do
  for variant in kd plain; do
    alpha=0.3
    [ "$variant" = plain ] && alpha=1
    run="$out/${variant}_s$seed"
    "$hgqt" train configs/fashion_mnist_kd.yaml --quiet --overwrite --out "$run" \
      --set train.seed="$seed" --set train.distillation.alpha="$alpha" >"$run.log" 2>&1 \
      || { echo "bench_kd: training failed, see $run.log" >&2; exit 1; }
    last=$("$hgqt" eval "$run/last.pt" --data data/fashion_mnist.h5 --features x_test --labels y_test)
    last_acc=$(sed -n 's/^accuracy: \([0-9.]*\).*/\1/p' <<<"$last")
    last_ebops=$(sed -n 's/.*EBOPs: \([0-9]*\).*/\1/p' <<<"$last")
    best_acc=$(/usr/bin/python3 -c "import json;print(json.load(open('$run/result.json'))['test_accuracy'])")
    best_ebops=$(/usr/bin/python3 -c "import json;print(int(json.load(open('$run/result.json'))['ebops']))")
    printf '%-8s %-5s %-10s %-12s %-10.4f %-12s\n' "$variant" "$seed" "$last_acc" "$last_ebops" "$best_acc" "$best_ebops"
    rows+=("$variant $last_acc $last_ebops $best_acc")
  done
done
printf '%s\n' "${rows[@]}" | /usr/bin/python3 -c '
import sys, statistics as st
rows = [l.split() for l in sys.stdin if l.strip()]
for v in ("kd", "plain"):
    r = [x for x in rows if x[0] == v]
    a = [float(x[1]) for x in r]; e = [float(x[2]) for x in r]; b = [float(x[3]) for x in r]
    sd = st.stdev(a) if len(a) > 1 else 0.0
    print(f"mean {v:6s} last-epoch test accuracy {st.mean(a):.4f} (sd {sd:.4f}) at {st.mean(e):,.0f} EBOPs; best-checkpoint {st.mean(b):.4f}")
'
