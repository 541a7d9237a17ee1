"""Figures 6-11 of the paper, and one summary figure per grid, as PNG and PDF.

    python -m pipeline.report.figures --results results/table1.parquet --data data/processed \
        --out reports/figures [--figures fig6 fig7]

Figures read the results table and the arrays its trials saved beside it in the grid's store
(``pipeline.store``), never Ray or MLflow state.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.report.markup import plain_figures

plain_figures()  # before pyplot: no display, and every text drawn as plain text
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from icstn import data, experiments, noise, warps  # noqa: E402
from pipeline import reference, results, schema  # noqa: E402
from pipeline.grids import Grid, GridError  # noqa: E402
from pipeline.images import tile  # noqa: E402
from pipeline.provenance import counted  # noqa: E402
from pipeline.report import one_line_errors, paper, save_figure  # noqa: E402
from pipeline.store import GridStore  # noqa: E402
from pipeline.trial import setting_text  # noqa: E402


@dataclass(frozen=True)
class Figure:
    """A paper figure: what it draws from (an experiment, and models its grid must train)."""

    name: str
    experiment: str
    models: tuple[str, ...]  # passed to ``draw`` in this order
    caption: str
    draw: Callable
    learnt: bool  # draws what trained models learnt (their saved arrays): a reference's models, where there is one


#: Every paper figure, by name. A grid asks for one with ``figures: [name]``.
FIGURES: dict[str, Figure] = {}


def figure(name: str, experiment: str, caption: str, models: tuple[str, ...] = (), learnt: bool = False):
    """Register ``draw(df, results_path, data_root, out, *models)`` as the paper figure ``name``."""

    def register(draw: Callable) -> Callable:
        FIGURES[name] = Figure(name, experiment, tuple(models), caption, draw, learnt)
        return draw

    return register


def check_figures(grid: Grid, source: str) -> None:
    """GridError, before any compute, for a figure the grid cannot draw."""
    for i, name in enumerate(grid.figures):
        key = f"{source}: key 'figures.{i}': bad value {name!r}"
        spec = FIGURES.get(name)
        if spec is None:
            raise GridError(f"{key}; allowed: {sorted(FIGURES, key=lambda n: int(n[3:]))}")
        if spec.experiment != grid.experiment:
            raise GridError(f"{key}: {name} draws the {spec.experiment} experiment, and this grid trains {grid.experiment}")
        missing = [m for m in spec.models if m not in grid.models]
        if missing:
            raise GridError(f"{key}: {name} draws {list(spec.models)}, and the grid's 'models' lacks {missing}")


def figure_owners(grids_by_name: dict[str, Grid], files: dict[str, Path]) -> dict[str, str]:
    """figure -> the one grid that draws it; GridError, naming the grid's file, for a figure a grid
    cannot draw or two grids claim."""
    owners: dict[str, str] = {}
    for name, grid in grids_by_name.items():
        source = str(files[name])
        check_figures(grid, source)
        for fig in grid.figures:
            if fig in owners:
                raise GridError(f"{source}: key 'figures': {fig} is already drawn by grid {owners[fig]!r}; a figure belongs to one grid")
            owners[fig] = name
    return owners


def provenance_note(df: pd.DataFrame) -> str:
    return (
        f"{df.attrs.get('source', 'ours')}: profile {df.profile.iloc[0]}, {int(df.iterations.max())} iterations, "
        f"{counted(df.seed.nunique(), 'seed')}, "
        f"device {df.device.iloc[0]}, commit {df.git_commit.iloc[0]}"
    )


def arrays(results_path: Path, df: pd.DataFrame, model: str, seed: int | None = None) -> dict[str, np.ndarray]:
    """The saved arrays of ``model`` (one member: the lowest seed, first sigma)."""
    rows = df[df.model == model]
    if rows.empty:
        raise ValueError(f"{results_path} has no model {model!r}; it has {sorted(df.model.unique())}")
    seed = rows.seed.min() if seed is None else seed
    row = rows[rows.seed == seed].iloc[0]
    return GridStore.of_table(results_path).arrays(row.trial_key, int(row.member))


def _image_panel(ax, images: np.ndarray, title: str, row_labels: list[str] | None = None) -> None:
    """images (R, Q, C, H, W) as one mosaic; a row of a diverged model (NaN) is labelled so."""
    if row_labels:
        row_labels = [f"{label} (diverged: NaN)" if np.isnan(row).any() else label for label, row in zip(row_labels, images)]
    images = np.nan_to_num(images)
    ax.imshow(tile(images).squeeze(-1) if images.shape[2] == 1 else tile(images), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    h = images.shape[-2] + 2
    ax.set_yticks([2 + h * i + images.shape[-2] / 2 for i in range(images.shape[0])] if row_labels else [])
    if row_labels:
        ax.set_yticklabels(row_labels, fontsize=7)


# --- the paper's figures --------------------------------------------------------------------
@figure("fig6", "planar", "Figure 6: the planar image with its ground-truth box, perturbed boxes and perturbed samples.")
def fig6(df, results_path, data_root, out):
    """The planar image, its ground-truth box and perturbed boxes; perturbed samples (sigma 7.5)."""
    ds = data.load(data_root, "planar")
    image = ds.images(ds.train_images[0])  # (1, H, W)
    h, w = image.shape[-2:]
    p = noise.perturb(8, 7.5, 50, "affine", seed=0)
    corners = warps.canonical_corners()
    boxes = warps.transform_points(ds.ref.unsqueeze(0) @ warps.vec2mat(p, "affine"), corners)  # (8, 4, 2) canonical
    gt = warps.transform_points(ds.ref.unsqueeze(0), corners)[0]
    to_px = torch.tensor([(w - 1) / 2, (h - 1) / 2])
    samples = warps.warp_image(image.unsqueeze(0), p, "affine", (50, 50), ds.ref)  # (8, 1, 50, 50)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [1.4, 1]})
    a.imshow(image[0], cmap="gray")
    for box in boxes:
        xy = ((box + 1) * to_px).numpy()
        a.add_patch(plt.Polygon(xy, fill=False, ec="gold", lw=1))
    a.add_patch(plt.Polygon(((gt + 1) * to_px).numpy(), fill=False, ec="red", lw=2))
    a.set_title("(a) image, ground-truth box (red), perturbed boxes (yellow)", fontsize=9)
    a.axis("off")
    _image_panel(b, samples.numpy().reshape(2, 4, 1, 50, 50), "(b) perturbed 50x50 samples, affine, σ = 7.5 px")
    return save_figure(fig, out, "fig6", f"Caffe's cat.jpg, grey, box {ds.manifest['box']} (project's choice)")


@figure("fig7", "planar", "Figure 7: test error against the number of warps applied at test time, one curve per trained unroll count.")
def fig7(df, results_path, data_root, out):
    """Test error against warps applied at test time; one curve per trained unroll count."""
    rows = df[df.metric == "test_error"]
    sigmas = sorted(rows.sigma_px.unique())
    fig, axes = plt.subplots(1, len(sigmas), figsize=(3.4 * len(sigmas), 3.2), squeeze=False, sharey=False)
    for ax, sigma in zip(axes[0], sigmas):
        sub = rows[rows.sigma_px == sigma]
        for model, m in sub.groupby("model", sort=False):
            curve = m.groupby("n_warps_test")["value"].agg(["mean", "std"]).fillna(0)
            line = ax.plot(curve.index, curve["mean"], marker=".", ms=3, label=model)[0]
            ax.fill_between(curve.index, curve["mean"] - curve["std"], curve["mean"] + curve["std"], color=line.get_color(), alpha=0.15)
            trained = m.n_warps_train.iloc[0]
            if trained in curve.index:
                ax.plot([trained], [curve.loc[trained, "mean"]], "o", color=line.get_color(), ms=7)
        base = df[(df.metric == "baseline_error") & (df.sigma_px == sigma)].value.mean()
        ax.axhline(base, color="0.5", ls=":", lw=1, label="unaligned input")
        ax.set(title=f"σ = {sigma:g} px", xlabel="warps applied at test time", yscale="log")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test error (mean corner error, px)")
    axes[0][-1].legend(fontsize=7)
    return save_figure(fig, out, "fig7", provenance_note(df) + "; large dot: unroll count used in training")


@figure(
    "fig8",
    "mnist",
    "Figure 8: MNIST test samples through the IC-STN's warps, the STN's result in the last row.",
    ("IC-STN-4(a)", "STN(a)"),
    learnt=True,
)
def fig8(df, results_path, data_root, out, icstn, stn):
    """MNIST alignment through the IC-STN iterations, with the STN's result below."""
    steps = arrays(results_path, df, icstn)["alignment"]  # (T, n, C, S, S)
    stn_final = arrays(results_path, df, stn)["alignment"][-1:]
    grid_ = np.concatenate([steps, stn_final])
    labels = ["perturbed"] + [f"warp {i}" for i in range(1, len(steps))] + [f"{stn}"]
    fig, ax = plt.subplots(figsize=(8, 0.9 * len(grid_) + 0.6))
    _image_panel(ax, grid_, f"{icstn}: test samples through its warps; last row: {stn}", labels)
    return save_figure(fig, out, "fig8", provenance_note(df))


