#!/usr/bin/env bash
# Runs a node test against a `skingpt serve` on a free loopback port with a
# tiny random-weight model:
#   openai  tests/js/openai.test.mjs — the official `openai` npm client, unchanged
#   web     tests/js/web.test.mjs — the web app in Debian's chromium via Playwright
# Usage: run.sh openai|web SKINGPT_BINARY SHARED_DIR [WORK_DIR]
# Exit 77 (CTest: skipped) only when node is not installed (and, for web,
# when chromium is not installed or node is older than 20). The npm packages
# are installed once into WORK_DIR (npm ci with tests/js/package-lock.json and
# a local cache), so later runs need no network.
set -euo pipefail
MODE=$1
BIN=$(realpath "$2")
SHARED=$(realpath "$3")
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
WORK=${4:-$(dirname "$BIN")/js-test}
case "$MODE" in openai|web) ;; *) echo "usage: run.sh openai|web SKINGPT_BINARY SHARED_DIR [WORK_DIR]"; exit 2;; esac

if ! command -v node >/dev/null 2>&1; then
  echo "SKIP: node is not installed, so the npm clients cannot run (apt-get install nodejs npm)"
  exit 77
fi
if [ "$MODE" = web ]; then
  CHROMIUM=${SKINGPT_CHROMIUM:-/usr/bin/chromium}
  if [ ! -x "$CHROMIUM" ]; then
    echo "SKIP: $CHROMIUM is not installed (apt-get install chromium), so the browser test cannot run"
    exit 77
  fi
  if [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
    echo "SKIP: playwright-core needs node >= 20, this is $(node --version)"
    exit 77
  fi
fi
mkdir -p "$WORK"
# One install at a time (the two tests may run in parallel under ctest -j).
exec 9> "$WORK/.lock"
flock 9
cp "$HERE/package.json" "$HERE/package-lock.json" "$HERE/openai.test.mjs" "$HERE/web.test.mjs" "$WORK/"
if ! cmp -s "$HERE/package-lock.json" "$WORK/node_modules/.package-lock.json.installed" 2>/dev/null; then
  (cd "$WORK" && npm ci --no-audit --no-fund --loglevel=error --cache "$WORK/.npm-cache")
  cp "$HERE/package-lock.json" "$WORK/node_modules/.package-lock.json.installed"
fi

MODEL="$WORK/model"
if [ ! -f "$MODEL/llm.gguf" ] || [ ! -f "$MODEL/vision.gguf" ]; then
  mkdir -p "$MODEL"
  "$BIN" synth --arch llama --dim 64 --layers 2 --heads 4 --ffn 128 --vocab 32000 --type f32 \
    --tokenizer "$SHARED/tokenizer/tokenizer.model" -o "$MODEL/llm.gguf" >/dev/null
  "$BIN" synth --arch vision --type f32 --image-size 224 --patch 32 --vit-width 32 --vit-depth 1 --vit-heads 2 \
    --vit-ffn 64 --qf-width 32 --qf-depth 2 --qf-heads 2 --qf-ffn 64 --queries 4 --dim 64 -o "$MODEL/vision.gguf" >/dev/null
fi
flock -u 9

RUN=$(mktemp -d)
KEY=js-test-key-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
echo "$KEY" > "$RUN/key"
"$BIN" serve --port 0 --model "$MODEL" --data-dir "$RUN/data" --api-key-file "$RUN/key" -t 1 -n 16 \
  > "$RUN/out" 2> "$RUN/err" &
PID=$!
cleanup() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; rm -rf "$RUN"; }
trap cleanup EXIT
for _ in $(seq 1 300); do
  grep -q '^listening on' "$RUN/out" 2>/dev/null && break
  kill -0 "$PID" 2>/dev/null || { echo "the server exited:"; cat "$RUN/err"; exit 1; }
  sleep 0.1
done
URL=$(sed -n 's/^listening on \(http:[^ ]*\).*/\1/p' "$RUN/out")
[ -n "$URL" ] || { echo "the server did not start:"; cat "$RUN/err"; exit 1; }
echo "server at $URL"
if [ "$MODE" = openai ]; then
  SKINGPT_URL="$URL" SKINGPT_KEY="$KEY" SKINGPT_EXAMPLE="$REPO/examples/nevus_ISIC_0024306.jpg" \
    node "$WORK/openai.test.mjs"
else
  SKINGPT_URL="$URL" SKINGPT_KEY="$KEY" SKINGPT_EXAMPLE="$REPO/examples/melanoma_ISIC_0024400.jpg" \
    SKINGPT_CHROMIUM="$CHROMIUM" SKINGPT_SCREENSHOT="$WORK/web-report.png" node "$WORK/web.test.mjs"
  echo "screenshot: $WORK/web-report.png"
fi
