"""Sweep files: `run --config FILE.yaml` runs what its `run` commands would, checks every
entry before any work, and tells a problem with its file and line."""
import os
from pathlib import Path

import pytest

from genvar_bench import cli, sweeps
from genvar_bench.cli import run as run_command
from genvar_bench.results import read_results

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = os.environ.get("GENVAR_DATA_DIR")

SMALL = """\
profile: quick
dataset: digits
epochs: 1
eval_samples: 8
runs:
  - method: vae
    k: [1, 5]
  - method: dae
    options:
      noise: [0.2, 0.4]
"""


def planned_hashes(path: Path) -> dict[str, str]:
    """{spec hash: results folder} of every configuration a sweep file plans."""
    from genvar_bench import results
    from genvar_bench.plugins import load_plugin

    for source in sweeps.plugins_of(path):
        load_plugin(str(REPO / source))
    sweep = sweeps.load(path, set(run_command.registered_options()))
    planned = {}
    for entry in sweep.entries:
        args = run_command._run_parser().parse_args(entry.argv)
        args.out, args.data_dir = entry.out, DATA_DIR
        profile, dataset, _ = run_command.checked_settings(args)
        folder = results.table_dir(REPO / args.out, dataset.name, profile.name)
        for spec, _ in run_command.build_configs(args, profile, dataset):
            planned[spec.hash] = str(folder)
    return planned


