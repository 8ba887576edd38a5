"""`python -m genvar_bench run`: train and score configurations and add their rows to the
results table, in three steps: `plan_run` (the configurations asked for, less those done),
an executor running them (`executors`: here, or as Ray tasks), and `record_row` (each row
checked and written as it finishes)."""
from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from genvar_bench import executors, parallel, results, runner
from genvar_bench.cli import arguments, capacity
from genvar_bench.registry import METHODS, Option, method_spec_options, resolved_option_defaults
from genvar_bench.data import DATASET_KINDS, DATASETS
from genvar_bench.ops import BACKENDS
from genvar_bench.profiles import PROFILES, get_profile
from genvar_bench.spec import RunSpec, make_spec

# `run --all`: every registered method for the dataset's kind of data, vae and iwae at
# these k, the others at their own defaults.
ALL_SAMPLE_COUNTS = {"vae": (1, 5, 50), "iwae": (1, 5, 50)}


def add_parser(commands) -> None:
    run = commands.add_parser("run", help="train and score methods; add their rows to the table")
    run.add_argument("--method", type=arguments.name_list, default=None,
                     help="comma-separated method names (default: vae,iwae); known: "
                          + ", ".join(sorted(METHODS)))
    run.add_argument("--plugin", action="append", default=[], metavar="FILE.py|MODULE",
                     help="load methods from a Python file or module that registers them "
                          "(repeatable); installed packages' entry points "
                          "(group genvar_bench.methods) load always")
    run.add_argument("--all", action="store_true",
                     help="every method for the dataset's kind of data, vae and iwae at "
                          "k = 1, 5, 50, the others at their own k")
    run.add_argument("--k", type=arguments.int_list, default=None,
                     help="comma-separated k, what each method counts: " + "; ".join(
                         f"{meaning} ({', '.join(names)})" for meaning, names in _k_meanings().items())
                     + " (default: the method's, else the profile's)")
    run.add_argument("--layers", type=arguments.int_list, default=[1], help="stochastic layers: 1 and/or 2")
    run.add_argument("--dataset", choices=DATASETS, default=None,
                     help="default: the profile's (quick: digits; standard, paper: mnist)")
    run.add_argument("--binarization", choices=("fixed", "dynamic"), default="fixed",
                     help="binary data made from grey images (fashion-mnist, digits): fixed, the "
                          "dataset's one draw (default), or dynamic, a fresh Bernoulli draw of "
                          "each training image per pass (test: the fixed draw)")
    run.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    run.add_argument("--device", "--devices", dest="devices", type=arguments.device_list, default=["cpu"],
                     help="comma-separated devices: cpu, cuda[:N] (default cpu)")
    run.add_argument("--backend", "--backends", dest="backends", type=arguments.choice_list("backend", BACKENDS),
                     default=["fused"], help="fused (default), reference, or both: fused,reference")
    run.add_argument("--seed", "--seeds", dest="seeds", type=arguments.seed_list, default=[0],
                     help="comma-separated seeds, one row each (default 0)")
    run.add_argument("--force", action="store_true",
                     help="rerun configurations that already have a row in results.csv")
    run.add_argument("--checkpoint-minutes", type=float, default=5.0,
                     help="minutes between training checkpoints (default 5); a killed run "
                          "resumes from its last one")
    run.add_argument("--config", default=None, metavar="FILE.yaml",
                     help="run a sweep file (`sweeps/*.yaml`: methods, k, layers, seeds, data, "
                          "profile, overrides); beside it only how-to-run flags (--out, --force, "
                          "--executor, ...)")
    run.add_argument("--out", default=None, help="results folder (default: the sweep file's "
                                                 "out, else results/)")
    run.add_argument("--tensorboard", default=None, metavar="DIR",
                     help="also log each row's curves, bounds and sample grids for TensorBoard "
                          "under DIR (one run per row; pip install -e \".[tensorboard]\"), then "
                          "tensorboard --logdir DIR")
    run.add_argument("--data-dir", default=None, help="folder holding binarized_mnist.npz or the Fashion-MNIST idx files (fashion-mnist/)")
    run.add_argument("--epochs", type=arguments.positive_int, default=None,
                     help="override the profile's number of epochs (its schedule is cut)")
    run.add_argument("--eval-samples", type=arguments.positive_int, default=None,
                     help="importance samples of the test NLL (default: the profile's, 5000)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.add_argument("--allow-large", action="store_true",
                     help="run configurations whose estimated memory exceeds what is available")
    executors.add_arguments(run)
    add_method_options(run)
    run.set_defaults(handler=command_run)


