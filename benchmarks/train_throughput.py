"""Training speed: aerun's engine against the loop a tutorial teaches and against pure compute.

In one process, alternating the rows and repeating them, it measures images/s of
  (a) the tutorial loop: torchvision's MNIST with ToTensor (a PIL image per item),
      DataLoader(shuffle=True, batch_size=128), `.item()` every step;
  (b) aerun's engine as `aerun train` runs it: `engine.train_one_epoch` over the Loop that
      `commands.train.build_loop` builds from the composed config (model, optimizers, step
      context, accumulator), uint8 data on the device, and the loop's log point every
      `trainer.log_every_n_steps`, on a process that writes nothing (no TensorBoard, files);
  (c) pure compute: forward, loss, backward and optimizer step on preloaded float batches, a
      different one each step (gathered before the clock starts);
for cnn_ae, linear_ae, vae and conv_vae on MNIST at batch 128, each in fp32, bf16 autocast,
torch.compile, bf16 + compile, and (the convolutional ones) channels_last, alone and with each
of those; 16-mixed too on CUDA. For the VAEs, row (a)'s loss is the model's own objective
(reconstruction + KL, as a VAE tutorial writes it); for the AEs it is the tutorial's MSELoss.
Every row times a fixed number of steps after its own warm-up (compilation excluded); the tables show medians over the repeats and the ratios (b)/(a) and (b)/(c).

Other processes on the machine distort every number (on 2 cores, a busy neighbour can make
a 2-thread torch step 10-30x slower). So before each cycle of rows the script waits (up to
--max-wait s) until other processes leave the CPU, measures how much CPU they took during
each measurement (/proc/stat minus this process), sets aside the disturbed ones, and adds
cycles (up to --max-repeats) until every row has 3 undisturbed values.

Then the whole process (start-up included), each a subprocess, repeated, median:
`aerun train model=cnn_ae ... trainer.max_epochs=1` against `tutorial_train.py` (the
tutorial's loop, one epoch + a test pass), `aerun train debug=smoke`, `aerun --help`.

    python benchmarks/train_throughput.py                 # everything; writes benchmarks/results.md
    python benchmarks/train_throughput.py --quick         # a smoke check: few steps, 1 repeat
    python benchmarks/train_throughput.py --rows cnn_ae/fp32 process/aerun_help
                                                          # row ids or globs: model/variant/kind
    python benchmarks/train_throughput.py --device cuda --budget-s 240 --output benchmarks/results_cuda.md
                                                          # stop adding repeats after 240 s

With --output, the results file is rewritten after every cycle of rows, so a run stopped
early (a timeout, --budget-s) leaves the rows measured so far.

A run with --quick or --rows prints only, unless --output is given.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import gzip
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MODELS = ("cnn_ae", "linear_ae", "vae", "conv_vae")
CONV_MODELS = ("cnn_ae", "conv_vae")  # the ones with a memory format (channels_last rows)
OWN_OBJECTIVE = ("vae", "conv_vae")  # row (a) trains these on their own loss (reconstruction + KL)
# variant -> aerun overrides; the same settings are applied to rows (a) and (c) by hand.
VARIANTS = {
    # Every variant names its memory format: aerun's default is fp32 + channels_last (the
    # `channels_last` row); `fp32` is the plain NCHW baseline the tutorial uses.
    "fp32": ["trainer.channels_last=false"],
    "bf16": ["trainer.precision=bf16", "trainer.channels_last=false"],
    "compile": ["trainer.compile=true", "trainer.channels_last=false"],
    "bf16+compile": ["trainer.precision=bf16", "trainer.compile=true", "trainer.channels_last=false"],
    "channels_last": ["trainer.channels_last=true"],
    # With channels_last (the default), what a user gets from `trainer.precision=bf16` / `compile=true`.
    "bf16+channels_last": ["trainer.precision=bf16", "trainer.channels_last=true"],
    "compile+channels_last": ["trainer.compile=true", "trainer.channels_last=true"],
    "bf16+compile+channels_last": ["trainer.precision=bf16", "trainer.compile=true", "trainer.channels_last=true"],
    "fp16": ["trainer.precision=16-mixed", "trainer.channels_last=false"],  # CUDA only
}
KINDS = {"a": "tutorial loop", "b": "aerun engine", "c": "pure compute"}
PROCESS_ROWS = ("aerun_1epoch", "tutorial_1epoch", "aerun_smoke", "aerun_help")
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
               "t10k-labels-idx1-ubyte")
DEFAULT_ROOT = Path(os.environ.get("AERUN_DATA_ROOT", REPO.parent / "shared" / "datasets"))

TARGETS = {  # issue 8
    "cnn_ae (b)/(a)": 1.4,
    "GPU cnn_ae (b)/(a)": 20.0,
    "GPU cnn_ae (b)/(c)": 0.9,
    "cnn_ae (b)/(c)": 0.9,
    "linear_ae (b)/(a)": 2.5,
    "1 epoch: tutorial / aerun process time": 1.3,
}


# ----------------------------------------------------------------------------- set-up
def all_row_ids(device_type: str) -> list[str]:
    ids = []
    for model in MODELS:
        for variant in VARIANTS:
            if "channels_last" in variant and model not in CONV_MODELS:
                continue  # a dense model has no memory format
            if variant == "fp16" and device_type != "cuda":
                continue
            ids += [f"{model}/{variant}/{kind}" for kind in KINDS]
    return ids + [f"process/{name}" for name in PROCESS_ROWS]


def select(ids: list[str], patterns: list[str] | None) -> list[str]:
    """Row ids matching any pattern, in the order of the patterns (rows are set up in that order, so
    with --budget-s the first named are the ones measured); `cnn_ae` or `cnn_ae/fp32` select
    everything below them."""
    if not patterns:
        return ids
    patterns = [p for arg in patterns for p in arg.split(",") if p]
    chosen = list(dict.fromkeys(i for p in patterns for i in ids
                                if fnmatch.fnmatch(i, p) or fnmatch.fnmatch(i, p + "/*")))
    if not chosen:
        raise SystemExit(f"--rows {' '.join(patterns)}: no row matches; rows are:\n  " + "\n  ".join(ids))
    return chosen


def prepare_torchvision_root(root: Path, cache: Path) -> Path:
    """A folder torchvision's MNIST class accepts: the uncompressed IDX files in MNIST/raw,
    as its download leaves them. Decompressed once from `root`'s .gz files if needed."""
    raw = root / "MNIST" / "raw"
    if all((raw / name).is_file() for name in MNIST_FILES):
        return root
    missing = [f"{name}(.gz)" for name in MNIST_FILES if not (raw / f"{name}.gz").is_file()]
    if missing:
        raise SystemExit(f"MNIST not found in {raw} (missing {', '.join(missing)}); pass --root <folder holding "
                         f"MNIST/raw> or set AERUN_DATA_ROOT")
    out = cache / "MNIST" / "raw"
    out.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        target = out / name
        if not target.is_file():
            with gzip.open(raw / f"{name}.gz", "rb") as f:
                data = f.read()
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
    return cache


