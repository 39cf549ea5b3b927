"""The von Mises-Fisher distribution on S^(d-1) for hyperspherical VAEs (Davidson et al. 2018).

vMF(loc, kappa) has density C_d(kappa) exp(kappa loc.x) on the unit sphere in R^d. Everything here
is torch ops on the tensors' device (the one host sync is the rejection sampler's, once a round),
so it trains on a GPU. The Bessel quantities are computed in float64 whatever the input dtype (they are
[B, 1] tensors, so this costs nothing) because log I_nu(kappa) ~ kappa cancels against kappa * A_d in
the KL; results come back in the input dtype.

log I_nu(kappa): a power series for kappa <= 4 and, above, the uniform asymptotic (Debye) expansion
at an order nu + n >= 20, brought down to nu by the backward recurrence of the ratio
I_(v+1)/I_v (stable in that direction). I_nu(1e4) overflows float64; its log does not.
"""

from __future__ import annotations

import math

import torch

MAX_REJECTION_ROUNDS = 100  # Wood's sampler accepts > 50% of proposals for every (d, kappa)
_DEBYE_MIN_ORDER = 20.0  # the Debye expansion to u_5 is good to 1e-9 relative at orders >= 20
_SERIES_MAX_KAPPA = 4.0
_SERIES_TERMS = 24  # the last term at kappa = 4 is < 1e-20 of the sum

# Debye polynomials u_k(t) = t^k * P_k(t^2) (Abramowitz & Stegun 9.3.9), P_k low degree first.
_DEBYE_POLYS = (
    ((3.0, -5.0), 24.0),
    ((81.0, -462.0, 385.0), 1152.0),
    ((30375.0, -369603.0, 765765.0, -425425.0), 414720.0),
    ((4465125.0, -94121676.0, 349922430.0, -446185740.0, 185910725.0), 39813120.0),
    ((1519035525.0, -49286948607.0, 284499769554.0, -614135872350.0, 566098157625.0,
      -188699385875.0), 6688604160.0),
)


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    """float64 where the device has it (MPS does not)."""
    return torch.float32 if t.device.type == "mps" else torch.float64


