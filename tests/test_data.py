"""aerun.data: reading the real on-disk formats, splits, errors, and denoising noise."""

from __future__ import annotations

import gzip
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from aerun.data import DATASET_NAMES, ImageDataset, Split, apply_noise, load_dataset
from aerun.errors import UserError

try:  # tests/ as a package (rootdir on sys.path) or as a plain folder
    from tests.datasets_fixture import cifar_arrays, make_cifar10, make_mnist_like, mnist_like_arrays
except ImportError:
    from datasets_fixture import cifar_arrays, make_cifar10, make_mnist_like, mnist_like_arrays

SHARED_MNIST = Path("/work/shared/datasets")


def read_idx_reference(path: Path) -> np.ndarray:
    """Expected contents, decoded independently of aerun: skip the header, keep the bytes."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data[4 + 4 * ndim :], dtype=np.uint8).reshape(dims)


def assert_one_line(message: str, *fragments: str) -> None:
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# --- MNIST-like round trips -------------------------------------------------------------


@pytest.mark.parametrize("gz, raw", [(True, False), (False, True), (True, True)], ids=["gz", "raw", "both"])
def test_mnist_round_trip(tmp_path, gz, raw):
    make_mnist_like(tmp_path, n_train=100, n_test=30, gz=gz, raw=raw, seed=3)
    ds = load_dataset("mnist", tmp_path, val_size=0)
    raw_dir = tmp_path / "MNIST" / "raw"
    suffix = "" if raw else ".gz"
    expected_images = read_idx_reference(raw_dir / f"train-images-idx3-ubyte{suffix}")
    expected_labels = read_idx_reference(raw_dir / f"train-labels-idx1-ubyte{suffix}")

    assert isinstance(ds, ImageDataset) and ds.name == "mnist"
    assert ds.image_shape == (1, 28, 28)
    assert ds.classes == [str(d) for d in range(10)]
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64
    assert ds.train.images.shape == (100, 1, 28, 28) and ds.test.images.shape == (30, 1, 28, 28)
    assert ds.train.images.is_contiguous() and ds.train.images.device.type == "cpu"
    assert len(ds.train) == 100 and len(ds.val) == 0 and len(ds.test) == 30
    np.testing.assert_array_equal(ds.train.images[:, 0].numpy(), expected_images)
    np.testing.assert_array_equal(ds.train.labels.numpy(), expected_labels)
    assert torch.bincount(ds.train.labels).tolist() == [10] * 10  # balanced


def test_prefers_the_uncompressed_file_when_both_exist(tmp_path):
    make_mnist_like(tmp_path, n_train=20, n_test=10, gz=True, raw=True)
    raw_dir = tmp_path / "MNIST" / "raw"
    # a broken .gz must not matter while the plain file is there
    (raw_dir / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    assert len(load_dataset("mnist", tmp_path, val_size=0).train) == 20


def test_fashion_mnist_reads_its_own_folder(tmp_path):
    make_mnist_like(tmp_path, folder="FashionMNIST", n_train=40, n_test=20)
    ds = load_dataset("fashion_mnist", tmp_path, val_size=0)
    assert ds.name == "fashion_mnist"
    assert len(ds.train) == 40 and len(ds.test) == 20
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot" and len(ds.classes) == 10
    with pytest.raises(UserError, match="MNIST not found"):
        load_dataset("mnist", tmp_path)


def _move_files(src: Path, dst: Path, rename=lambda name: name) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in list(src.iterdir()):
        f.rename(dst / rename(f.name))


@pytest.mark.parametrize("layout", ["root-is-MNIST", "root-is-raw", "flat-folder", "MNIST-without-raw",
                                    "kaggle-names"])
def test_mnist_files_are_found_where_users_keep_them(tmp_path, layout):
    """data.root may be torchvision's parent folder, the MNIST folder, its raw/, or any folder
    holding the four files (also under the mirrors' dotted names, train-images.idx3-ubyte)."""
    make_mnist_like(tmp_path / "tv", n_train=30, n_test=10)
    raw = tmp_path / "tv" / "MNIST" / "raw"
    root = {"root-is-MNIST": tmp_path / "tv" / "MNIST", "root-is-raw": raw}.get(layout, tmp_path / "mine")
    if layout == "flat-folder":
        _move_files(raw, root)
    elif layout == "MNIST-without-raw":
        _move_files(raw, root / "MNIST")
    elif layout == "kaggle-names":
        _move_files(raw, root, rename=lambda name: name.replace("-idx", ".idx"))
    ds = load_dataset("mnist", root, val_size=0)
    assert len(ds.train) == 30 and len(ds.test) == 10
    expected = read_idx_reference(next(p for p in tmp_path.rglob("train*images*")))
    np.testing.assert_array_equal(ds.train.images[:, 0].numpy(), expected)


def test_mnist_and_fashion_mnist_folders_are_never_mistaken_for_each_other(tmp_path):
    # the two datasets' files have the same names: pointing data.root at one's folder must
    # not let the other dataset read it
    make_mnist_like(tmp_path, folder="FashionMNIST", n_train=20, n_test=10)
    make_mnist_like(tmp_path / "m", folder="MNIST", n_train=30, n_test=10)
    for root in (tmp_path / "FashionMNIST", tmp_path / "FashionMNIST" / "raw"):
        with pytest.raises(UserError, match="MNIST not found"):
            load_dataset("mnist", root)
        assert len(load_dataset("fashion_mnist", root, val_size=0).train) == 20
    for root in (tmp_path / "m" / "MNIST", tmp_path / "m" / "MNIST" / "raw"):
        with pytest.raises(UserError, match="FashionMNIST not found"):
            load_dataset("fashion_mnist", root)
        assert len(load_dataset("mnist", root, val_size=0).train) == 30


def test_fixture_images_are_learnable_not_noise():
    # the class block is bright and the class mean images differ: a classifier has something to learn
    images, labels = mnist_like_arrays(200, np.random.default_rng(0))
    means = np.stack([images[labels == c].mean(0) for c in range(10)])  # [10, 28, 28]
    assert (means.reshape(10, -1).argmax(1) != means.reshape(10, -1).argmax(1)[0]).sum() >= 8
    assert (images > 150).mean() > 0.03
    cifar, cifar_labels = cifar_arrays(100, np.random.default_rng(0))
    assert cifar.shape == (100, 3, 32, 32) and np.bincount(cifar_labels).tolist() == [10] * 10


# --- CIFAR-10 ---------------------------------------------------------------------------


def test_cifar10_shapes_labels_and_classes(tmp_path):
    make_cifar10(tmp_path, n_per_batch=20, n_test=30, seed=1)
    ds = load_dataset("cifar10", tmp_path, val_size=0)
    assert ds.image_shape == (3, 32, 32)
    assert ds.train.images.shape == (100, 3, 32, 32) and ds.test.images.shape == (30, 3, 32, 32)
    assert ds.train.images.dtype == torch.uint8 and ds.train.labels.dtype == torch.int64
    assert ds.train.images.is_contiguous()
    assert ds.classes[:3] == ["airplane", "automobile", "bird"] and len(ds.classes) == 10
    assert set(ds.train.labels.tolist()) == set(range(10))

    # the channel planes come back as stored: data_batch_1 row 0 is R(1024) G(1024) B(1024)
    with open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    np.testing.assert_array_equal(ds.train.images[0].numpy(), batch[b"data"][0].reshape(3, 32, 32))
    assert ds.train.labels[:20].tolist() == batch[b"labels"]


def test_cifar_unpickler_admits_the_numpy1_names_of_the_real_files():
    import io

    from aerun.data.cifar import CifarUnpickler as _CifarUnpickler

    unpickler = _CifarUnpickler(io.BytesIO(b""), Path("x"))
    # the real files were pickled under numpy 1: numpy.core.multiarray._reconstruct
    assert callable(unpickler.find_class("numpy.core.multiarray", "_reconstruct"))
    assert unpickler.find_class("numpy", "ndarray") is np.ndarray
    with pytest.raises(UserError, match="builtins.eval"):
        unpickler.find_class("builtins", "eval")


class _Payload:
    """Unpickling this runs `command` through os.system: what a hostile batch file would do."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_malicious_pickle_is_refused_and_its_payload_never_runs(tmp_path):
    make_cifar10(tmp_path, n_per_batch=10, n_test=10)
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(f"touch {control}"), protocol=4))
    assert control.exists()  # the payload is real: plain pickle runs it

    marker = tmp_path / "pwned"
    evil = {b"data": _Payload(f"touch {marker}"), b"labels": [0]}
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps(evil, protocol=4))
    with pytest.raises(UserError) as info:
        load_dataset("cifar10", tmp_path)
    assert_one_line(str(info.value), "data_batch_3", f"{os.system.__module__}.system")  # posix.system
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"this is not a pickle", "unpickling failed"),
        (pickle.dumps([1, 2, 3], protocol=4), "expected a dict with b'data' and b'labels'"),
        (pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, protocol=4), "uint8 [N, 3072]"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, protocol=4), "2 integers"),
    ],
    ids=["garbage", "not-a-dict", "wrong-shape", "label-count"],
)
def test_corrupt_or_foreign_cifar_batch(tmp_path, content, expected):
    make_cifar10(tmp_path, n_per_batch=10, n_test=10)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(content)
    with pytest.raises(UserError) as info:
        load_dataset("cifar10", tmp_path)
    assert_one_line(str(info.value), "test_batch", expected)


def test_truncated_cifar_batch(tmp_path):
    make_cifar10(tmp_path, n_per_batch=10, n_test=10)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_5"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserError) as info:
        load_dataset("cifar10", tmp_path)
    assert_one_line(str(info.value), str(path), "is not a CIFAR-10 python batch")


def _cifar_release_archive(tmp_path: Path, archive: Path, drop: str | None = None) -> Path:
    """The release as downloaded: cifar-10-python.tar.gz holding cifar-10-batches-py/*."""
    import tarfile

    make_cifar10(tmp_path / "src", n_per_batch=10, n_test=20)
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for f in sorted((tmp_path / "src" / "cifar-10-batches-py").iterdir()):
            if f.name != drop:
                tar.add(f, arcname=f"cifar-10-batches-py/{f.name}")
    return tmp_path / "src" / "cifar-10-batches-py"


@pytest.mark.parametrize("root_is", ["folder-with-archive", "archive-itself"])
def test_cifar10_reads_the_release_archive_without_extracting_it(tmp_path, root_is):
    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    extracted = _cifar_release_archive(tmp_path, archive)
    ds = load_dataset("cifar10", archive.parent if root_is == "folder-with-archive" else archive, val_size=0)
    reference = load_dataset("cifar10", extracted, val_size=0)  # root = the extracted folder itself
    assert len(ds.train) == 50 and len(ds.test) == 20 and ds.classes == reference.classes
    assert torch.equal(ds.train.images, reference.train.images) and torch.equal(ds.test.labels, reference.test.labels)
    assert not (archive.parent / "cifar-10-batches-py").exists()  # nothing extracted to disk


def test_cifar10_archive_that_is_broken_or_incomplete(tmp_path):
    archive = tmp_path / "a" / "cifar-10-python.tar.gz"
    _cifar_release_archive(tmp_path, archive, drop="test_batch")
    with pytest.raises(UserError) as info:
        load_dataset("cifar10", archive.parent)
    assert_one_line(str(info.value), f"{archive} is not the CIFAR-10 python release", "test_batch")
    archive.write_bytes(archive.read_bytes()[:3000])  # truncated mid-download
    with pytest.raises(UserError) as info:
        load_dataset("cifar10", archive.parent)
    assert_one_line(str(info.value), str(archive), "download it again")


def test_malicious_pickle_inside_the_archive_is_refused(tmp_path):
    import tarfile

    marker = tmp_path / "pwned"
    extracted = _cifar_release_archive(tmp_path, tmp_path / "unused.tar.gz")
    (extracted / "data_batch_2").write_bytes(pickle.dumps({b"data": _Payload(f"touch {marker}"), b"labels": [0]},
                                                          protocol=4))
    archive = tmp_path / "evil" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(extracted, arcname="cifar-10-batches-py")
    with pytest.raises(UserError) as info:
        load_dataset("cifar10", archive.parent)
    assert_one_line(str(info.value), "cifar-10-python.tar.gz:cifar-10-batches-py/data_batch_2", "system")
    assert not marker.exists()


def test_missing_cifar_files_are_all_named(tmp_path):
    make_cifar10(tmp_path, n_per_batch=10, n_test=10)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_2").unlink()
    (folder / "batches.meta").unlink()
    with pytest.raises(UserError) as info:
        load_dataset("cifar10", tmp_path)
    message = str(info.value)
    assert_one_line(message, "CIFAR-10 not found", str(folder / "data_batch_2"), str(folder / "batches.meta"))
    assert "data_batch_1" not in message


# --- validation split and max_*_samples --------------------------------------------------


def test_val_fraction_and_count(tmp_path):
    make_mnist_like(tmp_path, n_train=200, n_test=20)
    ds = load_dataset("mnist", tmp_path, val_size=0.1)
    assert (len(ds.train), len(ds.val)) == (180, 20)
    ds = load_dataset("mnist", tmp_path, val_size=0.29)  # 57.99999 in floating point: rounds to 58
    assert (len(ds.train), len(ds.val)) == (142, 58)
    ds = load_dataset("mnist", tmp_path, val_size=1.0)  # >= 1 is a count, even as a float
    assert (len(ds.train), len(ds.val)) == (199, 1)
    ds = load_dataset("mnist", tmp_path, val_size=50)
    assert (len(ds.train), len(ds.val)) == (150, 50)
    assert ds.val.images.shape == (50, 1, 28, 28) and ds.val.labels.dtype == torch.int64


def _image_keys(split: Split) -> set[bytes]:
    return {img.numpy().tobytes() for img in split.images}


def test_val_split_is_disjoint_complete_and_fixed_by_seed(tmp_path):
    make_mnist_like(tmp_path, n_train=120, n_test=10)
    full = load_dataset("mnist", tmp_path, val_size=0)
    a = load_dataset("mnist", tmp_path, val_size=30, seed=7)
    b = load_dataset("mnist", tmp_path, val_size=30, seed=7)
    c = load_dataset("mnist", tmp_path, val_size=30, seed=8)
    assert torch.equal(a.val.images, b.val.images) and torch.equal(a.train.labels, b.train.labels)
    assert not torch.equal(a.val.images, c.val.images)
    train_keys, val_keys = _image_keys(a.train), _image_keys(a.val)
    assert not train_keys & val_keys
    assert train_keys | val_keys == _image_keys(full.train)
    # labels travel with their images
    for split in (a.train, a.val):
        index = {img.numpy().tobytes(): int(lab) for img, lab in zip(full.train.images, full.train.labels)}
        assert [index[img.numpy().tobytes()] for img in split.images] == split.labels.tolist()


@pytest.mark.parametrize("val_size", [100, 150, 100.0])
def test_val_size_that_leaves_no_training_images(tmp_path, val_size):
    make_mnist_like(tmp_path, n_train=100, n_test=10)
    with pytest.raises(UserError) as info:
        load_dataset("mnist", tmp_path, val_size=val_size)
    assert_one_line(str(info.value), f"val_size={val_size}", "leaves none for training")


def test_negative_val_size(tmp_path):
    make_mnist_like(tmp_path, n_train=20, n_test=10)
    with pytest.raises(UserError, match="val_size=-0.1 is invalid"):
        load_dataset("mnist", tmp_path, val_size=-0.1)


def test_max_samples_take_the_first_images_then_split(tmp_path):
    make_mnist_like(tmp_path, n_train=200, n_test=50)
    full = load_dataset("mnist", tmp_path, val_size=0)
    small = load_dataset("mnist", tmp_path, val_size=0.25, max_train_samples=40, max_test_samples=12)
    assert (len(small.train), len(small.val), len(small.test)) == (30, 10, 12)
    first_40 = Split(full.train.images[:40], full.train.labels[:40])
    assert _image_keys(small.train) | _image_keys(small.val) == _image_keys(first_40)
    assert torch.equal(small.test.images, full.test.images[:12])
    assert small.test.images.is_contiguous()
    # more than there is: all of it
    assert len(load_dataset("mnist", tmp_path, val_size=0, max_test_samples=10_000).test) == 50
    with pytest.raises(UserError, match="max_train_samples=0"):
        load_dataset("mnist", tmp_path, max_train_samples=0)


def test_to_moves_every_tensor_and_keeps_uint8(tmp_path):
    make_mnist_like(tmp_path, n_train=30, n_test=10)
    ds = load_dataset("mnist", tmp_path).to("meta")
    for split in (ds.train, ds.val, ds.test):
        assert split.images.device.type == "meta" and split.labels.device.type == "meta"
        assert split.images.dtype == torch.uint8
    assert ds.image_shape == (1, 28, 28) and ds.name == "mnist"


# --- errors -----------------------------------------------------------------------------


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(UserError) as info:
        load_dataset("svhn", tmp_path)
    assert str(info.value) == "unknown dataset 'svhn'; choose one of mnist, fashion_mnist, cifar10"
    assert DATASET_NAMES == ("mnist", "fashion_mnist", "cifar10")


def test_missing_mnist_names_every_expected_path(tmp_path):
    with pytest.raises(UserError) as info:
        load_dataset("mnist", tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    assert_one_line(
        str(info.value),
        f"MNIST not found under {tmp_path}: expected {raw}/train-images-idx3-ubyte(.gz), ",
        f"{raw}/train-labels-idx1-ubyte(.gz)",
        f"{raw}/t10k-images-idx3-ubyte(.gz)",
        f"{raw}/t10k-labels-idx1-ubyte(.gz)",
        "set data.download=true",
    )


def test_one_missing_mnist_file_is_named(tmp_path):
    make_mnist_like(tmp_path, n_train=20, n_test=10)
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError) as info:
        load_dataset("mnist", tmp_path)
    assert_one_line(str(info.value), "t10k-labels-idx1-ubyte(.gz)")
    assert "train-images" not in str(info.value)


def test_truncated_gz(tmp_path):
    make_mnist_like(tmp_path, n_train=50, n_test=10)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(UserError) as info:
        load_dataset("mnist", tmp_path)
    assert_one_line(str(info.value), str(path), "is truncated")


def test_truncated_raw_file_names_header_and_size(tmp_path):
    make_mnist_like(tmp_path, n_train=50, n_test=10, gz=False, raw=True)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError) as info:
        load_dataset("mnist", tmp_path)
    assert_one_line(
        str(info.value),
        f"{path} is truncated: header says 50 images of 28x28, file has 1000 bytes, expected 39216",
    )


def test_gz_whose_content_is_truncated(tmp_path):
    # a complete gzip stream around a short IDX file: the header check must catch it
    make_mnist_like(tmp_path, n_train=50, n_test=10)
    path = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:13]))
    with pytest.raises(UserError) as info:
        load_dataset("mnist", tmp_path)
    assert_one_line(str(info.value), str(path), "header says 10 labels, decompressed file has 13 bytes")


def test_not_gzip_at_all(tmp_path):
    make_mnist_like(tmp_path, n_train=20, n_test=10)
    path = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    path.write_bytes(b"<html>404</html>")
    with pytest.raises(UserError) as info:
        load_dataset("mnist", tmp_path)
    assert_one_line(str(info.value), str(path), "not a valid gzip file")


def test_wrong_idx_magic(tmp_path):
    make_mnist_like(tmp_path, n_train=20, n_test=10, gz=False, raw=True)
    raw_dir = tmp_path / "MNIST" / "raw"
    # the labels file where the images file should be
    (raw_dir / "train-images-idx3-ubyte").write_bytes((raw_dir / "train-labels-idx1-ubyte").read_bytes())
    with pytest.raises(UserError) as info:
        load_dataset("mnist", tmp_path)
    assert_one_line(
        str(info.value),
        f"{raw_dir / 'train-images-idx3-ubyte'} is not an IDX image file: "
        "magic number 0x00000801, expected 0x00000803",
    )


def test_image_label_count_mismatch(tmp_path):
    make_mnist_like(tmp_path, n_train=20, n_test=10)
    other = tmp_path / "other"
    make_mnist_like(other, n_train=30, n_test=10)
    raw_dir = tmp_path / "MNIST" / "raw"
    (raw_dir / "train-labels-idx1-ubyte.gz").write_bytes(
        (other / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz").read_bytes()
    )
    with pytest.raises(UserError) as info:
        load_dataset("mnist", tmp_path)
    assert_one_line(str(info.value), "has 20 images but", "train-labels-idx1-ubyte.gz has 30 labels")


# --- download (torchvision stubbed: tests never touch the network) ------------------------


def _stub_torchvision(monkeypatch, dataset_class) -> None:
    datasets = types.ModuleType("torchvision.datasets")
    setattr(datasets, dataset_class.__name__, dataset_class)
    torchvision = types.ModuleType("torchvision")
    torchvision.datasets = datasets
    monkeypatch.setitem(sys.modules, "torchvision", torchvision)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", datasets)


def test_download_failure_is_one_user_error_line(tmp_path, monkeypatch):
    class MNIST:
        def __init__(self, root, train, download):
            # torchvision's message spans lines; ours must not
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://x, got:\n<urlopen error>")

    _stub_torchvision(monkeypatch, MNIST)
    with pytest.raises(UserError) as info:
        load_dataset("mnist", tmp_path, download=True)
    message = str(info.value)
    assert_one_line(message, f"could not download MNIST into {tmp_path}", "Error downloading", "urlopen error")


def test_download_fills_the_folder_then_our_reader_reads_it(tmp_path, monkeypatch):
    calls = []

    class CIFAR10:
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            make_cifar10(root, n_per_batch=10, n_test=10)

    _stub_torchvision(monkeypatch, CIFAR10)
    ds = load_dataset("cifar10", tmp_path, download=True, val_size=0)
    assert calls == [(str(tmp_path), True, True)] and len(ds.train) == 50
    load_dataset("cifar10", tmp_path, download=True)  # present: no second download
    assert len(calls) == 1


# --- noise ------------------------------------------------------------------------------


def _batch(value: float = 0.5) -> torch.Tensor:
    return torch.full((8, 3, 32, 32), value)


def test_noise_none_is_identity():
    x = torch.rand(4, 1, 28, 28)
    assert apply_noise(x, "none", 0.7, None) is x


@pytest.mark.parametrize("kind, level", [("gaussian", 0.3), ("salt_pepper", 0.2), ("masking", 0.4)])
def test_noise_shape_range_and_reproducibility(kind, level):
    x = torch.rand(8, 3, 16, 16)
    a = apply_noise(x, kind, level, torch.Generator().manual_seed(1))
    b = apply_noise(x, kind, level, torch.Generator().manual_seed(1))
    c = apply_noise(x, kind, level, torch.Generator().manual_seed(2))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, x)
    x_before = x.clone()
    apply_noise(x, kind, level, torch.Generator().manual_seed(1))
    assert torch.equal(x, x_before)


def test_masking_zeroes_a_fraction_level_of_pixels_in_every_channel():
    y = apply_noise(_batch(), "masking", 0.3, torch.Generator().manual_seed(0))
    changed = y != 0.5
    assert abs(changed.float().mean().item() - 0.3) < 0.02
    assert (y[changed] == 0).all()
    assert torch.equal(changed[:, 0], changed[:, 1]) and torch.equal(changed[:, 0], changed[:, 2])


def test_salt_pepper_replaces_a_fraction_level_with_half_zeros_half_ones():
    y = apply_noise(_batch(), "salt_pepper", 0.2, torch.Generator().manual_seed(0))
    changed = y != 0.5
    assert abs(changed.float().mean().item() - 0.2) < 0.02
    assert set(y[changed].unique().tolist()) == {0.0, 1.0}
    assert abs((y[changed] == 1).float().mean().item() - 0.5) < 0.05


def test_gaussian_noise_has_sigma_level_before_clamping():
    y = apply_noise(_batch(), "gaussian", 0.1, torch.Generator().manual_seed(0))
    assert abs((y - 0.5).std().item() - 0.1) < 0.005
    assert abs((y - 0.5).mean().item()) < 0.005
    clamped = apply_noise(_batch(0.95), "gaussian", 0.5, torch.Generator().manual_seed(0))
    assert clamped.max() == 1 and clamped.min() >= 0


def test_noise_level_zero_changes_nothing():
    for kind in ("gaussian", "salt_pepper", "masking"):
        assert torch.equal(apply_noise(_batch(), kind, 0.0, torch.Generator().manual_seed(0)), _batch())


def test_unknown_noise_kind_and_bad_level():
    with pytest.raises(UserError) as info:
        apply_noise(_batch(), "speckle", 0.1, None)
    assert str(info.value) == "unknown noise kind 'speckle'; choose one of none, gaussian, salt_pepper, masking, watermark"
    with pytest.raises(UserError, match="probability in \\[0, 1\\]"):
        apply_noise(_batch(), "masking", 1.5, None)
    with pytest.raises(UserError, match="sigma >= 0"):
        apply_noise(_batch(), "gaussian", -0.1, None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_noise_runs_on_the_device_of_x():
    x = _batch().cuda()
    generator = torch.Generator(device="cuda").manual_seed(0)
    for kind in ("gaussian", "salt_pepper", "masking"):
        y = apply_noise(x, kind, 0.2, generator)
        assert y.device == x.device and y.min() >= 0 and y.max() <= 1


# --- the real MNIST (only where the shared copy exists) ----------------------------------


@pytest.mark.skipif(not (SHARED_MNIST / "MNIST" / "raw").is_dir(), reason="shared MNIST copy not present")
def test_real_mnist_from_gz_only():
    ds = load_dataset("mnist", SHARED_MNIST, val_size=5000)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (55000, 5000, 10000)
    assert ds.image_shape == (1, 28, 28)
    assert ds.train.images.dtype == torch.uint8 and int(ds.train.images.max()) == 255
    # the well-known class counts of the MNIST test set
    assert torch.bincount(ds.test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
