"""Tests of genvar_bench.data; the real MNIST copy is read through $GENVAR_DATA_DIR."""

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from genvar_bench import data

# Captured at import: several tests below point GENVAR_DATA_DIR elsewhere.
REAL_DATA_DIR = os.environ.get("GENVAR_DATA_DIR")
needs_real_mnist = pytest.mark.skipif(
    not REAL_DATA_DIR or not (Path(REAL_DATA_DIR) / data.MNIST_FILENAME).is_file(),
    reason="set GENVAR_DATA_DIR to the folder holding binarized_mnist.npz",
)
FAKE_ROWS = {"train": 7, "valid": 3, "test": 5}


@pytest.fixture
def isolated_env(tmp_path, monkeypatch):
    """No MNIST anywhere: empty GENVAR_DATA_DIR, cache redirected into tmp_path."""
    empty = tmp_path / "empty_data_dir"
    empty.mkdir()
    monkeypatch.setenv("GENVAR_DATA_DIR", str(empty))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))
    monkeypatch.delenv("GENVAR_MNIST_URL", raising=False)
    return tmp_path


def write_amat(path, pixels):
    """Write 0/1 pixels as .amat text (784 space-separated digits a line), vectorised
    because np.savetxt takes seconds for 10k rows."""
    chars = np.full((pixels.shape[0], 2 * pixels.shape[1]), ord(" "), dtype=np.uint8)
    chars[:, 0::2] = pixels + ord("0")
    chars[:, -1] = ord("\n")
    Path(path).write_bytes(chars.tobytes())


def write_fake_amat_folder(folder):
    """Random binary splits written as .amat files; returns the pixels per split."""
    rng = np.random.default_rng(123)
    folder.mkdir(parents=True, exist_ok=True)
    pixels = {s: rng.integers(0, 2, (n, data.MNIST_PIXELS), dtype=np.uint8) for s, n in FAKE_ROWS.items()}
    for split, bits in pixels.items():
        write_amat(folder / f"binarized_mnist_{split}.amat", bits)
    return pixels


def digests_of(pixels):
    return {split: data.packed_digest(np.packbits(bits, axis=1)) for split, bits in pixels.items()}


@pytest.fixture(scope="module")
def real_mnist():
    return data.load_dataset("mnist", data_dir=REAL_DATA_DIR)


@needs_real_mnist
def test_mnist_shapes_values_and_pixel_means(real_mnist):
    assert real_mnist.image_shape == (28, 28) and real_mnist.data_dim == 784
    expected_means = {"train": 0.13056, "valid": 0.13113, "test": 0.13251}
    for split, rows in data.MNIST_SPLIT_SIZES.items():
        tensor = getattr(real_mnist, split)
        assert tensor.dtype == torch.float32 and tuple(tensor.shape) == (rows, 784)
        assert bool(((tensor == 0) | (tensor == 1)).all())  # torch.unique is slow on 39M values
        assert tensor.double().mean().item() == pytest.approx(expected_means[split], abs=1e-5)


