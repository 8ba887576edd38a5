"""The results table: one CSV (and a Markdown rendering) per dataset and profile.

Rows are keyed by (method, variant, k, layers, seed, device, backend); a new run adds
or replaces its rows and keeps the others. Files are written to a temporary
name and renamed, so an interrupted run never leaves a half-written table, and the
read-merge-write of results.csv holds a file lock (`filelock`), so runs sharing a
folder never lose each other's rows.

A row is "ok" only when its figures are possible (`row_problem`): one that is not, or
that was truncated or lost its metrics, reads back as "invalid" and is run again.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

import pandas as pd
from filelock import FileLock

from genvar_bench.atomic import write_text_atomic

# The row schema: a row is keyed by its configuration (KEY); `config_fields` gives those
# fields of a configuration, `ok` rows carry REQUIRED_METRICS and the rest of
# `runner.run_one`'s figures, `failed_row` is the row of one that raised.
KEY = ["method", "variant", "k", "layers", "seed", "device", "backend"]
# Metrics every finished row has; a row without them was truncated or damaged.
REQUIRED_METRICS = ["train_bound", "test_bound", "test_nll"]
# How many standard errors of the paired (bound - NLL) gap a bound may sit below its
# own NLL estimate before the row is called impossible, plus a rounding allowance.
GAP_STANDARD_ERRORS = 5.0
GAP_ROUNDING_NATS = 1e-4
# Columns read back as text whatever they hold: a commit hash of digits only ("6420729")
# or one like "12e4567" would otherwise come back as a number.
TEXT_COLUMNS = ["dataset", "profile", "method", "variant", "device", "backend", "status",
                "error", "nll_estimator", "active_units_per_layer", "binarization",
                "torch_version", "device_name", "git_commit", "trained_at_commit",
                "finished_at", "artifact", "model"]


class ResultsFileError(RuntimeError):
    """A results.csv that cannot be read as a results table."""


def table_dir(out_dir: str | os.PathLike, dataset: str, profile: str) -> Path:
    return Path(out_dir) / dataset / profile


def config_fields(config) -> dict:
    """The KEY fields of a configuration (a `runner.RunConfig`), as a row has them: the
    device by its type (cpu, cuda)."""
    import torch

    return {"method": config.method, "variant": config.variant, "k": config.num_samples,
            "layers": config.layers, "seed": config.seed,
            "device": torch.device(config.device).type, "backend": config.backend}


def config_key(config) -> tuple[str, ...]:
    """A configuration's key as strings: equal to `key_tuples` of its row."""
    fields = config_fields(config)
    return tuple(str(fields[name]) for name in KEY)


def failed_row(config, dataset: str, profile: str, message: str, commit: str) -> dict:
    """The row of a configuration that raised: its key, status "failed", the error."""
    fields = config_fields(config)
    return {"dataset": dataset, "profile": profile, "status": "failed", "error": message,
            **{name: fields[name] for name in ("method", "variant", "k", "layers", "seed")},
            "device": fields["device"], "backend": fields["backend"], "git_commit": commit}


def row_problem(row, binary_data: bool = True) -> str | None:
    """Why a finished row's figures are impossible, or None when they are not: a metric
    missing, NaN or infinite; a negative NLL of binary data (a probability is at most 1);
    a test bound below its own NLL estimate by more than GAP_STANDARD_ERRORS standard
    errors of their paired per-example gap (`test_bound_gap_se`, where recorded)."""
    values = {}
    for name in REQUIRED_METRICS:
        try:
            values[name] = float(row.get(name))
        except (TypeError, ValueError):
            return f"{name} is missing or not a number ({row.get(name)!r})"
        if math.isnan(values[name]):
            return f"{name} is missing or NaN"
        if math.isinf(values[name]):
            return f"{name} is {values[name]}"
    if binary_data and values["test_nll"] < 0:
        return f"negative NLL {values['test_nll']:.4g} of binary data"
    try:
        gap_se = float(row.get("test_bound_gap_se"))
    except (TypeError, ValueError):
        gap_se = math.nan
    if math.isfinite(gap_se):
        allowed = GAP_STANDARD_ERRORS * gap_se + GAP_ROUNDING_NATS * max(1.0, abs(values["test_nll"]))
        if values["test_bound"] < values["test_nll"] - allowed:
            return (f"test bound {values['test_bound']:.4f} is below its own NLL estimate "
                    f"{values['test_nll']:.4f} by more than {allowed:.2g} nats")
    return None


