#!/usr/bin/env bash
# Install dependencies, build, run the C++ test suite (ctest) and the Python tests (if any).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-deps.sh
bash scripts/build.sh

build_dir="${HGQT_BUILD_DIR:-build}"
ctest --test-dir "$build_dir" --output-on-failure -j1 --timeout 1800

if [ -d tests/python ] && \
   [ -n "$(find tests/python -name 'test_*.py' -o -name '*_test.py' | head -n1)" ]; then
  rc=0
  /usr/bin/python3 -m pytest -q tests/python || rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then   # 5 = no tests collected
    echo "test: pytest failed (exit $rc)" >&2
    exit "$rc"
  fi
fi

echo "test: all tests passed"
