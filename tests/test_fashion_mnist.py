"""Tests of genvar_bench.fashion_mnist; the real files are read from $GENVAR_DATA_DIR
(default ../shared/data), whose fashion-mnist/ folder holds the four idx .gz files."""

import gzip
import hashlib
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from genvar_bench import data, fashion_mnist as fm

REPO = Path(__file__).resolve().parents[1]
# Captured at import: several tests below point GENVAR_DATA_DIR elsewhere.
REAL_DATA_DIR = Path(os.environ.get("GENVAR_DATA_DIR") or REPO.parent / "shared" / "data").resolve()
REAL_FOLDER = REAL_DATA_DIR / fm.SUBDIR
needs_real = pytest.mark.skipif(
    not all((REAL_FOLDER / f"{name}.gz").is_file() for name in fm.FILES),
    reason="set GENVAR_DATA_DIR to the folder whose fashion-mnist/ holds the four idx .gz files",
)
WAYS_TO_SUPPLY = ("--data-dir", "GENVAR_DATA_DIR", "apt-get install dataset-fashion-mnist",
                  "/usr/share/datasets/fashion-mnist/", fm.URL)


@pytest.fixture
def isolated_env(tmp_path, monkeypatch):
    """No Fashion-MNIST anywhere: empty GENVAR_DATA_DIR, no Debian folder, cache in tmp_path."""
    empty = tmp_path / "empty_data_dir"
    empty.mkdir()
    monkeypatch.setenv("GENVAR_DATA_DIR", str(empty))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "no_debian_package")
    monkeypatch.delenv(fm.URL_ENV, raising=False)
    return tmp_path


