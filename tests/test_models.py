"""The model family and the loss terms: shapes at any image size, the objectives, and
analytic values (KL of identical Gaussians is 0; KL-to-rho is 0 at rho)."""

from __future__ import annotations

import math

import pytest
import torch

from aerun import losses
from aerun.models import VAE, ConvAutoencoder, ConvVAE, MLPAutoencoder, interpolate_codes, kl_warmup

SHAPES = [(1, 28, 28), (3, 32, 32), (1, 29, 31), (3, 17, 9), (1, 8, 8)]


def build(cls, shape, latent_dim=5, **kwargs):
    small = {MLPAutoencoder: dict(hidden=[32, 16]), VAE: dict(hidden=[32]),
             ConvAutoencoder: dict(channels=[4, 8]), ConvVAE: dict(channels=[4, 8], trunk_dim=16)}[cls]
    return cls(shape, latent_dim=latent_dim, **{**small, **kwargs})


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("cls", [MLPAutoencoder, ConvAutoencoder, VAE, ConvVAE], ids=lambda c: c.__name__)
def test_shapes_at_any_image_size(cls, shape):
    torch.manual_seed(0)
    model = build(cls, shape)
    x = torch.rand(3, *shape)
    z = model.encode(x)
    assert z.shape == (3, 5)
    out = model(x)
    assert out.recon.shape == (3, *shape)
    assert out.z.shape == (3, 5)
    image = model.decode(z)
    assert image.shape == (3, *shape)
    assert image.min() >= 0 and image.max() <= 1  # sigmoid outputs
    assert model.reconstruct(x).shape == (3, *shape)
    assert model.interpolate(x[0], x[1], steps=4).shape == (4, *shape)
    if model.is_variational:
        assert out.mu.shape == out.logvar.shape == (3, 5)
        assert torch.equal(z, out.mu)  # encode gives the mean
        assert model.sample_prior(6, torch.Generator().manual_seed(0)).shape == (6, *shape)
    else:
        with pytest.raises(NotImplementedError):
            model.sample_prior(2)


def test_cifar_conv_models_reach_an_8x8_map():
    """3x32x32 through two stride-2 convs: the whole-map conv is 8x8 (7x7 on MNIST)."""
    model = ConvAutoencoder((3, 32, 32), latent_dim=16, channels=[16, 32])
    whole_map = [m for m in model.encoder if isinstance(m, torch.nn.Conv2d)][-1]
    assert whole_map.kernel_size == (8, 8)
    mnist = ConvAutoencoder((1, 28, 28), latent_dim=16, channels=[16, 32])
    assert [m for m in mnist.encoder if isinstance(m, torch.nn.Conv2d)][-1].kernel_size == (7, 7)
    vae = ConvVAE((3, 32, 32), latent_dim=16)
    assert vae(torch.rand(2, 3, 32, 32)).recon.shape == (2, 3, 32, 32)


def test_overcomplete_shallow_ae_and_linear_ae():
    over = MLPAutoencoder((1, 28, 28), latent_dim=1024, hidden=[], latent_activation="relu",
                          output_activation="sigmoid")
    z = over.encode(torch.rand(4, 1, 28, 28))
    assert z.shape == (4, 1024) and z.min() >= 0
    linear = MLPAutoencoder((1, 28, 28), latent_dim=3, hidden=[], activation="identity")
    assert not linear.output_is_logits  # output_activation=auto drops the sigmoid for a linear AE
    x = torch.rand(2, 1, 28, 28)
    # a linear AE is affine: decode(encode(a x + b y)) = a f(x) + b f(y) with a + b = 1
    mix = linear.reconstruct(0.3 * x[:1] + 0.7 * x[1:])
    assert torch.allclose(mix, 0.3 * linear.reconstruct(x[:1]) + 0.7 * linear.reconstruct(x[1:]), atol=1e-5)


# ----------------------------------------------------------------------------- losses
def test_kl_of_identical_gaussians_is_zero():
    zeros = torch.zeros(4, 7)
    assert torch.equal(losses.gaussian_kl_per_dim(zeros, zeros), zeros)


def test_gaussian_kl_matches_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    expected = torch.distributions.kl_divergence(q, p)
    assert torch.allclose(losses.gaussian_kl_per_dim(mu, logvar), expected, atol=1e-5)
    assert (losses.gaussian_kl_per_dim(mu, logvar) >= 0).all()


