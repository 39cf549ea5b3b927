"""Your own data: `data=folder` (PNG, JPEG, BMP, WebP written by Pillow) and `data=npz` (np.savez,
np.save), the memory-mapped cache, class filters on every labelled dataset, the refusals, and
whole CLI runs on a labelled and an unlabelled folder."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from aerun.data import check_config_available, dataset_from_config, load_dataset
from aerun.data import cache as data_cache
from aerun.errors import UserError

try:  # tests/ as a package (rootdir on sys.path) or as a plain folder
    from tests.conftest import compose, run_aerun
    from tests.datasets_fixture import make_mnist_like
except ImportError:
    from conftest import compose, run_aerun
    from datasets_fixture import make_mnist_like

REAL_OPEN = Image.open
SUFFIX = {"png": ".png", "jpeg": ".jpg", "bmp": ".bmp", "webp": ".webp"}


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("AERUN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "data"


def one_line(exc_info, *fragments: str) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def pixels(rng, n: int, size=(8, 8), channels: int = 1) -> np.ndarray:
    """uint8 [n, H, W] or [n, H, W, 3]: smooth enough that lossy formats keep them close."""
    base = rng.integers(40, 216, size=(n, 1, 1, channels))
    ramp = np.linspace(-30, 30, size[1])[None, None, :, None]
    images = np.clip(base + ramp + np.zeros((n, *size, channels)), 0, 255).astype(np.uint8)
    return images[..., 0] if channels == 1 else images


def write(folder: Path, images: np.ndarray, fmt: str = "png", prefix: str = "img") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, array in enumerate(images):
        path = folder / f"{prefix}{i:03d}{SUFFIX[fmt]}"
        Image.fromarray(array).save(path, **({"lossless": True} if fmt == "webp" else {}))
        paths.append(path)
    return paths


def class_folder(root: Path, classes=("cat", "dog", "emu"), n: int = 10, fmt: str = "png", channels: int = 1,
                 seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    made = {}
    for name in classes:
        made[name] = pixels(rng, n, channels=channels)
        write(root / name, made[name], fmt)
    return made


def folder_config(path, **extra) -> dict:
    return {"name": "folder", "path": str(path), "val_size": 0, "test_size": 0.2, **extra}


def all_images(ds) -> torch.Tensor:
    return torch.cat([ds.train.images, ds.val.images, ds.test.images])


# --- folders ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "jpeg", "bmp", "webp"])
def test_class_folders_in_every_format(tmp_path, fmt):
    rgb = fmt in ("jpeg", "webp")  # WebP has no grey mode: Pillow stores grey as RGB
    made = class_folder(tmp_path / "data", fmt=fmt, channels=3 if rgb else 1)
    ds = dataset_from_config(folder_config(tmp_path / "data", val_size=3), seed=0)
    assert ds.classes == ["cat", "dog", "emu"] and ds.has_labels
    assert ds.image_shape == ((3, 8, 8) if rgb else (1, 8, 8)) and ds.train.images.dtype == torch.uint8
    assert (len(ds.train), len(ds.val), len(ds.test)) == (21, 3, 6)
    labels = torch.cat([ds.train.labels, ds.val.labels, ds.test.labels])
    assert torch.bincount(labels).tolist() == [10, 10, 10]
    # each image came back with its own label and pixels (JPEG within its loss)
    for split in (ds.train, ds.val, ds.test):
        for image, label in zip(split.images, split.labels):
            expected = made[ds.classes[label]]
            expected = expected.transpose(0, 3, 1, 2) if expected.ndim == 4 else expected[:, None]
            error = np.abs(expected.astype(int) - image.numpy().astype(int)).max(axis=(1, 2, 3)).min()
            assert error <= (12 if fmt == "jpeg" else 0)


def test_flat_folder_has_no_labels(tmp_path):
    write(tmp_path / "flat", pixels(np.random.default_rng(0), 20))
    ds = dataset_from_config(folder_config(tmp_path / "flat", val_size=4, test_size=4), seed=0)
    assert ds.classes == [] and not ds.has_labels
    assert (len(ds.train), len(ds.val), len(ds.test)) == (12, 4, 4)
    with pytest.raises(UserError) as info:  # 0.01 of 20 images rounds to none
        dataset_from_config(folder_config(tmp_path / "flat", test_size=0.01), seed=0)
    one_line(info, "test_size=0.01 of 20 images holds out none")
    assert set(all_images(ds).shape[1:]) == {1, 8} and (torch.cat([ds.train.labels, ds.test.labels]) == -1).all()


def test_train_and_test_subfolders_give_the_test_split(tmp_path):
    class_folder(tmp_path / "d" / "train", classes=("a", "b", "c"), n=6)
    class_folder(tmp_path / "d" / "test", classes=("a", "c"), n=3, seed=1)  # a class may be missing from test
    ds = dataset_from_config(folder_config(tmp_path / "d", val_size=2), seed=0)
    assert ds.classes == ["a", "b", "c"] and (len(ds.train), len(ds.val), len(ds.test)) == (16, 2, 6)
    assert sorted(set(ds.test.labels.tolist())) == [0, 2]  # test's "c" is class 2 of train, not 1
    write(tmp_path / "f" / "train", pixels(np.random.default_rng(0), 6))
    write(tmp_path / "f" / "test", pixels(np.random.default_rng(1), 3))
    flat = dataset_from_config(folder_config(tmp_path / "f", val_size=0), seed=0)
    assert not flat.has_labels and (len(flat.train), len(flat.test)) == (6, 3)


def test_val_split_follows_the_seed_the_test_split_does_not_and_data_root_moves_the_data(tmp_path):
    import shutil

    class_folder(tmp_path / "d", n=10)
    a, b = (dataset_from_config(folder_config(tmp_path / "d", val_size=5), seed) for seed in (1, 2))
    assert torch.equal(a.test.images, b.test.images) and not torch.equal(a.val.images, b.val.images)
    shutil.move(tmp_path / "d", tmp_path / "moved")  # a run read back with data.root=<where it is now>
    moved = dataset_from_config(folder_config(tmp_path / "d", val_size=5), 1, root=str(tmp_path / "moved"))
    assert torch.equal(moved.val.images, a.val.images)


def test_grey_and_rgb_are_inferred_and_converted(tmp_path):
    rgb = pixels(np.random.default_rng(0), 6, channels=3)
    write(tmp_path / "rgb", rgb)
    assert dataset_from_config(folder_config(tmp_path / "rgb"), 0).image_shape == (3, 8, 8)
    grey = dataset_from_config(folder_config(tmp_path / "rgb", channels=1), 0)
    expected = np.asarray([np.asarray(Image.fromarray(a).convert("L")) for a in rgb])[:, None]  # Pillow's luma
    assert sorted(map(bytes, all_images(grey).numpy())) == sorted(map(bytes, expected))
    write(tmp_path / "grey", pixels(np.random.default_rng(0), 6))
    three = all_images(dataset_from_config(folder_config(tmp_path / "grey", channels=3), 0))
    assert three.shape[1] == 3 and torch.equal(three[:, 0], three[:, 1]) and torch.equal(three[:, 0], three[:, 2])


def test_image_size_resizes_every_image(tmp_path):
    rng = np.random.default_rng(0)
    write(tmp_path / "d", pixels(rng, 4, size=(8, 8)), prefix="a")
    write(tmp_path / "d", pixels(rng, 4, size=(10, 6)), prefix="b")
    assert dataset_from_config(folder_config(tmp_path / "d", image_size=12), 0).image_shape == (1, 12, 12)
    assert dataset_from_config(folder_config(tmp_path / "d", image_size=[4, 6]), 0).image_shape == (1, 4, 6)


def test_mixed_sizes_and_channel_counts_are_refused_naming_the_file(tmp_path, cache_dir):
    rng = np.random.default_rng(0)
    write(tmp_path / "sizes", pixels(rng, 3), prefix="a")
    write(tmp_path / "sizes", pixels(rng, 1, size=(10, 6)), prefix="b")
    with pytest.raises(UserError) as info:
        dataset_from_config(folder_config(tmp_path / "sizes"), 0)
    one_line(info, "mixed image sizes", "b000.png is 10x6", "a000.png is 8x8", "data.image_size")
    write(tmp_path / "chan", pixels(rng, 3), prefix="a")
    write(tmp_path / "chan", pixels(rng, 2, channels=3), prefix="b")
    with pytest.raises(UserError) as info:
        dataset_from_config(folder_config(tmp_path / "chan"), 0)
    one_line(info, "mixed channel counts", "b000.png is colour (3 channels)", "data.channels=1")
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(("folder", ".folder"))]  # nothing written


def test_split_tensors_are_memory_mapped_from_the_cache_and_stay_so_on_cpu(tmp_path, cache_dir):
    class_folder(tmp_path / "d", n=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's read-only-array warning is not the user's concern
        ds = dataset_from_config(folder_config(tmp_path / "d", val_size=5), 0)
    moved = ds.to(torch.device("cpu"))
    for split, same in ((ds.train, moved.train), (ds.val, moved.val), (ds.test, moved.test)):
        assert split.images.data_ptr() == same.images.data_ptr()  # .to(cpu) copies nothing
        assert mapped_file(split.images).parent == cache_dir


def mapped_file(tensor: torch.Tensor) -> Path:
    """The file whose memory map holds the tensor's data (from /proc/self/maps)."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        low, high = (int(x, 16) for x in fields[0].split("-"))
        if low <= address < high and len(fields) >= 6 and fields[5].startswith("/"):
            return Path(fields[5])
    raise AssertionError("the tensor is not in a memory-mapped file")


