"""The results store: one SQLite database per results folder (<out>/<dataset>/<profile>/).

Each row is stored whole, in one transaction, under its run specification's hash
(`spec.RunSpec.hash`): a row is written entirely or not at all, a later row of the same
spec replaces it, and rows of different specs never share a key. The database runs in
WAL mode with a busy timeout, so concurrent `run`s and a Ray driver writing into one
folder wait for each other instead of failing, and a writer killed mid-row leaves the
table as it was. `results.csv` and `results.md` are views rendered from the store after
each write (kept in git for reading and diffs): editing or truncating them changes nothing.

A folder that has a results.csv and no database (tables written before the store) is
migrated once, on first use: each row's specification is rebuilt from its columns and its
profile (`legacy_spec`), its figures kept exactly.
"""
from __future__ import annotations

import json
import math
import os
import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable

from genvar_bench import spec as specs

STORE_NAME = "results.sqlite"
SCHEMA_VERSION = 1
# Seconds a writer waits for another's transaction before giving up.
BUSY_TIMEOUT_SECONDS = 120.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    spec_hash TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    status TEXT NOT NULL,
    spec TEXT NOT NULL,
    row TEXT NOT NULL,
    written_at REAL NOT NULL
);
"""


class StoreError(RuntimeError):
    """A results store that cannot be opened, read or written."""


def _encode(value: Any) -> Any:
    """A row value as JSON: numpy and torch scalars as Python numbers."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


class Store:
    """The store of one results folder."""

    def __init__(self, folder: str | os.PathLike, create: bool = True, name: str = STORE_NAME):
        self.folder = Path(folder)
        self.path = self.folder / name
        if not self.path.exists() and not create:
            raise StoreError(f"{self.folder} has no results store ({STORE_NAME})")

    def _connect(self) -> sqlite3.Connection:
        # Switching a new database to WAL takes its lock without waiting on the busy
        # handler: writers that create the store at once retry until the timeout.
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        while True:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECONDS,
                                             isolation_level=None)
                try:
                    connection.execute("PRAGMA journal_mode=WAL")
                    connection.execute("PRAGMA synchronous=FULL")
                    connection.executescript(_SCHEMA)
                except BaseException:
                    connection.close()
                    raise
                return connection
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise StoreError(f"{self.path} cannot be opened as a results store ({error})") from None
                time.sleep(0.05)
            except (sqlite3.Error, OSError) as error:
                raise StoreError(f"{self.path} cannot be opened as a results store ({error})") from None

    def write(self, entries: Iterable[tuple[specs.RunSpec, dict]],
              after: Callable[[list[dict]], object] | None = None) -> None:
        """Stores each (spec, row) in one transaction, replacing rows of the same spec;
        then, holding the write lock so that renderings never interleave, calls
        after(rows) with every stored row. A store locked by another writer past the
        busy timeout is retried until BUSY_TIMEOUT_SECONDS have passed in all."""
        entries = list(entries)
        deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
        while True:
            try:
                return self._write(entries, after)
            except StoreError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _write(self, entries: list[tuple[specs.RunSpec, dict]],
               after: Callable[[list[dict]], object] | None) -> None:
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            for spec, row in entries:
                record = {name: _encode(value) for name, value in row.items()}
                record["spec_hash"] = spec.hash
                # A row replaces one of its spec, except that a failed or invalid row
                # never replaces a finished one: decided here, in the transaction.
                connection.execute(
                    "INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(spec_hash) DO UPDATE "
                    "SET key = excluded.key, status = excluded.status, spec = excluded.spec, "
                    "row = excluded.row, written_at = excluded.written_at "
                    "WHERE rows.status != 'ok' OR excluded.status = 'ok'",
                    (spec.hash, spec.key, str(record.get("status", "ok")), spec.to_json(),
                     json.dumps(record), time.time()))
            connection.execute("COMMIT")
        except BaseException as error:  # nothing of a failed write is kept
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            connection.close()
            if isinstance(error, sqlite3.Error):
                raise StoreError(f"{self.path}: {error}") from None
            raise
        try:  # the rows are stored: what follows can fail without losing them
            if after is not None:
                connection.execute("BEGIN IMMEDIATE")  # renderers take turns
                try:
                    after(self._read(connection))
                finally:
                    connection.execute("COMMIT")
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as error:
            warnings.warn(f"{self.path}: the rows are stored; rendering them failed ({error})")
        finally:
            connection.close()

    def rows(self) -> list[dict]:
        """Every stored row (with its `spec_hash` and `spec`), in key order."""
        if not self.path.exists():
            return []
        connection = self._connect()
        try:
            return self._read(connection)
        except sqlite3.Error as error:
            raise StoreError(f"{self.path} is not a readable results store ({error})") from None
        finally:
            connection.close()

    @staticmethod
    def _read(connection: sqlite3.Connection) -> list[dict]:
        found = []
        for spec_text, row_text in connection.execute("SELECT spec, row FROM rows ORDER BY key"):
            try:
                row = json.loads(row_text)
            except ValueError as error:  # damage costs this row, never the table
                warnings.warn(f"a stored row is not readable ({error}); it is left out")
                continue
            row["spec"] = spec_text
            found.append({name: (math.nan if value is None else value) for name, value in row.items()})
        return found

    def specs(self) -> dict[str, specs.RunSpec]:
        """{spec hash: spec} of every stored row."""
        return {row["spec_hash"]: specs.from_json(row["spec"]) for row in self.rows()}


