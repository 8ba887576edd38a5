#!/usr/bin/env bash
# The GPU check, in one go, on a machine with an NVIDIA GPU: builds the op library with its
# CUDA kernels, runs the CUDA tests, the kernel benchmarks on cuda (JSON, speed-ups, and
# `bench --compare` where benchmarks/baselines holds this device's baseline), and a short
# `run` of every method on digits on the CPU and on cuda; everything goes under one folder
# named after the device, and a one-screen summary ends it. See `--help`.
set -uo pipefail
cd "$(dirname "$0")/.."

usage() {
    cat <<'EOF'
usage: scripts/gpu_check.sh [options]

Checks this code on a CUDA GPU in one go (about 8 minutes on an H100/H200; each stage is
cut at its time limit and the total at --budget). Every stage's log goes under
OUT/cuda-<device name>/ (an earlier folder of that name is moved aside), with
summary.txt and OUT/cuda-<device name>.tar.gz of it all.

options:
  --out DIR           parent folder of the results (default results/gpu-check)
  --budget SECONDS    total time limit, at least 60 (default 480)
  --python PYTHON     the Python whose torch is used (default python3, else python)
  --epochs N          epochs of the short run (default 5)
  --eval-samples N    importance samples of its test NLL (default 500)
  --no-install        never pip install (torch and missing packages must be there)
  --no-build          use the op library as installed (it must have CUDA kernels)
  --dry-run           print the stages, their time limits and commands; run nothing
  -h, --help          this text

exit status: 0 every stage passed; 1 some stage failed or ran out of time (the summary
says which); 2 bad arguments; 3 no CUDA build of torch or no GPU (nothing was run).

environment: GPU_CHECK_RESERVE  seconds of the budget kept for the summary (default 20)
EOF
}

