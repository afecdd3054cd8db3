"""The single exception family of tilewise.

Every user-facing failure is a :class:`TilewiseError`. The CLI turns one into a
single ``Error: ...`` line and an exit code; the library raises them unchanged.
"""

from __future__ import annotations


class TilewiseError(Exception):
    """Base of every error tilewise raises on purpose.

    Parameters
    ----------
    message
        What went wrong, naming the offending value.
    hint
        How to fix it; appended to the message after ``" - "``.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} - {hint}" if hint else message)


class UsageError(TilewiseError):
    """Bad options or arguments (a value the user typed)."""


class InputError(TilewiseError):
    """An input file or folder is missing, unreadable or not what was expected."""


class GridMismatchError(InputError):
    """Inputs that must share a pixel grid do not."""


class ExpressionError(UsageError):
    """An expression could not be parsed or refers to unknown names."""


class OutputError(TilewiseError):
    """The output cannot be written (exists, unwritable, locked, changed job)."""


class RunFailedError(TilewiseError):
    """The run started but some tasks failed after their retries."""

    exit_code = 1
