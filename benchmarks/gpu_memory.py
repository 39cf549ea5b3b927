"""Peak GPU memory of every model family's training step at batch 128, and the largest batch that fits.

    python benchmarks/gpu_memory.py [--root ../shared/datasets] [--rows vae,rbm] [--output benchmarks/memory_cuda.md]

Each family (the rows of `benchmarks/family_throughput.py`, at its defaults: fp32, channels_last
where it applies) is built once on the device with its optimizers. Then:
- peak at batch 128: `torch.cuda.max_memory_allocated` over a warm-up step and 3 timed steps of
  its own `training_step` (row (c): weights, optimizer state, gradients, activations, and the
  uint8 MNIST split already on the device, as in `aerun train`);
- largest batch: one step at batch 1,024, 4,096, ... (×4) until one runs out of memory or
  --max-batch is reached, then halving the gap (--bisect times) between the largest batch that
  ran and the smallest that did not. A batch is random uint8 images of the dataset's shape. Any
  other error (a kernel's 32-bit index limit, say) also ends the search; its first line is kept.

On a CPU (--device cpu, a rehearsal of the script) the same steps run but no memory is read:
the peak column says "–" and --max-batch should be small.
"""

from __future__ import annotations

import argparse
import gc
import shlex
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.family_throughput import FAMILIES, compose_family  # noqa: E402
from benchmarks.train_throughput import DEFAULT_ROOT, Shared, ThroughputRow, hardware_line  # noqa: E402

GIB = 2 ** 30


def largest_fitting(fits, start: int, limit: int, bisect: int, factor: int = 4) -> tuple[int | None, int | None]:
    """(largest batch that ran, smallest that did not) for a predicate `fits(batch) -> bool`
    that is monotone: grow by `factor` from `start` up to `limit`, then halve the gap `bisect`
    times. (None, start) if even `start` fails; (limit, None) if `limit` runs."""
    good, bad, batch = None, None, start
    while True:
        if fits(batch):
            good = batch
            if batch >= limit:
                return good, None
            batch = min(limit, batch * factor)
        else:
            bad = batch
            break
    if good is None:
        return None, bad
    for _ in range(bisect):
        middle = (good + bad) // 2
        if middle in (good, bad):
            break
        if fits(middle):
            good = middle
        else:
            bad = middle
    return good, bad


class FamilyProbe:
    """One family's model and optimizers on the device; training steps at any batch size."""

    def __init__(self, name: str, shared: Shared):
        self.name, self.shared, self.device = name, shared, shared.device
        self.row = ThroughputRow(f"{name}/default/c", shared)
        self.image_shape = shared.dataset.image_shape

    def steps_at_128(self, steps: int = 3) -> tuple[float | None, float]:
        """(peak GiB allocated over a warm-up and `steps` steps, images/s of those steps)."""
        import torch

        row = self.row
        row.warm_up(1)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        images_per_s = row.time(steps)
        peak = torch.cuda.max_memory_allocated(self.device) / GIB if self.device.type == "cuda" else None
        return peak, images_per_s

    def fits(self, batch: int) -> bool:
        """Whether one training step at `batch` runs; the error of the first that does not is kept."""
        import torch

        from aerun.engine import to_float

        row = self.row
        row.batches = []
        try:
            images = torch.randint(0, 256, (batch, *self.image_shape), dtype=torch.uint8, device=self.device)
            row.batches = [to_float(images, row.channels_last)]
            del images
            row.batch_size = batch
            if hasattr(row, "labels"):
                row.labels = torch.zeros(batch, dtype=torch.long, device=self.device)
            row._run_c(1)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            return True
        except torch.OutOfMemoryError:
            self.failure = "out of memory"
            return False
        except RuntimeError as error:  # e.g. a kernel that cannot index this many elements
            self.failure = str(error).strip().splitlines()[0][:160]
            return False
        finally:
            row.batches = []
            row.model.zero_grad(set_to_none=True)
            gc.collect()
            if self.device.type == "cuda":
                torch.cuda.empty_cache()

    def close(self) -> None:
        import torch

        del self.row
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--rows", default=",".join(FAMILIES), help="families: " + ", ".join(FAMILIES))
    parser.add_argument("--max-batch", type=int, default=2 ** 20, help="stop growing the batch here (default 2^20)")
    parser.add_argument("--bisect", type=int, default=3, help="halvings of the gap after the growth stops (default 3)")
    parser.add_argument("--budget-s", type=float, help="stop starting families after this many seconds")
    parser.add_argument("--output", type=Path, help="a markdown file, rewritten after every family")
    args = parser.parse_args(argv)
    names = [n for n in args.rows.split(",") if n]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(FAMILIES)}")

    import torch

    import aerun.engine  # noqa: F401 - flush-to-zero, as in aerun train
    from aerun.data import load_dataset

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (peak GPU memory needs one); --device cpu rehearses")
    device = torch.device(args.device)
    shared = Shared(device=device, data_root=args.root, tv_root=args.root)
    for name in names:
        compose_family(name, shared)
    d = shared.configs[(names[0], "default")]["data"]
    shared.dataset = load_dataset(d["name"], args.root, val_size=d["val_size"], seed=0).to(device)
    command = "python benchmarks/gpu_memory.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    header = ["# Peak memory per family (written by `benchmarks/gpu_memory.py`)", "",
              f"- command: `{command.strip()}`",
              f"- date: {time.strftime('%Y-%m-%d %H:%M')}; {hardware_line(device)}; torch {torch.__version__}"]
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory / GIB
        header.append(f"- device memory: {total:.1f} GiB; the uint8 MNIST split on the device takes "
                      f"{shared.dataset.train.images.numel() / GIB:.3f} GiB")
    header += ["", "Peak = `torch.cuda.max_memory_allocated` over a warm-up and 3 training steps at batch 128 "
                   "(weights, optimizer state, gradients, activations, data on the device). Largest batch: one "
                   f"step of random images grown ×4 from 1,024 up to {args.max_batch:,}, then {args.bisect} "
                   "halvings of the gap.", "",
               "| family | peak at batch 128 (GiB) | images/s at 128 | largest batch that ran | smallest that did not | "
               "why it did not |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    lines, started = [], time.perf_counter()
    for name in names:
        if args.budget_s is not None and time.perf_counter() - started > args.budget_s and lines:
            print(f"--budget-s {args.budget_s:g} spent: not measuring {', '.join(names[names.index(name):])}")
            break
        probe = FamilyProbe(name, shared)
        peak, ips = probe.steps_at_128()
        probe.failure = ""
        good, bad = largest_fitting(probe.fits, 1024, args.max_batch, args.bisect)
        probe.close()
        cells = [name, "–" if peak is None else f"{peak:.3f}", f"{ips:,.0f}",
                 "none" if good is None else f"{good:,}" + (" (--max-batch)" if bad is None else ""),
                 "–" if bad is None else f"{bad:,}", probe.failure if bad is not None else ""]
        lines.append("| " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
        if args.output is not None:
            tmp = args.output.with_suffix(".tmp")
            tmp.write_text("\n".join(header + lines) + "\n")
            tmp.replace(args.output)
    print("\n".join(header + lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