def _k_meanings() -> dict[str, list[str]]:
    meanings: dict[str, list[str]] = {}
    for name in sorted(METHODS):
        meanings.setdefault(METHODS[name].k_meaning, []).append(name)
    return meanings


def registered_options() -> dict[str, tuple[Option, list[str]]]:
    """{option name: (its declaration, the methods that have it)} over the registry."""
    found: dict[str, tuple[Option, list[str]]] = {}
    for name in sorted(METHODS):
        for option in METHODS[name].options:
            found.setdefault(option.name, (option, []))[1].append(name)
    return found


def _option_list(option: Option):
    """The argparse type of an option's flag: a checked comma list, repeats dropped."""
    def parse(text: str) -> list:
        try:
            return arguments.unique(option.parse(text), text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error))
    return parse


def add_method_options(run) -> None:
    """One flag per option declared by a registered method (built-in or plugin)."""
    group = run.add_argument_group(
        "method options", "each applies to the methods that have it; comma lists run every value")
    for name, (option, methods) in sorted(registered_options().items()):
        group.add_argument(option.flag, dest=name, type=_option_list(option), default=None,
                           help=f"{', '.join(methods)}: {option.help}")



def build_configs(args, profile, data) -> list[tuple[RunSpec, str]]:
    """(spec, device) of every (method, options, k, layers, seed, device, backend) asked
    for, each option only where the method has it; an option no chosen method has is an
    error. Defaults that depend on the profile (T of diffusion) or the data (RBM hidden
    units) are filled in. Devices that give the same spec (cpu and cpu:0) run once."""
    if args.all:
        from genvar_bench.plugins import FROM_ENTRY_POINTS, plugin_source

        # built-in methods and those of the plug-ins this command names or packages install
        # (not those a sweep file's other entries load)
        allowed = FROM_ENTRY_POINTS | {plugin_source(source) for source in args.plugin}
        methods = [name for name in METHODS if METHODS[name].data_kind == data.kind
                   and (METHODS[name].plugin is None or METHODS[name].plugin in allowed)]
    else:
        methods = args.method or ["vae", "iwae"]
    given = {name: getattr(args, name) for name in registered_options()
             if getattr(args, name, None) is not None}
    accepted = {name: method_spec_options(name) for name in methods}
    unused = [name for name in given if not any(name in options for options in accepted.values())]
    if unused:
        sys.exit(f"error: --{unused[0].replace('_', '-')} applies to none of the methods "
                 f"{', '.join(methods)}")
    configs: dict[str, tuple[RunSpec, str]] = {}
    for method in methods:
        defaults = resolved_option_defaults(method, profile, data.data_dim)
        names = sorted(defaults)
        sample_counts = (args.k or (ALL_SAMPLE_COUNTS.get(method) if args.all else None)
                         or METHODS[method].default_num_samples
                         or profile.num_samples)
        for values in itertools.product(*(given.get(name, [defaults[name]]) for name in names)):
            for k, layers, seed, device, backend in itertools.product(
                    sample_counts, args.layers, args.seeds, args.devices, args.backends):
                spec = make_spec(method, tuple(zip(names, values)), k, layers, seed, device,
                                 backend, profile, data)
                if spec.hash in configs:
                    print(f"warning: {spec.label} seed {spec.seed} on {device} is the same run "
                          f"as on {configs[spec.hash][1]}; it runs once", file=sys.stderr)
                    continue
                configs[spec.hash] = (spec, device)
    return list(configs.values())


def existing_hashes(directory) -> set[str]:
    """The spec hash of every finished row (status ok: not failed, not invalid) of a
    results folder."""
    table = results.read_results(directory)
    if table.empty:
        return set()
    for _, row in table[table["status"] == "invalid"].iterrows():
        print(f"warning: {row['error']}; it is run again", file=sys.stderr)
    return results.done_hashes(table)


@dataclass
class Plan:
    """What a `run` does: its configurations, the results folder, the keys of the rows
    already there (skipped unless --force), and a job for each configuration left."""

    profile: object
    dataset: object
    configs: list
    directory: Path
    done: set
    jobs: list = field(default_factory=list)


