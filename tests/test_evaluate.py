"""`aerun evaluate`: the PCA baseline, the importance-weighted bound, codes as features,
the report of a trained run, and the CLI's one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from aerun import runs
from aerun.data import load_dataset
from aerun.engine import evaluate as evaluate_split
from aerun.analysis.features import kmeans_nmi, linear_probe
from aerun.analysis.likelihood import importance_weighted_bound
from aerun.analysis.likelihood import likelihood_report as vae_report
from aerun.analysis.pca import fit_pca, flatten, per_pixel_mse
from aerun.models import VAE

try:
    from tests.conftest import compose, run_aerun
except ImportError:
    from conftest import compose, run_aerun

REPORT_KEYS = {"run", "checkpoint", "model", "latent_dim", "recon_loss", "data", "reconstruction", "pca", "features",
               "settings"}


def low_rank_images(n=200, rank=3, shape=(1, 6, 6), seed=0) -> torch.Tensor:
    """uint8 images that lie (up to rounding) in a `rank`-dimensional affine subspace."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.rand(rank, math.prod(shape), generator=g) - 0.5
    x = 0.5 + 0.3 * torch.randn(n, rank, generator=g).clamp(-1.5, 1.5) @ basis / rank
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).view(n, *shape)


def evaluate_cfg(run_dir, *extra):
    return compose("evaluate", [f"run={run_dir}", "device=cpu", *extra])


def dataset_of(run_dir):
    cfg = runs.load_run(run_dir).config
    d = cfg["data"]
    return load_dataset(d["name"], d["root"], val_size=d["val_size"], seed=cfg["seed"],
                        max_train_samples=d["max_train_samples"], max_test_samples=d["max_test_samples"])


# ----------------------------------------------------------------------------- PCA
def test_pca_error_falls_with_k_and_is_zero_at_full_rank():
    images = low_rank_images(n=120, rank=36, shape=(1, 6, 6))
    x = flatten(images)
    errors = []
    for k in (1, 2, 4, 8, 16, 36):
        pca = fit_pca(images, k)
        errors.append(per_pixel_mse(pca.decode(pca.encode(x)), x).mean().item())
        components = pca.components
        assert torch.allclose(components.T @ components, torch.eye(k, dtype=components.dtype), atol=1e-8)
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-20
    assert fit_pca(images, 36).explained_variance_ratio == pytest.approx(1.0)


def test_pca_finds_a_low_rank_subspace_and_batches_do_not_matter():
    images = low_rank_images(n=300, rank=3)
    x = flatten(images)
    pca = fit_pca(images, 3, batch_size=7)
    assert per_pixel_mse(pca.decode(pca.encode(x)), x).mean() < 1e-5  # only the uint8 rounding is left
    one_batch = fit_pca(images, 3, batch_size=10_000)
    assert torch.allclose(pca.mean, one_batch.mean)
    assert torch.allclose((pca.components @ pca.components.T), one_batch.components @ one_batch.components.T,
                          atol=1e-8)
    with pytest.raises(ValueError):
        fit_pca(images, 37)


def test_a_linear_autoencoder_cannot_beat_pca(trained_run):
    """PCA's subspace is the best rank-k affine reconstruction of the data it is fitted on."""
    run_dir = trained_run("model=mlp_ae", "model.activation=identity", "model.hidden=[]", "model.latent_dim=4",
                          "trainer.max_epochs=15", "optim.lr=0.01", "trainer.batch_size=32")
    model = runs.load_run(run_dir).model
    train = dataset_of(run_dir).train.images
    model_mse = evaluate_split(model, train, recon_loss="mse")["mse"]
    x = flatten(train)
    pca = fit_pca(train, 4)
    pca_mse = per_pixel_mse(pca.decode(pca.encode(x)), x).mean().item()
    assert model_mse >= pca_mse - 1e-6
    assert model_mse < 2 * pca_mse  # and it got close: the comparison is not vacuous


# ----------------------------------------------------------------------------- IW bound
@pytest.fixture(scope="module")
def tiny_vae():
    torch.manual_seed(0)
    model = VAE((1, 6, 6), latent_dim=2, hidden=[16]).eval()
    x = flatten(low_rank_images(n=8, rank=2)).view(8, 1, 6, 6)
    return model, x


def test_iw_bound_with_one_sample_is_the_elbo_in_expectation(tiny_vae):
    model, x = tiny_vae
    repeated = x.repeat(500, 1, 1, 1)  # 4000 draws, 500 per image
    out = importance_weighted_bound(model, repeated, 1, chunk=1000, generator=torch.Generator().manual_seed(0))
    # with K = 1 the bound is one single-sample ELBO estimate (the KL estimated by sampling too)
    assert torch.allclose(out["iw_log_likelihood"], out["elbo_mc"], atol=1e-4)
    draws = out["elbo_mc"].view(500, 8)
    analytic = out["elbo"].view(500, 8)  # the closed-form KL: the same expectation, less noise
    standard_error = draws.std(0) / math.sqrt(500)
    assert ((draws.mean(0) - analytic.mean(0)).abs() < 4 * standard_error + 1e-3).all()


