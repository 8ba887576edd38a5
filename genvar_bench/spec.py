"""The run specification: everything that changes a figure, in one versioned object.

A `RunSpec` names the data (dataset, binarization), the model (method, options, k,
layers), the randomness (seed), where it ran (device type, backend), the training
budget (profile, epochs, learning-rate stages, batch size, Adam's eps) and the scoring
protocol (estimator samples and the method's own scoring settings, e.g. AIS's). It
renders the row key (a readable key and a hash of the whole spec), the names of a row's
files and the kept model's metadata, and rebuilds the method. Two specs that differ in
any field are two rows.

The field names and the hash are stable: `to_dict` is the canonical form (sorted JSON),
`SPEC_VERSION` is written beside it, and `RENAMED_FIELDS` maps the names of earlier
versions to today's, so an old spec hashes as it did.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields, replace
from typing import Any

SPEC_VERSION = 1
# {old field name: new field name}, for specs written by earlier versions.
RENAMED_FIELDS: dict[str, str] = {}
# The fields a row key shows in readable form (and the results table's columns).
KEY_COLUMNS = ("method", "variant", "k", "layers", "seed", "device", "backend")


class SpecError(ValueError):
    """A specification that is not one: unknown or missing fields, wrong types."""


@dataclass(frozen=True)
class RunSpec:
    dataset: str
    binarization: str
    profile: str
    method: str
    # The method's options as sorted (name, value) pairs, defaults included.
    options: tuple[tuple[str, Any], ...]
    k: int
    layers: int
    seed: int
    device: str  # the device type: cpu or cuda (cuda:0 and cuda:1 give the same figures)
    backend: str
    epochs: int
    # (epochs, learning rate) per stage of the schedule
    stages: tuple[tuple[int, float], ...]
    batch_size: int
    adam_eps: float
    # How the test NLL is scored: (name, value) pairs, eval_samples first.
    scoring: tuple[tuple[str, Any], ...]

    def __post_init__(self) -> None:
        for name, kind in (("k", int), ("layers", int), ("seed", int), ("epochs", int),
                           ("batch_size", int)):
            value = getattr(self, name)
            if not isinstance(value, kind) or isinstance(value, bool):
                raise SpecError(f"spec field {name} must be an integer, got {value!r}")
        if sum(epochs for epochs, _ in self.stages) != self.epochs:
            raise SpecError(f"spec stages {self.stages} do not add up to {self.epochs} epochs")

    # --- renderings ---------------------------------------------------------------

    @property
    def variant(self) -> str:
        """The options as text, e.g. "latent=binary,q_update=wake"; "" when none."""
        return ",".join(f"{name}={value}" for name, value in self.options)

    @property
    def eval_samples(self) -> int:
        return int(dict(self.scoring)["eval_samples"])

    @property
    def label(self) -> str:
        variant = f" [{self.variant}]" if self.options else ""
        return f"{self.method}{variant} k={self.k} L={self.layers}"

    def to_dict(self) -> dict:
        """The canonical form: plain JSON values, lists for tuples."""
        return {"dataset": self.dataset, "binarization": self.binarization,
                "profile": self.profile, "method": self.method,
                "options": {name: value for name, value in self.options},
                "k": self.k, "layers": self.layers, "seed": self.seed, "device": self.device,
                "backend": self.backend, "epochs": self.epochs,
                "stages": [[epochs, rate] for epochs, rate in self.stages],
                "batch_size": self.batch_size, "adam_eps": self.adam_eps,
                "scoring": {name: value for name, value in self.scoring}}

    def to_json(self) -> str:
        return json.dumps({"spec_version": SPEC_VERSION, **self.to_dict()}, sort_keys=True)

    @property
    def hash(self) -> str:
        """16 hex digits of the sha256 of the canonical form."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def key(self) -> str:
        """The row key: readable, then the hash of everything."""
        return f"{self.label} seed={self.seed} {self.device} {self.backend} #{self.hash}"

    def key_fields(self) -> dict:
        """The readable key as a row's columns."""
        return {"method": self.method, "variant": self.variant, "k": self.k,
                "layers": self.layers, "seed": self.seed, "device": self.device,
                "backend": self.backend}

    @property
    def file_stem(self) -> str:
        """The name of a row's files: readable, then 8 digits of the hash."""
        variant = "".join(f"-{value}" for _, value in self.options)
        return (f"{self.method}{variant}-k{self.k}-L{self.layers}-s{self.seed}"
                f"-{self.device}-{self.backend}-{self.hash[:8]}")

    def without(self, *names: str) -> tuple:
        """The spec's canonical items less `names`: what models of one group share."""
        return tuple((name, json.dumps(value, sort_keys=True))
                     for name, value in sorted(self.to_dict().items()) if name not in names)

    def with_seed(self, seed: int) -> "RunSpec":
        return replace(self, seed=seed)

    def profile_settings(self):
        """The training profile this spec trains under (`profiles.Profile`)."""
        from genvar_bench.profiles import get_profile

        base = get_profile(self.profile)
        return replace(base, stages=self.stages, batch_size=self.batch_size,
                       adam_eps=self.adam_eps, eval_samples=self.eval_samples)

    def build_method(self, data_dim: int):
        """The method this spec trains, untrained (on the CPU)."""
        from genvar_bench.methods import build_method

        return build_method(self.method, data_dim=data_dim, layers=self.layers,
                            num_samples=self.k, backend=self.backend, **dict(self.options))


