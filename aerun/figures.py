"""Figures aerun writes: image grids (upscaled to be readable when opened, rows labelled),
and the matplotlib plots (latent scatter, curves). Every file goes through `atomic_path`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aerun.io import atomic_path

GRID_TARGET_WIDTH = 1200  # px: a grid of 28-px digits is upscaled to the whole number closest to this width


def grid_scale(width: int) -> int:
    """The whole-number upscale (1..4) that brings a grid `width` px wide closest to GRID_TARGET_WIDTH."""
    return min(4, max(1, round(GRID_TARGET_WIDTH / max(1, width))))


def grid_image(tensor, nrow: int = 8, padding: int = 2, pad_value: float = 1.0, row_labels: list[str] | None = None):
    """A torchvision image grid as a PIL image, upscaled by a whole number with nearest-neighbour
    pixels (MNIST's 28-px tiles are readable when opened as they are), with `row_labels` written
    in a margin on the left of each row (what the row is: input, reconstruction, ...)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont
    from torchvision.utils import make_grid

    grid = make_grid(tensor.detach().float().cpu().clamp(0, 1), nrow=nrow, padding=padding, pad_value=pad_value)
    scale = grid_scale(grid.shape[-1])
    grid = grid.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)  # [C, H*s, W*s]
    array = (grid.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
    image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
    if not row_labels:
        return image
    font = ImageFont.load_default(size=max(12, 7 * scale))
    draw = ImageDraw.Draw(image)
    margin = 12 + max(draw.textbbox((0, 0), label, font=font)[2] for label in row_labels)
    labelled = Image.new(image.mode, (image.width + margin, image.height), 255 if image.mode == "L" else (255,) * 3)
    labelled.paste(image, (margin, 0))
    draw = ImageDraw.Draw(labelled)
    row_height = (tensor.shape[-2] + padding) * scale
    for row, label in enumerate(row_labels):
        top, bottom = draw.textbbox((0, 0), label, font=font)[1::2]
        y = padding * scale + row * row_height + (row_height - padding * scale - (bottom - top)) // 2 - top
        draw.text((6, y), label, fill=0 if image.mode == "L" else (0, 0, 0), font=font)
    return labelled


def save_image_grid(tensor, path, nrow: int = 8, padding: int = 2, pad_value: float = 1.0,
                    row_labels: list[str] | None = None) -> None:
    """`grid_image` written atomically as PNG. The exact values stay in the .npy/.npz files
    written beside it."""
    image = grid_image(tensor, nrow, padding, pad_value, row_labels)
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="png")


# ----------------------------------------------------------------------------- plots
def hammer(codes):
    """Points on the sphere S^2 [N, 3] -> the Hammer equal-area map [N, 2] (longitude from the
    first two coordinates, latitude from the third; x in [-2 sqrt 2, 2 sqrt 2], y in [-sqrt 2, sqrt 2])."""
    unit = codes / np.linalg.norm(codes, axis=1, keepdims=True).clip(1e-12)
    longitude = np.arctan2(unit[:, 1], unit[:, 0])
    latitude = np.arcsin(unit[:, 2].clip(-1, 1))
    scale = np.sqrt(1 + np.cos(latitude) * np.cos(longitude / 2))
    return np.stack([2 * np.sqrt(2) * np.cos(latitude) * np.sin(longitude / 2) / scale,
                     np.sqrt(2) * np.sin(latitude) / scale], 1)


def project_2d(codes, method: str, seed: int, on_sphere: bool = False):
    """[N, D] -> ([N, 2] points, x label, y label, what the axes are). method=auto: the Hammer
    map for codes on the sphere S^2 (`on_sphere` and D = 3), else PCA above 2 dimensions."""
    from aerun.errors import UserError

    n, dim = codes.shape
    if method == "auto":
        method = "hammer" if on_sphere and dim == 3 else "pca"
    if method == "hammer":
        if dim != 3:
            raise UserError(f"encode.projection=hammer: maps codes on the sphere S^2 (3-d codes), these are {dim}-d")
        return hammer(codes), "Hammer x (longitude)", "Hammer y (latitude)", "Hammer projection of codes on S^2"
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
                 xlabel: str, ylabel: str, hammer_outline: bool = False) -> None:
    """`scatter_figure` written as PNG."""
    size = (8.5, 5.0) if hammer_outline else (7, 6)  # the Hammer map is twice as wide as it is high
    fig = scatter_figure(points, labels, class_names, title, xlabel, ylabel, size, hammer_outline=hammer_outline)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")


def scatter_figure(points, labels, class_names: list[str], title: str, xlabel: str, ylabel: str,
                   size_inches: tuple[float, float] = (7, 6), hammer_outline: bool = False):
    """Points coloured by class with a legend, on matplotlib's Agg canvas (no pyplot: no global
    figure state); without class names (unlabelled data) every point in one colour, no legend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size_inches, dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = _class_colours(len(class_names))
    size = 4 if len(points) > 2000 else 12
    if not class_names:
        ax.scatter(points[:, 0], points[:, 1], s=size, alpha=0.6, color=_class_colours(1)[0], linewidths=0,
                   rasterized=True)
    for label, name in enumerate(class_names):
        mask = labels == label
        if mask.any():
            ax.scatter(points[mask, 0], points[mask, 1], s=size, alpha=0.6, color=colours[label], label=name,
                       linewidths=0, rasterized=True)
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(title, 60)))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if hammer_outline:  # the whole sphere's outline, in true proportion (2:1)
        t = np.linspace(0, 2 * np.pi, 361)
        ax.plot(2 * np.sqrt(2) * np.cos(t), np.sqrt(2) * np.sin(t), color="0.6", linewidth=0.8)
        ax.set_aspect("equal")
    if class_names:
        ax.legend(title="class", loc="center left", bbox_to_anchor=(1.01, 0.5), markerscale=12 / size * 1.5,
                  frameon=False)
    fig.tight_layout()
    return fig


def figure_image(fig):
    """A matplotlib figure (on an Agg canvas) as a PIL image, for a tracker."""
    from PIL import Image

    fig.canvas.draw()
    return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[:, :, :3].copy())


def _class_colours(n: int):
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


