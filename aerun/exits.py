"""One policy for every way an aerun process ends: one line on stderr that says what
happened and what to do, and the exit status (0 success, 2 bad input, 130/143 a signal,
1 everything else). A traceback only with AERUN_DEBUG=1 or HYDRA_FULL_ERROR=1."""

from __future__ import annotations

import os
import sys
import traceback

from aerun.errors import STORAGE_ERRNOS, AerunError, Interrupted, OutOfMemory, storage_error

PROG = "aerun"
DEBUG_VARIABLES = ("AERUN_DEBUG", "HYDRA_FULL_ERROR")


def debug() -> bool:
    """Whether the user asked for tracebacks (aerun.launch sets HYDRA_FULL_ERROR only while
    Hydra runs, and puts the user's value back)."""
    return any(os.environ.get(v, "") not in ("", "0") for v in DEBUG_VARIABLES)


def say(message: str) -> None:
    """`aerun: error: <message>` as one line on stderr."""
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    text = str(exc)
    return name == "OutOfMemoryError" or (isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text))


def classify(exc: BaseException, hint: str = "") -> tuple[int, str]:
    """(exit status, one line) for an exception that ended a command; `hint` is what the
    command can add (e.g. how to resume)."""
    hint = hint or getattr(exc, "hint", "")
    if isinstance(exc, Interrupted):
        return exc.exit_code, f"stopped by {exc.signal_name}{' ' + exc.where if exc.where else ''}{hint}"
    if isinstance(exc, KeyboardInterrupt):
        return 130, f"stopped by SIGINT{hint}"
    if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
        exc = storage_error(exc, f"writing {exc.filename}" if exc.filename else "an I/O operation")
        exc.hint = hint
    if is_out_of_memory(exc) and not isinstance(exc, AerunError):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        exc = OutOfMemory(f"out of memory ({first}); lower trainer.batch_size or trainer.eval_batch_size "
                          f"(or batch_size for the commands that read a run)")
        exc.hint = hint
    if isinstance(exc, AerunError):
        return exc.exit_code, f"{exc}{hint if hint not in str(exc) else ''}"
    first = (str(exc).strip().splitlines() or [""])[0]
    return 1, (f"internal error: {type(exc).__name__}: {first} -- this is a bug in aerun; "
               f"run again with AERUN_DEBUG=1 for the traceback")


LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator",
             "DistBackendError", "ProcessGroupGloo", "Socket Timeout")


def _rank() -> int | None:
    """This process's rank when torchrun started several, else None."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        return int(os.environ.get("RANK", "0") or 0)
    return None


def report(exc: BaseException, hint: str = "") -> int:
    """Print the one line (and the traceback when asked for); returns the exit status. Under
    torchrun the line names the rank; a rank stopped because the ranks agreed to stop (a signal,
    a divergence rank 0 reports) exits quietly, so a fault reads as one message."""
    rank = _rank()
    if rank is not None and any(marker in f"{type(exc).__name__}: {exc}" for marker in LOST_PEER):
        from aerun.errors import AerunError as _Error

        exc = _Error("stopped: lost contact with another rank, which failed or was stopped first "
                     "(its own line says why)")
    code, line = classify(exc, hint)
    if getattr(exc, "quiet", False) or (rank not in (None, 0) and isinstance(exc, Interrupted)):
        return code
    if rank is not None:
        line = f"rank {rank}: {line}"
    if debug() and not isinstance(exc, (Interrupted, KeyboardInterrupt)):
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    if isinstance(exc, (Interrupted, KeyboardInterrupt)):
        print(f"{PROG}: {' '.join(line.split())}", file=sys.stderr, flush=True)
    else:
        say(line)
    return code
