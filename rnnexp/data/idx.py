"""Read, validate and fetch a data set's four IDX files, and tell by their content which data set they hold.

The IDX format: a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the data. MNIST uses type 0x08 (unsigned byte) for both the
images (3 dimensions) and the labels (1 dimension), and so does Fashion-MNIST, under the same file
names. Files may be gzip-compressed or plain. What each data set's files are is in datasets.py.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import math
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from rnnexp.data.datasets import DATASETS, DataSet
from rnnexp.errors import DataError

UBYTE = 0x08
# What to do about a file that is there but unusable, said in every such error.
REPLACE = "replace it with the original file, or delete it to download it again"
log = logging.getLogger(__name__)


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
    except PermissionError as err:  # the file is fine; this user may not read it
        raise IdxError(unreadable(path, err)) from err
    except (OSError, EOFError, zlib.error, MemoryError, OverflowError) as err:  # BadGzipFile is an OSError
        raise IdxError(f"{path}: cannot read ({str(err) or type(err).__name__}); {REPLACE}") from err


def unreadable(path: Path, err: PermissionError, folder: bool = False) -> str:
    """The line for a data file or folder this user may not read: its content is not at fault."""
    denied = f" ({err.filename})" if err.filename and str(err.filename) != str(path) else ""
    what, mode = ("the folder and its files", "-R a+rX") if folder else ("it", "a+r")
    return (
        f"{path}: {err.strerror or 'permission denied'}{denied}; make {what} readable by this user "
        f"(chmod {mode} {path}), or point data.root at a copy this user can read"
    )


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


def download(root: Path, name: str, checksum: str, mirrors: tuple[str, ...]) -> Path:
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


def locate(
    root: str | os.PathLike, dataset: DataSet, download_missing: bool = True, mirrors: tuple[str, ...] | None = None
) -> dict[str, Path]:
    """Paths of the data set's four files: in `root`; where `root` has none of them and a system
    package has installed all four (dataset.system_folder), there; else downloaded into `root` from
    `mirrors` (the data set's own unless given) when allowed.

    Raises one IdxError that lists every file still missing, the folder searched and how to
    provide the files.
    """
    root = Path(root).expanduser().resolve()
    try:
        if root.exists() and not root.is_dir():  # else: every file "missing", and downloads failing on it
            raise IdxError(
                f"{root} is a file, not a folder; point data.root (or the {dataset.root_variable} environment "
                f"variable) at the folder that holds the four {dataset.title} files"
            )
        found = {key: find(root, file.name) for key, file in dataset.files.items()}
    except PermissionError as err:  # a folder this user may not list or enter (root reads every one)
        raise IdxError(unreadable(root, err, folder=True)) from err
    system = dataset.system_folder
    if not any(found.values()) and system is not None and system.is_dir():
        installed = {key: find(system, file.name) for key, file in dataset.files.items()}
        if all(installed.values()):
            return installed
    paths, missing, failures = {}, [], []
    for key, file in dataset.files.items():
        path = found[key]
        if path is None and download_missing:
            try:
                path = download(root, file.name, file.download_md5, mirrors or dataset.mirrors)
            except OSError as err:
                failures.append(f"{file.name}.gz ({err})")
        if path is None:
            missing.append(file.name)
        else:
            paths[key] = path
    if missing:
        how = "download failed: " + "; ".join(failures) + ". " if failures else ""
        package = f", or install {dataset.system_package} (it puts them in {system})" if system else ""
        raise IdxError(
            f"{dataset.title} files missing from {root}: {', '.join(f'{m}[.gz]' for m in missing)}. {how}"
            f"Copy the four IDX files (gzip or plain) there, or point data.root (or the {dataset.root_variable} "
            f"environment variable) at a folder that has them{package}."
        )
    return paths


# Parsed files and the MD5 of each one's content by (path, size, modification time), the plain twins
# of .gz files included: the jobs of a sweep run in one process, and read, validate and check the
# files once between them. One version of each file is kept (a sweep over data sets keeps each set).
# The arrays are read-only.
_PARSED: dict[tuple, tuple[dict[str, np.ndarray], dict[str, str]]] = {}


def load(
    root: str | os.PathLike, dataset: DataSet, download_missing: bool = True, mirrors: tuple[str, ...] | None = None
) -> dict[str, np.ndarray]:
    """The data set's four arrays, validated: uint8 images (N, 28, 28) and labels (N,) naming one of its classes.

    Files of another known data set stop it (Fashion-MNIST's where MNIST's were asked for, or the
    reverse); files of no known data set are taken, with a warning that names them.
    """
    root = Path(root).expanduser().resolve()
    paths = locate(root, dataset, download_missing, mirrors)
    folder = paths["train_images"].parent
    if folder != root:
        log.info(f"{dataset.title}: {root} has none of its files; using {folder}, from {dataset.system_package}")
    files = [f for p in paths.values() for f in (p, twin(p)) if f is not None]
    key = tuple((str(f), st.st_size, st.st_mtime_ns) for f in files for st in [f.stat()])
    if key not in _PARSED:
        names = {name for name, *_ in key}
        for stale in [k for k in _PARSED if names & {name for name, *_ in k}]:
            del _PARSED[stale]  # an older version of these files
        _PARSED[key] = _parse(paths, dataset)
    arrays, digests = _PARSED[key]
    _identify(folder, paths, digests, dataset)
    return arrays


def _identify(folder: Path, paths: dict[str, Path], digests: dict[str, str], dataset: DataSet) -> None:
    """Stop on a file of another known data set, or of another role; warn about files of none."""
    known = {file.md5: (other, role) for other in DATASETS.values() for role, file in other.files.items()}
    misplaced, unknown = {}, []
    for role, path in paths.items():
        owner = known.get(digests[role])
        if owner is None:
            unknown.append(path.name)
        elif owner[0] is not dataset or owner[1] != role:
            misplaced[role] = owner
    owners = {id(other) for other, _ in misplaced.values()}
    if len(misplaced) == len(paths) and len(owners) == 1 and all(r == role for role, (_, r) in misplaced.items()):
        other = next(iter(misplaced.values()))[0]
        raise IdxError(
            f"{folder}: these are the {other.title} files; use data={other.key}, or point data.root at {dataset.title}"
        )
    if misplaced:
        role, (other, other_role) = next(iter(misplaced.items()))
        raise IdxError(
            f"{paths[role]}: holds {other.title}'s {other.files[other_role].name}, not {dataset.title}'s "
            f"{dataset.files[role].name}; put {dataset.title}'s file there, or point data.root at a folder of "
            f"{dataset.title}"
        )
    if unknown:
        log.warning(
            f"{folder}: {', '.join(unknown)}: not the published {dataset.title} files (nor any known data set's); "
            "read as your own IDX files"
        )


def _parse(paths: dict[str, Path], dataset: DataSet) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The validated arrays, and the MD5 of each file's content, by role."""
    arrays = {}
    for split in ("train", "test"):
        images_path, labels_path = paths[f"{split}_images"], paths[f"{split}_labels"]
        images, labels = _read_one(images_path, ndim=3), _read_one(labels_path, ndim=1)
        for path, array, what in ((images_path, images, "images"), (labels_path, labels, "labels")):
            if len(array) == 0:
                raise IdxError(f"{path}: holds 0 {what}; replace it with the complete {dataset.title} file")
        if images.shape[1:] != (28, 28):
            raise IdxError(f"{images_path}: images are {images.shape[1:]}, expected (28, 28); {REPLACE}")
        if len(images) != len(labels):
            raise IdxError(
                f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels; replace "
                f"them with the original {dataset.title} files, or delete them to download them again"
            )
        if labels.max() >= len(dataset.classes):
            raise IdxError(f"{labels_path}: label {labels.max()} outside 0-{len(dataset.classes) - 1}; {REPLACE}")
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    return arrays, {role: content_md5(array) for role, array in arrays.items()}


def content_md5(array: np.ndarray) -> str:
    """The MD5 of the IDX content `array` was read from (read_idx checked that the file is its header
    and its data, nothing else): a file's uncompressed MD5, without reading the file again."""
    digest = hashlib.md5(_header(array))
    digest.update(array.reshape(-1).data)
    return digest.hexdigest()


def _header(array: np.ndarray) -> bytes:
    return bytes([0, 0, UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)


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
    header = _header(array)
    try:
        if path.stat().st_size != len(header) + array.nbytes:
            return False
        raw = path.read_bytes()
    except OSError as err:
        raise IdxError(f"{path}: cannot read ({str(err) or type(err).__name__})") from err
    data = np.frombuffer(raw, dtype=np.uint8, offset=len(header))
    return raw[: len(header)] == header and np.array_equal(data, array.ravel())