def test_iw_bound_tightens_with_k_and_chunks_bound_memory(tiny_vae):
    model, x = tiny_vae
    seen = []
    decode_raw = model.decode_raw
    model.decode_raw = lambda z, labels=None: (seen.append(z.shape[0]), decode_raw(z))[1]
    try:
        small = importance_weighted_bound(model, x, 10, chunk=3, generator=torch.Generator().manual_seed(1))
    finally:
        del model.decode_raw
    assert max(seen) <= 3 and sum(seen) == 8 * 10
    big = importance_weighted_bound(model, x, 10, chunk=10_000, generator=torch.Generator().manual_seed(2))
    assert (small["iw_log_likelihood"] - big["iw_log_likelihood"]).abs().max() < 0.05 * big["iw_log_likelihood"].abs().max()
    # Jensen: for every image and every draw, log mean w >= mean log w
    assert (small["iw_log_likelihood"] >= small["elbo_mc"] - 1e-5).all()
    k1 = importance_weighted_bound(model, x.repeat(50, 1, 1, 1), 1, 1000, generator=torch.Generator().manual_seed(3))
    k100 = importance_weighted_bound(model, x, 100, 1000, generator=torch.Generator().manual_seed(4))
    assert k100["iw_log_likelihood"].mean() >= k1["iw_log_likelihood"].mean()


def test_iw_nll_is_below_neg_elbo_on_a_trained_vae(trained_run):
    run_dir = trained_run("model=vae", "model.hidden=[64]", "model.latent_dim=4", "trainer.max_epochs=3")
    model = runs.load_run(run_dir).model
    test = dataset_of(run_dir).test.images
    report = vae_report(model, test, "bce", num_samples=50, chunk=2000, batch_size=64,
                        generator=torch.Generator().manual_seed(0))
    assert report["iw_nll"] <= report["neg_elbo"] and report["nll_le_neg_elbo"]
    assert report["iw_gap"] == pytest.approx(report["neg_elbo"] - report["iw_nll"])
    assert report["elbo"] == pytest.approx(-(report["recon"] + report["kl"]))
    # the same ELBO that training reports for the test split, up to sampling noise
    engine_elbo = evaluate_split(model, test, recon_loss="bce")["elbo"]
    assert report["elbo"] == pytest.approx(engine_elbo, rel=0.02)


# ----------------------------------------------------------------------------- features
def test_probe_and_kmeans_on_separable_codes():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 3
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    codes = (centres[labels] + 0.3 * torch.randn(300, 2, generator=g)).numpy()
    labels = labels.numpy()
    assert linear_probe(codes[:200], labels[:200], codes[200:], labels[200:]) == 1.0
    assert kmeans_nmi(codes, labels, 3) == pytest.approx(1.0)
    noise = torch.randn(300, 2, generator=g).numpy()
    assert kmeans_nmi(noise, labels, 3) < 0.1
    assert linear_probe(codes[:5], labels[:5] * 0, codes, labels) is None  # one class: nothing to fit
    assert kmeans_nmi(codes[:2], labels[:2], 3) is None


# ----------------------------------------------------------------------------- the report
def test_report_of_a_sparse_ae_in_process(trained_run):
    from aerun.commands.evaluate import evaluate_run

    run_dir = trained_run("model=shallow_ae", "model.latent_dim=64", "model.sparsity.kind=l1",
                          "model.sparsity.weight=0.05", "trainer.max_epochs=3")
    report = evaluate_run(evaluate_cfg(run_dir, "evaluate.probe_max_train=100", "evaluate.max_test_samples=50"))
    assert REPORT_KEYS <= set(report) and "vae" not in report and "denoising" not in report
    assert report["data"]["test_images"] == 50
    assert report["features"]["probe_train_images"] == 100
    s = report["sparsity"]
    assert s["kind"] == "l1" and s["weight"] == 0.05
    assert 0.3 < s["zero_fraction"] <= 1  # ReLU codes under an L1 penalty: most entries exactly 0
    assert s["active_per_code"] == pytest.approx((1 - s["zero_fraction"]) * 64, rel=1e-4)
    assert report["pca"]["latent_dim"] == 64
    for side in ("model", "pca"):
        assert 0 <= report["features"][side]["probe_accuracy"] <= 1
        assert 0 <= report["features"][side]["kmeans_nmi"] <= 1


