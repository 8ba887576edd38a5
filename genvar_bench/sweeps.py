"""Sweep files: `run --config FILE.yaml` runs what a list of `run` commands would, from a file.

A sweep file is a YAML mapping: settings shared by its runs at the top, and `runs`, a list of
entries, each a `run` command's "what" (methods, k, layers, seeds, data, profile, overrides,
method options) that overrides the shared settings. A list is a comma list of the command
line: every value runs. For example::

    # the digits table
    profile: quick
    dataset: digits
    seeds: [0, 1, 2]
    runs:
      - all: true
      - method: iwae-dreg
        plugin: examples/iwae_dreg.py
        k: [5, 50]
      - all: true
        backends: reference
        seeds: 0

Every entry is parsed and checked (its methods, options, data, devices) before any of them
trains; a problem is one line naming the file and the line of the entry or key at fault.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Keys of a sweep file and the `run` flag each stands for; `options` holds method options
# (`--noise`, `--hidden`, ...), `plugin` may be a list (one --plugin each).
FLAGS = {
    "method": "--method", "methods": "--method", "all": "--all", "plugin": "--plugin",
    "plugins": "--plugin", "k": "--k", "layers": "--layers", "seed": "--seeds",
    "seeds": "--seeds", "dataset": "--dataset", "binarization": "--binarization",
    "profile": "--profile", "device": "--devices", "devices": "--devices",
    "backend": "--backends", "backends": "--backends", "epochs": "--epochs",
    "eval_samples": "--eval-samples", "out": "--out",
}
TOP_ONLY = ("runs", "description")
# `run` flags about how a sweep runs, not what: given on the command line beside --config.
HOW_FLAGS = ("out", "force", "no_progress", "checkpoint_minutes", "allow_large", "executor",
             "ray_address", "cpus_per_run", "gpus_per_run", "data_dir", "tensorboard")


class SweepError(ValueError):
    """A sweep file that cannot run; the message starts with the file and line."""


@dataclass
class Entry:
    """One run of a sweep: the `run` arguments it stands for and the line it starts at."""

    argv: list[str]
    line: int
    out: str | None
    # (the flags of one key, its line): a flag's problem is told at its own line
    segments: list[tuple[list[str], int]]

    def line_of(self, parse) -> int:
        """The line of the first key whose flags alone `parse` refuses; else the entry's."""
        for flags, line in self.segments:
            try:
                parse(flags)
            except SystemExit:
                return line
        return self.line


@dataclass
class Sweep:
    path: Path
    sha256: str
    entries: list[Entry]

    @property
    def source(self) -> str:
        """What rows record of the file they came from: its path and content digest."""
        return f"{self.path.as_posix()} (sha256 {self.sha256[:12]})"


def _scalar(node, path: Path, key: str) -> str:
    import yaml

    if isinstance(node, yaml.ScalarNode):
        if node.value == "" or node.tag.endswith(":null"):
            raise SweepError(f"{path}:{node.start_mark.line + 1}: {key} has no value")
        return str(node.value)
    raise SweepError(f"{path}:{node.start_mark.line + 1}: {key} takes a value or a list of values")


def _values(node, path: Path, key: str) -> list[str]:
    import yaml

    if isinstance(node, yaml.SequenceNode):
        if not node.value:
            raise SweepError(f"{path}:{node.start_mark.line + 1}: {key} is an empty list")
        return [_scalar(item, path, key) for item in node.value]
    return [_scalar(node, path, key)]


def _mapping(node, path: Path, what: str) -> dict[str, tuple[Any, Any]]:
    """{key: (key node, value node)} of a YAML mapping node; a repeated key is an error."""
    import yaml

    if not isinstance(node, yaml.MappingNode):
        raise SweepError(f"{path}:{node.start_mark.line + 1}: {what} must be a mapping of key: value")
    found: dict[str, tuple[Any, Any]] = {}
    for key_node, value_node in node.value:
        key = str(key_node.value)
        if key in found:
            raise SweepError(f"{path}:{key_node.start_mark.line + 1}: {key} is given twice")
        found[key] = (key_node, value_node)
    return found


