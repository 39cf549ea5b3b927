"""Figures aerun writes: image grids (upscaled to be readable when opened, rows labelled),
and the matplotlib plots (latent scatter, curves). Every file goes through `atomic_path`."""

from __future__ import annotations

from pathlib import Path

from aerun.io import atomic_path

GRID_TARGET_WIDTH = 1200  # px: a grid of 28-px digits is upscaled to about this width, at most 4x


def grid_scale(width: int) -> int:
    """The whole-number upscale that brings a grid `width` px wide near GRID_TARGET_WIDTH (1..4)."""
    return min(4, max(1, GRID_TARGET_WIDTH // max(1, width)))


def save_image_grid(tensor, path, nrow: int = 8, padding: int = 2, pad_value: float = 1.0) -> None:
    """A torchvision image grid, written atomically as PNG; small grids (MNIST's 28-px tiles)
    are upscaled by a whole number with nearest-neighbour pixels, so they are readable when
    opened as they are. The exact values stay in the .npy/.npz files written beside them."""
    from torchvision.utils import make_grid, save_image

    grid = make_grid(tensor.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=padding, pad_value=pad_value)
    scale = grid_scale(grid.shape[-1])
    grid = grid.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)  # [C, H*s, W*s]
    with atomic_path(path, suffix=".png") as tmp:
        save_image(grid, str(tmp), format="png")


# ----------------------------------------------------------------------------- plots
def project_2d(codes, method: str, seed: int):
    """[N, D] -> ([N, 2] points, x label, y label, what the axes are)."""
    import numpy as np

    n, dim = codes.shape
    if dim == 1:
        return np.stack([codes[:, 0], np.zeros(n)], 1), "z1", "", "1-d codes"
    if dim == 2:
        return codes, "z1", "z2", "2-d codes"
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
        points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(codes)
        return points, "t-SNE 1", "t-SNE 2", f"t-SNE of {dim}-d codes"
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=seed).fit(codes)
    explained = pca.explained_variance_ratio_
    return (pca.transform(codes), f"PC1 ({explained[0]:.0%} of variance)", f"PC2 ({explained[1]:.0%})",
            f"PCA of {dim}-d codes")


def scatter_plot(path: Path, points, labels, class_names: list[str], title: str,
                 xlabel: str, ylabel: str) -> None:
    """Points coloured by class with a legend, written as PNG through matplotlib's Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = _class_colours(len(class_names))
    size = 4 if len(points) > 2000 else 12
    for label, name in enumerate(class_names):
        mask = labels == label
        if mask.any():
            ax.scatter(points[mask, 0], points[mask, 1], s=size, alpha=0.6, color=colours[label], label=name,
                       linewidths=0, rasterized=True)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(title="class", loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=12 / size * 1.5,
              frameon=False)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")


def _class_colours(n: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


