"""Command line: `python -m genvar_bench run ...` trains, scores and tabulates methods;
`report` makes the tables and figures; `bench` checks the kernels' speed-ups."""
from __future__ import annotations

import argparse
import itertools
import sys

import torch

from genvar_bench import data as datasets
from genvar_bench.methods.denoisers import NETWORKS
from genvar_bench.methods.diffusion import SCHEDULES
from genvar_bench.methods.rws import LATENTS, Q_UPDATES
from genvar_bench.ops import BACKENDS
from genvar_bench.profiles import PROFILES, get_profile


def _int_list(text: str) -> list[int]:
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _name_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _seed_list(text: str) -> list[int]:
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


# `run --all`: every registered method for the dataset's kind of data, vae and iwae at
# these k, the others at their own defaults.
ALL_SAMPLE_COUNTS = {"vae": (1, 5, 50), "iwae": (1, 5, 50)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m genvar_bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train and score methods; add their rows to the table")
    run.add_argument("--method", type=_name_list, default=None,
                     help="comma-separated method names (default: vae,iwae)")
    run.add_argument("--all", action="store_true",
                     help="every method for the dataset's kind of data, vae and iwae at "
                          "k = 1, 5, 50, the others at their own k")
    run.add_argument("--k", type=_int_list, default=None,
                     help="comma-separated sample counts (default: the profile's)")
    run.add_argument("--layers", type=_int_list, default=[1], help="stochastic layers: 1 and/or 2")
    run.add_argument("--dataset", choices=datasets.DATASETS, default=None,
                     help="default: the profile's (quick: digits; standard, paper: mnist)")
    run.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    run.add_argument("--device", "--devices", dest="devices", type=_name_list, default=["cpu"],
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
    run.add_argument("--epochs", type=int, default=None,
                     help="override the profile's number of epochs (its schedule is cut)")
    run.add_argument("--eval-samples", type=int, default=None,
                     help="importance samples of the test NLL (default: the profile's, 5000)")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    options = run.add_argument_group(
        "method options", "each applies to the methods that have it; comma lists run every value")
    options.add_argument("--q-update", dest="q_update", type=_choice_list("q_update", Q_UPDATES),
                         help="rws: how q learns: wake, sleep or mix (default wake)")
    options.add_argument("--latent", type=_choice_list("latent", LATENTS),
                         help="rws: gaussian (the IWAE models) or binary (a 200-unit SBN); "
                              "default gaussian")
    options.add_argument("--noise", type=_float_list,
                         help="dae: standard deviation of the code noise (default 0.8; codes lie in [-1, 1])")
    options.add_argument("--diffusion-steps", dest="diffusion_steps", type=_int_list,
                         help="diffusion: number of steps T (default: the profile's, quick 100, else 1000)")
    options.add_argument("--schedule", type=_choice_list("schedule", SCHEDULES),
                         help="diffusion: paper (beta_t = 1/(T - t + 1), the default) or linear")
    options.add_argument("--network", type=_choice_list("network", NETWORKS),
                         help="diffusion: the reverse network, mlp (default) or conv (square images)")
    options.add_argument("--hidden", type=_int_list,
                         help="rbm-cd, rbm-pcd: hidden units (default 500 on MNIST, 100 on digits); "
                              "--k is the Gibbs sweeps per update (CD-k, PCD-k)")
    report = commands.add_parser(
        "report", help="summary tables (results.md) and seaborn figures from results/*/*/results.csv")
    report.add_argument("--out", default="results", help="results folder (default: results/)")
    from genvar_bench.bench import add_parser as add_bench_parser
    add_bench_parser(commands)
    return parser


OPTION_NAMES = ("q_update", "latent", "noise", "diffusion_steps", "schedule", "network", "hidden")


def _choice_list(name: str, choices: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        values = _name_list(text)
        bad = [value for value in values if value not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(
                f"{name} must be among {', '.join(choices)}, got {text!r}")
        return values
    return parse


def _float_list(text: str) -> list[float]:
    try:
        values = [float(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}")
    if not values or not all(0 < value < float("inf") for value in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def build_configs(args, profile, data_dim: int, data_kind: str = "binary") -> list:
    """Every (method, options, k, layers, seed, device) asked for, each option only where
    the method has it; an option no chosen method has is an error. Defaults that depend
    on the profile (T of diffusion) or the data (RBM hidden units) are filled in."""
    from genvar_bench.core import METHODS, method_options
    from genvar_bench.runner import RunConfig

    import genvar_bench.methods  # noqa: F401  (fills the registry)
    if args.all:
        methods = [name for name in METHODS if getattr(METHODS[name], "data_kind", "binary") == data_kind]
    else:
        methods = args.method or ["vae", "iwae"]
    given = {name: getattr(args, name) for name in OPTION_NAMES if getattr(args, name) is not None}
    accepted = {name: method_options(name) for name in methods}
    unused = [name for name in given if not any(name in options for options in accepted.values())]
    if unused:
        sys.exit(f"error: --{unused[0].replace('_', '-')} applies to none of the methods "
                 f"{', '.join(methods)}")
    configs = []
    for method in methods:
        defaults = dict(accepted[method])
        if "diffusion_steps" in defaults:
            defaults["diffusion_steps"] = profile.diffusion_steps
        if "hidden" in defaults and defaults["hidden"] is None:
            from genvar_bench.methods.rbm import default_hidden_units
            defaults["hidden"] = default_hidden_units(data_dim)
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
    """The KEY of every finished (not failed) row of a results.csv, as strings."""
    from genvar_bench.results import KEY, read_results

    table = read_results(csv_path)
    if table.empty:
        return set()
    if "status" in table:
        table = table[table["status"].fillna("ok") != "failed"]
    return set(map(tuple, table[KEY].astype(str).values))


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
        dist.init_process_group("nccl" if on_gpu else "gloo")
    return dist.get_rank()


def command_run(args) -> int:
    from genvar_bench.results import table_dir, update_results
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
    # Under torchrun every process trains each configuration on its share of the batches;
    # process 0 alone scores, prints and writes.
    rank = init_distributed(args)
    for device in args.devices:
        for backend in args.backends:
            _check_device(device, backend)
    import genvar_bench.methods  # noqa: F401  (fills the registry)
    from genvar_bench.core import METHODS
    unknown = [name for name in args.method or [] if name not in METHODS]
    if unknown:
        sys.exit(f"error: unknown method {', '.join(unknown)}; known: {', '.join(sorted(METHODS))}")
    dataset = datasets.load_dataset(args.dataset or profile.dataset, args.data_dir)
    configs = build_configs(args, profile, dataset.data_dim, dataset.kind)
    mismatched = sorted({config.method for config in configs
                         if getattr(METHODS[config.method], "data_kind", "binary") != dataset.kind})
    if mismatched:
        sys.exit(f"error: {', '.join(mismatched)} cannot model {dataset.name} ({dataset.kind} data); "
                 f"datasets by kind: " + "; ".join(
                     f"{kind}: {', '.join(names)}" for kind, names in datasets.DATASET_KINDS.items()))
    runner.git_commit()  # read before training: later commits must not relabel these rows
    directory = table_dir(args.out, dataset.name, profile.name)
    done = set() if args.force else existing_keys(directory / "results.csv")
    if rank != 0:
        for config in configs:  # the same list as process 0, skipping the same rows
            if config_key(config) not in done:
                runner.run_one(config, dataset, profile, show_progress=False,
                               checkpoint=directory / "checkpoints" / f"{config.file_stem}.pt",
                               checkpoint_seconds=60 * args.checkpoint_minutes)
        return 0
    finished, failed, skipped = 0, [], 0
    for index, config in enumerate(configs):
        where = f"{config.label} on {dataset.name} ({config.device}, {config.backend}, seed {config.seed})"
        if config_key(config) in done:
            skipped += 1
            print(f"[{index + 1}/{len(configs)}] {where}: in results.csv, skipped (--force reruns it)",
                  file=sys.stderr, flush=True)
            continue
        print(f"[{index + 1}/{len(configs)}] {where}", file=sys.stderr, flush=True)
        checkpoint = directory / "checkpoints" / f"{config.file_stem}.pt"
        try:
            row = runner.run_one(config, dataset, profile, show_progress=not args.no_progress,
                                 samples_path=directory / "samples" / f"{config.file_stem}.png",
                                 checkpoint=checkpoint,
                                 checkpoint_seconds=60 * args.checkpoint_minutes,
                                 history_path=directory / "histories" / f"{config.file_stem}.csv")
        except KeyboardInterrupt:
            print(f"\ninterrupted: {finished} of {len(configs)} rows finished and kept; the same "
                  "command resumes (training from its last checkpoint)", file=sys.stderr)
            return 130
        except Exception as error:  # a failing method is a failed row; the others go on
            message = f"{type(error).__name__}: {error}"
            failed.append(config.label)
            print(f"    FAILED: {message}", file=sys.stderr, flush=True)
            update_results(args.out, dataset.name, profile.name, [failed_row(
                config, dataset.name, profile.name, message)])
            continue
        path = update_results(args.out, dataset.name, profile.name, [row])
        checkpoint.unlink(missing_ok=True)
        finished += 1
        bits = f" ({row['test_bits_per_dim']:.3f} bits/dim)" if "test_bits_per_dim" in row else ""
        print(f"    test NLL {row['test_nll']:.2f}{bits}  test bound {row['test_bound']:.2f}  "
              f"-> {path}", file=sys.stderr, flush=True)
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "run":
        return command_run(args)
    if args.command == "bench":
        from genvar_bench.bench import command_bench
        return command_bench(args)
    if args.command == "report":
        from genvar_bench.report import report
        written = report(args.out)
        for path in written:
            print(path, file=sys.stderr)
        if not written:
            print(f"no results.csv under {args.out}/", file=sys.stderr)
            return 1
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