def test_reconstruction_per_image_sums_over_pixels():
    target = torch.full((2, 1, 4, 4), 0.25)
    output = torch.full((2, 1, 4, 4), 0.75)
    assert torch.allclose(losses.reconstruction_per_image(output, target, "mse", False), torch.full((2,), 16 * 0.25))
    bce = losses.reconstruction_per_image(torch.logit(output), target, "bce", True)
    expected = -16 * (0.25 * math.log(0.75) + 0.75 * math.log(0.25))
    assert torch.allclose(bce, torch.full((2,), expected), atol=1e-4)
    # logits and probabilities give the same BCE
    assert torch.allclose(bce, losses.reconstruction_per_image(output, target, "bce", False), atol=1e-4)
    with pytest.raises(ValueError, match="unknown reconstruction loss"):
        losses.reconstruction_per_image(output, target, "l2", False)


def test_l1_code_penalty_is_the_mean_l1_norm():
    z = torch.tensor([[1.0, -2.0, 0.0], [0.5, 0.5, -1.0]])
    assert losses.l1_code_penalty(z).item() == pytest.approx((3.0 + 2.0) / 2)
    assert losses.l1_code_penalty(torch.zeros(3, 4)).item() == 0


def test_kl_sparsity_penalty_is_zero_at_rho_and_positive_elsewhere():
    rho = 0.05
    at_rho = torch.full((16, 8), rho)
    assert losses.kl_sparsity_penalty(at_rho, rho).item() == pytest.approx(0.0, abs=1e-6)
    # mean activation == rho per unit even though single entries differ
    mixed = torch.zeros(20, 3)
    mixed[0] = 1.0  # mean over the batch: 1/20 = 0.05
    assert losses.kl_sparsity_penalty(mixed, rho).item() == pytest.approx(0.0, abs=1e-6)
    dense = torch.full((16, 8), 0.5)
    expected = 8 * (rho * math.log(rho / 0.5) + (1 - rho) * math.log((1 - rho) / 0.5))
    assert losses.kl_sparsity_penalty(dense, rho).item() == pytest.approx(expected, rel=1e-5)


def test_l1_weight_penalty_skips_biases():
    layer = torch.nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.fill_(-0.5)
        layer.bias.fill_(10.0)
    assert losses.l1_weight_penalty(layer.parameters()).item() == pytest.approx(3.0)


# ----------------------------------------------------------------------------- objectives
def test_sparse_objective_adds_the_weighted_penalty():
    torch.manual_seed(0)
    for kind in ("l1", "kl"):
        model = MLPAutoencoder((1, 8, 8), latent_dim=32, hidden=[], latent_activation="relu",
                               output_activation="sigmoid", sparsity={"kind": kind, "weight": 0.3, "rho": 0.1})
        x = torch.rand(6, 1, 8, 8)
        out = model(x)
        terms = model.objective(out, x, "mse")
        assert set(terms) == {"recon", "sparsity", "loss"}
        assert terms["loss"].item() == pytest.approx(terms["recon"].item() + 0.3 * terms["sparsity"].item(), rel=1e-6)
    plain = MLPAutoencoder((1, 8, 8), latent_dim=4, hidden=[])
    assert "sparsity" not in plain.objective(plain(x), x, "mse")


def test_kl_sparsity_activations_can_reach_a_small_rho():
    """ReLU codes go through tanh (0 -> 0), not a sigmoid (which maps every ReLU code to >= 0.5)."""
    relu = MLPAutoencoder((1, 8, 8), latent_dim=4, hidden=[], latent_activation="relu")
    zeros = torch.zeros(5, 4)
    assert torch.equal(relu.sparsity_activations(zeros), zeros)
    assert relu.sparsity_activations(torch.full((1, 4), 100.0)).max() <= 1
    sigmoid = MLPAutoencoder((1, 8, 8), latent_dim=4, hidden=[], latent_activation="sigmoid")
    z = torch.rand(3, 4)
    assert torch.equal(sigmoid.sparsity_activations(z), z)
    identity = MLPAutoencoder((1, 8, 8), latent_dim=4, hidden=[])
    assert torch.allclose(identity.sparsity_activations(zeros), torch.full((5, 4), 0.5))


