"""Kept models: every finished row's trained model is saved (`save_model`) under
results/<dataset>/<profile>/models/ as two files that run no code when read: the weights
and buffers as safetensors (`<artifact>.safetensors`) and a JSON file beside it
(`<artifact>.json`) with the run specification, the shapes, the commit and the sha256 of
the weights file (also recorded in the row, column model_sha256).

    from genvar_bench import load_model
    method, info = load_model("results/digits/quick/models/<artifact>.safetensors")
    samples = method.sample(64)

A model of a plug-in method loads only when the plug-in is named (`plugins=[...]`, or
`--plugin` on the command line): a model file never imports code of its own accord.
Models of the earlier `.pt` form still load, with `torch.load(weights_only=True)`.

`python -m genvar_bench score MODEL` re-scores one under the row's protocol and
`python -m genvar_bench sample MODEL` draws from it.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Iterable

import torch

import genvar_bench.methods  # noqa: F401  (the built-in methods)
from genvar_bench import spec as specs
from genvar_bench.atomic import write_atomic, write_text_atomic
from genvar_bench.registry import METHODS
from genvar_bench.methods import build_method

MODEL_FORMAT = "genvar-bench model 2"
LEGACY_FORMAT = "genvar-bench model 1"


class ModelFileError(RuntimeError):
    """A file that is not a kept genvar-bench model, or one that cannot be loaded here."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def metadata_path(weights_path: Path) -> Path:
    return Path(weights_path).with_suffix(".json")


def save_model(method, spec: specs.RunSpec, data, path: Path, commit: str, artifact: str) -> str:
    """Keeps a trained (and scoring-prepared) model: its tensors at `path` (.safetensors)
    and the metadata beside it (.json); returns the weights file's sha256."""
    from safetensors.torch import save_file

    tensors, extra = {}, {}
    for name, value in method.state_dict().items():
        if torch.is_tensor(value):  # cloned: safetensors refuses tensors sharing memory
            tensors[name] = value.detach().cpu().contiguous().clone()
        else:
            extra[name] = value
    path = Path(path)
    write_atomic(path, lambda target: save_file(tensors, str(target)))
    digest = file_sha256(path)
    metadata = {
        "format": MODEL_FORMAT, "spec": json.loads(spec.to_json()), "data_dim": data.data_dim,
        "image_shape": list(data.image_shape) if data.image_shape else None,
        "value_range": list(data.value_range) if data.value_range else None,
        "git_commit": commit, "artifact": artifact, "weights": path.name,
        "weights_sha256": digest, "extra_state": extra,
        "shapes": {name: list(value.shape) for name, value in tensors.items()},
        "plugin": METHODS[spec.method].plugin}
    write_text_atomic(metadata_path(path), json.dumps(metadata, indent=1, sort_keys=True) + "\n")
    return digest


