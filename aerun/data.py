"""Datasets as in-memory uint8 tensors, the validation split, and noise for denoising.

MNIST, FashionMNIST and CIFAR-10 are small enough to decode once into memory, so
there is no `Dataset`/`DataLoader` here: a split is two tensors, and the training
loop slices batches from them. The files are read in torchvision's on-disk layout
with our own readers (IDX via `frombuffer`, CIFAR pickles via a restricted
unpickler), so torchvision is only needed for `download=True`.

No model code and no config objects: everything takes plain arguments.
"""

from __future__ import annotations

import dataclasses
import gzip
import logging
import math
import os
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aerun.errors import UserError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

log = logging.getLogger(__name__)

DATASET_NAMES = ("mnist", "fashion_mnist", "cifar10")
NOISE_KINDS = ("none", "gaussian", "salt_pepper", "masking")

_MNIST_CLASSES = [str(d) for d in range(10)]
_FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte data, 3 dims [N, H, W]
_IDX_LABELS_MAGIC = 0x00000801  # unsigned byte data, 1 dim [N]
_CIFAR_FOLDER = "cifar-10-batches-py"
_CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_FILES = (*_CIFAR_TRAIN_FILES, "test_batch", "batches.meta")
_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"  # the release as downloaded; torchvision extracts it


@dataclass
class Split:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class ImageDataset:
    name: str  # one of DATASET_NAMES
    train: Split
    val: Split
    test: Split
    classes: list[str]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        c, h, w = self.train.images.shape[1:]
        return (c, h, w)

    def to(self, device) -> ImageDataset:
        """A copy with every tensor on `device`; images stay uint8 (4x less memory than float)."""
        return dataclasses.replace(
            self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device)
        )


def load_dataset(
    name: str,
    root: str | os.PathLike,
    *,
    download: bool = False,
    val_size: float = 0.1,
    seed: int = 0,
    max_train_samples: int | None = None,
    max_test_samples: int | None = None,
) -> ImageDataset:
    """Decode `name` from torchvision's layout under `root` (or the other places users keep the
    files: see `_mnist_folders` and `_find_cifar10`) into CPU uint8 tensors.

    `val_size` < 1 is a fraction of the training images, >= 1 a count; the split is a
    seeded permutation, so the same seed gives the same split. `max_train_samples` and
    `max_test_samples` keep the first K images (of train before the split, of test) for
    quick runs. With `download=True`, missing files are fetched with torchvision first.
    """
    if name not in DATASET_NAMES:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    root = Path(root).expanduser()
    if name == "cifar10":
        train, test, classes, source = _load_cifar10(root, download)
    else:
        folder = "MNIST" if name == "mnist" else "FashionMNIST"
        classes = _MNIST_CLASSES if name == "mnist" else _FASHION_MNIST_CLASSES
        train, test, source = _load_mnist_like(root, folder, download)

    train = _first(train, max_train_samples, "max_train_samples")
    test = _first(test, max_test_samples, "max_test_samples")
    train, val = _split_validation(train, val_size, seed)
    log.info("loaded %s from %s: %d train, %d val, %d test", name, source, len(train), len(val), len(test))
    return ImageDataset(name=name, train=train, val=val, test=test, classes=list(classes))


def apply_noise(
    x: torch.Tensor, kind: str, level: float, generator: torch.Generator | None
) -> torch.Tensor:
    """Corrupt a float batch `x` in [0, 1] [B, C, H, W] for denoising; the clean x is the target.

    "gaussian": clamp(x + level * N(0, 1), 0, 1). "salt_pepper": each pixel, with probability
    `level`, becomes 0 or 1 (half each) in all channels. "masking": each pixel, with probability
    `level`, becomes 0 in all channels. "none": x itself. Draws come from `generator`, which must
    live on x's device (None: torch's default generator for that device).
    """
    if kind not in NOISE_KINDS:
        raise UserError(f"unknown noise kind {kind!r}; choose one of {', '.join(NOISE_KINDS)}")
    if kind == "none":
        return x
    if not x.is_floating_point():
        raise TypeError(f"apply_noise needs a float tensor in [0, 1], got {x.dtype}")
    if not math.isfinite(level) or level < 0 or (kind != "gaussian" and level > 1):
        limit = "a sigma >= 0" if kind == "gaussian" else "a probability in [0, 1]"
        raise UserError(f"noise level {level} is invalid for {kind!r} noise: it must be {limit}")
    if kind == "gaussian":
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + level * noise).clamp_(0, 1)
    # One uniform per pixel, shared by the channels (a dead pixel is dead in every channel).
    # Drawn in float32 so a half-precision x does not bias the probabilities.
    u = torch.rand((x.shape[0], 1, *x.shape[2:]), generator=generator, device=x.device)  # [B, 1, H, W]
    if kind == "masking":
        return x * (u >= level).to(x.dtype)
    # salt_pepper: u < level/2 -> salt (1), level/2 <= u < level -> pepper (0), else keep.
    value = (u < level / 2).to(x.dtype)
    return torch.where(u < level, value, x)


