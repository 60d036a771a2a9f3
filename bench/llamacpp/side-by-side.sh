#!/usr/bin/env bash
# skingpt and llama.cpp on the same GGUF files, alternating file by file so
# both see the same machine (these VMs drift from minute to minute):
#
#   bash bench/llamacpp/side-by-side.sh [-r ROUNDS] FILE.gguf ...
#
# Prints one JSON line per engine, file and round: skingpt (weights loaded),
# skingpt --mmap (first round only) and llama.cpp. Needs `npm ci` in
# bench/llamacpp and a built build/skingpt; run it on an idle machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=2
if [ "${1:-}" = -r ]; then ROUNDS=$2; shift 2; fi
[ $# -ge 1 ] || { echo "usage: side-by-side.sh [-r ROUNDS] FILE.gguf ..." >&2; exit 2; }
[ -x build/skingpt ] || { echo "build first: bash scripts/setup.sh build" >&2; exit 1; }
[ -d bench/llamacpp/node_modules ] || { echo "first: (cd bench/llamacpp && npm ci)" >&2; exit 1; }
for round in $(seq "$ROUNDS"); do
  for f in "$@"; do
    F=$(realpath "$f")
    echo "$round skingpt $(build/skingpt bench -m "$F" -t 2 -r 3 --json)"
    [ "$round" = 1 ] && echo "$round skingpt-mmap $(build/skingpt bench -m "$F" -t 2 -r 3 --json --mmap)"
    echo "$round llama.cpp $(cd bench/llamacpp && node bench.mjs "$F" -t 2 -r 3 --json)"
  done
done