def link_real_files(folder, except_name=None):
    """folder holding links to the real .gz files, all but except_name."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in fm.FILES:
        if name != except_name:
            (folder / f"{name}.gz").symlink_to(REAL_FOLDER / f"{name}.gz")
    return folder


def idx_bytes(array, code=0x08):
    array = np.asarray(array, np.uint8)
    header = bytes([0, 0, code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return header + array.tobytes()


def real_images():
    train = fm.read_idx(REAL_FOLDER / "train-images-idx3-ubyte.gz").reshape(-1, 784)
    test = fm.read_idx(REAL_FOLDER / "t10k-images-idx3-ubyte.gz").reshape(-1, 784)
    return {"train": train[:50_000], "valid": train[50_000:], "test": test}


@pytest.fixture(scope="module")
def binary():
    return data.load_dataset("fashion-mnist", data_dir=REAL_DATA_DIR)


@pytest.fixture(scope="module")
def grey():
    return data.load_dataset("fashion-mnist-grey", data_dir=REAL_DATA_DIR)


# ------------------------------------------------------------------ idx reader
def test_idx_reader_parses_hand_made_files(tmp_path):
    matrix = np.arange(6, dtype=np.uint8).reshape(2, 3)
    assert np.array_equal(fm.parse_idx(idx_bytes(matrix)), matrix)
    assert fm.parse_idx(bytes.fromhex("00000801 00000004 09000302")).tolist() == [9, 0, 3, 2]
    plain, packed = tmp_path / "m-idx2-ubyte", tmp_path / "m-idx2-ubyte.gz"
    plain.write_bytes(idx_bytes(matrix))
    packed.write_bytes(gzip.compress(idx_bytes(matrix)))
    digest = hashlib.sha256(idx_bytes(matrix)).hexdigest()
    for path in (plain, packed):  # the digest is of the decompressed bytes in both cases
        read = fm.read_idx(path, expected_sha256=digest, expected_shape=(2, 3))
        assert read.dtype == np.uint8 and np.array_equal(read, matrix)


@pytest.mark.parametrize("raw, problem", [
    (b"\x12\x34\x08\x01\x00\x00\x00\x01\x07", "not an idx file"),
    (bytes.fromhex("00000d01 00000001 00000000"), "type code 0x0d"),
    (bytes.fromhex("00000802 00000002 00000003 000102"), "truncated"),
    (bytes.fromhex("00000801 00000002 010203"), "too long"),
    (bytes.fromhex("000008"), "not an idx file"),
    (bytes.fromhex("00000803 0000"), "truncated"),
])
def test_idx_reader_refuses_malformed_files(tmp_path, raw, problem):
    path = tmp_path / "bad-idx-ubyte"
    path.write_bytes(raw)
    with pytest.raises(data.DatasetIntegrityError, match=problem) as excinfo:
        fm.read_idx(path)
    assert str(path) in str(excinfo.value)


def test_idx_reader_checks_digest_and_shape(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(idx_bytes([1, 2, 3]))
    with pytest.raises(data.DatasetIntegrityError, match="wrong sha256"):
        fm.read_idx(path, expected_sha256="0" * 64)
    with pytest.raises(data.DatasetIntegrityError, match=r"shape \(3,\), expected \(4,\)"):
        fm.read_idx(path, expected_shape=(4,))


# ---------------------------------------------------------------- real data
def test_registered_kinds():
    assert "fashion-mnist" in data.DATASET_KINDS["binary"]
    assert "fashion-mnist-grey" in data.DATASET_KINDS["continuous"]
    assert set(fm.NAMES) <= set(data.DATASETS)


@needs_real
def test_real_files_match_readme_digests_and_labels():
    labels = fm.read_idx(REAL_FOLDER / "train-labels-idx1-ubyte.gz", *fm.FILES["train-labels-idx1-ubyte"])
    assert labels[:6].tolist() == [9, 0, 0, 3, 0, 2]


@needs_real
def test_shapes_splits_and_kinds(binary, grey):
    for dataset in (binary, grey):
        assert dataset.image_shape == (28, 28) and dataset.data_dim == 784
        for split, rows in fm.SPLIT_SIZES.items():
            tensor = getattr(dataset, split)
            assert tensor.dtype == torch.float32 and tuple(tensor.shape) == (rows, 784)
    assert binary.kind == "binary" and grey.kind == "continuous"
    assert binary.binarization == "fixed Bernoulli(pixel/255) draw, seed 20171130"
    assert grey.value_range == (-1.0, 1.0) and grey.level_log_width == pytest.approx(math.log(2 / 256))


@needs_real
def test_grey_levels_are_the_pixels_and_means_match_readme(grey):
    images = real_images()
    levels = {}
    for split, pixels in images.items():
        values = getattr(grey, split)
        assert -1 <= values.min().item() and values.max().item() <= 1
        # dequantization stays strictly inside each level, even in float32 arithmetic
        level = torch.floor((values + 1) * 128)
        assert torch.equal(level.to(torch.uint8), torch.from_numpy(pixels.copy()))
        assert bool((level < (values + 1) * 128).all())
        levels[split] = level.double()
    train_file = torch.cat([levels["train"], levels["valid"]])  # the whole training file
    assert (train_file / 255).mean().item() == pytest.approx(0.2860, abs=5e-5)
    assert (levels["test"] / 255).mean().item() == pytest.approx(0.2868, abs=5e-5)
    # the noise is uniform within a level: its mean is 1/2, its variance 1/12
    noise = ((grey.test + 1) * 128).double() - levels["test"]
    assert noise.mean().item() == pytest.approx(0.5, abs=1e-3)
    assert noise.var().item() == pytest.approx(1 / 12, abs=1e-3)


@needs_real
def test_fixed_binarization_is_reproducible_and_matches_digests(binary):
    for split, pixels in real_images().items():
        bits = getattr(binary, split)
        assert bool(((bits == 0) | (bits == 1)).all())
        packed = np.packbits(bits.numpy().astype(np.uint8), axis=1)
        assert hashlib.sha256(packed.tobytes()).hexdigest() == fm.BINARY_SHA256[split]
        # Bernoulli(pixel / 255): black pixels stay 0, white ones 1, the mean follows the grey mean
        assert not bits.numpy()[pixels == 0].any() and bits.numpy()[pixels == 255].all()
        assert bits.double().mean().item() == pytest.approx(pixels.mean() / 255, abs=2e-3)
    fm._load_cached.cache_clear()  # a genuine second load, files read again
    fm._read_images_cached.cache_clear()
    again = data.load_dataset("fashion-mnist", data_dir=REAL_DATA_DIR)
    assert again is not binary
    for split in data.SPLITS:
        assert torch.equal(getattr(again, split), getattr(binary, split))


@needs_real
def test_dynamic_binarization_draws_from_the_training_pixels(binary):
    dynamic = data.with_binarization(binary, "dynamic")
    pixels = real_images()["train"]
    assert torch.equal(dynamic.training_data, torch.from_numpy(pixels.astype(np.float32) / 255))
    assert torch.equal(dynamic.test, binary.test)  # scored on the fixed draw, as the fixed rows


def test_binarization_rule_on_known_words():
    """bit = 1 where (w >> 32) / 2^32 < pixel / 255, one raw PCG64 word per pixel."""
    pixels = np.array([[0, 1, 128, 254, 255] * 40], np.uint8).reshape(5, 40)
    words = np.random.PCG64(fm.BINARIZATION_SEED).random_raw(pixels.size).reshape(pixels.shape)
    expected = (words >> np.uint64(32)).astype(np.float64) / 2 ** 32 < pixels / 255
    assert np.array_equal(fm.binarize(pixels), expected)
    assert not fm.binarize(pixels)[pixels == 0].any() and fm.binarize(pixels)[pixels == 255].all()


@needs_real
def test_found_through_env_cached_in_process_and_files_directly_in_folder(binary, monkeypatch, tmp_path):
    monkeypatch.setenv("GENVAR_DATA_DIR", str(REAL_DATA_DIR))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data.load_dataset("fashion-mnist") is data.load_dataset("fashion-mnist")
    direct = link_real_files(tmp_path / "direct")  # idx files directly in the named folder
    assert fm.resolve_files(direct) == fm.resolve_files(REAL_DATA_DIR)
    assert torch.equal(data.load_dataset("fashion-mnist", data_dir=direct).test, binary.test)


def test_lookup_order(isolated_env, monkeypatch):
    """data_dir, then GENVAR_DATA_DIR, then Debian's folder, then the cache."""
    folders = {}
    for origin in ("arg", "env", "debian", "cache"):
        folder = isolated_env / origin / fm.SUBDIR
        folder.mkdir(parents=True)
        for name in fm.FILES:
            (folder / name).write_bytes(b"")  # lookup only checks that the files exist
        folders[origin] = folder
    monkeypatch.setenv("GENVAR_DATA_DIR", str(isolated_env / "env"))
    monkeypatch.setattr(fm, "DEBIAN_DIR", folders["debian"])
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated_env / "cache_home"))
    (isolated_env / "cache_home" / "genvar_bench").mkdir(parents=True)
    (isolated_env / "cache_home" / "genvar_bench" / fm.SUBDIR).symlink_to(folders["cache"])

    def found():
        return {path.parent for path in fm.resolve_files(isolated_env / "arg").values()}

    assert found() == {folders["arg"].resolve()}
    for origin in ("arg", "env", "debian"):
        (folders[origin] / "t10k-labels-idx1-ubyte").unlink()  # an incomplete folder is passed over
        assert found() == {folders[{"arg": "env", "env": "debian", "debian": "cache"}[origin]].resolve()}


