"""Moves every results folder under a results tree to the results store and its kept
`.pt` models to safetensors + JSON (`saved.convert_legacy`), recording each model's
sha256 in its row. Run once per tree: `python scripts/convert_models.py results`
(the plug-in methods of its rows named with --plugin)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from genvar_bench import plugins, results
from genvar_bench.data import load_dataset
from genvar_bench.tables import results_folders
from genvar_bench.saved import convert_legacy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("tree", type=Path)
    parser.add_argument("--plugin", action="append", default=[])
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    for source in args.plugin:
        plugins.load_plugin(source)
    for folder in results_folders(args.tree):
        store = results.open_store(folder)
        specs = store.specs()
        updated = []
        for row in store.rows():
            pt = folder / "models" / f"{row.get('artifact')}.pt"
            if not pt.is_file():
                continue
            spec = specs[row["spec_hash"]]
            data = load_dataset(spec.dataset, args.data_dir)
            row["model_sha256"] = convert_legacy(pt, spec, data, str(row.get("git_commit")))
            updated.append((spec, {name: value for name, value in row.items() if name != "spec"}))
            print(f"{pt} -> {pt.with_suffix('.safetensors').name}", file=sys.stderr)
        if updated:
            store.write(updated)
        results.write_views(results.read_results(folder), folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
