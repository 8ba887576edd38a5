"""`python -m genvar_bench score MODEL`: re-score a kept model under its row's protocol."""
from __future__ import annotations

import datetime
import sys
from pathlib import Path

import pandas as pd
import torch

from genvar_bench import runner
from genvar_bench.atomic import write_text_atomic
from genvar_bench.cli import arguments
from genvar_bench.data import DATASETS
from genvar_bench.results import read_table, row_problem


def add_parser(commands) -> None:
    score = commands.add_parser(
        "score", help="re-score a kept model (results/<dataset>/<profile>/models/*.safetensors) under the "
                      "protocol of its row and print the row")
    score.add_argument("model", help="a kept model file")
    score.add_argument("--eval-samples", type=arguments.positive_int, default=None,
                       help="importance samples of the test NLL (default: the row's)")
    score.add_argument("--dataset", choices=DATASETS, default=None,
                       help="default: the one the model was trained on")
    score.add_argument("--data-dir", default=None,
                       help="folder holding binarized_mnist.npz or the Fashion-MNIST idx files")
    score.add_argument("--device", type=arguments.device_list, default=["cpu"], help="cpu (default) or cuda[:N]")
    score.add_argument("--seed", type=arguments.seed_list, default=None,
                       help="seed of the scoring draws (default: the row's, which reproduces it)")
    score.add_argument("--csv", default=None, help="also append the row to this CSV file")
    score.add_argument("--no-progress", action="store_true", help="hide progress bars")
    score.add_argument("--plugin", action="append", default=[], metavar="FILE.py|MODULE",
                       help="the plug-in a plug-in method's model needs (never loaded unless named)")
    score.set_defaults(handler=command_score)


def command_score(args) -> int:
    """Re-scores a kept model: the scoring preparation (the DAE's prior, AIS for RBMs),
    then `runner.evaluate` with the row's seed and sample count; prints the row."""
    if len(args.device) != 1 or (args.seed is not None and len(args.seed) != 1):
        sys.exit("error: score takes one --device and one --seed")
    csv = Path(args.csv) if args.csv else None
    if csv is not None:
        _check_csv(csv)
    device = torch.device(args.device[0])
    method, info = arguments.load_model_or_exit(args.model, args.device[0], args.plugin)
    dataset = arguments.load_data_or_exit(args.dataset or info["dataset"], args.data_dir)
    arguments.check_data_fits(args.model, info, dataset)
    eval_samples = args.eval_samples or info["eval_samples"]
    seed = info["seed"] if args.seed is None else args.seed[0]
    from genvar_bench.registry import record_of

    record_of(method).scorer.prepare(method, dataset.train.to(device), not args.no_progress)
    torch.manual_seed(seed + 1)
    scores, _ = runner.evaluate(method, dataset, device, eval_samples, not args.no_progress)
    spec = info.get("spec")
    row = {"model": str(args.model), "dataset": dataset.name, "profile": info["profile"],
           "method": info["method"], "variant": ",".join(f"{k}={v}" for k, v in sorted(info["options"].items())),
           "k": info["num_samples"], "layers": info["layers"], "seed": seed,
           "device": device.type, "backend": info["backend"],
           "spec_hash": spec.hash if spec is not None else "", **scores,
           "trained_at_commit": info["git_commit"], "git_commit": runner.git_commit(),
           "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    problem = row_problem(row, dataset.kind == "binary")
    row["status"], row["error"] = ("ok", "") if problem is None else ("failed", f"impossible result: {problem}")
    for name in ("method", "variant", "k", "layers", "seed", "dataset", "test_nll", "nll_estimator",
                 "test_bound", "train_bound", "test_iw_bound_k1", "eval_seconds", "status", "error"):
        if name in row and row[name] != "":
            value = row[name]
            print(f"{name:>18}: {value:.4f}" if isinstance(value, float) else f"{name:>18}: {value}")
    if csv is not None:
        _append_row(csv, row)
        print(f"row appended to {csv}", file=sys.stderr)
    return 0 if problem is None else 1


def _check_csv(csv: Path) -> None:
    """--csv names a CSV this command can append to: checked before any scoring."""
    if csv.is_dir():
        sys.exit(f"error: --csv {csv} is a folder; name a CSV file")
    if csv.exists():
        try:
            read_table(csv)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError):
            sys.exit(f"error: --csv {csv} is not a readable CSV table; name a new file or move it aside")
    folder = csv.parent if str(csv.parent) else Path(".")
    if not folder.is_dir():
        sys.exit(f"error: --csv {csv}: the folder {folder} does not exist")


def _append_row(csv: Path, row: dict) -> None:
    from filelock import FileLock

    with FileLock(str(csv.with_name(csv.name + ".lock"))):
        table = read_table(csv) if csv.exists() else pd.DataFrame()
        table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
        try:
            write_text_atomic(csv, table.to_csv(index=False))
        except OSError as error:
            sys.exit(f"error: --csv {csv} cannot be written ({error.strerror or error})")
