#!/usr/bin/env bash
# The main job: set everything up, then ask the model about a bundled photo.
# Until the trained default model ships (models/skingpt-mini), this builds a
# small RANDOM-WEIGHT model with the real Llama-2 tokenizer, so it shows the
# whole pipeline working end to end — its words are noise, not medicine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh build
SHARED=${SKINGPT_SHARED:-../shared}
MODEL=${SKINGPT_MODEL:-}
if [ -z "$MODEL" ]; then
  MODEL=build/random-model
  if [ ! -f "$MODEL/llm.gguf" ] || [ ! -f "$MODEL/vision.gguf" ]; then
    mkdir -p "$MODEL"
    ./build/skingpt synth --arch llama --dim 256 --layers 4 --heads 4 --ffn 688 --vocab 32000 --type q8_0 \
      --tokenizer "$SHARED/tokenizer/tokenizer.model" -o "$MODEL/llm.gguf"
    ./build/skingpt synth --arch vision --type f16 --image-size 224 --patch 14 --vit-width 192 --vit-depth 4 \
      --vit-heads 3 --vit-ffn 768 --qf-width 128 --qf-depth 2 --qf-heads 2 --qf-ffn 512 --queries 32 --dim 256 \
      -o "$MODEL/vision.gguf"
  fi
  echo "NOTE: random-weight model (no trained default model yet) — the answer below is noise." >&2
fi
./build/skingpt ask --model "$MODEL" --image examples/melanoma_ISIC_0024400.jpg --seed 1 -n 60 \
  "What skin disease is shown in this image?"
