"""Results tables -> report tables (Markdown, CSV, LaTeX), ours beside the paper's.

    python -m pipeline.report.tables --results results/table2.parquet --grid config/grids/table2.yaml \
        --paper config/paper_results.csv --out reports/tables

Ours are mean +- std over seeds (n = seeds), at the number of warps the model was trained with.
A grid with ``paper_table`` gets the paper's value and the agreement (``agreement``): our 95%
prediction interval for a single run, whether it holds the paper's value, the difference in standard errors; and, for
Tables 2 and 3, both capacities. Any other grid gets a table of its own settings.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from icstn import experiments
from pipeline import grids, reference, results, schema
from pipeline.grids import Grid
from pipeline.report import agreement, one_line_errors
from pipeline.report.markup import md_text, tex_text
from pipeline.report.paper import paper_rows

CALIBRATION = {"baseline_error": "unaligned input", "linear_error": "linear least squares, one step"}


def summarize(df: pd.DataFrame, metric: str = "test_error", upper: float = math.inf, chance: float | None = None) -> pd.DataFrame:
    """Per model and setting, ``metric`` over seeds at the trained unroll count (``agreement.cell``;
    ``upper``: the largest value the metric can take, 100 for a percentage; ``chance``: a
    classifier's chance error, which marks dead seeds)."""
    rows = df[(df.metric == metric) & (df.n_warps_test == df.n_warps_train)]
    keys = ["model", *[k for k in results.SETTINGS if k in rows], "capacity"]
    groups = rows.groupby(keys, sort=False, dropna=False)
    cells = [{**dict(zip(keys, group)), **agreement.cell(g.value, upper, chance)} for group, g in groups]
    return pd.DataFrame(cells, columns=[*keys, "ours_mean", "ours_std", "n_seeds", "diverged", "dead", "se", "pi_low", "pi_high"])


def _prefix(kind: str) -> str:
    """The columns of a reference of ``kind``: ref_mean, ... (GPU), ref_cpu_mean, ... (CPU)."""
    return "ref_" if kind == "GPU" else f"ref_{kind.lower()}_"


def build(df: pd.DataFrame, grid: Grid, paper_csv: str | Path | None, ref: pd.DataFrame | dict | None = None) -> pd.DataFrame:
    """The report table of one grid (numbers, not yet formatted), with the agreement columns and,
    where the grid has reference runs (``pipeline.reference``; ``ref``: a GPU's table, or {kind:
    table}), each one's mean, std and seeds."""
    alignment = experiments.is_alignment(grid.experiment)
    upper = math.inf if alignment else 100.0  # classification errors are percentages
    chance = experiments.get(grid.experiment).chance_error
    table = summarize(df, upper=upper, chance=chance)
    for kind, frame in (ref if isinstance(ref, dict) else {"GPU": ref} if ref is not None else {}).items():
        on = ["model", "sigma_px", *[k for k in results.SETTINGS[1:] if k in frame and frame[k].nunique() > 1]]
        theirs = summarize(frame, upper=upper, chance=chance)[[*on, "ours_mean", "ours_std", "n_seeds", "dead"]]
        p = _prefix(kind)
        theirs = theirs.rename(columns={"ours_mean": f"{p}mean", "ours_std": f"{p}std", "n_seeds": f"{p}n", "dead": f"{p}dead"})
        table = table.merge(theirs, on=on, how="left")
    order = {m: i for i, m in enumerate(grid.models)}
    if grid.paper_table and paper_csv:
        paper = paper_rows(paper_csv, grid.paper_table)
        # the paper's noise levels where it has several (Table 1); else its one, whatever ours is in pixels
        on = ["model", "sigma_px"] if paper.sigma_px.nunique() > 1 else ["model"]
        table = agreement.compare(table.merge(paper if len(on) == 2 else paper.drop(columns="sigma_px"), on=on, how="left"))
        if alignment:  # calibration rows: every model sees the same test perturbations
            first = df[df.model == grid.models[0]]
            for metric, label in CALIBRATION.items():
                if (first.metric == metric).any():
                    table = pd.concat([table, summarize(first, metric).assign(model=label, capacity=0)], ignore_index=True)
                    order[label] = len(order)
    table["_order"] = table.model.map(order)
    by = ["sigma_px", "_order"] if alignment else ["_order", "sigma_px"]
    return table.sort_values(by, kind="stable").drop(columns="_order").reset_index(drop=True)


#: from here on a number is written with an exponent (1.23e+06): 1e308 in fixed point is 309 digits
LARGE = 1e6


def _fmt(x, digits: int = 3, sign: str = "") -> str:
    """A table's number: fixed point with ``digits`` decimals, or ``digits`` significant digits and an
    exponent where it is at least LARGE; '' where missing; ``sign``: '+' to sign it always."""
    if pd.isna(x):
        return ""
    return f"{x:{sign}.{digits}g}" if math.isfinite(x) and abs(x) >= LARGE else f"{x:{sign}.{digits}f}"


def _ours(mean, std, n, diverged, dead=0) -> str:
    text = f"{_fmt(mean)} ± {_fmt(std)} ({n})" if n else "diverged"
    return text + (f", {diverged} diverged" if diverged and n else "") + (f", {dead} dead" if dead else "")


def formatted(table: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """Human-readable columns: 'ours' as mean ± std (n seeds), the paper's value, the agreement."""
    out = pd.DataFrame({"model": table.model})
    alignment = experiments.is_alignment(experiment)
    if table.sigma_px.nunique() > 1 or alignment:
        out["σ (px)"] = table.sigma_px.map(lambda s: f"{s:g}")
    for key, label in (("noise_warp", "noise"), ("init", "init"), ("lr_geometric", "geometric rate")):
        if key in table and table[key].nunique() > 1:
            out[label] = table[key].map(lambda v: f"{v:g}" if isinstance(v, float) else str(v))
    if "paper" in table:
        out["paper"] = table.paper.map(_fmt)
    for kind in reference.KINDS:
        p = _prefix(kind)
        if f"{p}mean" in table:
            out[reference.label(kind)] = [_ours(m, sd, int(n), 0, int(d)) if pd.notna(m) else ""  # n: a float beside missing cells
                                          for m, sd, n, d in zip(*(table[p + c] for c in ("mean", "std", "n", "dead")))]  # fmt: skip
    out["ours (mean ± std, n)"] = [_ours(*row) for row in zip(table.ours_mean, table.ours_std, table.n_seeds, table.diverged, table.dead)]
    # every grid's, as its caption says: an ablation's reader compares settings by them
    out["95% prediction interval"] = [f"[{_fmt(lo)}, {_fmt(hi)}]" if pd.notna(lo) else "" for lo, hi in zip(table.pi_low, table.pi_high)]
    if "paper" in table:
        out["ours − paper (SE)"] = [
            "" if pd.isna(d) else _fmt(d, sign="+") + (f" ({_fmt(z, 1, '+')})" if pd.notna(z) and abs(z) != float("inf") else "")
            for d, z in zip(table["diff"], table.diff_se)
        ]
        out["agrees"] = table.agrees.map(lambda a: "" if pd.isna(a) else ("yes" if a else "no"))
    if not alignment:
        out["capacity"] = table.capacity.map(lambda c: f"{int(c):,}")
        if "paper_capacity" in table:
            out["paper capacity"] = table.paper_capacity.map(lambda c: "" if pd.isna(c) else f"{int(c):,}")
    return out.reset_index(drop=True)


def to_markdown(table: pd.DataFrame, caption: str, heading: str | None = None) -> str:
    """The table as Markdown, every cell and the caption (and ``heading``, a title above) shown as plain text."""
    body = table.rename(columns=md_text).map(md_text).to_markdown(index=False, disable_numparse=True)
    top = f"# {md_text(heading, line_start=True)}\n\n" if heading is not None else ""
    return f"{top}{body}\n\n{md_text(caption, line_start=True)}\n"


def to_latex(table: pd.DataFrame, caption: str) -> str:
    """The table as a LaTeX float, every cell and the caption shown as plain text."""
    styler = table.rename(columns=tex_text).map(tex_text).style.hide(axis="index")
    return styler.to_latex(caption=tex_text(caption), position="t", position_float="centering", hrules=True,
                           column_format="l" + "r" * (len(table.columns) - 1))  # fmt: skip


def notes(table: pd.DataFrame, experiment: str) -> str:
    """What a reader of the table (``build``'s) must know before comparing its cells: those at chance,
    and that none is judged where no cell has the seeds ('' where neither)."""
    out = []
    chance = experiments.get(experiment).chance_error
    ours = table[~table.model.isin(CALIBRATION.values())]
    at_chance = int((ours.ours_mean >= chance).sum()) if chance is not None else 0
    if at_chance:
        out.append(f"{at_chance} of {len(ours)} cells are at chance (a mean error of at least {chance:g}%, that of always answering "
                   "the commonest class): those models learnt nothing at this budget, and their order is noise.")  # fmt: skip
    if "paper" in table and ours.paper.notna().any() and not (ours.n_seeds >= agreement.MIN_SEEDS).any():
        out.append(f"No cell is judged against the paper: each has fewer than {agreement.MIN_SEEDS} seeds, which leaves 'agrees' "
                   "and the SE empty; the difference alone is shown.")  # fmt: skip
    return " ".join(out)


def caption(df: pd.DataFrame, grid: Grid) -> str:
    unit = experiments.get(grid.experiment).error_unit
    it = sorted(df.iterations.unique())
    scales = sorted(df.lr_scale.unique()) if "lr_scale" in df else [1.0]
    scaled = "" if scales == [1.0] else f", learning rates x{'/'.join(f'{s:g}' for s in scales)} the grid's (the profile's lr_scale)"
    return (
        f"{grid.heading}. Ours: {unit}, mean ± std over n seeds (diverged runs and dead seeds, "
        f"which stayed at chance, counted and left out), 95% prediction interval for a single run, t·s·√(1 + 1/n); "
        f"profile {df.profile.iloc[0]}, "
        f"{', '.join(map(str, it))} iterations, batch {', '.join(map(str, sorted(df.batch_size.unique())))}{scaled}, "
        f"{', '.join(map(str, sorted(df.test_samples.unique())))} test samples, device {df.device.iloc[0]}, commit {df.git_commit.iloc[0]}."
    )


def render(
    results_path: str | Path, grid_path: str | Path, out: str | Path, paper_csv: str | Path | None, reference_root: str | Path | None = None
) -> list[Path]:
    """Write ``<out>/<grid>.{md,csv,tex}``; returns the paths."""
    df = results.read(results_path)
    grid = grids.load_grid(grid_path)
    refs = reference.loaded(grid.name, reference_root) if reference_root else {}
    facts = reference.all_facts(grid.name, reference_root) if reference_root else {}
    table = build(df, grid, paper_csv, {kind: ref[0] for kind, ref in refs.items()})
    # each reference's progress: its column holds only the trials that finished
    pretty, cap = formatted(table, grid.experiment), caption(df, grid)
    for kind, f in facts.items():
        cap += f" {reference.note(f)}." + (f" {reference.column(refs[kind][0])}." if kind in refs else "")
    cap += f" {notes(table, grid.experiment)}" if notes(table, grid.experiment) else ""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{grid.name}.{ext}" for ext in ("md", "csv", "tex")]
    paths[0].write_text(to_markdown(pretty, cap, grid.heading))
    table.to_csv(paths[1], index=False, float_format="%.4f")
    paths[2].write_text(to_latex(pretty, cap))
    return paths


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", required=True)
    parser.add_argument("--grid", required=True)
    parser.add_argument("--paper", default=schema.default("paper_results"))
    parser.add_argument("--out", default="reports/tables")
    parser.add_argument("--reference", default=str(reference.ROOT), help="reference runs (a column where a grid has one)")
    args = parser.parse_args(argv)
    for path in render(args.results, args.grid, args.out, args.paper, args.reference):
        print(path, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
