"""Argument types and checks shared by the subcommands: each gives a one-line error
before any work starts."""
from __future__ import annotations

import argparse
import sys

import torch

from genvar_bench import data as datasets


def unique(values: list, text: str) -> list:
    """values without repeats, in order; a repeat is dropped with a warning, not run twice."""
    kept = list(dict.fromkeys(values))
    if len(kept) < len(values):
        repeated = sorted({str(value) for value in values if values.count(value) > 1})
        print(f"warning: {text!r} repeats {', '.join(repeated)}; each value runs once",
              file=sys.stderr)
    return kept


def int_range_list(low: int, high: int):
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
        return unique(values, text)
    return parse


int_list = int_range_list(1, 10**6)
seed_list = int_range_list(0, 2**31 - 1)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def name_list(text: str) -> list[str]:
    return unique([item.strip() for item in text.split(",") if item.strip()], text)


def device_list(text: str) -> list[str]:
    """Comma-separated torch devices of type cpu or cuda (cuda:N)."""
    devices = name_list(text)
    for name in devices:
        try:
            kind = torch.device(name).type
        except RuntimeError:
            kind = None
        if kind not in ("cpu", "cuda"):
            raise argparse.ArgumentTypeError(f"unknown device {name!r}: expected cpu, cuda or cuda:N")
        if kind == "cpu" and torch.device(name).index not in (None, 0):
            raise argparse.ArgumentTypeError(f"unknown device {name!r}: the CPU is cpu (or cpu:0)")
    if not devices:
        raise argparse.ArgumentTypeError(f"expected devices, got {text!r}")
    return devices


def choice_list(name: str, choices: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        values = name_list(text)
        bad = [value for value in values if value not in choices]
        if bad or not values:
            raise argparse.ArgumentTypeError(
                f"{name} must be among {', '.join(choices)}, got {text!r}")
        return values
    return parse



def check_device(device: str, backend: str) -> None:
    target = torch.device(device)
    if target.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"error: --device {device} asked for, but torch {torch.__version__} sees no CUDA device")
    if target.type == "cuda" and target.index is not None and target.index >= torch.cuda.device_count():
        sys.exit(f"error: --device {device} asked for, but there are {torch.cuda.device_count()} CUDA devices")
    if backend == "fused":
        from genvar_bench._extension import cuda_ops_built, require_extension
        try:
            require_extension()
        except RuntimeError as error:
            sys.exit(f"error: {error}")
        if target.type == "cuda" and not cuda_ops_built():
            sys.exit("error: the op library was built without CUDA kernels; rebuild with "
                     "GENVAR_CUDA=1 pip install --no-build-isolation -e . or use --backend reference")



def load_data_or_exit(name: str, data_dir: str | None, binarization: str = "fixed"):
    """The dataset under `binarization` (`data.with_binarization`: "fixed", "dynamic", or a
    spec's binarization text), or a clear one-message exit naming the file and how to
    supply it, or why the binarization cannot be."""
    try:
        dataset = datasets.load_dataset(name, data_dir)
    except (datasets.DatasetNotFoundError, datasets.DatasetIntegrityError) as error:
        sys.exit(f"error: {error}")
    mode = "dynamic" if binarization.startswith("dynamic") else "fixed"
    try:
        return datasets.with_binarization(dataset, mode)
    except ValueError as error:
        sys.exit(f"error: --binarization {mode}: {error}")



def load_model_or_exit(path: str, device: str, plugins: list[str] | tuple[str, ...] = ()):
    from genvar_bench.saved import ModelFileError, load_model

    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"error: --device {device} asked for, but torch {torch.__version__} sees no CUDA device")
    try:
        return load_model(path, device=device, plugins=plugins)
    except ModelFileError as error:
        sys.exit(f"error: {error}")


def check_data_fits(model: str, info: dict, dataset) -> None:
    """A model scores only data of its own kind and shape: binary data for a model of
    binary data, continuous for continuous."""
    from genvar_bench.registry import METHODS

    kind = METHODS[info["method"]].data_kind
    if dataset.kind != kind:
        sys.exit(f"error: {model} models {kind} data; {dataset.name} is {dataset.kind} data: "
                 f"give a --dataset of {kind} data")
    if dataset.data_dim != info["data_dim"]:
        sys.exit(f"error: {model} models {info['data_dim']}-dimensional data, "
                 f"{dataset.name} has {dataset.data_dim} dimensions")
