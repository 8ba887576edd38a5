"""Re-scores every kept model of a results folder under its row's protocol and prints, per
row, the stored and the re-scored test NLL: `python scripts/rescore.py results/digits/quick
--plugin examples/iwae_dreg.py`. Exits 1 when an IS- or bound-scored row differs by more
than 1e-4 nats (RBM rows move within their AIS noise: shown, not judged)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from genvar_bench import results, runner
from genvar_bench.data import load_dataset
from genvar_bench.registry import record_of
from genvar_bench.saved import load_model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--plugin", action="append", default=[])
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    table = results.read_results(args.folder)
    worst = 0.0
    for _, row in table[table["status"] == "ok"].iterrows():
        model = args.folder / "models" / f"{row['artifact']}.safetensors"
        method, info = load_model(model, plugins=args.plugin)
        data = load_dataset(info["dataset"], args.data_dir)
        record_of(method).scorer.prepare(method, data.train)
        torch.manual_seed(info["seed"] + 1)
        scores, _ = runner.evaluate(method, data, torch.device("cpu"), info["eval_samples"], False)
        difference = scores["test_nll"] - row["test_nll"]
        judged = not str(row["nll_estimator"]).startswith("AIS")
        if judged:
            worst = max(worst, abs(difference))
        print(f"{row['artifact']:50s} {row['test_nll']:10.4f} {scores['test_nll']:10.4f} "
              f"{difference:+.2e}{'' if judged else ' (AIS)'}", flush=True)
    print(f"largest difference of IS- and bound-scored rows: {worst:.2e} nats")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