# --- the cache ---------------------------------------------------------------------------------


def count_opens(monkeypatch) -> list:
    opened = []

    def open_(path, *args, **kwargs):
        opened.append(Path(path))
        return REAL_OPEN(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", open_)
    return opened


def test_second_load_reads_the_cache_and_changes_invalidate_it(tmp_path, monkeypatch):
    made = class_folder(tmp_path / "d", n=5)
    first = dataset_from_config(folder_config(tmp_path / "d"), 0)
    monkeypatch.setattr(Image, "open", lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded again")))
    second = dataset_from_config(folder_config(tmp_path / "d"), 0)
    assert torch.equal(all_images(first), all_images(second)) and len(made) == 3
    opened = count_opens(monkeypatch)
    write(tmp_path / "d" / "cat", pixels(np.random.default_rng(5), 1), prefix="new")  # a file added
    assert len(all_images(dataset_from_config(folder_config(tmp_path / "d"), 0))) == 16 and len(opened) == 16
    (tmp_path / "d" / "dog" / "img000.png").unlink()  # removed
    assert len(all_images(dataset_from_config(folder_config(tmp_path / "d"), 0))) == 15 and len(opened) == 31
    dataset_from_config(folder_config(tmp_path / "d"), 0)
    assert len(opened) == 31  # unchanged: cached
    stamp = os.stat(tmp_path / "d" / "emu" / "img001.png")
    os.utime(tmp_path / "d" / "emu" / "img001.png", ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))  # touched
    dataset_from_config(folder_config(tmp_path / "d"), 0)
    assert len(opened) == 46
    dataset_from_config(folder_config(tmp_path / "d", channels=3), 0)  # other decode options: another entry
    assert len(opened) == 61


def test_a_leftover_temp_file_or_a_damaged_entry_is_never_read(tmp_path, cache_dir, monkeypatch):
    class_folder(tmp_path / "d", n=4)
    good = all_images(dataset_from_config(folder_config(tmp_path / "d"), 0)).clone()
    entry = next(cache_dir.glob("folder-*.npy"))
    # what a run killed mid-write leaves: a temp file beside a missing entry
    entry.rename(entry.with_name(f".{entry.name}.999-dead.tmp"))
    opened = count_opens(monkeypatch)
    assert torch.equal(all_images(dataset_from_config(folder_config(tmp_path / "d"), 0)), good) and len(opened) == 12
    entry.write_bytes(entry.read_bytes()[:100])  # a truncated entry under the real name: decoded again
    assert torch.equal(all_images(dataset_from_config(folder_config(tmp_path / "d"), 0)), good) and len(opened) == 24


def test_a_corrupt_image_is_named_and_leaves_no_cache_file(tmp_path, cache_dir):
    class_folder(tmp_path / "d", n=4)
    (tmp_path / "d" / "dog" / "img002.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(UserError) as info:
        dataset_from_config(folder_config(tmp_path / "d"), 0)
    one_line(info, "cannot read the image", str(tmp_path / "d" / "dog" / "img002.png"))
    assert not list(cache_dir.iterdir())  # no entry and no temp file
    good = (tmp_path / "d" / "dog" / "img001.png").read_bytes()
    (tmp_path / "d" / "dog" / "img002.png").write_bytes(good[:45])  # header whole, pixel data cut
    with pytest.raises(UserError) as info:
        dataset_from_config(folder_config(tmp_path / "d"), 0)
    message = one_line(info, "cannot read the image", "img002.png")
    assert message.count("img002.png") == 1


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("layout, expected", [
    ("empty", "has no images"),
    ("one_class", "one class: use a flat folder for unlabelled data or add classes"),
    ("missing", "no such folder"),
    ("both", "has both images (img000.png) and folders (cat/)"),
    ("empty_class", "class folder"),
])
def test_bad_folders_are_refused_before_a_run_starts(tmp_path, layout, expected):
    path = tmp_path / "d"
    if layout != "missing":
        path.mkdir()
    if layout in ("one_class", "both"):
        write(path / "cat", pixels(np.random.default_rng(0), 2))
    if layout == "both":
        write(path, pixels(np.random.default_rng(0), 1))
    if layout == "empty_class":
        class_folder(path, n=2)
        (path / "zebra").mkdir()
    for call in (lambda: check_config_available(folder_config(path)), lambda: dataset_from_config(folder_config(path), 0)):
        with pytest.raises(UserError) as info:
            call()
        one_line(info, expected)


# --- arrays -------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["NHW", "NCHW", "NHWC", "NCHW-rgb", "NHWC-rgb"])
def test_npz_layouts_dtypes_labels_and_names(tmp_path, layout):
    rng = np.random.default_rng(0)
    c = 3 if "rgb" in layout else 1
    nchw = rng.integers(0, 256, size=(30, c, 6, 5), dtype=np.uint8)
    stored = {"NHW": nchw[:, 0], "NCHW": nchw, "NHWC": nchw.transpose(0, 2, 3, 1)}[layout.split("-")[0]]
    labels = np.arange(30) % 3
    np.savez(tmp_path / "u8.npz", images=stored, labels=labels, class_names=np.array(["x", "y", "z"]))
    np.savez(tmp_path / "f32.npz", images=stored.astype(np.float32) / 255, labels=labels)
    for name, classes in (("u8.npz", ["x", "y", "z"]), ("f32.npz", ["0", "1", "2"])):
        ds = dataset_from_config({"name": "npz", "path": str(tmp_path / name), "val_size": 0, "test_size": 6}, 0)
        assert ds.classes == classes and ds.image_shape == (c, 6, 5) and len(ds.test) == 6
        got = {bytes(img.numpy()): int(lab) for s in (ds.train, ds.test) for img, lab in zip(s.images, s.labels)}
        assert got == {bytes(img): int(lab) for img, lab in zip(nchw, labels)}  # float / 255 rounds back exactly


def test_npz_with_own_key_names_and_its_own_test_arrays(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (20, 4, 4), dtype=np.uint8), y=np.arange(20) % 2,
             test_x=rng.integers(0, 256, (5, 4, 4), dtype=np.uint8), test_y=np.ones(5, dtype=np.int32))
    d = {"name": "npz", "path": str(tmp_path / "d.npz"), "val_size": 4, "images_key": "x", "labels_key": "y"}
    ds = dataset_from_config(d, 0)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (16, 4, 5) and ds.test.labels.tolist() == [1] * 5
    np.savez(tmp_path / "flat.npz", images=rng.integers(0, 256, (10, 4, 4), dtype=np.uint8))
    assert not dataset_from_config({"name": "npz", "path": str(tmp_path / "flat.npz"), "val_size": 0}, 0).has_labels


def test_npy_is_memory_mapped_and_floats_are_converted_once(tmp_path, cache_dir):
    images = np.random.default_rng(0).integers(0, 256, (40, 1, 5, 5), dtype=np.uint8)
    np.save(tmp_path / "u8.npy", images)
    ds = dataset_from_config({"name": "npz", "path": str(tmp_path / "u8.npy"), "val_size": 0, "test_size": 8}, 0)
    assert not ds.has_labels and mapped_file(ds.train.images).parent == cache_dir  # the split, arranged once
    ds = load_dataset("npz", tmp_path / "u8.npy", val_size=0)
    assert sorted(map(bytes, all_images(ds).numpy())) == sorted(map(bytes, images))
    np.save(tmp_path / "f.npy", images.transpose(0, 2, 3, 1).astype(np.float64) / 255)  # NHWC floats
    converted = load_dataset("npz", tmp_path / "f.npy", val_size=0)
    assert sorted(map(bytes, all_images(converted).numpy())) == sorted(map(bytes, images))
    assert len(list(cache_dir.glob("npy-*.npy"))) == 1


@pytest.mark.parametrize("arrays, expected", [
    ({"pixels": np.zeros((4, 4, 4), np.uint8)}, ["has no array 'images'", "it has: pixels", "data.images_key"]),
    ({"images": np.full((4, 4, 4), np.nan)}, ["64 NaN or infinite values"]),
    ({"images": np.linspace(-0.5, 2, 64).reshape(4, 4, 4)}, ["values in [-0.5, 2]", "expected floats in [0, 1]"]),
    ({"images": np.zeros((4, 3, 5, 3), np.uint8)}, ["shape [4, 3, 5, 3]: ambiguous"]),
    ({"images": np.zeros((4, 5, 5, 5), np.uint8)}, ["expected [N, H, W], [N, C, H, W] or [N, H, W, C]"]),
    ({"images": np.zeros((4, 4, 4), np.int64)}, ["is int64: expected uint8"]),
    ({"images": np.zeros((4, 4, 4), np.uint8), "labels": np.arange(3)}, ["'labels' must be 4 integers"]),
    ({"images": np.zeros((4, 4, 4), np.uint8), "labels": np.arange(4) - 1}, ["label -1"]),
    ({"images": np.zeros((4, 4, 4), np.uint8), "labels": np.arange(4), "class_names": np.array(["a"])},
     ["the labels go up to 3, but 'class_names' has 1 names"]),
    ({"images": np.array([np.zeros(3), "x"], dtype=object)}, ["Python objects", "can run code"]),
])
def test_bad_arrays_are_refused_in_one_line(tmp_path, arrays, expected):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(UserError) as info:
        dataset_from_config({"name": "npz", "path": str(tmp_path / "d.npz"), "val_size": 0}, 0)
    one_line(info, *expected)


def test_a_pickle_or_a_missing_file_is_refused(tmp_path):
    import pickle

    (tmp_path / "p.npy").write_bytes(pickle.dumps({"images": 1}))
    with pytest.raises(UserError) as info:
        dataset_from_config({"name": "npz", "path": str(tmp_path / "p.npy"), "val_size": 0}, 0)
    one_line(info, "pickled Python objects", "can run code")
    (tmp_path / "notes.npz").write_text("hello\n")  # numpy calls this a pickle too; it is not one
    with pytest.raises(UserError) as info:
        dataset_from_config({"name": "npz", "path": str(tmp_path / "notes.npz"), "val_size": 0}, 0)
    one_line(info, "is not a .npz file", "np.savez")
    assert "pickled" not in str(info.value)
    for path, expected in ((tmp_path / "nope.npz", "no such file"), (tmp_path, "is a folder")):
        with pytest.raises(UserError) as info:
            check_config_available({"name": "npz", "path": str(path)})
        one_line(info, expected)


# --- class filters --------------------------------------------------------------------------


def test_class_filters_on_mnist_keep_numbers_names_and_the_unfiltered_test_split(tmp_path):
    make_mnist_like(tmp_path, n_train=100, n_test=50)
    base = {"name": "mnist", "root": str(tmp_path), "val_size": 2, "download": False}
    ds = dataset_from_config({**base, "include_classes": [3]}, 0)
    assert ds.classes == [str(k) for k in range(10)]  # the full list: label 3 is still "3"
    for split in (ds.train, ds.val, ds.test):
        assert set(split.labels.tolist()) == {3}
    anomaly = dataset_from_config({**base, "include_classes": [3]}, 0, filter_test=False)
    assert set(anomaly.train.labels.tolist()) == {3} and len(set(anomaly.test.labels.tolist())) == 10
    ds = dataset_from_config({**base, "exclude_classes": ["0", 1]}, 0)
    assert not {0, 1} & set(torch.cat([ds.train.labels, ds.test.labels]).tolist())
    with pytest.raises(UserError) as info:
        check_config_available({**base, "include_classes": ["cat"]})
    one_line(info, "data.include_classes: no class 'cat'", "the classes are 0, 1, 2")
    with pytest.raises(UserError) as info:
        dataset_from_config({**base, "exclude_classes": list(range(10))}, 0)
    one_line(info, "excludes every class")


def test_class_filters_on_a_folder(tmp_path):
    class_folder(tmp_path / "d", n=10)
    ds = dataset_from_config(folder_config(tmp_path / "d", include_classes=["dog", 2]), 0)
    assert ds.classes == ["cat", "dog", "emu"] and set(torch.cat([ds.train.labels, ds.test.labels]).tolist()) == {1, 2}
    with pytest.raises(UserError) as info:
        check_config_available(folder_config(tmp_path / "d", include_classes=["zebra"]))
    one_line(info, "no class 'zebra'", "the classes are 0='cat', 1='dog', 2='emu'")
    write(tmp_path / "flat", pixels(np.random.default_rng(0), 4))
    with pytest.raises(UserError) as info:
        dataset_from_config(folder_config(tmp_path / "flat", exclude_classes=[0]), 0)
    one_line(info, "data.exclude_classes", "has no labels")


# --- the config -----------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, expected", [
    (["data=folder"], "data.path: is required with data=folder"),
    (["data.path=/x"], "data.path=/x: has no effect with data=mnist"),
    (["data.channels=3"], "data.channels=3: has no effect with data=mnist"),
    (["data=folder", "data.path=/x", "data.root=/y"], "data.root: has no effect with data=folder"),
    (["data=folder", "data.path=/x", "data.channels=2"], "data.channels: must be 1 (grey), 3 (RGB) or null"),
    (["data=folder", "data.path=/x", "data.image_size=[1,2,3]"], "data.image_size: must be null"),
    (["data=folder", "data.path=/x", "data.images_key=x"], "data.images_key=x: has no effect with data=folder"),
    (["data=folder", "data.path=/x", "data.test_size=0"], "data.test_size: must be > 0"),
    (["data=npz", "data.path=/x.npz", "data.image_size=8"], "data.image_size=8: has no effect with data=npz"),
    (["data=npz", "data.path=/x.npy", "data.labels_key=y"], "has no effect with a .npy file"),
    (["data.include_classes=[1]", "data.exclude_classes=[2]"], "give one of them, not both"),
])
def test_config_refuses_options_that_do_nothing(overrides, expected):
    from aerun.config import validate_train

    with pytest.raises(UserError) as info:
        validate_train(compose("train", overrides))
    one_line(info, expected)


