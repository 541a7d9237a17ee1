"""The learning curves: test error against training iterations, log-x, one panel per paper table.

    python -m pipeline.report.curves --results results/table1.parquet ... --grids config/grids/table1.yaml ... \
        --paper config/paper_results.csv --protocol config/protocol.csv --reference reports/reference --out reports/figures

Each model is a line: our mean over seeds at each evaluation (``pipeline.results.curves``), with
the seeds' range as a band. The paper's value (one run) is a star at the paper's budget: the grid's
own iterations, which the paper profile trains; hollow where ``config/protocol.csv`` says the paper
does not state them. A reference run (``pipeline.reference``) is crosses on a dotted line, its mean
over seeds, with its seeds' range as a bar. A grid with several noise levels shows one in its panel
(the experiment's default, else the middle one) and says which. A reader sees which models are
still falling where ours end, and how far they are from the paper's value.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from pipeline.report.markup import one_line, plain_figures

plain_figures()  # before pyplot: no display, and every text drawn as plain text
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogFormatter  # noqa: E402

from icstn import experiments  # noqa: E402
from pipeline import grids, reference, results, schema  # noqa: E402
from pipeline.grids import Grid  # noqa: E402
from pipeline.provenance import counted  # noqa: E402
from pipeline.report import one_line_errors, paper, save_figure  # noqa: E402
from pipeline.trial import setting_text  # noqa: E402

NOTE_WIDTH = 160  # characters of a provenance line at 7 pt: within the panels and their legends
NAME = "learning_curves"  # reports/figures/learning_curves.{png,pdf}
CAPTION = (
    "Learning curves: test error against training iterations, both axes logarithmic, one panel per table. Line: our mean over "
    "seeds at each evaluation (log-spaced steps and the last), capacity (b) lighter and dashed; band: the seeds' range, lowest "
    "to highest. Star: the paper's value (one run) at the paper's budget, hollow where the paper does not state its budget and "
    "the paper profile's is used. Crosses on a dotted line: the reference (GPU) run's mean over seeds, its seeds' range as a "
    "bar; plus signs on a dash-dotted line: the reference (CPU) run's. Dashed: chance. The lines above the panels say how "
    "each was obtained (profile, iterations, seeds, device)."
)


def shown_sigma(df: pd.DataFrame, experiment: str) -> float:
    """The noise level a panel shows: the experiment's default where the grid has it, else the middle one."""
    sigmas = sorted(df.sigma_px.unique())
    default = experiments.get(experiment).defaults["sigma_px"]
    return default if default in sigmas else sigmas[len(sigmas) // 2]


def _series(df: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(model, legend label, points) per model and any other setting the grid sweeps, in the table's order."""
    points = results.curves(df)
    swept = [k for k in results.SETTINGS[1:] if k in points and points[k].nunique(dropna=False) > 1]
    out = []
    for values, g in points.groupby(["model", *swept], sort=False, dropna=False):
        values = values if isinstance(values, tuple) else (values,)
        out.append((values[0], " ".join([values[0], *(setting_text(k, v) for k, v in zip(swept, values[1:]))]), g))
    return out


def _styles(models: list[str]) -> dict[str, dict]:
    """A hue per model family and unroll count; capacity (b) in its lighter shade and dashed, so
    that its paper star and reference crosses are told from (a)'s too."""
    bases = list(dict.fromkeys(m.split("(")[0] for m in models))
    cmap = plt.get_cmap("tab20")  # pairs: a dark shade, then a light one
    out = {}
    for m in models:
        light = m.endswith("(b)")
        out[m] = {"color": cmap((2 * bases.index(m.split("(")[0]) + light) % 20), "ls": "--" if light else "-"}
    return out


def _spread(points: pd.DataFrame) -> pd.DataFrame:
    """Per step: the mean, lowest and highest value over seeds (a diverged seed's NaN left out)."""
    return points.groupby("step").value.agg(["mean", "min", "max"]).dropna()


REF_STYLE = {"GPU": "x:", "CPU": "+-."}  # a reference's marks and line, by kind


def panel(ax, df: pd.DataFrame, grid: Grid, theirs: pd.DataFrame | None, budget: tuple[int, bool], ref: tuple | None) -> str:
    """Draw one table's curves on ``ax`` (``theirs``: the paper's rows, ``paper.paper_rows``; ``budget``:
    ``paper.budget``; ``ref``: ``reference.loaded``'s, {kind: (table, provenance)}); returns its provenance line."""
    exp = experiments.get(grid.experiment)
    sigma = shown_sigma(df, grid.experiment)
    ours = df[df.sigma_px == sigma]
    styles = _styles(list(dict.fromkeys([*grid.models, *ours.model])))  # a model's colour is the same whatever a run trained
    drawn = set(ours.model)  # the reference's and the paper's points of these models
    for model, label, points in _series(ours):
        s, style = _spread(points), styles[model]
        ax.plot(s.index, s["mean"], marker=".", ms=3, lw=1.3, label=label, **style)
        ax.fill_between(s.index, s["min"], s["max"], color=style["color"], alpha=0.15, lw=0)
    for kind, (table, _) in (ref or {}).items():
        for model, _, points in _series(table[table.sigma_px == sigma]):
            if model in drawn:
                s = _spread(points)
                bar = [s["mean"] - s["min"], s["max"] - s["mean"]]
                ax.errorbar(s.index, s["mean"], yerr=bar, fmt=REF_STYLE[kind], color=styles[model]["color"], ms=5, lw=0.8, elinewidth=0.8,
                            capsize=2)  # fmt: skip
    at, stated = budget
    if theirs is not None:
        mine = theirs[theirs.sigma_px == sigma] if theirs.sigma_px.nunique() > 1 else theirs
        for row in mine[mine.model.isin(drawn)].itertuples():
            color = styles[row.model]["color"]
            ax.plot([at], [row.paper], ls="none", marker="*", ms=11, mec=color, mfc=color if stated else "none", mew=1.2)
    if exp.chance_error is not None:
        ax.axhline(exp.chance_error, color="0.5", ls="--", lw=0.8)
    sigmas = sorted(df.sigma_px.unique())
    title = one_line(grid.heading).split(",")[0]  # a title on one line, as every format shows it
    title += f", σ = {sigma:g} px (of {', '.join(f'{x:g}' for x in sigmas)})" if len(sigmas) > 1 else ""
    ax.set(xscale="log", yscale="log", ylabel=exp.error_label)
    ax.xaxis.set_major_formatter(FuncFormatter(_count))
    ax.yaxis.set_major_formatter(_Plain())  # 0.1, 1, 10, 100, and the minor ticks between where a panel spans little
    ax.yaxis.set_minor_formatter(_Plain(minor_thresholds=(2, 0.5)))
    ax.set_title(title, fontsize=9, loc="left")
    ax.grid(alpha=0.3, which="both", lw=0.5)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, ncol=2 if len(styles) > 8 else 1)
    return _provenance(title.split(":")[0], df, ref, theirs is not None, at, stated)


class _Plain(LogFormatter):
    """The ticks LogFormatter labels, as plain numbers (0.3, not 3e-01)."""

    def __call__(self, x, pos=None):
        return f"{x:g}" if super().__call__(x, pos) else ""


def _count(x: float, _=None) -> str:
    """An axis' iterations: 1, 10, 100, 1,000, 10K, 100K, 1M."""
    return f"{x / 1e6:g}M" if x >= 1e6 else f"{x / 1e3:g}K" if x >= 1e4 else f"{x:,.0f}" if x >= 1 else f"{x:g}"


def _provenance(name: str, df: pd.DataFrame, ref: tuple | None, with_paper: bool, at: int, stated: bool) -> str:
    its = ", ".join(f"{int(i):,}" for i in sorted(df.iterations.unique()))
    seeds = counted(df.seed.nunique(), "seed")
    parts = [f"{name}", f"ours: profile {df.profile.iloc[0]}, {its} iterations, {seeds}, device {df.device.iloc[0]}"]
    for kind, (table, facts) in (ref or {}).items():
        its = ", ".join(f"{int(i):,}" for i in sorted(table.iterations.unique()))
        devices = ", ".join(sorted(table.device.unique()))
        seeds = counted(table.seed.nunique(), "seed")
        parts.append(f"{reference.label(kind)}: {facts['profile']} profile, {its} iterations, {seeds}, {devices} "
                     f"({reference.reached(facts)})")  # fmt: skip
    if with_paper:
        parts.append(f"paper: one run, at {at:,} iterations" + ("" if stated else " (the paper profile's; the paper does not say)"))
    return " · ".join(parts)


def _legend(fig) -> None:
    """What each mark means, once, below the panels."""
    handles = [
        Line2D([], [], color="0.2", marker=".", ms=3, label="ours: mean over seeds"),
        Patch(color="0.2", alpha=0.15, label="ours: seeds' range"),
        Line2D([], [], color="0.6", ls="--", label="capacity (b): lighter, dashed"),
        Line2D([], [], color="0.2", ls=":", marker="x", ms=5, label="reference (GPU): mean, range"),
        Line2D([], [], color="0.2", ls="-.", marker="+", ms=5, label="reference (CPU): mean, range"),
        Line2D([], [], ls="none", marker="*", ms=10, color="0.2", label="paper, at its stated budget"),
        Line2D([], [], ls="none", marker="*", ms=10, mec="0.2", mfc="none", label="paper, budget not stated"),
        Line2D([], [], color="0.5", ls="--", lw=0.8, label="chance"),
    ]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.45, 0.0), ncol=4, fontsize=7, frameon=False)


