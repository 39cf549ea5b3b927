"""`aerun encode`, `aerun generate`, `aerun interpolate` on tiny trained runs: through the real
CLI for the happy paths and the main errors, in-process for the rest."""

from __future__ import annotations

import re


import numpy as np
import pytest
import torch
from PIL import Image

from aerun import runs
from aerun.latent import codes as latent_codes
from aerun.latent import projector, samplers
from aerun.loggers.tensorboard import projector_dir
from aerun.commands.encode import encode
from aerun.errors import UserError
from aerun.commands.generate import generate
from aerun.commands.interpolate import interpolate
from tests.conftest import compose, run_aerun, tiny_overrides

N_TRAIN, N_VAL, N_TEST = 448, 64, 128  # the tiny MNIST: 512 train images, 64 of them validation
TILE = 28 + 2  # a 28x28 tile and its 2-pixel padding in an image grid


def _grid_size(cols: int, rows: int) -> tuple[int, int]:
    """A grid of 28-px tiles with 2-px padding, upscaled as aerun.figures.save_image_grid does:
    by the whole number (1..4) that brings it closest to 1,200 px wide."""
    width, height = cols * TILE + 2, rows * TILE + 2
    scale = min(4, max(1, round(1200 / width)))
    return (width * scale, height * scale)


def _train(data_root, tmp_path_factory, *extra):
    from aerun.commands.train import train

    run_dir = tmp_path_factory.mktemp("run")
    train(compose("train", tiny_overrides(data_root, *extra)), run_dir)
    return run_dir


# Module-scoped tiny runs (the `trained_run` fixture's recipe, trained once for the whole file).
@pytest.fixture(scope="module")
def ae2(data_root, tmp_path_factory):
    return _train(data_root, tmp_path_factory, "model=linear_ae")


@pytest.fixture(scope="module")
def vae2(data_root, tmp_path_factory):
    return _train(data_root, tmp_path_factory, "model=vae", "model.latent_dim=2", "model.hidden=[64]")


@pytest.fixture(scope="module")
def ae8(data_root, tmp_path_factory):
    return _train(data_root, tmp_path_factory, "model=linear_ae", "model.latent_dim=8")


def _cfg(command, run_dir, *extra):
    return compose(command, [f"run={run_dir}", "device=cpu", *extra])


def _snapshot(run_dir):
    """Every file of the run outside tensorboard/, with its size and mtime."""
    return {p.relative_to(run_dir): (p.stat().st_size, p.stat().st_mtime_ns) for p in run_dir.rglob("*")
            if p.is_file() and runs.TENSORBOARD not in p.relative_to(run_dir).parts}


def _png_size(path):
    with Image.open(path) as image:
        image.verify()  # a complete, valid PNG
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


# ----------------------------------------------------------------------------- through the CLI
def test_encode_cli_writes_codes_plot_and_projector_entry(ae2, tmp_path):
    before = _snapshot(ae2)
    proc = run_aerun("encode", str(ae2), "device=cpu", f"hydra.run.dir={tmp_path / 'enc'}")
    assert proc.returncode == 0, proc.stderr
    with np.load(tmp_path / "enc" / "codes.npz") as npz:
        assert set(npz.files) == {"codes", "labels"}
        assert npz["codes"].shape == (N_TEST, 2) and npz["codes"].dtype == np.float32
        assert npz["labels"].shape == (N_TEST,) and set(npz["labels"].tolist()) == set(range(10))
    width, height = _png_size(tmp_path / "enc" / "latent.png")
    assert width > 300 and height > 300
    assert "codes.npz" in proc.stdout and "latent.png" in proc.stdout
    # the only change to the run: a projector entry under its tensorboard/
    assert _snapshot(ae2) == before
    config = (projector_dir(ae2) / projector.PROJECTOR_CONFIG).read_text()
    assert "latent_test" in config
    entries = list(projector_dir(ae2).glob("*/latent_test"))
    assert len(entries) == 1
    assert {p.name for p in entries[0].iterdir()} == {"tensors.tsv", "metadata.tsv", "sprite.png"}
    assert len((entries[0] / "tensors.tsv").read_text().splitlines()) == N_TEST
    assert not list(tmp_path.glob("enc/.*.tmp")) and not list(tmp_path.glob("enc/.codes*"))