def hardware_line(device) -> str:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == (platform.processor() or platform.machine()):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    import torch

    features = [name for flag, name in (("avx512f", "AVX-512"), ("avx512_bf16", "AVX-512 BF16"),
                                        ("amx_bf16", "AMX-BF16")) if flag in flags]
    line = f"{model}{' (' + ', '.join(features) + ')' if features else ''}, {os.cpu_count()} CPU cores, " \
           f"torch threads {torch.get_num_threads()}"
    if device.type == "cuda":
        line += f"; GPU {torch.cuda.get_device_name(device)}"
    return line


def load_line() -> str:
    try:
        one, five, fifteen = os.getloadavg()
        return f"{one:.2f} / {five:.2f} / {fifteen:.2f} (1 / 5 / 15 min)"
    except OSError:
        return "unknown"


class BackgroundMeter:
    """How much CPU other processes took while we measured: the machine's busy time (from
    /proc/stat, steal included) minus this process's and its reaped children's, in cores.
    Interference only ever slows a row down, so a measurement with background > QUIET_CORES
    is kept but set aside while enough quiet ones exist."""

    def __init__(self):
        self.tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.available = self._machine_busy() is not None

    def _machine_busy(self) -> float | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            return None
        user, nice, system, idle, iowait, irq, softirq, steal = fields
        return (user + nice + system + irq + softirq + steal) / self.tick

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def start(self) -> None:
        self._busy, self._own0, self._t0 = self._machine_busy(), self._own(), time.perf_counter()

    def stop(self) -> float | None:
        """Cores used by other processes since start(); None if unknown (no /proc/stat, or too short
        a window for the kernel's 10 ms accounting ticks to tell)."""
        if not self.available:
            return None
        wall = time.perf_counter() - self._t0
        if wall < 0.25:
            return None
        others = (self._machine_busy() - self._busy) - (self._own() - self._own0)
        return max(0.0, others) / max(wall, 1e-9)

    def wait_for_quiet(self, max_wait_s: float) -> float | None:
        """Sample 1 s at a time until other processes use < QUIET_CORES, for at most max_wait_s."""
        if not self.available or max_wait_s <= 0:
            return None
        deadline, told = time.monotonic() + max_wait_s, False
        while True:
            self.start()
            time.sleep(1.0)
            others = self.stop()
            if others < QUIET_CORES or time.monotonic() > deadline:
                return others
            if not told:
                print(f"  waiting for other processes to go quiet (they use {others:.2f} cores; "
                      f"at most {max_wait_s:.0f} s)", flush=True)
                told = True
            time.sleep(2.0)


QUIET_CORES = 0.2  # a measurement is "quiet" if other processes used less than this


