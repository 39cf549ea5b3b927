"""Tiny datasets in the real on-disk formats, so tests never download anything.

The images are learnable, not noise: each class is a bright block at its own position
(and, for CIFAR-10, in its own colour) on a dim noisy background, shifted by up to one
pixel per image. Labels 0..9 are balanced. Both builders return `root`, the folder to
pass to `aerun.data.load_dataset` (or `data.root=`).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]
# one colour per CIFAR-10 class (RGB)
_CLASS_COLOURS = np.array(
    [
        [255, 40, 40], [40, 255, 40], [40, 40, 255], [255, 255, 40], [255, 40, 255],
        [40, 255, 255], [255, 140, 40], [140, 40, 255], [255, 255, 255], [140, 255, 140],
    ],
    dtype=np.int64,
)


def _balanced_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.permutation(np.arange(n) % 10).astype(np.int64)


def _class_blocks(labels: np.ndarray, size: int, block: int, rng: np.random.Generator) -> np.ndarray:
    """Bool masks [N, size, size]: a block x block square on a 5x2 grid of class positions, jittered by 1 px."""
    step_x = (size - block - 2) // 4
    step_y = size - block - 4
    x0 = 1 + (labels % 5) * step_x + rng.integers(-1, 2, size=len(labels))
    y0 = 2 + (labels // 5) * step_y + rng.integers(-1, 2, size=len(labels))
    x0 = np.clip(x0, 0, size - block)
    y0 = np.clip(y0, 0, size - block)
    coords = np.arange(size)
    in_rows = (coords >= y0[:, None]) & (coords < y0[:, None] + block)  # [N, size]
    in_cols = (coords >= x0[:, None]) & (coords < x0[:, None] + block)  # [N, size]
    return in_rows[:, :, None] & in_cols[:, None, :]  # [N, size, size]


def mnist_like_arrays(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [n, 28, 28] and int64 labels [n]."""
    labels = _balanced_labels(n, rng)
    images = rng.integers(0, 40, size=(n, 28, 28))
    bright = rng.integers(180, 256, size=(n, 28, 28))
    images = np.where(_class_blocks(labels, 28, 6, rng), bright, images)
    return images.astype(np.uint8), labels


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """An IDX file: big-endian magic, one big-endian uint32 per dimension, then the bytes."""
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def make_mnist_like(
    root, folder: str = "MNIST", n_train: int = 256, n_test: int = 64, gz: bool = True, raw: bool = False,
    seed: int = 0,
) -> Path:
    """Write <root>/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]; return root.

    `gz` writes the gzipped files (as a copy with only .gz has), `raw` the plain ones (as a
    torchvision download leaves beside the .gz); both writes both.
    """
    root = Path(root)
    raw_dir = root / folder / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images, labels = mnist_like_arrays(n, rng)
        for stem, content in (
            (f"{prefix}-images-idx3-ubyte", idx_bytes(images, 0x00000803)),
            (f"{prefix}-labels-idx1-ubyte", idx_bytes(labels, 0x00000801)),
        ):
            if raw:
                (raw_dir / stem).write_bytes(content)
            if gz:
                (raw_dir / f"{stem}.gz").write_bytes(gzip.compress(content, compresslevel=1, mtime=0))
    return root


def cifar_arrays(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [n, 3, 32, 32] and int64 labels [n]."""
    labels = _balanced_labels(n, rng)
    images = rng.integers(0, 40, size=(n, 3, 32, 32))
    colour = _CLASS_COLOURS[labels][:, :, None, None] - rng.integers(0, 30, size=(n, 3, 1, 1))  # [N, 3, 1, 1]
    images = np.where(_class_blocks(labels, 32, 8, rng)[:, None], colour, images)
    return images.astype(np.uint8), labels


def _write_pickle(path: Path, obj) -> None:
    # Protocol 4: bytes stay bytes (protocol 2 under Python 3 would route them through
    # _codecs.encode), and arrays go through numpy's _reconstruct like the real files do.
    path.write_bytes(pickle.dumps(obj, protocol=4))


def make_cifar10(root, n_per_batch: int = 64, n_test: int = 64, seed: int = 0) -> Path:
    """Write <root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}; return root."""
    root = Path(root)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    batches = [(f"data_batch_{i}", f"training batch {i} of 5", n_per_batch) for i in range(1, 6)]
    for file_name, batch_label, n in [*batches, ("test_batch", "testing batch 1 of 1", n_test)]:
        images, labels = cifar_arrays(n, rng)
        _write_pickle(
            folder / file_name,
            {
                b"batch_label": batch_label.encode(),
                b"labels": labels.tolist(),
                b"data": images.reshape(n, 3072),  # [N, 3, 32, 32] -> [N, 3072], R then G then B planes
                b"filenames": [f"img_{i:05d}.png".encode() for i in range(n)],
            },
        )
    _write_pickle(
        folder / "batches.meta",
        {
            b"num_cases_per_batch": n_per_batch,
            b"label_names": [name.encode() for name in CIFAR10_CLASSES],
            b"num_vis": 3072,
        },
    )
    return root
