"""Kept models: every finished row's trained model is saved (`runner.save_model`) under
results/<dataset>/<profile>/models/, and comes back here as a working method.

    from genvar_bench import load_model
    method, info = load_model("results/digits/quick/models/iwae-k5-L1-s0-cpu-fused.pt")
    samples = method.sample(64)

`python -m genvar_bench score MODEL` re-scores one under the row's protocol and
`python -m genvar_bench sample MODEL` draws from it.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

import genvar_bench.methods  # noqa: F401  (the built-in methods)
from genvar_bench.core import METHODS
from genvar_bench.methods import build_method

MODEL_FORMAT = "genvar-bench model 1"


class ModelFileError(RuntimeError):
    """A file that is not a kept genvar-bench model."""


def read_model_file(path: str | os.PathLike) -> dict:
    """The saved dictionary of a kept model; ModelFileError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile,
            ValueError) as error:
        raise ModelFileError(f"{path} is not a readable model file ({type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else ''})") from None
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path} is not a genvar-bench model file (format {MODEL_FORMAT!r})")
    return saved


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               backend: str | None = None):
    """(method, info): the kept model at `path`, rebuilt from its method, options and data
    shape, with its trained weights and buffers (the DAE's prior codes, an RBM's log Z), in
    eval mode on `device`; info is the rest of the file (dataset, profile, seed, commit,
    image shape, ...). `backend` overrides the saved op backend (fused or reference)."""
    saved = read_model_file(path)
    if saved["method"] not in METHODS and saved.get("plugin"):
        from genvar_bench.plugins import PluginError, load_plugin
        try:
            load_plugin(saved["plugin"])
        except PluginError as error:
            raise ModelFileError(f"{path}: its method {saved['method']!r} comes from a plugin "
                                 f"that cannot be loaded ({error})") from None
    method = build_method(saved["method"], data_dim=saved["data_dim"], layers=saved["layers"],
                          num_samples=saved["num_samples"], backend=backend or saved["backend"],
                          **saved["options"])
    state = saved["state_dict"]
    # Buffers whose size is set by training or scoring (persistent chains, prior codes)
    # take the saved size before loading.
    buffers = dict(method.named_buffers())
    for name, value in state.items():
        if name in buffers and torch.is_tensor(value) and buffers[name].shape != value.shape:
            owner, _, attribute = name.rpartition(".")
            module = method.get_submodule(owner) if owner else method
            setattr(module, attribute, buffers[name].new_empty(value.shape))
    try:
        method.load_state_dict(state)
    except RuntimeError as error:
        raise ModelFileError(f"{path}: its weights do not fit method {saved['method']!r} "
                             f"({str(error).splitlines()[0]})") from None
    method.to(device).eval()
    info = {name: value for name, value in saved.items() if name != "state_dict"}
    return method, info