@needs_real_mnist
def test_mnist_found_through_env_and_cached_in_process(real_mnist, monkeypatch, tmp_path):
    monkeypatch.setenv("GENVAR_DATA_DIR", REAL_DATA_DIR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # the env folder must win, not the cache
    first = data.load_dataset("mnist")
    assert data.load_dataset("mnist") is first
    assert torch.equal(first.test, real_mnist.test)


def test_digits_shapes_binary_and_deterministic():
    digits = data.load_dataset("digits")
    assert digits.image_shape == (8, 8) and digits.data_dim == 64
    data._load_digits_cached.cache_clear()  # force a genuine second load
    again = data.load_dataset("digits")
    assert again is not digits
    for split, rows in data.DIGITS_SPLIT_SIZES.items():
        tensor = getattr(digits, split)
        assert tensor.dtype == torch.float32 and tuple(tensor.shape) == (rows, 64)
        assert set(torch.unique(tensor).tolist()) == {0.0, 1.0}
        assert torch.equal(tensor, getattr(again, split))


def test_digits_splits_are_disjoint_rows_of_sklearn_data():
    from sklearn.datasets import load_digits

    binary = load_digits().data >= 8
    indices = data.digits_split_indices()
    all_rows = np.concatenate([indices[s] for s in data.SPLITS])
    assert len(all_rows) == len(np.unique(all_rows)) == len(binary)
    digits = data.load_dataset("digits")
    for split in data.SPLITS:
        assert np.array_equal(getattr(digits, split).numpy(), binary[indices[split]])


def test_download_and_convert_through_file_url(isolated_env, monkeypatch):
    pixels = write_fake_amat_folder(isolated_env / "server")
    monkeypatch.setenv("GENVAR_MNIST_URL", (isolated_env / "server").as_uri())
    # The loader verifies against the module constants: make them describe the fake data.
    monkeypatch.setattr(data, "MNIST_SHA256", digests_of(pixels))
    monkeypatch.setattr(data, "MNIST_SPLIT_SIZES", FAKE_ROWS)
    dataset = data.load_dataset("mnist")
    cache_dir = isolated_env / "xdg_cache" / "genvar_bench"
    assert sorted(p.name for p in cache_dir.iterdir()) == [data.MNIST_FILENAME]  # no temp leftovers
    with np.load(cache_dir / data.MNIST_FILENAME) as archive:
        assert archive["shape"].tolist() == [784]
        for split in data.SPLITS:
            assert np.array_equal(np.unpackbits(archive[split], axis=1)[:, :784], pixels[split])
            assert np.array_equal(getattr(dataset, split).numpy(), pixels[split])


def test_convert_with_wrong_digest_names_split_and_writes_nothing(tmp_path):
    pixels = write_fake_amat_folder(tmp_path / "amat")
    wrong = {**digests_of(pixels), "valid": "0" * 64}
    out_path = tmp_path / "out" / data.MNIST_FILENAME
    with pytest.raises(data.DatasetIntegrityError, match="'valid'"):
        data.convert_amat(tmp_path / "amat", out_path, expected_digests=wrong, expected_rows=FAKE_ROWS)
    assert not out_path.exists()


def test_convert_rejects_wrong_row_count(tmp_path):
    pixels = write_fake_amat_folder(tmp_path / "amat")
    with pytest.raises(data.DatasetIntegrityError, match="'train'.*7 images"):
        data.convert_amat(tmp_path / "amat", tmp_path / "out.npz", expected_digests=digests_of(pixels))


def test_corrupt_npz_in_data_dir_names_split_and_fix(tmp_path, isolated_env):
    packed = {s: np.zeros((n, 98), np.uint8) for s, n in FAKE_ROWS.items()}
    np.savez(tmp_path / data.MNIST_FILENAME, **packed, shape=np.array([784]))
    with pytest.raises(data.DatasetIntegrityError, match="'train'.*delete the file"):
        data.load_dataset("mnist", data_dir=tmp_path)


@needs_real_mnist
def test_real_test_split_round_trips_through_amat(real_mnist, tmp_path):
    """Text written from the real test split must convert back to the hard-coded digest;
    train/valid are small fakes so the test stays fast."""
    amat_dir = tmp_path / "amat"
    pixels = write_fake_amat_folder(amat_dir)
    write_amat(amat_dir / "binarized_mnist_test.amat", real_mnist.test.numpy().astype(np.uint8))
    expected = {**digests_of(pixels), "test": data.MNIST_SHA256["test"]}
    rows = {**FAKE_ROWS, "test": 10_000}
    out_path = data.convert_amat(amat_dir, tmp_path / data.MNIST_FILENAME, expected, rows)
    with np.load(out_path) as archive:
        assert data.packed_digest(archive["test"]) == data.MNIST_SHA256["test"]


@pytest.mark.parametrize("url_kind", ["missing_local_folder", "unreachable_port"])
def test_offline_error_names_all_ways_to_supply_file(isolated_env, monkeypatch, url_kind):
    url = (isolated_env / "nowhere").as_uri() if url_kind == "missing_local_folder" else "http://127.0.0.1:9/"
    monkeypatch.setenv("GENVAR_MNIST_URL", url)
    with pytest.raises(data.DatasetNotFoundError) as excinfo:
        data.load_dataset("mnist")
    message = str(excinfo.value)
    cache_file = isolated_env / "xdg_cache" / "genvar_bench" / data.MNIST_FILENAME
    for needed in ("--data-dir", "GENVAR_DATA_DIR", str(cache_file), data.MNIST_URL):
        assert needed in message
    assert isinstance(excinfo.value, RuntimeError)
    assert not cache_file.exists()


def test_missing_data_dir_argument_is_a_clear_error(isolated_env):
    missing = isolated_env / "does_not_exist"
    with pytest.raises(data.DatasetNotFoundError, match="data_dir.*does_not_exist.*does not exist"):
        data.load_dataset("mnist", data_dir=missing)


def test_missing_env_data_dir_is_a_clear_error(isolated_env, monkeypatch):
    monkeypatch.setenv("GENVAR_DATA_DIR", str(isolated_env / "typo"))
    with pytest.raises(data.DatasetNotFoundError, match="GENVAR_DATA_DIR.*typo"):
        data.load_dataset("mnist")


def test_unknown_dataset_name_lists_known_names():
    with pytest.raises(ValueError, match="mnist.*digits.*digits-grey.*swissroll"):
        data.load_dataset("cifar10")
    assert data.DATASETS == ("mnist", "digits", "fashion-mnist", "digits-grey", "swissroll",
                             "fashion-mnist-grey")


def test_continuous_datasets():
    grey, roll = data.load_dataset("digits-grey"), data.load_dataset("swissroll")
    assert grey.kind == roll.kind == "continuous" and data.load_dataset("digits").kind == "binary"
    assert grey.train.shape == (1197, 64) and -1 <= grey.train.min() and grey.train.max() <= 1
    levels = torch.floor((grey.train + 1) * 17 / 2)  # the dequantization is within each level
    binary = data.load_dataset("digits").train
    assert torch.equal(levels >= 8, binary.bool())
    assert roll.train.shape == (10000, 2) and roll.test.shape == (2000, 2)
    assert roll.image_shape is None and grey.level_log_width == pytest.approx(math.log(2 / 17))
