"""`aerun train`: `train(cfg, run_dir) -> metrics` as a plain function, built from the parts.

It reads top to bottom: check the config, claim the run directory (lock + status), build
the data, model, optimizers and the `TrainState` (from last.pt when resuming), hand them to
`engine.fit`, then evaluate the best weights and write metrics.json and the figures.
A run can die at any step and lose only the steps since its last checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from aerun import distributed, faults, resume, runs
from aerun.config import enum_value, to_plain, validate_train
from aerun.errors import UserError
from aerun.signals import POLICY

WRITES_A_RUN = True  # a named hydra.run.dir that holds a run is refused unless resumed (launch)

log = logging.getLogger("aerun.train")


def validate(cfg: DictConfig) -> None:
    """What the CLI checks before it makes a run directory (so a refused run writes nothing)."""
    validate_train(cfg)
    from aerun.loggers import check_loggers

    check_loggers(cfg.logger)
    if enum_value(cfg.trainer.strategy) == "ddp" and not distributed.launched_by_torchrun():
        raise UserError("trainer.strategy=ddp: start aerun with torchrun, e.g. "
                        "torchrun --nproc_per_node=2 -m aerun train trainer.strategy=ddp ...")
    if enum_value(cfg.trainer.device) == "cuda":
        from aerun.devices import resolve_device

        resolve_device("cuda")
    elif cfg.trainer.precision == "16-mixed":  # device=auto (cpu is refused by the schema check)
        import torch

        if not torch.cuda.is_available():
            raise UserError("trainer.precision=16-mixed: needs a CUDA device, and trainer.device=auto found none "
                            "here; use trainer.precision=bf16 or 32 on a CPU")
    if cfg.resume:
        resume.check(cfg)
    else:
        from aerun.data import check_config_available

        check_config_available(cfg.data)


def prepare_overrides(overrides: list[str], multirun: bool) -> list[str]:
    """`resume=<run dir>` continues in that directory with its own overrides (sweeps: aerun.sweeps)."""
    if multirun:
        from aerun.sweeps.resume import prepare_multirun_overrides

        return prepare_multirun_overrides(overrides)
    return resume.prepare_overrides(overrides)


def run(cfg: DictConfig, job) -> float | None:
    """Hydra's task: train in the job's directory; returns the optimised metric."""
    if job.multirun:
        from aerun.sweeps.resume import resolve_job_resume

        plan = resolve_job_resume(cfg, job.out_dir, job.overrides)
        if plan.skip:
            return plan.objective  # a finished job: its files stay as they are
        cfg.resume = plan.resume  # this job's own dir to continue its last.pt, or None
        root = resume.environment_data_root(job.out_dir, job.overrides) if plan.resume else None
        if root is not None:  # as the job resolved it ($AERUN_DATA_ROOT may be unset or other now)
            cfg.data.root = root
    metrics = train(cfg, job.out_dir, overrides=job.overrides)
    return metrics["objective"]["value"]


def train(cfg: DictConfig, run_dir: str | os.PathLike, overrides: list[str] | None = None) -> dict:
    """Train as `cfg` says, writing everything into `run_dir`; returns the metrics dict."""
    validate_train(cfg)
    ctx, dist_device = distributed.setup(enum_value(cfg.trainer.strategy), enum_value(cfg.trainer.device),
                                         cfg.trainer.ddp_timeout_s)
    try:
        run_dir = Path(distributed.broadcast_object(ctx, str(run_dir)))
        if cfg.resume:  # before status.json is touched: a refused resume leaves the run as it was
            resume.check(cfg, run_dir)
        if not ctx.is_main:  # other DDP ranks train, write nothing and say only what fails
            logging.getLogger("aerun").setLevel(logging.ERROR)
            return _train(cfg, run_dir, ctx, dist_device)
        with runs.lifecycle(run_dir, overrides) as life:
            metrics = _train(cfg, run_dir, ctx, dist_device)
            life.objective = metrics["objective"]
            return metrics
    finally:
        distributed.teardown(ctx)


@dataclass
class Session:
    """What a run is built from; `_build` makes it, `engine.fit` trains `loop`."""

    plain: dict
    dataset: object
    loop: object
    recon_loss: str
    params: int


def _train(cfg: DictConfig, run_dir: Path, ctx, dist_device) -> dict:
    """The training run; whatever it opens (the TensorBoard writer) is closed however it ends,
    so a failed or stopped run's event file is complete too."""
    from aerun.engine import fit

    started = time.time()
    with contextlib.ExitStack() as resources:
        session = _build(to_plain(cfg), run_dir, ctx, dist_device, resources)
        train_started = time.time()
        with POLICY.graceful() as signals:
            session.loop.stop_signal = lambda: signals.received or 0
            fit(session.loop)
        train_time = time.time() - train_started
        if not ctx.is_main:
            return {"objective": {"name": None, "value": None}}
        faults.at("final_evaluation")
        metrics = _final_metrics(session, run_dir, started, train_time)
        session.loop.reporter.final(metrics, session.plain, session.dataset)
        return metrics


