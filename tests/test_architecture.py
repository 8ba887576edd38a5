"""The layering that docs/architecture.md describes holds in the code: every import in
genvar_bench/ (at module level or inside a function) goes to the importer's layer or a
lower one, and no modules import each other round a loop."""
import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "genvar_bench"


def documented_layers() -> dict[str, int]:
    """{module pattern: layer} from the table of docs/architecture.md ("ops.*": every
    submodule of ops)."""
    layers = {}
    for line in (ROOT / "docs" / "architecture.md").read_text().splitlines():
        match = re.match(r"\| (\d+) [^|]*\| (.*?) \|", line)
        if match:
            for name in re.findall(r"`([\w.*]+)`", match.group(2)):
                layers[name] = int(match.group(1))
    return layers


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or "genvar_bench"
        names[name] = path
    names["_C"] = PACKAGE / "_C.pyi"
    return names


def imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The genvar_bench modules `path` imports, by their names in `modules`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.split(".")[0] == "genvar_bench":
            base = node.module.removeprefix("genvar_bench").lstrip(".")
            for alias in node.names:
                child = f"{base}.{alias.name}" if base else alias.name
                found.add(child if child in modules else base or "genvar_bench")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "genvar_bench":
                    found.add(alias.name.removeprefix("genvar_bench").lstrip(".") or "genvar_bench")
    return found


def layer_of(name: str, layers: dict[str, int]) -> int:
    if name in layers:
        return layers[name]
    parent = name.rsplit(".", 1)[0]
    if f"{parent}.*" in layers:
        return layers[f"{parent}.*"]
    raise AssertionError(f"genvar_bench.{name} is in no layer of docs/architecture.md: add it")


MODULES = module_names()
LAYERS = documented_layers()
GRAPH = {name: imports(path, MODULES) - {name} for name, path in MODULES.items() if path.suffix == ".py"}


def test_the_documented_layers_name_real_modules():
    assert len(LAYERS) > 20
    for pattern in LAYERS:
        base = pattern.removesuffix(".*")
        assert base in MODULES, f"docs/architecture.md names {pattern}, which does not exist"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_every_import_goes_down_the_layers(module):
    own = layer_of(module, LAYERS)
    for target in sorted(GRAPH[module]):
        assert layer_of(target, LAYERS) <= own, (
            f"genvar_bench.{module} (layer {own}) imports genvar_bench.{target} "
            f"(layer {layer_of(target, LAYERS)}): an arrow against the layering")


def test_no_modules_import_each_other_round_a_loop():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(GRAPH.get(name, ())):
            if state.get(target) == 1:
                loop = path[path.index(target):] + [target]
                raise AssertionError("import loop: " + " -> ".join(loop))
            if target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


def test_the_check_finds_an_arrow_against_the_layering(tmp_path):
    """The checks can fail: core (layer 2) importing the registry (layer 4) is caught."""
    path = tmp_path / "core.py"
    path.write_text("from genvar_bench.registry import register\n")
    assert imports(path, MODULES) == {"registry"}
    assert layer_of("registry", LAYERS) > layer_of("core", LAYERS)
