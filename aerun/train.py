"""`aerun train`: `train(cfg, run_dir) -> metrics` as a plain function, and `run(cfg)`
for Hydra, which returns the sweep objective.

A run can die at any step and lose only the steps since its last checkpoint:
`last.pt` holds everything needed to continue bit for bit (see `checkpoint.py`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from aerun import distributed, runs
from aerun.config import to_plain, validate_train
from aerun.errors import DivergenceError, UserError

log = logging.getLogger("aerun.train")

# Options that may differ when a run is resumed: they change neither the model nor the data.
RESUMABLE_KEYS = {"resume", "trainer.max_epochs", "trainer.progress", "trainer.log_every_n_steps",
                  "trainer.checkpoint_every_n_steps", "trainer.images_every_n_epochs", "trainer.num_threads",
                  "trainer.device", "trainer.eval_batch_size", "trainer.train_eval_size", "trainer.channels_last",
                  "trainer.kill_at_step", "optimized_metric"}


def validate(cfg: DictConfig) -> None:
    """Called by the CLI before any work: ranges and combinations."""
    validate_train(cfg)
    if _enum_str(cfg.trainer.strategy) == "ddp" and not ("WORLD_SIZE" in os.environ and "RANK" in os.environ):
        raise UserError("trainer.strategy=ddp: start aerun with torchrun, e.g. "
                        "torchrun --nproc_per_node=2 -m aerun train trainer.strategy=ddp ...")


# ----------------------------------------------------------------------------- CLI hooks
def prepare_overrides(overrides: list[str], multirun: bool) -> list[str]:
    """`resume=<run dir>`: continue in that directory with its own overrides, then the user's.
    In a sweep, `resume=true` / `resume=<sweep dir>` is handled per job (aerun.sweep)."""
    if multirun:
        from aerun.sweep import prepare_multirun_overrides

        return prepare_multirun_overrides(overrides)
    resume = None
    for o in overrides:
        if o.split("=", 1)[0].lstrip("+") == "resume":
            resume = o.split("=", 1)[1] if "=" in o else None
    if multirun or resume in (None, "", "null", "None"):
        return overrides
    run = runs.check_run_dir(resume, key="resume", need_checkpoint=runs.LAST)
    saved = run / ".hydra" / "overrides.yaml"
    previous = []
    if saved.is_file():
        # trainer.kill_at_step is a one-shot crash for testing recovery: re-applied, the resumed
        # run would kill itself again at the same step
        previous = [o for o in OmegaConf.to_container(OmegaConf.load(saved))
                    if not o.split("=", 1)[0].lstrip("+~").startswith(("hydra", "resume", "trainer.kill_at_step"))]
    return previous + [o for o in overrides if not o.split("=", 1)[0].startswith("hydra.run.dir")] + \
        [f"hydra.run.dir={run}"]


def run(cfg: DictConfig):
    """Hydra's task: train in Hydra's run directory, return the optimised metric."""
    from hydra.core.hydra_config import HydraConfig

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    from hydra.types import RunMode

    if hydra_cfg.mode == RunMode.MULTIRUN:
        from aerun.sweep import resolve_job_resume

        plan = resolve_job_resume(cfg, run_dir, overrides)
        if plan.skip:
            return plan.objective  # a finished job: its files stay as they are
        cfg.resume = plan.resume  # this job's own dir to continue its last.pt, or None
    metrics = train(cfg, run_dir, overrides=overrides)
    return metrics["objective"]["value"]


def on_job_failure(cfg: DictConfig, exc: BaseException) -> None:
    """A failed sweep job leaves a status file with its one-line reason."""
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    _write_status(run_dir, "failed", reason=" ".join(str(exc).split()),
                  overrides=list(HydraConfig.get().overrides.task))


# ----------------------------------------------------------------------------- helpers
def _write_status(run_dir: Path, status: str, **extra) -> None:
    from aerun.io import write_json

    previous = runs.read_json(run_dir / runs.STATUS) or {}
    previous.update(extra, status=status, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
    write_json(run_dir / runs.STATUS, previous)


class RunLock:
    """One process per run directory: a second `aerun train` on it is refused."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"

    def __enter__(self):
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                return self
            except FileExistsError:
                try:
                    pid = int(self.path.read_text().strip() or 0)
                except (OSError, ValueError):
                    pid = 0
                if pid and pid != os.getpid() and _pid_alive(pid):
                    raise UserError(f"run directory {self.path.parent} is in use by another aerun process "
                                    f"(pid {pid}); wait for it or choose another directory") from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
        raise UserError(f"could not lock run directory {self.path.parent}")

    def __exit__(self, *exc):
        self.path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(old: dict, new: dict, allowed=RESUMABLE_KEYS) -> list[str]:
    """Keys whose values differ between two plain configs, ignoring `allowed` ones."""
    a, b = _flatten(old), _flatten(new)
    return [f"{k} ({a.get(k, '<unset>')} -> {b.get(k, '<unset>')})" for k in sorted(set(a) | set(b))
            if k not in allowed and not k.startswith(("experiment", "debug", "hparams_search"))
            and a.get(k) != b.get(k)]