@pytest.mark.slow
def test_generate_cli_gmm_writes_grid_and_array(ae2, tmp_path):
    proc = run_aerun("generate", f"run={ae2}", "n=16", "sampler=gmm", "generate.components=3", "device=cpu",
                     f"hydra.run.dir={tmp_path / 'gen'}")
    assert proc.returncode == 0, proc.stderr
    samples = np.load(tmp_path / "gen" / "samples.npy")
    assert samples.shape == (16, 1, 28, 28) and samples.dtype == np.float32
    assert samples.min() >= 0 and samples.max() <= 1
    assert _png_size(tmp_path / "gen" / "samples.png") == _grid_size(4, 4)
    assert "samples.png" in proc.stdout


def test_generate_cli_refuses_prior_on_a_plain_autoencoder(ae2, tmp_path):
    proc = run_aerun("generate", f"run={ae2}", "sampler=prior", f"hydra.run.dir={tmp_path / 'gen'}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aerun: error: sampler=prior:")
    assert "not a VAE" in lines[0] and all(name in lines[0] for name in ("normal", "uniform", "gmm"))


@pytest.mark.slow
def test_interpolate_cli_by_class(ae2, tmp_path):
    proc = run_aerun("interpolate", f"run={ae2}", "from_class=2", "to_class=9", "steps=7", "device=cpu",
                     f"hydra.run.dir={tmp_path / 'int'}")
    assert proc.returncode == 0, proc.stderr
    # the two input images above the decoded path, rows labelled in a margin on the left
    width, height = _png_size(tmp_path / "int" / "interpolation.png")
    grid_width, grid_height = _grid_size(7, 2)
    assert height == grid_height and grid_width + 40 < width < grid_width + 400
    with np.load(tmp_path / "int" / "interpolation.npz") as npz:
        assert npz["codes"].shape == (7, 2) and npz["images"].shape == (7, 1, 28, 28)
        assert npz["labels"].tolist() == [2, 9]
    assert "(class 2)" in proc.stdout and "(class 9)" in proc.stdout


@pytest.mark.slow
def test_interpolate_cli_manifold_on_a_2d_vae(vae2, tmp_path):
    proc = run_aerun("interpolate", str(vae2), "mode=manifold", "interpolate.grid=5", "device=cpu",
                     "data.root=/nonexistent",  # the prior's grid needs no data
                     f"hydra.run.dir={tmp_path / 'man'}")
    assert proc.returncode == 0, proc.stderr
    assert _png_size(tmp_path / "man" / "manifold.png") == _grid_size(5, 5)


@pytest.mark.parametrize("args, message", [
    (["run=/nonexistent/run"], "run=/nonexistent/run: no such directory"),
    (["from_index=500"], "from_index=500: out of range; the test split has 128 images (indices 0..127)"),
])
def test_cli_errors_are_one_line_and_exit_2(ae2, tmp_path, args, message):
    run_arg = [] if args[0].startswith("run=") else [f"run={ae2}"]
    proc = run_aerun("interpolate", *run_arg, *args, "device=cpu", f"hydra.run.dir={tmp_path / 'out'}")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == f"aerun: error: {message}", proc.stderr


def test_missing_best_checkpoint_is_one_line(ae2, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / runs.CONFIG_FILE).write_text((ae2 / runs.CONFIG_FILE).read_text())
    proc = run_aerun("encode", str(broken), f"hydra.run.dir={tmp_path / 'out'}")
    assert proc.returncode == 2
    assert "no best.pt or last.pt in this run directory (the run saved no weights yet)" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_folder_of_runs_names_its_newest_run(ae2, tmp_path):
    """run= a date folder or a sweep's folder: the error names a run inside it to pass instead."""
    import os
    import shutil

    sweep = tmp_path / "multirun" / "2026-01-01" / "12-00-00"
    for job, age in (("0", 100), ("1", 0), ("2", 50)):
        shutil.copytree(ae2, sweep / job, ignore=shutil.ignore_patterns(runs.TENSORBOARD))
        stamp = (sweep / job).stat().st_mtime - age
        os.utime(sweep / job, (stamp, stamp))
    (sweep / ".hydra").mkdir()  # Hydra's own folder and a job that saved nothing are not runs
    (sweep / "3").mkdir()
    (sweep / "3" / runs.CONFIG_FILE).write_text("model: {}\n")
    for folder in (sweep, tmp_path / "multirun"):
        proc = run_aerun("encode", f"run={folder}", f"hydra.run.dir={tmp_path / 'out'}")
        assert proc.returncode == 2
        assert proc.stderr.strip() == (f"aerun: error: run={folder}: not a run directory itself, but it holds "
                                       f"3 run(s); pass one of them, e.g. the newest: run={sweep / '1'}")


