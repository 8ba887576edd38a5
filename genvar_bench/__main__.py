"""Command line: `python -m genvar_bench run ...` trains, scores and tabulates methods;
`report` makes the tables and figures; `score` and `sample` use a kept model;
`bench` checks the kernels' speed-ups."""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import torch

import genvar_bench.methods  # noqa: F401  (registers the built-in methods)
from genvar_bench import data as datasets
from genvar_bench.core import METHODS, Option
from genvar_bench.ops import BACKENDS
from genvar_bench.profiles import PROFILES, get_profile


def _unique(values: list, text: str) -> list:
    """values without repeats, in order; a repeat is dropped with a warning, not run twice."""
    kept = list(dict.fromkeys(values))
    if len(kept) < len(values):
        repeated = sorted({str(value) for value in values if values.count(value) > 1})
        print(f"warning: {text!r} repeats {', '.join(repeated)}; each value runs once",
              file=sys.stderr)
    return kept


def _int_range_list(low: int, high: int):
    """A parser of comma-separated integers in [low, high], repeats dropped."""
    def parse(text: str) -> list[int]:
        try:
            values = [int(item) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
        if not values:
            raise argparse.ArgumentTypeError(f"expected integers, got {text!r}")
        if min(values) < low:
            wanted = {0: "non-negative integers", 1: "positive integers"}.get(low, f"integers >= {low}")
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text!r}")
        if max(values) > high:
            raise argparse.ArgumentTypeError(f"expected integers <= {high}, got {text!r}")
        return _unique(values, text)
    return parse


_int_list = _int_range_list(1, 10**6)
_seed_list = _int_range_list(0, 2**31 - 1)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _name_list(text: str) -> list[str]:
    return _unique([item.strip() for item in text.split(",") if item.strip()], text)


def _device_list(text: str) -> list[str]:
    """Comma-separated torch devices of type cpu or cuda (cuda:N)."""
    devices = _name_list(text)
    for name in devices:
        try:
            kind = torch.device(name).type
        except RuntimeError:
            kind = None
        if kind not in ("cpu", "cuda"):
            raise argparse.ArgumentTypeError(f"unknown device {name!r}: expected cpu, cuda or cuda:N")
    if not devices:
        raise argparse.ArgumentTypeError(f"expected devices, got {text!r}")
    return devices


