#!/usr/bin/env bash
# Installs the hgqt Python package (the pure-Python package and the _hgqt extension) where
# /usr/bin/python3 finds it. Builds first (scripts/build.sh).
#   scripts/install-python.sh            for the current user (python3 -m site --user-site)
#   scripts/install-python.sh --system   for everyone: cmake --install (/usr/local/lib/python3.X/dist-packages)
# Afterwards: /usr/bin/python3 -c "import hgqt; print(hgqt.__version__)"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_dir="${HGQT_BUILD_DIR:-build}"
bash scripts/build.sh
if ! ls "$build_dir"/python/hgqt/_hgqt*.so >/dev/null 2>&1; then
  echo "install-python: $build_dir/python/hgqt has no _hgqt extension (see the cmake warning above)" >&2
  exit 1
fi

if [ "${1:-}" = "--system" ]; then
  cmake --install "$build_dir" --component python
  exit 0
elif [ "$#" -gt 0 ]; then
  echo "install-python: unknown argument '$1' (use --system or nothing)" >&2
  exit 2
fi

site="$(/usr/bin/python3 -m site --user-site)"
mkdir -p "$site"
rm -rf "$site/hgqt.tmp"
cp -r "$build_dir/python/hgqt" "$site/hgqt.tmp"
rm -rf "$site/hgqt.tmp/__pycache__" "$site/hgqt"
mv "$site/hgqt.tmp" "$site/hgqt"
echo "install-python: installed hgqt into $site"
(cd / && /usr/bin/python3 -c "import hgqt; print('install-python: import hgqt works, version', hgqt.__version__)")
