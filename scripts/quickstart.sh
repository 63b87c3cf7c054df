#!/usr/bin/env bash
# End-to-end demo: install dependencies, build, convert Fashion-MNIST, train the quantized MLP,
# summarise the best checkpoint, then trace it and export it bit-exactly (archive, HLS, Verilog,
# QONNX), simulating the HLS project (g++) and the Verilog (Verilator) on the 10,000 test images
# plus 10,000 overflow-inducing inputs. Extra arguments are passed to `hgqt train`
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

bash scripts/export_check.sh "$run_dir" "$data" 0 10000

elapsed=$(( $(date +%s) - start ))
cat <<MSG

quickstart: done.
  run directory : $run_dir/
  metrics       : $run_dir/metrics.jsonl (one JSON line per epoch)
  checkpoints   : $run_dir/best.pt, $run_dir/last.pt, Pareto front in $run_dir/pareto/ (index: $run_dir/pareto.json)
  archive       : $run_dir/model.hgqt (traced; docs/model-format.md)
  exports       : $run_dir/export/hls (Vitis HLS project), $run_dir/export/verilog, $run_dir/export/model.onnx
  evaluate again: $hgqt eval $run_dir --data $data
  emulate       : $hgqt emulate $run_dir/model.hgqt --data $data --check
quickstart: elapsed $((elapsed / 60))m $((elapsed % 60))s
MSG
