"""What `encode`, `generate` and `interpolate` share: a trained run and the data it was
trained on, the codes of a split, densities fitted to codes, and figures.

Nothing here writes into the trained run except `add_projector_entry`, which adds a
TensorBoard embedding under the run's `tensorboard/`. Every other file goes through
`aerun.io.atomic_path` into the command's own directory.
"""

from __future__ import annotations

import logging
import math
import shutil
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import numpy as np

from aerun import runs
from aerun.errors import UserError
from aerun.io import atomic_path, write_text

log = logging.getLogger("aerun.latent")

FITTED_SAMPLERS = ("normal", "uniform", "gmm")


def enum_value(value):
    return value.value if isinstance(value, Enum) else value


# ----------------------------------------------------------------------------- checks
def check_common(cfg) -> Path:
    """The run directory (with best.pt) and the options every latent command has."""
    run = runs.check_run_dir(cfg.run, key="run", need_checkpoint=runs.WEIGHTS)
    if cfg.batch_size < 1:
        raise UserError(f"batch_size: must be >= 1, got {cfg.batch_size}")
    if enum_value(cfg.device) == "cuda" and not _cuda_available():
        raise UserError("device=cuda: no CUDA device is available here; use device=auto or cpu")
    return run


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass
class ModelInfo:
    name: str  # the model class name, e.g. MLPAutoencoder
    is_variational: bool
    latent_dim: int


