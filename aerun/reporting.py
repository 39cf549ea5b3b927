"""What a training run shows and leaves besides checkpoints: the console lines and progress
bar, scalars and images for the trackers (`aerun.loggers`: TensorBoard, CSV, MLflow, W&B),
the final figures and metrics.

`TrainReporter` is the `reporter` the loop calls (`aerun.engine.loop.Reporter`); the loop
itself never touches a tracker, the console or a PNG. Ranks other than 0 get `NullReporter`.
"""

from __future__ import annotations

import logging
import math
import re
import signal
import sys
from pathlib import Path

import torch

from aerun import runs
from aerun.engine.step import to_float
from aerun.figures import save_image_grid
from aerun.models.base import collapse_warning

log = logging.getLogger("aerun.train")


def image_rows(*rows):
    return torch.cat([r.float().cpu().clamp(0, 1) for r in rows])


class NullReporter:
    """Reports nothing (DDP ranks other than 0, benchmarks)."""

    def epoch_started(self, state, steps_per_epoch: int) -> None:
        pass

    def step_done(self, state) -> None:
        pass

    def log_point(self, state, means: dict) -> None:
        pass

    def epoch_done(self, state, train: dict, val: dict, improved: bool) -> None:
        pass

    def stopped(self, state, signum: int) -> None:
        pass

    def final(self, metrics: dict, plain: dict, dataset) -> None:
        pass

    def close(self) -> None:
        pass


