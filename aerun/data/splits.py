"""Splits of a dataset: two tensors each, the seeded held-out splits, subsets and class filters."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from aerun.errors import UserError

NO_LABEL = -1  # the label of every image of an unlabelled dataset (its `classes` is [])


@dataclass
class Split:
    images: torch.Tensor  # uint8 [N, C, H, W] (in memory, or a view of a memory-mapped file)
    labels: torch.Tensor  # int64 [N]; NO_LABEL for unlabelled data

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device) -> Split:
        # Tensor.to on the device it is already on returns the tensor itself: on the CPU a
        # memory-mapped split stays memory-mapped (nothing is read until a batch needs it).
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class Source:
    """The images a folder or an array file holds, before they are split."""

    images: np.ndarray  # uint8 [N, C, H, W], in memory or memory-mapped
    labels: np.ndarray  # int64 [N]; NO_LABEL for unlabelled data
    classes: list[str]  # [] for unlabelled data
    key: str | None = None  # the cache key of memory-mapped images (None: they are in memory)

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class ImageDataset:
    name: str  # one of DATASET_NAMES
    train: Split
    val: Split
    test: Split
    classes: list[str]  # every class name, label k is classes[k]; [] for unlabelled data

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        c, h, w = self.train.images.shape[1:]
        return (c, h, w)

    @property
    def has_labels(self) -> bool:
        """Whether the images have classes (a flat folder or an array file without labels has none)."""
        return bool(self.classes)

    def to(self, device) -> ImageDataset:
        """A copy with every tensor on `device`; images stay uint8 (4x less memory than float)."""
        return dataclasses.replace(
            self, train=self.train.to(device), val=self.val.to(device), test=self.test.to(device)
        )


def first(split: Split, k: int | None, what: str) -> Split:
    """The first `k` images of `split` (all of them for None)."""
    if k is None:
        return split
    check_count(k, what)
    if k >= len(split):
        return split
    # clone so the full decoded arrays can be freed
    return Split(split.images[:k].clone(), split.labels[:k].clone())


def check_count(k, what: str) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"{what}={k!r} is invalid: give a positive number of images or null for all")


def holdout_indices(n: int, size: float, seed: int, key: str = "val_size") -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) sorted indices of `n` images: `size` < 1 is a fraction, >= 1 a count; a
    seeded choice, so the same seed holds out the same images. Sorted: each part keeps the
    files' order (and reads a memory-mapped file front to back)."""
    if isinstance(size, bool) or not isinstance(size, (int, float)) or not size >= 0:
        raise UserError(f"{key}={size!r} is invalid: give a fraction in [0, 1) or a count >= 1")
    # round, not floor: 0.29 * 100 is 28.999... in floating point
    n_out = int(round(size * n)) if size < 1 else int(size)
    if n_out >= n:
        raise UserError(
            f"{key}={size} takes {n_out} of the {n} training images and leaves none for training; "
            f"lower data.{key}"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    return np.sort(perm[n_out:]), np.sort(perm[:n_out])


def split_validation(train: Split, val_size: float, seed: int) -> tuple[Split, Split]:
    """(train, val): `val_size` < 1 is a fraction of the images, >= 1 a count; a seeded choice."""
    keep, held = holdout_indices(len(train), val_size, seed)
    keep, held = torch.from_numpy(keep), torch.from_numpy(held)
    return (
        Split(train.images[keep], train.labels[keep]),
        Split(train.images[held], train.labels[held]),
    )


def class_numbers(values, classes: list[str], key: str) -> list[int]:
    """The class numbers `values` names: a value equal to a class name is that class, else an
    integer is a class number. Refuses (one line, listing the valid ones) a value that is neither."""
    found = []
    for value in values:
        text = str(value)
        if text in classes:
            found.append(classes.index(text))
        elif not isinstance(value, bool) and isinstance(value, int) and 0 <= value < len(classes):
            found.append(value)
        else:
            listed = ", ".join(f"{i}={name!r}" if name != str(i) else name for i, name in enumerate(classes))
            raise UserError(f"{key}: no class {value!r}; the classes are {listed} (a name or a number)")
    return sorted(set(found))


def filter_key(include, exclude) -> str:
    """The key a class filter's errors name."""
    return "data.include_classes" if include is not None else "data.exclude_classes"


def kept_classes(classes: list[str], include, exclude, where: str) -> list[int] | None:
    """The class numbers data.include_classes / data.exclude_classes keep; None when both are null."""
    if include is None and exclude is None:
        return None
    key = filter_key(include, exclude)
    if include is not None and exclude is not None:
        raise UserError("data.include_classes and data.exclude_classes: give one of them, not both")
    if not classes:
        raise UserError(f"{key}: {where} has no labels, so there are no classes to choose from")
    named = class_numbers(list(include if include is not None else exclude), classes, key)
    keep = named if include is not None else [k for k in range(len(classes)) if k not in named]
    if not keep:
        raise UserError(f"{key}: excludes every class, which leaves no image")
    return keep


def keep_classes(split: Split, keep: list[int] | None, what: str, key: str) -> Split:
    """The images of `split` whose label is in `keep` (their labels keep their class numbers)."""
    if keep is None:
        return split
    mask = torch.isin(split.labels, torch.as_tensor(keep, dtype=split.labels.dtype))
    if not bool(mask.any()):
        raise UserError(f"{key}: the {what} split has no image of the classes it keeps")
    idx = mask.nonzero().squeeze(1)
    return Split(split.images[idx], split.labels[idx])
