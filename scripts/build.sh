#!/usr/bin/env bash
# Configure (once) and build hgqt in build/ (Release). ccache is used automatically when installed.
# Environment: HGQT_JOBS (default 2), HGQT_BUILD_DIR (default build), HGQT_BUILD_TYPE (default Release).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir="${HGQT_BUILD_DIR:-build}"
build_type="${HGQT_BUILD_TYPE:-Release}"
jobs="${HGQT_JOBS:-2}"

if [ ! -f "$build_dir/CMakeCache.txt" ]; then
  cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE="$build_type" "$@"
elif [ "$#" -gt 0 ]; then
  # Extra arguments are CMake cache options (-DFOO=bar): apply them to the existing tree.
  cmake -S . -B "$build_dir" "$@"
fi

cmake --build "$build_dir" -j "$jobs"

if [ -x "$build_dir/hgqt" ]; then
  echo "build: hgqt binary at $(pwd)/$build_dir/hgqt"
else
  echo "build: done (no hgqt binary: HGQT_BUILD_CLI is off or src/cli is empty); build tree at $(pwd)/$build_dir"
fi
