"""The results table of a results folder (<out>/<dataset>/<profile>/): rows kept in its
store (`store.Store`, SQLite), keyed by their run specification, and the views rendered
from it (results.csv, results.md).

A row is "ok" only when its figures are possible (`row_problem`): one that is not, or
that lost its metrics, reads back as "invalid" and is run again.
"""
from __future__ import annotations

import contextlib
import fcntl
import math
import os
import warnings
from pathlib import Path
from typing import Callable

import pandas as pd

from genvar_bench.atomic import write_text_atomic
from genvar_bench.spec import KEY_COLUMNS, RunSpec, SpecError
from genvar_bench.store import STORE_NAME, Store, StoreError, legacy_spec

# A row is keyed by its run specification's hash (`spec.RunSpec.hash`, column spec_hash);
# its readable key is KEY_COLUMNS. The view's leading columns, in order:
LEADING_COLUMNS = ["dataset", "profile", "status", "error", *KEY_COLUMNS, "spec_hash"]
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
                "finished_at", "artifact", "model", "spec_hash", "spec",
                "model_sha256", "budget_curve", "budget_curve_estimator"]


class ResultsFileError(RuntimeError):
    """A results folder whose table cannot be read."""


def table_dir(out_dir: str | os.PathLike, dataset: str, profile: str) -> Path:
    return Path(out_dir) / dataset / profile


def failed_row(spec: RunSpec, message: str, commit: str) -> dict:
    """The row of a configuration that raised: its key, status "failed", the error."""
    return {"dataset": spec.dataset, "profile": spec.profile, "status": "failed", "error": message,
            **spec.key_fields(), "git_commit": commit}


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


def _folder(path: str | os.PathLike) -> Path:
    """A results folder, given as itself or as its results.csv."""
    path = Path(path)
    return path.parent if path.name == "results.csv" else path


def open_store(path: str | os.PathLike) -> Store:
    """The store of a results folder (or of its results.csv), migrating a results.csv
    written before the store on first use; ResultsFileError naming what is wrong."""
    folder = _folder(path)
    if folder.exists() and not folder.is_dir():
        raise ResultsFileError(f"{folder} is a file, not a results folder")
    store = Store(folder)
    csv_path = folder / "results.csv"
    if csv_path.is_dir():
        raise ResultsFileError(f"{csv_path} is a folder, not a results table; move it aside")
    if not store.path.exists() and csv_path.exists():
        # Built aside and moved into place under a lock: a kill mid-way leaves no half
        # store, and a second process waits, then finds the whole one.
        with _folder_lock(folder):
            if not store.path.exists():
                _migrate(store, csv_path)
    return store


