import dataclasses
import gzip
import hashlib
import logging
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from conftest import REAL_FILES, idx_bytes, learnable_digits, run_train, write_idx, write_mnist

from rnnexp.data import idx
from rnnexp.data.datasets import DATASETS, FASHION_MNIST, MNIST
from rnnexp.data.idx import IdxError, content_md5, load, read_idx


def test_gzip_and_plain_files_read_the_same(tmp_path):
    images, labels = learnable_digits(20, 0)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a.gz", images), 3), images)
    assert np.array_equal(read_idx(write_idx(tmp_path / "a", images), 3), images)
    assert np.array_equal(read_idx(write_idx(tmp_path / "l", labels), 1), labels)


def test_load_returns_validated_arrays(tiny_mnist):
    arrays = load(tiny_mnist, MNIST, download_missing=False)
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
        load(root, MNIST, download_missing=True, mirrors=("http://127.0.0.1:9/",))
    message = str(err.value)
    assert message == f"{root / name} is a directory, not a file; remove or rename it"


def test_a_folder_beside_the_gzip_file_is_named_too(tmp_path):
    root = write_mnist(tmp_path / "data")
    (root / "train-images-idx3-ubyte").mkdir()  # train-images-idx3-ubyte.gz is there and valid
    with pytest.raises(IdxError, match="train-images-idx3-ubyte is a directory, not a file"):
        load(root, MNIST, download_missing=False)


def test_gzip_and_plain_copies_with_the_same_data_are_used_silently(tmp_path):
    root = write_mnist(tmp_path / "data")
    plain = root / "t10k-images-idx3-ubyte"
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(plain.read_bytes()))
    arrays = load(root, MNIST, download_missing=False)
    assert np.array_equal(arrays["test_images"], read_idx(plain, 3))


@pytest.mark.parametrize("n", [100, 99])  # same size but other pixels; another size
def test_gzip_and_plain_copies_that_differ_are_both_named(tmp_path, n):
    root = write_mnist(tmp_path / "data")
    plain = root / "t10k-images-idx3-ubyte"
    (root / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(plain.read_bytes()))
    assert load(root, MNIST, download_missing=False)["test_images"].shape == (100, 28, 28)
    stale = learnable_digits(n, 7)[0]
    write_idx(plain, stale)
    os.utime(plain, ns=(1, 1))  # older than the .gz, and a change load's memo must notice
    with pytest.raises(IdxError) as err:
        load(root, MNIST, download_missing=False)
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
        load(root, MNIST, download_missing=False)
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
        load(root, MNIST, download_missing=False)