def _debye_parts(order: float, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log I_order(k) = h + rest, h = sqrt(order^2 + k^2) the only large term (split so that
    differences of two orders can cancel h exactly). A&S 9.7.7 with t = order / h."""
    h = torch.sqrt(k * k + order * order)
    t = order / h
    t2 = t * t
    series, t_pow = torch.ones_like(k), torch.ones_like(k)
    for power, (coeffs, denom) in enumerate(_DEBYE_POLYS, start=1):
        poly = torch.zeros_like(k)
        for c in reversed(coeffs):  # Horner in t^2
            poly = poly * t2 + c
        t_pow = t_pow * t
        series = series + t_pow * poly / (denom * order ** power)
    rest = (order * torch.log(k / (order + h)) - 0.5 * math.log(2 * math.pi * order)
            - 0.5 * torch.log(h / order) + torch.log(series))
    return h, rest


def _log_prefactor(nu: float, k: torch.Tensor) -> torch.Tensor:
    """log of the series' first term, (k/2)^nu / Gamma(nu + 1): log I_nu = this + log I~_nu."""
    return (nu * torch.log(k / 2) if nu > 0 else torch.zeros_like(k)) - math.lgamma(nu + 1)


def _log_iv_series(nu: float, k: torch.Tensor) -> torch.Tensor:
    """log I~_nu(k) = log(1 + sum_m>=1 (k^2/4)^m Gamma(nu+1) / (m! Gamma(nu+m+1))), for k <= 4."""
    k = k.clamp(torch.finfo(k.dtype).tiny, _SERIES_MAX_KAPPA)
    m = torch.arange(1, _SERIES_TERMS + 1, dtype=k.dtype, device=k.device)
    log_terms = (2 * m * torch.log(k / 2).unsqueeze(-1) - torch.lgamma(m + 1)
                 - (torch.lgamma(m + nu + 1) - math.lgamma(nu + 1)))  # [..., M]
    return torch.log1p(torch.exp(torch.logsumexp(log_terms, -1)))


def _log_iv_and_ratio(nu: float, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log I~_nu(k), I_(nu+1)(k) / I_nu(k)), k > 0 in the working dtype, no autograd. I~ is I
    over its small-k limit, so it keeps every digit of log I_0(k) ~ k^2/4 as k -> 0."""
    k = k.clamp_min(torch.finfo(k.dtype).tiny)
    shift = max(0, math.ceil(_DEBYE_MIN_ORDER - nu))
    order = nu + shift
    h0, rest0 = _debye_parts(order, k)
    h1, rest1 = _debye_parts(order + 1, k)
    ratio = torch.exp((2 * order + 1) / (h0 + h1) + rest1 - rest0)  # I_(order+1) / I_order
    log_i = h0 + rest0
    for n in range(shift):  # r_(v-1) = 1 / (2v/k + r_v), log I_(v-1) = log I_v - log r_(v-1)
        ratio = 1.0 / (2 * (order - n) / k + ratio)
        log_i = log_i - torch.log(ratio)
    log_i = torch.where(k <= _SERIES_MAX_KAPPA, _log_iv_series(nu, k), log_i - _log_prefactor(nu, k))
    return log_i, ratio


class _BesselRatio(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kappa: torch.Tensor, nu: float) -> torch.Tensor:
        ctx.nu = nu
        ctx.save_for_backward(kappa)
        return _log_iv_and_ratio(nu, kappa.to(_work_dtype(kappa)))[1].to(kappa.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (kappa,) = ctx.saved_tensors
        k = kappa.to(_work_dtype(kappa))  # 1 - A^2 - (2nu+1) A / k cancels: work in float64
        a = _BesselRatio.apply(k, ctx.nu)
        return grad * (1 - a * a - (2 * ctx.nu + 1) * a / k).to(grad.dtype), None


class _LogBesselIvScaled(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kappa: torch.Tensor, nu: float) -> torch.Tensor:
        ctx.nu = nu
        ctx.save_for_backward(kappa)
        return _log_iv_and_ratio(nu, kappa.to(_work_dtype(kappa)))[0].to(kappa.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (kappa,) = ctx.saved_tensors  # d/dk log I~_nu(k) = d/dk log I_nu(k) - nu / k = I_(nu+1) / I_nu
        return grad * _BesselRatio.apply(kappa, ctx.nu), None


def log_bessel_iv(nu: float, kappa: torch.Tensor) -> torch.Tensor:
    """log I_nu(kappa), modified Bessel function of the first kind, real order nu >= 0 and any
    kappa > 0 (no overflow at 1e5); differentiable in kappa (twice). Same shape and dtype."""
    if nu < 0:
        raise ValueError(f"log_bessel_iv needs an order nu >= 0, got {nu}")
    nu, k = float(nu), kappa.to(_work_dtype(kappa))  # the two parts cancel for large nu, small k
    return (_LogBesselIvScaled.apply(k, nu) + _log_prefactor(nu, k)).to(kappa.dtype)


def log_bessel_iv_scaled(nu: float, kappa: torch.Tensor) -> torch.Tensor:
    """log(Gamma(nu+1) (2/kappa)^nu I_nu(kappa)) >= 0: log I_nu without its small-kappa limit, so
    log C_d and the KL lose no digits as kappa -> 0; its kappa-derivative is bessel_ratio."""
    if nu < 0:
        raise ValueError(f"log_bessel_iv_scaled needs an order nu >= 0, got {nu}")
    return _LogBesselIvScaled.apply(kappa, float(nu))


def bessel_ratio(nu: float, kappa: torch.Tensor) -> torch.Tensor:
    """I_(nu+1)(kappa) / I_nu(kappa): the vMF mean resultant length A_d for nu = d/2 - 1, in (0, 1)."""
    if nu < 0:
        raise ValueError(f"bessel_ratio needs an order nu >= 0, got {nu}")
    return _BesselRatio.apply(kappa, float(nu))


def log_sphere_area(dim: int) -> float:
    """log of the surface area of S^(dim-1) in R^dim: 2 pi^(dim/2) / Gamma(dim/2)."""
    return math.log(2.0) + 0.5 * dim * math.log(math.pi) - math.lgamma(0.5 * dim)


class VonMisesFisher:
    """vMF(loc, scale) with loc [B, d] unit vectors (the caller normalises) and scale = kappa
    [B, 1] (or [B]) > 0. Samples are reparameterised in loc and kappa (Davidson et al. 2018)."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor):
        if loc.dim() != 2 or loc.shape[-1] < 2:
            raise ValueError(f"loc must be [B, d] with d >= 2, got {tuple(loc.shape)}")
        scale = scale.unsqueeze(-1) if scale.dim() == 1 else scale
        if scale.shape != (loc.shape[0], 1):
            raise ValueError(f"scale must be [B, 1] for loc {tuple(loc.shape)}, got {tuple(scale.shape)}")
        self.loc, self.scale = loc, scale
        self.dim = loc.shape[-1]
        self.nu = self.dim / 2 - 1
        self._wd = _work_dtype(loc)

    # -- densities ------------------------------------------------------------------------
    def log_normalizer(self) -> torch.Tensor:
        """log C_d(kappa) = nu log kappa - (d/2) log 2 pi - log I_nu(kappa), written as
        nu log 2 + lgamma(nu + 1) - (d/2) log 2 pi - log I~_nu(kappa), in float64. [B, 1]"""
        const = self.nu * math.log(2) + math.lgamma(self.nu + 1) - 0.5 * self.dim * math.log(2 * math.pi)
        return const - log_bessel_iv_scaled(self.nu, self.scale.to(self._wd))

    def _mean_length(self) -> torch.Tensor:
        return bessel_ratio(self.nu, self.scale.to(self._wd))  # [B, 1], float64

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log density of unit vectors x [..., B, d] (torch convention; for rsample_k's [B, k, d]
        pass x.transpose(0, 1)) -> [..., B]."""
        dot = (x * self.loc).sum(-1)  # [..., B]
        out = self.log_normalizer().squeeze(-1) + self.scale.to(self._wd).squeeze(-1) * dot.to(self._wd)
        return out.to(x.dtype)

    @property
    def mean(self) -> torch.Tensor:
        """E[x] = A_d(kappa) loc. [B, d]"""
        return self._mean_length().to(self.loc.dtype) * self.loc

    def entropy(self) -> torch.Tensor:
        """-E[log q] = -log C_d(kappa) - kappa A_d(kappa). [B]"""
        k = self.scale.to(self._wd)
        return (-self.log_normalizer() - k * self._mean_length()).squeeze(-1).to(self.scale.dtype)

    def kl_to_uniform(self) -> torch.Tensor:
        """KL(vMF || Uniform(S^(d-1))) = kappa A_d + log C_d + log area = kappa A_d - log I~_nu
        (the constants cancel exactly): >= 0, ~ kappa^2 / (2d) as kappa -> 0; the S-VAE's KL. [B]"""
        k = self.scale.to(self._wd)
        kl = k * self._mean_length() - log_bessel_iv_scaled(self.nu, k)
        return kl.squeeze(-1).clamp_min(0.0).to(self.scale.dtype)  # a guard: > 0 at kappa = 1e-12 already

    # -- sampling -------------------------------------------------------------------------
    def rsample(self, sample_shape=(), generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised samples [*sample_shape, B, d] (torch.distributions convention)."""
        shape = torch.Size(sample_shape)
        z = self.rsample_k(max(1, shape.numel()), generator)  # [B, k, d]
        return z.movedim(1, 0).reshape(*shape, *self.loc.shape)

    def rsample_k(self, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """k reparameterised samples per row: [B, k, d]. Gradients reach loc (Householder) and
        kappa (through the component w along loc; the accepted proposal is fixed noise, as in
        Davidson et al.: exact for d = 3, for d != 3 the kappa-gradient lacks the rejection
        correction term and runs 5-15% low)."""
        one_minus_w = self._sample_one_minus_w(k, generator)  # [B, k], working dtype
        batch, d = self.loc.shape
        v = torch.randn(batch, k, d - 1, generator=generator, device=self.loc.device, dtype=self._wd)
        v = v / v.norm(dim=-1, keepdim=True).clamp_min(1e-30)  # uniform on S^(d-2) orthogonal to e1
        sin = torch.sqrt((one_minus_w * (2 - one_minus_w)).clamp_min(0.0))  # sqrt(1 - w^2), no cancellation
        z = torch.cat([(1 - one_minus_w).unsqueeze(-1), sin.unsqueeze(-1) * v], dim=-1)  # [B, k, d]
        return _householder_from_e1(z, self.loc.to(self._wd)).to(self.loc.dtype)

    def _sample_one_minus_w(self, k: int, generator: torch.Generator | None) -> torch.Tensor:
        """1 - w for w = loc.x, [B, k] (1 - w keeps its precision as kappa grows, w does not)."""
        kappa = self.scale.to(self._wd)  # [B, 1]
        if self.dim == 3:  # exact inverse CDF: w = 1 + log(u + (1 - u) e^(-2 kappa)) / kappa
            u = torch.rand(kappa.shape[0], k, generator=generator, device=kappa.device, dtype=self._wd)
            u = u.clamp(torch.finfo(self._wd).tiny, 1.0)
            one_minus_w = -torch.logaddexp(torch.log(u), torch.log1p(-u) - 2 * kappa) / kappa
            return one_minus_w.clamp(0.0, 2.0)
        b = (self.dim - 1) / (2 * kappa + torch.sqrt(4 * kappa * kappa + (self.dim - 1) ** 2))  # [B, 1]
        eps = _wood_accepted_noise(self.dim, kappa.detach(), b.detach(), k, generator)  # [B, k]
        return 2 * b * eps / (1 - (1 - b) * eps)


def _beta_symmetric(dim: int, shape: tuple[int, ...], generator, device, dtype) -> torch.Tensor:
    """Beta((dim-1)/2, (dim-1)/2) as chi2 / (chi2 + chi2'): torch's Beta takes no generator."""
    g = torch.randn(*shape, 2, dim - 1, generator=generator, device=device, dtype=dtype)
    chi2 = g.square().sum(-1)  # [*shape, 2]
    return chi2[..., 0] / (chi2[..., 0] + chi2[..., 1]).clamp_min(torch.finfo(dtype).tiny)


def _wood_accepted_noise(dim: int, kappa: torch.Tensor, b: torch.Tensor, k: int, generator) -> torch.Tensor:
    """Wood (1994): the Beta draw eps of the first accepted proposal per sample, [B, k]. Each
    round proposes once for every sample still pending (one host sync per round, for its size)."""
    m1 = dim - 1
    kappa, b = kappa.expand(-1, k).reshape(-1), b.expand(-1, k).reshape(-1)  # [B * k]
    x0 = (1 - b) / (1 + b)
    c = kappa * x0 + m1 * torch.log(4 * b / (1 + b) ** 2)  # log(1 - x0^2) without cancellation
    eps = torch.zeros_like(kappa)
    pending = torch.arange(kappa.numel(), device=kappa.device)
    for _ in range(MAX_REJECTION_ROUNDS):
        b_p = b[pending]
        draw = _beta_symmetric(dim, (pending.numel(),), generator, kappa.device, kappa.dtype)
        denom = 1 - (1 - b_p) * draw
        w = (1 - (1 + b_p) * draw) / denom
        log_accept = kappa[pending] * w + m1 * torch.log(2 * b_p / ((1 + b_p) * denom)) - c[pending]
        u = torch.rand(pending.shape, generator=generator, device=kappa.device, dtype=kappa.dtype)
        accept = log_accept >= torch.log(u)  # 1 - x0 w = 2b / ((1 + b) denom) above
        eps[pending[accept]] = draw[accept]
        pending = pending[~accept]
        if pending.numel() == 0:
            return eps.reshape(-1, k)
    raise RuntimeError(f"vMF rejection sampler: {pending.numel()} of {eps.numel()} samples still "
                       f"rejected after {MAX_REJECTION_ROUNDS} rounds (d={dim}); is kappa finite and > 0?")


def _householder_from_e1(z: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
    """Reflect z [B, k, d] by the Householder map H with H e1 = loc [B, d]; identity where loc = e1."""
    e1 = torch.zeros_like(loc)
    e1[:, 0] = 1
    u = e1 - loc  # [B, d]
    norm2 = (u * u).sum(-1, keepdim=True)
    u = (u / torch.sqrt(norm2.clamp_min(1e-30))).unsqueeze(1)  # [B, 1, d], finite in both branches
    reflected = z - 2 * (z * u).sum(-1, keepdim=True) * u
    return torch.where((norm2 > 1e-20).unsqueeze(1), reflected, z)


class HypersphericalUniform:
    """The uniform distribution on S^(dim-1): the S-VAE prior."""

    def __init__(self, dim: int):
        if dim < 2:
            raise ValueError(f"HypersphericalUniform needs dim >= 2, got {dim}")
        self.dim = dim

    def sample(self, n: int, generator: torch.Generator | None = None, device=None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """n points [n, d]: normalised standard Gaussians (on the generator's device by default)."""
        device = device if device is not None else (generator.device if generator is not None else None)
        g = torch.randn(n, self.dim, generator=generator, device=device, dtype=dtype)
        return g / g.norm(dim=-1, keepdim=True).clamp_min(1e-30)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """-log(area of S^(d-1)) for every point: [..., d] -> [...]."""
        return torch.full(x.shape[:-1], -log_sphere_area(self.dim), dtype=x.dtype, device=x.device)

    def entropy(self, device=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """log(area of S^(d-1)), the largest entropy on the sphere (a 0-d tensor)."""
        return torch.tensor(log_sphere_area(self.dim), device=device, dtype=dtype)


def slerp(z0: torch.Tensor, z1: torch.Tensor, steps: int) -> torch.Tensor:
    """[d], [d] -> [steps, d] at equal angles along the great circle from z0 to z1 (normalised).
    Nearly equal ends: the chord, normalised; nearly antipodal: any great circle through both."""
    z0 = z0 / z0.norm().clamp_min(1e-12)
    z1 = z1 / z1.norm().clamp_min(1e-12)
    t = torch.linspace(0, 1, steps, device=z0.device, dtype=z0.dtype)[:, None]  # [steps, 1]
    dot = (z0 * z1).sum().clamp(-1, 1)
    resid = z1 - dot * z0  # the part of z1 orthogonal to z0, norm sin(omega)
    sin = resid.norm()
    omega = torch.atan2(sin, dot)
    e = torch.zeros_like(z0)
    e[z0.abs().argmin()] = 1  # the axis least aligned with z0, made orthogonal to it
    other = e - (e * z0).sum() * z0
    other = other / other.norm().clamp_min(1e-12)
    small = sin <= 1e-6
    antipodal = small & (dot < 0)
    direction = torch.where(antipodal, other, resid)
    coef = torch.where(small, torch.where(antipodal, torch.sin(t * omega), t),  # chord near equal ends
                       torch.sin(t * omega) / sin.clamp_min(1e-12))
    out = torch.cos(t * omega) * z0 + coef * direction  # [steps, d]
    return out / out.norm(dim=-1, keepdim=True).clamp_min(1e-12)