def peek_model(run: Path) -> ModelInfo:
    """The run's model kind and latent size from its config, without loading weights."""
    from hydra.utils import get_class

    config = runs.read_run_config(run)
    model = config.get("model") or {}
    try:
        cls = get_class(model["_target_"])
        latent_dim = int(model["latent_dim"])
    except Exception as exc:  # noqa: BLE001 - a config we cannot read is the user's file
        raise UserError(f"run={run}: its {runs.CONFIG_FILE} names no model aerun can build "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    return ModelInfo(cls.__name__, bool(getattr(cls, "is_variational", False)), latent_dim)


# ----------------------------------------------------------------------------- run and data
def resolve_device(name):
    import torch

    name = enum_value(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_model(cfg):
    """The run's best.pt rebuilt on cfg.device (a GPU-trained run loads on the CPU too)."""
    device = resolve_device(cfg.device)
    return runs.load_run(cfg.run, device=device), device


def load_data(cfg, loaded: runs.LoadedRun):
    """The dataset the run was trained on, split as in training; data.root may move it."""
    from aerun.data import load_dataset

    d, seed = loaded.config["data"], loaded.config.get("seed", 0)
    root = runs.data_root(loaded.path, d["root"], cfg.data.root)
    try:
        dataset = load_dataset(d["name"], root, download=False, val_size=d.get("val_size", 0.1), seed=seed,
                               max_train_samples=d.get("max_train_samples"),
                               max_test_samples=d.get("max_test_samples"))
    except UserError as exc:
        problem = str(exc).split("; ")[0]  # drop data.py's hint: these commands have no data.download
        where = "data.root" if cfg.data.root is not None else "the run's data.root"
        raise UserError(f"cannot load the {d['name']} data this run was trained on ({where}={root}): {problem}; "
                        f"pass data.root=<folder that holds it>") from None
    if tuple(dataset.image_shape) != tuple(loaded.input_shape):
        raise UserError(f"data.root={root}: its {d['name']} images are {tuple(dataset.image_shape)}, "
                        f"but the run's model takes {tuple(loaded.input_shape)}")
    return dataset


def get_split(dataset, name):
    name = enum_value(name)
    split = getattr(dataset, name)
    if len(split) == 0:
        raise UserError(f"split={name}: the run's {name} split is empty (it was trained with data.val_size=0)")
    return split


# ----------------------------------------------------------------------------- codes
def encode_images(model, images_uint8, batch_size: int, device) -> dict[str, np.ndarray]:
    """uint8 [N, C, H, W] -> {"codes": [N, D]} (+ "mu", "logvar" for VAEs; codes = mu)."""
    import torch

    from aerun.engine import to_float

    parts: dict[str, list] = {"codes": [torch.zeros(0, model.latent_dim)]}
    with torch.inference_mode():
        for start in range(0, len(images_uint8), batch_size):
            x = to_float(images_uint8[start:start + batch_size].to(device))
            if model.is_variational:
                mu, logvar = model.encode_stats(x)
                out = {"codes": mu, "mu": mu, "logvar": logvar}
            else:
                out = {"codes": model.encode(x)}
            for key, value in out.items():
                parts.setdefault(key, []).append(value.float().cpu())
    return {key: torch.cat(values).numpy() for key, values in parts.items()}


def decode_codes(model, codes, batch_size: int, device):
    """[N, D] codes -> float tensor [N, C, H, W] of images in [0, 1] on the CPU."""
    import torch

    z = torch.as_tensor(np.asarray(codes), dtype=torch.float32)
    with torch.inference_mode():
        images = [model.decode(z[start:start + batch_size].to(device)).float().cpu()
                  for start in range(0, len(z), batch_size)]
    return torch.cat(images).clamp_(0, 1)


# ----------------------------------------------------------------------------- samplers
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


# ----------------------------------------------------------------------------- files
def save_npz(path: Path, **arrays) -> None:
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def save_npy(path: Path, array) -> None:
    with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def project_2d(codes: np.ndarray, method: str, seed: int) -> tuple[np.ndarray, str, str, str]:
    """[N, D] -> ([N, 2] points, x label, y label, what the axes are)."""
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


def scatter_plot(path: Path, points: np.ndarray, labels: np.ndarray, class_names: list[str], title: str,
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


def subset(n: int, limit: int, seed: int) -> np.ndarray:
    """Sorted indices of at most `limit` of `n` items, a seeded choice when there are more."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


# ----------------------------------------------------------------------------- TensorBoard
PROJECTOR_CONFIG = "projector_config.pbtxt"


def add_projector_entry(run_dir: Path, tag: str, step: int, codes: np.ndarray, labels: list[str],
                        thumbnails) -> Path:
    """An embedding-projector entry (codes, labels, image sprite) under the run's tensorboard/.

    The writer keeps only its own entries in projector_config.pbtxt, so the entries other
    calls added (other splits, other checkpoints) are merged back in; a second call with
    the same tag and step replaces its entry.
    """
    import torch
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
    from torch.utils.tensorboard import SummaryWriter

    log_dir = Path(run_dir) / runs.TENSORBOARD
    config_path = log_dir / PROJECTOR_CONFIG
    previous = ProjectorConfig()
    if config_path.is_file():
        try:
            text_format.Parse(config_path.read_text(), previous)
        except text_format.ParseError:
            log.warning("%s is not a projector config; rewriting it", config_path)
    entry = log_dir / f"{step:05d}" / tag
    if entry.is_dir():
        shutil.rmtree(entry)  # our own earlier entry for the same codes: replace it
    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        writer.add_embedding(torch.as_tensor(codes), metadata=labels, label_img=thumbnails, global_step=step,
                             tag=tag)
    finally:
        writer.close()
    merged = ProjectorConfig()
    if config_path.is_file():
        text_format.Parse(config_path.read_text(), merged)
    ours = {e.tensor_path for e in merged.embeddings}
    for old in previous.embeddings:
        if old.tensor_path not in ours and (log_dir / old.tensor_path).exists():
            merged.embeddings.append(old)
    write_text(config_path, text_format.MessageToString(merged))
    return entry


# ----------------------------------------------------------------------------- summary
def report(lines: list[tuple[Path, str]]) -> None:
    """What a command wrote, one file per line (the command's requested output)."""
    for path, what in lines:
        print(f"wrote {path}  ({what})")


def grid_nrow(n: int) -> int:
    return max(1, math.ceil(math.sqrt(n)))
