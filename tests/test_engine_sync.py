"""The training step never waits for the device: `train_one_epoch` makes no host reads
(`.item()`, `.tolist()`, `.cpu()`, `bool(t)`, ...) during an epoch, and the accumulator's
reads are one transfer each. Plus what the accumulator must still get right: the means,
the first non-finite step and the terms that went bad, and a checkpoint round trip; and
the CPU epoch's flush-to-zero of denormal floats."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch

from aerun.data import Split
from aerun.engine import (EpochAccumulator, Loop, LoopOptions, StepContext, StepOptions, TrainState, num_batches,
                          train_one_epoch)
from aerun.reporting import NullReporter
from aerun.models import VAE, ConvAutoencoder, MLPAutoencoder

# Every Python-level way to bring a tensor's value to the host.
READ_METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


@contextlib.contextmanager
def count_host_reads(optimizer: torch.optim.Optimizer | None = None):
    """Record every host read of a tensor's value. Adam's `step` counters are excluded: they
    are CPU tensors by design (torch reads them with `.item()` for the bias correction), never
    device values, so reading them does not wait for the device."""
    reads: list[str] = []
    originals = {name: getattr(torch.Tensor, name) for name in READ_METHODS}

    def optimizer_counters() -> set[int]:
        if optimizer is None:
            return set()
        return {id(state["step"]) for state in optimizer.state.values() if "step" in state}

    def wrap(name, original):
        def wrapper(self, *args, **kwargs):
            if id(self) not in optimizer_counters():
                reads.append(f"{name} of {tuple(self.shape)} {self.dtype}")
            return original(self, *args, **kwargs)

        return wrapper

    for name, original in originals.items():
        setattr(torch.Tensor, name, wrap(name, original))
    try:
        yield reads
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def tiny_images(n: int = 96, shape=(1, 12, 12), seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, *shape), generator=generator, dtype=torch.uint8)  # [N, C, H, W]


MODELS = {
    "mlp": lambda shape: MLPAutoencoder(shape, latent_dim=3, hidden=[16]),
    "cnn": lambda shape: ConvAutoencoder(shape, latent_dim=4, channels=[4, 8]),
    "vae": lambda shape: VAE(shape, latent_dim=3, hidden=[16]),  # a vector term: kl_per_dim
}


class NoCheckpoints:
    last_exists = False

    def save(self, state, role):
        pass

    def describe_last(self):
        return "no checkpoint"


def make_loop(model, images, *, device="cpu", batch_size=32, precision="32", grad_clip=0.0, l1_weight=0.0,
              noise_kind="none", noise_level=0.0, channels_last=False, recon_loss="mse", fused=False):
    """The engine's loop over `images` as aerun train builds it, minus files and TensorBoard."""
    torch.manual_seed(0)
    device = torch.device(device)
    model = model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused or None)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")
    state = TrainState(model, {"model": optimizer}, {}, scaler)
    step = StepContext(model, state.optimizers, scaler, device, StepOptions(recon_loss, precision, grad_clip, l1_weight))
    train = Split(images.to(device), torch.zeros(images.shape[0], dtype=torch.long, device=device))
    options = LoopOptions(max_epochs=1, batch_size=batch_size, steps_per_epoch=num_batches(len(train), batch_size),
                          noise_kind=noise_kind, noise_level=noise_level, channels_last=channels_last)
    return Loop(state, step, train, train, options, NullReporter(), NoCheckpoints())


def run_epoch(model, images, **options):
    loop = make_loop(model, images, **options)
    accumulator = EpochAccumulator(loop.step.device)
    with count_host_reads(loop.state.optimizers["model"]) as reads:
        stopped = train_one_epoch(loop, accumulator)
    return reads, accumulator, loop.state.global_step, bool(stopped)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_an_epoch_reads_nothing_from_the_device(name):
    images = tiny_images()
    reads, accumulator, global_step, stopped = run_epoch(MODELS[name](images.shape[1:]), images,
                                                         recon_loss="bce" if name == "vae" else "mse")
    assert reads == []
    assert (global_step, stopped, accumulator.steps, accumulator.images) == (3, False, 3, 96)


