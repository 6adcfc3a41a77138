"""Whatever bytes the MNIST files hold, the reader returns arrays of the declared shape or raises IdxError."""

import gzip
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import idx_bytes, write_mnist
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from rnnexp.data.datasets import MNIST
from rnnexp.data.idx import IdxError, load, read_idx

pytestmark = pytest.mark.slow  # property tests: hundreds of generated cases each

SETTINGS = settings(max_examples=100, deadline=None)
MAGIC = st.one_of(
    st.sampled_from([b"\0\0\x08\x01", b"\0\0\x08\x03", b"\0\0\x09\x03"]), st.binary(min_size=4, max_size=4)
)
# Sizes near the edges: empty, MNIST's, past 16 bits, and headers that claim terabytes or overflow 64 bits.
DIM = st.one_of(st.integers(0, 4), st.sampled_from([28, 256, 2**16, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))
HEADER = st.builds(
    lambda magic, dims: magic + b"".join(struct.pack(">I", d) for d in dims), MAGIC, st.lists(DIM, max_size=3)
)
LAYOUTS = ("plain", "gzip", "raw bytes named .gz")


@st.composite
def mutated(draw, data: bytes, ndim: int = 0) -> bytes:
    """`data` with bytes flipped, cut, appended, and (for IDX content, ndim > 0) header fields changed."""
    data = bytearray(data)
    kinds = ["flip", "truncate", "extend"] + (["magic", "dim", "flip a value"] if ndim else [])
    for kind in draw(st.lists(st.sampled_from(kinds), min_size=1, max_size=3)):
        if kind == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        elif kind == "flip a value" and len(data) > 4 + 4 * ndim:  # past the header: still a valid file
            data[draw(st.integers(4 + 4 * ndim, len(data) - 1))] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif kind == "extend":
            data += draw(st.binary(min_size=1, max_size=16))
        elif kind == "magic":
            data[:4] = draw(MAGIC)
        elif kind == "dim":
            at = 4 + 4 * draw(st.integers(0, ndim - 1))
            data[at : at + 4] = struct.pack(">I", draw(DIM))
    return bytes(data)


@st.composite
def valid_idx(draw, ndim: int) -> bytes:
    shape = draw(st.tuples(*[st.integers(0, 6)] * ndim))
    return idx_bytes(draw(arrays(np.uint8, shape)))


def write(path: Path, content: bytes, layout: str) -> Path:
    if layout == "plain":
        path.write_bytes(content)
        return path
    path = path.with_name(path.name + ".gz")
    path.write_bytes(gzip.compress(content) if layout == "gzip" else content)
    return path


def read_or_idx_error(path: Path, ndim: int) -> np.ndarray | None:
    """read_idx's result checked against the file's own header, or None for an IdxError naming the file."""
    try:
        array = read_idx(path, ndim)
    except IdxError as err:
        assert str(path) in str(err) and "\n" not in str(err)
        event("IdxError")  # the outcomes' shares show with pytest --hypothesis-show-statistics
        return None
    event("array")
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    header = 4 + 4 * ndim
    assert raw[:4] == bytes([0, 0, 8, ndim])
    assert array.dtype == np.uint8 and array.shape == struct.unpack(f">{ndim}I", raw[4:header])
    assert array.tobytes() == raw[header:]
    return array


@SETTINGS
@example(content=b"\0\0\x08\x03" + struct.pack(">3I", 2**31, 2**31, 4), ndim=3, layout="plain")  # 2**64 bytes
@given(content=st.one_of(st.binary(max_size=64), st.builds(bytes.__add__, HEADER, st.binary(max_size=64))),
       ndim=st.sampled_from([1, 3]), layout=st.sampled_from(LAYOUTS))  # fmt: skip
def test_random_bytes_give_an_array_or_an_idx_error(content, ndim, layout):
    with tempfile.TemporaryDirectory() as tmp:
        read_or_idx_error(write(Path(tmp) / "data-idx-ubyte", content, layout), ndim)


@SETTINGS
@given(data=st.data(), ndim=st.sampled_from([1, 3]), layout=st.sampled_from(LAYOUTS[:2]), break_gzip=st.booleans())
def test_mutated_files_give_an_array_or_an_idx_error(data, ndim, layout, break_gzip):
    content = data.draw(mutated(data.draw(valid_idx(ndim)), ndim))
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp) / "data-idx-ubyte", content, layout)
        if break_gzip and layout == "gzip":
            path.write_bytes(data.draw(mutated(path.read_bytes())))  # damage the compressed stream itself
        read_or_idx_error(path, ndim)


@SETTINGS
@given(data=st.data(), key=st.sampled_from(sorted(MNIST.files)), how=st.sampled_from(["random", "mutated", "twin"]))
def test_load_with_one_bad_file_gives_valid_arrays_or_an_idx_error(data, key, how):
    """One of the four files replaced by random or mutated bytes, or a mutated copy beside it (x and x.gz)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = write_mnist(Path(tmp).resolve() / "mnist", n_train=3, n_test=2)
        name, ndim = MNIST.files[key].name, 3 if key.endswith("images") else 1
        path = next(p for p in (root / f"{name}.gz", root / name) if p.exists())
        layout = "gzip" if path.suffix == ".gz" else "plain"
        if how == "random":
            write(root / name, data.draw(st.binary(max_size=64)), data.draw(st.sampled_from(LAYOUTS)))
        else:
            good = read_idx(path, ndim)
            bad = data.draw(mutated(idx_bytes(good), ndim))
            if how == "twin":  # the same file again, plain beside a .gz or compressed beside a plain one
                layout = "plain" if layout == "gzip" else "gzip"
            write(root / name, bad, layout)
        try:
            loaded = load(root, MNIST, download_missing=False)
        except IdxError as err:
            assert str(root) in str(err) and "\n" not in str(err)
            event("IdxError")
            return
    event("arrays")
    for split in ("train", "test"):
        images, labels = loaded[f"{split}_images"], loaded[f"{split}_labels"]
        assert images.dtype == labels.dtype == np.uint8
        assert images.shape[1:] == (28, 28) and len(images) == len(labels) > 0 and labels.max() <= 9
