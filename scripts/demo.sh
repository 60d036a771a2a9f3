#!/usr/bin/env bash
# The main job: set everything up, then run the consultation on a bundled
# photo (an ISIC 2018 test image the default model never saw) with the
# default model, models/skingpt-mini. SKINGPT_MODEL=DIR uses another model
# folder (vision.gguf + llm.gguf); extra arguments go to `skingpt describe`
# (e.g. --lang ja, --json, --html report.html).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh build
./build/skingpt describe examples/test_melanoma_ISIC_0034529.jpg "$@"
