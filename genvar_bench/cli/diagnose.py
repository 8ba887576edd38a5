"""`python -m genvar_bench diagnose FOLDER`: the gradient signal-to-noise ratio of each kept
model's training estimator, at its trained weights and at its initialisation, stored in
its row (`diagnostics.gradient_snr`); a failed row (a run that diverged) gets the ratio at
initialisation only."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from genvar_bench import diagnostics, results, spec as specs
from genvar_bench.cli import arguments
from genvar_bench.plugins import PluginError, load_plugin

SNR_COLUMNS = ("grad_snr_q", "grad_snr_p", "grad_snr_q_init", "grad_snr_p_init",
               "grad_snr_draws", "grad_snr_batch")


def add_parser(commands) -> None:
    diagnose = commands.add_parser(
        "diagnose", help="gradient signal-to-noise ratio of q's and p's parameters, trained and at "
                         "initialisation, for each kept model of a results folder; stored in its row")
    diagnose.add_argument("folder", help="a results folder, e.g. results/mnist/standard")
    diagnose.add_argument("--method", default=None,
                          help="comma-separated methods (default: every one whose q and p have "
                               "their own trainable parameters)")
    diagnose.add_argument("--draws", type=arguments.positive_int, default=diagnostics.SNR_REPEATS,
                          help=f"gradient draws M per estimate (default {diagnostics.SNR_REPEATS})")
    diagnose.add_argument("--force", action="store_true", help="measure rows that have the ratio")
    diagnose.add_argument("--data-dir", default=None,
                          help="folder holding binarized_mnist.npz or the Fashion-MNIST idx files")
    diagnose.add_argument("--plugin", action="append", default=[], metavar="FILE.py|MODULE",
                          help="the plug-in a plug-in method's model needs")
    diagnose.set_defaults(handler=command_diagnose)


def eligible(method) -> bool:
    """A method whose q and p each have trainable parameters of their own (not the RBM's
    tied weights, not diffusion's fixed q)."""
    q = {id(p) for p in method.q.parameters() if p.requires_grad}
    p = {id(p) for p in method.p.parameters() if p.requires_grad}
    return bool(q) and bool(p) and not q & p


def command_diagnose(args) -> int:
    folder = Path(args.folder)
    if args.draws < 2:
        sys.exit("error: --draws must be at least 2")
    try:
        table = results.read_results(folder)
    except results.ResultsFileError as error:
        sys.exit(f"error: {error}")
    if table.empty:
        sys.exit(f"error: {folder} holds no results")
    wanted = None if args.method is None else set(args.method.split(","))
    # A failed row (a run that diverged) has no trained weights: its ratio at initialisation
    # is still measured, from its spec.
    rows = table[table["status"].isin(["ok", "failed"])]
    if wanted is not None:
        unknown = wanted - set(rows["method"])
        if unknown:
            sys.exit(f"error: no rows of {', '.join(sorted(unknown))} in {folder}")
        rows = rows[rows["method"].isin(wanted)]
    todo: list[tuple[Any, Path | None]] = []
    for _, row in rows.iterrows():
        done = "grad_snr_q" if row["status"] == "ok" else "grad_snr_q_init"
        if not args.force and done in row and row[done] == row[done]:
            continue
        if row["status"] != "ok":
            todo.append((row, None))
            continue
        kept = folder / "models" / f"{row['artifact']}.safetensors"
        if not row["artifact"] or not kept.exists():
            print(f"{specs.from_json(row['spec']).label} seed {row['seed']}: no kept model, "
                  "skipped", file=sys.stderr)
            continue
        todo.append((row, kept))
    if any(model is None for _, model in todo):  # a failed plug-in row's method (a model loads its own)
        for source in args.plugin:
            try:
                load_plugin(source)
            except PluginError as error:
                sys.exit(f"error: {error}")
    data = {}
    for index, (row, model) in enumerate(todo):
        if model is None:
            method, spec = None, specs.from_json(row["spec"])
        else:
            method, info = arguments.load_model_or_exit(str(model), "cpu", args.plugin)
            spec = info["spec"]
        if (spec.dataset, spec.binarization) not in data:
            data[spec.dataset, spec.binarization] = arguments.load_data_or_exit(
                spec.dataset, args.data_dir, spec.binarization)
        dataset = data[spec.dataset, spec.binarization]
        try:
            start = initial_method(spec, dataset)
        except ValueError as error:  # a failed row of a plug-in method not loaded
            sys.exit(f"error: the row of {row['method']}: {error} (name its --plugin)")
        if not eligible(start):
            if wanted is not None:
                sys.exit(f"error: {row['method']} has no separate trainable q and p")
            continue
        batch = dataset.train[:diagnostics.SNR_BATCH]
        trained = None if method is None else diagnostics.gradient_snr(method, batch, args.draws)
        initial = diagnostics.gradient_snr(start, batch, args.draws)
        stored = results.stored_row(folder, spec)
        if stored is None:
            sys.exit(f"error: the row of {spec.label} seed {spec.seed} is no longer in {folder}")
        nan = float("nan")
        stored.update(grad_snr_q=nan if trained is None else trained.q,
                      grad_snr_p=nan if trained is None else trained.p, grad_snr_q_init=initial.q,
                      grad_snr_p_init=initial.p, grad_snr_draws=args.draws,
                      grad_snr_batch=f"train[0:{diagnostics.SNR_BATCH}]")
        from genvar_bench.tables import write_results_markdown

        results.update_folder(folder, [(spec, stored)], render=write_results_markdown)
        measured = ("no trained weights (the run failed)" if trained is None else
                    f"q {trained.q:.3g}, p {trained.p:.3g}")
        print(f"[{index + 1}/{len(todo)}] {spec.label} seed {spec.seed}: "
              f"SNR {measured}; at initialisation q {initial.q:.3g}, p {initial.p:.3g}",
              file=sys.stderr, flush=True)
    return 0


def initial_method(spec, dataset):
    """The method as its training started: built under the spec's seed, then its recipe's
    data-dependent start (`runner.run_one`, `train.train`)."""
    from genvar_bench.registry import record_of

    with torch.random.fork_rng():
        torch.manual_seed(spec.seed)
        method = spec.build_method(dataset.data_dim)
        record_of(method).recipe.prepare(method, dataset.training_data)
    return method