def test_folder_and_npz_configs_compose_and_mnist_is_unchanged(tmp_path):
    from aerun.config import to_plain, validate_train

    cfg = compose("train", ["data=folder", f"data.path={tmp_path}", "data.image_size=[28,28]"])
    validate_train(cfg)
    assert to_plain(cfg)["data"]["root"] == str(tmp_path)  # the read-back commands find the data there
    validate_train(compose("train", ["data=npz", f"data.path={tmp_path}/d.npz", "data.include_classes=[cat]"]))
    plain = to_plain(compose("train", []))["data"]
    assert plain["path"] is None and plain["include_classes"] is None and plain["name"] == "mnist"


# --- whole runs ----------------------------------------------------------------------------------


def _cli_train(tmp_path, data_path: Path) -> Path:
    run = tmp_path / "run"
    proc = run_aerun("train", "data=folder", f"data.path={data_path}", "data.val_size=4", "data.test_size=6",
                     "model=linear_ae", "model.latent_dim=2", "trainer.max_epochs=1", "trainer.batch_size=8",
                     "trainer.device=cpu", "trainer.progress=false", f"hydra.run.dir={run}",
                     env={"OMP_NUM_THREADS": "1"})  # AERUN_CACHE: this test's, from the environment
    assert proc.returncode == 0, proc.stderr
    return run