def test_a_sweep_gives_the_rows_of_its_commands_bit_for_bit(tmp_path):
    config = tmp_path / "small.yaml"
    config.write_text(SMALL)
    assert cli.main(["run", "--config", str(config), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    fast = ["--dataset", "digits", "--epochs", "1", "--eval-samples", "8", "--no-progress",
            "--out", str(tmp_path / "b")]
    assert cli.main(["run", *fast, "--method", "vae", "--k", "1,5"]) == 0
    assert cli.main(["run", *fast, "--method", "dae", "--noise", "0.2,0.4"]) == 0
    a = read_results(tmp_path / "a" / "digits" / "quick").set_index("spec_hash").sort_index()
    b = read_results(tmp_path / "b" / "digits" / "quick").set_index("spec_hash").sort_index()
    assert list(a.index) == list(b.index) and len(a) == 4
    assert (a["test_nll"] == b["test_nll"]).all() and (a["train_bound"] == b["train_bound"]).all()
    assert set(a["sweep"]) == {f"{config.as_posix()} (sha256 {sweeps.load(config, set(run_command.registered_options())).sha256[:12]})"}
    assert "sweep" not in b or b["sweep"].isna().all()


def test_the_out_of_the_command_line_wins_over_the_files(tmp_path):
    config = tmp_path / "small.yaml"
    config.write_text(f"out: {tmp_path / 'from-file'}\n" + SMALL.replace("k: [1, 5]", "k: 1").split("  - method: dae")[0])
    assert cli.main(["run", "--config", str(config), "--no-progress"]) == 0
    assert len(read_results(tmp_path / "from-file" / "digits" / "quick")) == 1
    assert cli.main(["run", "--config", str(config), "--no-progress", "--out", str(tmp_path / "cli")]) == 0
    assert len(read_results(tmp_path / "cli" / "digits" / "quick")) == 1


BAD = [
    ("profile: quick\nruns:\n  - method: vae\n  - metod: dae\n", 4, "unknown key 'metod'"),
    ("profile: quick\nruns:\n  - method: vae\n    k: [1, x]\n", 4, "--k"),
    ("profile: quick\nruns:\n  - method: vae\n     k: 1\n", 4, "not valid YAML"),
    ("runs:\n  - method: vae\n    options:\n      nois: 0.1\n", 4, "unknown method option 'nois'"),
    ("dataset: digits\nruns:\n  - method: vae\n  - method: nosuch\n", 4, "unknown method nosuch"),
    ("dataset: digits\nruns:\n  - method: vae\n    method: iwae\n", 4, "given twice"),
    ("dataset: digits\nprofile: quick\n", 1, "no runs"),
    ("dataset: digits\nruns: []\n", 2, "one or more"),
    ("dataset: digits\nruns:\n  - method: vae\n    all: maybe\n", 4, "true or false"),
    ("dataset: digits\nruns:\n  - method: vae\n    k: {a: 1}\n", 4, "a value or a list"),
    ("dataset: nowhere\nruns:\n  - method: vae\n", 1, "--dataset"),
    ("runs:\n  - method: vae\n    options: {noise: 0.1}\n", 2, "--noise applies to none"),
    ("runs:\n  - method: vae\n    runs: []\n", 3, "belongs at the top"),
]


@pytest.mark.parametrize("text, line, message", BAD, ids=[b[2] for b in BAD])
def test_a_malformed_sweep_is_one_line_with_its_line_and_no_work(tmp_path, text, line, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", "--config", str(config), "--out", str(out)])
    error = str(exit_.value.code)
    assert error.startswith(f"error: {config}:{line}: ") and message in error, error
    assert "\n" not in error
    assert not list(out.rglob("*")), "nothing is made before every entry is checked"


def test_what_to_run_belongs_in_the_file(tmp_path):
    config = tmp_path / "small.yaml"
    config.write_text(SMALL)
    with pytest.raises(SystemExit, match="--method is set in the sweep file"):
        cli.main(["run", "--config", str(config), "--method", "vae"])
    with pytest.raises(SystemExit, match="cannot be read"):
        cli.main(["run", "--config", str(tmp_path / "missing.yaml")])


def test_all_in_a_sweep_runs_only_the_plugins_its_entry_names(tmp_path):
    config = tmp_path / "all.yaml"
    config.write_text(f"dataset: digits\nruns:\n  - all: true\n  - method: iwae-dreg\n"
                      f"    plugin: {REPO / 'examples' / 'iwae_dreg.py'}\n    k: 5\n")
    sweep = sweeps.load(config, set(run_command.registered_options()))
    from genvar_bench.plugins import load_plugin

    load_plugin(str(REPO / "examples" / "iwae_dreg.py"))
    first = run_command._run_parser().parse_args(sweep.entries[0].argv)
    first.out = str(tmp_path)
    profile, dataset, _ = run_command.checked_settings(first)
    methods = {spec.method for spec, _ in run_command.build_configs(first, profile, dataset)}
    assert "iwae-dreg" not in methods and {"vae", "iwae", "rbm-cd", "dae"} <= methods


COMMITTED = [("digits-quick.yaml", "results/digits/quick", False),
             ("dae-noise.yaml", "results/sweeps/dae-noise/digits/quick", False),
             ("diffusion.yaml", "results/sweeps/diffusion/digits/quick", False),
             ("continuous.yaml", "results/digits-grey/quick", False),
             ("continuous.yaml", "results/swissroll/quick", False),
             ("mnist-standard.yaml", "results/mnist/standard", True),
             ("mnist-paper.yaml", "results/mnist/paper", True),
             ("fashion-mnist-standard.yaml", "results/fashion-mnist/standard", True)]


@pytest.mark.parametrize("name, folder, needs_data", COMMITTED, ids=[c[1] for c in COMMITTED])
def test_every_committed_row_is_planned_by_its_sweep_file(name, folder, needs_data, monkeypatch):
    if needs_data and not DATA_DIR:
        pytest.skip("set GENVAR_DATA_DIR to the folder of binarized_mnist.npz and fashion-mnist/")
    monkeypatch.chdir(REPO)
    table = read_results(REPO / folder)
    if table.empty:
        pytest.skip(f"{folder} holds no rows yet")
    planned = planned_hashes(REPO / "sweeps" / name)
    missing = table[~table["spec_hash"].isin(planned)]
    assert missing.empty, f"rows of {folder} no entry of sweeps/{name} plans:\n{missing[['method', 'k', 'seed']]}"
    assert {planned[h] for h in table["spec_hash"]} == {str(REPO / folder)}


def test_every_sweep_file_is_committed_with_a_table_or_its_command():
    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        text = path.read_text()
        assert f"run --config sweeps/{path.name}" in text, f"{path.name} says how to run it"
        if path.name == "demo.yaml":  # scripts/demo.sh's, into my-results/
            continue
        assert any(name == path.name for name, _, _ in COMMITTED), f"{path.name} has a table here"


def test_a_sweep_shows_rows_done_out_of_all_with_an_eta(tmp_path, capsys):
    config = tmp_path / "small.yaml"
    config.write_text(SMALL)
    assert cli.main(["run", "--config", str(config), "--out", str(tmp_path), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "4 rows to train" in err
    assert [line.split()[1] for line in err.splitlines() if line.strip().startswith("rows ")] == \
        ["1/4", "2/4", "3/4", "4/4"]
    assert "left" in err.split("rows 3/4")[1].splitlines()[0]


def test_the_demo_is_the_digits_tables_seed_0_of_run_all(monkeypatch):
    monkeypatch.chdir(REPO)
    demo = set(planned_hashes(REPO / "sweeps" / "demo.yaml"))
    committed = read_results(REPO / "results" / "digits" / "quick")
    seed_0_all = committed[(committed["seed"] == 0) & (committed["backend"] == "fused")
                           & (committed["method"] != "iwae-dreg")]
    assert demo == set(seed_0_all["spec_hash"]) and len(demo) == 12
