"""Splits of a dataset: two tensors each, the seeded validation split, and subsets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from aerun.errors import UserError


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


def first(split: Split, k: int | None, what: str) -> Split:
    """The first `k` images of `split` (all of them for None)."""
    if k is None:
        return split
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"{what}={k!r} is invalid: give a positive number of images or null for all")
    if k >= len(split):
        return split
    # clone so the full decoded arrays can be freed
    return Split(split.images[:k].clone(), split.labels[:k].clone())


def split_validation(train: Split, val_size: float, seed: int) -> tuple[Split, Split]:
    """(train, val): `val_size` < 1 is a fraction of the images, >= 1 a count; a seeded choice."""
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