class SignalStop:
    """SIGTERM/SIGINT ask the loop to stop after the current step; a second SIGINT stops at once."""

    EXIT_CODES = {signal.SIGTERM: 143, signal.SIGINT: 130}

    def __init__(self):
        self.received: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in self.EXIT_CODES:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a launcher's worker): no handlers
                pass
        return self

    def _handle(self, signum, frame):
        if self.received is not None:
            # Second signal: stop now. Checkpoints are written atomically, so what is on disk is whole.
            raise KeyboardInterrupt
        self.received = signum
        log.warning("received %s: finishing the current step and writing a checkpoint "
                    "(press Ctrl-C again to stop at once)", signal.Signals(signum).name)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("trainer.device=cuda: no CUDA device is available here; use trainer.device=auto or cpu")
    return torch.device(name)


def warn_slow_precision(device, precision: str) -> None:
    """bf16 on a CPU without native bf16 (AVX-512 BF16 / AMX) is emulated: cnn_ae steps measured
    4.9x slower than fp32 under ONEDNN_MAX_CPU_ISA=AVX2 (benchmarks/cpu_options.py), so say so."""
    import torch

    if precision != "bf16" or device.type != "cpu":
        return
    try:
        native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):  # a torch build without the query: nothing to say
        return
    if not native:
        log.warning("trainer.precision=bf16: this CPU has no native bf16 (AVX-512 BF16 or AMX), so bf16 is "
                    "emulated and slower than fp32 here; use trainer.precision=32")


def build_optimizer(params, optim: dict):
    """The optimizer, fused where torch has a fused kernel for the parameters' device: one
    kernel for the whole update instead of a chain of foreach ops. On this CPU fused Adam made
    a linear_ae step 1.25x and a cnn_ae step 1.05x faster (benchmarks/cpu_options.py)."""
    import torch

    params = list(params)
    kinds = {"adam": (torch.optim.Adam, {}), "adamw": (torch.optim.AdamW, {}),
             "sgd": (torch.optim.SGD, {"momentum": optim["momentum"]})}
    optimizer_class, extra = kinds[optim["name"]]
    kwargs = dict(lr=optim["lr"], weight_decay=optim["weight_decay"], **extra)
    try:
        return optimizer_class(params, fused=True, **kwargs)
    except (RuntimeError, ValueError, TypeError):  # an older torch, or a device without the kernel
        return optimizer_class(params, **kwargs)


def build_scheduler(optimizer, optim: dict, max_epochs: int, steps_per_epoch: int):
    """(scheduler, steps per optimizer step?): cosine anneals per step, step decays per epoch."""
    import torch

    if optim["scheduler"] == "cosine":
        total = max(1, max_epochs * steps_per_epoch)
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=optim["min_lr"]), True
    if optim["scheduler"] == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=optim["step_size_epochs"], gamma=optim["gamma"]), False
    return None, False


