"""Two CPU choices behind aerun's defaults, as ratios against a reference in the same process.

  fused:  torch's default (foreach) Adam against the fused Adam aerun builds, per training step
  bf16:   fp32 against bf16 autocast (channels_last, aerun's default layout), per training step

Each row is a forward, loss, backward and optimizer step on one preloaded batch of 128 random
images, alternated with its reference and repeated; medians in µs per image. Run it as well with
ONEDNN_MAX_CPU_ISA=AVX2, which hides AVX-512 BF16 / AMX from oneDNN, to see bf16 emulated on a
CPU without native bf16 (the reason aerun's precision default stays fp32):

    python benchmarks/cpu_options.py
    ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/cpu_options.py --rows bf16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def make_step(model_name: str, fused: bool, bf16: bool, channels_last: bool):
    import torch

    import aerun.engine  # noqa: F401 - flushes denormals, as in `aerun train`
    from aerun.build import build_model
    from aerun.config import to_plain
    from aerun.precheck import compose as _compose

    plain = to_plain(_compose("train", [f"model={model_name}"]))
    torch.manual_seed(0)
    model = build_model(plain["model"], (1, 28, 28))
    x = torch.rand(128, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, **({"fused": True} if fused else {}))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            raw = model(x).recon
        loss = torch.nn.functional.binary_cross_entropy_with_logits(raw.float(), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def time_step(step, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps / 128 * 1e6  # µs per image


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", choices=["fused", "bf16"], default=["fused", "bf16"])
    parser.add_argument("--models", nargs="+", default=["linear_ae", "cnn_ae"])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    pairs = []  # (row, model, reference label, reference step, variant label, variant step)
    for model in args.models:
        if "fused" in args.rows:
            pairs.append(("fused", model, "foreach Adam", make_step(model, False, False, False),
                          "fused Adam", make_step(model, True, False, False)))
        if "bf16" in args.rows:
            pairs.append(("bf16", model, "fp32", make_step(model, True, False, True),
                          "bf16", make_step(model, True, True, True)))
    print("| row | model | reference µs/img | variant µs/img | reference / variant |")
    print("| --- | --- | ---: | ---: | ---: |")
    for row, model, ref_name, ref, var_name, var in pairs:
        for step in (ref, var):  # warm-up: first-call allocations, oneDNN primitive caches
            time_step(step, 10)
        ref_times, var_times = [], []
        for _ in range(args.repeats):  # alternate, so drift hits both alike
            ref_times.append(time_step(ref, args.steps))
            var_times.append(time_step(var, args.steps))
        r, v = statistics.median(ref_times), statistics.median(var_times)
        print(f"| {row} | {model} | {ref_name} {r:.1f} | {var_name} {v:.1f} | {r / v:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
