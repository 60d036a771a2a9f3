#!/usr/bin/env bash
# Installs every Debian package the build, tests and tools need, then builds.
# Safe to run again. Usage: bash scripts/setup.sh [build-dir]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
PKGS=(build-essential cmake ninja-build pkg-config libgtest-dev clang libclang-rt-14-dev
      libjpeg62-turbo-dev libpng-dev libwebp-dev libheif-dev libexif-dev nlohmann-json3-dev
      libtorch-dev libopenblas0 strace libcpp-httplib-dev libsqlite3-dev chromium)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
# Node runs the openai-client test of `skingpt serve` (tests/js); a node
# installed some other way (e.g. NodeSource, which bundles npm) is kept.
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j "$(nproc)"