def read_metadata(path: str | os.PathLike) -> dict:
    """The metadata of a kept model (given as its .safetensors or .json); ModelFileError
    naming the file and the problem otherwise."""
    path = Path(path)
    meta_file = path if path.suffix == ".json" else metadata_path(path)
    if not meta_file.is_file():
        raise ModelFileError(f"{path}: no such model (its metadata {meta_file.name} is missing)")
    try:
        metadata = json.loads(meta_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ModelFileError(f"{meta_file} is not readable model metadata ({error})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{meta_file} is not a genvar-bench model file (format {MODEL_FORMAT!r})")
    try:
        metadata["spec"] = specs.from_dict(metadata["spec"])
        data_dim = metadata["data_dim"]
        if not isinstance(data_dim, int) or data_dim < 1:
            raise ValueError(f"data_dim {data_dim!r} is not a positive integer")
        if not isinstance(metadata["extra_state"], dict) or not isinstance(metadata["weights"], str):
            raise ValueError("extra_state or weights is malformed")
        for name in ("image_shape", "value_range"):
            if metadata[name] is not None and not isinstance(metadata[name], list):
                raise ValueError(f"{name} is {metadata[name]!r}, not a list")
        for name in ("git_commit", "artifact"):
            if not isinstance(metadata[name], str):
                raise ValueError(f"{name} is {metadata[name]!r}, not text")
    except (KeyError, ValueError, TypeError, specs.SpecError) as error:
        raise ModelFileError(f"{meta_file}: malformed model metadata ({error})") from None
    return metadata


def _info(metadata: dict) -> dict:
    """What a kept model says of itself, as `load_model`'s info."""
    spec: specs.RunSpec = metadata["spec"]
    return {"spec": spec, "method": spec.method, "options": dict(spec.options),
            "num_samples": spec.k, "layers": spec.layers, "backend": spec.backend,
            "dataset": spec.dataset, "profile": spec.profile, "seed": spec.seed,
            "device": spec.device, "eval_samples": spec.eval_samples,
            "data_dim": metadata["data_dim"], "image_shape": metadata["image_shape"],
            "value_range": metadata["value_range"], "git_commit": metadata["git_commit"],
            "artifact": metadata["artifact"], "plugin": metadata.get("plugin"),
            "weights_sha256": metadata.get("weights_sha256", "")}


def _require_method(path: Path, name: str, plugin: str | None, plugins: Iterable[str]) -> None:
    """Loads the plug-ins the caller named; a model's method that is still unknown is
    an error naming the plug-in it needs (never loaded on the file's say-so)."""
    from genvar_bench.plugins import PluginError, load_plugin

    for source in plugins:
        try:
            load_plugin(source)
        except PluginError as error:
            raise ModelFileError(f"{path}: {error}") from None
    if name not in METHODS:
        needed = f" from the plug-in {plugin}" if plugin else ""
        raise ModelFileError(f"{path}: its method {name!r} is not registered; it comes{needed or ' from a plug-in'}: "
                             f"name it with --plugin {plugin or 'FILE.py|MODULE'} "
                             "(load_model(..., plugins=[...]))")


def _read_legacy(path: Path) -> dict:
    """A model of the earlier .pt form, read as tensors and plain values only."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile,
            ValueError) as error:
        raise ModelFileError(f"{path} is not a readable model file ({type(error).__name__}: "
                             f"{str(error).splitlines()[0] if str(error) else ''})") from None
    if not isinstance(saved, dict) or saved.get("format") != LEGACY_FORMAT:
        raise ModelFileError(f"{path} is not a genvar-bench model file (format {MODEL_FORMAT!r})")
    return saved


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               backend: str | None = None, plugins: Iterable[str] = ()):
    """(method, info): the kept model at `path`, rebuilt from its specification, with its
    trained weights and buffers (the DAE's prior codes, an RBM's log Z), in eval mode on
    `device`; info is what the model says of itself (spec, dataset, profile, seed, commit,
    image shape, ...). `backend` overrides the saved op backend (fused or reference);
    `plugins` names the plug-ins to load for a plug-in method."""
    path = Path(path)
    if path.suffix == ".pt":
        saved = _read_legacy(path)
        _require_method(path, saved["method"], saved.get("plugin"), plugins)
        info = {name: value for name, value in saved.items() if name != "state_dict"}
        state, name = saved["state_dict"], saved["method"]
        build = dict(data_dim=saved["data_dim"], layers=saved["layers"],
                     num_samples=saved["num_samples"], options=saved["options"],
                     backend=backend or saved["backend"])
    else:
        metadata = read_metadata(path)
        spec = metadata["spec"]
        weights = (path if path.suffix != ".json" else path.with_name(metadata["weights"]))
        _require_method(path, spec.method, metadata.get("plugin"), plugins)
        state = _read_weights(weights, metadata)
        info, name = _info(metadata), spec.method
        build = dict(data_dim=metadata["data_dim"], layers=spec.layers, num_samples=spec.k,
                     options=dict(spec.options), backend=backend or spec.backend)
    try:
        method = build_method(name, data_dim=build["data_dim"], layers=build["layers"],
                              num_samples=build["num_samples"], backend=build["backend"],
                              **build["options"])
    except (TypeError, ValueError) as error:
        raise ModelFileError(f"{path}: its settings do not build method {name!r} ({error})") from None
    _load_state(method, state, path, name)
    method.to(device).eval()
    return method, info


def _read_weights(weights: Path, metadata: dict) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not weights.is_file():
        raise ModelFileError(f"{weights}: no such weights file")
    if metadata.get("weights_sha256") and file_sha256(weights) != metadata["weights_sha256"]:
        raise ModelFileError(f"{weights}: its sha256 differs from the one its metadata records "
                             "(changed or damaged)")
    try:
        state: dict = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelFileError(f"{weights} is not a readable safetensors file ({error})") from None
    state.update(metadata["extra_state"])
    return state


def _load_state(method, state: dict, path: Path, name: str) -> None:
    # Buffers whose size is set by training or scoring (persistent chains, prior codes)
    # take the saved size before loading.
    buffers = dict(method.named_buffers())
    for key, value in state.items():
        if key in buffers and torch.is_tensor(value) and buffers[key].shape != value.shape:
            owner, _, attribute = key.rpartition(".")
            module = method.get_submodule(owner) if owner else method
            setattr(module, attribute, buffers[key].new_empty(value.shape))
    try:
        method.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError) as error:
        raise ModelFileError(f"{path}: its weights do not fit method {name!r} "
                             f"({str(error).splitlines()[0]})") from None


def convert_legacy(pt_path: Path, spec: specs.RunSpec, data, commit: str) -> str:
    """Rewrites a kept model of the earlier .pt form as .safetensors + .json (the spec
    given: the row's) and removes the .pt; returns the new weights file's sha256. The
    model is loaded as tensors only; a plug-in method's must be registered already."""
    pt_path = Path(pt_path)
    method, info = load_model(pt_path)
    digest = save_model(method, spec, data, pt_path.with_suffix(".safetensors"),
                        commit=info.get("git_commit", commit), artifact=pt_path.stem)
    pt_path.unlink()
    return digest