def test_denoising_run_reports_the_psnr_triple(trained_run):
    from aerun.commands.evaluate import evaluate_run

    run_dir = trained_run("model=cnn_ae", "model.latent_dim=8", "model.channels=[4,8]", "data.noise.kind=gaussian",
                          "data.noise.level=0.4")
    report = evaluate_run(evaluate_cfg(run_dir, "evaluate.probe_max_train=64"))
    dn = report["denoising"]
    assert dn["kind"] == "gaussian" and dn["level"] == 0.4
    assert dn["psnr_gain"] == pytest.approx(dn["psnr_denoised"] - dn["psnr_noisy"])
    assert dn["psnr_noisy"] < 13  # sigma 0.4 on [0, 1] pixels, clipped: about 8-11 dB
    assert dn["psnr_denoised"] == pytest.approx(-10 * math.log10(dn["mse_denoised"]), abs=3)


def test_kl_sparse_ae_reports_its_mean_activation_against_rho(trained_run):
    from aerun.commands.evaluate import evaluate_run

    run_dir = trained_run("model=shallow_ae", "model.latent_dim=16", "model.sparsity.kind=kl",
                          "model.sparsity.rho=0.1", "model.sparsity.weight=1.0")
    s = evaluate_run(evaluate_cfg(run_dir, "evaluate.probe_max_train=64"))["sparsity"]
    assert s["kind"] == "kl" and s["target_rho"] == 0.1
    assert 0 <= s["mean_activation"] < 1


# ----------------------------------------------------------------------------- the CLI
def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("aerun: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_writes_evaluation_json_in_its_own_run_dir(trained_run, data_root, tmp_path):
    run_dir = trained_run("model=vae", "model.hidden=[32]", "model.latent_dim=3")
    before = sorted(p.name for p in run_dir.iterdir())
    proc = run_aerun("evaluate", f"run={run_dir}", f"data.root={data_root}", "evaluate.iw_samples=8",
                     "evaluate.probe_max_train=64", "device=cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    written = list((tmp_path / "outputs").rglob("evaluation.json"))
    assert len(written) == 1
    report = json.loads(written[0].read_text())
    assert REPORT_KEYS | {"vae"} <= set(report)
    assert {"elbo", "iw_nll", "iw_samples", "kl", "recon", "nll_le_neg_elbo", "active_units"} <= set(report["vae"])
    assert report["vae"]["iw_samples"] == 8 and report["vae"]["iw_nll"] <= report["vae"]["neg_elbo"]
    assert {"model", "pca"} <= set(report["features"])
    assert {"mse", "bce", "psnr"} <= set(report["reconstruction"])
    assert report["run"] == str(run_dir.resolve())
    assert f"wrote {written[0].resolve()}" in proc.stdout
    assert "IW-NLL (K=8)" in proc.stdout and "PCA-3" in proc.stdout
    assert sorted(p.name for p in run_dir.iterdir()) == before  # the trained run is only read


def test_cli_positional_run_and_missing_data_root(trained_run, tmp_path):
    run_dir = trained_run("model=linear_ae")
    proc = run_aerun("evaluate", str(run_dir), "data.root=/no/such/folder", "device=cpu", cwd=tmp_path)
    assert_one_line_error(proc, "data.root", "no such directory")


WRONG_WEIGHTS = {  # best.pt contents -> a fragment of the one-line error
    "empty": (lambda path: path.write_bytes(b""), "empty"),
    "png": (lambda path: path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64)), "is not a checkpoint file (a PNG image"),
    "foreign": (lambda path: torch.save({"weights": torch.zeros(2)}, path), "not an aerun checkpoint"),
}


@pytest.mark.parametrize("case", ["missing", "no_run", "a_file", "not_a_run", "no_weights", *WRONG_WEIGHTS,
                                  "bad_option"])
def test_cli_errors_are_one_line_and_exit_2(case, tmp_path):
    (tmp_path / "notes.txt").write_text("not a run\n")
    args = {
        "missing": ([f"run={tmp_path / 'nope'}"], ["no such directory"]),
        "no_run": ([], ["run: missing"]),
        "a_file": ([f"run={tmp_path / 'notes.txt'}"], ["not a directory"]),
        "not_a_run": ([f"run={tmp_path}"], ["not an aerun run directory"]),
        "bad_option": ([f"run={tmp_path}", "evaluate.iw_samples=0"], ["evaluate.iw_samples", ">= 1"]),
    }
    if case in args:
        extra, fragments = args[case]
    else:
        run_dir = tmp_path / "run"
        run_dir.mkdir()
        (run_dir / runs.CONFIG_FILE).write_text("model: {}\n")
        if case == "no_weights":
            fragments = ["no best.pt", "saved no weights"]
        else:
            make, fragment = WRONG_WEIGHTS[case]
            make(run_dir / runs.BEST)
            fragments = ["best.pt", fragment]
        extra = [f"run={run_dir}"]
    proc = run_aerun("evaluate", *extra, "device=cpu", cwd=tmp_path)
    assert_one_line_error(proc, *fragments)
    assert not list(Path(tmp_path).rglob("evaluation.json"))
