import gzip
import hashlib
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import idx_bytes, learnable_digits, write_idx, write_mnist

from rnnexp.data import idx
from rnnexp.data.idx import IdxError, load_mnist, read_idx


def test_gzip_and_plain_files_read_the_same(tmp_path):
    images, labels = learnable_digits(20, 0)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a.gz", images), 3), images)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a", images), 3), images)
    assert np.array_equal(read_idx(write_idx(tmp_path / "l", labels), 1), labels)


def test_load_mnist_returns_validated_arrays(tiny_mnist):
    arrays = load_mnist(tiny_mnist, download_missing=False)
    assert arrays["train_images"].shape == (400, 28, 28)
    assert arrays["test_labels"].shape == (100,)
    assert arrays["train_labels"].max() <= 9


@pytest.mark.parametrize(
    "content, ndim, message",
    [
        (idx_bytes(np.zeros((2, 28, 28)), magic=b"\x00\x00\x09\x03"), 3, "magic number 0x00000903"),
        (idx_bytes(np.zeros(5)), 3, "magic number 0x00000801"),  # a label file where images belong
        (b"\x00\x00", 3, "too short"),
        (b"\x00\x00\x08\x03\x00\x00", 3, "ends inside the header"),
        (idx_bytes(np.zeros((3, 28, 28)))[:-10], 3, "truncated"),
        (idx_bytes(np.zeros((3, 28, 28))) + b"\x00", 3, "truncated or not an MNIST file"),
        # 2**31 * 2**31 * 4 images is 2**64 bytes: a product in 64-bit integers wraps to 0 and passed
        (b"\x00\x00\x08\x03" + struct.pack(">3I", 2**31, 2**31, 4), 3, r"\(18446744073709551632 bytes\)"),
    ],
)
def test_malformed_file_is_named_with_what_is_wrong(tmp_path, content, ndim, message):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(IdxError, match=message) as err:
        read_idx(path, ndim)
    assert str(path) in str(err.value)


def test_corrupt_gzip_is_named(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(10)))[:-8])
    with pytest.raises(IdxError, match="cannot read") as err:
        read_idx(path, 1)
    assert str(path) in str(err.value)


def test_gzip_with_garbage_inside_is_named(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(10)))[:10] + b"\xff" * 20)  # zlib.error, not an OSError
    with pytest.raises(IdxError, match="cannot read .*invalid block type") as err:
        read_idx(path, 1)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("name", ["train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte"])
def test_a_folder_where_a_data_file_belongs_is_named_not_called_missing(tmp_path, name):
    root = write_mnist(tmp_path / "data")
    for existing in (root / name, root / name.removesuffix(".gz")):
        existing.unlink(missing_ok=True)
    (root / name).mkdir()
    with pytest.raises(IdxError) as err:
        load_mnist(root, download_missing=True, mirrors=("http://127.0.0.1:9/",))
    message = str(err.value)
    assert message == f"{root / name} is a directory, not a file; remove or rename it"


def test_a_folder_beside_the_gzip_file_is_named_too(tmp_path):
    root = write_mnist(tmp_path / "data")
    (root / "train-images-idx3-ubyte").mkdir()  # train-images-idx3-ubyte.gz is there and valid
    with pytest.raises(IdxError, match="train-images-idx3-ubyte is a directory, not a file"):
        load_mnist(root, download_missing=False)


def test_gzip_and_plain_copies_with_the_same_data_are_used_silently(tmp_path):
    root = write_mnist(tmp_path / "data")
    plain = root / "t10k-images-idx3-ubyte"
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(plain.read_bytes()))
    arrays = load_mnist(root, download_missing=False)
    assert np.array_equal(arrays["test_images"], read_idx(plain, 3))


@pytest.mark.parametrize("n", [100, 99])  # same size but other pixels; another size
def test_gzip_and_plain_copies_that_differ_are_both_named(tmp_path, n):
    root = write_mnist(tmp_path / "data")
    plain = root / "t10k-images-idx3-ubyte"
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(plain.read_bytes()))
    assert load_mnist(root, download_missing=False)["test_images"].shape == (100, 28, 28)
    stale = learnable_digits(n, 7)[0]
    write_idx(plain, stale)
    os.utime(plain, ns=(1, 1))  # older than the .gz, and a change load_mnist's memo must notice
    with pytest.raises(IdxError) as err:
        load_mnist(root, download_missing=False)
    message = str(err.value)
    assert f"{plain}.gz and {plain} are both there but hold different data" in message
    assert "remove the stale one (t10k-images-idx3-ubyte.gz is the newer)" in message and "\n" not in message


