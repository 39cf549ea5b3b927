"""MNIST and FashionMNIST: the four IDX files (plain or .gz) wherever users keep them."""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from aerun.data.splits import Split
from aerun.errors import UserError

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
IMAGES_MAGIC = 0x00000803  # unsigned byte data, 3 dims [N, H, W]
LABELS_MAGIC = 0x00000801  # unsigned byte data, 1 dim [N]
STEMS = {
    (split, kind): f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
    for split, prefix in (("train", "train"), ("test", "t10k"))
    for kind in ("images", "labels")
}


def folders(root: Path, folder: str) -> list[Path]:
    """Where the four IDX files may be, in order: torchvision's layout (<root>/MNIST/raw), then
    <root>/MNIST, then data.root pointing at that folder, its raw/, or any folder holding them.

    MNIST and FashionMNIST files share their names, so root itself (or its raw/) is skipped
    when it is the other dataset's folder: data=mnist never reads FashionMNIST by accident.
    """
    other = {"mnist": "fashionmnist", "fashionmnist": "mnist"}[folder.lower()]
    named = root.parent.name if root.name.lower() == "raw" else root.name
    candidates = [root / folder / "raw", root / folder]
    if named.lower().replace("-", "").replace("_", "") != other:
        candidates += [root / "raw", root]
    return list(dict.fromkeys(candidates))


def _candidates(directory: Path, stem: str) -> list[Path]:
    # torchvision leaves both the plain and the .gz file after a download; the plain one is
    # faster to read. Some mirrors (e.g. Kaggle's) write "train-images.idx3-ubyte".
    dotted = stem.replace("-idx", ".idx")
    return [directory / name for name in (stem, f"{stem}.gz", dotted, f"{dotted}.gz")]


def locate(root: Path, folder: str) -> tuple[dict, list[str], Path]:
    """The files of the first folder that has all four, or the missing ones of the fullest."""
    fullest: tuple[int, list[str], Path] | None = None
    for directory in folders(root, folder):
        found, missing = {}, []
        for key, stem in STEMS.items():
            path = next((c for c in _candidates(directory, stem) if c.is_file()), None)
            if path is None:
                missing.append(f"{directory / stem}(.gz)")
            else:
                found[key] = path
        if not missing:
            return found, [], directory
        if fullest is None or len(found) > fullest[0]:
            fullest = (len(found), missing, directory)
    return {}, fullest[1], fullest[2]


def missing_message(root: Path, folder: str, missing: list[str], directory: Path, download: bool) -> str:
    others = [str(d) for d in folders(root, folder) if d != directory]
    also = f" (also looked in {', '.join(others)})" if others else ""
    hint = ("the download did not leave them there" if download else
            "point data.root (or AERUN_DATA_ROOT) at the folder that holds the four files (plain or .gz), "
            "or set data.download=true")
    return f"{folder} not found under {root}: expected {', '.join(missing)}{also}; {hint}"


def read_splits(found: dict) -> tuple[Split, Split]:
    """Decode the train and test splits from the four files `locate` found."""
    splits = []
    for split in ("train", "test"):
        images_path, labels_path = found[(split, "images")], found[(split, "labels")]
        images = read_idx(images_path, IMAGES_MAGIC)  # [N, H, W]
        labels = read_idx(labels_path, LABELS_MAGIC)  # [N]
        if images.shape[0] != labels.shape[0]:
            raise UserError(
                f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels; "
                "the two files must come from the same release"
            )
        if labels.numel() and int(labels.max()) > 9:
            raise UserError(f"{labels_path} has label {int(labels.max())}, expected labels 0..9")
        splits.append(Split(images.unsqueeze(1), labels.long()))  # [N, H, W] -> [N, 1, H, W]
    return splits[0], splits[1]


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix != ".gz":
            return path.read_bytes()
        with gzip.open(path, "rb") as f:
            return f.read()
    except EOFError:
        raise UserError(f"{path} is truncated: the gzip stream ends early; download it again") from None
    except (gzip.BadGzipFile, zlib.error) as e:
        raise UserError(f"{path} is not a valid gzip file ({e}); download it again") from None
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None


def read_idx(path: Path, magic_expected: int) -> torch.Tensor:
    """An IDX file of unsigned bytes as a uint8 tensor: images [N, H, W] or labels [N]."""
    data = _read_bytes(path)
    what = "image" if magic_expected == IMAGES_MAGIC else "label"
    ndim = magic_expected & 0xFF
    header_len = 4 + 4 * ndim  # magic, then one big-endian uint32 per dimension
    form = "decompressed file" if path.suffix == ".gz" else "file"
    if len(data) < header_len:
        raise UserError(
            f"{path} is truncated: an IDX {what} file starts with a {header_len}-byte header, "
            f"{form} has {len(data)} bytes"
        )
    magic = int.from_bytes(data[:4], "big")
    if magic != magic_expected:
        raise UserError(
            f"{path} is not an IDX {what} file: magic number 0x{magic:08x}, expected 0x{magic_expected:08x}"
        )
    dims = [int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4)]
    size = header_len + math.prod(dims)
    if len(data) != size:
        says = f"{dims[0]} images of {dims[1]}x{dims[2]}" if ndim == 3 else f"{dims[0]} labels"
        problem = "is truncated" if len(data) < size else "is too long"
        raise UserError(f"{path} {problem}: header says {says}, {form} has {len(data)} bytes, expected {size}")
    # one copy out of the immutable bytes, so the tensor is writable and owns its memory
    array = np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims).copy()
    return torch.from_numpy(array)