def _seed_everything(seed: int, deterministic: bool) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _image_rows(*rows):
    import torch

    return torch.cat([r.float().cpu().clamp(0, 1) for r in rows])


# ----------------------------------------------------------------------------- the run
def train(cfg: DictConfig, run_dir: str | os.PathLike, overrides: list[str] | None = None) -> dict:
    """Train as `cfg` says, writing everything into `run_dir`; returns the metrics dict."""
    validate_train(cfg)
    ctx, dist_device = distributed.setup(_enum_str(cfg.trainer.strategy), _enum_str(cfg.trainer.device))
    try:
        run_dir = Path(distributed.broadcast_object(ctx, str(run_dir)))
        if not ctx.is_main:  # other DDP ranks train and write nothing
            return _train(cfg, run_dir, ctx, dist_device)
        return _train_locked(cfg, run_dir, overrides, ctx, dist_device)
    finally:
        distributed.teardown(ctx)


def _enum_str(value) -> str:
    return getattr(value, "value", value)


def _train_locked(cfg, run_dir: Path, overrides, ctx, dist_device) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        _write_status(run_dir, "running", overrides=overrides or [], pid=os.getpid(), host=socket.gethostname())
        try:
            metrics = _train(cfg, run_dir, ctx, dist_device)
        except KeyboardInterrupt:
            _write_status(run_dir, "interrupted", reason="stopped at once by a second signal")
            raise
        except SystemExit as exc:
            _write_status(run_dir, "interrupted", reason=f"stopped by a signal (exit {exc.code})")
            raise
        except UserError as exc:
            _write_status(run_dir, "failed", reason=" ".join(str(exc).split()))
            raise
        _write_status(run_dir, "ok", objective=metrics["objective"])
        return metrics


def _train(cfg: DictConfig, run_dir: Path, ctx: distributed.DistContext, dist_device=None) -> dict:
    """The training run; whatever it opens (the TensorBoard writer) is closed however it ends,
    so a failed or stopped run's event file is complete too."""
    with contextlib.ExitStack() as resources:
        return _run_training(cfg, run_dir, ctx, dist_device, resources)


