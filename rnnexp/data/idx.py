"""Read, validate and fetch the four MNIST IDX files.

The IDX format: a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the data. MNIST uses type 0x08 (unsigned byte) for both the
images (3 dimensions) and the labels (1 dimension). Files may be gzip-compressed or plain.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from rnnexp.errors import DataError

# (file name, MD5 of the published .gz file) as served by the mirrors torchvision uses.
FILES = {
    "train_images": ("train-images-idx3-ubyte", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train_labels": ("train-labels-idx1-ubyte", "d53e105ee54ea40749a09fcbcd1e9432"),
    "test_images": ("t10k-images-idx3-ubyte", "9fb629c4189551a2d022fa330f9573f3"),
    "test_labels": ("t10k-labels-idx1-ubyte", "ec29112dd5afa0611ce80d1b7f02629c"),
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
UBYTE = 0x08
# What to do about a file that is there but unusable, said in every such error.
REPLACE = "replace it with the original MNIST file, or delete it to download it again"


class IdxError(DataError):
    """A data file is missing, malformed or inconsistent; the message names the file."""


def read_idx(path: str | os.PathLike, ndim: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes with `ndim` dimensions, checking its header and length.

    Whatever the file holds, the result is an array of the shape its header declares or an IdxError.
    """
    path = Path(path)
    raw = _content(path)
    if len(raw) < 4:
        raise IdxError(f"{path}: {len(raw)} bytes, too short for an IDX header; {REPLACE}")
    zero, dtype, dims = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != UBYTE or dims != ndim:
        raise IdxError(
            f"{path}: magic number 0x{raw[:4].hex()} is not an IDX file of unsigned bytes with "
            f"{ndim} dimensions (expected 0x000008{ndim:02x}); {REPLACE}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxError(f"{path}: file ends inside the header ({len(raw)} bytes); {REPLACE}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + math.prod(shape)  # Python integers: a forged header cannot overflow the check
    if len(raw) != expected:
        raise IdxError(
            f"{path}: header says shape {shape} ({expected} bytes) but the file has {len(raw)} "
            f"bytes: truncated or not an MNIST file; {REPLACE}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _content(path: Path) -> bytes:
    """The file's bytes, decompressed when its name ends in .gz."""
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if path.suffix == ".gz" else data
    except (OSError, EOFError, zlib.error, MemoryError, OverflowError) as err:  # BadGzipFile is an OSError
        raise IdxError(f"{path}: cannot read ({str(err) or type(err).__name__}); {REPLACE}") from err


def find(root: Path, name: str) -> Path | None:
    """The file `name` in `root`, gzip-compressed or plain (the compressed one wins).

    A folder in a data file's place is an error, not a missing file: downloading cannot replace it.
    """
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_dir():
            raise IdxError(f"{candidate} is a directory, not a file; remove or rename it")
    for candidate in (root / f"{name}.gz", root / name):
        if candidate.is_file():
            return candidate
    return None


def twin(path: Path) -> Path | None:
    """The plain copy next to a .gz file (`x` beside `x.gz`), when there is one."""
    plain = path.with_suffix("")
    return plain if path.suffix == ".gz" and plain.is_file() else None


def md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(root: Path, name: str, checksum: str, mirrors=MIRRORS) -> Path:
    """Fetch `name`.gz from the first mirror that serves it with the right MD5.

    The file is written under a temporary name and renamed only once verified, so an interrupted
    or corrupt download never leaves a file that looks complete.
    """
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{name}.gz"
    errors = []
    for mirror in mirrors:
        url = f"{mirror}{name}.gz"
        fd, tmp = tempfile.mkstemp(dir=root, prefix=f".{name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
                while block := response.read(1 << 20):
                    out.write(block)
            got = md5(Path(tmp))
            if got != checksum:
                errors.append(f"{url}: MD5 {got}, expected {checksum}")
                continue
            os.replace(tmp, target)
            return target
        except (OSError, urllib.error.URLError) as err:
            errors.append(f"{url}: {getattr(err, 'reason', err)}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    raise OSError("; ".join(errors))


def locate(root: str | os.PathLike, download_missing: bool = True, mirrors=MIRRORS) -> dict[str, Path]:
    """Paths of the four MNIST files in `root`, downloading the missing ones when allowed.

    Raises one IdxError that lists every file still missing, the folder searched and how to
    provide the files.
    """
    root = Path(root).expanduser().resolve()
    if root.exists() and not root.is_dir():  # else: every file "missing", and downloads failing on it
        raise IdxError(
            f"{root} is a file, not a folder; point data.root (or the RNNEXP_DATA_DIR environment variable) "
            "at the folder that holds the four MNIST files"
        )
    paths, missing, failures = {}, [], []
    for key, (name, checksum) in FILES.items():
        path = find(root, name)
        if path is None and download_missing:
            try:
                path = download(root, name, checksum, mirrors)
            except OSError as err:
                failures.append(f"{name}.gz ({err})")
        if path is None:
            missing.append(name)
        else:
            paths[key] = path
    if missing:
        how = "download failed: " + "; ".join(failures) + ". " if failures else ""
        raise IdxError(
            f"MNIST files missing from {root}: {', '.join(f'{m}[.gz]' for m in missing)}. {how}"
            "Copy the four IDX files (gzip or plain) there, or point data.root (or the "
            "RNNEXP_DATA_DIR environment variable) at a folder that has them."
        )
    return paths


# Parsed files by (path, size, modification time), the plain twins of .gz files included: the jobs of
# a sweep run in one process, and parse and validate the files once between them. The arrays are
# read-only.
_PARSED: dict[tuple, dict[str, np.ndarray]] = {}


def load_mnist(root: str | os.PathLike, download_missing: bool = True, mirrors=MIRRORS) -> dict[str, np.ndarray]:
    """The four MNIST arrays, validated: uint8 images (N, 28, 28) and labels (N,) in 0..9."""
    paths = locate(root, download_missing, mirrors)
    files = [f for p in paths.values() for f in (p, twin(p)) if f is not None]
    key = tuple((str(f), st.st_size, st.st_mtime_ns) for f in files for st in [f.stat()])
    if key not in _PARSED:
        _PARSED.clear()  # keep one data set, not every version of it
        _PARSED[key] = _parse(paths)
    return _PARSED[key]


def _parse(paths: dict[str, Path]) -> dict[str, np.ndarray]:
    arrays = {}
    for split in ("train", "test"):
        images_path, labels_path = paths[f"{split}_images"], paths[f"{split}_labels"]
        images, labels = _read_one(images_path, ndim=3), _read_one(labels_path, ndim=1)
        for path, array, what in ((images_path, images, "images"), (labels_path, labels, "labels")):
            if len(array) == 0:
                raise IdxError(f"{path}: holds 0 {what}; replace it with the complete MNIST file")
        if images.shape[1:] != (28, 28):
            raise IdxError(f"{images_path}: images are {images.shape[1:]}, expected (28, 28); {REPLACE}")
        if len(images) != len(labels):
            raise IdxError(
                f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels; replace "
                "them with the original MNIST files, or delete them to download them again"
            )
        if labels.max() > 9:
            raise IdxError(f"{labels_path}: label {labels.max()} outside 0-9; {REPLACE}")
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    return arrays


def _read_one(path: Path, ndim: int) -> np.ndarray:
    """read_idx, and when both `x.gz` and `x` are there, a check that they hold the same data."""
    array = read_idx(path, ndim=ndim)
    plain = twin(path)
    if plain is not None and not _holds(plain, array):
        newer = max((path, plain), key=lambda p: p.stat().st_mtime_ns)
        raise IdxError(
            f"{path} and {plain} are both there but hold different data; remove the stale one "
            f"({newer.name} is the newer)"
        )
    return array


def _holds(path: Path, array: np.ndarray) -> bool:
    """Whether the plain IDX file `path` holds exactly `array` (its size is compared first)."""
    header = bytes([0, 0, UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    try:
        if path.stat().st_size != len(header) + array.nbytes:
            return False
        raw = path.read_bytes()
    except OSError as err:
        raise IdxError(f"{path}: cannot read ({str(err) or type(err).__name__})") from err
    data = np.frombuffer(raw, dtype=np.uint8, offset=len(header))
    return raw[: len(header)] == header and np.array_equal(data, array.ravel())
