"""`data=folder`: a folder of image files (PNG, JPEG, BMP, WebP through Pillow), decoded once
into the memory-mapped cache (`aerun.data.cache`).

Layouts, as torchvision's ImageFolder reads them: <path>/<class>/**/<image> (labels from the
sorted class folder names) or <path>/<image> (no labels); and either of those under a
`train/` + `test/` pair of subfolders, which then give the test split. Hidden files and
folders, and files that are not images, are skipped.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aerun.data import cache
from aerun.data.splits import NO_LABEL
from aerun.errors import UserError

log = logging.getLogger("aerun.data")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
# Pillow modes with one channel ("I;16*" / "I": 16-bit grey, scaled to 8 bits; "F": float)
GREY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}


@dataclass
class Part:
    """One set of images: the whole folder, or its train/ or its test/."""

    root: Path
    files: list[str]  # in order: class folders by name, then file paths by name (str: 60,000 Paths are slow)
    labels: np.ndarray  # int64 [N]; NO_LABEL for a flat folder
    classes: list[str]  # sorted class folder names; [] for a flat folder


def _visible(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        raise UserError(f"cannot read the folder {folder}: {e.strerror or e}") from None


def _is_image(entry) -> bool:
    return entry.name.lower().endswith(IMAGE_SUFFIXES) and entry.is_file()


def _images_below(folder: Path) -> list[str]:
    """Every image file under `folder`, at any depth (as ImageFolder), sorted by path."""
    found = []
    for top, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [os.path.join(top, f) for f in files if not f.startswith(".") and f.lower().endswith(IMAGE_SUFFIXES)]
    return sorted(found)


def _part(folder: Path) -> Part:
    """The images of `folder` in class-folder or flat layout."""
    entries = _visible(folder)
    images = [e.path for e in entries if _is_image(e)]
    subdirs = [e for e in entries if e.is_dir()]
    wanted = ", ".join(IMAGE_SUFFIXES)
    if images and subdirs:
        raise UserError(f"{folder} has both images ({Path(images[0]).name}) and folders ({subdirs[0].name}/) at its top level: "
                        f"put every image in a class folder (labels) or none (no labels)")
    if images:
        return Part(folder, images, np.full(len(images), NO_LABEL, dtype=np.int64), [])
    if not subdirs:
        raise UserError(f"{folder} has no images: expected {wanted} files, or class folders holding them")
    if len(subdirs) == 1:
        raise UserError(f"{folder} has a single class folder ({subdirs[0].name}/): one class: use a flat folder for "
                        f"unlabelled data or add classes")
    files, labels = [], []
    for label, entry in enumerate(subdirs):
        found = _images_below(Path(entry.path))
        if not found:
            raise UserError(f"class folder {entry.path} has no images ({wanted})")
        files += found
        labels += [label] * len(found)
    return Part(folder, files, np.asarray(labels, dtype=np.int64), [e.name for e in subdirs])


def scan(path) -> tuple[Part, Part | None]:
    """(train part, test part or None): the layout of `path`, no image decoded."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise UserError(f"data.path={path}: no such folder")
    if not folder.is_dir():
        raise UserError(f"data.path={path}: not a folder (data=folder reads a folder of images; "
                        f"for a .npz or .npy file use data=npz)")
    names = {e.name for e in _visible(folder) if e.is_dir()}
    if names != {"train", "test"} or any(_is_image(e) for e in _visible(folder)):
        return _part(folder), None
    train, test = _part(folder / "train"), _part(folder / "test")
    if bool(train.classes) != bool(test.classes):
        labelled, flat = (train, test) if train.classes else (test, train)
        raise UserError(f"{labelled.root} has class folders but {flat.root} has none: give both the same layout")
    unknown = [c for c in test.classes if c not in train.classes]
    if unknown:
        raise UserError(f"{test.root} has class folder {unknown[0]}/, which {train.root} lacks; "
                        f"the classes are {', '.join(train.classes)}")
    if test.classes:  # the test labels as numbers of the training classes
        numbers = np.asarray([train.classes.index(c) for c in test.classes], dtype=np.int64)
        test.labels, test.classes = numbers[test.labels], train.classes
    return train, test