@contextlib.contextmanager
def _folder_lock(folder: Path):
    """An exclusive lock on the folder itself (flock on its descriptor): no file is made."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _migrate(store: Store, csv_path: Path) -> None:
    """Moves a results.csv written before the store into it, once, its figures as they
    were; rows whose key columns were lost (truncated) cannot be placed and are dropped."""
    try:
        table = read_table(csv_path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ResultsFileError(f"{csv_path} is not a readable results table ({first}); "
                               "move it aside or delete it") from None
    missing = [column for column in ("dataset", "profile", *KEY_COLUMNS)
               if column != "variant" and column not in table.columns]
    if missing:
        raise ResultsFileError(f"{csv_path} is not a results table: it lacks the columns "
                               f"{', '.join(missing)}; move it aside or delete it")
    entries = []
    for record in table.to_dict("records"):
        for name, default in (("status", "ok"), ("variant", ""), ("error", "")):
            if not isinstance(record.get(name), str):  # absent, or empty (NaN)
                record[name] = default
        try:
            entries.append((legacy_spec(record), record))
        except (KeyError, ValueError, TypeError, SpecError) as error:
            warnings.warn(f"{csv_path}: a row without its key ({error}) is dropped")
    aside = Store(csv_path.parent, name=f".{STORE_NAME}.migrating-{os.getpid()}")
    try:
        aside.write(entries)
        os.replace(aside.path, store.path)
    except StoreError as error:
        raise ResultsFileError(str(error)) from None
    finally:
        for leftover in (aside.path, *(aside.path.with_name(aside.path.name + end) for end in ("-wal", "-shm"))):
            leftover.unlink(missing_ok=True)


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """The table of a results folder (or of its results.csv), from its store; empty when
    there is none. Rows marked ok whose figures are missing or impossible (`row_problem`)
    come back with status "invalid" and the reason in `error`, so they are neither
    reported nor skipped as done. A folder whose table cannot be read raises
    ResultsFileError naming it."""
    folder = _folder(path)
    if not (folder / STORE_NAME).exists() and not (folder / "results.csv").exists():
        return pd.DataFrame()
    try:
        rows = open_store(folder).rows()
    except StoreError as error:
        raise ResultsFileError(str(error)) from None
    return as_table(rows, folder)


def as_table(rows: list[dict], folder: Path | None = None) -> pd.DataFrame:
    """Stored rows as a DataFrame in the view's column order, text columns as text."""
    if not rows:
        return pd.DataFrame()
    table = pd.DataFrame(rows)
    first = [name for name in LEADING_COLUMNS if name in table.columns]
    table = table[first + [name for name in table.columns if name not in first]]
    for name in TEXT_COLUMNS:
        if name in table:
            table[name] = table[name].map(lambda value: value if isinstance(value, str) else
                                          (math.nan if value is None or (isinstance(value, float) and math.isnan(value))
                                           else str(value)))
    table["variant"] = table["variant"].fillna("") if "variant" in table else ""
    table["status"] = table["status"].fillna("ok") if "status" in table else "ok"
    table["error"] = table["error"].fillna("") if "error" in table else ""
    where = folder.name if folder is not None else "the store"
    for index, row in table[table["status"] == "ok"].iterrows():
        problem = row_problem(row, _is_binary(row.get("dataset")))
        if problem is not None:
            table.loc[index, ["status", "error"]] = ["invalid", f"invalid row in {where}: {problem}"]
    return table.sort_values(list(KEY_COLUMNS), kind="stable").reset_index(drop=True)


def stored_row(folder: Path, spec: RunSpec) -> dict | None:
    """The row stored under `spec` in a results folder, or None."""
    try:
        rows = open_store(folder).rows()
    except StoreError as error:
        raise ResultsFileError(str(error)) from None
    for row in rows:
        if row.get("spec_hash") == spec.hash:
            return row
    return None


def done_hashes(table: pd.DataFrame) -> set[str]:
    """The spec hashes of a table's finished rows (status ok: not failed, not invalid)."""
    if table.empty:
        return set()
    return set(table.loc[table["status"] == "ok", "spec_hash"].astype(str))


def write_views(table: pd.DataFrame, folder: Path,
                render: Callable[[pd.DataFrame, Path], object] | None = None) -> None:
    """results.csv (every column but the spec, which the store keeps) and, with render,
    what it writes (e.g. `report.write_results_markdown`)."""
    view = table.drop(columns=["spec"], errors="ignore")
    write_text_atomic(folder / "results.csv", view.to_csv(index=False))
    if render is not None:
        render(table, folder)


def update_results(out_dir: str | os.PathLike, dataset: str, profile: str,
                   entries: list[tuple[RunSpec, dict]],
                   render: Callable[[pd.DataFrame, Path], object] | None = None) -> Path:
    """Stores each (spec, row) in the folder's store, replacing rows of the same spec, in
    one transaction; then, still holding the store's write lock, rewrites results.csv and
    calls render(table, folder). A rendering that fails (a damaged per-example file) costs
    the views, with a warning, never the row. Returns the CSV path."""
    return update_folder(table_dir(out_dir, dataset, profile), entries, render)


def update_folder(folder: Path, entries: list[tuple[RunSpec, dict]],
                  render: Callable[[pd.DataFrame, Path], object] | None = None) -> Path:
    """`update_results` for the results folder `folder` itself."""
    folder = Path(folder)
    store = open_store(folder)

    def views(rows: list[dict]) -> None:
        try:
            write_views(as_table(rows, folder), folder, render)
        except Exception as error:  # the row is stored: the views are redrawn next time
            warnings.warn(f"{folder}: the results views were not rewritten "
                          f"({type(error).__name__}: {error})")

    try:
        store.write(entries, after=views)
    except StoreError as error:
        raise ResultsFileError(str(error)) from None
    return folder / "results.csv"
