"""`make gallery`: run every `configs/experiment/*.yaml` the way a user would, collect figures and numbers.

    python docs/gallery.py [--data-root ../shared/datasets] [--only NAME ...] [--smoke] [--force] [--threads N]

For each experiment this runs the real CLI in a subprocess, from the repository root:
`aerun train experiment=NAME data.root=... hydra.run.dir=outputs/gallery/NAME`, then the
commands that experiment is about (evaluate, encode, generate, interpolate, finetune).
It combines their outputs into `docs/figures/gallery_NAME.png` and writes `docs/gallery.md`:
one table row per experiment with the figure, the exact commands, the measured numbers
(read from metrics.json / evaluation.json / finetune.json) and the row's wall time.

Restartable: a training run whose run directory already holds metrics.json is not trained
again, and a command whose output is newer than the run it read is not run again (their
wall times recorded earlier are reused), unless --force. Each finished row is cached in
outputs/gallery/rows/NAME.json, so `--only NAME` refreshes one row and the table keeps the rest.
`--threads 1` sets OMP_NUM_THREADS=1 for every command: on a 2-core machine that other jobs
share, torch's default of one thread per core ran the conv AE up to 10x slower.

`--smoke` adds `debug=smoke` to every training run (one epoch on 2048 images) and shrinks the
slow evaluation knobs; its outputs go to outputs/gallery_smoke/ (figures and gallery.md too),
never over the real gallery. A tiny data root for it:

    python -c "from tests.datasets_fixture import *; make_mnist_like('/tmp/gd', n_train=2400, n_test=512); \
make_mnist_like('/tmp/gd', folder='FashionMNIST', n_train=2400, n_test=512, seed=1); make_cifar10('/tmp/gd', 480, 512)"
    python docs/gallery.py --smoke --data-root /tmp/gd
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("gallery")

# The gallery, in table order.
EXPERIMENTS = ["shallow_mnist", "linear_ae_2d", "cnn_mnist", "denoise_mnist", "sparse_mnist", "stacked_fashion",
               "vae_2d", "beta_vae", "cifar_cnn", "kmeans_codes", "pretrain_finetune",
               # docs/gallery_families.py
               "svae_vs_nvae", "vaegan_mnist", "cvae_digits", "rbm_mnist", "deep_ae_hinton", "unpool_mnist",
               "seq_lstm_mnist", "cabessa_recipe", "watermark_removal", "fashion_vae_2d"]
DENOISE_VARIANTS = [("gaussian", 0.5), ("salt_pepper", 0.3), ("masking", 0.5)]  # the first is the YAML's default
BETAS = ["0.5", "1", "4"]
SAMPLERS = ["uniform", "normal", "gmm"]
FIG_DPI = 100


class StepFailed(RuntimeError):
    pass


@dataclass
class Row:
    name: str
    commands: list[str] = field(default_factory=list)  # as shown in the table
    numbers: list[str] = field(default_factory=list)  # markdown fragments
    epochs: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    reused_s: float = 0.0  # part of wall_s measured in an earlier invocation
    figure: str | None = None  # path relative to docs/
    status: str = "ok"  # ok | skipped | failed
    note: str = ""


# ----------------------------------------------------------------------------- running the CLI
class Gallery:
    def __init__(self, data_root: Path, smoke: bool, force: bool, out: Path, docs: Path):
        self.data_root = data_root.resolve()
        self.smoke, self.force = smoke, force
        self.out, self.docs = out, docs
        self.figures = docs / "figures"
        self.timings_path = out / "timings.json"
        self.timings = json.loads(self.timings_path.read_text()) if self.timings_path.is_file() else {}
        self.row: Row | None = None

    # paths relative to the repository root, as a user would type them
    def rel(self, path: Path) -> str:
        return os.path.relpath(path, REPO)

    def _record(self, key: str, wall: float, cpu: float) -> None:
        self.timings[key] = {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
                             "threads": os.environ.get("OMP_NUM_THREADS", "default")}
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.timings_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.timings, indent=1, sort_keys=True))
        os.replace(tmp, self.timings_path)

    def aerun(self, args: list[str], output: Path, after: list[Path] = (), train: bool = False) -> None:
        """Run `aerun <args>` unless `output` exists and is newer than every path in `after`.

        `args` use the literal string $DATA_ROOT for the data root (shown as such in the table).
        `output` is the file whose presence means the step is done (metrics.json for training).
        """
        if self.smoke and train:
            args = [*args, "debug=smoke"]
        shown = "aerun " + " ".join(shlex.quote(a) if "$DATA_ROOT" not in a else a for a in args)
        self.row.commands.append(shown)
        key = " ".join(args)
        newest_input = max((p.stat().st_mtime for p in after if p.exists()), default=0.0)
        done = output.is_file() and output.stat().st_mtime >= newest_input
        if done and not self.force:
            reused = self.timings.get(key)
            if reused:
                self.row.wall_s += reused["wall_s"]
                self.row.cpu_s += reused["cpu_s"]
                self.row.reused_s += reused["wall_s"]
            log.info("[%s] done already: %s", self.row.name, shown)
            return
        argv = [a.replace("$DATA_ROOT", str(self.data_root)) for a in args]
        log_path = self.out / "logs" / f"{self.row.name}-{len(self.row.commands)}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log.info("[%s] %s", self.row.name, shown)
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.time()
        with open(log_path, "w") as sink:
            sink.write(f"$ {shown}\n")
            sink.flush()
            proc = subprocess.run([sys.executable, "-m", "aerun", *argv], cwd=REPO, stdout=sink,
                                  stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        wall = time.time() - started
        after_usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after_usage.ru_utime - before.ru_utime) + (after_usage.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            tail = log_path.read_text().strip().splitlines()[-5:]
            raise StepFailed(f"`{shown}` exited {proc.returncode}: " + " / ".join(tail))
        if not output.is_file():
            raise StepFailed(f"`{shown}` did not write {self.rel(output)}")
        self.row.wall_s += wall
        self.row.cpu_s += cpu
        self._record(key, wall, cpu)
        log.info("[%s]   %.1f s wall, %.1f s CPU", self.row.name, wall, cpu)

    def train(self, run_dir: Path, *overrides: str) -> dict:
        """`aerun train <overrides> data.root=$DATA_ROOT hydra.run.dir=<run_dir>`; returns metrics.json."""
        metrics = run_dir / "metrics.json"
        if run_dir.exists() and (self.force or not metrics.is_file()):
            if (run_dir / ".lock").exists() and not metrics.is_file():
                log.info("[%s] removing the unfinished run %s", self.row.name, self.rel(run_dir))
            shutil.rmtree(run_dir)
        self.aerun(["train", *overrides, "data.root=$DATA_ROOT", f"hydra.run.dir={self.rel(run_dir)}"], metrics,
                   train=True)
        return read_json(metrics)

    def evaluate(self, run_dir: Path, out_dir: Path, variational: bool = False) -> dict:
        args = ["evaluate", self.rel(run_dir)]
        if variational:
            args.append("evaluate.iw_samples=10" if self.smoke else "evaluate.iw_samples=100")
        args.append(f"hydra.run.dir={self.rel(out_dir)}")
        self.aerun(args, out_dir / "evaluation.json", after=[run_dir / "metrics.json"])
        return read_json(out_dir / "evaluation.json")

    def figure(self, name: str) -> Path:
        self.figures.mkdir(parents=True, exist_ok=True)
        return self.figures / f"gallery_{name}.png"


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


# ----------------------------------------------------------------------------- figures
def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=FIG_DPI)


def _save(fig, path: Path) -> None:
    fig.savefig(path, dpi=FIG_DPI)
    _shrink_png(path)


def _shrink_png(path: Path) -> None:
    """Re-save as an optimised palette PNG when that is smaller (figures stay well under 200 KB)."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    grey = all(band == image.getchannel(0) for band in (image.getchannel(1), image.getchannel(2)))
    small = image.convert("L") if grey else image.quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    tmp = path.with_suffix(".tmp.png")
    small.save(tmp, optimize=True)
    if tmp.stat().st_size < path.stat().st_size:
        os.replace(tmp, path)
    else:
        tmp.unlink()