def _arguments(settings: dict[str, tuple[Any, Any]], path: Path,
               option_names: set[str]) -> tuple[list[tuple[list[str], int]], str | None]:
    """The `run` flags of merged settings, key by key with the key's line, and the
    file's `out` (if any)."""
    segments: list[tuple[list[str], int]] = []
    out = None
    for key, (key_node, value_node) in settings.items():
        line = key_node.start_mark.line + 1
        argv: list[str] = []
        out = _key_arguments(key, key_node, value_node, path, option_names, argv) or out
        segments.append((argv, line))
    return segments, out


def _key_arguments(key, key_node, value_node, path: Path, option_names: set[str],
                   argv: list[str]) -> str | None:
    """Appends the flags of one key to argv; returns the key's `out`, if it is out."""
    import yaml

    out = None
    line = key_node.start_mark.line + 1
    if key == "options":
        for name, (name_node, option_node) in _mapping(value_node, path, "options").items():
            flag = name.replace("-", "_")
            if flag not in option_names:
                known = ", ".join(sorted(option_names)) or "none"
                raise SweepError(f"{path}:{name_node.start_mark.line + 1}: unknown method option "
                                 f"{name!r} (known: {known})")
            argv += ["--" + flag.replace("_", "-"), ",".join(_values(option_node, path, name))]
        return None
    if key not in FLAGS:
        raise SweepError(f"{path}:{line}: unknown key {key!r} (known: "
                         f"{', '.join(sorted(set(FLAGS) | {'options', 'runs'}))})")
    if key == "all":
        value = _scalar(value_node, path, key).lower()
        if value not in ("true", "false"):
            raise SweepError(f"{path}:{line}: all is true or false")
        argv += ["--all"] if value == "true" else []
    elif key in ("plugin", "plugins"):
        for source in _values(value_node, path, key):
            argv += ["--plugin", source]
    elif key == "out":
        out = _scalar(value_node, path, key)
    else:
        if isinstance(value_node, yaml.MappingNode):
            raise SweepError(f"{path}:{line}: {key} takes a value or a list of values")
        argv += [FLAGS[key], ",".join(_values(value_node, path, key))]
    return out


def load(path: str | Path, option_names: set[str]) -> Sweep:
    """The sweep file at `path`, parsed and its keys checked (not yet its values: `run`
    checks those, as it does a command line's); `option_names` are the method options
    the registry knows (`--noise` as "noise")."""
    import yaml

    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise SweepError(f"{path}: cannot be read ({error.strerror or error})") from None
    try:
        text = raw.decode("utf-8")
        root = yaml.compose(text)
    except UnicodeDecodeError:
        raise SweepError(f"{path}: not UTF-8 text") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SweepError(f"{path}{where}: not valid YAML ({problem})") from None
    if root is None:
        raise SweepError(f"{path}: the file is empty; it needs a list of runs")
    top = _mapping(root, path, "a sweep file")
    if "runs" not in top:
        raise SweepError(f"{path}:{root.start_mark.line + 1}: no runs (a list of runs is needed)")
    runs_node = top["runs"][1]
    if not isinstance(runs_node, yaml.SequenceNode) or not runs_node.value:
        raise SweepError(f"{path}:{runs_node.start_mark.line + 1}: runs must be a list of one or more entries")
    shared = {key: value for key, value in top.items() if key not in TOP_ONLY}
    entries = []
    for node in runs_node.value:
        own = _mapping(node, path, "each entry of runs")
        for key in own:
            if key in TOP_ONLY:
                raise SweepError(f"{path}:{own[key][0].start_mark.line + 1}: {key} belongs at the top")
        segments, out = _arguments({**shared, **own}, path, option_names)
        entries.append(Entry([flag for flags, _ in segments for flag in flags],
                             node.start_mark.line + 1, out, segments))
    return Sweep(path, hashlib.sha256(raw).hexdigest(), entries)


def plugins_of(path: str | Path) -> list[str]:
    """The plug-ins a sweep file names (loaded before the command line is parsed, so that
    their options are known); [] where the file cannot be read (`load` says why later)."""
    import yaml

    try:
        root = yaml.compose(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    found: list[str] = []

    def visit(node) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if key_node.value in ("plugin", "plugins"):
                    items = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                    found.extend(str(item.value) for item in items if isinstance(item, yaml.ScalarNode))
                else:
                    visit(value_node)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                visit(item)

    visit(root)
    return list(dict.fromkeys(found))
