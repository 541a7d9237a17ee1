"""A report whose every free-text input is hostile: a profile's name, a grid's title, a committed
reference's provenance and results, the paper's CSV, the data's manifest. Every output format shows
them as text: no markup of theirs reaches the HTML page, the Markdown or the LaTeX tables, and the
figures draw a '$' as a dollar."""

import json
import re
import shutil
from html.parser import HTMLParser

import pandas as pd
import pytest
import yaml

from pipeline import results
from pipeline.report import curves, figures, html, tables
from pipeline.report.markup import md_text, one_line, tex_text
from tests.conftest import PAPER_RESULTS, REPO
from tests.pipeline.test_curves import table

EVIL = "Tab $\\input{x}$ <script>alert(1)</script><img src=x onerror=alert(2)> [a](javascript:b) | *em* _u_ `c` & %#{}~^\n\n- item"
TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "code", "table", "thead", "tbody", "tr", "th", "td",
        "a", "ul", "li", "br", "figure", "img", "figcaption"}  # fmt: skip


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs += [name for name, _ in attrs]


@pytest.fixture
def hostile(tmp_path):
    """(results tables, grid file, paper CSV, reference root, data root) of one grid, every free text ``EVIL``."""
    facts = {"capacity": 1000, "test_samples": 200, "lr_scale": 1.0, "models_per_step": 2, "cuda_graph": False, "tf32": False,
             "python": "3.11", "torch": EVIL, "ray": "2.60", "mlflow": "3.17", "data_fetched_from": EVIL, "batch_size": 100,
             "profile": EVIL, "device": EVIL, "git_commit": EVIL}  # fmt: skip
    df = table("table2", ["CNN(a)", "IC-STN-4(a)"], [3.5], seeds=(0, 1, 2)).assign(**facts)
    grid = tmp_path / "grids" / "table2.yaml"
    grid.parent.mkdir()
    grid.write_text(yaml.safe_dump({**yaml.safe_load((REPO / "config" / "grids" / "table2.yaml").read_text()), "title": EVIL}))
    paper = tmp_path / "paper_results.csv"
    rows = pd.read_csv(PAPER_RESULTS)
    rows.loc[rows.model == "CNN", "architecture"] = EVIL
    rows.to_csv(paper, index=False)
    ref = tmp_path / "reference" / "table2"
    ref.mkdir(parents=True)
    df.to_parquet(ref / "table2.parquet")
    run = {"torch": EVIL, "git_commit": EVIL, "date": EVIL, "seconds": 1.0, "device": EVIL, "nvidia-smi": EVIL, "tf32": False}
    trials = {key: {"step": 300, "iterations": 300, "finished": True} for key in df.trial_key.unique()}
    provenance = {"grid": "table2", "profile": EVIL, "iterations": 300, "trials": trials, "runs": [run]}
    (ref / "provenance.json").write_text(json.dumps(provenance))
    data = tmp_path / "data" / "mnist"
    data.mkdir(parents=True)
    (data / "manifest.json").write_text(json.dumps({"counts": {"train": 10, "test": 10}, "preprocessing": EVIL}))
    path = results.write(df, tmp_path / "results" / "table2.parquet")
    return path, grid, paper, ref.parent, data.parent


def test_every_output_shows_hostile_text_as_text(tmp_path, hostile):
    path, grid, paper, ref_root, data_root = hostile
    md, _, tex = tables.render(path, grid, tmp_path / "tables", paper, ref_root)
    curves.render([path], [grid], tmp_path / "figures", paper, REPO / "config" / "protocol.csv", ref_root)  # a '$' title draws
    figures.summary(results.read(path), path, None, tmp_path / "figures")
    page = html.render([path], [grid], data_root, tmp_path / "figures", tmp_path / "tables", paper, tmp_path / "index.html", ref_root)

    text = page.read_text()
    parsed = Tags()
    parsed.feed(text)
    assert set(parsed.tags) <= TAGS and not [a for a in parsed.attrs if a.startswith("on")]
    assert "<script" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text  # shown, as text
    assert "<td><a href='#table2'>Tab $\\input{x}$ &lt;script&gt;" in text  # the scorecard's own link stays one
    assert text.count(html.markup("{}", one_line(EVIL))) >= 5  # the title, profile, device, commit, reference: each escaped

    lines = md.read_text().splitlines()
    assert lines[0].startswith("# Tab $\\\\input{x}$ &lt;script&gt;") and lines[1] == ""  # the title one heading line
    rows = [line for line in lines if line.startswith("|")]
    pipes = {len(re.findall(r"(?<!\\)\|", line)) for line in rows}
    assert len(pipes) == 1, rows  # no cell's '|' splits it
    body = md.read_text()
    assert not re.search(r"<|(?<!\\)\]\(|(?<!\\)\*em|(?<!\\)`c", body)  # no tag, link, emphasis or code span
    assert md_text(one_line(EVIL)) in body and "\n- item" not in body

    latex = tex.read_text()
    assert "\n\n" not in latex  # a blank line would end the caption
    caption = re.search(r"\\caption\{(.*)\}\n", latex)[1]
    assert tex_text(one_line(EVIL)) in caption and "\\input{x}" not in latex and "$\\input" not in latex


def test_a_title_of_mathtext_draws_as_text(tmp_path, hostile):
    path, grid, paper, ref_root, _ = hostile
    import matplotlib.pyplot as plt

    drawn = {}
    real = curves.save_figure
    curves.save_figure = lambda fig, out, name, note: drawn.setdefault("titles", [ax.get_title(loc="left") for ax in fig.axes]) and []
    try:
        curves.render([path], [grid], tmp_path, paper, None, ref_root)
    finally:
        curves.save_figure = real
    assert drawn["titles"][0].startswith("Tab $\\input{x}$") and "\n" not in drawn["titles"][0]  # as given, on one line
    assert plt.rcParams["text.parse_math"] is False


def test_a_grid_title_the_loader_accepts_renders(tmp_path, hostile):
    """The title through the command that drew it: exit 0, not matplotlib's ParseFatalException."""
    path, grid, paper, _, _ = hostile
    shutil.copy(grid, tmp_path / "table2.yaml")
    argv = ["--results", str(path), "--grids", str(grid), "--paper", str(paper), "--out", str(tmp_path / "out")]
    assert curves.main(argv) == 0
