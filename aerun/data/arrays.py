"""`data=npz`: images (optional labels, class names, a test set) from a .npz file, or the
images alone from a .npy file, which is memory-mapped.

Arrays are read with allow_pickle=False: an array of Python objects needs pickle, and
unpickling a file can run any code, so such a file is refused. Images may be [N, H, W],
[N, C, H, W] or [N, H, W, C] (C 1 or 3; where the 1/3 axis is decides the layout), uint8 or
floats in [0, 1] (stored as uint8, rounded: the dataset contract is uint8 images).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from aerun.data import cache
from aerun.data.splits import NO_LABEL, Source
from aerun.errors import UserError

SUFFIXES = (".npz", ".npy")


def _reason(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _starts_like_a_pickle(path: Path) -> bool:
    """A pickle of protocol 2 or later starts with 0x80 and its protocol number."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _open(path: Path):
    """np.load of a .npz (lazy NpzFile) or a .npy (memory-mapped), refusing pickles."""
    try:
        if path.suffix == ".npy":
            return cache.open_mapped(path)
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "Python objects" in str(e) or ("pickle" in str(e) and _starts_like_a_pickle(path)):
            raise UserError(f"{path} holds pickled Python objects, and unpickling a file can run code: aerun reads "
                            f"only numeric arrays (np.savez / np.save of uint8 or float arrays)") from None
        if "pickle" in str(e):  # numpy calls anything that is neither a zip nor a .npy a pickle
            raise UserError(f"{path} is not a {path.suffix} file (neither a zip archive of arrays nor a .npy "
                            f"array): write it with np.savez(path, images=...) or np.save") from None
        raise UserError(f"{path} is not a readable {path.suffix} file: {_reason(e)}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path} is not a readable {path.suffix} file: {_reason(e)}") from None


def _get(npz, key: str, path: Path) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as e:
        if "pickle" in str(e):
            raise UserError(f"{path}: the array '{key}' holds Python objects, which only pickle can load, and "
                            f"unpickling can run code; save it as a numeric array") from None
        raise UserError(f"{path}: cannot read the array '{key}': {_reason(e)}") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"{path}: cannot read the array '{key}': {_reason(e)}") from None


def check(path, images_key: str = "images") -> Path:
    """Refuse a path that is not an existing .npz / .npy file, or a .npz without the images."""
    file = Path(path).expanduser()
    if not file.exists():
        raise UserError(f"data.path={path}: no such file")
    if file.is_dir():
        raise UserError(f"data.path={path}: is a folder; data=npz reads a .npz or .npy file (for a folder of "
                        f"images use data=folder)")
    if file.suffix not in SUFFIXES:
        raise UserError(f"data.path={path}: expected a .npz or .npy file, got {file.suffix or 'no suffix'}")
    if file.suffix == ".npz":
        npz = _open(file)
        with npz:
            if images_key not in npz.files:
                has = ", ".join(npz.files) or "no arrays"
                raise UserError(f"{file} has no array '{images_key}' (it has: {has}); name the images with "
                                f"data.images_key")
    return file


def to_nchw(array: np.ndarray, where: str) -> np.ndarray:
    """A view of `array` as [N, C, H, W]; the channel axis is the one of size 1 or 3."""
    shape = list(array.shape)
    if array.ndim == 3:
        return array[:, None]  # [N, H, W] -> [N, 1, H, W]
    if array.ndim == 4:
        first, last = shape[1] in (1, 3), shape[3] in (1, 3)
        if first and last:
            raise UserError(f"{where} has shape {shape}: ambiguous, both axis 1 and axis 3 could be the channels "
                            f"(1 or 3), so it fits [N, C, H, W] and [N, H, W, C]; save grey images as [N, H, W]")
        if first:
            return array
        if last:
            return array.transpose(0, 3, 1, 2)  # [N, H, W, C] -> [N, C, H, W]
    raise UserError(f"{where} has shape {shape}: expected [N, H, W], [N, C, H, W] or [N, H, W, C] with C = 1 or 3")