def _image(path: Path):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def image_panels(path: Path, panels: list[tuple], columns: int, width: float, height: float,
                 title: str | None = None) -> None:
    """A grid of images (file paths or HxWx3 arrays) with a title each; pixels shown nearest-neighbour."""
    fig = _figure(width, height)
    rows = (len(panels) + columns - 1) // columns
    for i, (image, caption) in enumerate(panels):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(_image(image) if isinstance(image, (str, Path)) else image, interpolation="nearest")
        ax.set_title(caption, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def scatter_codes(ax, codes_npz: Path, title: str, max_points: int = 3000) -> None:
    import numpy as np

    data = np.load(codes_npz)
    codes, labels = data["codes"], data["labels"]
    chosen = np.random.default_rng(0).permutation(len(codes))[:max_points]
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    for c in range(int(labels.max()) + 1):
        pick = chosen[labels[chosen] == c]
        ax.scatter(codes[pick, 0], codes[pick, 1], s=2, color=cmap(c % 10), label=str(c), rasterized=True)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("z1", fontsize=8)
    ax.set_ylabel("z2", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(markerscale=4, fontsize=6, loc="best", ncol=2, handletextpad=0.1, columnspacing=0.5)


def grid_to_array(tensor, nrow: int):
    """[N, C, H, W] in [0, 1] -> an HxWx3 uint8 image grid (white padding)."""
    from torchvision.utils import make_grid

    grid = make_grid(tensor.clamp(0, 1).float().cpu(), nrow=nrow, padding=2, pad_value=1.0)  # [3, H, W]
    return (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")


def recon_vs_pca(run_dir: Path, n: int = 12):
    """The first n test images, the run's reconstructions and PCA's at the run's latent size (rows).

    PCA is fitted on the run's own training split, as `aerun evaluate` does (aerun.evaluate.fit_pca)."""
    import torch

    from aerun.data import load_dataset
    from aerun.engine import to_float
    from aerun.analysis.pca import fit_pca, flatten
    from aerun.runs import load_run

    loaded = load_run(run_dir)
    d = loaded.config["data"]
    data = load_dataset(d["name"], d["root"], val_size=d["val_size"], seed=loaded.config["seed"],
                        max_train_samples=d.get("max_train_samples"), max_test_samples=d.get("max_test_samples"))
    images = data.test.images[:n]
    with torch.no_grad():
        recon = loaded.model.reconstruct(to_float(images))
    k = min(loaded.model.latent_dim, images[0].numel(), len(data.train))
    pca = fit_pca(data.train.images, k)
    pca_recon = pca.decode(pca.encode(flatten(images))).float().view_as(recon)
    return torch.cat([to_float(images), recon.float(), pca_recon]), k


# ----------------------------------------------------------------------------- number formats
def f4(x) -> str:
    return "–" if x is None else f"{x:.4f}"


def recon_numbers(ev: dict) -> str:
    r, p = ev["reconstruction"], ev["pca"]
    return (f"test MSE {r['mse']:.4f} (PCA-{p['latent_dim']} {p['mse']:.4f}), "
            f"PSNR {r['psnr']:.1f} dB (PCA {p['psnr']:.1f})")


def feature_numbers(ev: dict) -> str:
    m, p = ev["features"]["model"], ev["features"]["pca"]
    return (f"probe acc {f4(m['probe_accuracy'])} (PCA {f4(p['probe_accuracy'])}), "
            f"k-means NMI {f4(m['kmeans_nmi'])} (PCA {f4(p['kmeans_nmi'])})")


def vae_numbers(ev: dict) -> str:
    v = ev["vae"]
    return (f"ELBO {v['elbo']:.1f} nats (recon {v['recon']:.1f} + KL {v['kl']:.1f}), "
            f"IW-NLL (K={v['iw_samples']}) {v['iw_nll']:.1f}, active units {v['active_units']}/{ev['latent_dim']}")


def epochs_of(metrics: dict) -> str:
    return str(metrics["epochs"])


# ----------------------------------------------------------------------------- the experiments
def shallow_mnist(g: Gallery, row: Row) -> None:
    run = g.out / "shallow_mnist"
    m = g.train(run, "experiment=shallow_mnist")
    ev = g.evaluate(run, g.out / "shallow_mnist_eval")
    interp = g.out / "shallow_mnist_interp"
    g.aerun(["interpolate", g.rel(run), "from_class=2", "to_class=9", f"hydra.run.dir={g.rel(interp)}"],
            interp / "interpolation.png", after=[run / "metrics.json"])
    row.epochs = epochs_of(m)
    row.numbers = [recon_numbers(ev), f"{m['params']:,} parameters"]
    image_panels(g.figure("shallow_mnist"),
                 [(run / "reconstructions.png", "test images (top) and their reconstructions, 32-d code"),
                  (interp / "interpolation.png", "decoding the line from a 2's code to a 9's")],
                 columns=1, width=7.5, height=2.9)


def linear_ae_2d(g: Gallery, row: Row) -> None:
    run = g.out / "linear_ae_2d"
    m = g.train(run, "experiment=linear_ae_2d")
    ev = g.evaluate(run, g.out / "linear_ae_2d_eval")
    enc, gen = g.out / "linear_ae_2d_encode", g.out / "linear_ae_2d_generate"
    g.aerun(["encode", g.rel(run), f"hydra.run.dir={g.rel(enc)}"], enc / "codes.npz", after=[run / "metrics.json"])
    g.aerun(["generate", g.rel(run), "-m", f"sampler={','.join(SAMPLERS)}", f"hydra.sweep.dir={g.rel(gen)}"],
            gen / str(len(SAMPLERS) - 1) / "samples.png", after=[run / "metrics.json"])
    row.epochs = epochs_of(m)
    row.numbers = [recon_numbers(ev), feature_numbers(ev)]
    fig = _figure(14, 3.7)
    scatter_codes(fig.add_subplot(1, 4, 1), enc / "codes.npz", "2-d codes of the 10,000 test images")
    titles = {"uniform": "sampler=uniform (box of the codes)", "normal": "sampler=normal (one Gaussian)",
              "gmm": "sampler=gmm (10 components)"}
    for i, sampler in enumerate(SAMPLERS):
        ax = fig.add_subplot(1, 4, i + 2)
        ax.imshow(_image(gen / str(i) / "samples.png"), interpolation="nearest")
        ax.set_title(titles[sampler], fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    _save(fig, g.figure("linear_ae_2d"))


def cnn_mnist(g: Gallery, row: Row) -> None:
    run = g.out / "cnn_mnist"
    m = g.train(run, "experiment=cnn_mnist")
    ev = g.evaluate(run, g.out / "cnn_mnist_eval")
    row.epochs = epochs_of(m)
    row.numbers = [recon_numbers(ev), feature_numbers(ev)]
    rows, k = recon_vs_pca(run, n=12)
    image_panels(g.figure("cnn_mnist"),
                 [(grid_to_array(rows, nrow=12), f"test images / conv AE ({ev['latent_dim']}-d code) / PCA-{k}")],
                 columns=1, width=6.2, height=2.0)


def denoise_mnist(g: Gallery, row: Row) -> None:
    panels, numbers, epochs = [], [], []
    for kind, level in DENOISE_VARIANTS:
        run = g.out / f"denoise_mnist_{kind}"
        extra = [] if (kind, level) == DENOISE_VARIANTS[0] else [f"data.noise.kind={kind}", f"data.noise.level={level}"]
        m = g.train(run, "experiment=denoise_mnist", *extra)
        ev = g.evaluate(run, g.out / f"denoise_mnist_{kind}_eval")
        d = ev["denoising"]
        label = {"gaussian": "gaussian σ", "salt_pepper": "salt & pepper p", "masking": "masking p"}[kind]
        numbers.append(f"{label}={level:g}: PSNR {d['psnr_noisy']:.1f} → {d['psnr_denoised']:.1f} dB "
                       f"(**{d['psnr_gain']:+.1f} dB**)")
        panels.append((run / "denoising.png", f"{label}={level:g}: noisy / denoised / clean, "
                       f"{d['psnr_noisy']:.1f} → {d['psnr_denoised']:.1f} dB"))
        epochs.append(epochs_of(m))
    row.epochs = " / ".join(sorted(set(epochs)))
    row.numbers = numbers
    image_panels(g.figure("denoise_mnist"), panels, columns=1, width=6.5, height=4.6)


def sparse_mnist(g: Gallery, row: Row) -> None:
    import numpy as np
    import torch
    from torch import nn

    from aerun.runs import load_run

    run = g.out / "sparse_mnist"
    m = g.train(run, "experiment=sparse_mnist")
    ev = g.evaluate(run, g.out / "sparse_mnist_eval")
    enc = g.out / "sparse_mnist_encode"
    g.aerun(["encode", g.rel(run), "encode.projection=tsne", "encode.plot_max_points=2000",
             f"hydra.run.dir={g.rel(enc)}"], enc / "latent.png", after=[run / "metrics.json"])
    s = ev["sparsity"]
    row.epochs = epochs_of(m)
    r = ev["reconstruction"]
    row.numbers = [f"test MSE {r['mse']:.4f}, PSNR {r['psnr']:.1f} dB (PCA capped at {ev['pca']['latent_dim']} = all pixels is lossless)",
                   f"{100 * s['zero_fraction']:.1f}% of code entries < {s['threshold']:g} "
                   f"({s['active_per_code']:.0f} of {ev['latent_dim']} active per image, {s['dead_units']} dead units)",
                   feature_numbers(ev)]
    # The learned filters: rows of the encoder's weight [1024, 784] -> 28x28, the 64 units most
    # often active on the test set, each scaled to its own min..max.
    loaded = load_run(run)
    weight = next(mod for mod in loaded.model.encoder.modules() if isinstance(mod, nn.Linear)).weight.detach()
    codes = np.load(enc / "codes.npz")["codes"]
    usage = torch.as_tensor((np.abs(codes) >= s["threshold"]).mean(0))  # [1024] fraction of images active
    top = usage.argsort(descending=True)[:64]
    filters = weight[top].view(-1, *loaded.input_shape)  # [64, 1, 28, 28]
    low = filters.amin(dim=(1, 2, 3), keepdim=True)
    high = filters.amax(dim=(1, 2, 3), keepdim=True)
    filters = (filters - low) / (high - low).clamp_min(1e-12)
    image_panels(g.figure("sparse_mnist"),
                 [(grid_to_array(filters, nrow=8), "64 encoder filters (the most often active units)"),
                  (enc / "latent.png", "")], columns=2, width=10, height=4.8)


def stacked_fashion(g: Gallery, row: Row) -> None:
    fashion = any((g.data_root / "FashionMNIST" / "raw" / f"train-images-idx3-ubyte{ext}").is_file()
                  for ext in ("", ".gz"))
    extra = [] if fashion else ["data=mnist"]
    if not fashion:
        row.note = (f"no FashionMNIST files under the data root (FashionMNIST/raw/): this row ran on MNIST with "
                    f"`data=mnist`")
    deep, shallow = g.out / "stacked_fashion", g.out / "stacked_fashion_shallow"
    md = g.train(deep, "experiment=stacked_fashion", *extra)
    ms = g.train(shallow, "experiment=stacked_fashion", *extra, "model.hidden=[256]")
    ed = g.evaluate(deep, g.out / "stacked_fashion_eval")
    es = g.evaluate(shallow, g.out / "stacked_fashion_shallow_eval")
    row.epochs = epochs_of(md)
    row.numbers = [f"deep 784-512-256-128-32: test MSE {ed['reconstruction']['mse']:.4f}, "
                   f"PSNR {ed['reconstruction']['psnr']:.1f} dB, {md['params']:,} params",
                   f"shallower 784-256-32: test MSE {es['reconstruction']['mse']:.4f}, "
                   f"PSNR {es['reconstruction']['psnr']:.1f} dB, {ms['params']:,} params",
                   f"PCA-32 MSE {ed['pca']['mse']:.4f}; probe acc deep {f4(ed['features']['model']['probe_accuracy'])} "
                   f"/ shallower {f4(es['features']['model']['probe_accuracy'])}"]
    data = "FashionMNIST" if fashion else "MNIST (FashionMNIST absent)"
    image_panels(g.figure("stacked_fashion"),
                 [(deep / "reconstructions.png", f"deep 784-512-256-128-32, {data}: test MSE "
                   f"{ed['reconstruction']['mse']:.4f}"),
                  (shallow / "reconstructions.png", f"shallower 784-256-32: test MSE {es['reconstruction']['mse']:.4f}")],
                 columns=1, width=7.5, height=2.9)


def vae_2d(g: Gallery, row: Row) -> None:
    run = g.out / "vae_2d"
    m = g.train(run, "experiment=vae_2d")
    ev = g.evaluate(run, g.out / "vae_2d_eval", variational=True)
    gen, man, enc = g.out / "vae_2d_generate", g.out / "vae_2d_manifold", g.out / "vae_2d_encode"
    after = [run / "metrics.json"]
    g.aerun(["generate", g.rel(run), "sampler=prior", f"hydra.run.dir={g.rel(gen)}"], gen / "samples.png", after)
    g.aerun(["interpolate", g.rel(run), "mode=manifold", f"hydra.run.dir={g.rel(man)}"], man / "manifold.png", after)
    g.aerun(["encode", g.rel(run), f"hydra.run.dir={g.rel(enc)}"], enc / "codes.npz", after)
    row.epochs = epochs_of(m)
    row.numbers = [vae_numbers(ev), recon_numbers(ev), feature_numbers(ev)]
    plain = g.out / "linear_ae_2d_encode" / "codes.npz"
    fig = _figure(9.0, 8.4)
    for i, (png, title) in enumerate([(man / "manifold.png", "decoded manifold: z over N(0,1) quantiles 0.05..0.95"),
                                      (gen / "samples.png", "prior samples z ~ N(0, I)")]):
        ax = fig.add_subplot(2, 2, i + 1)
        ax.imshow(_image(png), interpolation="antialiased")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    scatter_codes(fig.add_subplot(2, 2, 3), enc / "codes.npz", "VAE posterior means of the test images")
    ax = fig.add_subplot(2, 2, 4)
    if plain.is_file():
        scatter_codes(ax, plain, "plain AE codes of the test images (linear_ae_2d)")
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, "run linear_ae_2d for the plain AE's scatter", ha="center", fontsize=8)
    fig.tight_layout()
    _save(fig, g.figure("vae_2d"))


def beta_vae(g: Gallery, row: Row) -> None:
    sweep = g.out / "beta_vae"
    jobs = [sweep / str(i) for i in range(len(BETAS))]
    if g.force and sweep.exists():
        shutil.rmtree(sweep)
    g.aerun(["train", "-m", "experiment=beta_vae", f"model.beta={','.join(BETAS)}", "data.root=$DATA_ROOT",
             "resume=true", f"hydra.sweep.dir={g.rel(sweep)}"],
            jobs[-1] / "metrics.json", after=[], train=True)
    for job in jobs[:-1]:
        if not (job / "metrics.json").is_file():
            raise StepFailed(f"the sweep did not finish {g.rel(job)}")
    results = []
    for beta, job in zip(BETAS, jobs):
        ev = g.evaluate(job, g.out / f"beta_vae_eval_{job.name}", variational=True)
        results.append((beta, read_json(job / "metrics.json"), ev))
    row.epochs = epochs_of(results[0][1])
    row.numbers = [f"β={beta}: recon {ev['vae']['recon']:.1f} + KL {ev['vae']['kl']:.1f} nats, "
                   f"IW-NLL {ev['vae']['iw_nll']:.1f}, MSE {ev['reconstruction']['mse']:.4f}, "
                   f"active units {ev['vae']['active_units']}/{ev['latent_dim']}" for beta, _, ev in results]
    fig = _figure(11, 3.6)
    ax = fig.add_subplot(1, 2, 1)
    for beta, _, ev in results:
        ax.scatter(ev["vae"]["kl"], ev["vae"]["recon"], s=40)
        ax.annotate(f"β={beta}", (ev["vae"]["kl"], ev["vae"]["recon"]), textcoords="offset points",
                    xytext=(5, 5), fontsize=9)
    ax.plot([ev["vae"]["kl"] for _, _, ev in results], [ev["vae"]["recon"] for _, _, ev in results], "k:", lw=1)
    ax.set_xlabel("KL(q(z|x) ‖ p(z)), nats per image", fontsize=9)
    ax.set_ylabel("reconstruction −log p(x|z), nats", fontsize=9)
    ax.set_title("rate vs distortion (test set)", fontsize=10)
    ax.tick_params(labelsize=8)
    ax = fig.add_subplot(1, 2, 2)
    width = 0.8 / len(results)
    for i, (beta, metrics, ev) in enumerate(results):
        kl = sorted(metrics["test"]["kl_per_dim"], reverse=True)
        ax.bar([j + i * width for j in range(len(kl))], kl, width=width,
               label=f"β={beta} ({ev['vae']['active_units']} active)")
    ax.axhline(0.01, color="grey", lw=0.5)
    ax.set_xlabel("latent dimension (sorted by KL)", fontsize=9)
    ax.set_ylabel("KL per dimension, nats", fontsize=9)
    ax.set_title("per-dimension KL: active units", fontsize=10)
    ax.legend(fontsize=8)
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    _save(fig, g.figure("beta_vae"))


def cifar_cnn(g: Gallery, row: Row) -> None:
    if not (g.data_root / "cifar-10-batches-py").is_dir():
        row.status = "skipped"
        row.note = "skipped: no CIFAR-10 files (`<data root>/cifar-10-batches-py`)"
        row.commands = ["aerun train experiment=cifar_cnn data.root=$DATA_ROOT"]
        return
    run = g.out / "cifar_cnn"
    m = g.train(run, "experiment=cifar_cnn")
    ev = g.evaluate(run, g.out / "cifar_cnn_eval")
    row.epochs = epochs_of(m)
    row.numbers = [recon_numbers(ev)]
    rows, k = recon_vs_pca(run, n=12)
    image_panels(g.figure("cifar_cnn"),
                 [(grid_to_array(rows, nrow=12), f"test images / conv AE ({ev['latent_dim']}-d code) / PCA-{k}")],
                 columns=1, width=6.2, height=2.2)


def kmeans_codes(g: Gallery, row: Row) -> None:
    ae, vae = g.out / "kmeans_codes", g.out / "kmeans_codes_vae"
    ma = g.train(ae, "experiment=kmeans_codes")
    g.train(vae, "experiment=kmeans_codes", "model=vae", "model.latent_dim=16")
    ea = g.evaluate(ae, g.out / "kmeans_codes_eval")
    ev = g.evaluate(vae, g.out / "kmeans_codes_vae_eval", variational=True)
    entries = [("conv AE-16", ea["features"]["model"]), ("VAE-16", ev["features"]["model"]),
               ("PCA-16", ea["features"]["pca"])]
    row.epochs = epochs_of(ma)
    row.numbers = [f"{name}: probe acc {f4(f['probe_accuracy'])}, k-means NMI {f4(f['kmeans_nmi'])}"
                   for name, f in entries]
    fig = _figure(6.5, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    for j, (metric, label) in enumerate([("probe_accuracy", "linear probe accuracy"), ("kmeans_nmi", "k-means NMI")]):
        for i, (name, f) in enumerate(entries):
            value = f[metric] or 0.0
            bar = ax.bar(j + (i - 1) * 0.26, value, width=0.25, color=f"C{i}", label=name if j == 0 else None)
            ax.bar_label(bar, fmt="%.3f", fontsize=8)
    ax.set_xticks([0, 1], ["linear probe accuracy", "k-means NMI (k=10)"])
    ax.set_ylim(0, 1.22)
    ax.set_title("16-d codes as features, MNIST test set", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", ncol=3)
    fig.tight_layout()
    _save(fig, g.figure("kmeans_codes"))


def pretrain_finetune(g: Gallery, row: Row) -> None:
    run = g.out / "pretrain_finetune"
    m = g.train(run, "experiment=pretrain_finetune")
    ev = g.evaluate(run, g.out / "pretrain_finetune_eval")
    # The default (frozen encoder + linear head), then the whole pretrained network fine-tuned.
    reports = {}
    for variant, extra in (("frozen", []), ("fine-tuned", ["finetune.freeze_encoder=false"])):
        ft = g.out / ("pretrain_finetune_finetune" if variant == "frozen" else "pretrain_finetune_finetune_all")
        args = ["finetune", f"run={g.rel(run)}", "labels_per_class=[10,100,1000]", *extra]
        if g.smoke:
            args.append("finetune.steps=50")
        g.aerun([*args, f"hydra.run.dir={g.rel(ft)}"], ft / "finetune.json", after=[run / "metrics.json"])
        reports[variant] = read_json(ft / "finetune.json")
    frozen, tuned = reports["frozen"]["results"], reports["fine-tuned"]["results"]
    row.epochs = epochs_of(m)
    row.numbers = [f"{a['labels_per_class']} labels/class: scratch {a['scratch_accuracy']:.3f}, pretrained frozen "
                   f"{a['pretrained_accuracy']:.3f} ({a['gain']:+.3f}), fine-tuned {b['pretrained_accuracy']:.3f} "
                   f"({b['gain']:+.3f})" for a, b in zip(frozen, tuned)]
    row.numbers.append(f"({reports['frozen']['head']} head, {reports['frozen']['steps']} steps each; AE: "
                       + recon_numbers(ev) + ")")
    fig = _figure(5.6, 3.6)
    ax = fig.add_subplot(1, 1, 1)
    xs = [r["labels_per_class"] for r in frozen]
    ax.plot(xs, [r["scratch_accuracy"] for r in frozen], "s--", color="grey", label="from scratch (same network)")
    ax.plot(xs, [r["pretrained_accuracy"] for r in frozen], "o-", label="pretrained encoder, frozen + linear head")
    ax.plot(xs, [r["pretrained_accuracy"] for r in tuned], "^-", label="pretrained encoder, fine-tuned")
    ax.set_xscale("log")
    ax.set_xticks(xs, [str(x) for x in xs])
    ax.set_xlabel("labelled training images per class", fontsize=9)
    ax.set_ylabel("test accuracy", fontsize=9)
    ax.set_title(f"conv AE ({ev['latent_dim']}-d code) pretrained on all images, then labels", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.tick_params(labelsize=8)
    fig.tight_layout()
    _save(fig, g.figure("pretrain_finetune"))


import gallery_families  # noqa: E402 - its rows use this module's helpers

gallery_families.H = sys.modules[__name__]
RUNNERS = {f.__name__: f for f in (shallow_mnist, linear_ae_2d, cnn_mnist, denoise_mnist, sparse_mnist,
                                   stacked_fashion, vae_2d, beta_vae, cifar_cnn, kmeans_codes, pretrain_finetune,
                                   *gallery_families.FAMILY_ROWS)}
assert list(RUNNERS) == EXPERIMENTS


# ----------------------------------------------------------------------------- the table
def _cell(lines: list[str]) -> str:
    return "<br>".join(line.replace("|", "\\|") for line in lines)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def earlier_rows(path: Path, names) -> dict[str, str]:
    """The table lines of `path` (an earlier gallery.md) for experiments in `names`: the rows a
    run with --only keeps when this checkout has no cached result for them (a fresh clone)."""
    if not path.is_file():
        return {}
    lines = {}
    for line in path.read_text().splitlines():
        for name in names:
            if line.startswith(f"| `{name}` |"):
                lines[name] = line
    return lines


def write_markdown(g: Gallery, rows: list[dict], data_root_shown: str, total_wall: float,
                   kept: dict[str, str] | None = None) -> Path:
    """gallery.md from the rows run or cached here, in EXPERIMENTS order, with `kept` lines (an
    earlier table's) for the experiments that have neither."""
    kept = kept or {}
    load = os.getloadavg()
    threads = sorted({t.get("threads", "default") for t in g.timings.values()} - {"default"})
    threads = ", ".join(threads)
    lines = [
        "<!-- Written by docs/gallery.py (make gallery); do not edit by hand. -->",
        "# Gallery: the classic autoencoder experiments",
        "",
        f"Every row is one `experiment=` config (`configs/experiment/`), trained and studied with the real CLI from "
        f"the repository root, with `DATA_ROOT={data_root_shown}`"
        + (" (**smoke mode: `debug=smoke` on tiny data — numbers are meaningless**)" if g.smoke else "")
        + ". Numbers are on the test split, from `metrics.json`, `evaluation.json` (`aerun evaluate`) and "
        "`finetune.json`; MSE is per pixel with pixels in [0, 1]; VAE likelihoods are nats per image under a "
        "Bernoulli decoder on grey levels (`evaluate.iw_samples=100`). Time is the row's wall time "
        f"on {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), no GPU, on a machine "
        "shared with other jobs (CPU time of the row in brackets)"
        + (f", every command with `OMP_NUM_THREADS={threads}`" if threads else "") + ".",
        "",
        "| experiment | figure | commands | results (test split) | epochs | time |",
        "|---|---|---|---|---|---|",
    ]
    fresh = {r["name"]: r for r in rows}
    for name in EXPERIMENTS:
        if name in kept and name not in fresh:
            lines.append(kept[name])
            continue
        if name not in fresh:
            continue
        r = fresh[name]
        fig = (f'<a href="figures/{r["figure"]}"><img src="figures/{r["figure"]}" width="320"></a>'
               if r.get("figure") else "–")
        commands = _cell([f"`{c}`" for c in r["commands"]])
        numbers = list(r["numbers"])
        if r.get("note"):
            numbers.append(f"*{r['note']}*")
        if r["status"] == "failed":
            numbers.insert(0, "**failed**")
        time_cell = "–" if r["status"] == "skipped" else f"{_minutes(r['wall_s'])} ({_minutes(r['cpu_s'])} CPU)"
        lines.append(f"| `{r['name']}` | {fig} | {commands} | {_cell(numbers)} | {r.get('epochs') or '–'} "
                     f"| {time_cell} |")
    total_rows = sum(r["wall_s"] for r in rows)
    lines += ["",
              f"Total: {_minutes(total_rows)} of wall time over the rows"
              + (f" run here ({len(kept)} rows kept from an earlier table, with the times and thread settings "
                 "measured then)" if kept else "")
              + f" (load average {load[0]:.1f} when this table was written). Run dirs are under `{g.rel(g.out)}/`; "
              f"`make gallery` re-runs only what is missing (`python docs/gallery.py --force` redoes everything).",
              "",
              "Notes: the conv AE / PCA figures show the first 12 test images, the run's reconstructions and the PCA "
              "reconstruction at the same latent size (PCA fitted on the run's training split by "
              "`aerun.evaluate.fit_pca`, as `aerun evaluate` does). The sparse AE's filters are the encoder's weight "
              "rows of the 64 units most often active on the test set, each scaled to its own range.",
              ""]
    path = g.docs / "gallery.md"
    path.write_text("\n".join(lines))
    return path


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=os.environ.get("DATA_ROOT", "../shared/datasets"),
                        help="the folder holding MNIST/raw (and FashionMNIST/raw, cifar-10-batches-py)")
    parser.add_argument("--only", nargs="+", choices=EXPERIMENTS, metavar="NAME", help="run only these rows")
    parser.add_argument("--smoke", action="store_true", help="debug=smoke everywhere; outputs under outputs/gallery_smoke")
    parser.add_argument("--force", action="store_true", help="retrain and rerun even what is done")
    parser.add_argument("--threads", type=int, default=0,
                        help="OMP_NUM_THREADS for every command (0: torch's default, one per core); 1 is much "
                             "faster on a machine whose cores other jobs are using")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    data_root = Path(args.data_root)
    if not data_root.is_absolute():
        data_root = (Path.cwd() / data_root).resolve()
    if not (data_root / "MNIST" / "raw").is_dir():
        print(f"gallery: error: no MNIST/raw under {data_root}; pass --data-root", file=sys.stderr)
        return 2
    out = REPO / "outputs" / ("gallery_smoke" if args.smoke else "gallery")
    docs = out / "docs" if args.smoke else REPO / "docs"
    if args.threads > 0:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    g = Gallery(data_root, args.smoke, args.force, out, docs)
    shown_root = os.path.relpath(data_root, REPO)
    if shown_root.startswith("../.."):
        shown_root = str(data_root)

    started = time.time()
    cache = out / "rows"
    cache.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in args.only or EXPERIMENTS:
        row = Row(name)
        g.row = row
        row_started = time.time()
        self_before = resource.getrusage(resource.RUSAGE_SELF)
        try:
            RUNNERS[name](g, row)
        except Exception as exc:  # noqa: BLE001 - one failed row must not stop the gallery
            log.error("[%s] failed: %s", name, exc)
            row.status, row.note = "failed", str(exc)[:400]
            failed.append(name)
        fig = g.figure(name)
        row.figure = fig.name if fig.is_file() and row.status == "ok" else None
        # figure-making time belongs to the row as well
        row.wall_s += max(0.0, (time.time() - row_started) - (row.wall_s - row.reused_s))
        self_after = resource.getrusage(resource.RUSAGE_SELF)
        row.cpu_s += (self_after.ru_utime - self_before.ru_utime) + (self_after.ru_stime - self_before.ru_stime)
        (cache / f"{name}.json").write_text(json.dumps(row.__dict__, indent=1))
        log.info("[%s] %s in %s", name, row.status, _minutes(row.wall_s))
    rows = [read_json(cache / f"{n}.json") for n in EXPERIMENTS if (cache / f"{n}.json").is_file()]
    kept = earlier_rows(docs / "gallery.md", set(EXPERIMENTS) - {r["name"] for r in rows})
    path = write_markdown(g, rows, shown_root, time.time() - started, kept)
    log.info("wrote %s (%d rows) in %s%s", path, len(rows), _minutes(time.time() - started),
             f"; failed: {', '.join(failed)}" if failed else "")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