def draw(tables: list[tuple[Grid, pd.DataFrame]], paper_csv: str | Path | None = None, protocol_csv: str | Path | None = None,
         reference_root: str | Path | None = None):  # fmt: skip
    """The figure of ``tables`` ((grid, results table) each), a panel each in that order, and its
    provenance note."""
    fig, axes = plt.subplots(len(tables), 1, figsize=(9.5, 3.1 * len(tables) + 0.4), sharex=True, squeeze=False)
    notes = []
    for ax, (grid, df) in zip(axes[:, 0], tables):
        theirs = paper.paper_rows(paper_csv, grid.paper_table) if paper_csv and grid.paper_table else None
        ref = reference.loaded(grid.name, reference_root) if reference_root else None
        notes.append(panel(ax, df, grid, theirs, paper.budget(grid, protocol_csv), ref))
    axes[-1, 0].set_xlabel("training iterations")
    axes[-1, 0].set_xlim(left=0.8)
    _legend(fig)
    fig.tight_layout()
    commits = ", ".join(sorted({str(c) for _, df in tables for c in df.git_commit.dropna().unique()}))
    return fig, "\n".join([*map(_wrap, notes), f"ours: commit {commits}"])


def _wrap(note: str, width: int = NOTE_WIDTH) -> str:
    """A panel's provenance line broken between its parts (' · '), each line at most ``width``
    characters where a part allows: a long line would widen the whole figure, not the note."""
    lines = []
    for part in note.split(" · "):
        if lines and len(lines[-1]) + 3 + len(part) <= width:
            lines[-1] += " · " + part
        else:  # a part longer than a line itself (a reference's whole state) is broken between its words
            first = "" if not lines else "    · "
            lines += textwrap.wrap(part, width, initial_indent=first, subsequent_indent="      ")
    return "\n".join(lines)


