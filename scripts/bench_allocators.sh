#!/usr/bin/env bash
# The training-step benchmark under each allocator a Debian machine offers, side by side:
# glibc malloc with its defaults (HGQT_MALLOC=default), glibc tuned by hgqt (the default of every
# entry point, util::tune_allocator), and jemalloc / tcmalloc through LD_PRELOAD when installed
# (apt-get install libjemalloc2 libtcmalloc-minimal4; measurement only, hgqt does not need them).
# Arguments are passed to build/bench_train_step (default: --rounds 5 --seconds 0.3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/build.sh >/dev/null
bench="${HGQT_BUILD_DIR:-build}/bench_train_step"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
args=("$@")
[ "${#args[@]}" -gt 0 ] || args=(--rounds 5 --seconds 0.3)
multiarch="$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)"

run() {
  local label="$1"
  shift
  echo "== $label"
  env "$@" "$bench" "${args[@]}" | awk '/^ +[0-9]+ /'
}

run "glibc malloc, defaults (HGQT_MALLOC=default)" HGQT_MALLOC=default
run "glibc malloc, tuned by hgqt (util::tune_allocator)"
for lib in "libjemalloc.so.2" "libtcmalloc_minimal.so.4"; do
  path="/usr/lib/$multiarch/$lib"
  if [ -f "$path" ]; then
    run "$lib (LD_PRELOAD)" HGQT_MALLOC=default LD_PRELOAD="$path"
  else
    echo "== $lib: not installed, skipped"
  fi
done
echo "columns: batch, float ms/step, hgqt ms/step, ATen-path ms/step, hgqt/float, ATen/float"
