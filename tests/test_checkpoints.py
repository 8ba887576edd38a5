"""Training checkpoints: loading one runs no code; one that cannot be resumed, whatever
the reason, is set aside with a warning naming it and training starts afresh, exactly
as without it; temporaries left by a killed save are cleared, fresh ones kept."""
import os
import shlex
import time

import pytest
import torch

from genvar_bench import atomic, build_method
from genvar_bench import train as training
from genvar_bench.registry import record_of
from genvar_bench.data import load_dataset
from genvar_bench.profiles import get_profile

PROFILE = get_profile("quick").scaled(2)
NUM_EPOCHS = 2


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").train


def fresh(name, model_seed=0):
    torch.manual_seed(model_seed)
    if name.startswith("rbm"):
        return build_method(name, data_dim=64, num_samples=2, hidden=16)
    return build_method(name, data_dim=64, num_samples=2)


def trained(name, digits, checkpoint=None, model_seed=0):
    """(method, stats) of a run with torch's generator fixed, as the reference has it."""
    method = fresh(name, model_seed)
    torch.manual_seed(1)
    stats = training.train(method, digits, PROFILE, seed=0, show_progress=False,
                           checkpoint=checkpoint, checkpoint_seconds=0)
    return method, stats


_references = {}


def reference(name, digits):
    """The state dict of an uninterrupted run without a checkpoint."""
    if name not in _references:
        _references[name] = trained(name, digits)[0].state_dict()
    return _references[name]


_checkpoints = {}


def valid_checkpoint(name, digits, folder):
    """The state a finished run of another model than the reference's saved (made once)."""
    if name not in _checkpoints:
        trained(name, digits, folder / "valid.pt", model_seed=5)
        _checkpoints[name] = (folder / "valid.pt").read_bytes()
        (folder / "valid.pt").unlink()
    (folder / "valid.pt").write_bytes(_checkpoints[name])
    return torch.load(folder / "valid.pt", weights_only=True)


def assert_same_state(state, expected):
    assert state.keys() == expected.keys()
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, expected[key]) or (
                value.isnan().all() and expected[key].isnan().all()), key
        else:  # extra state: the RBM's chain stream and AIS settings
            assert value == expected[key], key


def set_aside(checkpoint):
    return list(checkpoint.parent.glob(f"{checkpoint.name}.bad-*"))


# ------------------------------------------------------------ no code is run