def test_a_run_stopped_before_its_first_best_checkpoint_uses_last(ae2, tmp_path):
    """Interrupted in epoch 1, a run has last.pt but no best.pt: the commands still read it."""
    import shutil

    early = tmp_path / "early"
    early.mkdir()
    for name in (runs.CONFIG_FILE, runs.LAST):
        shutil.copy2(ae2 / name, early / name)
    proc = run_aerun("encode", str(early), f"hydra.run.dir={tmp_path / 'out'}")
    assert proc.returncode == 0, proc.stderr
    said = proc.stdout + proc.stderr
    assert "no best.pt (the run stopped before its first epoch ended" in said and "using last.pt" in said
    assert (tmp_path / "out" / "codes.npz").is_file()


# ----------------------------------------------------------------------------- in-process: encode
@pytest.mark.parametrize("split, n", [("train", N_TRAIN), ("val", N_VAL)])
def test_encode_other_splits(ae2, tmp_path, split, n):
    encode(_cfg("encode", ae2, f"split={split}", "encode.embedding=false"), tmp_path)
    with np.load(tmp_path / "codes.npz") as npz:
        assert npz["codes"].shape == (n, 2) and npz["labels"].shape == (n,)


def test_encode_vae_stores_mu_and_logvar(vae2, tmp_path):
    encode(_cfg("encode", vae2, "encode.embedding=false"), tmp_path)
    with np.load(tmp_path / "codes.npz") as npz:
        assert set(npz.files) == {"codes", "labels", "mu", "logvar"}
        assert npz["mu"].shape == npz["logvar"].shape == (N_TEST, 2)
        np.testing.assert_array_equal(npz["codes"], npz["mu"])
    model = runs.load_run(vae2).model
    images = latent_codes.load_data(_cfg("encode", vae2), runs.load_run(vae2)).test.images[:3]
    with torch.no_grad():
        mu, _ = model.encode_stats(images.float() / 255)
    with np.load(tmp_path / "codes.npz") as npz:
        np.testing.assert_allclose(npz["mu"][:3], mu.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("projection", ["pca", "tsne"])
def test_encode_projects_codes_above_2d(ae8, tmp_path, projection):
    result = encode(_cfg("encode", ae8, f"encode.projection={projection}", "encode.embedding=false"), tmp_path)
    assert result["shape"] == (N_TEST, 8)
    assert _png_size(tmp_path / "latent.png")[0] > 300


def test_projector_entries_of_two_splits_are_both_kept(ae8, tmp_path):
    encode(_cfg("encode", ae8, "split=test", "encode.embedding_max_points=50"), tmp_path / "a")
    encode(_cfg("encode", ae8, "split=val"), tmp_path / "b")
    encode(_cfg("encode", ae8, "split=test", "encode.embedding_max_points=50"), tmp_path / "c")  # replaces
    config = (projector_dir(ae8) / projector.PROJECTOR_CONFIG).read_text()
    assert config.count("embeddings {") == 2 and "latent_test" in config and "latent_val" in config
    tensors = next(projector_dir(ae8).glob("*/latent_test/tensors.tsv"))
    assert len(tensors.read_text().splitlines()) == 50

@pytest.mark.slow
def test_a_relative_data_root_is_read_from_where_the_run_was_trained(data_root, tmp_path):
    """`aerun train data.root=data` in one folder, then the latent commands and evaluate from
    another: the run's relative data.root resolves against the folder it was trained in."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "data").symlink_to(data_root, target_is_directory=True)
    overrides = [o for o in tiny_overrides(data_root, "model=linear_ae") if not o.startswith("data.root=")]
    run_dir = project / "outputs" / "run"
    run_aerun("train", "data.root=data", *overrides, f"hydra.run.dir={run_dir}", cwd=project, check=True)
    proc = run_aerun("encode", str(run_dir), f"hydra.run.dir={elsewhere / 'enc'}", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert f"is relative to {project}" in proc.stdout + proc.stderr
    assert np.load(elsewhere / "enc" / "codes.npz")["codes"].shape == (N_TEST, 2)
    proc = run_aerun("evaluate", str(run_dir), "evaluate.max_test_samples=32", f"hydra.run.dir={elsewhere / 'ev'}",
                     cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert (elsewhere / "ev" / "evaluation.json").is_file()


def test_missing_data_says_so(ae2, tmp_path):
    with pytest.raises(UserError, match=r"cannot load the mnist data this run was trained on "
                                        r"\(data.root=/nonexistent\).*pass data.root="):
        encode(_cfg("encode", ae2, "data.root=/nonexistent"), tmp_path)
    assert not list(tmp_path.iterdir())


def test_data_root_override_finds_moved_data(ae2, data_root, tmp_path):
    from aerun.checkpoint import load_checkpoint, save_checkpoint

    # a run trained where the data was at /gone (another machine): data.root points at it here
    moved = tmp_path / "run"
    moved.mkdir()
    state = load_checkpoint(ae2 / runs.BEST)
    state["config"]["data"]["root"] = "/gone"
    save_checkpoint(moved / runs.BEST, state)
    (moved / runs.CONFIG_FILE).write_text((ae2 / runs.CONFIG_FILE).read_text())
    with pytest.raises(UserError, match=r"\(the run's data.root=/gone\)"):
        encode(_cfg("encode", moved, "encode.embedding=false"), tmp_path / "out")
    result = encode(_cfg("encode", moved, f"data.root={data_root}", "encode.embedding=false"), tmp_path / "out")
    assert result["shape"] == (N_TEST, 2)


# ----------------------------------------------------------------------------- in-process: generate
@pytest.mark.parametrize("sampler", ["normal", "uniform", "gmm"])
def test_fitted_samplers_give_n_samples(ae2, tmp_path, sampler):
    result = generate(_cfg("generate", ae2, "n=10", f"sampler={sampler}", "generate.components=2"), tmp_path)
    assert result["sampler"] == sampler and result["codes"].shape == (10, 2)
    assert np.load(tmp_path / "samples.npy").shape == (10, 1, 28, 28)
    assert _png_size(tmp_path / "samples.png") == _grid_size(4, 3)  # ceil(sqrt(10)) per row


def test_uniform_samples_lie_within_the_training_codes_range(ae2, tmp_path):
    result = generate(_cfg("generate", ae2, "n=500", "sampler=uniform"), tmp_path / "gen")
    encode(_cfg("encode", ae2, "split=train", "encode.embedding=false"), tmp_path / "enc")
    codes = np.load(tmp_path / "enc" / "codes.npz")["codes"]
    assert np.all(result["codes"] >= codes.min(0) - 1e-5) and np.all(result["codes"] <= codes.max(0) + 1e-5)
    # and it fills the box: both ends of each dimension are approached
    span = codes.max(0) - codes.min(0)
    assert np.all(result["codes"].min(0) < codes.min(0) + 0.1 * span)
    assert np.all(result["codes"].max(0) > codes.max(0) - 0.1 * span)


def test_sampler_statistics():
    rng = np.random.default_rng(0)
    codes = rng.multivariate_normal([3.0, -1.0], [[2.0, 0.8], [0.8, 1.0]], size=4000)
    normal = samplers.fit_sampler("normal", codes)(20000, np.random.default_rng(1))
    np.testing.assert_allclose(normal.mean(0), [3.0, -1.0], atol=0.1)
    np.testing.assert_allclose(np.cov(normal, rowvar=False), [[2.0, 0.8], [0.8, 1.0]], atol=0.15)
    two_blobs = np.concatenate([rng.normal(-5, 0.3, (500, 2)), rng.normal(5, 0.3, (500, 2))])
    gmm = samplers.fit_sampler("gmm", two_blobs, components=2)(1000, np.random.default_rng(1))
    assert gmm.shape == (1000, 2) and np.all(np.abs(np.abs(gmm) - 5) < 2)  # none between the blobs
    assert 0.4 < (gmm[:, 0] > 0).mean() < 0.6  # both components drawn, interleaved
    assert (gmm[:500, 0] > 0).mean() > 0.3
    with pytest.raises(UserError, match="generate.components=5: more mixture components than the 3"):
        samplers.fit_sampler("gmm", codes[:3], components=5)


def test_generate_is_reproducible_with_a_seed(ae2, tmp_path):
    a = generate(_cfg("generate", ae2, "n=8", "sampler=normal", "seed=3"), tmp_path / "a")["codes"]
    b = generate(_cfg("generate", ae2, "n=8", "sampler=normal", "seed=3"), tmp_path / "b")["codes"]
    c = generate(_cfg("generate", ae2, "n=8", "sampler=normal", "seed=4"), tmp_path / "c")["codes"]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "samples.npy"), np.load(tmp_path / "b" / "samples.npy"))


def test_prior_sampling_on_a_vae_needs_no_data(vae2, tmp_path):
    result = generate(_cfg("generate", vae2, "n=6", "data.root=/nonexistent"), tmp_path)  # sampler=auto
    assert result["sampler"] == "prior" and result["codes"].shape == (6, 2)
    assert np.load(tmp_path / "samples.npy").shape == (6, 1, 28, 28)


def test_auto_sampler_is_gmm_for_a_plain_autoencoder(ae2, tmp_path):
    assert generate(_cfg("generate", ae2, "n=4", "generate.components=2"), tmp_path)["sampler"] == "gmm"


# ----------------------------------------------------------------------------- in-process: interpolate
@pytest.mark.parametrize("method", ["linear", "slerp"])
def test_path_endpoints_are_the_codes_of_the_two_images(ae8, tmp_path, method):
    result = interpolate(_cfg("interpolate", ae8, "from_index=3", "to_index=10", "steps=6", f"method={method}"),
                         tmp_path / "int")
    encode(_cfg("encode", ae8, "encode.embedding=false"), tmp_path / "enc")
    codes = np.load(tmp_path / "enc" / "codes.npz")["codes"]
    assert result["indices"] == (3, 10) and result["codes"].shape == (6, 8)
    np.testing.assert_allclose(result["codes"][0], codes[3], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result["codes"][-1], codes[10], rtol=1e-4, atol=1e-5)
    if method == "slerp":  # on the great circle: the norm moves between the two ends' norms
        norms = np.linalg.norm(result["codes"], axis=1)
        assert np.all(norms >= min(norms[0], norms[-1]) - 1e-4) and np.all(norms <= max(norms[0], norms[-1]) + 1e-4)


def test_interpolate_by_class_picks_the_first_image_of_each(ae2, tmp_path):
    result = interpolate(_cfg("interpolate", ae2, "from_class=2", "to_class=9"), tmp_path)
    labels = latent_codes.load_data(_cfg("interpolate", ae2), runs.load_run(ae2)).test.labels
    assert result["indices"] == (int(torch.nonzero(labels == 2)[0]), int(torch.nonzero(labels == 9)[0]))
    # the same class at both ends: its first and second image, not one image to itself
    result = interpolate(_cfg("interpolate", ae2, "from_class=4", "to_class=4"), tmp_path / "same")
    fours = torch.nonzero(labels == 4)[:, 0].tolist()
    assert result["indices"] == (fours[0], fours[1])


def test_manifold_of_a_plain_ae_spans_the_codes_range(ae2, tmp_path):
    result = interpolate(_cfg("interpolate", ae2, "mode=manifold", "interpolate.grid=3"), tmp_path / "man")
    encode(_cfg("encode", ae2, "encode.embedding=false"), tmp_path / "enc")
    codes = np.load(tmp_path / "enc" / "codes.npz")["codes"]
    grid = result["codes"]  # row-major, top row first
    assert grid.shape == (9, 2)
    np.testing.assert_allclose(grid[0], [codes[:, 0].min(), codes[:, 1].max()], rtol=1e-5)  # top left
    np.testing.assert_allclose(grid[-1], [codes[:, 0].max(), codes[:, 1].min()], rtol=1e-5)  # bottom right
    assert _png_size(tmp_path / "man" / "manifold.png") == _grid_size(3, 3)


def test_manifold_of_a_vae_spans_prior_quantiles(vae2, tmp_path):
    result = interpolate(_cfg("interpolate", vae2, "mode=manifold", "interpolate.grid=3",
                              "interpolate.quantile=0.1"), tmp_path)
    q = 1.2815515655446004  # the 0.9 quantile of N(0, 1)
    np.testing.assert_allclose(result["codes"][0], [-q, q], rtol=1e-5)
    np.testing.assert_allclose(result["codes"][4], [0, 0], atol=1e-6)


@pytest.mark.parametrize("args, message", [
    (["from_index=1", "from_class=2"], "from_index and from_class: give one of them, not both"),
    (["steps=1"], "steps: must be >= 2"),
    (["to_index=-1"], "to_index: must be >= 0"),
    (["interpolate.quantile=0.5"], "interpolate.quantile: must be in (0, 0.5)"),
    (["to_class=7x"], "to_class=7x: no such class; classes are 0, 1, 2, 3, 4, 5, 6, 7, 8, 9"),
    (["to_index=128"], "to_index=128: out of range; the test split has 128 images"),
    (["run=null"], "run: missing; pass the run directory"),
])
def test_interpolate_option_errors(ae2, tmp_path, args, message):
    with pytest.raises(UserError, match=re.escape(message)):
        interpolate(_cfg("interpolate", ae2, *args), tmp_path)


def test_manifold_needs_a_2d_latent(ae8, tmp_path):
    with pytest.raises(UserError, match=re.escape("mode=manifold: needs a 2-d latent, but this run's latent is 8-d")):
        interpolate(_cfg("interpolate", ae8, "mode=manifold"), tmp_path)


def test_generate_option_errors(ae2, tmp_path):
    with pytest.raises(UserError, match="n: must be >= 1"):
        generate(_cfg("generate", ae2, "n=0"), tmp_path)
    with pytest.raises(UserError, match="generate.components: must be >= 1"):
        generate(_cfg("generate", ae2, "generate.components=0"), tmp_path)


@pytest.mark.parametrize("tiles, size, nrow, scale", [(64, 28, 8, 4), (10, 28, 10, 4), (32, 28, 16, 2),
                                                      (16, 32, 16, 2), (8, 200, 16, 1)])
def test_image_grids_are_upscaled_by_a_whole_number_and_keep_every_pixel(tmp_path, tiles, size, nrow, scale):
    from torchvision.utils import make_grid

    from aerun.figures import save_image_grid

    images = torch.rand(tiles, 3, size, size, generator=torch.Generator().manual_seed(0))
    save_image_grid(images, tmp_path / "grid.png", nrow=nrow)
    expected = make_grid(images, nrow=nrow, padding=2, pad_value=1.0).mul(255).add(0.5).clamp(0, 255).byte()
    with Image.open(tmp_path / "grid.png") as image:
        saved = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)  # [3, H, W]
    assert saved.shape[1:] == (expected.shape[1] * scale, expected.shape[2] * scale)
    for dy in range(scale):  # every pixel is a scale x scale block of one grid pixel
        for dx in range(scale):
            assert torch.equal(saved[:, dy::scale, dx::scale], expected)


def test_row_labels_go_in_a_margin_beside_the_unchanged_grid(tmp_path):
    from aerun.figures import grid_image

    images = torch.rand(32, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    plain = np.array(grid_image(images, nrow=16))
    labelled = np.array(grid_image(images, nrow=16, row_labels=["input", "reconstruction"]))
    margin = labelled.shape[1] - plain.shape[1]
    assert labelled.shape[0] == plain.shape[0] and margin > 40
    np.testing.assert_array_equal(labelled[:, margin:], plain)  # the grid itself is untouched
    top, bottom = labelled[: plain.shape[0] // 2, :margin], labelled[plain.shape[0] // 2:, :margin]
    assert (top < 128).any() and (bottom < 128).any()  # a label is written beside each row
    wider = np.array(grid_image(images, nrow=16, row_labels=["noisy input", "a much longer label"]))
    assert wider.shape[1] > labelled.shape[1]


def test_many_samples_go_to_the_array_and_the_grid_shows_the_first(ae2, tmp_path):
    result = generate(_cfg("generate", ae2, "n=300", "generate.grid_max=25"), tmp_path)
    assert np.load(result["samples"]).shape == (300, 1, 28, 28)
    assert _png_size(tmp_path / "samples.png") == _grid_size(5, 5)
    with pytest.raises(UserError, match="generate.grid_max: must be >= 1"):
        generate(_cfg("generate", ae2, "generate.grid_max=0"), tmp_path / "bad")
