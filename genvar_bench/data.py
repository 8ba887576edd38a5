"""Datasets of the benchmark: binarized MNIST and Fashion-MNIST (28x28) and scikit-learn
digits (8x8), and continuous ones for Gaussian diffusion: grey-level digits and
Fashion-MNIST, and the 2-D swiss roll. Fashion-MNIST lives in genvar_bench.fashion_mnist.

Every binary split is a float32 tensor [N, D] of 0.0/1.0. MNIST is the fixed binarization
of Larochelle & Murray (2011), stored as ``binarized_mnist.npz`` (rows packed with
``np.packbits(axis=1)``); where no copy is found it is downloaded as the canonical
``.amat`` text files, converted and verified against hard-coded digests.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from genvar_bench.atomic import write_atomic

DATASET_KINDS = {"binary": ("mnist", "digits", "fashion-mnist"),
                 "continuous": ("digits-grey", "swissroll", "fashion-mnist-grey")}
DATASETS = DATASET_KINDS["binary"] + DATASET_KINDS["continuous"]
SPLITS = ("train", "valid", "test")

MNIST_FILENAME = "binarized_mnist.npz"
MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
MNIST_PIXELS = 784
MNIST_SPLIT_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}
# sha256 of each packed (N, 98) uint8 array's C-order bytes; the .npz file's own
# digest is useless here because zip metadata differs between writers.
MNIST_SHA256 = {
    "train": "727146c35424b019f3e350e1e69faa05644a0abaf787e3f4e1a9632220a13906",
    "valid": "a256ac44ae26be720fad8616a05ed6ecfd1619930d9a208379bb2a4405df5b6d",
    "test": "9fcd8da6f0fdf09b2ba30fe63a0bb784042a0de82563172530229b983e294ff2",
}

DIGITS_SPLIT_SIZES = {"train": 1197, "valid": 300, "test": 300}
DIGITS_THRESHOLD = 8  # sklearn digits pixels are 0..16
DIGITS_LEVELS = 17
SWISSROLL_SPLIT_SIZES = {"train": 10_000, "valid": 2_000, "test": 2_000}
_PROGRESS_MIN_BYTES = 1 << 20


# Loaders of datasets kept in modules of their own ({name: load(name, data_dir)}), which
# register here when imported (`genvar_bench.fashion_mnist`, imported by the package).
LOADERS: dict[str, Callable[[str, "str | os.PathLike | None"], "Dataset"]] = {}


class DatasetNotFoundError(RuntimeError, FileNotFoundError):
    """No copy of a dataset could be found or downloaded."""


class DatasetIntegrityError(RuntimeError):
    """A dataset file exists but its content is not what it should be."""


@dataclass(frozen=True)
class Dataset:
    """Train/valid/test splits; the in-process cache shares the tensors: never modify them.

    kind is "binary" (0/1 pixels) or "continuous". Continuous data made from
    discrete levels were dequantized (uniform noise within each level, then
    scaled); `level_log_width` is the log of one level's width in the stored
    units, so that NLL - D * level_log_width of a density model bounds the discrete
    data's -log P (None where the data have no levels: the swiss roll)."""

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    image_shape: tuple[int, int] | None
    binarization: str
    kind: str = "binary"
    # (low, high) of the stored values, mapped to white and black in image grids
    value_range: tuple[float, float] = (0.0, 1.0)
    level_log_width: float | None = None
    # Binary data made from grey images: the training images' grey levels as Bernoulli
    # probabilities in [0, 1], for training on a fresh draw per pass (`dynamic`); None
    # where the source holds bits only (binarized_mnist.npz).
    train_grey: torch.Tensor | None = None
    # Whether training draws fresh bits from train_grey every pass (`dynamic`).
    dynamic: bool = False

    @property
    def data_dim(self) -> int:
        return int(self.train.shape[1])

    @property
    def training_data(self) -> torch.Tensor:
        """What training passes over: the bits, or under dynamic binarization the grey
        levels each pass draws its bits from (`train.train(..., binarize=True)`)."""
        return self.train_grey if self.dynamic and self.train_grey is not None else self.train


BINARIZATIONS = ("fixed", "dynamic")