def _moments_figure(df, results_path, out, models_, classes, name, title):
    panels = []
    for model in models_:
        a = arrays(results_path, df, model)
        panels += [a["mean"][classes], a["var"][classes]]
    images = np.stack(panels)  # (2M, classes, C, S, S)
    labels = [f"{m} {kind}" for m in models_ for kind in ("mean", "var")]
    fig, ax = plt.subplots(figsize=(0.75 * len(classes) + 2, 0.55 * len(images) + 0.8))
    _image_panel(ax, images, title, labels)
    return save_figure(fig, out, name, provenance_note(df))


@figure("fig9", "mnist", "Figure 9: per-class mean and variance of the aligned MNIST test images, for each model.", learnt=True)
def fig9(df, results_path, data_root, out):
    """Per-class mean and variance of the aligned MNIST test images, for each model."""
    models_ = list(df.model.unique())
    return _moments_figure(df, results_path, out, models_, list(range(10)), "fig9", "aligned appearances per class: mean / variance")


@figure("fig10", "gtsrb", "Figure 10: GTSRB alignment, IC-STN against STN.", models=("IC-STN-4", "STN"), learnt=True)
def fig10(df, results_path, data_root, out, icstn, stn):
    """GTSRB alignment samples: perturbed input, IC-STN's result, STN's result."""
    a, s = arrays(results_path, df, icstn)["alignment"], arrays(results_path, df, stn)["alignment"]
    images = np.stack([a[0], a[-1], s[-1]])
    fig, ax = plt.subplots(figsize=(8, 3.2))
    _image_panel(ax, images, "GTSRB test samples", ["perturbed", icstn, stn])
    return save_figure(fig, out, "fig10", provenance_note(df) + "; inputs from the project's 32x32 mirror, resized to 50x50")