def checked_settings(args):
    """(profile, dataset, rank): every argument checked before any work starts, each
    problem a one-line error; under torchrun, the process group joined."""
    args.out = args.out or "results"
    if args.all and args.method:
        sys.exit("error: --all runs every method; give --method or --all, not both")
    if args.method is not None and not args.method:  # e.g. --method , (else: the default methods)
        sys.exit("error: --method names no method; give comma-separated method names")
    profile = get_profile(args.profile)
    if args.epochs is not None:
        profile = profile.scaled(args.epochs)
    if args.eval_samples is not None:
        profile = type(profile)(**{**profile.__dict__, "eval_samples": args.eval_samples})
    if args.checkpoint_minutes < 0:
        sys.exit(f"error: --checkpoint-minutes must be >= 0, got {args.checkpoint_minutes}")
    if not math.isfinite(args.checkpoint_minutes):
        sys.exit(f"error: --checkpoint-minutes must be a finite number, got {args.checkpoint_minutes}")
    capacity.check_out_dir(args.out)
    if getattr(args, "tensorboard", None):
        from genvar_bench.tensorboard_log import available

        problem = available()
        if problem is not None:
            sys.exit(f"error: {problem}")
        capacity.writable_folder(Path(args.tensorboard), "--tensorboard")
    # Under torchrun every process trains each configuration on its share of the batches;
    # process 0 alone scores, prints and writes.
    rank, args.devices = parallel.join_group(args.devices)
    for device in args.devices:
        for backend in args.backends:
            arguments.check_device(device, backend)
    unknown = [name for name in args.method or [] if name not in METHODS]
    if unknown:
        sys.exit(f"error: unknown method {', '.join(unknown)}; known: {', '.join(sorted(METHODS))}")
    dataset = arguments.load_data_or_exit(args.dataset or profile.dataset, args.data_dir,
                                          args.binarization)
    mismatched = sorted({name for name in (args.method or []) if name in METHODS
                         and METHODS[name].data_kind != dataset.kind})
    if mismatched:
        sys.exit(f"error: {', '.join(mismatched)} cannot model {dataset.name} ({dataset.kind} data); "
                 f"datasets by kind: " + "; ".join(
                     f"{kind}: {', '.join(names)}" for kind, names in DATASET_KINDS.items()))
    return profile, dataset, rank


def plan_run(args, profile, dataset, rank: int = 0) -> Plan:
    """The configurations asked for and, for those not done, their jobs; with --force
    every configuration is a job and starts afresh (its checkpoint deleted). Everything
    the jobs need (folders, disk, memory) is checked here, before any of them starts."""
    configs = build_configs(args, profile, dataset)
    directory = results.table_dir(args.out, dataset.name, profile.name)
    try:
        done = set() if args.force else existing_hashes(directory)
    except results.ResultsFileError as error:
        sys.exit(f"error: {error}")
    plan = Plan(profile, dataset, configs, directory, done)
    for index, (spec, device) in enumerate(configs):
        where = (f"[{index + 1}/{len(configs)}] {spec.label} on {dataset.name} "
                 f"({device}, {spec.backend}, seed {spec.seed})")
        if spec.hash in done:
            if rank == 0:
                print(f"{where}: in results, skipped (--force reruns it)", file=sys.stderr, flush=True)
            continue
        checkpoint = runner.checkpoint_path(directory, spec)
        if args.force and rank == 0:
            checkpoint.unlink(missing_ok=True)
        arguments = dict(show_progress=rank == 0 and not args.no_progress, checkpoint=checkpoint,
                         checkpoint_seconds=60 * args.checkpoint_minutes, directory=directory)
        if getattr(args, "tensorboard", None):
            arguments["tensorboard"] = Path(args.tensorboard).absolute()
        plan.jobs.append(executors.Job(where, spec, device, arguments))
    if rank == 0 and plan.jobs:
        capacity.check_jobs(plan.jobs, directory, dataset, args.allow_large)
    return plan