def _cli(tmp_path, command, run, *extra):
    out = tmp_path / command
    proc = run_aerun(command, f"run={run}", "device=cpu", f"hydra.run.dir={out}", *extra, env={"OMP_NUM_THREADS": "1"})
    return out, proc


@pytest.mark.slow
def test_train_encode_generate_evaluate_on_a_labelled_folder_through_the_cli(tmp_path):
    class_folder(tmp_path / "d", n=10, channels=3)
    run = _cli_train(tmp_path, tmp_path / "d")
    out, proc = _cli(tmp_path, "encode", run, "encode.embedding=false")
    assert proc.returncode == 0, proc.stderr
    assert "coloured by class" in proc.stdout and (out / "latent.png").is_file()
    codes = np.load(out / "codes.npz")
    assert codes["codes"].shape == (6, 2) and set(codes["labels"].tolist()) <= {0, 1, 2}
    out, proc = _cli(tmp_path, "generate", run, "n=4", "sampler=normal")
    assert proc.returncode == 0, proc.stderr
    assert np.load(out / "samples.npy").shape == (4, 3, 8, 8)
    out, proc = _cli(tmp_path, "evaluate", run)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "evaluation.json").read_text())
    assert report["data"]["root"] == str(tmp_path / "d") and report["features"]["n_classes"] == 3
    assert "skipped" not in report["features"]