@pytest.mark.parametrize("options", [
    dict(precision="bf16"),
    dict(channels_last=True),
    dict(grad_clip=1.0, l1_weight=1e-5),
    dict(noise_kind="gaussian", noise_level=0.2),
    dict(noise_kind="masking", noise_level=0.3),
])
def test_options_add_no_host_reads(options):
    images = tiny_images(n=70)  # a partial last batch too
    reads, accumulator, global_step, _ = run_epoch(MODELS["cnn"](images.shape[1:]), images, **options)
    assert reads == []
    assert global_step == 3 and accumulator.images == 70


def test_a_cpu_epoch_flushes_denormals():
    """Decaying optimizer state must not drop into denormal floats (~100x slower math on x86)."""
    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush denormals")
    assert (torch.tensor([1e-40]) * 1.0).item() != 0.0
    images = tiny_images(n=32)
    run_epoch(MODELS["mlp"](images.shape[1:]), images)
    assert (torch.tensor([1e-40]) * 1.0).item() == 0.0


def test_the_read_counter_sees_reads():
    """The counter itself works: a read inside the step is caught."""
    images = tiny_images()
    model = MODELS["mlp"](images.shape[1:])

    original = model.objective

    def objective(*args, **kwargs):
        terms = original(*args, **kwargs)
        terms["loss"].item()  # what a tutorial loop does every step
        return terms

    model.objective = objective
    reads, *_ = run_epoch(model, images)
    assert len(reads) == 3 and reads[0].startswith("item")


def test_means_and_nonfinite_are_one_read_each_and_shared():
    accumulator = EpochAccumulator(torch.device("cpu"))
    for step in range(1, 4):
        accumulator.add({"loss": torch.tensor(float(step)), "per_dim": torch.tensor([1.0, 2.0])}, 10, step)
    with count_host_reads() as reads:
        means = accumulator.means()
    assert len(reads) == 1
    with count_host_reads() as reads:
        accumulator.add({"loss": torch.tensor(4.0), "per_dim": torch.tensor([1.0, 2.0])}, 10, 4)
        assert reads == []
        assert accumulator.nonfinite() is None
        means = accumulator.means()  # train.py's log point: nonfinite() then means(): one read in all
    assert len(reads) == 1
    assert means["loss"] == pytest.approx(2.5) and means["per_dim"] == pytest.approx([1.0, 2.0])


def test_means_weight_each_batch_by_its_size():
    accumulator = EpochAccumulator(torch.device("cpu"))
    accumulator.add({"loss": torch.tensor(1.0), "kl_per_dim": torch.tensor([0.5, 1.5])}, 30, 1)
    accumulator.add({"loss": torch.tensor(4.0), "kl_per_dim": torch.tensor([1.5, 0.5])}, 10, 2)
    means = accumulator.means()
    assert isinstance(means["loss"], float) and means["loss"] == pytest.approx((30 + 40) / 40)
    assert means["kl_per_dim"] == pytest.approx([(15 + 15) / 40, (45 + 5) / 40])
    assert (accumulator.images, accumulator.steps) == (40, 2)
    assert EpochAccumulator(torch.device("cpu")).means() == {}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nonfinite_reports_the_first_bad_step_and_its_terms(bad):
    accumulator = EpochAccumulator(torch.device("cpu"))
    assert accumulator.nonfinite() is None
    for step in range(11, 20):  # e.g. a resumed epoch: the first step here is 11
        recon = torch.tensor(bad if step == 14 else 1.0)
        kl = torch.tensor([1.0, bad if step == 17 else 1.0])
        accumulator.add({"loss": recon + 1.0, "recon": recon, "kl_per_dim": kl}, 8, step)
        if step == 13:
            assert accumulator.nonfinite() is None
    assert accumulator.nonfinite() == (14, ["loss", "recon", "kl_per_dim"])