class TrainReporter:
    """The console (epoch lines, progress bar, warnings) and the run's trackers (`aerun.loggers`:
    scalars, per-epoch images, the final metrics and files)."""

    def __init__(self, run_dir: Path, model, preview, max_epochs: int, progress: bool,
                 images_every_n_epochs: int, loggers, seed: int):
        self.run_dir = Path(run_dir)
        self.model = model
        self.preview = preview  # a split (val, else test): the images the trackers are shown each epoch
        self.max_epochs = max_epochs
        self.tty = sys.stderr.isatty() and progress
        self.images_every_n_epochs = images_every_n_epochs
        self.loggers = loggers
        self.seed = seed
        self.fixed_codes = None  # the same codes decoded every epoch (models with a prior)
        self.bar = None
        self._warned: set[str] = set()
        self._status = "failed"  # until final() or stopped() says otherwise

    # -- during the loop ----------------------------------------------------------------
    def epoch_started(self, state, steps_per_epoch: int) -> None:
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(total=steps_per_epoch, initial=state.batch_in_epoch, leave=False, dynamic_ncols=True,
                            desc=f"epoch {state.epoch + 1}/{self.max_epochs}")

    def step_done(self, state) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def log_point(self, state, means: dict) -> None:
        scalars = {f"train/{name}_running": value for name, value in means.items() if not isinstance(value, list)}
        self.loggers.scalars({**scalars, "train/lr": state.lr}, state.global_step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{means['loss']:.4g}")

    def epoch_done(self, state, train: dict, val: dict, improved: bool) -> None:
        self._close_bar()
        step = state.global_step
        scalars = {}
        for split, values in (("train", train), ("val", val)):
            for name, value in values.items():
                if not isinstance(value, list):
                    scalars[f"{split}/{name}"] = value
                elif split == "val":  # per-dimension terms (a VAE's KL per latent unit)
                    scalars.update({f"val_{name}/{i:03d}": v for i, v in enumerate(value)})
        self.loggers.scalars({**scalars, "train/epoch": state.epoch}, step)
        if self.images_every_n_epochs and state.epoch % self.images_every_n_epochs == 0:
            for tag, image in epoch_images(self.model, self.preview, self._fixed_codes()).items():
                self.loggers.image(tag, image, step)
        val_text = f"val loss {val['loss']:.4f} mse {val['mse']:.5f}" if val else "no val split"
        log.info("epoch %d/%d  step %d  train loss %.4f  %s%s", state.epoch, self.max_epochs, step,
                 train.get("loss", math.nan), val_text, "  (best)" if improved else "")
        # the mean image is where training starts: a collapse is news once it outlasts the first epoch
        # (and, for a staged family, once its whole network trains: in pretraining the upper layers are unset)
        settled = state.epoch >= 2 and self.model.counts_for_best(state.epoch)
        self._warn(self.model.epoch_warnings(val) + (collapse_warning(val) if settled else []))

    def _fixed_codes(self):
        """16 codes from the model's prior, drawn once: decoded every epoch, they show progress.
        None for models without a prior, and for Gibbs-sampled ones (a chain per epoch is slow)."""
        if self.fixed_codes is None and self.model.has_prior and not hasattr(self.model, "gibbs_samples"):
            device = next(self.model.parameters()).device
            generator = torch.Generator(device=device).manual_seed(self.seed + 2_024)
            with torch.no_grad():
                self.fixed_codes = self.model.sample_codes(16, generator)
        return self.fixed_codes

    def stopped(self, state, signum: int) -> None:
        self._close_bar()
        self._status = "stopped"
        log.warning("stopped by %s at epoch %d, step %d; checkpoint written", signal.Signals(signum).name,
                    state.epoch + 1, state.global_step)

    def _warn(self, warnings: list[str]) -> None:
        """Each kind of warning once per run (its text up to the first number): a collapse seen
        at epoch 3 is still news at epoch 3, not at epochs 4 to 50."""
        for warning in warnings:
            kind = re.split(r"[0-9]", warning, maxsplit=1)[0]
            if kind not in self._warned:
                self._warned.add(kind)
                log.warning(warning)

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    # -- after the loop -----------------------------------------------------------------
    def final(self, metrics: dict, plain: dict, dataset) -> None:
        """The final figures, the final metrics and files to the trackers, the console's last line."""
        written = write_figures(self.model, dataset, self.run_dir, plain["data"]["noise"], plain["seed"])
        self.loggers.summary(final_scalars(metrics), metrics["steps"])
        self.loggers.artifacts([*written, self.run_dir / runs.METRICS, self.run_dir / runs.CONFIG_FILE,
                                self.run_dir / runs.BEST])
        self._status = "finished"
        test = metrics["test"]
        gain = f", denoising {test['psnr_gain']:+.2f} dB" if "psnr_gain" in test else ""
        if test.get("psnr_region_gain") is not None:
            gain += f" ({test['psnr_region_gain']:+.2f} dB inside the watermarks)"
        log.info("test: mse %.5f per pixel, psnr %.2f dB%s%s; metrics in %s", test["mse"], test["psnr"], gain,
                 f", elbo {test['elbo']:.2f} nats" if "elbo" in test else "", self.run_dir / runs.METRICS)

    def close(self) -> None:
        self._close_bar()
        self.loggers.close(self._status)


def final_scalars(metrics: dict) -> dict[str, float]:
    """test/* and val/best_* (the best epoch's validation metrics): logged once, at the last step."""
    out = {f"test/{k}": v for k, v in metrics["test"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    out.update({f"val/best_{k}": v for k, v in (metrics.get("val") or {}).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return out


@torch.no_grad()
def epoch_images(model, preview, fixed_codes) -> dict:
    """What the trackers show each epoch, as PIL images: eight inputs above their
    reconstructions; the fixed codes decoded (models with a prior); the 2-d codes of up to
    2,000 preview images as a scatter plot."""
    from aerun.figures import grid_image

    model.eval()
    x, labels = to_float(preview.images[:8]), preview.labels[:8]
    images = {"images/reconstruction": grid_image(image_rows(x, model.reconstruct(x, labels)), nrow=8,
                                                  row_labels=["input", "reconstruction"])}
    if fixed_codes is not None:
        classes = getattr(model, "num_classes", None) if model.uses_labels else None
        code_labels = torch.arange(len(fixed_codes), device=fixed_codes.device) % classes if classes else None
        images["images/samples"] = grid_image(model.decode(fixed_codes, code_labels), nrow=8)
    if model.latent_dim == 2:
        images["images/latent"] = _latent_scatter(model, preview)
    return images


def _latent_scatter(model, preview):
    from aerun.figures import figure_image, scatter_figure
    from aerun.latent.codes import encode_batches

    n = min(2000, len(preview))
    codes = encode_batches(model, preview.images[:n], 500, labels=preview.labels[:n])["codes"].numpy()
    labels = preview.labels[:n].cpu().numpy()
    classes = [str(k) for k in range(int(labels.max()) + 1)] if n and labels.max() >= 0 else []
    fig = scatter_figure(codes, labels, classes, f"codes of {n} images", "z[0]", "z[1]", size_inches=(5, 4))
    return figure_image(fig)


def write_figures(model, dataset, run_dir: Path, noise: dict, seed: int) -> list[Path]:
    """reconstructions.png (test inputs above reconstructions); denoising.png for noisy runs;
    an RBM's filters.png. Returns the paths written."""
    from aerun.data.noise import apply_noise

    model.eval()
    written = [run_dir / "reconstructions.png"]
    with torch.no_grad():
        clean, labels = to_float(dataset.test.images[:16]), dataset.test.labels[:16]
        save_image_grid(image_rows(clean, model.reconstruct(clean, labels)), written[0], nrow=16,
                        row_labels=["input", "reconstruction"])
        if hasattr(model, "filters"):  # what each hidden unit detects: an RBM's weights as images
            written.append(run_dir / "filters.png")
            save_image_grid(model.filters()[:100], written[-1], nrow=10)
        if noise["kind"] != "none":
            generator = torch.Generator(device=clean.device).manual_seed(seed)
            noisy = apply_noise(clean, noise["kind"], noise["level"], generator, "test")
            written.append(run_dir / "denoising.png")
            save_image_grid(image_rows(noisy, model.reconstruct(noisy, labels), clean), written[-1], nrow=16,
                            row_labels=["noisy input", "denoised", "clean"])
    return written
