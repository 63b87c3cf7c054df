#!/usr/bin/env bash
# End-to-end demo: install dependencies, build, convert Fashion-MNIST, train the quantized MLP,
# and summarise the best checkpoint. Extra arguments are passed to `hgqt train`
# (e.g. scripts/quickstart.sh --set train.epochs=2).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$(date +%s)

bash scripts/install-deps.sh
bash scripts/build.sh

hgqt=build/hgqt
data=data/fashion_mnist.h5
run_dir=runs/quickstart

if [ -f "$data" ]; then
  echo "quickstart: $data already exists, skipping conversion"
else
  mkdir -p "$(dirname "$data")"
  "$hgqt" data fashion-mnist --out "$data"
fi

"$hgqt" train configs/fashion_mnist_mlp.yaml --out "$run_dir" --overwrite "$@"

elapsed=$(( $(date +%s) - start ))
cat <<MSG

quickstart: done.
  run directory : $run_dir/
  metrics       : $run_dir/metrics.jsonl (one JSON line per epoch)
  checkpoints   : $run_dir/best.pt, $run_dir/last.pt, Pareto front in $run_dir/pareto/ (index: $run_dir/pareto.json)
  evaluate again: $hgqt eval $run_dir --data $data
quickstart: elapsed $((elapsed / 60))m $((elapsed % 60))s
MSG
