"""Tables, figures and the report page, from the results tables only (never Ray or MLflow state)."""

from __future__ import annotations

import functools
import sys


def one_line_errors(main):
    """A report command's ``main``, whose missing or damaged input (ValueError, OSError: each names
    the file and what to do) ends in one ``error:`` line and exit status 2, not a traceback."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return wrapped