def uint8_chunks(images: np.ndarray, where: str):
    """The [N, C, H, W] `images` as contiguous uint8 chunks of rows; floats are checked (no
    NaN or inf, values in [0, 1]) over the whole array and refused after the last chunk."""
    if images.dtype != np.uint8 and images.dtype.kind != "f":
        raise UserError(f"{where} is {images.dtype}: expected uint8 (0..255) or floats in [0, 1]")
    step = max(1, cache.CHUNK_BYTES // max(1, images[:1].nbytes))
    nonfinite, low, high = 0, np.inf, -np.inf
    for start in range(0, len(images), step):
        chunk = np.asarray(images[start:start + step])
        if chunk.dtype == np.uint8:
            yield np.ascontiguousarray(chunk)
            continue
        finite = np.isfinite(chunk)
        nonfinite += int(chunk.size - np.count_nonzero(finite))
        if finite.any():
            low, high = min(low, float(chunk[finite].min())), max(high, float(chunk[finite].max()))
        yield np.ascontiguousarray(np.rint(np.clip(np.nan_to_num(chunk), 0, 1) * 255), dtype=np.uint8)
    if nonfinite:
        raise UserError(f"{where} has {nonfinite} NaN or infinite values (of {images.size}); replace them first")
    if low < 0 or high > 1:
        raise UserError(f"{where} has values in [{low:g}, {high:g}]: expected floats in [0, 1] (or uint8 0..255); "
                        f"scale them first")


def _images(array: np.ndarray, where: str, path: Path | None) -> tuple[np.ndarray, str | None]:
    """uint8 [N, C, H, W] (and its cache key when memory-mapped): a .npy that is already uint8
    [N, (1|3,) H, W] is used as it is; any other .npy is converted once into the cache."""
    images = to_nchw(array, where)
    if len(images) == 0:
        raise UserError(f"{where} holds no images")
    if path is None:  # from a .npz: in memory
        return np.concatenate(list(uint8_chunks(images, where))), None
    st = path.stat()
    key = cache.key_of("npy", str(path.resolve()), st.st_size, st.st_mtime_ns)
    if images.dtype == np.uint8 and images.flags.c_contiguous:
        return images, key
    file = cache.cache_path("npy", key)
    cached = cache.open_cached(file, len(images))
    if cached is None:
        cached = cache.write_cached(file, images.shape, lambda: uint8_chunks(images, where))
    return cached, key


def _labels(npz, key: str, n: int, path: Path) -> np.ndarray | None:
    if key not in npz.files:
        return None
    labels = _get(npz, key, path)
    if labels.ndim != 1 or labels.shape[0] != n or labels.dtype.kind not in "iu":
        raise UserError(f"{path}: '{key}' must be {n} integers, one per image, got {labels.dtype} {list(labels.shape)}")
    if n and labels.min() < 0:
        raise UserError(f"{path}: '{key}' has label {labels.min()}: labels are class numbers >= 0")
    return labels.astype(np.int64)


def _class_names(npz, key: str, labels: list[np.ndarray], path: Path) -> list[str]:
    top = max(int(part.max()) for part in labels if len(part))
    if key not in npz.files:
        return [str(k) for k in range(top + 1)]
    names = _get(npz, key, path)
    if names.ndim != 1 or names.dtype.kind not in "US":
        raise UserError(f"{path}: '{key}' must be a list of strings, got {names.dtype} {list(names.shape)}")
    names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n) for n in names.tolist()]
    if top >= len(names):
        raise UserError(f"{path}: the labels go up to {top}, but '{key}' has {len(names)} names")
    return names


def read(path, images_key: str = "images", labels_key: str = "labels",
         class_names_key: str = "class_names") -> tuple[Source, Source | None]:
    """(train source, test source or None) from the file at `path`."""
    file = check(path, images_key)
    if file.suffix == ".npy":
        images, key = _images(_open(file), str(file), file)
        return Source(images, np.full(len(images), NO_LABEL, dtype=np.int64), [], key), None
    test_key, test_labels_key = f"test_{images_key}", f"test_{labels_key}"
    with _open(file) as npz:
        images, _ = _images(_get(npz, images_key, file), f"{file}:{images_key}", None)
        labels = _labels(npz, labels_key, len(images), file)
        test = test_labels = None
        if test_key in npz.files:
            test, _ = _images(_get(npz, test_key, file), f"{file}:{test_key}", None)
            if test.shape[1:] != images.shape[1:]:
                raise UserError(f"{file}: '{test_key}' are {list(test.shape[1:])} (C, H, W), but '{images_key}' are "
                                f"{list(images.shape[1:])}")
            test_labels = _labels(npz, test_labels_key, len(test), file)
            if (labels is None) != (test_labels is None):
                have, lack = (labels_key, test_labels_key) if labels is not None else (test_labels_key, labels_key)
                raise UserError(f"{file} has '{have}' but no '{lack}': label both sets of images or neither")
        elif test_labels_key in npz.files:
            raise UserError(f"{file} has '{test_labels_key}' but no '{test_key}' for them to label")
        if labels is None:
            if class_names_key in npz.files:
                raise UserError(f"{file} has '{class_names_key}' but no '{labels_key}' to name")
            return Source(images, np.full(len(images), NO_LABEL, dtype=np.int64), []), (
                None if test is None else Source(test, np.full(len(test), NO_LABEL, dtype=np.int64), []))
        classes = _class_names(npz, class_names_key, [labels] + ([test_labels] if test is not None else []), file)
    return Source(images, labels, classes), None if test is None else Source(test, test_labels, classes)
