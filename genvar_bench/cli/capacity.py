"""What `run` checks before any training: that every folder it will write under --out is a
writable folder, that the disk has room for the run's files, and that no configuration
needs more memory than the machine has. Each problem is a one-line exit."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from genvar_bench.registry import METHODS

# The folders of a results folder that `run` writes.
RUN_FOLDERS = ("models", "per_example", "samples", "histories", "curves", "checkpoints", "failures")
# Bytes per float, and the activations and gradients kept per decoder output in a
# training step (a generous multiple: the estimate is meant to refuse what cannot fit).
FLOAT_BYTES, LIVE_COPIES = 4, 8
# Hidden units assumed beside the data in each sample's activations.
HIDDEN_ALLOWANCE = 1000
# Room kept free on the disk beyond the run's own files.
DISK_MARGIN_BYTES = 64 << 20


def writable_folder(path: Path, what: str) -> None:
    """Exits with one line unless `path` is, or can be made, a folder that takes files."""
    if path.exists() and not path.is_dir():
        sys.exit(f"error: {what} {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        sys.exit(f"error: {what} {path} is not a writable folder ({error.strerror or error})")


def check_out_dir(out: str) -> None:
    """Exits with a one-line error unless `out` is, or can be made, a writable folder."""
    writable_folder(Path(out), "--out")


def check_folders(directory: Path) -> None:
    """The results folder and each folder a run writes in it, made and written to."""
    writable_folder(directory, "the results folder")
    for name in RUN_FOLDERS:
        writable_folder(directory / name, "the results folder's")
    for name in ("results.csv", "results.md", "results.sqlite"):
        if (directory / name).is_dir():
            sys.exit(f"error: {directory / name} is a folder; move it aside")


def available_memory_bytes() -> int:
    """MemAvailable of /proc/meminfo, else the physical memory."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def training_memory_bytes(spec, data_dim: int) -> int:
    """An estimate of a training step's peak memory: k samples of every example of a
    batch, each with its decoder output and hidden activations, kept for the gradient
    (Gibbs sweeps are taken one after another and do not multiply it)."""
    per_sample = spec.k if "Gibbs" not in METHODS[spec.method].k_meaning else 1
    return FLOAT_BYTES * LIVE_COPIES * per_sample * spec.batch_size * (data_dim + HIDDEN_ALLOWANCE)


def check_memory(jobs, data_dim: int, allow_large: bool) -> None:
    available = available_memory_bytes()
    for job in jobs:
        need = training_memory_bytes(job.spec, data_dim)
        if need > 0.8 * available and not allow_large:
            sys.exit(f"error: {job.spec.label} needs about {need / 2**30:.1f} GiB per training step "
                     f"(k={job.spec.k} x batch {job.spec.batch_size}), more than the "
                     f"{available / 2**30:.1f} GiB available; use a smaller --k, or --allow-large "
                     "to run it anyway")


def run_files_bytes(spec, data) -> int:
    """An estimate of the files one run writes: the model (with the checkpoint's two
    optimizer moments, four copies of the parameters), per-example figures, images. A
    configuration that builds no model (layers 3, an option out of its range) exits."""
    try:
        method = spec.build_method(data.data_dim)
    except (TypeError, ValueError) as error:
        sys.exit(f"error: {spec.label} cannot be built: {error}")
    parameters = sum(p.numel() for p in method.parameters())
    return 4 * FLOAT_BYTES * parameters + 16 * data.test.shape[0] + (1 << 20)


def check_disk(jobs, directory: Path, data) -> None:
    sizes: dict[tuple, int] = {}
    need = DISK_MARGIN_BYTES
    for job in jobs:
        shape = (job.spec.method, job.spec.options, job.spec.layers, job.spec.k)
        if shape not in sizes:
            sizes[shape] = run_files_bytes(job.spec, data)
        need += sizes[shape]
    free = shutil.disk_usage(directory).free
    if free < need:
        sys.exit(f"error: {directory} has {free / 2**20:.0f} MiB free; these {len(jobs)} runs need "
                 f"about {need / 2**20:.0f} MiB; free some space or run fewer configurations")


def check_jobs(jobs, directory: Path, data, allow_large: bool = False) -> None:
    """Everything the jobs need, checked before the first of them starts; temporaries
    that killed runs left behind are removed."""
    from genvar_bench.atomic import remove_stale_temporaries

    check_folders(directory)
    for folder in (directory, *(directory / name for name in RUN_FOLDERS)):
        remove_stale_temporaries(folder)
    check_memory(jobs, data.data_dim, allow_large)
    check_disk(jobs, directory, data)
