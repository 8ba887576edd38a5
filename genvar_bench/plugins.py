"""Methods from outside the suite: a Python file or module that registers methods with
`genvar_bench.register`, loaded by `run --plugin FILE.py|MODULE`, and installed packages
that name such a module in the `genvar_bench.methods` entry-point group:

    [project.entry-points."genvar_bench.methods"]
    my-methods = "my_package.methods"

A loaded method is trained, scored and tabulated exactly as the built-in ones are; its
source is recorded on it (and in its kept models) so that `score` and `sample` can load
it again.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
import warnings
from pathlib import Path

from genvar_bench.registry import METHODS

ENTRY_POINT_GROUP = "genvar_bench.methods"
# Sources loaded in this process (resolved file paths or module names), in order.
LOADED: list[str] = []


class PluginError(RuntimeError):
    """A plugin that cannot be found, fails to import, or registers no method."""


def plugin_source(source: str) -> str:
    """A file's resolved path, or the module name as given."""
    path = Path(source)
    return str(path.resolve()) if source.endswith(".py") or path.is_file() else source


def load_plugin(source: str) -> list[str]:
    """Imports a plugin file or module once; returns the names of the methods it
    registered (none when it was loaded before). PluginError naming it otherwise."""
    import genvar_bench.methods  # noqa: F401  (built-ins first: a plugin may reuse a name)

    resolved = plugin_source(source)
    if resolved in LOADED:
        return []
    before = set(METHODS)
    try:
        if resolved.endswith(".py") or Path(resolved).is_file():
            path = Path(resolved)
            if not path.is_file():
                raise PluginError(f"plugin file {source} not found")
            digest = hashlib.sha1(resolved.encode()).hexdigest()[:10]
            module_name = f"genvar_bench_plugin_{path.stem.replace('-', '_')}_{digest}"
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                raise PluginError(f"plugin file {source} cannot be imported as a module")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[module_name]
                raise
        else:
            importlib.import_module(resolved)
    except PluginError:
        raise
    except ModuleNotFoundError as error:
        raise PluginError(f"plugin {source}: no such file or module ({error})") from None
    except Exception as error:
        raise PluginError(f"plugin {source} failed to load: {type(error).__name__}: {error}") from None
    added = sorted(set(METHODS) - before)
    if not added:
        raise PluginError(f"plugin {source} registered no method: decorate a Method subclass "
                          "with @genvar_bench.register('name')")
    for name in added:
        METHODS[name].plugin = resolved
    LOADED.append(resolved)
    return added


# The plug-ins installed packages' entry points loaded: theirs are always among `--all`.
FROM_ENTRY_POINTS: set[str] = set()


def load_entry_points() -> list[str]:
    """Loads every module of the `genvar_bench.methods` entry-point group; a broken one
    is a warning, not a failure of the suite. Returns the methods they registered."""
    added = []
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            added += load_plugin(entry.value.split(":")[0])
            FROM_ENTRY_POINTS.add(plugin_source(entry.value.split(":")[0]))
        except PluginError as error:
            warnings.warn(f"entry point {entry.name} of {ENTRY_POINT_GROUP}: {error}")
    return added
