"""What the report says beside its numbers, so that nothing in it looks like a bug: a note where the
cells are at chance or none is judged, no SE where nothing is judged, the banner's budget true per
table, caveats of the data's actual source, and the exact command that opens the MLflow store."""

import pandas as pd

from pipeline import grids, results
from pipeline.report import html, tables
from tests.conftest import PAPER_RESULTS, REPO
from tests.pipeline.test_curves import GRIDS, table

FACTS = {"capacity": 1000, "test_samples": 200, "lr_scale": 1.0, "models_per_step": 2, "cuda_graph": False, "tf32": False,
         "python": "3.11", "torch": "2.13.0", "ray": "2.60", "mlflow": "3.17", "batch_size": 100,
         "data_fetched_from": "mirror:x"}  # fmt: skip


def page(tmp_path, frames: dict[str, pd.DataFrame], tracking_uri=None) -> str:
    paths = [results.write(df.assign(**{k: v for k, v in FACTS.items() if k not in df or df[k].isna().all()}),
                           tmp_path / "results" / f"{name}.parquet") for name, df in frames.items()]  # fmt: skip
    out = html.render(paths, [GRIDS[n] for n in frames], tmp_path / "data", tmp_path / "figures", tmp_path / "tables", PAPER_RESULTS,
                      tmp_path / "index.html", None, tracking_uri)  # fmt: skip
    return out.read_text()


def table3(value=None, seeds=(0, 1, 2), **facts):
    df = table("table3", ["CNN", "IC-STN-4"], [4.375], seeds=seeds).assign(**facts)
    return df if value is None else df.assign(value=df.value.where(df.metric != "test_error", value))


def test_the_gtsrb_mirror_caveat_only_where_the_data_came_from_the_mirror(tmp_path):
    official = "https://sid.erda.dk/public/archives/daaeac0d7ce1152aea9b61d9f1e19370/GTSRB_Final_Test_Images.zip"
    assert "32x32 copies" not in page(tmp_path, {"table3": table3(data_fetched_from=official)})
    assert "32x32 copies" in page(tmp_path, {"table3": table3(data_fetched_from="mirror:gtsrb/GTSRB_Final_Test_Images.zip")})


def test_no_se_where_no_cell_is_judged_and_a_note_says_so(tmp_path):
    grid = grids.load_grid(REPO / "config" / "grids" / "table3.yaml")
    two, three = (tables.build(table3(seeds=s).assign(capacity=1000), grid, PAPER_RESULTS) for s in ((0, 1), (0, 1, 2)))
    assert not tables.formatted(two, "gtsrb")["ours − paper (SE)"].str.contains(r"\(").any()
    assert tables.formatted(three, "gtsrb")["ours − paper (SE)"].str.contains(r"\(").all()
    assert "No cell is judged against the paper: each has fewer than 3 seeds" in tables.notes(two, "gtsrb")
    assert tables.notes(three, "gtsrb") == ""


def test_a_note_beside_a_table_at_chance(tmp_path):
    text = page(tmp_path, {"table3": table3(value=97.1)})
    note = text[text.index("<h2 id='table3'>") :]
    assert "<p class='note'>2 of 2 cells are at chance (a mean error of at least 94.062%" in note


def test_the_banner_says_the_papers_budget_only_where_the_paper_states_it(tmp_path):
    text = page(tmp_path, {"table1": table("table1", ["c-STN-1"], [2.5]), "table2": table("table2", ["CNN(a)"], [3.5])})
    banner = text[text.index("<p class='banner'>") :].split("</p>")[0]
    assert "Table 1: 300 iterations (the paper does not state its budget; the paper profile&#x27;s: 50,000)" in banner
    assert "Table 2: 300 iterations (the paper: 200,000)" in banner


def test_the_last_line_opens_the_runs_store(tmp_path):
    text = page(tmp_path, {"table2": table("table2", ["CNN(a)"], [3.5])}, "sqlite:////data/my runs/mlflow.db")
    assert "<code>mlflow ui --backend-store-uri &#x27;sqlite:////data/my runs/mlflow.db&#x27;</code>" in text
    assert "tracking was off" in page(tmp_path, {"table2": table("table2", ["CNN(a)"], [3.5])}, "")


def test_outputs_of_a_grid_no_longer_configured_are_listed(tmp_path):
    (tmp_path / "tables").mkdir()
    for name in ("table2.md", "old.md", "old.csv"):
        (tmp_path / "tables" / name).write_text("x")
    text = page(tmp_path, {"table2": table("table2", ["CNN(a)"], [3.5])})
    assert "Not of this report (grids no longer in the configuration, or switched off): tables/old.csv, tables/old.md." in text
    assert "tables/table2.md." not in text


def test_a_grids_own_figure_marks_the_papers_values(monkeypatch, tmp_path):
    from pipeline.report import figures, paper

    def stars(frame) -> list:
        drawn = {}
        monkeypatch.setattr(figures, "save_figure", lambda fig, out, name, note: drawn.setdefault(name, fig) and [])
        figures.summary(frame, None, None, tmp_path, None, paper.paper_rows(PAPER_RESULTS, 3))
        return [c for c in drawn["table3"].axes[0].collections if c.get_label() == "paper (one run)"]

    frame = table3().assign(profile="quick", device="cpu", git_commit="abc")
    found = stars(frame)
    assert len(found) == 1 and sorted(found[0].get_offsets()[:, 1]) == [3.184, 8.287]  # IC-STN-4's and CNN's, Table 3
    assert stars(frame.assign(sigma_px=9.0)) == []  # another noise level than the paper's: no star
