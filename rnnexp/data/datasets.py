"""The data sets rnnexp reads, described as data: files, checksums, mirrors, class names.

MNIST and Fashion-MNIST use the same four file names, so only the content tells them apart: each
file is known by the MD5 of its uncompressed content, which no gzip wrapping changes (Debian's
.gz files and the mirrors' differ, their content does not), besides the MD5 of the .gz file the
mirrors serve, which a download is checked against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class File:
    name: str  # on disk, plain or with .gz appended
    md5: str  # of the uncompressed content
    download_md5: str  # of the .gz file the mirrors serve


@dataclass
class DataSet:
    key: str  # its name in the config: data=<key>, data.dataset=<key>
    title: str  # its name for people
    files: dict[str, File]  # by role: train_images, train_labels, test_images, test_labels
    mirrors: tuple[str, ...]  # URL prefixes serving <name>.gz
    classes: tuple[str, ...]  # label i is classes[i]
    root_variable: str  # the environment variable that sets data.root in conf/data/<key>.yaml, for messages
    system_folder: Path | None = None  # where an operating-system package installs the four files
    system_package: str | None = None  # that package, for messages


MNIST = DataSet(
    key="mnist",
    title="MNIST",
    files={
        "train_images": File(
            "train-images-idx3-ubyte", "6bbc9ace898e44ae57da46a324031adb", "f68b3c2dcbeaaa9fbdd348bbdeb94873"
        ),
        "train_labels": File(
            "train-labels-idx1-ubyte", "a25bea736e30d166cdddb491f175f624", "d53e105ee54ea40749a09fcbcd1e9432"
        ),
        "test_images": File(
            "t10k-images-idx3-ubyte", "2646ac647ad5339dbf082846283269ea", "9fb629c4189551a2d022fa330f9573f3"
        ),
        "test_labels": File(
            "t10k-labels-idx1-ubyte", "27ae3e4e09519cfbb04c329615203637", "ec29112dd5afa0611ce80d1b7f02629c"
        ),
    },
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),  # torchvision's
    classes=("0", "1", "2", "3", "4", "5", "6", "7", "8", "9"),
    root_variable="RNNEXP_DATA_DIR",
)

FASHION_MNIST = DataSet(
    key="fashion_mnist",
    title="Fashion-MNIST",
    files={
        "train_images": File(
            "train-images-idx3-ubyte", "f4a8712d7a061bf5bd6d2ca38dc4d50a", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"
        ),
        "train_labels": File(
            "train-labels-idx1-ubyte", "9018921c3c673c538a1fc5bad174d6f9", "25c81989df183df01b3e8a0aad5dffbe"
        ),
        "test_images": File(
            "t10k-images-idx3-ubyte", "8181f5470baa50b63fa0f6fddb340f0a", "bef4ecab320f06d8554ea6380940ec79"
        ),
        "test_labels": File(
            "t10k-labels-idx1-ubyte", "15d484375f8d13e6eb1aabb0c3f46965", "bb300cfdad3c16e7a12a480ee83cd310"
        ),
    },
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),  # Zalando's, as torchvision uses
    classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    root_variable="RNNEXP_FASHION_MNIST_DIR",
    # `dpkg -c` of dataset-fashion-mnist_0.0~git20200523.55506a9-1_all.deb (bookworm): the four .gz files, whose
    # content is the mirrors' (the .gz wrapping differs)
    system_folder=Path("/usr/share/datasets/fashion-mnist"),
    system_package="Debian's dataset-fashion-mnist",
)

DATASETS = {d.key: d for d in (MNIST, FASHION_MNIST)}