# ----------------------------------------------------------- refused files
@needs_real
@pytest.mark.parametrize("damage", ["truncated_gz", "truncated_plain", "wrong_magic", "changed_label"])
def test_damaged_file_refused_with_one_message(tmp_path, damage):
    name = "t10k-labels-idx1-ubyte" if damage in ("wrong_magic", "changed_label") else "t10k-images-idx3-ubyte"
    folder = link_real_files(tmp_path / "data", except_name=name)
    raw = gzip.decompress((REAL_FOLDER / f"{name}.gz").read_bytes())
    if damage == "truncated_gz":
        bad = folder / f"{name}.gz"
        bad.write_bytes((REAL_FOLDER / f"{name}.gz").read_bytes()[:1000])
    elif damage == "truncated_plain":
        bad = folder / name
        bad.write_bytes(raw[:1000])
    elif damage == "wrong_magic":
        bad = folder / name
        bad.write_bytes(b"\x1f\x9d" + raw[2:])
    else:  # right format and size, one label changed: only the digest can tell
        bad = folder / f"{name}.gz"
        bad.write_bytes(gzip.compress(raw[:8] + bytes([(raw[8] + 1) % 10]) + raw[9:]))
    with pytest.raises(data.DatasetIntegrityError) as excinfo:
        data.load_dataset("fashion-mnist-grey", data_dir=folder)
    message = str(excinfo.value)
    assert str(bad) in message and "delete the file" in message
    assert {"truncated_gz": "unreadable", "truncated_plain": "truncated", "wrong_magic": "not an idx file",
            "changed_label": "wrong sha256"}[damage] in message
    for needed in WAYS_TO_SUPPLY:
        assert needed in message
    error = excinfo.value  # one message: no chained exception is printed with it
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_missing_data_dir_is_a_clear_error(isolated_env):
    with pytest.raises(data.DatasetNotFoundError, match="data_dir.*does_not_exist.*does not exist"):
        data.load_dataset("fashion-mnist", data_dir=isolated_env / "does_not_exist")


