"""`dataset_from_config` / `load_dataset`: a dataset as uint8 tensors, split into train/val/test.

MNIST, FashionMNIST and CIFAR-10 are small enough to decode once into memory, so there is
no `Dataset`/`DataLoader`: a split is two tensors, and the training loop slices batches from
them. The files are read in torchvision's on-disk layout (and the other places users keep
them) with our own readers, so torchvision is only needed for `download=True`. Your own
data (`data=folder`, `data=npz`) is read by `own`, memory-mapped from a cache when large.
No model code and no config objects: everything takes plain arguments.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from aerun.data import cifar, idx
from aerun.data.own import OWN_DATASETS, check_own, load_own_dataset
from aerun.data.splits import ImageDataset, filter_key, first, keep_classes, kept_classes, split_validation
from aerun.errors import UserError

log = logging.getLogger("aerun.data")

# the datasets read by name from data.root (OWN_DATASETS, "folder" and "npz", read data.path)
DATASET_NAMES = BUILTIN_DATASETS = ("mnist", "fashion_mnist", "cifar10")
_IDX_FOLDERS = {"mnist": ("MNIST", idx.MNIST_CLASSES), "fashion_mnist": ("FashionMNIST", idx.FASHION_MNIST_CLASSES)}


def dataset_from_config(d: dict, seed: int, root: str | os.PathLike | None = None,
                        max_test_samples: int | None = None, download: bool | None = None,
                        filter_test: bool = True) -> ImageDataset:
    """The dataset a run's plain `data` config names (`root` / `max_test_samples` / `download`
    override the config's own: the commands that read a run back pass where the data is now;
    for data=folder / npz, `root` is the new data.path).

    `filter_test=False` leaves the test split unfiltered by data.include_classes /
    exclude_classes (train and val are still filtered): the one-class anomaly protocol trains
    on include_classes=[k] and scores the test images of every other class as anomalies."""
    filters = dict(include_classes=d.get("include_classes"), exclude_classes=d.get("exclude_classes"),
                   filter_test=filter_test)
    max_test = max_test_samples or d.get("max_test_samples")
    if d["name"] in OWN_DATASETS:
        path = root if root is not None else d.get("path")
        keys = ("channels", "image_size", "images_key", "labels_key", "class_names_key")
        read_options = {k: d[k] for k in keys if d.get(k) is not None}
        return load_own_dataset(d["name"], path, seed=seed, val_size=d.get("val_size", 0.1),
                                test_size=d.get("test_size", 0.1), max_train_samples=d.get("max_train_samples"),
                                max_test_samples=max_test, **filters, **read_options)
    return load_dataset(d["name"], root if root is not None else d["root"],
                        download=d.get("download", False) if download is None else download,
                        val_size=d.get("val_size", 0.1), seed=seed, max_train_samples=d.get("max_train_samples"),
                        max_test_samples=max_test, **filters)


def check_config_available(d) -> None:
    """`check_available` for a (composed or plain) `data` config; for data=folder / npz the
    path, its layout and a folder's class filter (nothing decoded)."""
    name = getattr(d.name, "value", d.name) if hasattr(d, "name") else d["name"]
    if name in OWN_DATASETS:
        include, exclude = d.get("include_classes"), d.get("exclude_classes")
        check_own(name, d.get("path"), None if include is None else list(include),
                  None if exclude is None else list(exclude), d.get("images_key") or "images")
        return
    check_available(name, d["root"], d["download"])
    _check_builtin_filter(name, d.get("include_classes"), d.get("exclude_classes"))


def _check_builtin_filter(name: str, include, exclude) -> None:
    classes = {"cifar10": cifar.CLASSES, **{k: v[1] for k, v in _IDX_FOLDERS.items()}}[name]
    kept_classes(classes, None if include is None else list(include), None if exclude is None else list(exclude),
                 f"data={name}")


