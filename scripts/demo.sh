#!/usr/bin/env bash
# The main job from a fresh clone: sets up .venv when needed (scripts/setup-env.sh), then
# trains and scores every method on the embedded digits (one seed, the quick profile) and
# writes the tables, figures and results pages under OUT (default my-results/).
#   ./scripts/demo.sh            # then open my-results/index.html
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup-env.sh"
cd "$ROOT"
OUT="${OUT:-my-results}"
python -m genvar_bench run --config sweeps/demo.yaml --out "$OUT"
python -m genvar_bench report --out "$OUT"
echo "the results: $OUT/index.html (tables in $OUT/*/*/results.md)" >&2
