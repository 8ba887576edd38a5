#!/usr/bin/env bash
# Sourced by scripts/demo.sh and scripts/test.sh: makes .venv (Python 3.10+; torch first and
# alone, then the package built in place with --no-build-isolation, so that no CUDA torch is
# pulled) and skips all of it when nothing it depends on changed since (an install stamp).
# GENVAR_VENV names another folder; PYTHON another interpreter.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GENVAR_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.genvar-installed"
want="$(cd "$ROOT" && cat pyproject.toml setup.py CMakeLists.txt csrc/sources.txt 2>/dev/null \
        | sha256sum | cut -c1-16)-$(cd "$ROOT" && find csrc -type f | sort | xargs sha256sum | sha256sum | cut -c1-16)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
    echo "setup: $VENV is up to date" >&2
else
    echo "setup: installing into $VENV (torch, then genvar-bench built in place; a few minutes)" >&2
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet torch==2.13.0
    "$VENV/bin/python" -m pip install --quiet setuptools wheel ninja pybind11
    (cd "$ROOT" && "$VENV/bin/python" -m pip install --quiet --no-build-isolation -e ".[test,ray,tensorboard]")
    echo "$want" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