def with_binarization(dataset: Dataset, binarization: str) -> Dataset:
    """The dataset under `binarization`: "fixed" (as loaded) or "dynamic", where training
    draws fresh bits, Bernoulli(grey level), for every image on every pass (the IWAE
    paper's Table 1 protocol) and the validation and test splits keep the fixed draw, so
    test NLLs of both protocols are on the same bits. A ValueError names what cannot be."""
    if binarization not in BINARIZATIONS:
        raise ValueError(f"unknown binarization {binarization!r}; known: {', '.join(BINARIZATIONS)}")
    if binarization == "fixed":
        return dataset
    if dataset.kind != "binary":
        raise ValueError(f"{dataset.name} is continuous data: only binary data are binarized")
    if dataset.train_grey is None:
        raise ValueError(f"{dataset.name} has no grey levels to draw from ({dataset.binarization} "
                         f"only); dynamic binarization needs grey images, e.g. fashion-mnist or digits")
    return dataclasses.replace(
        dataset, dynamic=True,
        binarization=f"dynamic: a fresh Bernoulli(grey level) draw per training pass; "
                     f"test and validation: {dataset.binarization}")


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset by name (one of DATASETS); results are cached in-process."""
    if name == "mnist":
        path = resolve_mnist_file(data_dir)
        stat = path.stat()  # a replaced file gets a new cache entry
        return _load_mnist_cached(str(path), stat.st_mtime_ns, stat.st_size)
    if name == "digits":
        return _load_digits_cached()
    if name == "digits-grey":
        return _load_digits_grey_cached()
    if name == "swissroll":
        return _load_swissroll_cached()
    if name in LOADERS:
        return LOADERS[name](name, data_dir)
    raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}")


# ---------------------------------------------------------------- MNIST lookup
def default_cache_dir() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "genvar_bench"


def mnist_search_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for the .npz, in order; named folders must exist."""
    dirs = []
    named = [("data_dir (--data-dir)", data_dir), ("GENVAR_DATA_DIR", os.environ.get("GENVAR_DATA_DIR"))]
    for origin, folder in named:
        if folder in (None, ""):  # not given
            continue
        if not Path(folder).is_dir():
            raise DatasetNotFoundError(f"{origin} {str(folder)!r} does not exist or is not a "
                                       f"directory.\n{supply_advice()}")
        dirs.append(Path(folder))
    return dirs + [default_cache_dir()]


def resolve_mnist_file(data_dir: str | os.PathLike | None = None) -> Path:
    """Path of a binarized_mnist.npz, downloading it into the cache if needed."""
    for folder in mnist_search_dirs(data_dir):
        if (folder / MNIST_FILENAME).is_file():
            return (folder / MNIST_FILENAME).resolve()
    cache = default_cache_dir()
    base_url = os.environ.get("GENVAR_MNIST_URL") or MNIST_URL
    try:
        return download_mnist(cache, base_url).resolve()
    except OSError as err:  # URLError, HTTP errors, unwritable cache
        raise DatasetNotFoundError(
            f"binarized MNIST not found and the download from {base_url} failed ({err}).\n"
            f"{supply_advice()}") from err


def supply_advice() -> str:
    """The three ways to supply the MNIST file, for error messages."""
    return (f"Supply {MNIST_FILENAME} in one of three ways:\n"
            f"  - pass --data-dir DIR (data_dir=DIR) for a folder that holds it,\n"
            f"  - set GENVAR_DATA_DIR=DIR,\n"
            f"  - place it in the cache directory {default_cache_dir() / MNIST_FILENAME}.\n"
            f"The source files binarized_mnist_{{train,valid,test}}.amat can be "
            f"downloaded from {MNIST_URL}")


# ------------------------------------------------------- MNIST file content
def packed_digest(packed: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(packed).tobytes()).hexdigest()


def verify_digests(packed: Mapping[str, np.ndarray], expected: Mapping[str, str], source: str) -> None:
    """Raise DatasetIntegrityError naming the first split whose digest differs."""
    for split in SPLITS:
        if packed_digest(packed[split]) != expected[split]:
            raise DatasetIntegrityError(
                f"split {split!r} of {source} has the wrong sha256 digest (corrupt or a "
                f"different binarization); delete the file and supply the right one.\n{supply_advice()}")