def _is_binary(dataset) -> bool:
    from genvar_bench.data import DATASET_KINDS

    return dataset not in DATASET_KINDS["continuous"]


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    """A results CSV as written, its TEXT_COLUMNS as strings (missing text is NaN)."""
    return pd.read_csv(path, dtype={name: str for name in TEXT_COLUMNS})


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """The table in `path` (empty when there is none). Rows marked ok whose figures are
    missing or impossible (`row_problem`) come back with status "invalid" and the reason
    in `error`, so they are neither reported nor skipped as done. A file that is not a
    results table raises ResultsFileError naming it."""
    path = Path(path)
    if not path.exists():
        return pd.DataFrame()
    try:
        table = read_table(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ResultsFileError(f"{path} is not a readable results table ({first}); "
                               "move it aside or delete it") from None
    missing = [column for column in KEY if column != "variant" and column not in table.columns]
    if missing:
        raise ResultsFileError(f"{path} is not a results table: it lacks the columns "
                               f"{', '.join(missing)}; move it aside or delete it")
    # "" (no options) reads back as NaN; tables from before the column had no options.
    table["variant"] = table["variant"].fillna("") if "variant" in table else ""
    if "status" not in table:
        table["status"] = "ok"
    table["status"] = table["status"].fillna("ok")
    if "error" not in table:
        table["error"] = ""
    table["error"] = table["error"].fillna("")
    for index, row in table[table["status"] == "ok"].iterrows():
        problem = row_problem(row, _is_binary(row.get("dataset")))
        if problem is not None:
            table.loc[index, ["status", "error"]] = ["invalid", f"invalid row in {path.name}: {problem}"]
    return table


def key_tuples(table: pd.DataFrame) -> list[tuple[str, ...]]:
    """Each row's KEY as strings, the same however pandas typed the columns (k = 5 and
    5.0 alike); a missing field is ""."""
    columns = []
    for name in KEY:
        column = table[name] if name in table else pd.Series([""] * len(table), index=table.index)
        if name in ("k", "layers", "seed"):
            column = pd.to_numeric(column, errors="coerce").map(
                lambda value: "" if pd.isna(value) else str(int(value)))
        else:
            column = column.fillna("").astype(str)
        columns.append(column.tolist())
    return list(zip(*columns))


def merge_rows(existing: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    """`existing` with every row of the same key as a new row replaced by it; invalid
    rows whose key is incomplete (truncated: no configuration can ever replace them) are
    dropped."""
    new = pd.DataFrame(rows)
    if existing.empty:
        merged = new
    else:
        new_keys = set(key_tuples(new))
        invalid = (existing["status"] == "invalid").tolist() if "status" in existing else [False] * len(existing)
        keep = [key not in new_keys and not (bad and "" in key[:1] + key[2:])
                for key, bad in zip(key_tuples(existing), invalid)]
        merged = pd.concat([existing[keep], new], ignore_index=True)
    return merged.sort_values(KEY, kind="stable").reset_index(drop=True)


def results_lock(csv_path: Path) -> FileLock:
    """The lock every read-merge-write of `csv_path` holds (a `.lock` file beside it)."""
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(csv_path.with_name(csv_path.name + ".lock")))


def update_results(out_dir: str | os.PathLike, dataset: str, profile: str, rows: list[dict],
                   render: Callable[[pd.DataFrame, Path], object] | None = None) -> Path:
    """Adds or replaces `rows` in results.csv, under the file's lock, and then, still
    under it, calls render(table, folder) (e.g. `report.write_results_markdown`); returns
    the CSV path."""
    directory = table_dir(out_dir, dataset, profile)
    csv_path = directory / "results.csv"
    with results_lock(csv_path):
        table = merge_rows(read_results(csv_path), rows)
        write_text_atomic(csv_path, table.to_csv(index=False))
        if render is not None:
            render(table, directory)
    return csv_path