def check_available(name: str, root: str | os.PathLike, download: bool = False) -> None:
    """Refuse (UserError) a dataset whose files are not under `root`, without decoding anything:
    what the CLI asks before it makes a run directory."""
    if download:
        return
    root = Path(root).expanduser()
    if name == "cifar10":
        files, absent = cifar.find(root)
        if files is None:
            raise UserError(cifar.missing_message(root, absent, download))
        files.close()
    elif name in _IDX_FOLDERS:
        folder = _IDX_FOLDERS[name][0]
        found, missing, directory = idx.locate(root, folder)
        if missing:
            raise UserError(idx.missing_message(root, folder, missing, directory, download))


def load_dataset(
    name: str,
    root: str | os.PathLike,
    *,
    download: bool = False,
    val_size: float = 0.1,
    seed: int = 0,
    max_train_samples: int | None = None,
    max_test_samples: int | None = None,
    include_classes=None,
    exclude_classes=None,
    filter_test: bool = True,
) -> ImageDataset:
    """Decode the built-in dataset `name` from under `root` into CPU uint8 tensors.

    `val_size` < 1 is a fraction of the training images, >= 1 a count; the split is a
    seeded permutation, so the same seed gives the same split. `include_classes` /
    `exclude_classes` (class names or numbers) keep some classes, in train, val and test
    (not test with `filter_test=False`); labels keep their numbers. `max_train_samples` and
    `max_test_samples` keep the first K images (of train before the split, of test) for
    quick runs. With `download=True`, missing files are fetched with torchvision first.
    """
    if name in OWN_DATASETS:  # root is the folder or file (data.path); default read options
        return load_own_dataset(name, root, seed=seed, val_size=val_size, max_train_samples=max_train_samples,
                                max_test_samples=max_test_samples, include_classes=include_classes,
                                exclude_classes=exclude_classes, filter_test=filter_test)
    if name not in BUILTIN_DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    root = Path(root).expanduser()
    if name == "cifar10":
        train, test, classes, source = _load_cifar10(root, download)
    else:
        train, test, classes, source = _load_idx(root, name, download)
    keep = kept_classes(list(classes), include_classes, exclude_classes, f"data={name}")
    train = keep_classes(train, keep, "training", filter_key(include_classes, exclude_classes))
    if filter_test:
        test = keep_classes(test, keep, "test", filter_key(include_classes, exclude_classes))
    train = first(train, max_train_samples, "max_train_samples")
    test = first(test, max_test_samples, "max_test_samples")
    train, val = split_validation(train, val_size, seed)
    log.info("loaded %s from %s: %d train, %d val, %d test", name, source, len(train), len(val), len(test))
    return ImageDataset(name=name, train=train, val=val, test=test, classes=list(classes))


def _load_idx(root: Path, name: str, download: bool):
    folder, classes = _IDX_FOLDERS[name]
    found, missing, directory = idx.locate(root, folder)
    if missing and download:
        _download(folder, folder, root)
        found, missing, directory = idx.locate(root, folder)
    if missing:
        raise UserError(idx.missing_message(root, folder, missing, directory, download))
    train, test = idx.read_splits(found)
    return train, test, classes, directory


def _load_cifar10(root: Path, download: bool):
    files, absent = cifar.find(root)
    if files is None and download:
        _download("CIFAR10", "CIFAR-10", root)
        files, absent = cifar.find(root)
    if files is None:
        raise UserError(cifar.missing_message(root, absent, download))
    source = str(files.folder)
    train, test, classes = cifar.read_splits(files)
    return train, test, classes, source


def _download(torchvision_class: str, display: str, root: Path) -> None:
    """Fetch the files with torchvision (imported here only: reading never needs it)."""
    try:
        import torchvision.datasets

        getattr(torchvision.datasets, torchvision_class)(str(root), train=True, download=True)
    except Exception as e:  # no network, a full disk, a moved mirror: all the user's to fix
        text = cifar.reason(e)
        if len(text) > 300:
            text = text[:300] + "..."
        raise UserError(
            f"could not download {display} into {root}: {text}; check the network "
            "or put the files there yourself"
        ) from None
