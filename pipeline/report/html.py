"""One page with every table and figure and the run's provenance: ``reports/index.html``.

    python -m pipeline.report.html --results results/table1.parquet ... --grids config/grids/table1.yaml ... \
        --data data/processed --out reports/index.html
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import pandas as pd

from icstn import experiments
from pipeline import fetch, grids, reference, results, schema
from pipeline.files import write_text
from pipeline.provenance import counted
from pipeline.report import agreement, curves, one_line_errors, paper, tables
from pipeline.report import figures as figures_
from pipeline.report.figures import FIGURES
from pipeline.report.markup import Markup, join, markup
from pipeline.report.markup import table as html_table

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
     color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em} th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3} td:first-child,th:first-child{text-align:left}
.banner{background:#fff4d6;border:1px solid #e0b84c;padding:.7em 1em;border-radius:6px;font-weight:600}
.caption{color:#555;font-size:.88em} figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee}
.note{background:#eef4fb;border-left:4px solid #6a9fd8;padding:.4em .8em}
code{background:#f5f5f5;padding:0 .25em} .muted{color:#777;font-size:.85em}
"""


def _provenance(frames: list[pd.DataFrame], data_root: Path) -> pd.DataFrame:
    df = pd.concat(frames, ignore_index=True)
    rows = {
        "profile": ", ".join(sorted(df.profile.unique())),
        "iterations": "; ".join(f"{g}: {', '.join(map(str, sorted(d.iterations.unique())))}" for g, d in df.groupby("grid")),
        "seeds per model": "; ".join(f"{g}: {d.seed.nunique()}" for g, d in df.groupby("grid")),
        "test samples": "; ".join(f"{g}: {', '.join(map(str, sorted(d.test_samples.unique())))}" for g, d in df.groupby("grid")),
        "learning-rate scale": "; ".join(f"{g}: x{d.lr_scale.iloc[0]:g}" for g, d in df.groupby("grid") if "lr_scale" in d),
        "device": ", ".join(sorted(df.device.unique())),
        "training step": "; ".join(
            f"{g}: {', '.join(map(str, sorted(d.models_per_step.dropna().unique().astype(int))))} models per step"
            + (", CUDA graph" if d.cuda_graph.fillna(False).any() else "")
            + (", TF32" if d.tf32.fillna(False).any() else "")
            for g, d in df.groupby("grid")
        ),
        "git commit": ", ".join(sorted(df.git_commit.dropna().unique())),
        "versions": ", ".join(f"{k} {df[k].iloc[0]}" for k in ("python", "torch", "ray", "mlflow")),
        "data fetched from": ", ".join(sorted(df.data_fetched_from.unique())),
        "rendered": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    for exp in sorted(df.experiment.unique()):
        manifest = data_root / exp / "manifest.json"
        if manifest.is_file():
            m = json.loads(manifest.read_text())
            rows[f"{exp} data"] = f"{m['counts']['train']:,} train / {m['counts']['test']:,} test; {m['preprocessing']}"
    return pd.DataFrame({"": list(rows), "value": list(rows.values())})


def _scorecard(cards: list[tuple[str, str, pd.DataFrame, pd.DataFrame]]) -> str:
    """One line per table with the paper's numbers (and per reference run of one): how far the
    ordering and the values agree. ``cards``: (anchor, label, built table, results frame)."""
    rows = []
    for anchor, label, table, df in cards:
        card = agreement.scorecard(table, experiments.get(df.experiment.iloc[0]).chance_error)
        judged = f"not judged (< {agreement.MIN_SEEDS} seeds)"
        if card["judged"]:
            judged = f"{card['agree']} of {card['judged']} ({card['fraction']:.0%})"
        chance = "n/a" if card["at_chance"] is None else f"{card['at_chance']} of {card['rows']}"
        rows.append({
            "table": markup("<a href='#{}'>{}</a>", anchor, label),
            "Kendall's τ (p, cells)": "n/a" if card["tau"] != card["tau"] else f"{card['tau']:+.2f} (p = {card['p']:.2g}, {card['cells']})",
            "cells at chance": chance,
            "cells in agreement": judged,
            "median |ours − paper|": f"{card['median_abs_diff']:.3g}",
            "diverged runs": card["diverged"],
            "dead seeds": card["dead"],
            "profile": f"{df.profile.iloc[0]}, {', '.join(map(str, sorted(df.iterations.unique())))} iterations, "
                       f"{counted(df.seed.nunique(), 'seed')}",
        })  # fmt: skip
    if not rows:
        return Markup()
    chances = ", ".join(f"{e.name} {e.chance_error:g}%" for e in experiments.EXPERIMENTS.values() if e.chance_error is not None)
    note = markup("<p class='caption'>{}</p>",
                  "τ: Kendall's tau-b between the paper's values and our means over the cells both have (1: the "
                  "paper's ordering exactly), with its two-sided p-value, leaving out the cells at chance: a classifier whose mean "
                  f"error is no lower than always answering the test set's commonest class ({chances}) has learnt nothing, and its "
                  "rank among such models is noise (n/a: fewer than two cells left). The paper reports one run per cell, so a cell "
                  "agrees when our 95% prediction interval for a single run, t·s·√(1 + 1/n) around our mean over seeds, holds the "
                  f"paper's value; a cell with fewer than {agreement.MIN_SEEDS} seeds is not judged (with two, t alone is 12.7 and the "
                  "interval holds nearly anything). The median difference gives the scale. Diverged runs, and dead seeds (a seed "
                  f"within {agreement.DEAD_MARGIN:g} point of chance while the cell's other seeds learnt), are counted and left out of "
                  "the means. A reference (GPU) or reference (CPU) row scores a committed reference run, grown on GPU machines or "
                  "on CPUs, the same way.")  # fmt: skip
    return Markup("<h2>Scorecard</h2>" + html_table(pd.DataFrame(rows, dtype=object)) + note)  # object: keeps the links Markup


def _caveats(experiment: str, frames: list[pd.DataFrame]) -> list[str]:
    """What a reader must know about an experiment's data: its caveat, and its mirror's where any of
    its files came from a mirror (``data_fetched_from``: the origins, '; '-separated)."""
    exp = experiments.get(experiment)
    origins = {o for f in frames for value in f.data_fetched_from.dropna().unique() for o in str(value).split("; ")}
    mirrored = any(not fetch.is_official(experiment, o) for o in origins)
    return [c for c in (exp.caveat, exp.mirror_caveat if mirrored else "") if c]


def _figure(png: Path, caption: str, out: Path) -> Markup:
    """A figure's PNG, captioned, with a link to its PDF, addressed from the page ``out``."""
    rel = os.path.relpath(png, out.parent)
    return markup("<figure><img src='{}' alt='{}'><figcaption class='caption'>{} (<a href='{}'>PDF</a>)</figcaption></figure>",
                  rel, png.stem, caption, rel[:-4] + ".pdf")  # fmt: skip


def render(
    result_paths: list[Path],
    grid_files: list[Path],
    data_root: Path,
    figures: Path,
    tables_dir: Path,
    paper_csv: Path,
    out: Path,
    reference_root: Path | None = None,
    tracking_uri: str | None = None,
) -> Path:
    """``out``, the report page of the results tables; ``tracking_uri``: the MLflow store the runs
    were recorded in ('' where tracking was off; None: not known), which its last line opens."""
    out = Path(out)
    frames = {Path(p).stem: results.read(p) for p in result_paths}
    profiles = {f.profile.iloc[0] for f in frames.values()}
    grid_of = {name: grids.load_grid(next(g for g in grid_files if Path(g).stem == name)) for name in frames}
    parts = [
        Markup("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>icstn-bench report</title>"),
        Markup(f"<style>{STYLE}</style></head><body>"),
        Markup("<h1>icstn-bench: Inverse Compositional STNs, reproduced</h1>"),
        Markup("<p class='muted'>Lin &amp; Lucey, CVPR 2017. Our numbers beside the paper's; every number says how it was obtained.</p>"),
    ]
    if profiles != {"paper"}:
        budgets = "; ".join(_budget(grid_of[name], df, paper_csv) for name, df in frames.items())
        parts.append(markup(
            "<p class='banner'>Profile <code>{}</code>: this is NOT the paper's protocol. Models trained for {}, on few seeds and "
            "test subsets; expect errors far above the paper's. Run <code>make reproduce PROFILE=paper</code> for the full "
            "protocol.</p>",
            ", ".join(sorted(profiles)), budgets,
        ))  # fmt: skip
    exps = sorted({f.experiment.iloc[0] for f in frames.values()})
    refs = {name: reference.loaded(name, reference_root) for name in frames} if reference_root else {}
    built = {name: tables.build(df, grid_of[name], paper_csv, {k: r[0] for k, r in refs.get(name, {}).items()})
             for name, df in frames.items()}  # fmt: skip
    cards = []
    for name, table in built.items():
        if "paper" in table:
            title = grid_of[name].heading.split(":")[0]
            cards.append((name, title, table, frames[name]))
            for kind, (ref, _) in refs.get(name, {}).items():  # each committed reference run, scored alone
                cards.append((name, f"{title} {reference.label(kind)}", tables.build(ref, grid_of[name], paper_csv), ref))
    parts.append(_scorecard(cards))
    facts = {name: reference.all_facts(name, reference_root) for name in frames} if reference_root else {}
    grown = [reference.progress(f, grid_of[name].heading.split(":")[0]) for name, by_kind in facts.items() for f in by_kind.values()]
    if grown:  # how far each reference has got: its cells are judged at that budget
        parts.append(Markup("<p>" + join(grown, "<br>") + "</p>"))
    prov = _provenance(list(frames.values()), data_root)
    for name, by_kind in facts.items():
        for kind, f in by_kind.items():
            prov.loc[len(prov)] = [f"{name} {reference.label(kind)}", reference.note(f)]
    parts.append(Markup("<h2>Provenance</h2>" + html_table(prov)))
    caveats = [c for e in exps for c in _caveats(e, [f for f in frames.values() if f.experiment.iloc[0] == e])]
    parts.append(Markup("<ul>" + "".join(markup("<li>{}</li>", c) for c in caveats) + "</ul>"))
    learning = figures / f"{curves.NAME}.png"
    if learning.is_file():  # the workflow draws it for every report (pipeline.report.curves)
        parts.append(Markup("<h2 id='learning-curves'>Learning curves</h2>" + _figure(learning, curves.CAPTION, out)))
    for name, df in frames.items():
        grid = grid_of[name]
        parts.append(markup("<h2 id='{}'>{}</h2>", name, grid.heading))
        parts.append(html_table(tables.formatted(built[name], grid.experiment)))
        links = [markup("<a href='{}'>{}</a>", os.path.relpath(tables_dir / f"{name}.{e}", out.parent), e) for e in ("md", "csv", "tex")]
        parts.append(markup("<p class='caption'>{} Files: {}</p>", tables.caption(df, grid), join(links, ", ")))
        if note := tables.notes(built[name], grid.experiment):  # beside the table, where its cells are read
            parts.append(markup("<p class='note'>{}</p>", note))
        for fig in [name, *grid.figures]:
            caption = FIGURES[fig].caption if fig in FIGURES else f"{name}: test error per model, one dot per seed."
            if fig in FIGURES and (learnt := figures_.learnt_from(name, FIGURES[fig], reference_root)):
                facts_ = refs[name][learnt[0].attrs["kind"]][1]
                caption += f" Drawn from the trained models of the {reference.note(facts_)}, not this run's."
            parts.append(_figure(figures / f"{fig}.png", caption, out))
    parts.append(Markup("<h2>Metrics</h2><ul><li>Classification: test error in % on a fixed, seeded perturbation of the test set "
                 "(the same perturbation for every model).</li><li>Planar: mean distance, in pixels of the 50x50 sample, between the "
                 "box corners under the predicted warp and under the ground truth; the paper does not state its unit. Two "
                 "calibration rows: the unaligned input, and the best one-step linear predictor (a least-squares fit of the "
                 "inverse warp on the pixels, on the same training distribution), which a c-STN-1 can at best approach.</li>"))  # fmt: skip
    parts.append(Markup(_browse(tracking_uri) + "</ul>"))
    if stale := _stale(set(frames), figures, tables_dir):
        parts.append(markup("<p class='muted'>Not of this report (grids no longer in the configuration, or switched off): {}. "
                            "Delete them, or add their grids back.</p>", ", ".join(os.path.relpath(p, out.parent) for p in stale)))
    parts.append(Markup("</body></html>"))
    return write_text(out, join(parts))


def _stale(names: set[str], figures: Path, tables_dir: Path) -> list[Path]:
    """The tables and figures beside the report that no grid of it made (a deleted grid's, an ablation's
    switched off): listed, not deleted, for a grid switched off may be switched on again."""
    made = names | set(FIGURES) | {curves.NAME}
    kept = {".md", ".csv", ".tex", ".png", ".pdf"}
    found = [p for d in (tables_dir, figures) if Path(d).is_dir() for p in Path(d).iterdir()]
    return sorted(p for p in found if p.suffix in kept and p.stem not in made)


def _budget(grid: grids.Grid, df: pd.DataFrame, paper_csv: Path) -> str:
    """A table's iterations beside the paper's, where the paper states them ('Table 2: 300 iterations
    (the paper: 200,000)'), else beside the paper profile's."""
    its = ", ".join(f"{int(i):,}" for i in sorted(df.iterations.unique()))
    at, stated = paper.budget(grid, Path(paper_csv).with_name("protocol.csv"))
    theirs = f"the paper: {at:,}" if stated else f"the paper does not state its budget; the paper profile's: {at:,}"
    return f"{grid.heading.split(':')[0]}: {its} iterations ({theirs})"


def _browse(uri: str | None) -> Markup:
    """The last line: how to browse the runs of the MLflow store ``uri``."""
    if uri is None:
        return Markup("<li>Browse every run, curve and artifact with <code>mlflow ui --backend-store-uri &lt;the store&gt;</code>.</li>")
    if not uri:
        return Markup("<li>MLflow tracking was off for this run: its runs are in the results tables only.</li>")
    if uri.startswith(("http://", "https://")):
        return markup("<li>Browse every run, curve and artifact on the tracking server: <a href='{}'>{}</a>.</li>", uri, uri)
    return markup("<li>Browse every run, curve and artifact with <code>{}</code>, then open http://127.0.0.1:5000.</li>",
                  f"mlflow ui --backend-store-uri {shlex.quote(uri)}")  # fmt: skip


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", nargs="+", required=True)
    parser.add_argument("--grids", nargs="+", required=True, help="the grid file of each results table")
    parser.add_argument("--data", default=schema.default("data", "processed"))
    parser.add_argument("--figures", default="reports/figures")
    parser.add_argument("--tables", default="reports/tables")
    parser.add_argument("--paper", default=schema.default("paper_results"))
    parser.add_argument("--out", default="reports/index.html")
    parser.add_argument("--reference", default=str(reference.ROOT), help="reference runs (a column where a grid has one)")
    parser.add_argument("--tracking-uri", default=None, help="the MLflow store of the runs ('': tracking was off), for the last line")
    a = parser.parse_args(argv)
    paths = [Path(p) for p in a.results], [Path(g) for g in a.grids], Path(a.data), Path(a.figures), Path(a.tables), Path(a.paper)
    print(render(*paths, Path(a.out), Path(a.reference), a.tracking_uri), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
