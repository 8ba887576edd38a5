"""Bad inputs to the command line, one table of cases: each is refused with a non-zero exit
and one `error:` line naming the problem (argparse's usage line then its `error:` line for
argument types), never a traceback, and leaves a finished results folder exactly as it was
(every file's checksum, every folder) and nothing else written beside it.

The folder (one digits row, trained once per module) is copied for each case; the case
damages its copy (or the files next to it) as it needs, then the command runs as a
subprocess, `python -m genvar_bench ...`, in the case's own folder. `bench` is covered by
tests/test_bench.py."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = os.environ.get("GENVAR_DATA_DIR") or str(REPO.parent / "shared" / "data")
# Every case is refused before any training: well within this, even on a busy machine.
COMMAND_TIMEOUT_SECONDS = 180
# The fixture's row: the smallest finished row there is.
TRAIN = ["run", "--method", "vae", "--k", "1", "--epochs", "1", "--eval-samples", "20",
         "--no-progress"]
# The run cases start from the fixture's own command, so that a case the code wrongly
# accepts trains one small row (and fails on the changed folder) rather than a profile.
RUN = TRAIN
GARBAGE = b"\x00\xff\xfe\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


def genvar(args: list[str], cwd: Path, timeout: float = COMMAND_TIMEOUT_SECONDS):
    env = {**os.environ, "GENVAR_DATA_DIR": DATA_DIR, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "genvar_bench", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A results folder (--out) holding one finished digits row and its files."""
    root = tmp_path_factory.mktemp("trained")
    done = genvar([*TRAIN, "--out", "DIR"], cwd=root, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test NLL" in done.stderr
    return root / "DIR"


@dataclass
class Where:
    """A case's places: `work` (the command's folder) holds `out`, the copy of the results
    folder, whose digits/quick folder is `folder`."""
    work: Path
    out: Path

    @property
    def folder(self) -> Path:
        return self.out / "digits" / "quick"

    @property
    def model(self) -> Path:
        [model] = sorted((self.folder / "models").glob("*.safetensors"))
        return model

    def file(self, name: str = "a-file", content: bytes = b"not a folder\n") -> Path:
        path = self.work / name
        path.write_bytes(content)
        return path


def nothing(where: Where) -> None:
    pass


@dataclass
class Case:
    id: str
    args: Callable[[Where], list[str]]
    names: tuple[str, ...]  # what the error line must contain (the problem, named)
    prepare: Callable[[Where], object] = nothing
    argparse: bool = False  # accept argparse's "<prog> <command>: error: ..." line too
    within_seconds: float | None = None

    def __str__(self) -> str:
        return self.id


# --- preparations --------------------------------------------------------------------

def store_removed(where: Where) -> None:
    (where.folder / "results.sqlite").unlink()
    for extra in ("results.sqlite-wal", "results.sqlite-shm"):
        (where.folder / extra).unlink(missing_ok=True)


def csv_is_a_folder(where: Where) -> None:
    store_removed(where)
    (where.folder / "results.csv").unlink()
    (where.folder / "results.csv").mkdir()


def csv_is_garbage(where: Where) -> None:
    store_removed(where)
    (where.folder / "results.csv").write_bytes(GARBAGE)


def profile_folder_is_a_file(where: Where) -> None:
    shutil.rmtree(where.folder)
    where.folder.write_text("not a folder\n")


def edited_metadata(**changes) -> Callable[[Where], None]:
    """Edits the kept model's json (models/<artifact>.json) in place: top-level fields, or
    the spec's as spec_<name>; None removes the field."""
    def prepare(where: Where) -> None:
        path = where.model.with_suffix(".json")
        metadata = json.loads(path.read_text())
        for name, value in changes.items():
            target, key = (metadata["spec"], name[5:]) if name.startswith("spec_") else (metadata, name)
            if value is None:
                del target[key]
            else:
                target[key] = value
        path.write_text(json.dumps(metadata, indent=1, sort_keys=True) + "\n")
    return prepare


def score_model(where: Where) -> list[str]:
    return ["score", str(where.model), "--no-progress"]


CASES = [
    # run
    Case("run-method-comma", lambda w: [*RUN, "--method", ",", "--out", str(w.out)],
         ("--method",)),
    Case("run-checkpoint-minutes-nan",
         lambda w: [*RUN, "--checkpoint-minutes", "nan", "--out", str(w.out)],
         ("--checkpoint-minutes", "nan")),
    Case("run-device-cpu5", lambda w: [*RUN, "--devices", "cpu:5", "--out", str(w.out)],
         ("cpu:5",), argparse=True),
    Case("run-k-too-large", lambda w: [*RUN, "--k", "1000000", "--out", str(w.out)],
         ("k=1000000", "GiB", "--allow-large"), within_seconds=60),
    Case("run-out-is-a-file", lambda w: [*RUN, "--out", str(w.file())],
         ("--out", "a-file", "is a file")),
    Case("run-profile-folder-is-a-file", lambda w: [*RUN, "--out", str(w.out)],
         ("digits/quick", "is a file"), prepare=profile_folder_is_a_file),
    Case("run-results-csv-is-a-folder", lambda w: [*RUN, "--out", str(w.out)],
         ("results.csv", "folder"), prepare=csv_is_a_folder),
    Case("run-results-csv-garbage", lambda w: [*RUN, "--out", str(w.out)],
         ("results.csv", "not a readable results table"), prepare=csv_is_garbage),
    Case("run-epochs-0", lambda w: [*RUN, "--epochs", "0", "--out", str(w.out)],
         ("--epochs", "positive integer", "'0'"), argparse=True),
    Case("run-eval-samples-negative", lambda w: [*RUN, "--eval-samples", "-1", "--out", str(w.out)],
         ("--eval-samples", "positive integer", "'-1'"), argparse=True),
    Case("run-unknown-method", lambda w: [*RUN, "--method", "no-such-method", "--out", str(w.out)],
         ("unknown method", "no-such-method")),
    Case("run-noise-1000", lambda w: [*RUN, "--method", "dae", "--noise", "1000", "--out", str(w.out)],
         ("--noise", "1000"), argparse=True),
    # report
    Case("report-out-is-a-file", lambda w: ["report", "--out", str(w.file())],
         ("--out", "a-file", "not a folder")),
    Case("report-results-csv-garbage", lambda w: ["report", "--out", str(w.out)],
         ("results.csv", "not a readable results table"), prepare=csv_is_garbage),
    # score
    Case("score-no-such-model", lambda w: ["score", str(w.folder / "models" / "absent.safetensors")],
         ("absent.safetensors", "no such model")),
    Case("score-unknown-method", score_model, ("'no-such-method'", "not registered"),
         prepare=edited_metadata(spec_method="no-such-method")),
    Case("score-no-data-dim", score_model, ("malformed model metadata", "data_dim"),
         prepare=edited_metadata(data_dim=None)),
    Case("score-layers-9", score_model, ("layers", "9"), prepare=edited_metadata(spec_layers=9)),
    Case("score-k-negative", score_model, ("(k)", "-3"), prepare=edited_metadata(spec_k=-3)),
    Case("score-csv-is-a-folder",
         lambda w: [*score_model(w), "--csv", str(w.work / "a-folder")],
         ("--csv", "a-folder", "folder"), prepare=lambda w: (w.work / "a-folder").mkdir()),
    Case("score-csv-garbage", lambda w: [*score_model(w), "--csv", str(w.file("garbage.csv", GARBAGE))],
         ("--csv", "garbage.csv", "not a readable CSV")),
    Case("score-data-of-another-kind", lambda w: [*score_model(w), "--dataset", "digits-grey"],
         ("digits-grey", "binary", "continuous")),
    # sample
    Case("sample-num-100000", lambda w: ["sample", str(w.model), "--num", "100000", "--out", "s.png"],
         ("--num", "100000")),
    Case("sample-out-under-a-file",
         lambda w: ["sample", str(w.model), "--out", str(w.file() / "x.png")],
         ("a-file", "not a folder")),
    Case("sample-out-not-png", lambda w: ["sample", str(w.model), "--out", "x.txt"],
         ("x.txt", ".png")),
]


def snapshot(root: Path) -> dict[str, str]:
    """Every file's sha256 and every folder under root, by relative path."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if path.is_symlink():
            found[relative] = f"link to {os.readlink(path)}"
        elif path.is_dir():
            found[relative] = "folder"
        else:
            found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input_is_refused_with_one_line_and_changes_nothing(case, trained, tmp_path):
    where = Where(work=tmp_path, out=tmp_path / "out")
    shutil.copytree(trained, where.out)
    case.prepare(where)
    args = case.args(where)
    before = snapshot(tmp_path)
    started = time.perf_counter()
    try:
        done = genvar(args, cwd=tmp_path)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"{args} ran past {expired.timeout} s instead of refusing its input:\n"
                    f"{(expired.stderr or b'')[-2000:]!r}")
    seconds = time.perf_counter() - started
    stderr = done.stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    shown = f"exit {done.returncode}, stderr:\n{stderr[-3000:]}"

    assert done.returncode != 0, shown
    assert "Traceback" not in stderr, shown
    assert lines, shown
    last = lines[-1]
    usage = re.fullmatch(rf"python -m genvar_bench {args[0]}: error: .+", last)
    if case.argparse and usage:
        assert done.returncode == 2 and any(line.startswith("usage:") for line in lines), shown
    else:
        assert last.startswith("error:"), shown
    for name in case.names:
        assert name in last, f"the error line does not name {name!r}: {last}"
    if case.within_seconds is not None:
        assert seconds < case.within_seconds, f"refused only after {seconds:.0f} s: {shown}"
    after = snapshot(tmp_path)
    changed = sorted(set(before.items()) ^ set(after.items()))
    assert after == before, f"the command changed {changed}; {shown}"