def _channels_of(img) -> int:
    if img.mode in GREY_MODES or (img.mode in ("P", "PA") and img.palette and img.palette.mode in ("L", "LA")):
        return 1
    return 3


def _to_8bit(img):
    """16-bit / 32-bit grey as 8-bit grey (the high byte); float images are refused."""
    from PIL import Image

    if img.mode == "F":
        raise ValueError("32-bit float images (Pillow mode F) are not supported; save them as 8-bit")
    if img.mode.startswith("I"):
        values = np.clip(np.asarray(img, dtype=np.int64), 0, 65535) >> 8
        return Image.fromarray(values.astype(np.uint8), mode="L")
    return img


def decode(path: str, channels: int | None, size: tuple[int, int] | None):
    """(uint8 [C, H, W], its native channel count, its native (H, W)) of one image file;
    `channels` / `size` convert and resize it (None keeps them)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.load()  # Pillow decodes lazily: a truncated file fails here, not later
            native_c, native_hw = _channels_of(img), (img.height, img.width)
            img = _to_8bit(img).convert("L" if (channels or native_c) == 1 else "RGB")
            if size is not None and (img.height, img.width) != tuple(size):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except Exception as e:  # noqa: BLE001 - Pillow fails in many ways on a bad file
        text = " ".join(str(e).replace(f" {path!r}", "").split()) or type(e).__name__  # the path once
        raise UserError(f"cannot read the image {path}: {text}") from None
    chw = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)  # [H, W] / [H, W, C] -> [C, H, W]
    return chw, native_c, native_hw


def _fingerprint(part: Part) -> list:
    """What the decoded array depends on, per file: its name, size and mtime."""
    out, skip = [], len(os.path.join(str(part.root), ""))
    for file in part.files:
        try:
            st = os.stat(file)
        except OSError as e:
            raise UserError(f"cannot read the image {file}: {e.strerror or e}") from None
        out.append((file[skip:], st.st_size, st.st_mtime_ns))
    return out


def _check_same(first: str, path: str, got, want, channels, size) -> None:
    """Refuse an image whose channel count or size differs from the first one's (without a
    data.channels / data.image_size that would convert them all)."""
    (c, hw), (c0, hw0) = got, want
    if channels is None and c != c0:
        name = {1: "grey (1 channel)", 3: "colour (3 channels)"}
        raise UserError(f"mixed channel counts: {path} is {name[c]}, but {first} is {name[c0]}; set data.channels=1 "
                        f"or 3 to convert every image")
    if size is None and hw != hw0:
        raise UserError(f"mixed image sizes: {path} is {hw[0]}x{hw[1]} (HxW), but {first} is {hw0[0]}x{hw0[1]}; "
                        f"set data.image_size=<size> or [h, w] to resize every image")


def images_of(part: Part, channels: int | None, image_size) -> tuple[np.ndarray, str]:
    """The part's images as uint8 [N, C, H, W], memory-mapped from the cache (decoded first
    if the cache has no entry for these files and options); and the entry's key."""
    size = None if image_size is None else ((image_size, image_size) if isinstance(image_size, int)
                                            else tuple(int(s) for s in image_size))
    key = cache.key_of("folder", str(part.root.resolve()), _fingerprint(part), channels, size)
    path = cache.cache_path("folder", key)
    cached = cache.open_cached(path, len(part.files))
    if cached is not None:
        log.info("%s: %d images memory-mapped from the cache %s", part.root, len(part.files), path)
        return cached, key
    first, c0, hw0 = decode(part.files[0], channels, size)
    log.info("%s: decoding %d images (%s) into the cache %s, once", part.root, len(part.files),
             "x".join(map(str, first.shape)), path)

    def rows():
        yield first[None]
        for file in part.files[1:]:
            chw, c, hw = decode(file, channels, size)
            _check_same(part.files[0], file, (c, hw), (c0, hw0), channels, size)
            yield chw[None]

    return cache.write_cached(path, (len(part.files), *first.shape), rows), key
