"""Fault injection for aerun's own tests: crashes, signals and disk errors at named points.

Read from the environment variable AERUN_TEST_FAULTS, never from a config, so users never
see it: a comma-separated list of ACTION@POINT or ACTION@POINT#N (the N-th time the point is
reached; for the point `step`, N is the global step), optionally followed by :rankR (only in
DDP rank R). ACTION is a signal name (SIGKILL,
SIGTERM, SIGINT), an errno name (ENOSPC, EIO, EROFS, EACCES: an OSError), OOM (the
RuntimeError torch raises when memory runs out), BUG (an unexpected exception) or NAN (the
batch of that step made NaN: at the point `batch`, through `poison`).
Points: run_dir, startup, data, step, epoch_end, checkpoint (inside the write, after the
bytes), final_evaluation, job_end (a sweep between two jobs), latent (a command that reads a run).
"""

from __future__ import annotations

import errno
import os
import signal

ENV = "AERUN_TEST_FAULTS"
_hits: dict[str, int] = {}


def _plan() -> list[tuple[str, str, int | None]]:
    text = os.environ.get(ENV, "")
    rank = os.environ.get("RANK", "0")
    plan = []
    for entry in filter(None, (e.strip() for e in text.split(","))):
        entry, _, only = entry.partition(":rank")
        if only and only != rank:
            continue
        action, _, where = entry.partition("@")
        point, _, count = where.partition("#")
        plan.append((action, point, int(count) if count else None))
    return plan


def poison(point: str, tensor, step: int):
    """`tensor` made NaN where AERUN_TEST_FAULTS plans NAN@point#step (else `tensor` itself)."""
    for action, planned_point, count in _plan():
        if action == "NAN" and planned_point == point and count in (None, step):
            return tensor * float("nan")
    return tensor


def enabled() -> bool:
    return ENV in os.environ


def at(point: str, step: int | None = None) -> None:
    """Fire whatever AERUN_TEST_FAULTS plans for this point (nothing when it is unset)."""
    if ENV not in os.environ:
        return
    _hits[point] = _hits.get(point, 0) + 1
    reached = step if step is not None else _hits[point]
    for action, planned_point, count in _plan():
        if planned_point == point and (count is None or count == reached):
            _fire(action, point)


def _fire(action: str, point: str) -> None:
    if action.startswith("SIG"):
        os.kill(os.getpid(), getattr(signal, action))
        return
    if action == "OOM":
        raise RuntimeError(f"CUDA out of memory. Tried to allocate 2.00 GiB (injected at {point})")
    if action == "BUG":
        raise ZeroDivisionError(f"injected at {point}")
    code = getattr(errno, action)
    raise OSError(code, os.strerror(code))