# `run --all`: every registered method for the dataset's kind of data, vae and iwae at
# these k, the others at their own defaults.
ALL_SAMPLE_COUNTS = {"vae": (1, 5, 50), "iwae": (1, 5, 50)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m genvar_bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train and score methods; add their rows to the table")
    run.add_argument("--method", type=_name_list, default=None,
                     help="comma-separated method names (default: vae,iwae); known: "
                          + ", ".join(sorted(METHODS)))
    run.add_argument("--plugin", action="append", default=[], metavar="FILE.py|MODULE",
                     help="load methods from a Python file or module that registers them "
                          "(repeatable); installed packages' entry points "
                          "(group genvar_bench.methods) load always")
    run.add_argument("--all", action="store_true",
                     help="every method for the dataset's kind of data, vae and iwae at "
                          "k = 1, 5, 50, the others at their own k")
    run.add_argument("--k", type=_int_list, default=None,
                     help="comma-separated k, what each method counts: " + "; ".join(
                         f"{meaning} ({', '.join(names)})" for meaning, names in _k_meanings().items())
                     + " (default: the method's, else the profile's)")
    run.add_argument("--layers", type=_int_list, default=[1], help="stochastic layers: 1 and/or 2")
    run.add_argument("--dataset", choices=datasets.DATASETS, default=None,
                     help="default: the profile's (quick: digits; standard, paper: mnist)")
    run.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    run.add_argument("--device", "--devices", dest="devices", type=_device_list, default=["cpu"],
                     help="comma-separated devices: cpu, cuda[:N] (default cpu)")
    run.add_argument("--backend", "--backends", dest="backends", type=_choice_list("backend", BACKENDS),
                     default=["fused"], help="fused (default), reference, or both: fused,reference")
    run.add_argument("--seed", "--seeds", dest="seeds", type=_seed_list, default=[0],
                     help="comma-separated seeds, one row each (default 0)")
    run.add_argument("--force", action="store_true",
                     help="rerun configurations that already have a row in results.csv")
    run.add_argument("--checkpoint-minutes", type=float, default=5.0,
                     help="minutes between training checkpoints (default 5); a killed run "
                          "resumes from its last one")
    run.add_argument("--out", default="results", help="results folder (default: results/)")
    run.add_argument("--data-dir", default=None, help="folder holding binarized_mnist.npz")
    run.add_argument("--epochs", type=_positive_int, default=None,
                     help="override the profile's number of epochs (its schedule is cut)")
    run.add_argument("--eval-samples", type=_positive_int, default=None,
                     help="importance samples of the test NLL (default: the profile's, 5000)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    from genvar_bench import executors
    executors.add_arguments(run)
    add_method_options(run)
    score = commands.add_parser(
        "score", help="re-score a kept model (results/<dataset>/<profile>/models/*.pt) under the "
                      "protocol of its row and print the row")
    score.add_argument("model", help="a kept model file")
    score.add_argument("--eval-samples", type=_positive_int, default=None,
                       help="importance samples of the test NLL (default: the row's)")
    score.add_argument("--dataset", choices=datasets.DATASETS, default=None,
                       help="default: the one the model was trained on")
    score.add_argument("--data-dir", default=None, help="folder holding binarized_mnist.npz")
    score.add_argument("--device", type=_device_list, default=["cpu"], help="cpu (default) or cuda[:N]")
    score.add_argument("--seed", type=_seed_list, default=None,
                       help="seed of the scoring draws (default: the row's, which reproduces it)")
    score.add_argument("--csv", default=None, help="also append the row to this CSV file")
    score.add_argument("--no-progress", action="store_true", help="hide progress bars")
    sample = commands.add_parser("sample", help="draw samples from a kept model into a PNG grid")
    sample.add_argument("model", help="a kept model file")
    sample.add_argument("--num", type=_positive_int, default=64, help="samples to draw (default 64)")
    sample.add_argument("--out", required=True, help="the PNG file to write")
    sample.add_argument("--seed", type=_seed_list, default=[0], help="seed of the draws (default 0)")
    sample.add_argument("--device", type=_device_list, default=["cpu"], help="cpu (default) or cuda[:N]")
    sample.add_argument("--data-dir", default=None,
                        help="folder holding binarized_mnist.npz (2-D data only: drawn over it)")
    report = commands.add_parser(
        "report", help="summary tables (results.md) and seaborn figures from results/*/*/results.csv")
    report.add_argument("--out", default="results", help="results folder (default: results/)")
    from genvar_bench.bench import add_parser as add_bench_parser
    add_bench_parser(commands)
    return parser


def _k_meanings() -> dict[str, list[str]]:
    meanings: dict[str, list[str]] = {}
    for name in sorted(METHODS):
        meanings.setdefault(getattr(METHODS[name], "k_meaning", "importance samples"), []).append(name)
    return meanings


def registered_options() -> dict[str, tuple[Option, list[str]]]:
    """{option name: (its declaration, the methods that have it)} over the registry."""
    found: dict[str, tuple[Option, list[str]]] = {}
    for name in sorted(METHODS):
        for option in getattr(METHODS[name], "options", ()):
            found.setdefault(option.name, (option, []))[1].append(name)
    return found


def _option_list(option: Option):
    """The argparse type of an option's flag: a checked comma list, repeats dropped."""
    def parse(text: str) -> list:
        try:
            return _unique(option.parse(text), text)
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


def _choice_list(name: str, choices: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        values = _name_list(text)
        bad = [value for value in values if value not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(
                f"{name} must be among {', '.join(choices)}, got {text!r}")
        return values
    return parse


def build_configs(args, profile, data_dim: int, data_kind: str = "binary") -> list:
    """Every (method, options, k, layers, seed, device) asked for, each option only where
    the method has it; an option no chosen method has is an error. Defaults that depend
    on the profile (T of diffusion) or the data (RBM hidden units) are filled in."""
    from genvar_bench.core import method_spec_options, resolved_option_defaults
    from genvar_bench.runner import RunConfig

    if args.all:
        methods = [name for name in METHODS if getattr(METHODS[name], "data_kind", "binary") == data_kind]
    else:
        methods = args.method or ["vae", "iwae"]
    given = {name: getattr(args, name) for name in registered_options()
             if getattr(args, name, None) is not None}
    accepted = {name: method_spec_options(name) for name in methods}
    unused = [name for name in given if not any(name in options for options in accepted.values())]
    if unused:
        sys.exit(f"error: --{unused[0].replace('_', '-')} applies to none of the methods "
                 f"{', '.join(methods)}")
    configs = []
    for method in methods:
        defaults = resolved_option_defaults(method, profile, data_dim)
        names = sorted(defaults)
        sample_counts = (args.k or (ALL_SAMPLE_COUNTS.get(method) if args.all else None)
                         or getattr(METHODS[method], "default_num_samples", None)
                         or profile.num_samples)
        for values in itertools.product(*(given.get(name, [defaults[name]]) for name in names)):
            for k, layers, seed, device, backend in itertools.product(
                    sample_counts, args.layers, args.seeds, args.devices, args.backends):
                configs.append(RunConfig(method, k, layers, seed, device, backend,
                                         tuple(zip(names, values))))
    return configs


def existing_keys(csv_path) -> set[tuple[str, ...]]:
    """The KEY of every finished row of a results.csv (status ok: not failed, not
    invalid), as strings."""
    from genvar_bench.results import key_tuples, read_results

    table = read_results(csv_path)
    if table.empty:
        return set()
    for _, row in table[table["status"] == "invalid"].iterrows():
        print(f"warning: {row['error']}; it is run again", file=sys.stderr)
    return set(key_tuples(table[table["status"] == "ok"]))


def config_key(config) -> tuple[str, ...]:
    return tuple(map(str, (config.method, config.variant, config.num_samples, config.layers,
                           config.seed, torch.device(config.device).type, config.backend)))


def _check_device(device: str, backend: str) -> None:
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"error: --device {device} asked for, but torch {torch.__version__} sees no CUDA device")
    if backend == "fused":
        from genvar_bench._extension import cuda_ops_built, require_extension
        try:
            require_extension()
        except RuntimeError as error:
            sys.exit(f"error: {error}")
        if target.type == "cuda" and not cuda_ops_built():
            sys.exit("error: the op library was built without CUDA kernels; rebuild with "
                     "GENVAR_CUDA=1 pip install --no-build-isolation -e . or use --backend reference")


def init_distributed(args) -> int:
    """Under torchrun (WORLD_SIZE > 1): joins the process group (nccl on GPUs, else gloo)
    and gives each process its GPU; returns the rank (0 outside torchrun)."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0
    import torch.distributed as dist

    on_gpu = any(torch.device(device).type == "cuda" for device in args.devices)
    if on_gpu:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        args.devices = [f"cuda:{local_rank}"]
    if not dist.is_initialized():
        # Processes 1..N-1 wait in a collective while process 0 scores (AIS, k = 5000 on
        # MNIST: up to an hour on a CPU): the default 30-minute timeout would end the group.
        import datetime
        dist.init_process_group("nccl" if on_gpu else "gloo", timeout=datetime.timedelta(hours=6))
    return dist.get_rank()


def check_out_dir(out: str) -> None:
    """Exits with a one-line error unless `out` is, or can be made, a writable folder:
    found before any training, not after it."""
    import os
    import tempfile

    path = Path(out)
    if path.exists() and not path.is_dir():
        sys.exit(f"error: --out {out} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        sys.exit(f"error: --out {out} is not a writable folder ({error.strerror or error})")
    if not os.access(path, os.W_OK | os.X_OK):
        sys.exit(f"error: --out {out} is not a writable folder")


def load_data_or_exit(name: str, data_dir: str | None):
    """The dataset, or a clear one-message exit naming the file and how to supply it."""
    try:
        return datasets.load_dataset(name, data_dir)
    except (datasets.DatasetNotFoundError, datasets.DatasetIntegrityError) as error:
        sys.exit(f"error: {error}")


def plan_run(args, profile, dataset) -> tuple[list, set, Path]:
    """The configurations asked for, the keys of those already done in the results
    folder (empty with --force), and the folder."""
    from genvar_bench.results import ResultsFileError, table_dir

    configs = build_configs(args, profile, dataset.data_dim, dataset.kind)
    directory = table_dir(args.out, dataset.name, profile.name)
    try:
        done = existing_keys(directory / "results.csv")
    except ResultsFileError as error:
        sys.exit(f"error: {error}")
    return configs, set() if args.force else done, directory


def record_row(args, dataset, profile, config, row: dict | None, message: str = "") -> dict:
    """Checks a finished row (an impossible one becomes a failed row) and adds it, or the
    failed row of `message`, to the results table; returns what was written."""
    from genvar_bench.report import write_results_markdown
    from genvar_bench.results import row_problem, update_results

    if row is not None:
        problem = row_problem(row, dataset.kind == "binary")
        if problem is not None:
            row = {**row, "status": "failed", "error": f"impossible result: {problem}"}
    else:
        row = failed_row(config, dataset.name, profile.name, message)
    update_results(args.out, dataset.name, profile.name, [row], render=write_results_markdown)
    return row


def command_run(args) -> int:
    from genvar_bench import runner

    if args.all and args.method:
        sys.exit("error: --all runs every method; give --method or --all, not both")
    profile = get_profile(args.profile)
    if args.epochs is not None:
        profile = profile.scaled(args.epochs)
    if args.eval_samples is not None:
        profile = type(profile)(**{**profile.__dict__, "eval_samples": args.eval_samples})
    if args.checkpoint_minutes < 0:
        sys.exit(f"error: --checkpoint-minutes must be >= 0, got {args.checkpoint_minutes}")
    check_out_dir(args.out)
    # Under torchrun every process trains each configuration on its share of the batches;
    # process 0 alone scores, prints and writes.
    rank = init_distributed(args)
    for device in args.devices:
        for backend in args.backends:
            _check_device(device, backend)
    unknown = [name for name in args.method or [] if name not in METHODS]
    if unknown:
        sys.exit(f"error: unknown method {', '.join(unknown)}; known: {', '.join(sorted(METHODS))}")
    dataset = load_data_or_exit(args.dataset or profile.dataset, args.data_dir)
    mismatched = sorted({name for name in (args.method or []) if name in METHODS
                         and getattr(METHODS[name], "data_kind", "binary") != dataset.kind})
    if mismatched:
        sys.exit(f"error: {', '.join(mismatched)} cannot model {dataset.name} ({dataset.kind} data); "
                 f"datasets by kind: " + "; ".join(
                     f"{kind}: {', '.join(names)}" for kind, names in datasets.DATASET_KINDS.items()))
    runner.git_commit()  # read before training: later commits must not relabel these rows
    configs, done, directory = plan_run(args, profile, dataset)
    todo = [config for config in configs if config_key(config) not in done]
    if args.force:  # --force starts afresh: no checkpoint of an earlier run is resumed
        for config in todo:
            runner.artifact_paths(directory, config)["checkpoint"].unlink(missing_ok=True)
    from genvar_bench import executors
    executor = executors.from_args(args)
    finished, failed, skipped, jobs = 0, [], 0, []
    for index, config in enumerate(configs):
        where = f"{config.label} on {dataset.name} ({config.device}, {config.backend}, seed {config.seed})"
        if config_key(config) in done:
            skipped += 1
            if rank == 0:
                print(f"[{index + 1}/{len(configs)}] {where}: in results.csv, skipped (--force reruns it)",
                      file=sys.stderr, flush=True)
            continue
        jobs.append(executors.Job(f"[{index + 1}/{len(configs)}] {where}", config, dict(
            show_progress=rank == 0 and not args.no_progress,
            checkpoint_seconds=60 * args.checkpoint_minutes, **runner.artifact_paths(directory, config))))
    if rank != 0:  # the same jobs as process 0, which alone scores and writes
        for _ in executors.LocalExecutor(announce=False).run(jobs, dataset, profile):
            pass
        return 0
    try:
        for job, row, error in executor.run(jobs, dataset, profile):  # as each finishes
            config = job.config
            if error is not None:  # a failing method is a failed row; the others go on
                row = record_row(args, dataset, profile, config, None, f"{type(error).__name__}: {error}")
            else:
                row = record_row(args, dataset, profile, config, row)
                if row["status"] == "ok":
                    job.arguments["checkpoint"].unlink(missing_ok=True)
            if row["status"] != "ok":
                failed.append(config.label)
                print(f"    FAILED: {row['error']}", file=sys.stderr, flush=True)
                continue
            finished += 1
            bits = f" ({row['test_bits_per_dim']:.3f} bits/dim)" if "test_bits_per_dim" in row else ""
            print(f"    test NLL {row['test_nll']:.2f}{bits}  test bound {row['test_bound']:.2f}  "
                  f"-> {directory / 'results.csv'}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print(f"\ninterrupted: {finished} of {len(configs)} rows finished and kept; the same "
              "command resumes (training from its last checkpoint)", file=sys.stderr)
        return 130
    print(f"{finished} rows finished, {skipped} skipped, {len(failed)} failed"
          + (f": {', '.join(failed)}" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def failed_row(config, dataset: str, profile: str, message: str) -> dict:
    """A results row for a configuration that raised: its key, status "failed", the error."""
    from genvar_bench.runner import git_commit

    return {"dataset": dataset, "profile": profile, "status": "failed", "error": message,
            "method": config.method, "variant": config.variant, "k": config.num_samples,
            "layers": config.layers, "seed": config.seed,
            "device": torch.device(config.device).type, "backend": config.backend,
            "git_commit": git_commit()}


def _load_model_or_exit(path: str, device: str):
    from genvar_bench.saved import ModelFileError, load_model

    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"error: --device {device} asked for, but torch {torch.__version__} sees no CUDA device")
    try:
        return load_model(path, device=device)
    except ModelFileError as error:
        sys.exit(f"error: {error}")


def command_score(args) -> int:
    """Re-scores a kept model: the scoring preparation (the DAE's prior, AIS for RBMs),
    then `runner.evaluate` with the row's seed and sample count; prints the row."""
    import datetime

    import pandas as pd

    from genvar_bench import runner
    from genvar_bench.atomic import write_text_atomic
    from genvar_bench.results import results_lock, row_problem

    if len(args.device) != 1 or (args.seed is not None and len(args.seed) != 1):
        sys.exit("error: score takes one --device and one --seed")
    device = torch.device(args.device[0])
    method, info = _load_model_or_exit(args.model, args.device[0])
    dataset = load_data_or_exit(args.dataset or info["dataset"], args.data_dir)
    if dataset.data_dim != info["data_dim"]:
        sys.exit(f"error: {args.model} models {info['data_dim']}-dimensional data, "
                 f"{dataset.name} has {dataset.data_dim} dimensions")
    eval_samples = args.eval_samples or info["eval_samples"]
    seed = info["seed"] if args.seed is None else args.seed[0]
    config = runner.RunConfig(info["method"], info["num_samples"], info["layers"], seed,
                              str(device), info["backend"], tuple(sorted(info["options"].items())))
    method.show_progress = not args.no_progress
    method.prepare_scoring(dataset.train.to(device))
    torch.manual_seed(seed + 1)
    scores, _ = runner.evaluate(method, dataset, device, eval_samples, not args.no_progress)
    row = {"model": str(args.model), "dataset": dataset.name, "profile": info["profile"],
           "method": config.method, "variant": config.variant, "k": config.num_samples,
           "layers": config.layers, "seed": seed, "device": device.type, "backend": config.backend,
           **scores, "trained_at_commit": info["git_commit"], "git_commit": runner.git_commit(),
           "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    problem = row_problem(row, dataset.kind == "binary")
    row["status"], row["error"] = ("ok", "") if problem is None else ("failed", f"impossible result: {problem}")
    for name in ("method", "variant", "k", "layers", "seed", "dataset", "test_nll", "nll_estimator",
                 "test_bound", "train_bound", "test_iw_bound_k1", "eval_seconds", "status", "error"):
        if name in row and row[name] != "":
            value = row[name]
            print(f"{name:>18}: {value:.4f}" if isinstance(value, float) else f"{name:>18}: {value}")
    if args.csv:
        csv = Path(args.csv)
        with results_lock(csv):
            table = pd.read_csv(csv) if csv.exists() else pd.DataFrame()
            table = pd.concat([table, pd.DataFrame([row])], ignore_index=True)
            write_text_atomic(csv, table.to_csv(index=False))
        print(f"row appended to {csv}", file=sys.stderr)
    return 0 if problem is None else 1


def command_sample(args) -> int:
    from genvar_bench import figures

    if len(args.device) != 1 or len(args.seed) != 1:
        sys.exit("error: sample takes one --device and one --seed")
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        sys.exit(f"error: --out {args.out} must name a .png file")
    if out.parent.exists() and not out.parent.is_dir():
        sys.exit(f"error: {out.parent} is not a folder")
    method, info = _load_model_or_exit(args.model, args.device[0])
    torch.manual_seed(args.seed[0])
    samples = method.sample(args.num)
    if info["image_shape"] is None:  # 2-D data: drawn over the test set
        figures.save_scatter(samples, load_data_or_exit(info["dataset"], args.data_dir).test, out)
    else:
        figures.save_sample_grid(samples, tuple(info["image_shape"]), out,
                                value_range=tuple(info["value_range"]))
    print(f"{args.num} samples of {info['method']} ({info['artifact']}) -> {out}", file=sys.stderr)
    return 0


def load_plugins(argv: list[str] | None) -> None:
    """Registers the methods of installed entry points and of every `--plugin` in argv,
    before the parser is built from the registry: their options become flags."""
    from genvar_bench.plugins import PluginError, load_entry_points, load_plugin

    load_entry_points()
    prescan = argparse.ArgumentParser(add_help=False)
    prescan.add_argument("--plugin", action="append", default=[])
    known, _ = prescan.parse_known_args(sys.argv[1:] if argv is None else argv)
    for source in known.plugin:
        try:
            load_plugin(source)
        except PluginError as error:
            sys.exit(f"error: {error}")


def main(argv: list[str] | None = None) -> int:
    load_plugins(argv)
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return command_run(args)
    if args.command == "score":
        return command_score(args)
    if args.command == "sample":
        return command_sample(args)
    if args.command == "bench":
        from genvar_bench.bench import command_bench
        return command_bench(args)
    if args.command == "report":
        from genvar_bench import figures, report
        written = report.write_tables(args.out) + figures.draw_all(args.out)
        for path in written:
            print(path, file=sys.stderr)
        if not written:
            print(f"no results.csv under {args.out}/", file=sys.stderr)
            return 1
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
