"""Where `run` trains its configurations: one after another in this process (`local`,
also each process's loop under torchrun), or as Ray tasks on a local or existing Ray
cluster (`ray`). An executor takes the jobs and yields each one's row, or the exception
that failed it, as it finishes; the caller alone writes rows (one writer)."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from genvar_bench import plugins, runner
from genvar_bench import parallel
from genvar_bench.spec import RunSpec

EXECUTORS = ("local", "ray")
# Ray reruns a task whose worker died (killed, lost node) this many times; it resumes from
# the configuration's last checkpoint. A task that raises is not rerun: it is a failed row.
RAY_RETRIES = 3


@dataclass
class Job:
    title: str  # e.g. "[3/12] vae k=1 L=1 on digits (cpu, fused, seed 0)"
    spec: RunSpec
    device: str  # where it trains, e.g. cuda:1 (the spec has the device type)
    arguments: dict = field(default_factory=dict)  # run_one's keyword arguments


Outcome = tuple[Job, "dict | None", "Exception | None"]


class LocalExecutor:
    """Each job in turn, in this process (the processes of a torchrun group each run the
    same jobs: see `run_in_group`)."""

    def __init__(self, announce: bool = True):
        self.announce = announce

    def run(self, jobs: list[Job], data, profile) -> Iterator[Outcome]:
        for job in jobs:
            if self.announce:
                print(job.title, file=sys.stderr, flush=True)
            try:
                row = run_in_group(job, data, profile)
            except Exception as error:  # a failing configuration is a failed row
                yield job, None, error
            else:
                yield job, row, None


def run_in_group(job: Job, data, profile) -> dict:
    """run_one(job), the failures of a torchrun group agreed (`parallel.run_in_group`)."""
    return parallel.run_in_group(
        lambda: runner.run_one(job.spec, data, job.device, **job.arguments), job.device)


class RayExecutor:
    """Every job as a Ray task, `cpus_per_run` CPUs (torch threads) and `gpus_per_run`
    GPUs each (fractions pack several runs on one GPU); rows come back as tasks finish."""

    def __init__(self, address: str | None = None, cpus_per_run: float = 1.0,
                 gpus_per_run: float | None = None):
        self.address, self.cpus_per_run, self.gpus_per_run = address, cpus_per_run, gpus_per_run

    def run(self, jobs: list[Job], data, profile) -> Iterator[Outcome]:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=True)
        data_ref, remote = ray.put(data), ray.remote(_run_task)
        pending, started = {}, time.perf_counter()
        for job in jobs:
            gpus = self.gpus_per_run
            if gpus is None:  # a CUDA configuration gets a GPU unless told otherwise
                gpus = 1.0 if job.spec.device == "cuda" else 0.0
            task = remote.options(num_cpus=self.cpus_per_run, num_gpus=gpus,
                                     max_retries=RAY_RETRIES, retry_exceptions=False,
                                     name=f"genvar_bench:{job.spec.file_stem}")
            arguments = {name: Path(value).absolute() if isinstance(value, Path) else value
                         for name, value in job.arguments.items()}
            reference = task.remote(job.spec, job.device, data_ref, arguments,
                                    max(1, int(self.cpus_per_run)), list(plugins.LOADED))
            pending[reference] = job
            print(f"{job.title}: submitted", file=sys.stderr, flush=True)
        try:
            while pending:
                [done], _ = ray.wait(list(pending), num_returns=1)
                job = pending.pop(done)
                minutes = (time.perf_counter() - started) / 60
                print(f"{job.title}: done at {minutes:.1f} min", file=sys.stderr, flush=True)
                try:
                    row = ray.get(done)
                except ray.exceptions.RayTaskError as error:  # the task raised
                    cause = getattr(error, "cause", None)
                    yield job, None, cause if isinstance(cause, Exception) else error
                except ray.exceptions.RayError as error:  # e.g. a worker died RAY_RETRIES + 1 times
                    yield job, None, error
                else:
                    yield job, row, None
        finally:  # interrupted: stop the rest; their checkpoints resume them next time
            for reference in pending:
                ray.cancel(reference)


def _run_task(spec, device, data, arguments: dict, threads: int,
              plugin_sources: tuple[str, ...] = ()) -> dict:
    """A Ray task: run_one with the driver's arguments, on `threads` torch threads, after
    loading the plugins the driver loaded (a worker is a fresh process)."""
    import torch

    for source in plugin_sources:
        plugins.load_plugin(source)
    torch.set_num_threads(threads)
    runner.git_commit()  # read as the code is imported, as `run` does before training
    return runner.run_one(spec, data, device, **arguments)


def add_arguments(parser) -> None:
    """`run`'s executor options."""
    group = parser.add_argument_group(
        "executor", "where the configurations train: here, one after another (local), or as "
                    "Ray tasks on a Ray cluster (ray; pip install -e \".[ray]\")")
    group.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="local (default) or ray")
    group.add_argument("--ray-address", default=None,
                       help="ray: the cluster to join, e.g. auto (the one this machine belongs to) "
                            "or ray://head:10001; default: $RAY_ADDRESS, else a local Ray started here")
    group.add_argument("--cpus-per-run", type=_number(0.0, False), default=None,
                       help="ray: CPUs reserved per configuration, also its torch threads (default 1)")
    group.add_argument("--gpus-per-run", type=_number(0.0, True), default=None,
                       help="ray: GPUs reserved per configuration; fractions such as 0.25 pack "
                            "several runs on one GPU (default 1 for --device cuda, else 0)")


def _number(low: float, inclusive: bool):
    import argparse

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
        if not (value >= low if inclusive else value > low) or value == float("inf"):
            raise argparse.ArgumentTypeError(
                f"expected a number {'>=' if inclusive else '>'} {low:g}, got {text!r}")
        return value
    return parse


def from_args(args):
    """The executor `run`'s options ask for; exits with a message on options that clash."""
    import os

    if args.executor == "local":
        given = [flag for flag, value in (("--ray-address", args.ray_address),
                                          ("--cpus-per-run", args.cpus_per_run),
                                          ("--gpus-per-run", args.gpus_per_run)) if value is not None]
        if given:
            sys.exit(f"error: {given[0]} applies to --executor ray only")
        return LocalExecutor()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        sys.exit("error: --executor ray runs each configuration as one Ray task; under torchrun "
                 "use --executor local")
    try:
        import ray  # noqa: F401
    except ImportError:
        sys.exit("error: --executor ray needs Ray: pip install -e \".[ray]\"")
    return RayExecutor(args.ray_address, args.cpus_per_run or 1.0, args.gpus_per_run)
