"""In-memory datasets: Fashion-MNIST (idx files), CIFAR (python batches) and scikit-learn's
digits, each an ``ArraySource`` of decoded uint8 images written as lossless PNG."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from sslflow.data.samples import Sample, Skipped, SourceError, check_split

FASHION_MNIST_CLASSES = [
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
]
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class ArraySource:
    """Decoded uint8 images held in memory (N, H, W) or (N, H, W, C), written as lossless PNG."""

    name: str
    images: np.ndarray
    labels: np.ndarray | None
    key_prefix: str
    origin: dict[str, Any]
    classes: list[str] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.origin, "samples": len(self)}

    def iter_items(self, start: int = 0) -> Iterator[Sample | Skipped]:
        height, width = self.images.shape[1:3]
        for index in range(start, len(self.images)):
            label = None if self.labels is None else int(self.labels[index])
            yield Sample(
                key=f"{self.key_prefix}-{index:06d}",
                image=Image.fromarray(self.images[index]),
                label=label,
                meta={"source": self.name, "index": index, "width": width, "height": height},
            )


def _read_idx(path: Path) -> np.ndarray:
    """Read an idx file (optionally gzipped), the format of MNIST and Fashion-MNIST."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise SourceError(f"{path} is not a uint8 idx file (header {raw[:4]!r})")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise SourceError(f"{path} is truncated: expected {shape}, found {data.size} bytes")
    return data.reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem, folder / "raw" / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _idx_array(folder: Path, stem: str) -> np.ndarray:
    """The idx file ``stem`` of a Fashion-MNIST folder (``.gz`` or not), read."""
    path = _find_idx(folder, stem)
    if path is None:
        raise SourceError(f"{folder} has no {stem}[.gz]: the Fashion-MNIST folder is incomplete")
    return _read_idx(path)


def fashion_mnist_dir(path: str | os.PathLike[str] | None = None) -> Path | None:
    """Locate Fashion-MNIST idx files: ``path``, then ``$SSLFLOW_DATA``, then Debian's package.

    Returns None when none of them holds the four idx files.
    """
    candidates: list[Path] = []
    if path:
        candidates += [Path(path), Path(path) / "FashionMNIST"]
    if os.environ.get("SSLFLOW_DATA"):
        data = Path(os.environ["SSLFLOW_DATA"])
        candidates += [data / "fashion-mnist", data / "FashionMNIST", data]
    candidates.append(DEBIAN_FASHION_MNIST)
    for folder in candidates:
        stems = ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
        if all(_find_idx(folder, stem) for stem in stems):
            return folder
    return None


def fashion_mnist(
    path: str | os.PathLike[str] | None = None,
    split: str = "train",
    download: bool = False,
    download_root: str | os.PathLike[str] | None = None,
) -> ArraySource:
    """Fashion-MNIST (60k train + 10k test, 28×28 grey) from local idx files.

    Torchvision's download runs only when ``download=True``; sslflow never fetches data unasked.
    """
    folder = fashion_mnist_dir(path)
    if folder is None and download:
        from torchvision.datasets import FashionMNIST

        root = Path(download_root or ".")
        FashionMNIST(str(root), train=True, download=True)
        FashionMNIST(str(root), train=False, download=True)
        folder = fashion_mnist_dir(root)
    if folder is None:
        tried = [str(path)] if path else []
        if os.environ.get("SSLFLOW_DATA"):
            tried.append(f"$SSLFLOW_DATA={os.environ['SSLFLOW_DATA']}")
        tried.append(str(DEBIAN_FASHION_MNIST))
        raise SourceError(
            "Fashion-MNIST idx files not found (looked in: " + ", ".join(tried) + "). "
            "Fix: `apt-get install dataset-fashion-mnist`, pass --path to a folder holding "
            "train-images-idx3-ubyte.gz etc., set SSLFLOW_DATA, or pass --download."
        )
    parts = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[check_split(split)]
    images = np.concatenate([_idx_array(folder, f"{p}-images-idx3-ubyte") for p in parts])
    labels = np.concatenate([_idx_array(folder, f"{p}-labels-idx1-ubyte") for p in parts])
    return ArraySource(
        name="fashion-mnist",
        images=images,
        labels=labels.astype(np.int64),
        key_prefix=f"fmnist-{split}",
        origin={"path": str(folder), "split": split},
        classes=list(FASHION_MNIST_CLASSES),
    )


def digits(split: str = "all") -> ArraySource:
    """scikit-learn's bundled 8×8 digits (1,797 images): the offline fallback, no files needed.

    It has no official split; every fifth image (index % 5 == 0) is the test split.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    index = np.arange(len(images))
    keep = {"train": index % 5 != 0, "test": index % 5 == 0, "all": index >= 0}[check_split(split)]
    return ArraySource(
        name="digits",
        images=images[keep],
        labels=bunch.target[keep].astype(np.int64),
        key_prefix=f"digits-{split}",
        origin={"path": "sklearn.datasets.load_digits", "split": split},
        classes=[str(d) for d in range(10)],
    )


class _ArraysOnlyUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR batches that refuses anything but numpy arrays and builtins.

    CIFAR's "python version" is a pickle; a plain ``pickle.load`` would run code from data.
    """

    ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("_codecs", "encode"),
            ("builtins", "bytes"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name} in a CIFAR batch")
        return super().find_class(module, name)


def _load_cifar_batch(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        batch = _ArraysOnlyUnpickler(handle, encoding="bytes").load()
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def cifar(path: str | os.PathLike[str], split: str = "train") -> ArraySource:
    """CIFAR-10 or CIFAR-100 from the "python version" batches directory (auto-detected)."""
    folder = Path(path)
    if (folder / "data_batch_1").is_file():
        name, label_key, meta_file, names_key = "cifar10", "labels", "batches.meta", "label_names"
        files = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
    elif (folder / "train").is_file() and (folder / "test").is_file():
        name, label_key, meta_file, names_key = (
            "cifar100",
            "fine_labels",
            "meta",
            "fine_label_names",
        )
        files = {"train": ["train"], "test": ["test"]}
    else:
        raise SourceError(
            f"{folder} is not a CIFAR python batches directory: expected data_batch_1..5 and "
            "test_batch (CIFAR-10) or train and test (CIFAR-100), as in cifar-*-python.tar.gz."
        )
    files["all"] = files["train"] + files["test"]
    batches = [_load_cifar_batch(folder / f) for f in files[check_split(split)]]
    images = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32)
    labels = np.concatenate([np.asarray(b[label_key]) for b in batches])
    classes = None
    if (folder / meta_file).is_file():
        meta = _load_cifar_batch(folder / meta_file)
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[names_key]]
    return ArraySource(
        name=name,
        images=np.ascontiguousarray(images.transpose(0, 2, 3, 1)),
        labels=labels.astype(np.int64),
        key_prefix=f"{name}-{split}",
        origin={"path": str(folder), "split": split},
        classes=classes,
    )