def record_row(args, dataset, profile, spec: RunSpec, row: dict | None, message: str = "",
               error: BaseException | None = None) -> dict:
    """Checks a finished row (an impossible one becomes a failed row) and stores it, or the
    failed row of `message`, in the results folder; returns what was written. A failed
    row keeps its traceback in failures/<file stem>.txt, named in its `traceback` column;
    it never replaces a finished row of the same spec (--force), whose files stay. A
    finished row that replaces another takes its files' place: the old ones are removed
    once the new row is stored."""
    from genvar_bench.tables import write_results_markdown

    directory = results.table_dir(args.out, dataset.name, profile.name)
    if row is not None:
        problem = results.row_problem(row, dataset.kind == "binary")
        if problem is not None:
            row = {**row, "status": "failed", "error": f"impossible result: {problem}"}
    else:
        row = results.failed_row(spec, message, runner.git_commit())
    if getattr(args, "sweep", None):
        row = {**row, "sweep": args.sweep}
    previous = results.stored_row(directory, spec)
    if row["status"] != "ok":
        row["traceback"] = _keep_traceback(directory, spec, row["error"], error)
        if previous is not None and previous.get("status") == "ok":
            print(f"    the finished row of {spec.label} seed {spec.seed} is kept", file=sys.stderr)
            return row
    results.update_results(args.out, dataset.name, profile.name, [(spec, row)],
                           render=write_results_markdown)
    old = previous.get("artifact") if previous is not None else None
    if row["status"] == "ok" and isinstance(old, str) and old and old != row.get("artifact"):
        try:
            runner.remove_artifacts(directory, old)
        except OSError as error:  # the new row is stored; the old files only take room
            print(f"    warning: the replaced row's files were not removed ({error})", file=sys.stderr)
    return row


def _keep_traceback(directory, spec: RunSpec, message: str, error: BaseException | None) -> str:
    """failures/<file stem>.txt with the message and the traceback; its path relative to
    the results folder, or "" when it cannot be written (a full disk)."""
    import traceback

    from genvar_bench.atomic import write_text_atomic

    text = message + "\n"
    if error is not None:
        text += "".join(traceback.format_exception(type(error), error, error.__traceback__))
    relative = f"failures/{spec.file_stem}.txt"
    try:
        write_text_atomic(directory / relative, text)
    except OSError:
        return ""
    return relative


class SweepProgress:
    """Rows done out of all the rows a command runs, with an ETA from the mean time of the
    rows done so far; printed after each row."""

    def __init__(self, total: int):
        import time

        self.total, self.done, self.start, self.clock = total, 0, time.monotonic(), time.monotonic

    def row_done(self) -> str:
        self.done += 1
        elapsed = self.clock() - self.start
        left = (self.total - self.done) * elapsed / self.done
        eta = "" if self.done == self.total else f", about {_duration(left)} left"
        return f"    rows {self.done}/{self.total} done in {_duration(elapsed)}{eta}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def command_run(args) -> int:
    if args.config is not None:
        return command_sweep(args)
    profile, dataset, rank = checked_settings(args)
    runner.git_commit()  # read before training: later commits must not relabel these rows
    plan = plan_run(args, profile, dataset, rank)
    progress = SweepProgress(len(plan.jobs))
    return execute(args, profile, dataset, plan, rank, progress)


def command_sweep(args) -> int:
    """`run --config FILE.yaml`: every entry of the sweep file parsed, checked and planned
    (its folders, disk and memory included) before any trains; then each runs as its
    `run` command would, its rows recording the file they came from."""
    from genvar_bench import sweeps

    given = _what_flags_given(args)
    if given:
        sys.exit(f"error: {given[0]} is set in the sweep file, not beside --config "
                 f"(beside it: {', '.join('--' + flag.replace('_', '-') for flag in sweeps.HOW_FLAGS)})")
    try:
        sweep = sweeps.load(args.config, set(registered_options()))
    except sweeps.SweepError as error:
        sys.exit(f"error: {error}")
    checked = []
    for entry in sweep.entries:  # every entry checked before any folder is made
        entry_args = _entry_arguments(args, entry, sweep)
        with _at_line(sweep, entry.line):
            profile, dataset, rank = checked_settings(entry_args)
            build_configs(entry_args, profile, dataset)
        checked.append((entry, entry_args, profile, dataset, rank))
    planned = []
    for entry, entry_args, profile, dataset, rank in checked:
        with _at_line(sweep, entry.line):
            planned.append((entry_args, profile, dataset, plan_run(entry_args, profile, dataset, rank), rank))
    runner.git_commit()
    progress = SweepProgress(sum(len(plan.jobs) for *_, plan, _ in planned))
    print(f"{sweep.path}: {len(planned)} runs, {progress.total} rows to train", file=sys.stderr)
    status = 0
    for entry_args, profile, dataset, plan, rank in planned:
        result = execute(entry_args, profile, dataset, plan, rank, progress)
        if result == 130:
            return result
        status = status or result
    return status