@dataclass
class Measurements:
    """Values of one row with the background load during each."""

    values: list[float] = field(default_factory=list)
    background: list[float | None] = field(default_factory=list)

    def add(self, value: float, background: float | None) -> None:
        self.values.append(value)
        self.background.append(background)

    def quiet(self) -> list[float]:
        return [v for v, b in zip(self.values, self.background) if b is None or b < QUIET_CORES]

    def used(self, min_quiet: int) -> list[float]:
        """The quiet values if there are enough of them, else all."""
        quiet = self.quiet()
        return quiet if len(quiet) >= min_quiet else self.values


# ----------------------------------------------------------------------------- rows
@dataclass
class Shared:
    device: object
    data_root: Path
    tv_root: Path
    dataset: object = None  # aerun's ImageDataset on the device
    tv_train: object = None  # torchvision MNIST + ToTensor
    configs: dict = field(default_factory=dict)


def compose_plain(model: str, variant: str, shared: Shared) -> dict:
    key = (model, variant)
    if key not in shared.configs:
        from aerun.config import to_plain
        from aerun.precheck import compose as _compose

        overrides = [f"model={model}", f"data.root={shared.data_root}", f"trainer.device={shared.device.type}",
                     *VARIANTS[variant]]
        shared.configs[key] = to_plain(_compose("train", overrides))
    return shared.configs[key]


