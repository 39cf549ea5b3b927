"""The application commands on tiny trained runs: `aerun anomaly` (every protocol and score,
the refusals), `aerun compress`, `aerun judge` and the sample quality `aerun generate` writes."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from aerun.errors import UserError
from tests.conftest import compose, run_aerun, tiny_overrides


def _train(data_root, tmp_path_factory, *extra, epochs: int = 4):
    from aerun.commands.train import train

    run_dir = tmp_path_factory.mktemp("run")
    train(compose("train", tiny_overrides(data_root, f"trainer.max_epochs={epochs}", *extra)), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def one_class(data_root, tmp_path_factory):
    return _train(data_root, tmp_path_factory, "model=mlp_ae", "model.latent_dim=8", "data.include_classes=[1]",
                  "data.val_size=16")


@pytest.fixture(scope="module")
def all_classes(data_root, tmp_path_factory):
    # a linear autoencoder: on the fixture's few images a deeper net spends its first hundred steps
    # on the mean image, whatever its activation
    return _train(data_root, tmp_path_factory, "model=mlp_ae", "model.latent_dim=8", "model.hidden=[]",
                  "optim.lr=1e-2", epochs=15)


def _anomaly(run_dir, out: Path, *extra):
    from aerun.commands import anomaly

    cfg = compose("anomaly", [f"run={run_dir}", "device=cpu", *extra])
    auroc = anomaly.run(cfg, SimpleNamespace(out_dir=out))
    return auroc, json.loads((out / "anomaly.json").read_text()), np.load(out / "scores.npz")


def test_one_class_scores_every_test_image_and_the_other_classes_are_the_anomalies(one_class, data_root, tmp_path,
                                                                                   capsys):
    _anomaly(one_class, tmp_path, "anomaly.score=all")
    printed = capsys.readouterr().out
    from aerun.data.idx import read_idx

    test_labels = read_idx(data_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz", 0x00000801).numpy()
    result = json.loads((tmp_path / "anomaly.json").read_text())
    scores = np.load(tmp_path / "scores.npz")
    assert result["protocol"] == "one_class" and result["n_images"] == len(test_labels)
    np.testing.assert_array_equal(scores["is_anomaly"], test_labels != 1)
    np.testing.assert_array_equal(scores["labels"], test_labels)
    assert set(result["scores"]) == {"mse", "bce", "density"}
    for name, report in result["scores"].items():
        assert report["n_anomalous"] == int((test_labels != 1).sum()) and 0 <= report["auroc"] <= 1
        assert scores[f"score_{name}"].shape == (len(test_labels),)
    # the fixture's classes differ in where their bright square is: a one-class model tells them apart
    assert result["scores"]["mse"]["auroc"] > 0.8, result["scores"]
    assert set(result["per_class"]) == {str(k) for k in range(10)}
    assert not result["per_class"]["1"]["anomaly"] and "auroc_mse" in result["per_class"]["7"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["objective"]["name"] == "anomaly/mse_auroc"
    for png in ("roc.png", "extremes.png"):
        assert (tmp_path / png).stat().st_size > 1000
    assert "| mse |" in printed and "AUROC (mse) of each anomalous class" in printed


def test_held_out_classes_are_exactly_the_anomalies(data_root, tmp_path_factory, tmp_path):
    run_dir = _train(data_root, tmp_path_factory, "model=mlp_ae", "model.latent_dim=8", "data.exclude_classes=[3,5]")
    _, result, scores = _anomaly(run_dir, tmp_path, "anomaly.score=density", "anomaly.components=2")
    assert result["protocol"] == "held_out"
    np.testing.assert_array_equal(scores["is_anomaly"], np.isin(scores["labels"], [3, 5]))
    assert result["anomalous"].endswith("of 3, 5")


def test_ood_puts_the_other_datasets_test_split_after_the_runs_own(all_classes, tmp_path):
    auroc, result, scores = _anomaly(all_classes, tmp_path, "anomaly.ood=fashion_mnist")
    assert result["protocol"] == "ood" and result["n_images"] == 128 + 64
    np.testing.assert_array_equal(scores["is_anomaly"], np.r_[np.zeros(128, bool), np.ones(64, bool)])
    assert (scores["labels"][128:] == -1).all() and 0 <= auroc <= 1


def test_ood_from_a_folder_of_images_resized_to_the_runs_shape(all_classes, tmp_path):
    from PIL import Image

    folder = tmp_path / "other"
    folder.mkdir()
    for i in range(5):
        Image.fromarray(np.full((40, 30, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    _, result, scores = _anomaly(all_classes, tmp_path / "out", "anomaly.ood=" + str(folder),
                                 "anomaly.max_test_samples=20")
    assert result["n_images"] == 25 and scores["is_anomaly"].sum() == 5


def test_a_vae_is_scored_by_its_elbo_and_the_importance_bound_is_tighter(data_root, tmp_path_factory, tmp_path):
    run_dir = _train(data_root, tmp_path_factory, "model=vae", "model.latent_dim=4", "model.hidden=[64]",
                     "data.include_classes=[0]", "data.val_size=16")
    _, result, scores = _anomaly(run_dir, tmp_path, "anomaly.score=all", "anomaly.iw_samples=50")
    assert list(result["scores"])[:3] == ["mse", "bce", "density"] and {"elbo", "iw_nll"} <= set(result["scores"])
    assert scores["score_iw_nll"].mean() <= scores["score_elbo"].mean() + 0.5
    _, auto, _ = _anomaly(run_dir, tmp_path / "auto")
    assert list(auto["scores"]) == ["elbo"]


def test_an_rbm_is_scored_by_its_free_energy(data_root, tmp_path_factory, tmp_path):
    run_dir = _train(data_root, tmp_path_factory, "model=rbm", "model.hidden_units=32", "optim=sgd",
                     "optim.lr=0.05", "data.include_classes=[2]", "data.val_size=16")
    _, result, scores = _anomaly(run_dir, tmp_path)
    assert list(result["scores"]) == ["free_energy"] and np.isfinite(scores["score_free_energy"]).all()


@pytest.mark.parametrize("extra, message", [
    ((), "trained on all of its data"),
    (("anomaly.score=elbo",), "needs a model with a posterior"),
    (("anomaly.score=free_energy",), "needs an RBM"),
    (("anomaly.ood=mnist",), "the dataset the run was trained on"),
    (("anomaly.ood=/no/such/folder",), "nor an existing folder"),
    (("anomaly.ood=cifar10", "anomaly.ood_root=/no/such"), "anomaly.ood_root=<folder"),
    (("anomaly.protocol=one_class", "anomaly.ood=fashion_mnist"), "only the ood protocol reads it"),
    (("anomaly.ood_root=/tmp", "anomaly.score=mse", "anomaly.protocol=ood"), "name the out-of-distribution"),
    (("anomaly.components=0", "anomaly.ood=fashion_mnist"), "anomaly.components: must be >= 1"),
])
def test_bad_options_are_refused_in_one_line(all_classes, extra, message):
    from aerun.commands import anomaly

    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("[", r"\[")):
        anomaly.validate(compose("anomaly", [f"run={all_classes}", "device=cpu", *extra]))


def test_a_refused_anomaly_command_writes_nothing(all_classes, tmp_path):
    before = sorted(p.name for p in all_classes.rglob("*"))
    proc = run_aerun("anomaly", f"run={all_classes}", "anomaly.score=elbo", f"hydra.run.dir={tmp_path / 'out'}")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "out").exists() and sorted(p.name for p in all_classes.rglob("*")) == before


def test_a_conditional_run_is_refused(data_root, tmp_path_factory):
    from aerun.commands import anomaly

    run_dir = _train(data_root, tmp_path_factory, "model=vae", "model.conditional=true", "model.hidden=[32]",
                     "data.include_classes=[1,2]", epochs=1)
    with pytest.raises(UserError, match="conditional"):
        anomaly.validate(compose("anomaly", [f"run={run_dir}", "device=cpu"]))


# -- compress, judge, generate's quality -----------------------------------------------------
@pytest.mark.slow
def test_compress_gives_a_curve_that_rises_with_the_bits(all_classes, tmp_path):
    proc = run_aerun("compress", f"run={all_classes}", "compress.bits=[2,8]", "device=cpu",
                     f"hydra.run.dir={tmp_path}", check=True)
    rows = json.loads((tmp_path / "compression.json").read_text())["rows"]
    ae = [r for r in rows if r["method"] == "autoencoder"]
    assert [r["bits"] for r in ae] == [2, 8] and ae[0]["bpp"] < ae[1]["bpp"] and ae[0]["psnr"] < ae[1]["psnr"]
    assert {"pca", "jpeg"} <= {r["method"] for r in rows}
    assert (tmp_path / "rate_distortion.png").is_file() and "| autoencoder | 8 |" in proc.stdout


@pytest.mark.slow
def test_judge_trains_once_into_the_cache_and_writes_no_run_dir(data_root, tmp_path):
    args = ("judge", f"data.root={data_root}", "judge.epochs=2", "device=cpu", f"judge.cache_dir={tmp_path / 'c'}")
    first = run_aerun(*args, cwd=tmp_path, check=True)
    second = run_aerun(*args, cwd=tmp_path, check=True)
    assert "trained now" in first.stdout and "cached" in second.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no outputs/, no .hydra/, no log


def test_generate_writes_the_samples_quality_and_its_objective(data_root, tmp_path_factory, tmp_path):
    from aerun.commands.generate import generate

    run_dir = _train(data_root, tmp_path_factory, "model=vae", "model.latent_dim=4", "model.hidden=[64]")
    cfg = compose("generate", [f"run={run_dir}", "device=cpu", "n=64", f"generate.judge_cache={tmp_path / 'c'}"])
    out = generate(cfg, tmp_path)
    quality = json.loads((tmp_path / "quality.json").read_text())
    assert out["frechet_distance"] == quality["frechet_distance"] > 0
    assert 0 <= quality["precision"] <= 1 and 0 <= quality["recall"] <= 1
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["objective"] == {"name": "quality/frechet_distance", "value": quality["frechet_distance"]}


# -- watermark removal ------------------------------------------------------------------------
def test_watermark_noise_trains_and_reports_psnr_inside_and_outside_the_stamps(data_root, tmp_path_factory, tmp_path):
    from aerun.commands import evaluate

    run_dir = _train(data_root, tmp_path_factory, "model=mlp_ae", "model.hidden=[]", "optim.lr=1e-2",
                     "data.noise.kind=watermark", "data.noise.level=0.9", epochs=2)
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert test["psnr_region_noisy"] < test["psnr_noisy"] < test["psnr_outside_noisy"]  # the stamps are the damage
    assert 0 < test["stamped_fraction"] < 0.5 and test["psnr_region_gain"] == pytest.approx(
        test["psnr_region"] - test["psnr_region_noisy"])
    assert (run_dir / "denoising.png").is_file()
    report = evaluate.evaluate_run(compose("evaluate", [f"run={run_dir}", "device=cpu", "evaluate.iw_samples=2"]))
    assert report["denoising"]["psnr_region"] == pytest.approx(test["psnr_region"], abs=1e-4)


def test_validation_stamps_training_words_and_the_test_split_its_own(data_root):
    import torch

    from aerun.engine import evaluate
    from aerun.models import MLPAutoencoder

    model = MLPAutoencoder((1, 28, 28), latent_dim=4, hidden=[])
    images = torch.randint(0, 40, (64, 1, 28, 28), dtype=torch.uint8)
    kwargs = dict(noise_kind="watermark", noise_level=1.0, seed=3)
    train_words = evaluate(model, images, **kwargs, noise_split="train")["psnr_noisy"]
    assert evaluate(model, images, **kwargs, noise_split="train")["psnr_noisy"] == train_words  # seeded
    assert evaluate(model, images, **kwargs, noise_split="test")["psnr_noisy"] != train_words


def test_a_watermark_opacity_above_one_is_refused(data_root):
    proc = run_aerun("train", *tiny_overrides(data_root, "data.noise.kind=watermark", "data.noise.level=1.5"))
    assert proc.returncode == 2 and "an opacity for watermark: must be <= 1" in proc.stderr, proc.stderr


def test_compress_caps_the_pca_baseline_of_a_code_wider_than_the_image(trained_run, tmp_path):
    """A DBN's 2,000 units or an overcomplete sparse AE: PCA has at most 784 components on MNIST
    (here 448, the tiny training split), and the run is compared with all of them."""
    from aerun.commands.compress import format_table, rate_distortion_rows

    run_dir = trained_run("model=shallow_ae", "model.latent_dim=1024", "model.sparsity.kind=l1",
                          "model.sparsity.weight=0.1")
    rows, title = rate_distortion_rows(compose("compress", [f"run={run_dir}", "device=cpu", "compress.bits=[4]"]))
    assert "PCA capped at 448 components" in title and {"autoencoder", "pca", "jpeg"} == {r["method"] for r in rows}
    jpeg = next(r for r in rows if r["method"] == "jpeg")
    assert f"for {jpeg['target_bpp']:.3f} bpp" in format_table(rows, title)  # which AE rate the JPEG row matches


def test_the_anomaly_advice_fits_the_run():
    from aerun.commands.anomaly import protocol, score_names

    cfg = compose("anomaly", ["run=.", "device=cpu"])
    with pytest.raises(UserError, match="no class filter") as own:
        protocol(cfg, {"name": "folder"})
    assert "if its images have classes" in str(own.value)  # a flat folder has none to filter
    with pytest.raises(UserError, match="use mse, bce, density, elbo, iw_nll"):  # a VAE's own scores named too
        score_names("free_energy", "VAE", has_posterior=True)