def _run_training(cfg: DictConfig, run_dir: Path, ctx: distributed.DistContext, dist_device,
                  resources: contextlib.ExitStack) -> dict:
    import torch

    from aerun.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
    from aerun.data import load_dataset
    from aerun.engine import (EpochAccumulator, StepConfig, epoch_permutation, evaluate, noise_generator,
                              num_batches, to_float, train_one_epoch)
    from aerun.io import write_json, write_text

    started = time.time()
    plain = to_plain(cfg)
    t, d, o = plain["trainer"], plain["data"], plain["optim"]
    if t["num_threads"] > 0:
        torch.set_num_threads(t["num_threads"])
    _seed_everything(plain["seed"], t["deterministic"])
    device = dist_device or resolve_device(t["device"])
    main = ctx.is_main  # only rank 0 writes files
    if main:
        warn_slow_precision(device, t["precision"])

    resume_state = None
    if plain.get("resume"):
        resume_dir = runs.check_run_dir(plain["resume"], key="resume", need_checkpoint=runs.LAST)
        if resume_dir.resolve() != run_dir.resolve():
            raise UserError(f"resume={plain['resume']}: resuming writes into that run directory; "
                            f"do not also set hydra.run.dir")
        resume_state = load_checkpoint(run_dir / runs.LAST, map_location="cpu")
        changed = config_differences(resume_state["config"], plain)
        if changed:
            raise UserError(f"resume: the config differs from the run's in {', '.join(changed)}; only "
                            f"trainer.max_epochs and logging options may change on resume")

    dataset = load_dataset(d["name"], d["root"], download=d["download"], val_size=d["val_size"],
                           seed=plain["seed"], max_train_samples=d["max_train_samples"],
                           max_test_samples=d["max_test_samples"]).to(device)
    if len(dataset.val) == 0:
        log.warning("data.val_size=0: no validation split; best.pt follows the training loss")
    model = runs.build_model(plain["model"], dataset.image_shape).to(device)
    if t["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    recon_loss = plain["loss"] or model.default_loss
    n_params = sum(p.numel() for p in model.parameters())
    if main:
        log.info("model %s: %s parameters; data %s %s: %d train / %d val / %d test; device %s; run dir %s",
                 type(model).__name__, f"{n_params:,}", d["name"], "x".join(map(str, dataset.image_shape)),
                 len(dataset.train), len(dataset.val), len(dataset.test), device, run_dir)
        if ctx.enabled:
            log.info("DDP: %d processes, global batch %d (%d each)", ctx.world_size, t["batch_size"],
                     t["batch_size"] // ctx.world_size)

    wrapped = distributed.wrap(model, ctx, device)
    forward = torch.compile(wrapped) if t["compile"] else wrapped
    optimizer = build_optimizer(model.parameters(), o)
    steps_per_epoch = num_batches(len(dataset.train), t["batch_size"])
    if ctx.enabled:  # DDP drops the last incomplete global batch, so every rank takes equal slices
        steps_per_epoch = len(dataset.train) // t["batch_size"]
        if steps_per_epoch == 0:
            raise UserError(f"trainer.batch_size={t['batch_size']} is larger than the training split "
                            f"({len(dataset.train)} images)")
    scheduler, scheduler_per_step = build_scheduler(optimizer, o, t["max_epochs"], steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=t["precision"] == "16-mixed")
    step_cfg = StepConfig(batch_size=t["batch_size"] // ctx.world_size, recon_loss=recon_loss, precision=t["precision"],
                          grad_clip=t["grad_clip"], l1_weight=o["l1_weight"], noise_kind=d["noise"]["kind"],
                          noise_level=d["noise"]["level"], channels_last=t["channels_last"])
    eval_kwargs = dict(batch_size=t["eval_batch_size"], recon_loss=recon_loss, precision=t["precision"],
                       noise_kind=d["noise"]["kind"], noise_level=d["noise"]["level"], seed=plain["seed"],
                       channels_last=t["channels_last"])

    epoch, start_batch, global_step = 0, 0, 0
    best_val, best_epoch, last_finite_loss, history = math.inf, -1, None, []
    best_val_metrics = None  # the best epoch's validation metrics: the final report reuses them
    weights_are_best = False  # the model holds exactly best.pt's weights (no reload needed at the end)
    accumulator_state, noise_state = None, None
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        if scheduler is not None and resume_state.get("scheduler"):
            scheduler.load_state_dict(resume_state["scheduler"])
        scaler.load_state_dict(resume_state["scaler"])
        epoch, start_batch, global_step = resume_state["epoch"], resume_state["batch_in_epoch"], resume_state["global_step"]
        best_val, best_epoch = resume_state["best_val"], resume_state["best_epoch"]
        best_val_metrics = resume_state.get("best_val_metrics")
        last_finite_loss, history = resume_state.get("last_finite_loss"), list(resume_state.get("history", []))
        accumulator_state, noise_state = resume_state.get("accumulator"), resume_state.get("noise_rng")
        restore_rng_state(resume_state["rng"])
        if epoch >= t["max_epochs"]:
            log.info("%s has already trained %d epochs (trainer.max_epochs=%d): nothing left to train, so only "
                     "the final metrics are recomputed; raise trainer.max_epochs to train on",
                     run_dir / runs.LAST, epoch, t["max_epochs"])
        else:
            log.info("resuming from %s at epoch %d, step %d", run_dir / runs.LAST, epoch + 1, global_step)
    if main:
        write_text(run_dir / runs.CONFIG_FILE, OmegaConf.to_yaml(plain))
        from torch.utils.tensorboard import SummaryWriter

        writer = resources.enter_context(
            SummaryWriter(log_dir=str(run_dir / runs.TENSORBOARD), purge_step=global_step if resume_state else None))
    else:
        writer = distributed.NullWriter()
    preview = dataset.val.images[:8] if len(dataset.val) else dataset.test.images[:8]

    def checkpoint_state(next_epoch: int, next_batch: int, accumulator, noise) -> dict:
        return {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            "scaler": scaler.state_dict(), "epoch": next_epoch, "batch_in_epoch": next_batch,
            "global_step": global_step_box[0], "best_val": best_val, "best_epoch": best_epoch,
            "best_val_metrics": best_val_metrics,
            "last_finite_loss": last_finite_loss, "history": history, "config": plain,
            "input_shape": list(dataset.image_shape), "params": n_params,
            "accumulator": accumulator.state_dict() if accumulator is not None else None,
            "noise_rng": noise.get_state() if noise is not None else None,
            "rng": capture_rng_state(),
        }

    def diverged(what: str) -> DivergenceError:
        last = (f"last finite loss {last_finite_loss:.6g}" if last_finite_loss is not None
                else "no finite loss was logged before it")
        kept = (f"{run_dir / runs.LAST} keeps the last good weights" if (run_dir / runs.LAST).is_file()
                else "no checkpoint had been written yet")
        return DivergenceError(f"training diverged: {what} (epoch {epoch + 1}); {last}; {kept}. "
                               f"Try a lower optim.lr (now {o['lr']:g}) or trainer.grad_clip=1.0")

    def check_finite(accumulator: EpochAccumulator) -> None:
        bad = accumulator.nonfinite()
        if bad is not None:
            step, terms = bad
            raise diverged(f"non-finite {', '.join(terms)} at step {step}")

    def check_weights_finite() -> None:
        """Never let NaN weights replace a good checkpoint (one device read, at save time only)."""
        finite = torch.stack([p.detach().isfinite().all() for p in model.parameters()]).all()
        if not bool(finite):
            raise diverged(f"the weights became non-finite by step {global_step_box[0]}")

    def save(path: Path, state: dict) -> None:
        check_weights_finite()
        if main:
            save_checkpoint(path, state)

    global_step_box = [global_step]
    train_started = time.time()
    images_trained = 0
    step_time = 0.0  # seconds in training steps only (no validation): what images/s is measured over
    tty = sys.stderr.isatty() and t["progress"]
    with SignalStop() as stop:
        while epoch < t["max_epochs"]:
            perm = distributed.local_permutation(
                epoch_permutation(len(dataset.train), plain["seed"], epoch, device), t["batch_size"], ctx)
            noise = noise_generator(device, plain["seed"], epoch) if d["noise"]["kind"] != "none" else None
            accumulator = EpochAccumulator(device)
            if start_batch > 0 and accumulator_state is not None:
                accumulator.load_state_dict(accumulator_state)
                if noise is not None and noise_state is not None:
                    noise.set_state(noise_state)
            bar = None
            if tty and main:
                from tqdm import tqdm

                bar = tqdm(total=steps_per_epoch, initial=start_batch, desc=f"epoch {epoch + 1}/{t['max_epochs']}",
                           leave=False, dynamic_ncols=True)
            last_logged = {"images": accumulator.images}

            def kl_scale(batch_index: int) -> float:
                progress = epoch + batch_index / steps_per_epoch
                return model.kl_scale_at(progress) if model.is_variational else 1.0

            def after_step(batch_index: int, step: int) -> bool:
                nonlocal last_finite_loss
                global_step_box[0] = step
                if bar is not None:
                    bar.update(1)
                at_log_point = step % t["log_every_n_steps"] == 0
                if at_log_point:
                    check_finite(accumulator)
                    means = accumulator.means()
                    last_finite_loss = means["loss"]
                    for name, value in means.items():
                        if not isinstance(value, list):
                            writer.add_scalar(f"train/{name}_running", value, step)
                    writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
                    if bar is not None:
                        bar.set_postfix(loss=f"{means['loss']:.4g}")
                every = t["checkpoint_every_n_steps"]
                stop_requested = stop.received is not None
                if ctx.enabled:  # ranks agree on stopping at log points, so none waits for a missing peer
                    stop_requested = at_log_point and distributed.any_rank(ctx, stop_requested)
                if stop_requested or (every and step % every == 0):
                    check_finite(accumulator)
                    save(run_dir / runs.LAST, checkpoint_state(epoch, batch_index + 1, accumulator, noise))
                    if stop_requested:
                        return True
                if step == t["kill_at_step"]:
                    os.kill(os.getpid(), signal.SIGKILL)  # a simulated crash, for testing recovery
                return False

            weights_are_best = False
            epoch_started = time.perf_counter()
            global_step, stopped = train_one_epoch(
                model, forward, optimizer, scaler, dataset.train.images, perm, step_cfg,
                accumulator=accumulator, start_batch=start_batch, global_step=global_step, noise=noise,
                kl_scale=kl_scale, step_scheduler=scheduler.step if scheduler_per_step else None,
                after_step=after_step)
            if bar is not None:
                bar.close()
            images_trained += accumulator.images - last_logged["images"]
            if stopped:
                code = SignalStop.EXIT_CODES.get(stop.received, 143)
                if main:
                    log.warning("stopped by %s at epoch %d, step %d; checkpoint written. Resume with:\n"
                                "  aerun train resume=%s", signal.Signals(code - 128).name, epoch + 1,
                                global_step, run_dir)
                writer.close()
                raise SystemExit(code)
            check_finite(accumulator)
            train_means = accumulator.means()  # a device read: the epoch's steps are done
            step_time += time.perf_counter() - epoch_started
            last_finite_loss = train_means.get("loss", last_finite_loss)
            if scheduler is not None and not scheduler_per_step:
                scheduler.step()

            val = evaluate(model, dataset.val.images, **eval_kwargs) if len(dataset.val) and main else {}
            score = val.get("loss", train_means.get("loss", math.inf))
            for name, value in train_means.items():
                if not isinstance(value, list):
                    writer.add_scalar(f"train/{name}", value, global_step)
            for name, value in val.items():
                if not isinstance(value, list):
                    writer.add_scalar(f"val/{name}", value, global_step)
            if "kl_per_dim" in val:
                for i, value in enumerate(val["kl_per_dim"]):
                    writer.add_scalar(f"val_kl_per_dim/{i:03d}", value, global_step)
                if model.is_variational and sum(val["kl_per_dim"]) < 0.01 * len(val["kl_per_dim"]):
                    log.warning("the KL term is collapsing towards 0 (%.4f nats): the decoder ignores the code; "
                                "try a smaller model.beta or model.kl_warmup_epochs", sum(val["kl_per_dim"]))
            writer.add_scalar("train/epoch", epoch + 1, global_step)
            if main and t["images_every_n_epochs"] and (epoch + 1) % t["images_every_n_epochs"] == 0:
                with torch.no_grad():
                    model.eval()
                    x = to_float(preview)
                    writer.add_images("images/reconstruction", _image_rows(x, model.reconstruct(x)), global_step)
            improved = score < best_val
            if improved:
                best_val, best_epoch, best_val_metrics = score, epoch + 1, val
            history.append({"epoch": epoch + 1, "step": global_step,
                            "train_loss": train_means.get("loss"), "val_loss": val.get("loss"),
                            "val_mse": val.get("mse")})
            epoch += 1
            start_batch = 0
            accumulator_state = noise_state = None
            if not main:
                continue
            state = checkpoint_state(epoch, 0, None, None)
            if improved:
                save(run_dir / runs.BEST, state)
                weights_are_best = True
            save(run_dir / runs.LAST, state)
            val_text = f"val loss {val['loss']:.4f} mse {val['mse']:.5f}" if val else "no val split"
            log.info("epoch %d/%d  step %d  train loss %.4f  %s%s", epoch, t["max_epochs"], global_step,
                     train_means.get("loss", math.nan), val_text, "  (best)" if improved else "")
    train_time = time.time() - train_started
    if not main:
        return {"objective": {"name": None, "value": None}}

    # Final metrics with the best weights. Validation metrics are those of the best epoch (the same
    # weights, data and noise seed, so re-evaluating would give the same numbers); train metrics use
    # the first trainer.train_eval_size training images, which is enough to read an overfitting gap.
    if not weights_are_best and (run_dir / runs.BEST).is_file():
        model.load_state_dict(load_checkpoint(run_dir / runs.BEST, map_location=device)["model"])
    test = evaluate(model, dataset.test.images, **eval_kwargs)
    train_images = dataset.train.images[:t["train_eval_size"]] if t["train_eval_size"] is not None else dataset.train.images
    train_eval = evaluate(model, train_images, **eval_kwargs) if len(train_images) else {}
    if not len(dataset.val):
        val = {}
    elif best_val_metrics is not None:
        val = best_val_metrics
    else:
        val = evaluate(model, dataset.val.images, **eval_kwargs)
    objective_name = plain["optimized_metric"]
    if objective_name == "auto":
        objective_name = "val/loss" if val else "test/loss"
    split, _, metric = objective_name.partition("/")
    source = {"val": val, "test": test}[split]
    if metric not in source:
        raise UserError(f"optimized_metric={objective_name}: no such metric; {split} has {', '.join(sorted(source))}")
    metrics = {
        "train": train_eval, "val": val, "test": test, "train_eval_images": len(train_images),
        "objective": {"name": objective_name, "value": source[metric]},
        "best_epoch": best_epoch, "epochs": epoch, "steps": global_step, "params": n_params,
        "model": type(model).__name__, "data": d["name"], "recon_loss": recon_loss,
        "train_time_s": round(train_time, 3), "wall_time_s": round(time.time() - started, 3),
        "step_time_s": round(step_time, 3),
        "images_per_s": round(images_trained / step_time, 1) if step_time > 0 and images_trained else None,
        "device": str(device), "precision": t["precision"],
    }
    write_json(run_dir / runs.METRICS, metrics)
    _write_figures(model, dataset, run_dir, d["noise"], plain["seed"])
    _write_hparams(writer, plain, metrics)
    writer.close()
    log.info("test: mse %.5f per pixel, psnr %.2f dB%s; metrics in %s", test["mse"], test["psnr"],
             f", elbo {test['elbo']:.2f} nats" if "elbo" in test else "", run_dir / runs.METRICS)
    return metrics


def _write_figures(model, dataset, run_dir: Path, noise: dict, seed: int) -> None:
    """reconstructions.png (test inputs above reconstructions); denoising.png for noisy runs."""
    import torch

    from aerun.data import apply_noise
    from aerun.engine import to_float
    from aerun.io import save_image_grid

    model.eval()
    with torch.no_grad():
        clean = to_float(dataset.test.images[:16])
        save_image_grid(_image_rows(clean, model.reconstruct(clean)), run_dir / "reconstructions.png", nrow=16)
        if noise["kind"] != "none":
            generator = torch.Generator(device=clean.device).manual_seed(seed)
            noisy = apply_noise(clean, noise["kind"], noise["level"], generator)
            save_image_grid(_image_rows(noisy, model.reconstruct(noisy), clean), run_dir / "denoising.png", nrow=16)


def _write_hparams(writer, plain: dict, metrics: dict) -> None:
    """Hyper-parameters and final metrics into the run's own event file (not a new TensorBoard run)."""
    from torch.utils.tensorboard.summary import hparams

    hparam_dict = {k: (v if isinstance(v, (int, float, str, bool)) else str(v))
                   for k, v in _flatten({k: plain[k] for k in ("model", "data", "optim", "trainer", "seed", "loss")}).items()}
    metric_dict = {f"hparam/{split}_{name}": value for split in ("val", "test")
                   for name, value in metrics[split].items() if isinstance(value, float)}
    experiment, session_start, session_end = hparams(hparam_dict, metric_dict)
    writer.file_writer.add_summary(experiment)
    writer.file_writer.add_summary(session_start)
    writer.file_writer.add_summary(session_end)
    for name, value in metric_dict.items():
        writer.add_scalar(name, value, metrics["steps"])