class ThroughputRow:
    """One (model, variant, kind): set up once, warmed up once, then timed repeatedly."""

    def __init__(self, row_id: str, shared: Shared):
        import torch

        from aerun.build import build_model

        self.id = row_id
        model_name, self.variant, self.kind = row_id.split("/")
        self.model_name = model_name
        self.shared = shared
        plain = compose_plain(model_name, self.variant, shared)
        self.plain = plain
        t = plain["trainer"]
        self.device = shared.device
        self.precision, self.channels_last, self.compile = t["precision"], t["channels_last"], t["compile"]
        self.batch_size = t["batch_size"]
        torch.manual_seed(plain["seed"])
        image_shape = shared.dataset.image_shape
        model = build_model(plain["model"], image_shape, len(shared.dataset.classes)).to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.forward = torch.compile(model) if self.compile else model
        self.recon_loss = plain["loss"] or model.default_loss
        self.images_done = 0
        getattr(self, f"_setup_{self.kind}")()

    # (a) ---------------------------------------------------------------------------
    def _setup_a(self):
        import torch
        from torch.utils.data import DataLoader

        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.plain["optim"]["lr"])
        self.criterion = torch.nn.MSELoss()
        self.own_objective = self.model_name in OWN_OBJECTIVE
        self.loader = DataLoader(self.shared.tv_train, batch_size=self.batch_size, shuffle=True)
        self.iterator = iter(self.loader)
        self.running_loss = 0.0
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "16-mixed")

    def _step_a(self, images):
        import torch

        from aerun.engine import autocast

        images = images.to(self.device)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.precision):
            out = self.forward(images)
            if self.own_objective:
                loss = self.model.objective(out, images, self.recon_loss)["loss"]
            else:
                loss = self.criterion(self.model.to_image(out.recon).float(), images)
        self.optimizer.zero_grad()
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.running_loss += loss.item()
        return images.shape[0]

    def _run_a(self, steps: int) -> int:
        images_done = 0
        for _ in range(steps):
            try:
                images, _ = next(self.iterator)
            except StopIteration:  # a new epoch: a new shuffle, as the tutorial's for-loop does
                self.iterator = iter(self.loader)
                images, _ = next(self.iterator)
            images_done += self._step_a(images)
        return images_done

    # (b) ---------------------------------------------------------------------------
    def _setup_b(self):
        import contextlib

        from aerun import distributed
        from aerun.commands.train import build_loop

        # The loop exactly as `aerun train` builds it, on a rank that writes nothing (no
        # TensorBoard, no checkpoints, no config.yaml): what is timed is the engine alone.
        silent = distributed.DistContext(enabled=False, rank=1)
        params = sum(p.numel() for p in self.model.parameters())
        self.loop = build_loop(self.plain, Path(tempfile.mkdtemp()), silent, self.device, self.model,
                               self.shared.dataset, params, contextlib.ExitStack(), None)
        self.loop.step._forward = self.forward
        self.subset = None

    def _before_b(self, steps: int) -> None:
        """This repeat's images: `steps` full batches, a fresh random subset of the training split."""
        from aerun.data import Split
        from aerun.engine import epoch_permutation

        train = self.shared.dataset.train
        state = self.loop.state
        idx = epoch_permutation(len(train), self.plain["seed"], state.epoch + 10_000, self.device)[:steps * self.batch_size]
        self.loop.train = Split(train.images.index_select(0, idx), train.labels.index_select(0, idx))

    def _run_b(self, steps: int) -> int:
        from aerun.engine import EpochAccumulator, train_one_epoch

        loop = self.loop
        if loop.train is self.shared.dataset.train:  # a warm-up without _before_b
            self._before_b(steps)
        loop.state.batch_in_epoch = 0
        accumulator = EpochAccumulator(self.device)
        train_one_epoch(loop, accumulator)
        loop.state.epoch += 1
        accumulator.nonfinite()  # the epoch end's reads
        accumulator.means()
        return steps * self.batch_size

    # (c) ---------------------------------------------------------------------------
    def _setup_c(self):
        import torch

        from aerun.build import build_optimizer

        self.optimizer = build_optimizer(self.model.parameters(), self.plain["optim"])
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "16-mixed")
        self.batches = []

    def _preload_c(self, steps: int) -> None:
        """`steps` distinct float batches, gathered before the clock starts: every step reads
        new input as in training (one batch stepped over and over stays in the CPU's cache,
        which no training loop sees), but none of the gathering is timed."""
        from aerun.engine import epoch_permutation, to_float

        images = self.shared.dataset.train.images
        perm = epoch_permutation(len(images), self.plain["seed"], 99, self.device)
        self.batches = [to_float(images.index_select(0, perm[i * self.batch_size:(i + 1) * self.batch_size]),
                                 self.channels_last) for i in range(steps)]

    def _run_c(self, steps: int) -> int:
        from aerun.engine import autocast
        from aerun.models.base import Autoencoder

        if len(self.batches) < steps:
            self._preload_c(steps)
        self.model.train()
        if type(self.model).training_step is not Autoencoder.training_step:
            return self._run_own_step_c(steps)
        for x in self.batches[:steps]:
            with autocast(self.device, self.precision):
                out = self.forward(x)
            loss = self.model.objective(out, x, self.recon_loss)["loss"]
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler.is_enabled():
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                loss.backward()
                self.optimizer.step()
        return steps * self.batch_size

    def _run_own_step_c(self, steps: int) -> int:
        """A family with its own update (several optimizers, CD, stages): its `training_step`
        on the preloaded batches through a bare StepContext, nothing of the loop around it."""
        from aerun.build import build_optimizers
        from aerun.engine import StepContext, StepOptions
        from aerun.models.base import Batch

        if not hasattr(self, "step_context"):
            import torch

            o, t = self.plain["optim"], self.plain["trainer"]
            self.step_context = StepContext(self.forward, build_optimizers(self.model, o), self.scaler, self.device,
                                            StepOptions(self.recon_loss, t["precision"], t["grad_clip"], o["l1_weight"]))
            self.labels = torch.zeros(self.batch_size, dtype=torch.long, device=self.device)
        step = self.step_context
        for i, x in enumerate(self.batches[:steps]):
            step.begin(1.0 + i / max(1, steps))  # past any pretraining stage: the fine-tuning step
            self.model.training_step(Batch(x, x, self.labels[:x.shape[0]] if self.model.uses_labels else None), step)
            step.end()
        return steps * self.batch_size

    # ---------------------------------------------------------------------------------
    def warm_up(self, steps: int) -> None:
        getattr(self, f"_run_{self.kind}")(steps)
        if self.compile:
            self._compile_partial_batch()
        synchronize(self.device)

    def _compile_partial_batch(self) -> None:
        """An epoch's last, smaller batch makes torch.compile recompile (with dynamic shapes,
        by default); every later epoch runs that graph. Trigger it here so the timed steps
        see what most of a multi-epoch run sees, and no recompilation lands in a timed repeat."""
        from aerun.engine import autocast, to_float

        n = self.batch_size - 16
        x = to_float(self.shared.dataset.train.images[:n], self.channels_last)
        with autocast(self.device, self.precision):
            out = self.forward(x)
        self.model.objective(out, x, self.recon_loss)["loss"].backward()
        self.model.zero_grad(set_to_none=True)

    def time(self, steps: int) -> float:
        before = getattr(self, f"_before_{self.kind}", None)
        if before is not None:
            before(steps)
        synchronize(self.device)
        start = time.perf_counter()
        images = getattr(self, f"_run_{self.kind}")(steps)
        synchronize(self.device)
        return images / (time.perf_counter() - start)


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----------------------------------------------------------------------------- processes
def aerun_command() -> list[str]:
    script = Path(sys.executable).with_name("aerun")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "aerun"]


def process_command(name: str, data_root: Path, tv_root: Path, run_dir: Path) -> list[str]:
    aerun = aerun_command()
    if name == "aerun_1epoch":
        return [*aerun, "train", "model=cnn_ae", f"data.root={data_root}", "trainer.max_epochs=1",
                "trainer.progress=false", f"hydra.run.dir={run_dir}"]
    if name == "tutorial_1epoch":
        return [sys.executable, str(REPO / "benchmarks" / "tutorial_train.py"), "--root", str(tv_root), "--epochs", "1"]
    if name == "aerun_smoke":
        return [*aerun, "train", "debug=smoke", f"data.root={data_root}", f"hydra.run.dir={run_dir}"]
    if name == "aerun_help":
        return [*aerun, "--help"]
    raise ValueError(name)


