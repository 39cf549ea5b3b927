"""Your own data: `data=folder` (image files) and `data=npz` (arrays) as an ImageDataset.

The splits are cut as for the built-in datasets, by row indices: a test split (the folder's
test/, the file's test arrays, else a held-out `test_size` of the images, the same for every
run seed, like MNIST's fixed test set), the class filter, `max_*_samples` (the first K), then
the seeded validation split. Rows of a memory-mapped source stay memory-mapped: a subset is
written once into the cache (`cache.arrange`), never copied into this process's memory.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from aerun.data import arrays, cache, folder
from aerun.data.splits import ImageDataset, Source, Split, check_count, filter_key, holdout_indices, kept_classes
from aerun.errors import UserError

log = logging.getLogger("aerun.data")

OWN_DATASETS = ("folder", "npz")
TEST_SPLIT_SEED = 0  # the held-out test split does not change with the run's seed


def read_source(name: str, path, channels=None, image_size=None, images_key: str = "images",
                labels_key: str = "labels", class_names_key: str = "class_names") -> tuple[Source, Source | None]:
    """(train source, test source or None) of a folder or an array file."""
    if name == "npz":
        return arrays.read(path, images_key, labels_key, class_names_key)
    train, test = folder.scan(path)
    parts = [train] if test is None else [train, test]
    sources = []
    for part in parts:
        images, key = folder.images_of(part, channels, image_size)
        sources.append(Source(images, part.labels, part.classes, key))
    return sources[0], (sources[1] if test is not None else None)


def load_own_dataset(name: str, path, *, seed: int = 0, val_size: float = 0.1, test_size: float = 0.1,
                     max_train_samples: int | None = None, max_test_samples: int | None = None,
                     include_classes=None, exclude_classes=None, filter_test: bool = True,
                     **read_options) -> ImageDataset:
    """The ImageDataset of a folder or array file (`read_options`: `read_source`'s keyword arguments).

    `filter_test=False` applies data.include_classes / exclude_classes to train and val only, so
    the test split keeps every class (the one-class anomaly protocol: train on include_classes=[k],
    score the test images of the other classes as anomalies)."""
    source, test = read_source(name, path, **read_options)
    where = f"data.path={path}"
    keep = kept_classes(source.classes, include_classes, exclude_classes, where)
    if test is None:
        pool, test_idx = holdout_indices(len(source), test_size, TEST_SPLIT_SEED, "test_size")
        if len(test_idx) == 0:
            raise UserError(f"test_size={test_size} of {len(source)} images holds out none for the test split; "
                            f"raise data.test_size (a count >= 1 or a larger fraction)")
        test = source
    else:
        pool, test_idx = np.arange(len(source)), np.arange(len(test))
    if keep is not None:
        key = filter_key(include_classes, exclude_classes)
        pool = _of_classes(source, pool, keep, key, "training")
        if filter_test:
            test_idx = _of_classes(test, test_idx, keep, key, "test")
    pool, test_idx = _first(pool, max_train_samples, "max_train_samples"), _first(test_idx, max_test_samples,
                                                                                 "max_test_samples")
    kept, held = holdout_indices(len(pool), val_size, seed)
    train, val, test_split = materialize([(source, pool[kept]), (source, pool[held]), (test, test_idx)])
    mapped = " (memory-mapped)" if source.key is not None else ""
    log.info("loaded %s from %s: %d train, %d val, %d test%s, %s", name, path, len(train), len(val), len(test_split),
             mapped, f"{len(source.classes)} classes" if source.classes else "no labels")
    return ImageDataset(name=name, train=train, val=val, test=test_split, classes=list(source.classes))


def _of_classes(source: Source, idx: np.ndarray, keep: list[int], key: str, what: str) -> np.ndarray:
    idx = idx[np.isin(source.labels[idx], keep)]
    if len(idx) == 0:
        raise UserError(f"{key}: leaves no {what} image (the classes it keeps have none in the {what} split)")
    return idx


def _first(idx: np.ndarray, k: int | None, what: str) -> np.ndarray:
    if k is None:
        return idx
    check_count(k, what)
    return idx[:k]


def materialize(pieces: list[tuple[Source, np.ndarray]]) -> list[Split]:
    """A Split per (source, row indices). In-memory rows are copied; all the rows of a
    memory-mapped source in order are that source itself; other rows of memory-mapped
    sources are arranged into one cached file. Images are torch.from_numpy views either way."""
    images: list[np.ndarray | None] = [None] * len(pieces)
    to_arrange = []
    for i, (source, idx) in enumerate(pieces):
        if source.key is None:
            images[i] = source.images[idx]  # [K, C, H, W], a copy
        elif len(idx) == len(source) and np.array_equal(idx, np.arange(len(source))):
            images[i] = source.images
        else:
            to_arrange.append(i)
    if any(source.key is not None for source, _ in pieces):
        cache.reuse_freed_heap()
    if to_arrange:
        arranged = cache.arrange([(pieces[i][0].images, pieces[i][0].key, pieces[i][1]) for i in to_arrange])
        for i, array in zip(to_arrange, arranged):
            images[i] = array
    return [Split(cache.tensor_of(array), torch.from_numpy(source.labels[idx].astype(np.int64)))
            for array, (source, idx) in zip(images, pieces)]


def check_own(name: str, path, include_classes=None, exclude_classes=None, images_key: str = "images") -> None:
    """What the CLI checks before it makes a run directory: the path, the layout (no image
    decoded) and, for a folder, the class filter."""
    if name == "npz":
        arrays.check(path, images_key)
        return
    train, _ = folder.scan(path)
    kept_classes(train.classes, include_classes, exclude_classes, f"data.path={path}")