@figure("fig11", "gtsrb", "Figure 11: GTSRB mean aligned appearance per class, for each model.", learnt=True)
def fig11(df, results_path, data_root, out):
    """GTSRB class means for each model (first 10 classes)."""
    models_ = list(df.model.unique())
    means = np.stack([arrays(results_path, df, m)["mean"][:10] for m in models_])  # (M, 10, C, S, S)
    fig, ax = plt.subplots(figsize=(8, 0.8 * len(models_) + 0.8))
    _image_panel(ax, means, "mean aligned appearance, classes 0-9", models_)
    return save_figure(fig, out, "fig11", provenance_note(df))


def series(rows: pd.DataFrame) -> list[tuple[dict, str, pd.DataFrame]]:
    """A summary figure's series: one per noise level and family, and per any other setting the
    grid sweeps (init, lr_geometric), each as (its settings, its legend label, its rows)."""
    keys = ["sigma_px", "noise_warp", *[k for k in results.SETTINGS[2:] if k in rows and rows[k].nunique(dropna=False) > 1]]
    out = []
    for values, g in rows.groupby(keys, sort=True, dropna=False):
        setting = dict(zip(keys, values))
        swept = [setting_text(k, v) for k, v in list(setting.items())[2:]]
        out.append((setting, ", ".join([f"σ = {setting['sigma_px']:g} px", f"{setting['noise_warp']} noise", *swept]), g))
    return out


def _matching(frame: pd.DataFrame, setting: dict) -> pd.DataFrame:
    """The rows of ``frame`` (a reference run's) with ``setting``, on the columns it has."""
    keep = np.ones(len(frame), dtype=bool)
    for k, v in setting.items():
        if k in frame:
            keep &= (frame[k].isna() & pd.isna(v)).to_numpy() | (frame[k] == v).to_numpy()
    return frame[keep]


#: how a reference's dots are marked, by kind
MARKS = {"GPU": "x", "CPU": "+"}


def _paper_at(paper_rows: pd.DataFrame | None, setting: dict, experiment: str) -> pd.DataFrame:
    """The paper's values (``paper.paper_rows``) that stand for a series of ``setting``: at its noise
    level where the paper has several (Table 1), else on the series at the experiment's own noise
    level and family, where the table compares them too."""
    if paper_rows is None:
        return pd.DataFrame(columns=["model", "paper"])
    if paper_rows.sigma_px.nunique() > 1:
        return paper_rows[paper_rows.sigma_px == setting["sigma_px"]]
    defaults = experiments.get(experiment).defaults
    same = setting["sigma_px"] == defaults["sigma_px"] and setting["noise_warp"] == defaults["noise_warp"]
    return paper_rows if same else paper_rows.iloc[:0]


