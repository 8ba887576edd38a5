"""The results table: one CSV (and a Markdown rendering) per dataset and profile.

Rows are keyed by (method, variant, k, layers, seed, device, backend); a new run adds
or replaces its rows and keeps the others. Files are written to a temporary
name and renamed, so an interrupted run never leaves a half-written table.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd

KEY = ["method", "variant", "k", "layers", "seed", "device", "backend"]

# Columns of the Markdown summary, in order.
SUMMARY_COLUMNS = ["method", "variant", "k", "layers", "seed", "device", "backend", "train_bound",
                   "test_bound", "test_reconstruction", "test_kl", "test_nll", "nll_estimator", "test_bits_per_dim",
                   "test_cd_objective",
                   "active_units",
                   "train_examples_per_s", "eval_seconds", "epochs", "parameters"]


def table_dir(out_dir: str | os.PathLike, dataset: str, profile: str) -> Path:
    return Path(out_dir) / dataset / profile


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        return pd.DataFrame()
    table = pd.read_csv(path, dtype={"variant": str})
    # "" (no options) reads back as NaN; tables from before the column had no options.
    table["variant"] = table["variant"].fillna("") if "variant" in table else ""
    return table


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def merge_rows(existing: pd.DataFrame, rows: list[dict]) -> pd.DataFrame:
    """`existing` with every row of the same key as a new row replaced by it."""
    new = pd.DataFrame(rows)
    if existing.empty:
        merged = new
    else:
        new_keys = set(map(tuple, new[KEY].astype(str).values))
        keep = [tuple(key) not in new_keys for key in existing[KEY].astype(str).values]
        merged = pd.concat([existing[keep], new], ignore_index=True)
    return merged.sort_values(KEY, kind="stable").reset_index(drop=True)


def to_markdown(table: pd.DataFrame, title: str) -> str:
    columns = [column for column in SUMMARY_COLUMNS if column in table.columns]
    shown = table[columns].copy()
    for column in ("train_bound", "test_bound", "test_reconstruction", "test_kl", "test_nll",
                   "test_cd_objective"):
        if column in shown:
            shown[column] = shown[column].map(lambda value: "-" if pd.isna(value) else f"{value:.2f}")
    if "test_bits_per_dim" in shown:
        shown["test_bits_per_dim"] = shown["test_bits_per_dim"].map(
            lambda value: "-" if pd.isna(value) else f"{value:.3f}")
    if "active_units" in shown:  # NaN for models without latent units
        shown["active_units"] = shown["active_units"].map(
            lambda value: "-" if pd.isna(value) else str(int(value)))
    for column in ("train_examples_per_s", "eval_seconds"):
        if column in shown:
            shown[column] = shown[column].map(lambda value: f"{value:.1f}")
    note = ("Bounds and NLL in nats (lower is better); train/test bound is each method's own "
            "bound at its k; test NLL by the estimator named.")
    return f"# {title}\n\n{note}\n\n{shown.to_markdown(index=False)}\n"


def results_markdown(table: pd.DataFrame, title: str) -> str:
    """results.md: the summary per model (mean ± sd over seeds, throughput per device),
    then every row."""
    from genvar_bench.report import summary_markdown

    if "status" in table:
        rows = table[table["status"].fillna("ok") == "ok"]
    else:
        rows = table
    details = to_markdown(rows, "All rows").replace("# All rows", "## All rows", 1)
    return summary_markdown(table, title) + "\n" + details


def update_results(out_dir: str | os.PathLike, dataset: str, profile: str,
                   rows: list[dict]) -> Path:
    """Adds or replaces `rows` in results.csv and rewrites results.md; returns the CSV path."""
    directory = table_dir(out_dir, dataset, profile)
    csv_path = directory / "results.csv"
    table = merge_rows(read_results(csv_path), rows)
    _atomic_write_text(csv_path, table.to_csv(index=False))
    _atomic_write_text(directory / "results.md",
                       results_markdown(table, f"{dataset}, profile {profile}"))
    return csv_path
