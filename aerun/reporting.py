"""What a training run shows and leaves besides checkpoints: TensorBoard scalars and images,
the console lines and progress bar, the final figures and the hyper-parameter summary.

`TrainReporter` is the `reporter` the loop calls (`aerun.engine.loop.Reporter`); the loop
itself never touches TensorBoard, the console or a PNG. Ranks other than 0 get `NullReporter`.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
from pathlib import Path

import torch

from aerun import runs
from aerun.config import flatten
from aerun.engine.step import to_float
from aerun.figures import save_image_grid

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
    def __init__(self, run_dir: Path, model, preview, max_epochs: int, progress: bool,
                 images_every_n_epochs: int, purge_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        self.model = model
        self.preview = preview  # uint8 [8, C, H, W]: the images whose reconstructions TensorBoard shows
        self.max_epochs = max_epochs
        self.tty = sys.stderr.isatty() and progress
        self.images_every_n_epochs = images_every_n_epochs
        self.writer = SummaryWriter(log_dir=str(self.run_dir / runs.TENSORBOARD), purge_step=purge_step)
        self.bar = None

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
        for name, value in means.items():
            if not isinstance(value, list):
                self.writer.add_scalar(f"train/{name}_running", value, state.global_step)
        self.writer.add_scalar("train/lr", state.lr, state.global_step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{means['loss']:.4g}")

    def epoch_done(self, state, train: dict, val: dict, improved: bool) -> None:
        self._close_bar()
        step = state.global_step
        for split, values in (("train", train), ("val", val)):
            for name, value in values.items():
                if not isinstance(value, list):
                    self.writer.add_scalar(f"{split}/{name}", value, step)
                elif split == "val":  # per-dimension terms (a VAE's KL per latent unit)
                    for i, v in enumerate(value):
                        self.writer.add_scalar(f"val_{name}/{i:03d}", v, step)
        for warning in self.model.epoch_warnings(val):
            log.warning(warning)
        self.writer.add_scalar("train/epoch", state.epoch, step)
        if self.images_every_n_epochs and state.epoch % self.images_every_n_epochs == 0:
            with torch.no_grad():
                self.model.eval()
                x = to_float(self.preview)
                self.writer.add_images("images/reconstruction", image_rows(x, self.model.reconstruct(x)), step)
        val_text = f"val loss {val['loss']:.4f} mse {val['mse']:.5f}" if val else "no val split"
        log.info("epoch %d/%d  step %d  train loss %.4f  %s%s", state.epoch, self.max_epochs, step,
                 train.get("loss", math.nan), val_text, "  (best)" if improved else "")

    def stopped(self, state, signum: int) -> None:
        self._close_bar()
        log.warning("stopped by %s at epoch %d, step %d; checkpoint written", signal.Signals(signum).name,
                    state.epoch + 1, state.global_step)

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    # -- after the loop -----------------------------------------------------------------
    def final(self, metrics: dict, plain: dict, dataset) -> None:
        """The final figures, the hyper-parameter summary and the console's last line."""
        write_figures(self.model, dataset, self.run_dir, plain["data"]["noise"], plain["seed"])
        write_hparams(self.writer, plain, metrics)
        test = metrics["test"]
        gain = f", denoising {test['psnr_gain']:+.2f} dB" if "psnr_gain" in test else ""
        log.info("test: mse %.5f per pixel, psnr %.2f dB%s%s; metrics in %s", test["mse"], test["psnr"], gain,
                 f", elbo {test['elbo']:.2f} nats" if "elbo" in test else "", self.run_dir / runs.METRICS)

    def close(self) -> None:
        self._close_bar()
        self.writer.close()


def write_figures(model, dataset, run_dir: Path, noise: dict, seed: int) -> None:
    """reconstructions.png (test inputs above reconstructions); denoising.png for noisy runs."""
    from aerun.data.noise import apply_noise

    model.eval()
    with torch.no_grad():
        clean = to_float(dataset.test.images[:16])
        save_image_grid(image_rows(clean, model.reconstruct(clean)), run_dir / "reconstructions.png", nrow=16,
                        row_labels=["input", "reconstruction"])
        if noise["kind"] != "none":
            generator = torch.Generator(device=clean.device).manual_seed(seed)
            noisy = apply_noise(clean, noise["kind"], noise["level"], generator)
            save_image_grid(image_rows(noisy, model.reconstruct(noisy), clean), run_dir / "denoising.png", nrow=16,
                            row_labels=["noisy input", "denoised", "clean"])



def write_hparams(writer, plain: dict, metrics: dict) -> None:
    """Hyper-parameters and final metrics into the run's own event file (not a new TensorBoard run)."""
    from torch.utils.tensorboard.summary import hparams

    hparam_dict = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                   for k, v in flatten({k: plain[k] for k in ("model", "data", "optim", "trainer", "seed", "loss")}).items()}
    metric_dict = {f"hparam/{split}_{name}": value for split in ("val", "test")
                   for name, value in metrics[split].items() if isinstance(value, float)}
    experiment, session_start, session_end = hparams(hparam_dict, metric_dict)
    writer.file_writer.add_summary(experiment)
    writer.file_writer.add_summary(session_start)
    writer.file_writer.add_summary(session_end)
    for name, value in metric_dict.items():
        writer.add_scalar(name, value, metrics["steps"])