@pytest.mark.slow
def test_an_unlabelled_folder_plots_in_one_colour_skips_probes_and_refuses_finetune(tmp_path):
    from aerun.commands.encode import encode
    from aerun.commands.evaluate import evaluate_run
    from aerun.commands.generate import generate

    write(tmp_path / "d", pixels(np.random.default_rng(0), 30, channels=3))
    run = _cli_train(tmp_path, tmp_path / "d")
    encode(compose("encode", [f"run={run}", "device=cpu"]), tmp_path / "encode")
    assert (np.load(tmp_path / "encode" / "codes.npz")["labels"] == -1).all()
    hsv = np.asarray(Image.open(tmp_path / "encode" / "latent.png").convert("RGB").convert("HSV")).reshape(-1, 3)
    hues = hsv[hsv[:, 1] > 60, 0].astype(int)  # the coloured pixels: points only (text and axes are grey)
    assert hues.size and np.ptp(hues) <= 8  # one colour, no legend of others
    samples = generate(compose("generate", [f"run={run}", "device=cpu", "n=4"]), tmp_path / "generate")["samples"]
    assert np.load(samples).shape == (4, 3, 8, 8)
    features = evaluate_run(compose("evaluate", [f"run={run}", "device=cpu"]))["features"]
    assert "no labels" in features["skipped"] and features["model"]["probe_accuracy"] is None
    out, proc = _cli(tmp_path, "finetune", run)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "without labels" in proc.stderr and "needs labels" in proc.stderr
    assert not out.exists()  # refused before anything is trained or written