def _build(plain: dict, run_dir: Path, ctx, dist_device, resources) -> Session:
    import torch

    from aerun.build import build_model
    from aerun.checkpoint import load_checkpoint, restore_rng_state
    from aerun.data import dataset_from_config
    from aerun.devices import resolve_device, seed_everything, warn_slow_precision

    t, d = plain["trainer"], plain["data"]
    if t["num_threads"] > 0:
        torch.set_num_threads(t["num_threads"])
    seed_everything(plain["seed"], t["deterministic"])
    device = dist_device or resolve_device(t["device"])
    if ctx.is_main:
        warn_slow_precision(device, t["precision"])
    resume_state = None
    if plain.get("resume"):  # train() has checked it against the run, before touching its status
        resume_state = load_checkpoint(run_dir / runs.LAST, map_location="cpu")
    faults.at("startup")
    dataset = dataset_from_config(d, plain["seed"]).to(device)
    faults.at("data")
    if len(dataset.val) == 0:
        log.warning("data.val_size=0: no validation split; best.pt follows the training loss")
    if plain["model"].get("conditional") and not dataset.classes:
        raise UserError("model.conditional=true: a conditional model reads the class labels, and this dataset "
                        "has none")
    model = build_model(plain["model"], dataset.image_shape, num_classes=len(dataset.classes)).to(device)
    if t["channels_last"]:
        model = model.to(memory_format=torch.channels_last)
    params = sum(p.numel() for p in model.parameters())
    if ctx.is_main:
        log.info("model %s: %s parameters; data %s %s: %d train / %d val / %d test; device %s; run dir %s",
                 type(model).__name__, f"{params:,}", d["name"], "x".join(map(str, dataset.image_shape)),
                 len(dataset.train), len(dataset.val), len(dataset.test), device, run_dir)
        if ctx.enabled:
            log.info("DDP: %d processes, global batch %d (%d each)", ctx.world_size, t["batch_size"],
                     t["batch_size"] // ctx.world_size)
    purge_step = resume_state["global_step"] if resume_state is not None else None
    loop = build_loop(plain, run_dir, ctx, device, model, dataset, params, resources, purge_step)
    if resume_state is not None:
        loop.state.load_state_dict(resume_state)
        restore_rng_state(resume_state["rng"])
        _say_where_it_resumes(loop.state, run_dir, t["max_epochs"])
    return Session(plain, dataset, loop, loop.step.recon_loss, params)


def build_loop(plain, run_dir: Path, ctx, device, model, dataset, params: int, resources, purge_step):
    """The engine's Loop for `model` on `dataset` as `plain` configures it; only the main
    process writes config.yaml, TensorBoard and checkpoints (benchmarks use a silent rank)."""
    import torch

    from aerun.build import build_optimizers, build_schedulers
    from aerun.checkpoint import RunCheckpoints
    from aerun.engine import Loop, LoopOptions, StepContext, StepOptions, TrainState, num_batches
    from aerun.io import write_text
    from aerun.reporting import NullReporter, TrainReporter

    t, d, o = plain["trainer"], plain["data"], plain["optim"]
    if ctx.enabled and not model.supports_ddp:
        raise UserError(f"trainer.strategy=ddp: {type(model).__name__} trains with several optimizers or its own "
                        f"updates, which DDP does not synchronise; use trainer.strategy=single")
    wrapped = distributed.wrap(model, ctx, device)
    forward = torch.compile(wrapped) if t["compile"] else wrapped
    optimizers = build_optimizers(model, o)
    steps_per_epoch = num_batches(len(dataset.train), t["batch_size"])
    if ctx.enabled:  # DDP drops the last incomplete global batch, so every rank takes equal slices
        steps_per_epoch = distributed.steps_per_epoch(ctx, len(dataset.train), t["batch_size"])
    recon_loss = plain["loss"] or model.default_loss
    state = TrainState(model, optimizers, build_schedulers(optimizers, o, t["max_epochs"], steps_per_epoch),
                       torch.amp.GradScaler(device.type, enabled=t["precision"] == "16-mixed"))
    step = StepContext(forward, optimizers, state.scaler, device,
                       StepOptions(recon_loss, t["precision"], t["grad_clip"], o["l1_weight"]))
    eval_kwargs = dict(batch_size=t["eval_batch_size"], recon_loss=recon_loss, precision=t["precision"],
                       noise_kind=d["noise"]["kind"], noise_level=d["noise"]["level"], seed=plain["seed"],
                       channels_last=t["channels_last"], noise_split="train")  # validation: the training words
    options = LoopOptions(t["max_epochs"], t["batch_size"] // ctx.world_size, steps_per_epoch, plain["seed"],
                          t["log_every_n_steps"], t["checkpoint_every_n_steps"], d["noise"]["kind"],
                          d["noise"]["level"], t["channels_last"], eval_kwargs)
    reporter = NullReporter()
    if ctx.is_main:
        write_text(run_dir / runs.CONFIG_FILE, OmegaConf.to_yaml(plain))
        preview = dataset.val if len(dataset.val) else dataset.test
        reporter = TrainReporter(run_dir, model, preview, t["max_epochs"], t["progress"], t["images_every_n_epochs"],
                                 open_loggers(plain, run_dir, model, purge_step), plain["seed"])
        resources.callback(reporter.close)
    paths = {"last": run_dir / runs.LAST, "best": run_dir / runs.BEST}
    checkpoints = RunCheckpoints(paths, plain, dataset.image_shape, params, writes=ctx.is_main,
                                 classes=dataset.classes)
    return Loop(state, step, dataset.train, dataset.val, options, reporter, checkpoints, ctx)


def open_loggers(plain: dict, run_dir: Path, model, purge_step):
    """The run's trackers (logger=...), told its name and its settings in reading order."""
    from aerun.loggers import RunInfo, build_loggers
    from aerun.loggers.params import experiment_params, leading_keys, run_name

    model_choice, overrides = type(model).__name__, []
    try:  # the model group's choice (vae, cnn_ae) and this job's overrides, when Hydra runs us
        from hydra.core.hydra_config import HydraConfig

        hydra_cfg = HydraConfig.get()
        model_choice = hydra_cfg.runtime.choices.get("model") or model_choice
        overrides = list(hydra_cfg.overrides.task)
    except (ImportError, ValueError):  # not under Hydra (a torchrun worker, a benchmark)
        pass
    params = experiment_params(plain, model_choice, overrides)
    info = RunInfo(run_dir, run_name(model_choice, overrides), params, purge_step,
                   leading=frozenset(leading_keys(params, overrides)))
    return build_loggers(plain.get("logger") or {}, info)


def _say_where_it_resumes(state, run_dir: Path, max_epochs: int) -> None:
    if state.epoch >= max_epochs:
        log.info("%s has already trained %d epochs (trainer.max_epochs=%d): nothing left to train, so only "
                 "the final metrics are recomputed; raise trainer.max_epochs to train on",
                 run_dir / runs.LAST, state.epoch, max_epochs)
    else:
        log.info("resuming from %s at epoch %d, step %d", run_dir / runs.LAST, state.epoch + 1, state.global_step)


def _final_metrics(session: Session, run_dir: Path, started: float, train_time: float) -> dict:
    """Metrics of the best weights. Validation metrics are those of the best epoch (the same
    weights, data and noise seed: re-evaluating would give the same numbers); train metrics
    use the first trainer.train_eval_size training images, enough to read an overfitting gap."""
    from aerun.checkpoint import load_checkpoint
    from aerun.engine import evaluate
    from aerun.io import write_json

    loop, plain, dataset = session.loop, session.plain, session.dataset
    state, t, kwargs = loop.state, plain["trainer"], loop.options.eval_kwargs
    model = state.model
    if state.best_epoch != state.epoch and (run_dir / runs.BEST).is_file():  # the model holds last.pt's weights
        model.load_state_dict(load_checkpoint(run_dir / runs.BEST, map_location=loop.step.device)["model"])
    test = evaluate(model, dataset.test.images, dataset.test.labels, **{**kwargs, "noise_split": "test",
                                                                          "region_psnr": True})
    n_train = len(dataset.train) if t["train_eval_size"] is None else min(t["train_eval_size"], len(dataset.train))
    train_eval = evaluate(model, dataset.train.images[:n_train], dataset.train.labels[:n_train], **kwargs) \
        if n_train else {}
    val = {}
    if len(dataset.val):
        val = state.best_val_metrics or evaluate(model, dataset.val.images, dataset.val.labels, **kwargs)
    objective_name = plain["optimized_metric"]
    if objective_name == "auto":
        objective_name = "val/loss" if val else "test/loss"
    split, _, metric = objective_name.partition("/")
    source = {"val": val, "test": test}[split]
    if metric not in source:
        raise UserError(f"optimized_metric={objective_name}: no such metric; {split} has {', '.join(sorted(source))}")
    metrics = {
        "train": train_eval, "val": val, "test": test, "train_eval_images": n_train,
        "objective": {"name": objective_name, "value": source[metric]},
        "best_epoch": state.best_epoch, "epochs": state.epoch, "steps": state.global_step, "params": session.params,
        "model": type(model).__name__, "data": plain["data"]["name"], "recon_loss": session.recon_loss,
        "train_time_s": round(train_time, 3), "wall_time_s": round(time.time() - started, 3),
        "step_time_s": round(loop.step_time_s, 3),
        "images_per_s": round(loop.images_trained / loop.step_time_s, 1) if loop.step_time_s > 0 else None,
        "device": str(loop.step.device), "precision": t["precision"],
    }
    write_json(run_dir / runs.METRICS, metrics)
    return metrics