die() { echo "gpu_check: $2" >&2; exit "$1"; }
usage_error() { echo "gpu_check: $1" >&2; usage >&2; exit 2; }
positive() { [[ "$2" =~ ^[0-9]+$ ]] && (( 10#$2 >= $3 )) || usage_error "$1 needs an integer >= $3, got '$2'"; }

OUT_ROOT=results/gpu-check BUDGET=480 PYTHON_BIN=${PYTHON:-} EPOCHS=5 EVAL_SAMPLES=500
INSTALL=1 BUILD=1 DRY_RUN=0
while (( $# )); do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --out|--budget|--python|--epochs|--eval-samples)
            (( $# >= 2 )) || usage_error "$1 needs a value"
            case "$1" in
                --out) OUT_ROOT=$2 ;;
                --budget) positive "$1" "$2" 60; BUDGET=$((10#$2)) ;;
                --python) PYTHON_BIN=$2 ;;
                --epochs) positive "$1" "$2" 1; EPOCHS=$((10#$2)) ;;
                --eval-samples) positive "$1" "$2" 1; EVAL_SAMPLES=$((10#$2)) ;;
            esac
            shift 2 ;;
        --no-install) INSTALL=0; shift ;;
        --no-build) BUILD=0; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        *) usage_error "unknown argument '$1'" ;;
    esac
done

START=$(date +%s)
DEADLINE=$((START + BUDGET))
RESERVE=${GPU_CHECK_RESERVE:-20}  # seconds kept for the summary and the archive
BENCH_FILES=(iwae_ops sbn_ops mixture_ops diffusion_ops rbm_ops)

if [[ -z "$PYTHON_BIN" ]]; then
    PYTHON_BIN=python3
    command -v python3 >/dev/null 2>&1 || PYTHON_BIN=python
fi

# stage NAME LIMIT COMMAND...: runs COMMAND under `timeout`, at most LIMIT seconds and no
# later than the budget allows; its output goes to NAME.log; the outcome to stages.tsv.
# A failing stage is recorded and the next one runs.
FAILED=0
stage() {
    local name=$1 cap=$2; shift 2
    local left=$((DEADLINE - RESERVE - $(date +%s)))
    local limit=$(( cap < left ? cap : left ))
    if (( DRY_RUN )); then
        printf '%-20s <= %4s s  %s\n' "$name" "$cap" "$*"
        return 0
    fi
    if (( limit < 5 )); then
        printf '%s\tskipped: out of time\t0\t%s\n' "$name" "$cap" >>"$DIR/stages.tsv"
        echo "[gpu_check] $name: skipped, out of time" >&2
        FAILED=1
        return 1
    fi
    echo "[gpu_check] $name (limit ${limit} s): $*" >&2
    local began=$(date +%s) status rc
    timeout --kill-after=10 "$limit" "$@" >"$DIR/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124|137) status="TIMEOUT after ${limit} s" ;;
        *) status="FAILED (exit $rc)" ;;
    esac
    local seconds=$(( $(date +%s) - began ))
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$seconds" "$limit" >>"$DIR/stages.tsv"
    echo "[gpu_check] $name: $status (${seconds} s)" >&2
    if (( rc != 0 )); then
        FAILED=1
        tail -n 5 "$DIR/$name.log" | sed 's/^/    /' >&2
    fi
    return $rc
}

# --- preflight: a CUDA build of torch that sees a GPU, else nothing runs -------------------
if (( ! DRY_RUN )); then
    command -v "$PYTHON_BIN" >/dev/null 2>&1 || die 3 "no Python '$PYTHON_BIN' (give one with --python)"
    if ! "$PYTHON_BIN" -c "import torch" >/dev/null 2>&1; then
        (( INSTALL )) || die 3 "torch is not installed for $PYTHON_BIN (and --no-install was given)"
        echo "[gpu_check] torch missing: pip install torch==2.13.0" >&2
        "$PYTHON_BIN" -m pip install --quiet torch==2.13.0 \
            || die 3 "torch is not installed for $PYTHON_BIN and pip could not install torch==2.13.0"
    fi
    read -r TORCH_VERSION TORCH_CUDA CUDA_DEVICES < <("$PYTHON_BIN" -c \
        "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.device_count())" 2>/dev/null)
    if [[ -z "${TORCH_VERSION:-}" ]]; then
        die 3 "torch does not import for $PYTHON_BIN"
    fi
    if [[ "$TORCH_CUDA" == None ]]; then
        die 3 "torch $TORCH_VERSION is a CPU-only build (torch.version.cuda is None): this check \
needs a CUDA build of torch on a machine with an NVIDIA GPU, e.g. pip install \
--force-reinstall torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
    fi
    if [[ "${CUDA_DEVICES:-0}" == 0 ]]; then
        smi=$(nvidia-smi -L 2>&1 | head -n 3 | tr '\n' ' ')
        die 3 "torch $TORCH_VERSION (CUDA $TORCH_CUDA) sees no CUDA GPU; nvidia-smi -L says: ${smi:-nothing}"
    fi
    DEVICE_NAME=$("$PYTHON_BIN" -c "import torch; print(torch.cuda.get_device_name())")
    ARCH=$("$PYTHON_BIN" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
    SLUG=cuda-$(echo "$DEVICE_NAME" | tr 'A-Z' 'a-z' | sed -E 's/[^a-z0-9]+/-/g; s/^-+|-+$//g')
    DIR=$OUT_ROOT/$SLUG
    if [[ -e "$DIR" ]]; then
        mv "$DIR" "$DIR.before-$(date +%Y%m%d-%H%M%S)"
    fi
    mkdir -p "$DIR/bench" "$DIR/run/benchmarks" || die 3 "cannot make $DIR"
    {
        echo "device: $DEVICE_NAME (compute capability $ARCH, $CUDA_DEVICES visible)"
        echo "torch $TORCH_VERSION, CUDA $TORCH_CUDA, $("$PYTHON_BIN" --version 2>&1), $(nproc) CPUs"
        echo "code: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- csrc genvar_bench 2>/dev/null || echo +dirty), $(date -u +%Y-%m-%dT%H:%M:%SZ), budget $BUDGET s"
        nvidia-smi 2>&1
    } >"$DIR/environment.txt"
    head -n 3 "$DIR/environment.txt" >&2
else
    DIR="$OUT_ROOT/cuda-<device>" ARCH="<capability>"
    echo "dry run: stages with their time limits (each also cut by the $BUDGET s budget):"
fi

PY=$PYTHON_BIN
# --- the stages, most important first: what the budget cuts is at the end --------------
missing_packages() {
    "$PY" - <<'EOF'
import importlib.util
needed = {"numpy": "numpy", "pandas": "pandas", "seaborn": "seaborn", "sklearn": "scikit-learn",
          "tqdm": "tqdm", "tabulate": "tabulate", "filelock": "filelock", "pytest": "pytest",
          "pytest_benchmark": "pytest-benchmark", "ninja": "ninja", "pybind11": "pybind11"}
print(" ".join(package for module, package in needed.items() if importlib.util.find_spec(module) is None))
EOF
}
if (( DRY_RUN )); then
    stage packages 120 "$PY" -m pip install '<the missing ones of numpy pandas seaborn scikit-learn tqdm tabulate filelock pytest pytest-benchmark ninja pybind11>'
else
    MISSING=$(missing_packages)
    if [[ -n "$MISSING" ]]; then
        if (( INSTALL )); then
            # shellcheck disable=SC2086
            stage packages 120 "$PY" -m pip install $MISSING
        else
            printf 'packages\tFAILED: missing %s (--no-install)\t0\t0\n' "$MISSING" >>"$DIR/stages.tsv"
            FAILED=1
        fi
    fi
fi
if (( BUILD )); then
    stage build 200 env GENVAR_CUDA=1 MAX_JOBS="$(nproc)" TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-$ARCH}" \
        "$PY" -m pip install --no-build-isolation --no-deps -e .
fi
stage kernels 30 "$PY" -c "from genvar_bench._extension import cuda_ops_built; import sys; \
print('CUDA kernels built:', cuda_ops_built()); sys.exit(0 if cuda_ops_built() else 1)"
# (test_cuda_compile is left out: its nvcc compile checks are a subset of the build above.)
stage cuda-tests 150 "$PY" -m pytest tests -q -k "cuda and not test_cuda_compile" -rfEs \
    -p no:cacheprovider --junitxml="$DIR/cuda-tests.xml"
stage run 120 "$PY" -m genvar_bench run --all --dataset digits --devices cpu,cuda \
    --epochs "$EPOCHS" --eval-samples "$EVAL_SAMPLES" --no-progress --out "$DIR/run"
stage run-grey 40 "$PY" -m genvar_bench run --method diffusion-gauss --dataset digits-grey \
    --devices cpu,cuda --epochs "$EPOCHS" --eval-samples "$EVAL_SAMPLES" --no-progress --out "$DIR/run"
for name in "${BENCH_FILES[@]}"; do
    stage "bench-$name" 60 "$PY" -m pytest "benchmarks/test_$name.py" -q -k cuda -p no:cacheprovider \
        --benchmark-max-time=0.25 --benchmark-json="$DIR/bench/cuda-$name.json"
done
stage speedups 60 bash -c "'$PY' scripts/gpu_check_summary.py merge '$DIR/run/benchmarks/cuda.json' \
'$DIR'/bench/cuda-*.json && '$PY' -m genvar_bench bench --device cuda --json '$DIR/run/benchmarks/cuda.json' \
>'$DIR/speedups.txt' && '$PY' -m genvar_bench report --out '$DIR/run'"
# `bench --compare` where this device has a stored baseline; else a candidate baseline to commit.
if (( DRY_RUN )); then
    stage compare 30 "$PY" -m genvar_bench bench --compare --device cuda --json "$DIR/run/benchmarks/cuda.json" -k cuda
elif [[ -s "$DIR/run/benchmarks/cuda.json" ]]; then
    BASELINE=$("$PY" -c "from genvar_bench.cli.bench import baseline_path; print(baseline_path('cuda'))")
    if [[ -f "$BASELINE" ]]; then
        stage compare 30 bash -c "'$PY' -m genvar_bench bench --compare --device cuda \
--json '$DIR/run/benchmarks/cuda.json' -k cuda >'$DIR/compare.txt' 2>&1; rc=\$?; cat '$DIR/compare.txt'; exit \$rc"
    else
        stage candidate-baseline 30 "$PY" -m genvar_bench bench --update-baseline --device cuda \
            --json "$DIR/run/benchmarks/cuda.json" --baseline "$DIR/$(basename "$BASELINE")"
        echo "none stored at $BASELINE; this run's ratios are in $DIR/$(basename "$BASELINE") (commit it there to compare later runs)" \
            >"$DIR/compare.txt"
    fi
fi

(( DRY_RUN )) && exit 0
"$PY" scripts/gpu_check_summary.py summary "$DIR" >"$DIR/summary.txt" 2>&1
echo "total: $(( $(date +%s) - START )) s of the $BUDGET s budget" >>"$DIR/summary.txt"
tar czf "$DIR.tar.gz" -C "$(dirname "$DIR")" "$(basename "$DIR")" 2>/dev/null
echo "everything: $DIR (and $DIR.tar.gz)" >>"$DIR/summary.txt"
cat "$DIR/summary.txt"
exit $FAILED