def from_dict(values: dict) -> RunSpec:
    """A spec from its canonical form (any version): renamed fields mapped, every
    field checked; SpecError naming what is wrong otherwise."""
    if not isinstance(values, dict):
        raise SpecError(f"a spec is a JSON object, got {type(values).__name__}")
    values = dict(values)
    version = values.pop("spec_version", SPEC_VERSION)
    if not isinstance(version, int) or version > SPEC_VERSION:
        raise SpecError(f"spec version {version!r} is newer than this genvar-bench's {SPEC_VERSION}")
    values = {RENAMED_FIELDS.get(name, name): value for name, value in values.items()}
    names = {field.name for field in fields(RunSpec)}
    unknown, missing = sorted(set(values) - names), sorted(names - set(values))
    if unknown or missing:
        raise SpecError("spec " + "; ".join(
            part for part in (f"has unknown fields {', '.join(unknown)}" if unknown else "",
                              f"lacks the fields {', '.join(missing)}" if missing else "") if part))
    try:
        values["options"] = tuple(sorted(dict(values["options"]).items()))
        values["scoring"] = tuple(dict(values["scoring"]).items())
        values["stages"] = tuple((int(epochs), float(rate)) for epochs, rate in values["stages"])
        values["adam_eps"] = float(values["adam_eps"])
    except (TypeError, ValueError) as error:
        raise SpecError(f"spec has a malformed field ({error})") from None
    return RunSpec(**values)


def from_json(text: str) -> RunSpec:
    try:
        values = json.loads(text)
    except (TypeError, ValueError) as error:
        raise SpecError(f"spec is not JSON ({error})") from None
    return from_dict(values)


def scoring_protocol(method: str, eval_samples: int) -> tuple[tuple[str, Any], ...]:
    """(eval_samples, then the method's declared scoring settings, e.g. AIS's)."""
    from genvar_bench.registry import METHODS

    settings = getattr(METHODS[method], "scoring_settings", {}) or {}
    return (("eval_samples", int(eval_samples)), *sorted(settings.items()))


def make_spec(method: str, options: tuple[tuple[str, Any], ...], k: int, layers: int,
              seed: int, device: str, backend: str, profile, data) -> RunSpec:
    """The spec of one configuration of `run`: `profile` a `profiles.Profile` (already
    cut to --epochs, with --eval-samples), `data` a `data.Dataset`."""
    import torch

    return RunSpec(dataset=data.name, binarization=data.binarization, profile=profile.name,
                   method=method, options=tuple(sorted(options)), k=int(k), layers=int(layers),
                   seed=int(seed), device=torch.device(device).type, backend=backend,
                   epochs=profile.epochs, stages=tuple((int(e), float(r)) for e, r in profile.stages),
                   batch_size=profile.batch_size, adam_eps=float(profile.adam_eps),
                   scoring=scoring_protocol(method, profile.eval_samples))
