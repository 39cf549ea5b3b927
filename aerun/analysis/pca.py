"""PCA of images, the baseline every autoencoder's reconstruction is read against."""

from __future__ import annotations

from dataclasses import dataclass


def flatten(images_uint8):
    """uint8 [N, C, H, W] -> float32 [N, C*H*W] in [0, 1]."""
    return images_uint8.flatten(1).float().div_(255.0)


def per_pixel_mse(recon, target):
    """[N, P], [N, P] -> [N]."""
    return (recon.float() - target.float()).square().mean(1)


@dataclass
class PCA:
    """The top-k principal subspace of the training images (pixels in [0, 1])."""

    mean: object  # [P] float64
    components: object  # [P, k] float64, orthonormal columns, by decreasing variance
    explained_variance_ratio: float

    def encode(self, x_flat):
        """[N, P] -> [N, k] coordinates in the subspace."""
        return (x_flat.double() - self.mean) @ self.components

    def decode(self, codes):
        """[N, k] -> [N, P]; not clipped to [0, 1] (the optimal rank-k linear reconstruction)."""
        return codes.double() @ self.components.T + self.mean


def fit_pca(images_uint8, k: int, batch_size: int = 4096) -> PCA:
    """PCA by an eigendecomposition of the pixel covariance, accumulated in float64 batches
    (memory P x P, never N x P in float64)."""
    import torch

    n = images_uint8.shape[0]
    p = images_uint8[0].numel()
    if not 1 <= k <= p:
        raise ValueError(f"PCA needs 1 <= k <= {p} components, got {k}")
    device = images_uint8.device
    total = torch.zeros(p, dtype=torch.float64, device=device)
    for i in range(0, n, batch_size):
        total += flatten(images_uint8[i:i + batch_size]).double().sum(0)
    mean = total / n
    cov = torch.zeros(p, p, dtype=torch.float64, device=device)
    for i in range(0, n, batch_size):
        xc = flatten(images_uint8[i:i + batch_size]).double() - mean  # [b, P]
        cov += xc.T @ xc
    cov /= n
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
    eigenvalues, eigenvectors = eigenvalues.flip(0).clamp_min(0), eigenvectors.flip(1)
    total_variance = eigenvalues.sum().item()
    ratio = eigenvalues[:k].sum().item() / total_variance if total_variance > 0 else 1.0
    return PCA(mean, eigenvectors[:, :k].contiguous(), ratio)
