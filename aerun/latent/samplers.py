"""Where new codes come from: densities fitted to a run's training codes (the courses'
"which distribution should we sample the latent space from?"), and lattices of codes."""

from __future__ import annotations

import math

import numpy as np

from aerun.errors import UserError

FITTED_SAMPLERS = ("normal", "uniform", "gmm")


def fit_sampler(kind: str, codes: np.ndarray, components: int = 10, seed: int = 0):
    """A density fitted to `codes` [N, D]: returns sample(n, rng) -> float32 [n, D].

    normal: a full-covariance Gaussian; uniform: independent uniforms within each
    dimension's min/max; gmm: scikit-learn's GaussianMixture (full covariances).
    """
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim != 2 or len(codes) < 2:
        raise UserError(f"sampler={kind}: needs at least 2 training codes to fit, got {len(codes)}")
    if kind == "uniform":
        low, high = codes.min(0), codes.max(0)
        return lambda n, rng: rng.uniform(low, high, size=(n, codes.shape[1])).astype(np.float32)
    if kind == "normal":
        mean, cov = codes.mean(0), np.atleast_2d(np.cov(codes, rowvar=False))
        return lambda n, rng: rng.multivariate_normal(mean, cov, size=n, method="eigh").astype(np.float32)
    if kind == "gmm":
        from sklearn.mixture import GaussianMixture

        if components > len(codes):
            raise UserError(f"generate.components={components}: more mixture components than the "
                            f"{len(codes)} training codes")
        gmm = GaussianMixture(n_components=components, covariance_type="full", random_state=seed).fit(codes)
        chol = np.linalg.cholesky(gmm.covariances_)  # [K, D, D]

        def sample(n, rng):
            # Our own draw (not gmm.sample, which groups samples by component): component, then Gaussian.
            which = rng.choice(components, size=n, p=gmm.weights_)  # [n]
            eps = rng.standard_normal((n, codes.shape[1]))  # [n, D]
            return (gmm.means_[which] + np.einsum("nij,nj->ni", chol[which], eps)).astype(np.float32)

        return sample
    raise ValueError(f"unknown sampler {kind!r}")


def prior_quantiles(grid: int, quantile: float) -> np.ndarray:
    """`grid` N(0, 1) quantiles evenly spaced in probability from q to 1 - q."""
    import torch

    probs = torch.linspace(quantile, 1 - quantile, grid, dtype=torch.float64)
    return torch.distributions.Normal(0.0, 1.0).icdf(probs).numpy()


def manifold_codes(x_values: np.ndarray, y_values: np.ndarray) -> np.ndarray:
    """A row-major grid of 2-d codes: z1 grows left to right, z2 grows bottom to top -> [rows * cols, 2]."""
    zx, zy = np.meshgrid(x_values, y_values[::-1])  # [rows, cols] each; top row = largest z2
    return np.stack([zx.ravel(), zy.ravel()], axis=1).astype(np.float32)



def grid_nrow(n: int) -> int:
    return max(1, math.ceil(math.sqrt(n)))
