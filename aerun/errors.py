"""The ways an aerun command can fail, each with its exit status.

Every one of them reaches the user as one line on stderr (see `aerun.launch`): 2 for bad
input, 130/143 for a signal, 1 for everything else (an I/O error, out of memory, a bug).
"""

from __future__ import annotations

import errno
import signal


class AerunError(Exception):
    """A failure aerun can explain in one line; `exit_code` is the process's exit status,
    `hint` what the one line adds about what to do next (set by whoever knows, e.g. how to
    resume the run that failed)."""

    exit_code = 1
    hint = ""


class UserError(AerunError):
    """A problem with the user's input (config, files, run directory), not with aerun."""

    exit_code = 2


class ResumeRefused(UserError):
    """A resume that does not fit the run: the run is left exactly as it was, its status too
    (a sweep job marked failed would start afresh at the next resume, deleting its last.pt)."""


class DivergenceError(UserError):
    """Training produced a non-finite loss; the message says where and what to try."""


class StorageError(AerunError):
    """The disk refused a write or a read: full, read-only, no permission, an I/O error."""


class OutOfMemory(AerunError):
    """The device (or the host) had no memory left for a batch."""


class Interrupted(BaseException):
    """A signal asked the process to stop. A BaseException, like KeyboardInterrupt, so that no
    `except Exception` on the way up mistakes it for a failure of the work being done."""

    hint = ""

    def __init__(self, signum: int, where: str = ""):
        self.signum = int(signum)
        self.where = where
        super().__init__(f"stopped by {self.signal_name}{' ' + where if where else ''}")

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


STORAGE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EROFS: "the file system is read-only",
                  errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                  errno.EIO: "an input/output error", errno.EDQUOT: "the disk quota is exceeded"}


def storage_error(exc: OSError, doing: str) -> StorageError:
    """An OSError while `doing` ("writing outputs/run/last.pt") as one StorageError line."""
    what = STORAGE_ERRNOS.get(exc.errno, exc.strerror or type(exc).__name__)
    where = f" ({exc.filename})" if getattr(exc, "filename", None) and str(exc.filename) not in doing else ""
    return StorageError(f"could not finish {doing}: {what}{where}")
