"""`run --tensorboard DIR`: one TensorBoard run per row with the scalars and sample grids
promised, read back with TensorBoard's own event reader; the row unchanged by the log."""
import pytest

from genvar_bench import cli
from genvar_bench.results import read_results

pytest.importorskip("tensorboard", reason="the tensorboard extra: pip install -e '.[tensorboard]'")

FAST = ["--dataset", "digits", "--method", "vae", "--k", "1", "--epochs", "4", "--eval-samples", "8",
        "--no-progress"]


def events(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(directory), size_guidance={"images": 0, "scalars": 0})
    accumulator.Reload()
    return accumulator


def test_a_runs_log_has_its_scalars_and_sample_grids_and_the_row_is_unchanged(tmp_path):
    board = tmp_path / "tb"
    assert cli.main(["run", *FAST, "--out", str(tmp_path / "with"), "--tensorboard", str(board)]) == 0
    assert cli.main(["run", *FAST, "--out", str(tmp_path / "without")]) == 0
    with_log = read_results(tmp_path / "with" / "digits" / "quick").iloc[0]
    without = read_results(tmp_path / "without" / "digits" / "quick").iloc[0]
    for column in ("test_nll", "test_bound", "train_bound", "final_train_loss", "model_sha256"):
        assert with_log[column] == without[column], column

    runs = [path for path in (board / "digits" / "quick").iterdir()]
    assert len(runs) == 1 and runs[0].name.startswith("vae-k1-L1-s0-cpu-fused-")
    log = events(runs[0])
    tags = log.Tags()
    assert {"train/loss", "train/learning_rate", "train/examples_per_second", "test/bound",
            "budget/test_nll", "budget/test_bound", "final/test_nll"} <= set(tags["scalars"])
    assert [event.step for event in log.Scalars("train/loss")] == [1, 2, 3, 4]
    assert [event.step for event in log.Scalars("budget/test_nll")] == [1, 4]  # the stage ends
    assert log.Scalars("final/test_nll")[0].value == pytest.approx(with_log["test_nll"], rel=1e-6)
    assert log.Scalars("train/learning_rate")[0].value == pytest.approx(1e-3)
    assert log.Scalars("train/loss")[-1].value == pytest.approx(with_log["final_train_loss"], rel=1e-6)
    assert "samples" in tags["images"]
    grids = log.Images("samples")
    assert [grid.step for grid in grids] == [1, 4] and grids[0].width == 8 * 8


def test_tensorboard_under_ray_logs_the_same(tmp_path):
    pytest.importorskip("ray")
    board = tmp_path / "tb"
    assert cli.main(["run", *FAST, "--out", str(tmp_path), "--tensorboard", str(board),
                     "--executor", "ray"]) == 0
    runs = list((board / "digits" / "quick").iterdir())
    assert len(runs) == 1
    assert {"train/loss", "test/bound", "budget/test_nll"} <= set(events(runs[0]).Tags()["scalars"])


def test_an_unwritable_tensorboard_folder_is_one_line_before_any_work(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["run", *FAST, "--out", str(tmp_path / "out"), "--tensorboard", str(blocker / "tb")])
    assert "--tensorboard" in str(exit_.value)
    assert not (tmp_path / "out" / "digits").exists()
