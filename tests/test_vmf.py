"""The von Mises-Fisher distribution (aerun/models/vmf.py) against scipy and closed forms: log I_nu
and its gradient, the sampler's moments and distribution, log_prob's normalisation, the KL to the
uniform prior, gradients at extreme kappa in float32, the uniform prior, slerp."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special as sp
import scipy.stats as st
import torch

from aerun.models import vmf

HAS_SCIPY_VMF = hasattr(st, "vonmises_fisher")
needs_scipy_vmf = pytest.mark.skipif(not HAS_SCIPY_VMF, reason="scipy.stats.vonmises_fisher needs scipy >= 1.11")
NUS = [0.0, 0.5, 1.0, 4.5, 31.0, 63.0]
N_SAMPLES = 20_000


def _ref_log_iv(nu, k):
    with np.errstate(divide="ignore"):
        return np.log(sp.ive(nu, k)) + k


def _unit(d, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(1, d, generator=g, dtype=torch.float64), dim=-1)


def _mean_length(d, kappa):
    return vmf.bessel_ratio(d / 2 - 1, torch.tensor(kappa, dtype=torch.float64)).item()


# -- Bessel functions ----------------------------------------------------------------------------
@pytest.mark.parametrize("nu", NUS)
def test_log_bessel_iv_matches_scipy_in_float64_and_float32(nu):
    kappa = np.logspace(-4, 5, 400).astype(np.float32).astype(np.float64)  # exact in both dtypes
    ref = _ref_log_iv(nu, kappa)
    finite = np.isfinite(ref) & (sp.ive(nu, kappa) > 1e-290)
    assert finite.sum() > 300
    scale = np.maximum(1.0, np.abs(ref[finite]))  # relative error, absolute where |log I| < 1
    got64 = vmf.log_bessel_iv(nu, torch.tensor(kappa)).numpy()
    assert np.max(np.abs(got64[finite] - ref[finite]) / scale) < 1e-8
    got32 = vmf.log_bessel_iv(nu, torch.tensor(kappa, dtype=torch.float32))
    assert got32.dtype == torch.float32 and torch.isfinite(got32).all()  # no overflow at kappa = 1e5
    assert np.max(np.abs(got32.double().numpy()[finite] - ref[finite]) / scale) < 1e-6


def test_log_bessel_iv_small_kappa_keeps_relative_precision():
    """log I_0(k) = k^2/4 - k^4/64 + ...: tiny, so only a series gets its digits right."""
    k = torch.tensor([1e-6, 1e-4, 1e-2], dtype=torch.float64)
    expected = k**2 / 4 - k**4 / 64
    assert torch.allclose(vmf.log_bessel_iv(0.0, k), expected, rtol=1e-10, atol=0)
    # log I~_nu = log I_nu - nu log(k/2) + lgamma(nu+1) ~ k^2 / (4 (nu+1)), digits intact
    assert torch.allclose(vmf.log_bessel_iv_scaled(4.5, k), k**2 / 22 - k**4 / (32 * 5.5**2 * 6.5), rtol=1e-10, atol=0)


@pytest.mark.parametrize("nu", NUS)
def test_bessel_ratio_matches_scipy(nu):
    kappa = np.logspace(-4, 5, 300)
    ok = sp.ive(nu + 1, kappa) > 1e-290
    ref = sp.ive(nu + 1, kappa[ok]) / sp.ive(nu, kappa[ok])
    got = vmf.bessel_ratio(nu, torch.tensor(kappa[ok])).numpy()
    assert np.max(np.abs(got / ref - 1)) < 1e-9
    got32 = vmf.bessel_ratio(nu, torch.tensor(kappa[ok], dtype=torch.float32)).double().numpy()
    assert np.max(np.abs(got32 / ref - 1)) < 1e-6 and np.all(got32 <= 1)


@pytest.mark.parametrize("nu", [0.0, 0.5, 4.5, 31.0])
def test_gradients_of_log_bessel_iv_and_ratio(nu):
    kappa = torch.logspace(-3, 4, 25, dtype=torch.float64).requires_grad_()
    log_i = vmf.log_bessel_iv(nu, kappa)
    (grad,) = torch.autograd.grad(log_i.sum(), kappa)
    k = kappa.detach().numpy()
    analytic = sp.ive(nu + 1, k) / sp.ive(nu, k) + nu / k  # d/dk log I_nu = I_(nu+1) / I_nu + nu / k
    assert np.allclose(grad.numpy(), analytic, rtol=1e-9)
    assert torch.autograd.gradcheck(lambda x: vmf.log_bessel_iv(nu, x), (kappa,))  # finite differences
    assert torch.autograd.gradcheck(lambda x: vmf.bessel_ratio(nu, x), (kappa,))
    assert torch.autograd.gradgradcheck(lambda x: vmf.log_bessel_iv(nu, x), (kappa,))


def test_negative_order_is_refused():
    with pytest.raises(ValueError, match="nu >= 0"):
        vmf.log_bessel_iv(-0.5, torch.ones(1))


# -- the sampler ---------------------------------------------------------------------------------
SAMPLER_CASES = [(2, 3.0), (3, 1.0), (3, 50.0), (5, 10.0), (10, 100.0), (20, 1e4), (10, 1e-3)]


@pytest.mark.parametrize("d,kappa", SAMPLER_CASES)
def test_samples_have_the_vmf_moments(d, kappa):
    loc = _unit(d, seed=d)
    q = vmf.VonMisesFisher(loc, torch.tensor([[kappa]], dtype=torch.float64))
    z = q.rsample_k(N_SAMPLES, torch.Generator().manual_seed(1))[0]  # [n, d]
    assert z.shape == (N_SAMPLES, d)
    assert torch.allclose(z.norm(dim=-1), torch.ones(N_SAMPLES, dtype=z.dtype), atol=1e-12)
    a = _mean_length(d, kappa)
    w = z @ loc[0]  # [n]
    second = 1 - (d - 1) * a / kappa  # E[w^2]
    standard_error = math.sqrt(max(second - a * a, 1e-12) / N_SAMPLES)
    assert abs(w.mean().item() - a) < 4 * standard_error
    if kappa >= 1:
        assert torch.nn.functional.cosine_similarity(z.mean(0), loc[0], dim=0) > 0.99
    # E[x x^T] = (A / kappa) I + (1 - d A / kappa) loc loc^T: the tangent direction is uniform
    moment = z.T @ z / N_SAMPLES
    expected = (a / kappa) * torch.eye(d, dtype=z.dtype) + (1 - d * a / kappa) * loc.T @ loc
    assert (moment - expected).abs().max() < 5 / math.sqrt(N_SAMPLES)


@needs_scipy_vmf
@pytest.mark.parametrize("d,kappa", [(3, 1.0), (3, 50.0), (5, 10.0), (10, 100.0), (20, 1e4)])
def test_sampler_matches_scipy_vonmises_fisher(d, kappa):
    loc = _unit(d, seed=10 + d)
    z = vmf.VonMisesFisher(loc, torch.tensor([[kappa]])).rsample_k(N_SAMPLES, torch.Generator().manual_seed(2))[0]
    w = (z.double() @ loc[0]).numpy()
    ref = st.vonmises_fisher(loc[0].numpy(), kappa).rvs(N_SAMPLES, random_state=3) @ loc[0].numpy()
    assert st.ks_2samp(w, ref).pvalue > 1e-3  # the whole distribution of loc . x, not just its mean
    standard_error = math.sqrt((np.var(w) + np.var(ref)) / N_SAMPLES)
    assert abs(np.linalg.norm(z.double().mean(0).numpy()) - np.linalg.norm(ref.mean())) < 4 * standard_error + 1e-3


def test_sampler_is_seeded_by_its_generator_and_loc_may_be_plus_or_minus_e1():
    loc = torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]])
    q = vmf.VonMisesFisher(loc, torch.tensor([[5.0], [5.0]]))
    first = q.rsample_k(500, torch.Generator().manual_seed(7))  # [B, k, d]
    assert torch.equal(first, q.rsample_k(500, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, q.rsample_k(500, torch.Generator().manual_seed(8)))
    a = _mean_length(4, 5.0)
    assert abs(first[0, :, 0].mean().item() - a) < 0.05 and abs(first[1, :, 0].mean().item() + a) < 0.05


def test_rsample_shapes_follow_torch_distributions():
    q = vmf.VonMisesFisher(torch.nn.functional.normalize(torch.randn(4, 6), dim=-1), torch.full((4,), 3.0))
    assert q.rsample().shape == (4, 6)
    assert q.rsample((2, 3)).shape == (2, 3, 4, 6)
    assert q.log_prob(q.rsample((5,))).shape == (5, 4)
    assert q.mean.shape == (4, 6) and q.entropy().shape == (4,) and q.kl_to_uniform().shape == (4,)


def test_rejection_cap_gives_a_clear_error(monkeypatch):
    monkeypatch.setattr(vmf, "MAX_REJECTION_ROUNDS", 1)
    q = vmf.VonMisesFisher(_unit(10, 0).float(), torch.tensor([[1.0]]))
    with pytest.raises(RuntimeError, match=r"still rejected after 1 rounds \(d=10\)"):
        q.rsample_k(5000, torch.Generator().manual_seed(0))


# -- densities and KL ----------------------------------------------------------------------------
@needs_scipy_vmf
@pytest.mark.parametrize("d,kappa", [(3, 0.01), (3, 2.0), (5, 30.0), (16, 1e4)])
def test_log_prob_matches_scipy(d, kappa):
    loc = _unit(d, seed=20 + d)
    x = vmf.HypersphericalUniform(d).sample(50, torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.cat([x, loc])  # include the mode, where the density is largest
    ref = st.vonmises_fisher(loc[0].numpy(), kappa).logpdf(x.numpy())
    got = vmf.VonMisesFisher(loc, torch.tensor([[kappa]], dtype=torch.float64)).log_prob(x)
    assert np.allclose(got.numpy(), ref, rtol=1e-9, atol=1e-9)
    assert math.isclose(vmf.VonMisesFisher(loc, torch.tensor([[kappa]], dtype=torch.float64)).entropy().item(),
                        st.vonmises_fisher(loc[0].numpy(), kappa).entropy(), rel_tol=1e-8, abs_tol=1e-8)


@pytest.mark.parametrize("d,kappa", [(3, 2.0), (5, 4.0)])
def test_density_integrates_to_one(d, kappa):
    """E_uniform[exp(log_prob)] * area = integral of the density over the sphere = 1."""
    x = vmf.HypersphericalUniform(d).sample(200_000, torch.Generator().manual_seed(4), dtype=torch.float64)
    density = vmf.VonMisesFisher(_unit(d, 5), torch.tensor([[kappa]], dtype=torch.float64)).log_prob(x).exp()
    integral = density * math.exp(vmf.log_sphere_area(d))
    assert abs(integral.mean().item() - 1) < 4 * integral.std().item() / math.sqrt(x.shape[0])


def test_kl_to_uniform_is_nonnegative_and_vanishes_as_kappa_goes_to_zero():
    kappa = torch.logspace(-6, 5, 60, dtype=torch.float64)[:, None]
    for d in [2, 3, 5, 10, 64, 128]:
        loc = torch.zeros(60, d, dtype=torch.float64)
        loc[:, 0] = 1
        kl = vmf.VonMisesFisher(loc, kappa).kl_to_uniform()
        assert (kl >= 0).all() and (kl.diff() > 0).all()  # KL grows with kappa
        tiny = vmf.VonMisesFisher(loc[:1], torch.tensor([[1e-4]], dtype=torch.float64)).kl_to_uniform()
        assert tiny.item() < 1e-6 and math.isclose(tiny.item(), 1e-8 / (2 * d), rel_tol=1e-3)  # ~ kappa^2 / 2d
        for dtype in (torch.float32, torch.float64):
            q = vmf.VonMisesFisher(loc.to(dtype), kappa.to(dtype))
            assert torch.isfinite(q.kl_to_uniform()).all() and torch.isfinite(q.entropy()).all()


@pytest.mark.parametrize("d,kappa", [(3, 5.0), (10, 50.0), (32, 1e3)])
def test_kl_matches_a_monte_carlo_estimate(d, kappa):
    q = vmf.VonMisesFisher(_unit(d, 30 + d), torch.tensor([[kappa]], dtype=torch.float64))
    z = q.rsample((N_SAMPLES,), torch.Generator().manual_seed(6))  # [n, 1, d]
    terms = q.log_prob(z)[:, 0] - vmf.HypersphericalUniform(d).log_prob(z)[:, 0]  # log q - log p
    standard_error = terms.std().item() / math.sqrt(N_SAMPLES)
    assert abs(terms.mean().item() - q.kl_to_uniform().item()) < 4 * standard_error


# -- gradients at the extremes, float32 ----------------------------------------------------------
@pytest.mark.parametrize("d", [3, 10])
@pytest.mark.parametrize("kappa", [1e-3, 1.0, 1e4])
def test_gradients_reach_loc_and_kappa_in_float32(d, kappa):
    raw_loc = torch.randn(8, d, generator=torch.Generator().manual_seed(d)).requires_grad_()
    raw_kappa = torch.full((8, 1), kappa).requires_grad_()
    q = vmf.VonMisesFisher(torch.nn.functional.normalize(raw_loc, dim=-1), raw_kappa)
    target = torch.randn(d, generator=torch.Generator().manual_seed(1))
    z = q.rsample_k(64, torch.Generator().manual_seed(2))  # [B, k, d]
    assert z.dtype == torch.float32 and torch.isfinite(z).all()
    ((z @ target).sum() + q.kl_to_uniform().sum()).backward()
    for grad in (raw_loc.grad, raw_kappa.grad):
        assert torch.isfinite(grad).all() and (grad.abs() > 0).all()
    values = [q.kl_to_uniform(), q.entropy(), q.log_prob(z.transpose(0, 1)), q.mean]
    assert all(torch.isfinite(v).all() for v in values)
    (kl_grad,) = torch.autograd.grad(q.kl_to_uniform().sum(), raw_kappa)
    assert torch.isfinite(kl_grad).all() and (kl_grad > 0).all()  # KL increases with kappa


def test_kappa_gradient_of_the_d3_sampler_is_unbiased():
    """For d = 3 w is an exact inverse CDF of fixed noise, so E[dw/dkappa] = dA_3/dkappa."""
    kappa = torch.tensor([[2.0]], dtype=torch.float64, requires_grad=True)
    q = vmf.VonMisesFisher(torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64), kappa)
    q.rsample_k(N_SAMPLES, torch.Generator().manual_seed(9))[0, :, 2].mean().backward()
    k = 2.0
    analytic = 1 / k**2 - 1 / math.sinh(k) ** 2  # d/dk of A_3 = coth k - 1/k
    assert math.isclose(kappa.grad.item(), analytic, rel_tol=0.02)


# -- the uniform prior and slerp -----------------------------------------------------------------
@pytest.mark.parametrize("d", [2, 3, 17])
def test_hyperspherical_uniform(d):
    prior = vmf.HypersphericalUniform(d)
    x = prior.sample(N_SAMPLES, torch.Generator().manual_seed(0), dtype=torch.float64)
    assert x.shape == (N_SAMPLES, d) and torch.allclose(x.norm(dim=-1), torch.ones(N_SAMPLES, dtype=x.dtype))
    assert x.mean(0).abs().max() < 5 / math.sqrt(N_SAMPLES)
    assert (x.T @ x / N_SAMPLES - torch.eye(d, dtype=x.dtype) / d).abs().max() < 5 / math.sqrt(N_SAMPLES)
    area = {2: 2 * math.pi, 3: 4 * math.pi}.get(d, 2 * math.pi ** (d / 2) / math.gamma(d / 2))
    assert torch.allclose(prior.log_prob(x[:3]), torch.full((3,), -math.log(area), dtype=x.dtype))
    assert math.isclose(prior.entropy(dtype=torch.float64).item(), math.log(area), rel_tol=1e-12)
    # a vMF with kappa -> 0 is this distribution
    q = vmf.VonMisesFisher(x[:1], torch.tensor([[1e-8]], dtype=torch.float64))
    assert torch.allclose(q.log_prob(x[:5]), prior.log_prob(x[:5]), atol=1e-7)


@pytest.mark.parametrize("case", ["generic", "equal", "nearly_equal", "antipodal", "nearly_antipodal"])
def test_slerp_stays_on_the_sphere_and_hits_both_ends(case):
    z0, other = _unit(8, seed=0)[0], _unit(8, seed=1)[0]
    z1 = {"generic": other, "equal": z0.clone(), "nearly_equal": z0 + 1e-9 * other, "antipodal": -z0,
          "nearly_antipodal": -z0 + 1e-9 * other}[case]
    z1 = z1 / z1.norm()
    path = vmf.slerp(z0, z1, 11)
    assert path.shape == (11, 8) and torch.isfinite(path).all()
    assert torch.allclose(path.norm(dim=-1), torch.ones(11, dtype=path.dtype), atol=1e-12)
    assert torch.allclose(path[0], z0, atol=1e-9) and torch.allclose(path[-1], z1, atol=1e-6)
    steps = torch.arccos((path[1:] * path[:-1]).sum(-1).clamp(-1, 1))  # equal angles along the way
    total = torch.arccos((z0 * z1).sum().clamp(-1, 1))
    assert torch.allclose(steps, torch.full_like(steps, total.item() / 10), atol=1e-5)