def test_missing_files_offline_are_listed_with_folder_and_remedy(tmp_path):
    root = write_mnist(tmp_path / "data")
    (root / "t10k-images-idx3-ubyte").unlink()
    (root / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(IdxError) as err:
        load(root, MNIST, download_missing=True, mirrors=("http://127.0.0.1:9/",))
    message = str(err.value)
    assert "t10k-images-idx3-ubyte" in message and "train-labels-idx1-ubyte" in message
    assert "train-images" not in message  # present files are not reported missing
    assert str(root) in message and "RNNEXP_DATA_DIR" in message and "download failed" in message
    assert "\n" not in message


def _mirror(tmp_path: Path, monkeypatch, tamper: bool = False) -> tuple[str, Path]:
    """A file:// mirror serving tiny MNIST, with MNIST's download checksums pointed at its files."""
    mirror = write_mnist(tmp_path / "mirror")
    for plain in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (mirror / f"{plain}.gz").write_bytes(gzip.compress((mirror / plain).read_bytes()))
    files = {}
    for key, file in MNIST.files.items():
        digest = hashlib.md5((mirror / f"{file.name}.gz").read_bytes()).hexdigest()
        files[key] = dataclasses.replace(file, download_md5="0" * 32 if tamper else digest)
    monkeypatch.setattr(MNIST, "files", files)
    return mirror.as_uri() + "/", tmp_path / "downloads"


def test_a_file_given_as_the_data_folder_is_named_as_such(tmp_path):
    path = tmp_path / "mnist.tar"
    path.write_bytes(b"not a folder")
    with pytest.raises(IdxError) as err:
        idx.load(path, MNIST, download_missing=True, mirrors=("http://127.0.0.1:9/",))
    assert str(err.value).startswith(f"{path} is a file, not a folder; point data.root")


def test_download_verifies_and_writes_complete_files(tmp_path, monkeypatch):
    url, target = _mirror(tmp_path, monkeypatch)
    arrays = load(target, MNIST, download_missing=True, mirrors=("http://127.0.0.1:9/", url))
    assert arrays["test_images"].shape == (100, 28, 28)
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{f.name}.gz" for f in MNIST.files.values())


def test_download_with_wrong_checksum_leaves_nothing(tmp_path, monkeypatch):
    url, target = _mirror(tmp_path, monkeypatch, tamper=True)
    with pytest.raises(IdxError, match="MD5"):
        load(target, MNIST, download_missing=True, mirrors=(url,))
    assert list(target.iterdir()) == []  # no partial or unverified file left behind


def test_real_mnist_matches_its_published_label_counts(real_mnist):
    arrays = load(real_mnist, MNIST, download_missing=False)
    assert arrays["train_images"].shape == (60000, 28, 28)
    assert np.bincount(arrays["train_labels"]).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(arrays["test_labels"]).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_files_are_parsed_once_per_process_until_they_change(tmp_path, monkeypatch):
    root = write_mnist(tmp_path / "data")
    reads = []
    monkeypatch.setattr(idx, "read_idx", lambda path, ndim: reads.append(path) or read_idx(path, ndim))
    first = load(root, MNIST, download_missing=False)
    assert load(root, MNIST, download_missing=False) is first and len(reads) == 4  # a sweep's next job
    labels = root / "t10k-labels-idx1-ubyte"
    write_idx(labels, np.zeros(100))
    os.utime(labels, ns=(1, 1))  # a changed file, even within one clock tick
    assert load(root, MNIST, download_missing=False)["test_labels"].sum() == 0 and len(reads) == 8


# --- which data set the files hold: MNIST and Fashion-MNIST share their file names, not their content ---


def test_the_data_sets_share_file_names_and_differ_in_every_files_content():
    names = {key: [f.name for f in d.files.values()] for key, d in DATASETS.items()}
    assert names["mnist"] == names["fashion_mnist"] == list(REAL_FILES)
    digests = [f.md5 for d in DATASETS.values() for f in d.files.values()]
    assert len(set(digests)) == len(digests) == 8
    assert len(MNIST.classes) == len(FASHION_MNIST.classes) == 10 and FASHION_MNIST.classes[9] == "Ankle boot"


def _published_as(monkeypatch, dataset, root: Path) -> None:
    """Make the files in `root` `dataset`'s published ones: its content checksums become theirs."""
    files = {}
    for role, file in dataset.files.items():
        array = read_idx(idx.find(root, file.name), 3 if role.endswith("images") else 1)
        files[role] = dataclasses.replace(file, md5=content_md5(array))
    monkeypatch.setattr(dataset, "files", files)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rnnexp.data.idx" and r.levelno == logging.WARNING]


def test_files_of_no_known_data_set_are_read_with_a_warning_naming_them(tmp_path, monkeypatch, caplog):
    root = write_mnist(tmp_path / "own")
    with caplog.at_level(logging.INFO, logger="rnnexp.data.idx"):
        assert load(root, MNIST, download_missing=False)["train_images"].shape == (400, 28, 28)
    assert _warnings(caplog) == [
        f"{root.resolve()}: train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte, "
        "t10k-labels-idx1-ubyte: not the published MNIST files (nor any known data set's); read as your own IDX files"
    ]

    caplog.clear()
    _published_as(monkeypatch, MNIST, root)
    load(root, MNIST, download_missing=False)
    assert _warnings(caplog) == []  # MNIST's own files: nothing to say


@pytest.mark.parametrize("asked, holds", [(MNIST, FASHION_MNIST), (FASHION_MNIST, MNIST)])
def test_the_other_data_sets_files_stop_with_one_line_saying_what_to_use(tmp_path, monkeypatch, asked, holds):
    root = write_mnist(tmp_path / "data").resolve()
    _published_as(monkeypatch, holds, root)
    with pytest.raises(IdxError) as err:
        load(root, asked, download_missing=False)
    assert str(err.value) == (
        f"{root}: these are the {holds.title} files; use data={holds.key}, or point data.root at {asked.title}"
    )


def test_one_file_of_the_other_data_set_among_the_right_ones_is_named(tmp_path, monkeypatch):
    root = write_mnist(tmp_path / "data").resolve()
    _published_as(monkeypatch, MNIST, root)
    other = write_mnist(tmp_path / "other", seed=2)
    _published_as(monkeypatch, FASHION_MNIST, other)
    (root / "t10k-labels-idx1-ubyte").write_bytes((other / "t10k-labels-idx1-ubyte").read_bytes())
    with pytest.raises(IdxError) as err:
        load(root, MNIST, download_missing=False)
    assert str(err.value) == (
        f"{root / 't10k-labels-idx1-ubyte'}: holds Fashion-MNIST's t10k-labels-idx1-ubyte, not MNIST's "
        "t10k-labels-idx1-ubyte; put MNIST's file there, or point data.root at a folder of MNIST"
    )


def test_checksums_are_computed_once_per_version_of_the_files(tmp_path, monkeypatch):
    root = write_mnist(tmp_path / "data")
    digests = []
    monkeypatch.setattr(idx, "content_md5", lambda array: digests.append(array.shape) or content_md5(array))
    load(root, MNIST, download_missing=False)
    assert len(digests) == 4
    load(root, MNIST, download_missing=False)
    assert len(digests) == 4  # a sweep's next job: nothing read, nothing hashed
    labels = root / "t10k-labels-idx1-ubyte"
    write_idx(labels, np.zeros(100))
    os.utime(labels, ns=(1, 1))  # same size, other content, even within one clock tick
    load(root, MNIST, download_missing=False)
    assert len(digests) == 8


def test_a_sweep_over_two_data_sets_parses_each_once(tmp_path, monkeypatch):
    first, second = write_mnist(tmp_path / "mnist"), write_mnist(tmp_path / "fashion", n_train=300, seed=2)
    _published_as(monkeypatch, MNIST, first)
    _published_as(monkeypatch, FASHION_MNIST, second)
    reads = []
    monkeypatch.setattr(idx, "read_idx", lambda path, ndim: reads.append(path) or read_idx(path, ndim))
    mnist, fashion = load(first, MNIST), load(second, FASHION_MNIST)
    assert load(first, MNIST) is mnist and load(second, FASHION_MNIST) is fashion and len(reads) == 8
    assert fashion["train_images"].shape == (300, 28, 28)


@pytest.mark.parametrize("dataset", [MNIST, FASHION_MNIST], ids=lambda d: d.key)
def test_real_files_are_known_by_their_content(request, caplog, dataset):
    folder = request.getfixturevalue(f"real_{dataset.key}")
    with caplog.at_level(logging.INFO, logger="rnnexp.data.idx"):
        arrays = load(folder, dataset, download_missing=False)
    assert _warnings(caplog) == []
    counts = np.bincount(arrays["train_labels"]).tolist(), np.bincount(arrays["test_labels"]).tolist()
    if dataset is FASHION_MNIST:  # its README: 6000 of each class in train, 1000 in test
        assert counts == ([6000] * 10, [1000] * 10)
    else:
        assert counts[0] == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.mark.parametrize("asked, holds", [(MNIST, FASHION_MNIST), (FASHION_MNIST, MNIST)], ids=["mnist", "fashion"])
def test_real_files_of_the_other_data_set_are_refused(request, asked, holds):
    folder = request.getfixturevalue(f"real_{holds.key}").resolve()
    with pytest.raises(IdxError) as err:
        load(folder, asked, download_missing=False)
    assert str(err.value) == (
        f"{folder}: these are the {holds.title} files; use data={holds.key}, or point data.root at {asked.title}"
    )


def test_a_run_on_the_wrong_data_set_stops_with_that_one_line(tmp_path, real_fashion_mnist):
    result = run_train("data=mnist", data=real_fashion_mnist, out=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"error: {real_fashion_mnist.resolve()}: these are the Fashion-MNIST files; use data=fashion_mnist, or "
        "point data.root at MNIST"
    ]


# --- Debian's package dataset-fashion-mnist: its folder is read where the data folder has no copy ---


def _packaged(tmp_path: Path) -> Path:
    """A folder laid out as Debian's dataset-fashion-mnist installs it: the four files, gzip-compressed."""
    folder = tmp_path / "usr" / "share" / "datasets" / "fashion-mnist"
    assert folder.relative_to(tmp_path) == FASHION_MNIST.system_folder.relative_to("/")
    write_mnist(folder)
    for plain in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (folder / f"{plain}.gz").write_bytes(gzip.compress((folder / plain).read_bytes()))
        (folder / plain).unlink()
    return folder


def test_the_packages_folder_is_read_where_the_data_folder_has_no_copy(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(FASHION_MNIST, "system_folder", _packaged(tmp_path))
    root = tmp_path / "data"
    with caplog.at_level(logging.INFO, logger="rnnexp.data.idx"):
        arrays = load(root, FASHION_MNIST, download_missing=True, mirrors=("http://127.0.0.1:9/",))
    assert arrays["train_images"].shape == (400, 28, 28) and not root.exists()  # nothing downloaded
    used = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert used == [
        f"Fashion-MNIST: {root} has none of its files; using {FASHION_MNIST.system_folder}, from Debian's "
        "dataset-fashion-mnist"
    ]


def test_a_copy_in_the_data_folder_wins_over_the_packages(tmp_path, monkeypatch):
    monkeypatch.setattr(FASHION_MNIST, "system_folder", _packaged(tmp_path))
    root = write_mnist(tmp_path / "data", n_train=300)
    assert load(root, FASHION_MNIST, download_missing=False)["train_images"].shape == (300, 28, 28)
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (root / name).unlink()  # half a copy is not taken from two folders: the missing files are named
    with pytest.raises(IdxError, match="Fashion-MNIST files missing from .*: t10k-images-idx3-ubyte"):
        load(root, FASHION_MNIST, download_missing=False)


def test_missing_fashion_mnist_names_its_variable_and_the_package(tmp_path, monkeypatch):
    monkeypatch.setattr(FASHION_MNIST, "system_folder", tmp_path / "not-installed")
    with pytest.raises(IdxError) as err:
        load(tmp_path / "data", FASHION_MNIST, download_missing=False)
    message = str(err.value)
    assert "RNNEXP_FASHION_MNIST_DIR" in message and "\n" not in message
    package = f"or install Debian's dataset-fashion-mnist (it puts them in {tmp_path / 'not-installed'})."
    assert message.endswith(package), message
