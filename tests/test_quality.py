"""Sample quality: the Frechet distance against its closed form, precision / recall, the class
histogram, and the judge (a tiny one trained here on the fixture data) with its cache."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from aerun.analysis import judge as judge_module
from aerun.analysis.judge import judge_features, load_or_train_judge, train_judge
from aerun.analysis.quality import (class_histogram, feature_stats, frechet_distance, precision_recall,
                                    sample_quality)
from aerun.data import Split, load_dataset
from aerun.errors import StorageError, UserError


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    expected = np.square(mu1 - mu2).sum() + (s1 + s2 - 2 * np.sqrt(s1 * s2)).sum()
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(mu1, np.diag(s1), mu1, np.diag(s1)) == pytest.approx(0, abs=1e-10)


def test_frechet_distance_matches_scipy_sqrtm_on_full_and_singular_covariances():
    import scipy.linalg

    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    s1, s2 = a @ a.T + 0.1 * np.eye(8), b @ b.T + 0.1 * np.eye(8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    reference = np.square(mu1 - mu2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-8)
    # fewer samples than features: singular covariances still give a finite distance, 0 for itself
    mu, sigma = feature_stats(rng.normal(size=(5, 20)))
    assert np.linalg.matrix_rank(sigma) == 4
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0, abs=1e-8)
    assert math.isfinite(frechet_distance(mu, sigma, *feature_stats(rng.normal(size=(5, 20)))))


def test_precision_recall_are_high_for_one_distribution_and_low_for_a_shifted_one():
    rng = np.random.default_rng(0)
    real, same = rng.normal(size=(600, 8)), rng.normal(size=(600, 8))
    pr = precision_recall(real, same, k=3)
    assert pr["precision"] > 0.8 and pr["recall"] > 0.8
    shifted = precision_recall(real, same + 3.0, k=3)
    assert shifted["precision"] < 0.2 and shifted["recall"] < 0.2
    # a fake set that covers only half the real manifold keeps precision, loses recall
    half = precision_recall(real, same[same[:, 0] > 0], k=3)
    assert half["precision"] > 0.8 and half["recall"] < 0.75
    # row blocks of a few rows give exactly the answer of one block
    assert precision_recall(real, same + 0.5, k=3, memory_bytes=4096) == precision_recall(real, same + 0.5, k=3)


def test_class_histogram_on_known_labels():
    h = class_histogram([0, 0, 1, 2], n_classes=4)
    assert h["counts"] == [2, 1, 1, 0] and h["fractions"] == [0.5, 0.25, 0.25, 0.0]
    assert h["entropy_nats"] == pytest.approx(-(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    assert h["entropy_normalised"] == pytest.approx(h["entropy_nats"] / math.log(4))
    assert h["most_frequent"] == {"class": 0, "fraction": 0.5}
    assert h["least_frequent"] == {"class": 3, "fraction": 0.0}
    assert class_histogram(np.arange(10), 10)["entropy_normalised"] == pytest.approx(1.0)
    assert class_histogram([3] * 7, 10)["entropy_nats"] == 0.0


@pytest.fixture(scope="module")
def tiny(data_root):
    """The fixture MNIST (512 + 128 block images) and a judge trained on it in ~2 s."""
    torch.set_num_threads(1)
    dataset = load_dataset("mnist", data_root, val_size=0)
    model, accuracy = train_judge(dataset, "cpu", epochs=2, batch_size=64)
    return dataset, model, accuracy


def test_the_judge_learns_the_fixture_classes_and_ranks_degraded_samples(tiny):
    dataset, model, accuracy = tiny
    assert accuracy > 0.9
    real = dataset.train.images.float() / 255
    test = dataset.test.images.float() / 255
    blurred = torch.nn.functional.avg_pool2d(test, 5, stride=1, padding=2, count_include_pad=False)
    noise = torch.rand(test.shape, generator=torch.Generator().manual_seed(0))
    scores = {name: sample_quality(model, samples, real, batch_size=64, n_classes=10)
              for name, samples in (("test", test), ("blurred", blurred), ("noise", noise))}
    distances = [scores[name]["frechet_distance"] for name in ("test", "blurred", "noise")]
    assert distances[0] < distances[1] < distances[2]
    assert scores["test"]["class_entropy"] > 0.95  # the balanced test split, classified correctly
    assert scores["test"]["precision"] > scores["noise"]["precision"]
    quality = json.loads(json.dumps(scores["test"]))  # plain JSON types only
    assert quality["n_samples"] == 128 and quality["n_reference"] == 512
    assert quality["judge_test_accuracy"] == pytest.approx(accuracy)
    assert sum(quality["class_histogram"]["counts"]) == 128


def test_the_judge_refuses_images_of_another_shape_in_one_line(tiny):
    _, model, _ = tiny
    with pytest.raises(UserError) as error:
        judge_features(model, torch.rand(4, 3, 32, 32))
    assert "(1, 28, 28)" in str(error.value) and "(3, 32, 32)" in str(error.value) and "\n" not in str(error.value)
    assert judge_features(model, torch.rand(3, 1, 28, 28)).shape == (3, judge_module.FEATURE_DIM)


def fast_train(dataset, device, epochs=1, seed=0):
    return train_judge(dataset, device, epochs=1, seed=seed, batch_size=128)


def test_the_cache_is_reused_keyed_by_content_and_in_aerun_cache(tiny, tmp_path, monkeypatch):
    dataset = tiny[0]
    monkeypatch.setenv("AERUN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(judge_module, "train_judge", fast_train)
    model, info = load_or_train_judge(dataset, "cpu")
    assert info["trained_now"] and info["cache_path"].startswith(str(tmp_path / "cache" / "judge"))
    assert info["image_shape"] == [1, 28, 28] and 0 <= info["test_accuracy"] <= 1

    def refuse(*args, **kwargs):
        raise AssertionError("the cached judge should have been loaded")

    monkeypatch.setattr(judge_module, "train_judge", refuse)
    again, info2 = load_or_train_judge(dataset, "cpu")
    assert not info2["trained_now"] and info2["cache_path"] == info["cache_path"]
    x = dataset.test.images[:8].float() / 255
    assert torch.equal(judge_features(again, x), judge_features(model, x))
    assert again.test_accuracy == info["test_accuracy"]

    changed = dataclasses.replace(dataset, test=Split(dataset.test.images.clone(), dataset.test.labels))
    changed.test.images[0, 0, 0, 0] ^= 1  # one pixel of one image
    assert judge_module.cache_key(changed) != judge_module.cache_key(dataset)
    assert judge_module.cache_key(changed).startswith("mnist-")


def test_a_failed_cache_write_leaves_no_file_and_a_bad_file_is_retrained(tiny, tmp_path, monkeypatch):
    dataset, model, _ = tiny
    path = tmp_path / "judge.pt"

    def half_then_fail(obj, f, *args, **kwargs):
        open(f, "wb").write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(StorageError):
        judge_module.save_judge(model, path, {"version": judge_module.JUDGE_VERSION})
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temp file
    monkeypatch.undo()

    monkeypatch.setattr(judge_module, "train_judge", fast_train)
    key_path = tmp_path / "judge" / f"{judge_module.cache_key(dataset)}.pt"
    key_path.parent.mkdir()
    key_path.write_bytes(b"not a checkpoint")
    _, info = load_or_train_judge(dataset, "cpu", cache_dir=tmp_path)
    assert info["trained_now"] and key_path.stat().st_size > 1000
    assert sorted(p.name for p in key_path.parent.iterdir()) == [key_path.name]
