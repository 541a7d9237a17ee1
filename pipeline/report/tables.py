"""Results tables -> report tables (Markdown, CSV, LaTeX), ours beside the paper's.

    python -m pipeline.report.tables --results results/table2.parquet --grid config/grids/table2.yaml \
        --paper config/paper_results.csv --out reports/tables

Ours are mean +- std over seeds (n = seeds), at the number of warps the model was trained with.
A grid with ``paper_table`` gets the paper's value, the difference and, for Tables 2 and 3,
both capacities. Any other grid gets a table of its own settings.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from icstn import experiments
from pipeline import grids, results


def summarize(df: pd.DataFrame, metric: str = "test_error") -> pd.DataFrame:
    """Mean, std and count over seeds of ``metric`` at the trained unroll count."""
    rows = df[(df.metric == metric) & (df.n_warps_test == df.n_warps_train)]
    keys = ["model", "sigma_px", "noise_warp", "capacity"]
    out = rows.groupby(keys, sort=False)["value"].agg(ours_mean="mean", ours_std="std", n_seeds="count").reset_index()
    out["ours_std"] = out["ours_std"].fillna(0.0)
    return out


def paper_rows(paper_csv: str | Path, table: int) -> pd.DataFrame:
    paper = pd.read_csv(paper_csv)
    paper = paper[paper.table == table].copy()
    paper["model"] = paper.model + paper.setting.fillna("").map(lambda s: f"({s})" if s else "")
    return paper.rename(columns={"value": "paper", "capacity": "paper_capacity"})[["model", "sigma_px", "paper", "paper_capacity"]]


def build(df: pd.DataFrame, grid: dict, paper_csv: str | Path | None) -> pd.DataFrame:
    """The report table of one grid (numbers, not yet formatted)."""
    table = summarize(df)
    order = {m: i for i, m in enumerate(grid["models"])}
    if grid.get("paper_table") and paper_csv:
        paper = paper_rows(paper_csv, grid["paper_table"])
        table = table.merge(paper, on=["model", "sigma_px"], how="left")
        table["diff"] = table.ours_mean - table.paper
        if experiments.is_alignment(grid["experiment"]):  # the unaligned input, so that a reader can calibrate
            first = df[df.model == grid["models"][0]]  # every model sees the same perturbations
            base = summarize(first, "baseline_error").assign(model="unaligned input", capacity=0)
            table = pd.concat([table, base], ignore_index=True)
            order["unaligned input"] = len(order)
    table["_order"] = table.model.map(order)
    by = ["sigma_px", "_order"] if experiments.is_alignment(grid["experiment"]) else ["_order", "sigma_px"]
    return table.sort_values(by).drop(columns="_order")


def _fmt(x, digits=3) -> str:
    return "" if pd.isna(x) else f"{x:.{digits}f}"


def formatted(table: pd.DataFrame, grid: dict) -> pd.DataFrame:
    """Human-readable columns: 'ours' as mean ± std (n), capacities as integers."""
    out = pd.DataFrame({"model": table.model})
    alignment = experiments.is_alignment(grid["experiment"])
    if table.sigma_px.nunique() > 1 or alignment:
        out["σ (px)"] = table.sigma_px.map(lambda s: f"{s:g}")
    if table.noise_warp.nunique() > 1:
        out["noise"] = table.noise_warp
    if "paper" in table:
        out["paper"] = table.paper.map(_fmt)
    out["ours (mean ± std, n seeds)"] = [f"{m:.3f} ± {s:.3f} ({n})" for m, s, n in zip(table.ours_mean, table.ours_std, table.n_seeds)]
    if "diff" in table:
        out["ours − paper"] = table["diff"].map(lambda d: "" if pd.isna(d) else f"{d:+.3f}")
    if not alignment:
        out["capacity"] = table.capacity.map(lambda c: f"{int(c):,}")
        if "paper_capacity" in table:
            out["paper capacity"] = table.paper_capacity.map(lambda c: "" if pd.isna(c) else f"{int(c):,}")
    return out.reset_index(drop=True)


def to_markdown(table: pd.DataFrame, caption: str) -> str:
    head = "| " + " | ".join(table.columns) + " |"
    rule = "| " + " | ".join("---" for _ in table.columns) + " |"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join([head, rule, *body, "", caption, ""])


def to_latex(table: pd.DataFrame, caption: str) -> str:
    def esc(s):
        return str(s).replace("±", r"$\pm$").replace("−", "$-$").replace("σ", r"$\sigma$").replace("%", r"\%").replace("_", r"\_")

    cols = "l" + "r" * (len(table.columns) - 1)
    lines = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{{cols}}}", r"\hline"]
    lines.append(" & ".join(esc(c) for c in table.columns) + r" \\ \hline")
    lines += [" & ".join(esc(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    lines += [r"\hline", r"\end{tabular}", rf"\caption{{{esc(caption)}}}", r"\end{table}", ""]
    return "\n".join(lines)


def caption(df: pd.DataFrame, grid: dict) -> str:
    unit = experiments.get(grid["experiment"]).error_unit
    it = sorted(df.iterations.unique())
    scales = sorted(df.lr_scale.unique()) if "lr_scale" in df else [1.0]
    scaled = "" if scales == [1.0] else f", learning rates x{'/'.join(f'{s:g}' for s in scales)} the grid's (the profile's lr_scale)"
    return (
        f"{grid.get('title', grid['name'])}. Ours: {unit}, mean ± std over seeds; profile {df.profile.iloc[0]}, "
        f"{', '.join(map(str, it))} iterations, batch {df.batch_size.iloc[0]}{scaled}, "
        f"{', '.join(map(str, sorted(df.test_samples.unique())))} test samples, device {df.device.iloc[0]}, commit {df.git_commit.iloc[0]}."
    )


def render(results_path: str | Path, grid_path: str | Path, out: str | Path, paper_csv: str | Path | None) -> list[Path]:
    """Write ``<out>/<grid>.{md,csv,tex}``; returns the paths."""
    df = results.read(results_path)
    grid = grids.load_grid(grid_path)
    table = build(df, grid, paper_csv)
    pretty, cap = formatted(table, grid), caption(df, grid)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{grid['name']}.{ext}" for ext in ("md", "csv", "tex")]
    paths[0].write_text(f"# {grid.get('title', grid['name'])}\n\n" + to_markdown(pretty, cap))
    table.to_csv(paths[1], index=False, float_format="%.4f")
    paths[2].write_text(to_latex(pretty, cap))
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", required=True)
    parser.add_argument("--grid", required=True)
    parser.add_argument("--paper", default="config/paper_results.csv")
    parser.add_argument("--out", default="reports/tables")
    args = parser.parse_args(argv)
    for path in render(args.results, args.grid, args.out, args.paper):
        print(path, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