def legacy_spec(row: dict) -> specs.RunSpec:
    """The specification of a row written before the store, from its columns: the
    profile's schedule cut to the row's epochs (as `--epochs` made it), the IS sample
    count of its estimator (else the profile's), its options parsed as declared."""
    from genvar_bench.profiles import get_profile

    profile = get_profile(str(row["profile"]))
    epochs = int(float(row["epochs"])) if _present(row.get("epochs")) else profile.epochs
    profile = profile.scaled(epochs)
    estimator = str(row.get("nll_estimator") or "")
    eval_samples = int(estimator.split("=", 1)[1]) if estimator.startswith("IS k=") else profile.eval_samples
    method = str(row["method"])
    variant = row.get("variant")
    options = parse_variant(method, variant if isinstance(variant, str) else "")
    scoring: tuple = (("eval_samples", eval_samples),)
    if estimator.startswith("AIS log Z ("):  # "AIS log Z (14500 temperatures, 100 runs)"
        temperatures, runs = estimator[len("AIS log Z ("):].rstrip(")").split(", ")
        scoring += (("ais_runs", int(runs.split()[0])),
                    ("ais_temperatures", int(temperatures.split()[0])))
    else:
        try:
            scoring = specs.scoring_protocol(method, eval_samples)
        except KeyError:  # a plug-in method not loaded here
            pass
    return specs.RunSpec(
        dataset=str(row["dataset"]), binarization=str(row.get("binarization") or ""),
        profile=profile.name, method=method, options=options, k=int(float(row["k"])),
        layers=int(float(row["layers"])), seed=int(float(row["seed"])),
        device=str(row["device"]), backend=str(row["backend"]), epochs=profile.epochs,
        stages=tuple((int(e), float(r)) for e, r in profile.stages),
        batch_size=profile.batch_size, adam_eps=float(profile.adam_eps), scoring=scoring)


def _present(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and value != ""


def parse_variant(method: str, variant: str) -> tuple[tuple[str, Any], ...]:
    """"name=value,..." as sorted (name, value) pairs, each value as its option declares
    (as a number where it reads as one, for a method not registered here)."""
    from genvar_bench.registry import METHODS

    declared = {option.name: option for option in getattr(METHODS.get(method), "options", ())}
    pairs = []
    for item in filter(None, variant.split(",")):
        name, _, text = item.partition("=")
        if name in declared:
            value: Any = declared[name].check(text)
        else:
            value = _number_or_text(text)
        pairs.append((name, value))
    return tuple(sorted(pairs))


def _number_or_text(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