# --- splits -----------------------------------------------------------------------------


def _first(split: Split, k: int | None, what: str) -> Split:
    if k is None:
        return split
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"{what}={k!r} is invalid: give a positive number of images or null for all")
    if k >= len(split):
        return split
    # clone so the full decoded arrays can be freed
    return Split(split.images[:k].clone(), split.labels[:k].clone())


def _split_validation(train: Split, val_size: float, seed: int) -> tuple[Split, Split]:
    n = len(train)
    if isinstance(val_size, bool) or not isinstance(val_size, (int, float)) or not val_size >= 0:
        raise UserError(f"val_size={val_size!r} is invalid: give a fraction in [0, 1) or a count >= 1")
    # round, not floor: 0.29 * 100 is 28.999... in floating point
    n_val = int(round(val_size * n)) if val_size < 1 else int(val_size)
    if n_val >= n:
        raise UserError(
            f"val_size={val_size} takes {n_val} of the {n} training images and leaves none for training; "
            "lower data.val_size"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    # sorted: each split keeps the files' order, so the split depends only on the seed
    val_idx, _ = perm[:n_val].sort()
    train_idx, _ = perm[n_val:].sort()
    return (
        Split(train.images[train_idx], train.labels[train_idx]),
        Split(train.images[val_idx], train.labels[val_idx]),
    )


# --- download ---------------------------------------------------------------------------


def _reason(e: Exception) -> str:
    """An exception's message on one line (library messages often span several)."""
    return " ".join(str(e).split()) or type(e).__name__


def _download(torchvision_class: str, display: str, root: Path) -> None:
    """Fetch the files with torchvision (imported here only: reading never needs it)."""
    try:
        import torchvision.datasets

        getattr(torchvision.datasets, torchvision_class)(str(root), train=True, download=True)
    except Exception as e:  # no network, a full disk, a moved mirror: all the user's to fix
        reason = _reason(e)
        if len(reason) > 300:
            reason = reason[:300] + "..."
        raise UserError(
            f"could not download {display} into {root}: {reason}; check the network "
            "or put the files there yourself"
        ) from None


# --- MNIST and FashionMNIST (IDX files) -------------------------------------------------


def _mnist_folders(root: Path, folder: str) -> list[Path]:
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


def _idx_candidates(directory: Path, stem: str) -> list[Path]:
    # torchvision leaves both the plain and the .gz file after a download; the plain one is
    # faster to read. Some mirrors (e.g. Kaggle's) write "train-images.idx3-ubyte".
    dotted = stem.replace("-idx", ".idx")
    return [directory / name for name in (stem, f"{stem}.gz", dotted, f"{dotted}.gz")]


def _load_mnist_like(root: Path, folder: str, download: bool) -> tuple[Split, Split, Path]:
    stems = {
        (split, kind): f"{prefix}-{kind}-idx{3 if kind == 'images' else 1}-ubyte"
        for split, prefix in (("train", "train"), ("test", "t10k"))
        for kind in ("images", "labels")
    }

    def locate() -> tuple[dict, list[str], Path]:
        """The files of the first folder that has all four, or the missing ones of the fullest."""
        fullest: tuple[int, list[str], Path] | None = None
        for directory in _mnist_folders(root, folder):
            found, missing = {}, []
            for key, stem in stems.items():
                path = next((c for c in _idx_candidates(directory, stem) if c.is_file()), None)
                if path is None:
                    missing.append(f"{directory / stem}(.gz)")
                else:
                    found[key] = path
            if not missing:
                return found, [], directory
            if fullest is None or len(found) > fullest[0]:
                fullest = (len(found), missing, directory)
        return {}, fullest[1], fullest[2]

    found, missing, directory = locate()
    if missing and download:
        _download(folder, folder, root)
        found, missing, directory = locate()
    if missing:
        others = [str(d) for d in _mnist_folders(root, folder) if d != directory]
        also = f" (also looked in {', '.join(others)})" if others else ""
        hint = ("the download did not leave them there" if download else
                "point data.root (or AERUN_DATA_ROOT) at the folder that holds the four files (plain or .gz), "
                "or set data.download=true")
        raise UserError(f"{folder} not found under {root}: expected {', '.join(missing)}{also}; {hint}")

    splits = []
    for split in ("train", "test"):
        images_path, labels_path = found[(split, "images")], found[(split, "labels")]
        images = _read_idx(images_path, _IDX_IMAGES_MAGIC)  # [N, H, W]
        labels = _read_idx(labels_path, _IDX_LABELS_MAGIC)  # [N]
        if images.shape[0] != labels.shape[0]:
            raise UserError(
                f"{images_path} has {images.shape[0]} images but {labels_path} has {labels.shape[0]} labels; "
                "the two files must come from the same release"
            )
        if labels.numel() and int(labels.max()) > 9:
            raise UserError(f"{labels_path} has label {int(labels.max())}, expected labels 0..9")
        splits.append(Split(images.unsqueeze(1), labels.long()))  # [N, H, W] -> [N, 1, H, W]
    return splits[0], splits[1], directory


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


def _read_idx(path: Path, magic_expected: int) -> torch.Tensor:
    """An IDX file of unsigned bytes as a uint8 tensor: images [N, H, W] or labels [N]."""
    data = _read_bytes(path)
    what = "image" if magic_expected == _IDX_IMAGES_MAGIC else "label"
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


# --- CIFAR-10 (python pickles) ----------------------------------------------------------

# Everything the CIFAR-10 pickles reference: numpy's array reconstruction, under its numpy 1
# (the real files) and numpy 2 module names. Any other global, e.g. os.system, is refused
# before it is looked up, so a malicious file's payload never runs.
_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _CifarUnpickler(pickle.Unpickler):
    def __init__(self, file, name: str):
        # bytes: the files were pickled by Python 2, whose str must stay bytes (keys b"data", ...)
        super().__init__(file, encoding="bytes")
        self.name = name

    def find_class(self, module: str, name: str):
        try:
            return _PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise UserError(
                f"{self.name} is not a CIFAR-10 python batch: it asks to load {module}.{name}, "
                "and aerun only unpickles numpy arrays"
            ) from None


def _unpickle(file, name: str):
    """Unpickle an open binary file; `name` (a path, or archive:member) is what errors show."""
    try:
        return _CifarUnpickler(file, name).load()
    except UserError:
        raise
    except OSError as e:
        raise UserError(f"cannot read {name}: {e.strerror or e}") from None
    except Exception as e:  # truncated or foreign bytes fail in many ways inside pickle and numpy
        raise UserError(f"{name} is not a CIFAR-10 python batch: unpickling failed ({_reason(e)})") from None


def _read_cifar_batch(files: _CifarFiles, member: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 3, 32, 32] and labels int64 [N] from one pickled batch."""
    batch = files.unpickle(member)
    path = files.name(member)
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise UserError(f"{path} is not a CIFAR-10 python batch: expected a dict with b'data' and b'labels'")
    data = batch[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise UserError(f"{path} is not a CIFAR-10 python batch: expected b'data' uint8 [N, 3072], got {got}")
    try:
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (TypeError, ValueError):
        labels = None
    if labels is None or labels.shape != (data.shape[0],):
        raise UserError(
            f"{path} is not a CIFAR-10 python batch: "
            f"expected b'labels' to be {data.shape[0]} integers, one per image"
        )
    bad = labels[(labels < 0) | (labels > 9)]
    if bad.size:
        raise UserError(f"{path} has label {int(bad[0])}, expected labels 0..9")
    # rows are 1024 red, then 1024 green, then 1024 blue values, each row-major 32x32
    return data.reshape(-1, 3, 32, 32), labels  # [N, 3072] -> [N, 3, 32, 32]


class _CifarFiles:
    """The release's seven pickles in a folder: <root>/cifar-10-batches-py, or root itself."""

    def __init__(self, folder: Path):
        self.folder = folder

    def missing(self) -> list[str]:
        return [self.name(f) for f in _CIFAR_FILES if not (self.folder / f).is_file()]

    def name(self, member: str) -> str:
        return str(self.folder / member)

    def unpickle(self, member: str):
        try:
            with open(self.folder / member, "rb") as f:
                return _unpickle(f, self.name(member))
        except OSError as e:
            raise UserError(f"cannot read {self.name(member)}: {e.strerror or e}") from None

    def close(self) -> None:
        pass


class _CifarArchive(_CifarFiles):
    """The same pickles read straight out of the release archive, cifar-10-python.tar.gz."""

    def __init__(self, archive: Path):
        super().__init__(archive)
        try:
            self.tar = tarfile.open(archive, "r:gz")
            self.members = {Path(m.name).name: m for m in self.tar.getmembers()
                            if m.isfile() and Path(m.name).parent.name == _CIFAR_FOLDER}
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise UserError(f"{archive} is not a readable .tar.gz archive ({_reason(e)}); download it again") from None

    def missing(self) -> list[str]:
        return [self.name(f) for f in _CIFAR_FILES if f not in self.members]

    def name(self, member: str) -> str:
        return f"{self.folder}:{_CIFAR_FOLDER}/{member}"

    def unpickle(self, member: str):
        try:
            with self.tar.extractfile(self.members[member]) as f:
                return _unpickle(f, self.name(member))
        except (tarfile.TarError, EOFError, zlib.error) as e:
            raise UserError(f"{self.folder} is not a readable .tar.gz archive ({_reason(e)}); download it again") from None

    def close(self) -> None:
        self.tar.close()


def _find_cifar10(root: Path) -> tuple[_CifarFiles | None, list[str]]:
    """The first complete source: torchvision's folder, root as that folder, then the release
    archive in root or root as the archive. Else None and the missing files of the fuller folder."""
    folders = [_CifarFiles(root / _CIFAR_FOLDER), _CifarFiles(root)]
    for files in folders:
        if not files.missing():
            return files, []
    for archive in (root / _CIFAR_ARCHIVE, root):
        if archive.is_file() and archive.name.endswith((".tar.gz", ".tgz")):
            files = _CifarArchive(archive)
            absent = files.missing()
            if absent:
                files.close()
                raise UserError(f"{archive} is not the CIFAR-10 python release: it lacks {', '.join(absent)}")
            return files, []
    return None, min((files.missing() for files in folders), key=len)


def _load_cifar10(root: Path, download: bool) -> tuple[Split, Split, list[str], str]:
    files, absent = _find_cifar10(root)
    if files is None and download:
        _download("CIFAR10", "CIFAR-10", root)
        files, absent = _find_cifar10(root)
    if files is None:
        hint = ("the download did not leave them there" if download else
                f"point data.root (or AERUN_DATA_ROOT) at the folder that holds them or {_CIFAR_ARCHIVE}, "
                "or set data.download=true")
        raise UserError(f"CIFAR-10 not found under {root}: expected {', '.join(absent)}; {hint}")
    try:
        meta = files.unpickle("batches.meta")
        names = meta.get(b"label_names") if isinstance(meta, dict) else None
        if not isinstance(names, list) or len(names) != 10 or not all(isinstance(n, (bytes, str)) for n in names):
            raise UserError(
                f"{files.name('batches.meta')} is not CIFAR-10 metadata: expected b'label_names' with 10 names"
            )
        classes = [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]

        def split(members) -> Split:
            parts = [_read_cifar_batch(files, m) for m in members]
            images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
            labels = np.concatenate([p[1] for p in parts])
            return Split(torch.from_numpy(images), torch.from_numpy(labels))

        return split(_CIFAR_TRAIN_FILES), split(["test_batch"]), classes, str(files.folder)
    finally:
        files.close()
