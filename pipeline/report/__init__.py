"""Tables, figures and the report page, from the results tables only (never Ray or MLflow state)."""

from __future__ import annotations

import functools
import sys
from pathlib import Path


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


def save_figure(fig, out: Path, name: str, note: str) -> list[Path]:
    """``<out>/<name>.png`` and ``.pdf`` of ``fig``, with ``note`` (how its numbers were obtained)
    just above the first panel's title, wherever the layout puts it; closes the figure."""
    import matplotlib.pyplot as plt

    fig.axes[0].annotate(note, xy=(0, 1), xycoords="axes fraction", xytext=(0, 20), textcoords="offset points",
                         fontsize=7, color="0.35", ha="left", va="bottom", annotation_clip=False)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    for path in paths:
        fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return paths