def time_process(command: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return elapsed


def run_breakdown(run_dir: Path, elapsed: float) -> dict | None:
    """Where an `aerun train` process spent its time, from the run's metrics.json."""
    import json

    try:
        metrics = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    inside = metrics.get("wall_time_s") or 0.0
    return {"process": elapsed, "start-up + exit (outside train())": elapsed - inside,
            "training loop (incl. per-epoch validation)": metrics.get("train_time_s"),
            "train() minus the loop (data, final evaluation, files)": inside - (metrics.get("train_time_s") or 0.0),
            "images/s in the loop": metrics.get("images_per_s")}


# ----------------------------------------------------------------------------- report
def load_tag(background: float | None) -> str:
    if background is None or background < QUIET_CORES:
        return ""
    return f"   (others used {background:.2f} cores: set aside)"


def median(values):
    return statistics.median(values) if values else None


def fmt(value, spec=",.0f", missing="–"):
    return missing if value is None else format(value, spec)


def bold(ratio) -> str:
    """A ratio as the results file quotes it: in bold, so the (b)/(a) and (b)/(c) columns stand out."""
    return "–" if ratio is None else f"**{ratio:.2f}**"


def spread(values) -> str:
    if len(values) < 2:
        return ""
    return f"±{(max(values) - min(values)) / 2 / statistics.median(values) * 100:.0f}%"


def build_report(measured: dict, measured_process: dict, device, steps: int, min_quiet: int,
                 setup_s: dict | None = None) -> tuple[dict, dict]:
    """Markdown tables and the checked targets, from the quiet measurements where enough exist."""
    results = {k: m.used(min_quiet) for k, m in measured.items()}
    process = {k: m.used(min_quiet) for k, m in measured_process.items()}

    def counts(key: str) -> str:
        m = measured.get(key)
        return f"{len(results[key])}/{len(m.values)}" if m else "–"

    throughput_lines = [
        f"images/s: median over the repeats ({steps} steps each at batch 128) taken while other processes used "
        f"< {QUIET_CORES} cores (all repeats where fewer than {min_quiet} were); ± = half the range of those; "
        "µs/image = 1e6 / images/s; 'used' = repeats used / taken for a, b, c",
        "",
        "| model | variant | (a) tutorial | (b) aerun | (c) compute | µs/img a / b / c | (b)/(a) | (b)/(c) | used |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    ratios = {}
    for model in MODELS:
        for variant in VARIANTS:
            keys = {k: f"{model}/{variant}/{k}" for k in KINDS}
            meds = {k: median(results.get(keys[k], [])) for k in KINDS}
            if not any(meds.values()):
                continue
            ba = meds["b"] / meds["a"] if meds["a"] and meds["b"] else None
            bc = meds["b"] / meds["c"] if meds["c"] and meds["b"] else None
            ratios[(model, variant)] = (ba, bc)
            cells = [f"{fmt(meds[k])} {spread(results.get(keys[k], []))}".strip() for k in KINDS]
            us = " / ".join(fmt(1e6 / meds[k], ".1f") if meds[k] else "–" for k in KINDS)
            used = " ".join(counts(keys[k]) for k in KINDS)
            throughput_lines.append(f"| {model} | {variant} | {' | '.join(cells)} | {us} | {bold(ba)} | "
                                    f"{bold(bc)} | {used} |")

    speedup_lines = ["| model | variant | (c) vs fp32 (c) | (b) vs fp32 (b) |", "| --- | --- | ---: | ---: |"]
    for model in MODELS:
        base = {k: median(results.get(f"{model}/fp32/{k}", [])) for k in "bc"}
        for variant in VARIANTS:
            if variant == "fp32":
                continue
            cur = {k: median(results.get(f"{model}/{variant}/{k}", [])) for k in "bc"}
            if not any(cur.values()):
                continue
            sc = cur["c"] / base["c"] if cur["c"] and base["c"] else None
            sb = cur["b"] / base["b"] if cur["b"] and base["b"] else None
            speedup_lines.append(f"| {model} | {variant} | {fmt(sc, '.2f')}× | {fmt(sb, '.2f')}× |")

    process_lines = ["| process | median s | runs (s; * = others used the CPU, set aside) |", "| --- | ---: | --- |"]
    for name in PROCESS_ROWS:
        if process.get(name):
            m = measured_process[name]
            runs = ", ".join(f"{v:.2f}{'' if b is None or b < QUIET_CORES else '*'}" for v, b in zip(m.values, m.background))
            process_lines.append(f"| {name} | {median(process[name]):.2f} | {runs} |")

    checks = {}
    if device.type == "cpu":
        ba, bc = ratios.get(("cnn_ae", "fp32"), (None, None))
        checks["cnn_ae (b)/(a)"] = ba
        checks["cnn_ae (b)/(c)"] = bc
        checks["linear_ae (b)/(a)"] = ratios.get(("linear_ae", "fp32"), (None, None))[0]
    else:
        checks["GPU cnn_ae (b)/(a)"], checks["GPU cnn_ae (b)/(c)"] = ratios.get(("cnn_ae", "fp32"), (None, None))
    if process.get("aerun_1epoch") and process.get("tutorial_1epoch"):
        checks["1 epoch: tutorial / aerun process time"] = median(process["tutorial_1epoch"]) / median(process["aerun_1epoch"])
    target_lines = ["| target | measured | wanted | met |", "| --- | ---: | ---: | --- |"]
    for name, value in checks.items():
        if value is not None:
            target_lines.append(f"| {name} (fp32) | {value:.2f} | ≥ {TARGETS[name]} | "
                                f"{'yes' if value >= TARGETS[name] else 'NO'} |")
    for model in MODELS:  # aerun at its fastest setting against the tutorial as users write it (fp32)
        tutorial = median(results.get(f"{model}/fp32/a", []))
        best = max(((median(results[f"{model}/{v}/b"]), v) for v in VARIANTS if results.get(f"{model}/{v}/b")),
                   default=None)
        if tutorial and best:
            target_lines.append(f"| {model}: fastest aerun row ({best[1]}) / fp32 tutorial | {best[0] / tutorial:.2f} "
                                f"| (info) | |")
    if process.get("aerun_smoke"):
        v = median(process["aerun_smoke"])
        target_lines.append(f"| debug=smoke process | {v:.2f} s | < 30 s | {'yes' if v < 30 else 'NO'} |")
    if process.get("aerun_help"):
        v = median(process["aerun_help"])
        target_lines.append(f"| aerun --help process | {v:.2f} s | < 1 s | {'yes' if v < 1 else 'NO'} |")

    compile_lines = ["| model | variant | kind | set-up s | set-up s without compile | per step: with / without (ms) | "
                     "steps to break even |", "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for row_id, seconds in (setup_s or {}).items():
        model, variant, kind = row_id.split("/")
        without = "+".join(part for part in variant.split("+") if part != "compile")
        plain_id = f"{model}/{without if without in VARIANTS else 'fp32'}/{kind}"  # e.g. channels_last
        if "compile" not in variant or plain_id not in (setup_s or {}):
            continue
        fast, slow = median(results.get(row_id, [])), median(results.get(plain_id, []))
        ms = [128e3 / v if v else None for v in (fast, slow)]  # ms per step of 128 images
        gain = ms[1] - ms[0] if None not in ms else None
        extra = seconds - setup_s[plain_id]
        even = ("at once (no extra set-up)" if extra <= 0 else f"{extra / gain * 1e3:,.0f}") if gain and gain > 0 \
            else "never (no per-step gain)"
        compile_lines.append(f"| {model} | {variant} | {kind} | {seconds:.1f} | {setup_s[plain_id]:.1f} | "
                             f"{fmt(ms[0], '.2f')} / {fmt(ms[1], '.2f')} | {even if gain is not None else '–'} |")

    sections = {"compile": "\n".join(compile_lines), "throughput": "\n".join(throughput_lines),
                "speedups": "\n".join(speedup_lines),
                "process": "\n".join(process_lines), "targets": "\n".join(target_lines)}
    return sections, checks


def write_results(path: Path, sections: dict, meta: dict) -> None:
    text = f"""# Training throughput (written by `benchmarks/train_throughput.py`)

- command: `{meta['command']}`
- date: {meta['date']}
- hardware: {meta['hardware']}
- software: torch {meta['torch']}, torchvision {meta['torchvision']}, Python {meta['python']}
- device: {meta['device']}
- load average before / after: {meta['load_before']} → {meta['load_after']}{meta['load_note']}

Rows: (a) the tutorial loop (torchvision MNIST + ToTensor, DataLoader(shuffle=True), `.item()` every
step); (b) aerun's engine as `aerun train` runs it (`engine.train_one_epoch`, uint8 data on the device,
the log point every 50 steps); (c) pure compute (forward, loss, backward, Adam step on one preloaded
float batch). Each variant applies to all three: bf16 = autocast to bfloat16, compile = `torch.compile`
of the model (timed after compilation, and after the recompile an epoch's smaller last batch causes),
channels_last = model and batches in channels-last memory format (aerun's default since it measured
faster; variants without it in their name are NCHW, as the tutorial is). As in `aerun train`, the whole
process runs with denormals flushed to zero (importing `aerun.engine` sets it); a real tutorial loop
does not, and slows down over a long run as its Adam state decays into denormals (a plain linear_ae
loop: ~12% by step 1,400), so row (a) is, if anything, flattered here.

## Throughput

{sections['throughput']}

## Variants against fp32 (same kind of row)

{sections['speedups']}

## Whole process (subprocess wall time, start-up included)

aerun_1epoch: `aerun train model=cnn_ae data.root=<MNIST .gz folder> trainer.max_epochs=1 trainer.progress=false`
(54,000 training images after the validation split; then validation, the final train/val/test evaluation,
checkpoints, TensorBoard, image grid). tutorial_1epoch: `python benchmarks/tutorial_train.py` (60,000
training images, then a test pass; reads the uncompressed IDX files torchvision needs).
aerun_smoke: `aerun train debug=smoke data.root=...`. aerun_help: `aerun --help`.

{sections['process']}

## torch.compile: warm-up cost against the per-step gain

Set-up = building the row and its warm-up steps (compilation, and the recompile for an epoch's smaller
last batch), against the same row without compile; steps to break even = the extra set-up over the time
a step saves.

{sections['compile']}

## Targets (issue 8)

{sections['targets']}
"""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT,
                        help=f"folder holding MNIST/raw (default: $AERUN_DATA_ROOT or {DEFAULT_ROOT})")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--rows", nargs="+", metavar="ROW",
                        help="row ids or globs (model/variant/kind, process/name); default: all")
    parser.add_argument("--steps", type=int, help="timed steps per repeat (default 100; --quick 10)")
    parser.add_argument("--warmup", type=int, help="untimed steps before the first repeat (default 20; --quick 3)")
    parser.add_argument("--repeats", type=int, help="repeats of every throughput row (default 5; --quick 1)")
    parser.add_argument("--process-repeats", type=int, help="repeats of every process row (default 3; --quick 1)")
    parser.add_argument("--max-repeats", type=int,
                        help="keep cycling up to this many repeats while a row has < 3 quiet values "
                             "(default 3 x --repeats)")
    parser.add_argument("--max-wait", type=float,
                        help="seconds to wait, before each cycle, for other processes to leave the CPU "
                             "(default 120; --quick 0)")
    parser.add_argument("--quick", action="store_true", help="few steps, 1 repeat: a smoke check of the script")
    parser.add_argument("--output", type=Path,
                        help="results file (default benchmarks/results.md for a full run; none with --quick/--rows)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "aerun_bench_data",
                        help="where to decompress MNIST for torchvision if the root has only .gz files")
    parser.add_argument("--list", action="store_true", help="list the row ids and exit")
    parser.add_argument("--budget-s", type=float,
                        help="after this many seconds, set up no more rows and start no more cycles "
                             "(every row set up gets at least one repeat); default: no limit")
    args = parser.parse_args(argv)

    steps = args.steps or (10 if args.quick else 100)
    warmup = args.warmup if args.warmup is not None else (3 if args.quick else 20)
    repeats = args.repeats or (1 if args.quick else 5)
    process_repeats = args.process_repeats or (1 if args.quick else 3)
    if args.max_wait is None:
        args.max_wait = 0.0 if args.quick else 120.0
    output = args.output
    if output is None and not args.quick and not args.rows:
        output = REPO / "benchmarks" / "results.md"

    import torch

    # As in `aerun train`: importing the engine turns on flush-to-zero for denormals before torch
    # starts its CPU worker threads (they copy the flag when they start). It is per process, so
    # rows (a) and (c) get it too: (a) is then faster than a real tutorial loop over a long run.
    import aerun.engine  # noqa: F401

    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    ids = all_row_ids(device.type)
    if args.list:
        print("\n".join(ids))
        return 0
    chosen = select(ids, args.rows)
    throughput_ids = [i for i in chosen if not i.startswith("process/")]
    process_ids = [i.split("/", 1)[1] for i in chosen if i.startswith("process/")]

    started = time.perf_counter()

    def over_budget() -> bool:
        return args.budget_s is not None and time.perf_counter() - started > args.budget_s

    def report(results, process, breakdowns, quiet: bool) -> None:
        """Print the tables (unless `quiet`) and write `output` if one is set."""
        sections, _ = build_report(results, process, device, steps, min_quiet, setup_s)
        breakdowns = [b for b in breakdowns if b]
        if breakdowns:
            lines = ["| aerun_1epoch, where the time went (median) | s |", "| --- | ---: |"]
            for key in breakdowns[0]:
                values = [b[key] for b in breakdowns if b.get(key) is not None]
                if values:
                    lines.append(f"| {key} | {median(values):,.2f} |")
            sections["process"] += "\n\n" + "\n".join(lines)
        load_after = load_line()
        if not quiet:
            print()
            for title in ("throughput", "speedups", "process", "targets"):
                print(sections[title])
                print()
            print(f"load average before / after: {load_before} -> {load_after}")
        if output is not None:
            import torchvision

            # The load average counts this script's own threads, so it says little; what matters is
            # whether a row had to fall back on repeats taken while other processes used the CPU.
            loaded = [k for k, m in [*results.items(), *process.items()]
                      if len(m.quiet()) < min(min_quiet, len(m.values))]
            note = (f"  \n  **{len(loaded)} row(s) had too few quiet repeats and use repeats taken under load "
                    f"({', '.join(loaded[:6])}{', ...' if len(loaded) > 6 else ''}): their absolute numbers are low; "
                    "ratios within one process are the robust output.**" if loaded else
                    "  \n  (the load average includes this script's own threads; every median uses only repeats "
                    "taken while other processes were quiet)")
            command = "python benchmarks/train_throughput.py" + (" " + shlex.join(argv if argv is not None else sys.argv[1:])
                                                                  if (argv if argv is not None else sys.argv[1:]) else "")
            meta = {"command": command.strip(), "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                    "hardware": hardware_line(device), "torch": torch.__version__, "torchvision": torchvision.__version__,
                    "python": platform.python_version(), "device": str(device), "load_before": load_before,
                    "load_after": load_after, "load_note": note}
            write_results(output, sections, meta)
            if not quiet:
                print(f"wrote {output}")

    load_before = load_line()
    print(f"device {device}; {hardware_line(device)}; torch {torch.__version__}; load {load_before}", flush=True)
    tv_root = prepare_torchvision_root(args.root, args.cache)
    shared = Shared(device=device, data_root=args.root, tv_root=tv_root)

    results: dict[str, Measurements] = {}
    setup_s: dict[str, float] = {}
    meter = BackgroundMeter()
    min_quiet = min(3, repeats)
    max_repeats = args.max_repeats or 3 * repeats
    if throughput_ids:
        import logging

        from torchvision import datasets, transforms

        from aerun.data import load_dataset

        logging.getLogger("torch._inductor").setLevel(logging.ERROR)
        plain = compose_plain(MODELS[0], "fp32", shared)
        d = plain["data"]
        shared.dataset = load_dataset(d["name"], args.root, val_size=d["val_size"], seed=plain["seed"]).to(device)
        if any(i.endswith("/a") for i in throughput_ids):
            shared.tv_train = datasets.MNIST(str(tv_root), train=True, download=False,
                                             transform=transforms.ToTensor())
        rows = []
        for row_id in throughput_ids:
            if over_budget() and rows:
                print(f"  --budget-s {args.budget_s:g} spent: not setting up {row_id} and the rows after it", flush=True)
                break
            start = time.perf_counter()
            row = ThroughputRow(row_id, shared)
            row.warm_up(warmup)
            rows.append(row)
            setup_s[row_id] = time.perf_counter() - start
            print(f"  set up {row_id} ({setup_s[row_id]:.1f} s)", flush=True)
        repeat = 0
        # At least `repeats` cycles; more (up to max_repeats) while a row lacks `min_quiet` quiet values.
        while repeat < repeats or (repeat < max_repeats and
                                   any(len(results[r.id].quiet()) < min_quiet for r in rows)):
            if repeat and over_budget():
                print(f"  --budget-s {args.budget_s:g} spent after {repeat} cycle(s)", flush=True)
                break
            meter.wait_for_quiet(args.max_wait)
            repeat += 1
            for row in rows:  # alternating: every row once per cycle
                meter.start()
                ips = row.time(steps)
                background = meter.stop()
                results.setdefault(row.id, Measurements()).add(ips, background)
                print(f"  repeat {repeat}  {row.id:<28} {ips:>9,.0f} images/s{load_tag(background)}", flush=True)
            if output is not None:  # what a stopped run leaves: every cycle so far
                report(results, {}, [], quiet=True)
        del rows

    process: dict[str, Measurements] = {}
    breakdowns: list[dict | None] = []
    if process_ids:
        with tempfile.TemporaryDirectory(prefix="aerun_bench_runs_") as tmp:
            repeat = 0
            while repeat < process_repeats or (repeat < 2 * process_repeats and any(
                    len(process[n].quiet()) < min(3, process_repeats) for n in process_ids)):
                if repeat and over_budget():
                    print(f"  --budget-s {args.budget_s:g} spent after {repeat} process cycle(s)", flush=True)
                    break
                meter.wait_for_quiet(args.max_wait)
                repeat += 1
                for name in process_ids:
                    run_dir = Path(tmp) / f"{name}_{repeat}"
                    command = process_command(name, args.root, tv_root, run_dir)
                    meter.start()
                    elapsed = time_process(command)
                    background = meter.stop()
                    process.setdefault(name, Measurements()).add(elapsed, background)
                    if name == "aerun_1epoch" and (background is None or background < QUIET_CORES):
                        breakdowns.append(run_breakdown(run_dir, elapsed))
                    print(f"  repeat {repeat}  process/{name:<20} {elapsed:7.2f} s{load_tag(background)}", flush=True)

    report(results, process, breakdowns, quiet=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
