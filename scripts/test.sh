#!/usr/bin/env bash
# The tests from a fresh clone: sets up .venv when needed (scripts/setup-env.sh); installs
# Chromium and its driver for the results-page tests where they are missing and apt-get can
# (as root); type-checks; runs pytest. Binarized MNIST and Fashion-MNIST are read from
# GENVAR_DATA_DIR (default ../shared/data). Extra arguments go to pytest.
#   ./scripts/test.sh            # everything
#   ./scripts/test.sh -k sweeps  # some
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup-env.sh"
cd "$ROOT"
if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "setup: installing chromium and chromium-driver (the results-page tests)" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
            >/dev/null 2>&1 || echo "setup: apt-get could not install chromium; the browser tests will say so" >&2
    else
        echo "setup: no chromium/chromedriver: the browser tests skip (apt-get install chromium chromium-driver)" >&2
    fi
fi
# A call to a torch function that does not exist fails here, with or without a GPU.
python -m mypy
GENVAR_DATA_DIR="${GENVAR_DATA_DIR:-../shared/data}" python -m pytest -q "$@"
