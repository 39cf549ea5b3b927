"""One exception type for everything a user can get wrong.

The CLI turns a `UserError` into one line on stderr and exit status 2; anything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input (config, files, run directory), not with aerun."""


class DivergenceError(UserError):
    """Training produced a non-finite loss; the message says where and what to try."""