class RunsCode:
    """Unpickling this calls os.system, as a planted or foreign file might."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_a_checkpoint_that_would_run_code_is_never_executed_but_set_aside(tmp_path, digits):
    checkpoint, marker = tmp_path / "rbm.pt", tmp_path / "code-ran"
    torch.save({"num_epochs": NUM_EPOCHS, "stats": RunsCode(marker)}, checkpoint)
    with pytest.warns(UserWarning) as caught:
        method, stats = trained("rbm-pcd", digits, checkpoint)
    assert not marker.exists(), "loading the checkpoint ran its code"
    assert any(str(warning.message).startswith(f"checkpoint {checkpoint} is unreadable (")
               and "starts afresh" in str(warning.message) for warning in caught)
    assert len(set_aside(checkpoint)) == 1 and stats.epochs == NUM_EPOCHS
    assert_same_state(method.state_dict(), reference("rbm-pcd", digits))


def test_everything_a_checkpoint_holds_round_trips_as_plain_data(tmp_path, digits):
    """Model (with the RBM's non-tensor extra state), optimizer, generators and statistics
    all load under weights_only=True and come back as saved."""
    checkpoint = tmp_path / "rbm.pt"
    method = fresh("rbm-pcd")
    method.ais_settings = "3 temperatures, 2 runs"
    torch.manual_seed(1)
    stats = training.train(method, digits, PROFILE, seed=0, show_progress=False,
                           checkpoint=checkpoint, checkpoint_seconds=0)
    saved = torch.load(checkpoint, weights_only=True)  # raises on anything but plain data
    resumed = fresh("rbm-pcd", model_seed=7)
    recipe = record_of(resumed).recipe
    recipe.prepare(resumed, digits)
    optimizer, generator = recipe.optimizer(resumed, PROFILE), torch.Generator()
    torch.manual_seed(123)
    resumed_stats = training._resume(checkpoint, resumed, optimizer, generator, NUM_EPOCHS)
    assert resumed_stats == stats and all(type(entry) is tuple for entry in resumed_stats.history)
    assert resumed.ais_settings == "3 temperatures, 2 runs"
    assert_same_state(resumed.state_dict(), method.state_dict())
    momentum = [state["momentum_buffer"] for state in optimizer.state_dict()["state"].values()]
    assert len(momentum) == 3 and all(torch.equal(m, s["momentum_buffer"]) for m, s in zip(
        momentum, saved["optimizer"]["state"].values()))
    assert torch.equal(generator.get_state(), saved["generator"])
    assert torch.equal(torch.get_rng_state(), saved["torch_rng"])


# ------------------------------------------------ malformed checkpoints

def _wrong_shape(key):
    def change(state):
        state["method"][key] = torch.zeros(3, 1)
    return change


def _wrong_shape_optimizer_state(state):
    for parameter_state in state["optimizer"]["state"].values():
        for key, value in parameter_state.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0:
                parameter_state[key] = torch.zeros(value.numel() + 1)


def _history_of_pairs(state):
    state["stats"]["history"] = [entry[:2] for entry in state["stats"]["history"]]


# (id, method, change to a valid checkpoint, a word the warning must name)
MALFORMED = [
    ("stats-extra-field", "rbm-pcd", lambda s: s["stats"].update(learning_rate=0.1), "learning_rate"),
    ("stats-missing-field", "rbm-pcd", lambda s: s["stats"].pop("examples"), "examples"),
    ("num-epochs-float", "rbm-pcd", lambda s: s.update(num_epochs=2.0), "num_epochs"),
    ("num-epochs-string", "rbm-pcd", lambda s: s.update(num_epochs="2"), "num_epochs"),
    ("seconds-string", "rbm-pcd", lambda s: s["stats"].update(seconds="fast"), "seconds"),
    ("epochs-beyond-run", "rbm-pcd", lambda s: s["stats"].update(epochs=3), "epochs"),
    ("history-of-pairs", "rbm-pcd", _history_of_pairs, "history"),
    ("missing-field", "rbm-pcd", lambda s: s.pop("torch_rng"), "torch_rng"),
    ("unknown-field", "rbm-pcd", lambda s: s.update(comment="hi"), "comment"),
    ("not-a-dict", "rbm-pcd", lambda s: s.update(stats=[1, 2]), "stats"),
    ("weight-of-another-shape", "rbm-pcd", _wrong_shape("rbm.weight"), "rbm.weight"),
    ("model-missing-a-weight", "rbm-pcd", lambda s: s["method"].pop("rbm.weight"), "rbm.weight"),
    # The RBM sizes its persistent chains as loaded: only their number may differ.
    ("chains-of-another-width", "rbm-pcd", _wrong_shape("persistent_chains"), "persistent_chains"),
    ("optimizer-state-of-another-shape", "rbm-pcd", _wrong_shape_optimizer_state, "shape"),
    ("optimizer-state-of-another-shape", "vae", _wrong_shape_optimizer_state, "shape"),
    # Set after the model and optimizer are loaded: both must be restored.
    ("generator-state-not-a-generators", "rbm-pcd",
     lambda s: s.update(generator=torch.zeros(3, dtype=torch.uint8)), "Generator|state"),
    ("generator-state-not-a-generators", "vae",
     lambda s: s.update(generator=torch.zeros(3, dtype=torch.uint8)), "Generator|state"),
    ("torch-rng-state-floats", "rbm-pcd", lambda s: s.update(torch_rng=torch.zeros(3)), "torch_rng"),
]


@pytest.mark.parametrize("name, change, reason", [case[1:] for case in MALFORMED],
                         ids=[f"{case[1]}-{case[0]}" for case in MALFORMED])
def test_a_malformed_checkpoint_is_set_aside_and_training_starts_exactly_afresh(
        tmp_path, digits, name, change, reason):
    checkpoint = tmp_path / f"{name}.pt"
    state = valid_checkpoint(name, digits, tmp_path)
    change(state)
    torch.save(state, checkpoint)
    with pytest.warns(UserWarning, match=f"checkpoint {checkpoint} cannot be resumed "
                                         f"\\(.*({reason}).*\\).*starts afresh"):
        method, stats = trained(name, digits, checkpoint)
    assert len(set_aside(checkpoint)) == 1
    assert stats.epochs == NUM_EPOCHS and [entry[0] for entry in stats.history] == [1, 2]
    # Whatever was loaded before the failure was undone: the run is the reference's.
    assert_same_state(method.state_dict(), reference(name, digits))
    assert torch.load(checkpoint, weights_only=True)["stats"]["epochs"] == NUM_EPOCHS


# ------------------------------------------------------ stale temporaries

def killed_save_temporary(target):
    """The temporary a save to `target` killed mid-write leaves: write_atomic's own name."""
    names = []

    def killed(temporary):
        names.append(temporary)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic.write_atomic(target, killed)
    names[0].write_bytes(b"half a checkpoint")  # a SIGKILL leaves it; the except does not run
    return names[0]


def age(path, seconds):
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_stale_temporaries_are_removed_and_everything_else_kept(tmp_path):
    stale = killed_save_temporary(tmp_path / "vae.pt")
    stale_csv = killed_save_temporary(tmp_path / "results.csv")
    fresh_one = killed_save_temporary(tmp_path / "iwae.pt")  # a concurrent writer's
    kept = [tmp_path / "vae.pt", tmp_path / ".hidden", tmp_path / ".notes.tmp",
            tmp_path / "vae.tmp.pt", tmp_path / ".vae.pt.abc.tmp.pt.bad-20240101"]
    for path in kept:
        path.write_text("keep")
    (tmp_path / ".dir.abcdefgh.tmp.pt").mkdir()
    for path in [stale, stale_csv, *kept, tmp_path / ".dir.abcdefgh.tmp.pt"]:
        age(path, 7200)
    removed = atomic.remove_stale_temporaries(tmp_path, older_than_seconds=3600)
    assert sorted(removed) == sorted([stale, stale_csv])
    assert not stale.exists() and not stale_csv.exists() and fresh_one.exists()
    assert all(path.exists() for path in kept) and (tmp_path / ".dir.abcdefgh.tmp.pt").is_dir()
    assert atomic.remove_stale_temporaries(tmp_path / "absent", older_than_seconds=0) == []


def test_training_clears_stale_temporaries_beside_its_checkpoint(tmp_path, digits):
    checkpoint = tmp_path / "checkpoints" / "rbm.pt"
    stale, fresh_one = killed_save_temporary(checkpoint), killed_save_temporary(checkpoint)
    age(stale, 2 * 24 * 3600)
    trained("rbm-pcd", digits, checkpoint)
    assert not stale.exists() and fresh_one.exists() and checkpoint.exists()
