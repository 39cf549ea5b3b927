"""Throughput of every model family: aerun's loop (b) against the pure compute of its step (c).

    python benchmarks/family_throughput.py [--root ../shared/datasets] [--rows svae,rbm] [--repeats 5]

Rows (b) and (c) are `benchmarks/train_throughput.py`'s: (b) the engine exactly as `aerun train`
runs it (batches sliced from uint8 data on the device, the accumulator, log points), on a
silent rank; (c) the family's own `training_step` (several optimizers for the VAE-GAN, CD for
the RBM) or forward/loss/backward/step, on preloaded float batches through a bare StepContext.
(b)/(c) is the loop's overhead for that family (goal: >= 0.9). A last line puts an RBM epoch
beside a same-size MLP AE's (784-500-784): the median, over repeats, of the two (b) rows' time
ratio within a repeat (paired, so a drift in the machine's speed between repeats cancels).
Medians of repeats taken while other processes left the CPU quiet; writes
benchmarks/family_results.md on a full run.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.train_throughput import (DEFAULT_ROOT, BackgroundMeter, Measurements, Shared,  # noqa: E402
                                         ThroughputRow, hardware_line, load_line, spread)

# name -> the overrides of its `aerun train` (defaults otherwise: fp32, channels_last, batch 128)
FAMILIES = {
    "cnn_ae": ["model=cnn_ae"],
    "cnn_ae_unpool": ["model=cnn_ae", "model.downsample=maxpool", "model.upsample=unpool"],
    "vae": ["model=vae"],
    "conv_vae": ["model=conv_vae"],
    "cvae": ["model=vae", "model.conditional=true"],
    "svae": ["model=svae"],
    "vaegan": ["model=vaegan"],
    "stacked_ae": ["model=stacked_ae"],
    "seq_ae_lstm": ["model=seq_ae", "model.cell=lstm"],
    "seq_ae_transformer": ["model=seq_ae", "model.cell=transformer"],
    "rbm": ["model=rbm", "optim=sgd", "optim.lr=0.05"],
    "rbm_binary": ["model=rbm", "model.reconstruction=binary", "optim=sgd", "optim.lr=0.05"],
    "mlp_ae_500": ["model=mlp_ae", "model.hidden=[]", "model.latent_dim=500", "model.output_activation=sigmoid"],
}
KINDS = ("b", "c")


def compose_family(name: str, shared: Shared) -> None:
    """Put the family's composed config where ThroughputRow looks for (model, variant)."""
    from aerun.config import to_plain
    from aerun.precheck import compose

    overrides = [*FAMILIES[name], f"data.root={shared.data_root}", f"trainer.device={shared.device.type}"]
    shared.configs[(name, "default")] = to_plain(compose("train", overrides))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--rows", default=",".join(FAMILIES), help="families: " + ", ".join(FAMILIES))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-wait", type=float, default=120.0)
    parser.add_argument("--output", type=Path, help="default: benchmarks/family_results.md for a run of every row")
    args = parser.parse_args(argv)
    args.command_line = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    names = [n for n in args.rows.split(",") if n]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {', '.join(FAMILIES)}")
    output = args.output or (REPO / "benchmarks" / "family_results.md" if set(names) == set(FAMILIES) else None)

    import torch

    import aerun.engine  # noqa: F401 - flush-to-zero, as in aerun train
    from aerun.data import load_dataset

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    shared = Shared(device=device, data_root=args.root, tv_root=args.root)
    for name in names:
        compose_family(name, shared)
    d = shared.configs[(names[0], "default")]["data"]
    shared.dataset = load_dataset(d["name"], args.root, val_size=d["val_size"], seed=0).to(device)
    load_before = load_line()
    rows = []
    for name in names:
        for kind in KINDS:
            row = ThroughputRow(f"{name}/default/{kind}", shared)
            row.warm_up(args.warmup)
            rows.append(row)
        print(f"  set up {name}", flush=True)
    meter, results = BackgroundMeter(), {}
    for repeat in range(args.repeats):
        meter.wait_for_quiet(args.max_wait)
        for row in rows:
            meter.start()
            ips = row.time(args.steps)
            results.setdefault(row.id, Measurements()).add(ips, meter.stop())
            print(f"  repeat {repeat + 1}  {row.id:<32} {ips:>9,.0f} images/s", flush=True)
    text = report(results, names, device, args, load_before)
    print(text)
    if output is not None:
        output.write_text(text)
        print(f"wrote {output}")
    return 0


def report(results: dict, names: list[str], device, args, load_before: str) -> str:
    import torch

    def med(key):
        values = results[key].used(min(3, args.repeats)) if key in results else []
        return (statistics.median(values), spread(values)) if values else (None, "")

    lines = ["# Throughput of every model family (written by `benchmarks/family_throughput.py`)", "",
             f"- command: `python benchmarks/family_throughput.py {args.command_line}`",
             f"- date: {time.strftime('%Y-%m-%d %H:%M')}; {hardware_line(device)}; torch {torch.__version__}",
             f"- load before: {load_before}; after: {load_line()}", "",
             "images/s at batch 128 (fp32, channels_last where it applies): median of the quiet repeats, ± half "
             "their range.", "", "| family | (b) aerun loop | (c) its step alone | (b)/(c) |", "| --- | ---: | ---: | ---: |"]
    for name in names:
        (b, sb), (c, sc) = med(f"{name}/default/b"), med(f"{name}/default/c")
        ratio = f"{b / c:.2f}" if b and c else "–"
        lines.append(f"| {name} | {b or 0:,.0f} {sb} | {c or 0:,.0f} {sc} | {ratio} |")
    comparisons = [f"{paired_time_ratio(results, f'{rbm}/default/b', 'mlp_ae_500/default/b'):.2f}x with "
                   f"model.reconstruction={kind}" for rbm, kind in (("rbm", "probabilities"), ("rbm_binary", "binary"))
                   if f"{rbm}/default/b" in results and "mlp_ae_500/default/b" in results]
    if comparisons:
        lines += ["", "An RBM epoch (CD-1, 500 hidden units) against a same-size MLP AE epoch (784-500-784), both in "
                      "aerun's loop, as the RBM's time per image over the AE's (median of the repeats' paired "
                      f"ratios): {'; '.join(comparisons)}."]
    return "\n".join(lines) + "\n"


def paired_time_ratio(results: dict, row: str, reference: str) -> float:
    """Median over repeats of (time per image of `row`) / (that of `reference`) in the same repeat."""
    return statistics.median(r / s for s, r in zip(results[row].values, results[reference].values))


if __name__ == "__main__":
    sys.exit(main())
