"""`fit` -> `train_one_epoch` -> the model's `training_step`: the loop, free of Hydra and files.

Images live on the training device as uint8 and are batched by slicing a device permutation;
each batch becomes float there. Loss sums stay on the device: the host reads them only at
log points, so a step never waits for the device. The loop owns what every model family
shares: the data order, denoising noise, precision (through `StepContext`), divergence
checks, checkpoints, stopping on a signal, and agreeing on it across DDP ranks. What is
shown or written (TensorBoard, console, files) happens in the `reporter` and `checkpoints`
it is handed. Importing this module turns on flush-to-zero for denormal floats.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

import torch

from aerun import distributed, faults
from aerun.data.noise import apply_noise, noise_generator, restore_noise_state
from aerun.engine.accumulator import EpochAccumulator
from aerun.engine.evaluate import evaluate
from aerun.engine.state import TrainState
from aerun.engine.step import FloatBatches, StepContext
from aerun.errors import DivergenceError, Interrupted
from aerun.models.base import Batch

# Flush denormal floats to zero. Adam's moment estimates for weights that rarely get a gradient
# (e.g. those fed by MNIST's always-black border pixels) decay through the denormal range, where
# x86 float math is about 100x slower, and a long CPU run slows down step by step (measured in
# benchmarks/results.md). Values below 1.2e-38 become 0; nothing aerun computes depends on them.
# The flag is per thread and torch's CPU worker threads copy it when they start, so it is set
# here, at import, before the first parallel op; `train_one_epoch` sets it again for its thread.
torch.set_flush_denormal(True)


def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The data order of one epoch: a function of (seed, epoch) alone, so a resumed run sees the same order."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=generator).to(device, non_blocking=True)


def num_batches(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


@dataclass
class LoopOptions:
    max_epochs: int
    batch_size: int  # per process (the global batch / DDP world size)
    steps_per_epoch: int
    seed: int = 0
    log_every_n_steps: int = 50
    checkpoint_every_n_steps: int = 0  # 0: at epoch ends only
    noise_kind: str = "none"
    noise_level: float = 0.0
    channels_last: bool = False
    eval_kwargs: dict = field(default_factory=dict)  # evaluate()'s options for the validation pass


class Reporter(Protocol):
    """What the loop tells the outside world (see `aerun.reporting`)."""

    def epoch_started(self, state: TrainState, steps_per_epoch: int) -> None: ...
    def step_done(self, state: TrainState) -> None: ...
    def log_point(self, state: TrainState, means: dict) -> None: ...
    def epoch_done(self, state: TrainState, train: dict, val: dict, improved: bool) -> None: ...
    def stopped(self, state: TrainState, signum: int) -> None: ...


class Checkpoints(Protocol):
    last_exists: bool

    def save(self, state: TrainState, role: str) -> None: ...  # role: "last" | "best"

    def describe_last(self) -> str: ...


@dataclass
class Loop:
    """Everything `fit` works with; built by `aerun.commands.train`."""

    state: TrainState
    step: StepContext
    train: object  # aerun.data.Split on the device
    val: object
    options: LoopOptions
    reporter: Reporter
    checkpoints: Checkpoints
    dist: distributed.DistContext = field(default_factory=distributed.DistContext)
    stop_signal: Callable[[], int] = lambda: 0  # the signal that asked to stop, 0 while none has
    faults: bool = field(default_factory=faults.enabled)  # aerun's own tests inject faults at steps
    images_trained: int = 0  # over this process's steps, for images/s
    step_time_s: float = 0.0  # seconds in training steps only (no validation)


def fit(loop: Loop) -> None:
    """Train until `options.max_epochs` epochs are done; raises Interrupted after a signal
    (with last.pt written) and DivergenceError on a non-finite loss."""
    state, options = loop.state, loop.options
    while state.epoch < options.max_epochs:
        accumulator = EpochAccumulator(loop.step.device)
        started = time.perf_counter()
        stopped = train_one_epoch(loop, accumulator)
        if stopped:  # after_step wrote last.pt
            loop.reporter.stopped(state, stopped)
            raise Interrupted(stopped, f"at epoch {state.epoch + 1}, step {state.global_step}")
        check_finite(loop, accumulator)
        train_means = accumulator.means()  # a device read: the epoch's steps are done
        loop.step_time_s += time.perf_counter() - started
        end_epoch(loop, train_means)
    stopped = loop.stop_signal()
    if stopped:  # asked during the last epoch's end (validation, checkpoints): last.pt is whole
        loop.reporter.stopped(state, stopped)
        raise Interrupted(stopped, f"after epoch {state.epoch}, step {state.global_step}")


def train_one_epoch(loop: Loop, accumulator: EpochAccumulator) -> int:
    """The batches of one epoch from `state.batch_in_epoch`; returns the signal that stopped
    it early, or 0 when the epoch ended."""
    state, options, step, model = loop.state, loop.options, loop.step, loop.state.model
    model.train()
    device = step.device
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # see the top of this module
    perm = distributed.local_permutation(
        epoch_permutation(len(loop.train), options.seed, state.epoch, device), options.batch_size * loop.dist.world_size,
        loop.dist)
    noise = noise_generator(device, options.seed, state.epoch) if options.noise_kind != "none" else None
    if state.batch_in_epoch > 0 and state.accumulator is not None:  # a mid-epoch checkpoint
        accumulator.load_state_dict(state.accumulator)
        if noise is not None and state.noise_rng is not None:
            restore_noise_state(noise, state.noise_rng)
    loop.reporter.epoch_started(state, options.steps_per_epoch)
    batch_size, labels = options.batch_size, loop.train.labels
    batches = FloatBatches(loop.train.images, batch_size, options.channels_last)
    for batch_index in range(state.batch_in_epoch, num_batches(perm.numel(), batch_size)):
        idx = perm[batch_index * batch_size:(batch_index + 1) * batch_size]
        target = batches(idx)
        if loop.faults:
            target = faults.poison("batch", target, state.global_step + 1)
        inputs = apply_noise(target, options.noise_kind, options.noise_level, noise) if noise is not None else target
        step.begin(state.epoch + batch_index / options.steps_per_epoch)
        batch_labels = labels.index_select(0, idx) if model.uses_labels else None
        terms = model.training_step(Batch(inputs, target, batch_labels), step)
        step.end()
        for name in step.stepped:
            if name in state.schedulers and state.schedulers[name].per_step:
                state.schedulers[name].scheduler.step()
        state.global_step += 1
        state.batch_in_epoch = batch_index + 1
        accumulator.add(terms, idx.numel(), state.global_step)
        loop.images_trained += idx.numel()
        stopped = after_step(loop, accumulator, noise)
        if stopped:
            return stopped
    return 0


def after_step(loop: Loop, accumulator: EpochAccumulator, noise) -> int:
    """Progress, log points, mid-epoch checkpoints and the stop check; returns a signal to stop on."""
    state, options = loop.state, loop.options
    step = state.global_step
    loop.reporter.step_done(state)
    at_log_point = step % options.log_every_n_steps == 0
    if at_log_point:
        check_finite(loop, accumulator)
        means = accumulator.means()
        state.last_finite_loss = means["loss"]
        loop.reporter.log_point(state, means)
    signum = loop.stop_signal()
    if loop.dist.enabled:  # ranks agree on stopping at log points, so none waits for a missing peer
        agreed = at_log_point and distributed.any_rank(loop.dist, bool(signum))
        signum = (signum or signal.SIGTERM) if agreed else 0
    every = options.checkpoint_every_n_steps
    if signum or (every and step % every == 0):
        check_finite(loop, accumulator)
        save(loop, "last", accumulator, noise)
    if loop.faults:
        faults.at("step", step=step)
    return signum


def save(loop: Loop, role: str, accumulator: EpochAccumulator | None = None, noise=None) -> None:
    """Checkpoint the state (with a partial epoch's sums and noise stream when mid-epoch); never
    lets non-finite weights replace a good checkpoint (one device read, at save time only)."""
    state = loop.state
    finite = torch.stack([p.detach().isfinite().all() for p in state.model.parameters()]).all()
    if not bool(finite):
        raise diverged(loop, f"the weights became non-finite by step {state.global_step}")
    state.accumulator = accumulator.state_dict() if accumulator is not None else None
    state.noise_rng = noise.get_state() if noise is not None else None
    loop.checkpoints.save(state, role)


def end_epoch(loop: Loop, train_means: dict) -> None:
    """Schedulers, the validation pass, the best weights, checkpoints, the epoch's report."""
    state, options = loop.state, loop.options
    state.last_finite_loss = train_means.get("loss", state.last_finite_loss)
    for s in state.schedulers.values():
        if not s.per_step:
            s.scheduler.step()
    val = {}
    if len(loop.val) and loop.dist.is_main:
        val = evaluate(state.model, loop.val.images, loop.val.labels, **options.eval_kwargs)
    score = val.get("loss", train_means.get("loss", math.inf))
    improved = score < state.best_val and state.model.counts_for_best(state.epoch + 1)
    if improved:
        state.best_val, state.best_epoch, state.best_val_metrics = score, state.epoch + 1, val
    state.history.append({"epoch": state.epoch + 1, "step": state.global_step, "train_loss": train_means.get("loss"),
                          "val_loss": val.get("loss"), "val_mse": val.get("mse")})
    state.epoch += 1
    state.batch_in_epoch = 0
    state.accumulator = state.noise_rng = None
    if improved:
        save(loop, "best")
    save(loop, "last")
    loop.reporter.epoch_done(state, train_means, val, improved)
    faults.at("epoch_end")


def check_finite(loop: Loop, accumulator: EpochAccumulator) -> None:
    """Raise DivergenceError when a term went NaN/inf. Under DDP the ranks agree on it (every
    rank reaches the same checks), so every rank stops, and only rank 0 says so, naming the rank
    where it began."""
    bad = accumulator.nonfinite()
    if not loop.dist.enabled:
        if bad is not None:
            raise diverged(loop, f"{describe(bad[1])} at step {bad[0]}")
        return
    first = distributed.first_bad_step(loop.dist, bad[0] if bad is not None else None)
    if first is None:
        return
    step, rank = first
    error = diverged(loop, f"{describe(bad[1]) if bad is not None else 'a non-finite or exploding loss'} at step "
                           f"{step}, first on rank {rank}")
    error.quiet = not loop.dist.is_main
    raise error


def describe(terms: list[str]) -> str:
    """'non-finite loss, kl' or 'an exploding loss (beyond 1e+10 an image)'."""
    exploding = [t for t in terms if t.startswith("loss (beyond")]
    nonfinite = [t for t in terms if t not in exploding]
    words = [f"non-finite {', '.join(nonfinite)}"] if nonfinite else []
    return "; ".join(words + [f"an exploding {t}" for t in exploding])


def diverged(loop: Loop, what: str) -> DivergenceError:
    state = loop.state
    last = (f"last finite loss {state.last_finite_loss:.6g}" if state.last_finite_loss is not None
            else "no finite loss was logged before it")
    return DivergenceError(f"training diverged: {what} (epoch {state.epoch + 1}); {last}; "
                           f"{loop.checkpoints.describe_last()}. Try a lower optim.lr (now {state.lr:g}) "
                           f"or trainer.grad_clip=1.0")