# ------------------------------------------------------------------ download
@needs_real
def test_download_through_file_url(isolated_env, monkeypatch, grey):
    monkeypatch.setenv(fm.URL_ENV, REAL_FOLDER.as_uri())
    dataset = data.load_dataset("fashion-mnist-grey")
    cache = isolated_env / "xdg_cache" / "genvar_bench" / fm.SUBDIR
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{name}.gz" for name in fm.FILES)
    for name in fm.FILES:  # the downloaded files are the served ones, verified
        assert (cache / f"{name}.gz").read_bytes() == (REAL_FOLDER / f"{name}.gz").read_bytes()
    assert torch.equal(dataset.valid, grey.valid)


@needs_real
def test_download_of_a_wrong_file_leaves_nothing(isolated_env, monkeypatch):
    server = link_real_files(isolated_env / "server", except_name="train-labels-idx1-ubyte")
    (server / "train-labels-idx1-ubyte.gz").symlink_to(REAL_FOLDER / "t10k-labels-idx1-ubyte.gz")
    monkeypatch.setenv(fm.URL_ENV, server.as_uri())
    cache = isolated_env / "xdg_cache" / "genvar_bench" / fm.SUBDIR
    link_real_files(cache, except_name="train-labels-idx1-ubyte")  # only the missing file is fetched
    with pytest.raises(data.DatasetIntegrityError, match=r"not the right file.*train-labels-idx1-ubyte\.gz: shape \(10000,\), expected \(60000,\)"):
        data.load_dataset("fashion-mnist")
    assert not (cache / "train-labels-idx1-ubyte.gz").exists()
    assert sorted(p.name for p in cache.iterdir() if p.name.startswith(".")) == []  # no temporaries


@pytest.mark.parametrize("url_kind", ["missing_local_folder", "unreachable_port"])
def test_offline_error_names_all_ways_to_supply_files(isolated_env, monkeypatch, url_kind):
    url = (isolated_env / "nowhere").as_uri() if url_kind == "missing_local_folder" else "http://127.0.0.1:9/"
    monkeypatch.setenv(fm.URL_ENV, url)
    with pytest.raises(data.DatasetNotFoundError) as excinfo:
        data.load_dataset("fashion-mnist")
    message = str(excinfo.value)
    for needed in (*WAYS_TO_SUPPLY, str(isolated_env / "xdg_cache" / "genvar_bench" / fm.SUBDIR), url):
        assert needed in message
    cache = isolated_env / "xdg_cache" / "genvar_bench" / fm.SUBDIR
    assert not cache.exists() or list(cache.iterdir()) == []