def render(result_paths: list[Path], grid_files: list[Path], out: str | Path, paper_csv: str | Path | None = None,
           protocol_csv: str | Path | None = None, reference_root: str | Path | None = None) -> list[Path]:  # fmt: skip
    """``<out>/learning_curves.{png,pdf}``: a panel per grid with a paper table, in the paper's order
    (every grid's, where none has one); returns the paths."""
    by_name = {Path(g).stem: Path(g) for g in grid_files}
    tables = []
    for path in map(Path, result_paths):
        if path.stem not in by_name:
            raise ValueError(f"{path}: no grid file among --grids is named {path.stem}.yaml; give each results table its grid")
        tables.append((grids.load_grid(by_name[path.stem]), results.read(path)))
    if any(g.paper_table for g, _ in tables):
        tables = sorted([(g, df) for g, df in tables if g.paper_table], key=lambda t: t[0].paper_table)
    fig, note = draw(tables, paper_csv, protocol_csv, reference_root)
    return save_figure(fig, Path(out), NAME, note)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", nargs="+", required=True)
    parser.add_argument("--grids", nargs="+", required=True, help="the grid file of each results table")
    parser.add_argument("--paper", default=schema.default("paper_results"))
    parser.add_argument("--protocol", default="config/protocol.csv", help="says where the paper states its budget")
    parser.add_argument("--reference", default=str(reference.ROOT), help="reference runs (their points beside ours)")
    parser.add_argument("--out", default="reports/figures")
    args = parser.parse_args(argv)
    for path in render(args.results, args.grids, args.out, args.paper, args.protocol, args.reference):
        print(path, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