@contextlib.contextmanager
def _at_line(sweep, line: int):
    """A one-line error inside the block told at the sweep file's line."""
    try:
        yield
    except SystemExit as exit_:
        if isinstance(exit_.code, str):
            sys.exit(f"error: {sweep.path}:{line}: {exit_.code.removeprefix('error: ')}")
        raise


def _what_flags_given(args) -> list[str]:
    """The flags beside --config that say what to run (those belong in the file)."""
    from genvar_bench import sweeps

    parser = _run_parser()
    defaults = {action.dest: action.default for action in parser._actions}
    return [option for action in parser._actions
            if action.dest not in (*sweeps.HOW_FLAGS, "config", "help")
            and getattr(args, action.dest, None) != defaults[action.dest]
            for option in action.option_strings[:1]]


def _run_parser():
    """A parser of `run`'s arguments alone, whose errors raise SystemExit with one line."""
    parser = argparse.ArgumentParser(prog="run")
    commands = parser.add_subparsers()
    add_parser(commands)
    run = commands.choices["run"]

    def error(message):
        raise SystemExit(f"error: {message}")

    run.error = error  # type: ignore[method-assign]
    return run


def _entry_arguments(args, entry, sweep):
    """The arguments of one sweep entry: its own `run` flags, with the how-to-run flags of
    the command line (--out there wins over the file's)."""
    from genvar_bench import sweeps

    parser = _run_parser()
    try:
        entry_args = parser.parse_args(entry.argv)
    except SystemExit as exit_:
        line = entry.line_of(parser.parse_args)
        sys.exit(f"error: {sweep.path}:{line}: {str(exit_.code).removeprefix('error: ')}")
    for flag in sweeps.HOW_FLAGS:
        if hasattr(args, flag):
            setattr(entry_args, flag, getattr(args, flag))
    entry_args.out = args.out or entry.out or "results"
    entry_args.sweep = sweep.source
    return entry_args


def execute(args, profile, dataset, plan, rank: int, progress: SweepProgress) -> int:
    """Runs a plan's jobs on the executor `args` name and records each row as it finishes."""
    if rank != 0:  # the same jobs as process 0, which alone scores and writes
        for _ in executors.LocalExecutor(announce=False).run(plan.jobs, dataset, profile):
            pass
        return 0
    executor = executors.from_args(args)
    finished, failed = 0, []
    try:
        for job, row, error in executor.run(plan.jobs, dataset, profile):  # as each finishes
            print(progress.row_done(), file=sys.stderr, flush=True)
            spec = job.spec
            try:
                if error is not None:  # a failing method is a failed row; the others go on
                    row = record_row(args, dataset, profile, spec, None,
                                     f"{type(error).__name__}: {error}", error)
                else:
                    row = record_row(args, dataset, profile, spec, row)
            except (results.ResultsFileError, OSError) as caught:  # e.g. a full disk
                failed.append(spec.label)
                print(f"    FAILED, not recorded: {caught}", file=sys.stderr, flush=True)
                continue
            if row["status"] == "ok":
                job.arguments["checkpoint"].unlink(missing_ok=True)
            else:
                failed.append(spec.label)
                print(f"    FAILED: {row['error']}", file=sys.stderr, flush=True)
                continue
            finished += 1
            bits = f" ({row['test_bits_per_dim']:.3f} bits/dim)" if "test_bits_per_dim" in row else ""
            print(f"    test NLL {row['test_nll']:.2f}{bits}  test bound {row['test_bound']:.2f}  "
                  f"-> {plan.directory / 'results.csv'}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {finished} of {len(plan.configs)} rows finished and kept; the same "
              "command resumes (training from its last checkpoint)", file=sys.stderr)
        return 130
    skipped = len(plan.configs) - len(plan.jobs)
    print(f"{finished} rows finished, {skipped} skipped, {len(failed)} failed"
          + (f": {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0