@pytest.mark.parametrize(
    "name, empty, what",
    [
        ("train-images-idx3-ubyte.gz", np.zeros((0, 28, 28)), "images"),
        ("train-labels-idx1-ubyte.gz", np.zeros(0), "labels"),
        ("t10k-images-idx3-ubyte", np.zeros((0, 28, 28)), "images"),
        ("t10k-labels-idx1-ubyte", np.zeros(0), "labels"),
    ],
)
def test_a_file_with_no_images_is_named_not_blamed_on_val_size(tmp_path, name, empty, what):
    root = write_mnist(tmp_path / "data")
    write_idx(root / name, empty)
    with pytest.raises(IdxError) as err:
        load_mnist(root, download_missing=False)
    assert str(err.value) == f"{root / name}: holds 0 {what}; replace it with the complete MNIST file"


@pytest.mark.parametrize(
    "name, array, message",
    [
        ("train-labels-idx1-ubyte.gz", np.zeros(399), "has 400 images but .* has 399 labels"),
        ("train-labels-idx1-ubyte.gz", np.full(400, 10), "label 10 outside 0-9"),
        ("train-images-idx3-ubyte.gz", np.zeros((400, 20, 20)), r"images are \(20, 20\), expected \(28, 28\)"),
    ],
)
def test_inconsistent_set_is_rejected(tmp_path, name, array, message):
    root = write_mnist(tmp_path)
    write_idx(root / name, array)
    with pytest.raises(IdxError, match=message):
        load_mnist(root, download_missing=False)


def test_missing_files_offline_are_listed_with_folder_and_remedy(tmp_path):
    root = write_mnist(tmp_path / "data")
    (root / "t10k-images-idx3-ubyte").unlink()
    (root / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(IdxError) as err:
        load_mnist(root, download_missing=True, mirrors=("http://127.0.0.1:9/",))
    message = str(err.value)
    assert "t10k-images-idx3-ubyte" in message and "train-labels-idx1-ubyte" in message
    assert "train-images" not in message  # present files are not reported missing
    assert str(root) in message and "RNNEXP_DATA_DIR" in message and "download failed" in message
    assert "\n" not in message


def _mirror(tmp_path: Path, monkeypatch, tamper: bool = False) -> tuple[str, Path]:
    """A file:// mirror serving tiny MNIST, with FILES' checksums pointed at its files."""
    mirror = write_mnist(tmp_path / "mirror")
    for plain in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (mirror / f"{plain}.gz").write_bytes(gzip.compress((mirror / plain).read_bytes()))
    files = {}
    for key, (name, _) in idx.FILES.items():
        digest = hashlib.md5((mirror / f"{name}.gz").read_bytes()).hexdigest()
        files[key] = (name, "0" * 32 if tamper else digest)
    monkeypatch.setattr(idx, "FILES", files)
    return mirror.as_uri() + "/", tmp_path / "downloads"


def test_a_file_given_as_the_data_folder_is_named_as_such(tmp_path):
    path = tmp_path / "mnist.tar"
    path.write_bytes(b"not a folder")
    with pytest.raises(IdxError) as err:
        load_mnist(path, download_missing=True, mirrors=("http://127.0.0.1:9/",))
    assert str(err.value).startswith(f"{path} is a file, not a folder; point data.root")


def test_download_verifies_and_writes_complete_files(tmp_path, monkeypatch):
    url, target = _mirror(tmp_path, monkeypatch)
    arrays = load_mnist(target, download_missing=True, mirrors=("http://127.0.0.1:9/", url))
    assert arrays["test_images"].shape == (100, 28, 28)
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{n}.gz" for n, _ in idx.FILES.values())


def test_download_with_wrong_checksum_leaves_nothing(tmp_path, monkeypatch):
    url, target = _mirror(tmp_path, monkeypatch, tamper=True)
    with pytest.raises(IdxError, match="MD5"):
        load_mnist(target, download_missing=True, mirrors=(url,))
    assert list(target.iterdir()) == []  # no partial or unverified file left behind


def test_real_mnist_matches_its_published_label_counts(real_mnist):
    arrays = load_mnist(real_mnist, download_missing=False)
    assert arrays["train_images"].shape == (60000, 28, 28)
    assert np.bincount(arrays["train_labels"]).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(arrays["test_labels"]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_files_are_parsed_once_per_process_until_they_change(tmp_path, monkeypatch):
    root = write_mnist(tmp_path / "data")
    reads = []
    monkeypatch.setattr(idx, "read_idx", lambda path, ndim: reads.append(path) or read_idx(path, ndim))
    first = load_mnist(root, download_missing=False)
    assert load_mnist(root, download_missing=False) is first and len(reads) == 4  # a sweep's next job
    labels = root / "t10k-labels-idx1-ubyte"
    write_idx(labels, np.zeros(100))
    os.utime(labels, ns=(1, 1))  # a changed file, even within one clock tick
    assert load_mnist(root, download_missing=False)["test_labels"].sum() == 0 and len(reads) == 8