def summary(df, results_path, data_root, out, ref=None, paper_rows=None):
    """Any grid: test error per model (and setting), one dot per seed; reference runs' (``ref``: a
    GPU's table, or {kind: table}) as crosses; the paper's value (``paper_rows``, where it has one) as
    a star; a classifier's chance level as a dashed line."""
    rows = df[(df.metric == "test_error") & (df.n_warps_test == df.n_warps_train)]
    refs = ref if isinstance(ref, dict) else {"GPU": ref} if ref is not None else {}
    theirs = {kind: r[(r.metric == "test_error") & (r.n_warps_test == r.n_warps_train)] for kind, r in refs.items()}
    groups = series(rows)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * rows.model.nunique() * max(1, len(groups)) ** 0.5, 3.6))
    models_ = list(dict.fromkeys(rows.model))
    width = 0.8 / max(1, len(groups))
    starred = False  # the paper's stars have one legend entry
    for j, (setting, label, g) in enumerate(groups):
        x = np.array([models_.index(m) for m in g.model]) + (j - (len(groups) - 1) / 2) * width
        ax.scatter(x, g.value, s=12, alpha=0.8, label=label)
        means = g.groupby("model", sort=False).value.mean()
        ax.scatter([models_.index(m) + (j - (len(groups) - 1) / 2) * width for m in means.index], means, marker="_", s=300, color="k")
        for i, (kind, frame) in enumerate(theirs.items()):
            r = _matching(frame[frame.model.isin(models_)], setting)
            x = np.array([models_.index(m) for m in r.model]) + (j - (len(groups) - 1) / 2) * width + 0.12 * (i + 1)
            ax.scatter(x, r.value, s=14, marker=MARKS[kind], color="0.25", label=reference.label(kind) if j == 0 else None)
        theirs_paper = _paper_at(paper_rows, setting, df.experiment.iloc[0])
        drawn = theirs_paper[theirs_paper.model.isin(models_)]
        if len(drawn):
            x = np.array([models_.index(m) for m in drawn.model]) + (j - (len(groups) - 1) / 2) * width - 0.12
            ax.scatter(x, drawn.paper, s=40, marker="*", color="k", label="paper (one run)" if not starred else None, zorder=3)
            starred = True
    exp = experiments.get(df.experiment.iloc[0])
    if exp.chance_error is not None:  # a model on this line has learnt nothing, wherever it ranks
        ax.axhline(exp.chance_error, color="0.5", ls="--", lw=0.8, label=f"chance: always the commonest class ({exp.chance_error:g}%)")
    ax.set_xticks(range(len(models_)), models_, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel=exp.error_label, title=f"{df.grid.iloc[0]}: one dot per seed, bar = mean")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the dots, never over them
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, out, df.grid.iloc[0], provenance_note(df))


def learnt_from(grid: str, spec: Figure, reference_root) -> tuple[pd.DataFrame, Path] | None:
    """The reference run whose trained models ``spec`` draws (a GPU's, else a CPU's), as (its results,
    its table's path), or None where the grid has no reference with the models' arrays. A short
    run's models have barely trained; the reference's show what the paper's figures show."""
    for kind, (df, _) in (reference.loaded(grid, reference_root) if reference_root and spec.learnt else {}).items():
        table = reference.folder(grid, reference_root, kind) / f"{grid}.parquet"
        store = GridStore.of_table(table)
        wanted = spec.models or tuple(df.model.unique())
        firsts = [df[df.model == m].sort_values("seed").iloc[:1] for m in wanted]  # what ``arrays`` reads
        if all(not f.empty and store.has_arrays(f.trial_key.iloc[0]) for f in firsts):
            df.attrs |= {"source": f"models of the {reference.label(kind)}", "kind": kind}
            return df, table
    return None


def render(results_path, data_root, out, figures: list[str], with_summary: bool = True, reference_root=None, paper_csv=None) -> list[Path]:
    results_path, out = Path(results_path), Path(out)
    df = results.read(results_path)
    refs = reference.loaded(results_path.stem, reference_root) if reference_root else {}
    table = experiments.get(df.experiment.iloc[0]).paper_table
    theirs = paper.paper_rows(paper_csv, table) if paper_csv and table else None
    paths = summary(df, results_path, data_root, out, {kind: ref[0] for kind, ref in refs.items()}, theirs) if with_summary else []
    for name in figures:
        spec = FIGURES[name]
        source = learnt_from(results_path.stem, spec, reference_root) or (df, results_path)
        paths += spec.draw(*source, data_root, out, *spec.models)
    return paths


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", required=True)
    parser.add_argument("--data", default=schema.default("data", "processed"))
    parser.add_argument("--out", default="reports/figures")
    parser.add_argument("--figures", nargs="*", default=[], choices=sorted(FIGURES))
    parser.add_argument("--summary", action="store_true", help="the grid's summary figure (reports/figures/<grid>.png)")
    parser.add_argument("--reference", default=str(reference.ROOT), help="reference runs (their dots in the summary figure)")
    parser.add_argument("--paper", default=None, help="the paper's values (config/paper_results.csv): stars in the summary figure")
    args = parser.parse_args(argv)
    for path in render(args.results, args.data, args.out, args.figures, args.summary, args.reference, args.paper):
        print(path, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
