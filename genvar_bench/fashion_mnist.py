"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 70,000 grey 28x28 images of clothing,
read from the four standard idx files and served as two datasets of `load_dataset`:

- ``fashion-mnist`` (binary): a fixed binarization, drawn once, bit = 1 with probability
  pixel/255, from PCG64(seed 20171130); per-split digests of the bits are checked at load.
- ``fashion-mnist-grey`` (continuous): the 256 grey levels dequantized with uniform noise
  from PCG64(seed 20171131) and scaled to [-1, 1].

Splits: the first 50,000 training images train, the last 10,000 valid, the 10,000 t10k
images test. Both random draws use the raw 64-bit outputs of numpy's PCG64 bit generator
(`random_raw`), whose integer stream for a fixed seed numpy guarantees (PCG64's compatibility
guarantee; `Generator`'s methods carry none), so every machine gets the same bits; the
digests below guard that.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import urllib.error
from pathlib import Path

import numpy as np
import torch

from genvar_bench import data
from genvar_bench.atomic import write_atomic

NAMES = ("fashion-mnist", "fashion-mnist-grey")
SUBDIR = "fashion-mnist"
URL = "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/"
URL_ENV = "GENVAR_FASHION_MNIST_URL"  # another base URL (a mirror, or file:// for a local copy)
DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEBIAN_PACKAGE_DIR = "/usr/share/datasets/fashion-mnist"  # where the package installs them
DEBIAN_DIR = Path(DEBIAN_PACKAGE_DIR)  # the folder searched
# sha256 of each file's decompressed bytes (the .gz files differ between distributors)
# and the shape of its data.
FILES = {
    "train-images-idx3-ubyte": ("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                                (60_000, 28, 28)),
    "train-labels-idx1-ubyte": ("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                                (60_000,)),
    "t10k-images-idx3-ubyte": ("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                               (10_000, 28, 28)),
    "t10k-labels-idx1-ubyte": ("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                               (10_000,)),
}
SPLIT_SIZES = {"train": 50_000, "valid": 10_000, "test": 10_000}
PIXELS = 784
LEVELS = 256
BINARIZATION_SEED = 20171130
DEQUANTIZATION_SEED = 20171131
NOISE_BITS = 15  # the dequantization noise's resolution: 2^15 evenly spaced points per level
# sha256 of each split's bits packed with np.packbits(axis=1), as MNIST's digests.
BINARY_SHA256 = {
    "train": "1f852455b133f8ccef667addc53aaebd8537f869f4a510ab736583aa01c9b7b2",
    "valid": "9e04f619f4f9fccd4f4439f0cb288f91830d19d5e90e37c3bd972eb259158fbe",
    "test": "d57cd2133485cee33a67ae4fa48170fa0b1fbd1167e9b6a812b7501b3d74bce8",
}
_ROWS_PER_DRAW = 5_000  # bounds the memory of the raw draws (5,000 x 784 x 8 bytes)
IDX_DTYPES = {0x08: np.dtype(np.uint8)}  # the only type the data use: unsigned byte


# ------------------------------------------------------------------ idx files
def supply_advice() -> str:
    """The ways to supply the Fashion-MNIST files, for error messages."""
    cache = data.default_cache_dir() / SUBDIR
    return (f"Supply the Fashion-MNIST idx files ({', '.join(FILES)}; each .gz or uncompressed) "
            f"in one of these ways:\n"
            f"  - pass --data-dir DIR (data_dir=DIR) for a folder that holds them or a "
            f"{SUBDIR}/ subfolder with them,\n"
            f"  - set GENVAR_DATA_DIR=DIR, the same,\n"
            f"  - install Debian's package: apt-get install {DEBIAN_PACKAGE} (it puts them "
            f"in {DEBIAN_PACKAGE_DIR}/),\n"
            f"  - place them in the cache directory {cache}/, where they are otherwise "
            f"downloaded from {URL}")


def _refuse(source: str, problem: str) -> data.DatasetIntegrityError:
    return data.DatasetIntegrityError(f"{source}: {problem}; delete the file and supply the right "
                                      f"one.\n{supply_advice()}")


def parse_idx(raw: bytes, source: str = "idx data") -> np.ndarray:
    """The array of an idx file's bytes: magic 0x0000, a type code (0x08, unsigned byte), the
    number of dimensions, each dimension as a big-endian uint32, then the data, row-major."""
    if len(raw) < 4 or raw[:2] != b"\0\0":
        raise _refuse(source, f"not an idx file (magic number {raw[:4].hex() or 'missing'}, "
                              f"expected 0000 then a type code and a dimension count)")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        raise _refuse(source, f"idx type code 0x{code:02x} is not supported (only 0x08, unsigned byte)")
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise _refuse(source, f"truncated: {len(raw)} bytes, shorter than the header of {ndim} dimensions")
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "too long"
        raise _refuse(source, f"{state}: {len(raw)} bytes, the header's shape {shape} needs {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def read_idx(path: str | os.PathLike, expected_sha256: str | None = None,
             expected_shape: tuple[int, ...] | None = None, source: str | None = None) -> np.ndarray:
    """An idx file (gzip-compressed or plain, told by its first bytes), checked against the
    sha256 of its decompressed bytes and its shape where given; errors name source (the path)."""
    source = str(path) if source is None else source
    try:
        raw = Path(path).read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as error:  # unreadable, truncated or damaged .gz
        raise _refuse(source, f"unreadable, truncated or damaged ({type(error).__name__}: {error})") from None
    array = parse_idx(raw, source)
    if expected_shape is not None and array.shape != expected_shape:
        raise _refuse(source, f"shape {array.shape}, expected {expected_shape}")
    if expected_sha256 is not None and hashlib.sha256(raw).hexdigest() != expected_sha256:
        raise _refuse(source, "wrong sha256 digest of the decompressed bytes (corrupt or another file)")
    return array


# --------------------------------------------------------------------- lookup
def _file_in(folder: Path, name: str) -> Path | None:
    for candidate in (folder / f"{name}.gz", folder / name):
        if candidate.is_file():
            return candidate
    return None


def _complete(folder: Path) -> dict[str, Path] | None:
    files = {name: _file_in(folder, name) for name in FILES}
    return None if None in files.values() else {name: path for name, path in files.items() if path}


def search_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for the four files, in order; named folders must exist."""
    dirs = []
    named = [("data_dir (--data-dir)", data_dir), ("GENVAR_DATA_DIR", os.environ.get("GENVAR_DATA_DIR"))]
    for origin, folder in named:
        if folder in (None, ""):
            continue
        if not Path(folder).is_dir():
            raise data.DatasetNotFoundError(f"{origin} {str(folder)!r} does not exist or is not a "
                                            f"directory.\n{supply_advice()}")
        dirs += [Path(folder) / SUBDIR, Path(folder)]
    return dirs + [DEBIAN_DIR, data.default_cache_dir() / SUBDIR]


def resolve_files(data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Paths of the four files from the first folder holding all of them; where none does,
    the missing ones are downloaded into the cache and verified."""
    for folder in search_dirs(data_dir):
        found = _complete(folder)
        if found:
            return {name: path.resolve() for name, path in found.items()}
    base_url = os.environ.get(URL_ENV) or URL
    try:
        return download(data.default_cache_dir() / SUBDIR, base_url)
    except (OSError, urllib.error.URLError) as error:  # unreachable, HTTP errors, unwritable cache
        raise data.DatasetNotFoundError(
            f"Fashion-MNIST not found and the download from {base_url} failed ({error}).\n"
            f"{supply_advice()}") from None


def download(folder: str | os.PathLike, base_url: str = URL) -> dict[str, Path]:
    """Download the files folder lacks as <name>.gz, each verified before it appears."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, (digest, shape) in FILES.items():
        if _file_in(folder, name):
            continue
        url = base_url.rstrip("/") + f"/{name}.gz"

        def fetch(temporary: Path, url: str = url, digest: str = digest,
                  shape: tuple[int, ...] = shape) -> None:
            data.download_file(url, temporary)
            try:
                read_idx(temporary, digest, shape, source=url)
            except data.DatasetIntegrityError as error:  # write_atomic removes the temporary
                raise data.DatasetIntegrityError(f"the download is not the right file, nothing was "
                                                 f"kept: {error}") from None

        write_atomic(folder / f"{name}.gz", fetch)
    found = _complete(folder)
    assert found is not None
    return {name: path.resolve() for name, path in found.items()}


# ------------------------------------------------------------------- datasets
FileKey = tuple[tuple[str, str, int, int], ...]  # (name, path, mtime_ns, size) per file


@functools.lru_cache(maxsize=1)
def _read_images_cached(key: FileKey) -> np.ndarray:
    """The 70,000 images, [train file; t10k file], as uint8 [N, 784]; labels are checked too."""
    arrays = {name: read_idx(path, *FILES[name]) for name, path, _, _ in key}
    images = np.concatenate([arrays["train-images-idx3-ubyte"], arrays["t10k-images-idx3-ubyte"]])
    return images.reshape(len(images), PIXELS)


def split_rows(values: np.ndarray) -> dict[str, np.ndarray]:
    """train, valid, test: consecutive rows of [train file; t10k file]."""
    bounds = np.cumsum([SPLIT_SIZES[split] for split in data.SPLITS])[:-1]
    return dict(zip(data.SPLITS, np.split(values, bounds)))


def _dataset(name: str, values: np.ndarray, **fields) -> data.Dataset:
    splits = {split: torch.from_numpy(part) for split, part in split_rows(values).items()}
    return data.Dataset(name, train=splits["train"], valid=splits["valid"], test=splits["test"],
                        image_shape=(28, 28), **fields)


def _raw_words(bit_generator: np.random.PCG64, block: np.ndarray) -> np.ndarray:
    """One raw 64-bit output per element of block, in row-major order."""
    return bit_generator.random_raw(block.size).reshape(block.shape)


def binarize(images: np.ndarray, seed: int = BINARIZATION_SEED) -> np.ndarray:
    """Fixed Bernoulli(pixel/255) bits, one raw PCG64(seed) output w per pixel in row-major
    order over the rows given: bit = 1 where (w >> 32) / 2^32 < pixel / 255, compared exactly
    in integers as 255 (w >> 32) < pixel 2^32."""
    bit_generator = np.random.PCG64(seed)
    bits = np.empty(images.shape, np.uint8)
    for start in range(0, len(images), _ROWS_PER_DRAW):
        block = images[start:start + _ROWS_PER_DRAW]
        high = _raw_words(bit_generator, block) >> np.uint64(32)
        bits[start:start + len(block)] = high * np.uint64(255) < block.astype(np.uint64) << np.uint64(32)
    return bits


def dequantize(images: np.ndarray, seed: int = DEQUANTIZATION_SEED) -> np.ndarray:
    """y = 2 (pixel + u) / 256 - 1 in float32, u = (j + 1/2) / 2^15 with j the top 15 bits of one
    raw PCG64(seed) output per pixel: uniform noise on a grid fine enough to be continuous for
    any model, and exactly representable, so every value lies strictly inside its level
    (floor((y + 1) 128) = pixel exactly, also in float32 arithmetic)."""
    bit_generator = np.random.PCG64(seed)
    values = np.empty(images.shape, np.float32)
    scale = 2.0 ** (NOISE_BITS + 7)  # (y + 1) = (pixel 2^15 + j + 1/2) / 2^22
    for start in range(0, len(images), _ROWS_PER_DRAW):
        block = images[start:start + _ROWS_PER_DRAW]
        j = (_raw_words(bit_generator, block) >> np.uint64(64 - NOISE_BITS)).astype(np.float64)
        fine = block.astype(np.float64) * 2.0 ** NOISE_BITS + j + 0.5
        values[start:start + len(block)] = fine / scale - 1.0
    return values


@functools.lru_cache(maxsize=2)
def _load_cached(name: str, key: FileKey) -> data.Dataset:
    images = _read_images_cached(key)
    if name == "fashion-mnist":
        bits = binarize(images)
        for split, rows in split_rows(bits).items():
            if data.packed_digest(np.packbits(rows, axis=1)) != BINARY_SHA256[split]:
                raise data.DatasetIntegrityError(
                    f"the fixed binarization of Fashion-MNIST's {split!r} split has the wrong sha256 "
                    f"digest: this numpy's PCG64 stream differs from the one the digests were made "
                    f"with (numpy {np.__version__})")
        grey = torch.from_numpy(split_rows(images)["train"].astype(np.float32) / 255)
        return _dataset(name, bits.astype(np.float32),
                        binarization=f"fixed Bernoulli(pixel/255) draw, seed {BINARIZATION_SEED}",
                        train_grey=grey)
    return _dataset(name, dequantize(images),
                    binarization=f"none: {LEVELS} grey levels, dequantized (seed "
                                 f"{DEQUANTIZATION_SEED}), scaled to [-1, 1]",
                    kind="continuous", value_range=(-1.0, 1.0),
                    level_log_width=float(np.log(2 / LEVELS)))


def load(name: str, data_dir: str | os.PathLike | None = None) -> data.Dataset:
    """`fashion-mnist` or `fashion-mnist-grey`; cached in-process by the files' paths and
    modification times."""
    if name not in NAMES:
        raise ValueError(f"unknown Fashion-MNIST dataset {name!r}; known: {', '.join(NAMES)}")
    files = resolve_files(data_dir)
    key = tuple((file, str(path), path.stat().st_mtime_ns, path.stat().st_size)
                for file, path in files.items())
    return _load_cached(name, key)


for _name in NAMES:
    data.LOADERS[_name] = load
