#!/usr/bin/env bash
# Install the Debian packages hgqt needs and make OpenBLAS the active libblas.so.3.
# Idempotent: prints a single line when everything is already in place.
set -euo pipefail

PACKAGES=(
  build-essential cmake ccache git pkg-config
  libtorch-dev libopenblas0-openmp libopenblas-openmp-dev
  libyaml-cpp-dev nlohmann-json3-dev libhdf5-dev libspdlog-dev libcli11-dev
  libgtest-dev pybind11-dev python3-dev zlib1g-dev libonnx-dev libprotobuf-dev
  verilator yosys iverilog clang-format
  dataset-fashion-mnist
  python3-torch python3-numpy python3-h5py python3-pytest python3-onnx python3-matplotlib
)

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "install-deps: not root and sudo is not available" >&2
    exit 1
  fi
fi

is_installed() {
  local status
  status="$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)"
  [ "$status" = "install ok installed" ]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  is_installed "$pkg" || missing+=("$pkg")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  "${SUDO[@]}" apt-get update -qq
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# ---- Make OpenBLAS (OpenMP flavour) the libblas.so.3 / liblapack.so.3 in use.
multiarch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch 2>/dev/null || true)"
if [ -z "$multiarch" ]; then
  echo "install-deps: cannot determine the multiarch triplet; leaving BLAS alternatives alone" >&2
  exit 0
fi

# select_openblas NAME (libblas.so.3 | liblapack.so.3)
select_openblas() {
  local lib="$1" group="$1-$multiarch" query current target
  query="$(update-alternatives --query "$group" 2>/dev/null || true)"
  [ -n "$query" ] || return 0
  current="$(printf '%s\n' "$query" | awk '/^Value:/ {print $2; exit}')"
  case "$current" in
    *openblas*) return 0 ;;
  esac
  target="$(printf '%s\n' "$query" | awk '/^Alternative:/ {print $2}' | grep 'openblas-openmp' | head -n1 || true)"
  if [ -z "$target" ]; then
    target="$(printf '%s\n' "$query" | awk '/^Alternative:/ {print $2}' | grep 'openblas' | head -n1 || true)"
  fi
  if [ -z "$target" ] && [ -e "/usr/lib/$multiarch/openblas-openmp/$lib" ]; then
    target="/usr/lib/$multiarch/openblas-openmp/$lib"
  fi
  if [ -z "$target" ]; then
    return 0  # no OpenBLAS alternative registered for this library
  fi
  echo "install-deps: switching $lib from ${current:-<none>} to $target"
  "${SUDO[@]}" update-alternatives --quiet --set "$group" "$target"
}

select_openblas libblas.so.3
select_openblas liblapack.so.3

blas="$(update-alternatives --query "libblas.so.3-$multiarch" 2>/dev/null | awk '/^Value:/ {print $2; exit}' || true)"
case "$blas" in
  *openblas-openmp*) kind="OpenBLAS (openmp)" ;;
  *openblas-pthread*) kind="OpenBLAS (pthread)" ;;
  *openblas*) kind="OpenBLAS" ;;
  */blas/*) kind="reference BLAS (slow; install libopenblas0-openmp)" ;;
  "") kind="unknown"; blas="no libblas.so.3 alternative registered" ;;
  *) kind="other" ;;
esac
echo "install-deps: dependencies OK; active BLAS: $kind: $blas"
