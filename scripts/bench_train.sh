#!/usr/bin/env bash
# Build and run the training-step benchmark (bench/bench_train_step.cpp).
# Arguments are passed to build/bench_train_step. OMP_NUM_THREADS defaults to 1.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/build.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
build_dir="${HGQT_BUILD_DIR:-build}"
if [ ! -x "$build_dir/bench_train_step" ]; then
  echo "bench_train: $build_dir/bench_train_step was not built (bench/bench_train_step.cpp missing?)" >&2
  exit 1
fi
echo "bench_train: OMP_NUM_THREADS=$OMP_NUM_THREADS"
exec "$build_dir/bench_train_step" "$@"