def test_vae_objective_is_recon_plus_weighted_kl():
    torch.manual_seed(0)
    model = VAE((1, 8, 8), latent_dim=3, hidden=[16], beta=4.0, kl_warmup_epochs=2)
    x = torch.rand(5, 1, 8, 8)
    out = model(x)
    terms = model.objective(out, x, "bce", kl_scale=0.5)
    kl = losses.gaussian_kl_per_dim(out.mu, out.logvar).sum(1).mean()
    assert terms["kl"].item() == pytest.approx(kl.item(), rel=1e-5)
    assert terms["kl_weighted"].item() == pytest.approx(4.0 * 0.5 * kl.item(), rel=1e-5)
    assert terms["loss"].item() == pytest.approx(terms["recon"].item() + terms["kl_weighted"].item(), rel=1e-5)
    assert terms["kl_per_dim"].shape == (3,)
    assert [kl_warmup(p, model.kl_warmup_epochs) for p in (0, 1, 2, 5)] == [0.0, 0.5, 1.0, 1.0]
    assert kl_warmup(0, VAE((1, 8, 8), latent_dim=3, hidden=[16]).kl_warmup_epochs) == 1.0


def test_reparameterisation_passes_gradients_and_logvar_stays_bounded():
    torch.manual_seed(0)
    model = ConvVAE((1, 12, 12), latent_dim=2, channels=[4], trunk_dim=8)
    x = torch.rand(4, 1, 12, 12)
    terms = model.objective(model(x), x, "bce")
    terms["loss"].backward()
    assert model.to_stats.weight.grad is not None and model.to_stats.weight.grad.abs().sum() > 0
    huge = model.safe_logvar(torch.tensor([-1e6, -50.0, 0.0, 50.0, 1e6]))
    assert huge.abs().max() <= model.LOGVAR_LIMIT and huge[2] == 0
    assert torch.isfinite(losses.gaussian_kl_per_dim(torch.zeros(5), huge)).all()


def test_interpolate_codes_endpoints():
    z0, z1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    for method in ("linear", "slerp"):
        path = interpolate_codes(z0, z1, 5, method)
        assert path.shape == (5, 2)
        assert torch.allclose(path[0], z0, atol=1e-6) and torch.allclose(path[-1], z1, atol=1e-6)
    # slerp between unit vectors stays on the unit circle
    assert torch.allclose(interpolate_codes(z0, z1, 7, "slerp").norm(dim=1), torch.ones(7), atol=1e-5)
    with pytest.raises(ValueError, match="linear or slerp"):
        interpolate_codes(z0, z1, 3, "cubic")


@pytest.mark.parametrize("recon_loss", ["bce", "mse"])
def test_the_reported_elbo_is_a_bound_under_the_training_likelihood(recon_loss):
    """engine.evaluate's ELBO uses the likelihood the loss stands for (Bernoulli for bce, a
    Gaussian of variance 1/2 for mse), so with beta=1 it is minus the loss up to that density's
    constant -- and it agrees with the exact Gaussian log density from torch.distributions."""
    from aerun.engine import evaluate

    torch.manual_seed(0)
    model = VAE((1, 8, 8), latent_dim=3, hidden=[16])
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8)
    metrics = evaluate(model, images, batch_size=16, recon_loss=recon_loss)
    constant = 0.5 * math.log(math.pi) * 64 if recon_loss == "mse" else 0.0
    assert metrics["elbo"] == pytest.approx(-metrics["loss"] - constant, rel=1e-5)
    if recon_loss == "mse":
        x = torch.rand(4, 1, 8, 8)
        raw = torch.randn(4, 1, 8, 8)
        exact = torch.distributions.Normal(torch.sigmoid(raw), math.sqrt(0.5)).log_prob(x).flatten(1).sum(1)
        assert torch.allclose(-losses.decoder_nll_per_image(raw, x, "mse", True), exact, atol=1e-4)


def test_recon_variety_tells_a_model_that_reads_its_input_from_one_that_outputs_the_mean():
    from aerun.models.base import collapse_warning, reconstruction_sums

    images = torch.rand(32, 1, 28, 28)
    exact = reconstruction_sums(images, images)["recon_variety"] / 32
    mean_image = reconstruction_sums(images.mean(0, keepdim=True).expand_as(images), images)["recon_variety"] / 32
    assert exact.item() == pytest.approx(1.0) and mean_image.item() == pytest.approx(0.0, abs=1e-6)
    assert collapse_warning({"recon_variety": mean_image.item()})[0].startswith("the reconstructions barely depend")
    assert collapse_warning({"recon_variety": 0.5}) == [] and collapse_warning({}) == []
    one = reconstruction_sums(images[:1], images[:1])["recon_variety"]  # one image has no spread: neutral
    assert one.item() == 1.0