def read_mnist_npz(path: str | os.PathLike, expected_digests: Mapping[str, str] | None = None) -> dict:
    """Packed splits of an .npz after checking keys, shapes, dtype and digests."""
    advice = f"delete the file and supply the right one.\n{supply_advice()}"
    try:
        with np.load(path) as archive:
            missing = {*SPLITS, "shape"} - set(archive.files)
            if missing:
                raise DatasetIntegrityError(f"{path} lacks keys {sorted(missing)}; {advice}")
            if archive["shape"].tolist() != [MNIST_PIXELS]:
                raise DatasetIntegrityError(f"{path}: key 'shape' is not [{MNIST_PIXELS}]; {advice}")
            packed = {split: archive[split] for split in SPLITS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:  # truncated or not an .npz
        raise DatasetIntegrityError(f"{path} is not a readable .npz archive (truncated or damaged: "
                                    f"{type(error).__name__}: {error}); {advice}") from None
    width = (MNIST_PIXELS + 7) // 8
    for split, array in packed.items():
        if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != width:
            raise DatasetIntegrityError(
                f"split {split!r} of {path} is {array.dtype} {array.shape}, "
                f"expected uint8 (N, {width}); {advice}")
    verify_digests(packed, MNIST_SHA256 if expected_digests is None else expected_digests, str(path))
    return packed


@functools.lru_cache(maxsize=2)
def _load_mnist_cached(path: str, mtime_ns: int, size: int) -> Dataset:
    packed = read_mnist_npz(path)
    # One unpackbits over the whole split is far faster than per-row work.
    splits = {
        split: torch.from_numpy(np.unpackbits(array, axis=1)[:, :MNIST_PIXELS].astype(np.float32))
        for split, array in packed.items()
    }
    return Dataset("mnist", train=splits["train"], valid=splits["valid"],
                   test=splits["test"], image_shape=(28, 28),
                   binarization="fixed (Larochelle & Murray 2011)")


# ------------------------------------------------ MNIST download and conversion
def read_amat(path: str | os.PathLike) -> np.ndarray:
    """Pixels of an .amat file (one image per line, 784 space-separated 0/1) as uint8."""
    import pandas  # imported lazily: only conversion needs it, and np.loadtxt is too slow

    try:
        pixels = pandas.read_csv(path, sep=r"\s+", header=None, dtype=np.uint8).to_numpy()
    except (ValueError, OverflowError) as err:  # empty file, non-numeric or negative text
        raise DatasetIntegrityError(f"{path} is not an .amat file of 0/1 pixels: {err}") from err
    if pixels.shape[1] != MNIST_PIXELS or pixels.max(initial=0) > 1:
        raise DatasetIntegrityError(f"{path}: expected lines of {MNIST_PIXELS} 0/1, not {pixels.shape}")
    return pixels


def convert_amat(amat_dir: str | os.PathLike, out_path: str | os.PathLike,
                 expected_digests: Mapping[str, str] | None = None,
                 expected_rows: Mapping[str, int] | None = None) -> Path:
    """Convert binarized_mnist_{split}.amat files into a verified .npz, written atomically.

    Defaults (None) are the real MNIST digests and sizes; tests pass their own."""
    expected_digests = MNIST_SHA256 if expected_digests is None else expected_digests
    expected_rows = MNIST_SPLIT_SIZES if expected_rows is None else expected_rows
    packed = {}
    for split in SPLITS:
        pixels = read_amat(Path(amat_dir) / f"binarized_mnist_{split}.amat")
        if pixels.shape[0] != expected_rows[split]:
            raise DatasetIntegrityError(
                f"split {split!r}: {pixels.shape[0]} images, expected {expected_rows[split]}")
        packed[split] = np.packbits(pixels, axis=1)
    verify_digests(packed, expected_digests, f"the .amat files in {amat_dir}")
    out_path = Path(out_path)
    # allow_pickle=False: plain uint8 arrays, nothing to pickle
    write_atomic(out_path, lambda temporary: np.savez(temporary, allow_pickle=False, **packed,
                                                      shape=np.array([MNIST_PIXELS])))
    return out_path


def download_file(url: str, dest: Path, timeout: float = 60.0) -> None:
    """Download url to dest via a temp file; progress on stderr for big files."""
    tmp = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        show = total == 0 or total >= _PROGRESS_MIN_BYTES
        done = 0
        while chunk := response.read(1 << 20):
            out.write(chunk)
            done += len(chunk)
            if show:
                size = f" / {total / 1e6:.1f}" if total else ""
                print(f"\rdownloading {dest.name}: {done / 1e6:.1f}{size} MB", end="", file=sys.stderr)
    if show:
        print(file=sys.stderr)
    os.replace(tmp, dest)


def download_mnist(cache_dir: str | os.PathLike, base_url: str = MNIST_URL,
                   expected_digests: Mapping[str, str] | None = None,
                   expected_rows: Mapping[str, int] | None = None) -> Path:
    """Download the .amat files and convert them into a verified cache_dir/binarized_mnist.npz."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # The ~110 MB of text lives only in a temp folder, removed whether or not conversion succeeds.
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".amat-") as amat_dir:
        for split in SPLITS:
            name = f"binarized_mnist_{split}.amat"
            download_file(base_url.rstrip("/") + "/" + name, Path(amat_dir) / name)
        return convert_amat(amat_dir, cache_dir / MNIST_FILENAME, expected_digests, expected_rows)


# ---------------------------------------------------------------------- digits
def digits_split_indices() -> dict[str, np.ndarray]:
    """Row indices into sklearn's load_digits() data for each split (fixed seed)."""
    permutation = np.random.default_rng(0).permutation(sum(DIGITS_SPLIT_SIZES.values()))
    bounds = np.cumsum([DIGITS_SPLIT_SIZES[split] for split in SPLITS])[:-1]
    return dict(zip(SPLITS, np.split(permutation, bounds)))


@functools.lru_cache(maxsize=1)
def _load_digits_cached() -> Dataset:
    from sklearn.datasets import load_digits  # bundled with sklearn: works offline

    levels = load_digits().data
    binary = (levels >= DIGITS_THRESHOLD).astype(np.float32)
    rows = digits_split_indices()
    splits = {split: torch.from_numpy(binary[indices]) for split, indices in rows.items()}
    return Dataset("digits", train=splits["train"], valid=splits["valid"],
                   test=splits["test"], image_shape=(8, 8),
                   binarization="threshold 8/16, fixed",
                   train_grey=torch.from_numpy((levels[rows["train"]] / 16).astype(np.float32)))


@functools.lru_cache(maxsize=1)
def _load_digits_grey_cached() -> Dataset:
    """sklearn digits' 17 grey levels, dequantized once with a fixed seed:
    y = 2 (level + u) / 17 - 1 in [-1, 1], u ~ U[0, 1) per pixel."""
    from sklearn.datasets import load_digits

    levels = load_digits().data.astype(np.float64)
    noise = np.random.default_rng(1).random(levels.shape)
    values = (2 * (levels + noise) / DIGITS_LEVELS - 1).astype(np.float32)
    splits = {split: torch.from_numpy(values[rows]) for split, rows in digits_split_indices().items()}
    return Dataset("digits-grey", train=splits["train"], valid=splits["valid"],
                   test=splits["test"], image_shape=(8, 8),
                   binarization="none: 17 grey levels, dequantized (seed 1), scaled to [-1, 1]",
                   kind="continuous", value_range=(-1.0, 1.0),
                   level_log_width=float(np.log(2 / DIGITS_LEVELS)))


@functools.lru_cache(maxsize=1)
def _load_swissroll_cached() -> Dataset:
    """The 2-D swiss roll of Sohl-Dickstein et al. (2015): sklearn's make_swiss_roll
    (noise 0.5), coordinates (x, z) divided by 10 (about unit scale), fixed seed."""
    from sklearn.datasets import make_swiss_roll

    total = sum(SWISSROLL_SPLIT_SIZES.values())
    points, _ = make_swiss_roll(total, noise=0.5, random_state=0)
    values = torch.from_numpy((points[:, [0, 2]] / 10).astype(np.float32))
    bounds = np.cumsum([SWISSROLL_SPLIT_SIZES[split] for split in SPLITS])[:-1]
    splits = dict(zip(SPLITS, torch.tensor_split(values, tuple(bounds))))
    return Dataset("swissroll", train=splits["train"], valid=splits["valid"],
                   test=splits["test"], image_shape=None,
                   binarization="none: continuous 2-D",
                   kind="continuous", value_range=(-1.5, 1.5))
