"""CIFAR-10: the python release's pickled batches, in a folder or straight from its .tar.gz,
through an unpickler that admits only numpy arrays."""

from __future__ import annotations

import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from aerun.data.splits import Split
from aerun.errors import UserError

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
FILES = (*TRAIN_FILES, "test_batch", "batches.meta")
ARCHIVE = "cifar-10-python.tar.gz"  # the release as downloaded; torchvision extracts it
# the release's batches.meta names, known up front so a class filter is checked before a run starts
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def reason(e: Exception) -> str:
    """An exception's message on one line (library messages often span several)."""
    return " ".join(str(e).split()) or type(e).__name__

# Everything the CIFAR-10 pickles reference: numpy's array reconstruction, under its numpy 1
# (the real files) and numpy 2 module names. Any other global, e.g. os.system, is refused
# before it is looked up, so a malicious file's payload never runs.
PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class CifarUnpickler(pickle.Unpickler):
    def __init__(self, file, name: str):
        # bytes: the files were pickled by Python 2, whose str must stay bytes (keys b"data", ...)
        super().__init__(file, encoding="bytes")
        self.name = name

    def find_class(self, module: str, name: str):
        try:
            return PICKLE_GLOBALS[(module, name)]
        except KeyError:
            raise UserError(
                f"{self.name} is not a CIFAR-10 python batch: it asks to load {module}.{name}, "
                "and aerun only unpickles numpy arrays"
            ) from None


def unpickle(file, name: str):
    """Unpickle an open binary file; `name` (a path, or archive:member) is what errors show."""
    try:
        return CifarUnpickler(file, name).load()
    except UserError:
        raise
    except OSError as e:
        raise UserError(f"cannot read {name}: {e.strerror or e}") from None
    except Exception as e:  # truncated or foreign bytes fail in many ways inside pickle and numpy
        raise UserError(f"{name} is not a CIFAR-10 python batch: unpickling failed ({reason(e)})") from None


def read_batch(files: "CifarFiles", member: str) -> tuple[np.ndarray, np.ndarray]:
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


class CifarFiles:
    """The release's seven pickles in a folder: <root>/cifar-10-batches-py, or root itself."""

    def __init__(self, folder: Path):
        self.folder = folder

    def missing(self) -> list[str]:
        return [self.name(f) for f in FILES if not (self.folder / f).is_file()]

    def name(self, member: str) -> str:
        return str(self.folder / member)

    def unpickle(self, member: str):
        try:
            with open(self.folder / member, "rb") as f:
                return unpickle(f, self.name(member))
        except OSError as e:
            raise UserError(f"cannot read {self.name(member)}: {e.strerror or e}") from None

    def close(self) -> None:
        pass


class CifarArchive(CifarFiles):
    """The same pickles read straight out of the release archive, cifar-10-python.tar.gz."""

    def __init__(self, archive: Path):
        super().__init__(archive)
        try:
            self.tar = tarfile.open(archive, "r:gz")
            self.members = {Path(m.name).name: m for m in self.tar.getmembers()
                            if m.isfile() and Path(m.name).parent.name == FOLDER}
        except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
            raise UserError(f"{archive} is not a readable .tar.gz archive ({reason(e)}); download it again") from None

    def missing(self) -> list[str]:
        return [self.name(f) for f in FILES if f not in self.members]

    def name(self, member: str) -> str:
        return f"{self.folder}:{FOLDER}/{member}"

    def unpickle(self, member: str):
        try:
            with self.tar.extractfile(self.members[member]) as f:
                return unpickle(f, self.name(member))
        except (tarfile.TarError, EOFError, zlib.error) as e:
            raise UserError(f"{self.folder} is not a readable .tar.gz archive ({reason(e)}); download it again") from None

    def close(self) -> None:
        self.tar.close()


def find(root: Path) -> tuple[CifarFiles | None, list[str]]:
    """The first complete source: torchvision's folder, root as that folder, then the release
    archive in root or root as the archive. Else None and the missing files of the fuller folder."""
    folders = [CifarFiles(root / FOLDER), CifarFiles(root)]
    for files in folders:
        if not files.missing():
            return files, []
    for archive in (root / ARCHIVE, root):
        if archive.is_file() and archive.name.endswith((".tar.gz", ".tgz")):
            files = CifarArchive(archive)
            absent = files.missing()
            if absent:
                files.close()
                raise UserError(f"{archive} is not the CIFAR-10 python release: it lacks {', '.join(absent)}")
            return files, []
    return None, min((files.missing() for files in folders), key=len)


def missing_message(root: Path, absent: list[str], download: bool) -> str:
    hint = ("the download did not leave them there" if download else
            f"point data.root (or AERUN_DATA_ROOT) at the folder that holds them or {ARCHIVE}, "
            "or set data.download=true")
    return f"CIFAR-10 not found under {root}: expected {', '.join(absent)}; {hint}"


def read_splits(files: CifarFiles) -> tuple[Split, Split, list[str]]:
    """(train, test, class names) from the release `find` located; closes it."""
    try:
        meta = files.unpickle("batches.meta")
        names = meta.get(b"label_names") if isinstance(meta, dict) else None
        if not isinstance(names, list) or len(names) != 10 or not all(isinstance(n, (bytes, str)) for n in names):
            raise UserError(
                f"{files.name('batches.meta')} is not CIFAR-10 metadata: expected b'label_names' with 10 names"
            )
        classes = [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]

        def split(members) -> Split:
            parts = [read_batch(files, m) for m in members]
            images = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
            labels = np.concatenate([p[1] for p in parts])
            return Split(torch.from_numpy(images), torch.from_numpy(labels))

        return split(TRAIN_FILES), split(["test_batch"]), classes
    finally:
        files.close()