def test_a_term_that_appears_later_gets_its_own_sum():
    accumulator = EpochAccumulator(torch.device("cpu"))
    accumulator.add({"loss": torch.tensor(2.0)}, 4, 1)
    accumulator.add({"loss": torch.tensor(2.0), "extra": torch.tensor(8.0)}, 4, 2)
    accumulator.add({"extra": torch.tensor(8.0), "loss": torch.tensor(2.0)}, 4, 3)  # another order
    assert accumulator.means() == pytest.approx({"loss": 2.0, "extra": 64 / 12})
    assert accumulator.nonfinite() is None


def test_state_dict_round_trip_continues_the_sums():
    accumulator = EpochAccumulator(torch.device("cpu"))
    for step in (1, 2):
        accumulator.add({"loss": torch.tensor(float(step)), "kl_per_dim": torch.tensor([1.0, 3.0])}, 5, step)
    state = accumulator.state_dict()
    assert set(state) == {"sums", "images", "steps"}
    assert state["sums"]["loss"].shape == () and state["sums"]["kl_per_dim"].shape == (2,)
    restored = EpochAccumulator(torch.device("cpu"))
    restored.load_state_dict(state)
    for acc in (accumulator, restored):
        acc.add({"loss": torch.tensor(6.0), "kl_per_dim": torch.tensor([1.0, 3.0])}, 5, 3)
    for acc in (accumulator, restored):
        means = acc.means()
        assert means["loss"] == pytest.approx(3.0) and means["kl_per_dim"] == pytest.approx([1.0, 3.0])
    assert (restored.images, restored.steps) == (15, 3)
    restored.add({"loss": torch.tensor(math.nan), "kl_per_dim": torch.tensor([1.0, 3.0])}, 5, 4)
    assert restored.nonfinite() == (4, ["loss"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["32", "bf16", "16-mixed"])
@pytest.mark.parametrize("model, channels_last, fused", [("cnn", False, None), ("cnn", True, True), ("vae", True, True)])
def test_cuda_epoch_has_no_synchronisation(precision, model, channels_last, fused):
    """On a GPU, torch's own sync detector: any device->host wait inside the epoch raises.
    The last two cases are `aerun train`'s defaults there: fused Adam, channels_last."""
    images = tiny_images(n=64)
    # GradScaler.step reads found_inf with .item() (a sync) unless the optimizer unscales and
    # skips inside its own kernel: the fused optimizers do, so 16-mixed needs one.
    loop = make_loop(MODELS[model](images.shape[1:]), images, device="cuda", precision=precision,
                     fused=fused if fused is not None else precision == "16-mixed", channels_last=channels_last)
    accumulator = EpochAccumulator(loop.step.device)
    train_one_epoch(loop, accumulator)  # one epoch to create the optimizer state and warm everything up
    loop.state.batch_in_epoch = 0
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        train_one_epoch(loop, accumulator)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert accumulator.nonfinite() is None and accumulator.steps == 4


def test_a_finite_but_exploding_loss_is_divergence_from_the_step_it_began():
    """optim.lr=10 on a VAE: the loss reaches 1e20 and stays finite; a run must not end 'ok' on it."""
    from aerun.engine.accumulator import EXPLODED
    from aerun.engine.loop import describe

    acc = EpochAccumulator(torch.device("cpu"))
    for step, loss in enumerate([500.0, 480.0, 3e12, 1e20], start=1):
        acc.add({"loss": torch.tensor(loss), "kl": torch.tensor(1.0)}, 8, step)
        if step == 2:
            assert acc.nonfinite() is None  # a big but working loss is not flagged
    step, terms = acc.nonfinite()
    assert step == 3 and terms == [f"loss (beyond {EXPLODED:.0e} an image)"]
    assert describe(terms) == "an exploding loss (beyond 1e+10 an image)"
    assert describe(["loss", "kl"]) == "non-finite loss, kl"
