"""End to end: snakemake -> fetch from the mirror -> prepare -> Ray -> MLflow -> tables, figures, index.html.

Runs the real workflow in a scratch directory on a tiny profile, with the paper's grids cut to
the models the figures need, plus one new grid file (an ablation) that no code knows about.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml

from tests.conftest import REPO, data_env, fetched_from

pytestmark = pytest.mark.slow  # end to end: the fast loop (-m 'not slow') leaves it out

TINY = {
    "profile": "tiny",
    "budget": {
        "iterations": {"planar": 30, "mnist": 30, "gtsrb": 12},
        "seeds": 2,
        "test_samples": {"planar": 40, "mnist": 200, "gtsrb": 150},
        "eval_every": {"planar": 15, "mnist": 15, "gtsrb": 6},
    },
}
CUTS = {  # the models each paper figure needs
    "table1": {"models": ["c-STN-1", "IC-STN-2"], "sigma_px": [2.5, 10], "test_warps": [1, 2, 4]},
    "table2": {"models": ["STN(a)", "IC-STN-4(a)"]},
    "table3": {"models": ["STN", "IC-STN-4"]},
}
ABLATION = {
    "title": "Noise family ablation",
    "experiment": "mnist",
    "models": ["IC-STN-2(b)"],
    "noise_warp": ["affine", "homography"],
    "sigma_px": [3.5],
    "iterations": 30,
    "lr_geometric": 0.001,
    "lr_classifier": 0.1,
}


def workflow_env(work, mirror):
    return {
        **data_env(mirror),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
    }


SNAKEMAKE = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "tiny.yaml", "--snakefile", "workflow/Snakefile"]


@pytest.fixture(scope="module")
def workflow_run(tmp_path_factory, mirror, data_root):  # data_root: skip where no data is reachable
    work = tmp_path_factory.mktemp("workflow")
    shutil.copytree(REPO / "workflow", work / "workflow")
    (work / "config" / "grids").mkdir(parents=True)
    shutil.copy(REPO / "config" / "config.yaml", work / "config" / "config.yaml")
    shutil.copy(REPO / "environment.yml", work / "environment.yml")  # the rules name it for --use-conda
    shutil.copy(REPO / "config" / "paper_results.csv", work / "config" / "paper_results.csv")
    shutil.copy(REPO / "config" / "protocol.csv", work / "config" / "protocol.csv")  # where the paper states its budget
    for name, cut in CUTS.items():
        grid = yaml.safe_load((REPO / "config" / "grids" / f"{name}.yaml").read_text())
        (work / "config" / "grids" / f"{name}.yaml").write_text(yaml.safe_dump({**grid, **cut}))
    (work / "config" / "grids" / "noise_family.yaml").write_text(yaml.safe_dump(ABLATION))
    (work / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    proc = subprocess.run(SNAKEMAKE, cwd=work, env=workflow_env(work, mirror), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return work, proc


def test_every_table_with_the_papers_numbers(workflow_run):
    work, _ = workflow_run
    t2 = pd.read_csv(work / "reports" / "tables" / "table2.csv")
    assert list(t2.model) == ["STN(a)", "IC-STN-4(a)"]
    assert list(t2.paper) == [4.944, 1.230] and list(t2.paper_capacity) == [39048, 39048]
    assert (t2.capacity == t2.paper_capacity).all() and (t2.n_seeds == 2).all()
    assert ((t2.ours_mean >= 0) & (t2.ours_mean <= 100)).all()
    assert (t2["diff"] - (t2.ours_mean - t2.paper)).abs().max() < 1e-6
    md = (work / "reports" / "tables" / "table2.md").read_text()
    assert re.search(r"\| STN\(a\) +\| 4\.944 +\|", md) and "profile tiny" in md and "30 iterations" in md
    t1 = pd.read_csv(work / "reports" / "tables" / "table1.csv")
    assert sorted(t1.sigma_px.unique()) == [2.5, 10.0]
    assert (t1.model == "unaligned input").sum() == 2  # one calibration row per sigma
    t3 = (work / "reports" / "tables" / "table3.tex").read_text()
    assert r"\begin{tabular}" in t3 and "197,343" in t3


def test_new_grid_gets_its_own_sweep_table_figure_and_experiment(workflow_run):
    work, _ = workflow_run
    df = pd.read_parquet(work / "results" / "noise_family.parquet")
    assert set(df.noise_warp) == {"affine", "homography"} and set(df.seed) == {0, 1}
    table = (work / "reports" / "tables" / "noise_family.md").read_text()
    assert re.search(r"\| +noise +\|", table.splitlines()[2])  # the header: the ablated setting is a column
    assert (work / "reports" / "figures" / "noise_family.png").stat().st_size > 5000
    client = mlflow.tracking.MlflowClient(f"sqlite:///{work / 'mlflow.db'}")
    exp = client.get_experiment_by_name("noise_family")
    runs = [r for r in client.search_runs([exp.experiment_id]) if "icstn.run_key" in r.data.tags]
    assert len(runs) == 4 and {r.data.params["train.noise_warp"] for r in runs} == {"affine", "homography"}


def test_six_figures_and_index(workflow_run, mirror):
    work, _ = workflow_run
    figures = work / "reports" / "figures"
    for n in range(6, 12):
        assert (figures / f"fig{n}.png").stat().st_size > 5000 and (figures / f"fig{n}.pdf").is_file()
    page = (work / "reports" / "index.html").read_text()
    assert "NOT the paper's protocol" in page
    for needle in ["Table 1: planar", "Table 2: perturbed MNIST", "Table 3: perturbed GTSRB", "Noise family ablation",
                   *(["32x32"] if mirror else []), "git commit", fetched_from(mirror), "torch 2.13.0",
                   "mlflow ui --backend-store-uri"]:  # fmt: skip
        assert needle in page, needle
    for n in range(6, 12):
        assert f"src='figures/fig{n}.png'" in page
    assert (figures / "learning_curves.png").stat().st_size > 5000 and (figures / "learning_curves.pdf").is_file()
    assert page.index("<h2 id='learning-curves'>Learning curves</h2>") < page.index("<h2 id='table1'>")
    assert "src='figures/learning_curves.png'" in page and "one panel per table" in page
    assert page.count("<table") == 6  # the scorecard, the provenance, four grids
    assert page.index("<h2>Scorecard</h2>") < page.index("<h2>Provenance</h2>")
    for table in ("Table 1", "Table 2", "Table 3"):
        assert f"#table{table[-1]}'>{table}</a>" in page
    assert page.count("not judged (&lt; 3 seeds)") == 3  # the test profile's 2 seeds: no cell is judged


def test_rerun_does_nothing(workflow_run, mirror):
    work, _ = workflow_run
    out = subprocess.run([*SNAKEMAKE, "-n"], cwd=work, env=workflow_env(work, mirror), capture_output=True, text=True, check=True)
    assert "Nothing to be done" in out.stdout + out.stderr


def test_another_profile_reruns_every_sweep(workflow_run, mirror):
    """A profile (here the tiny one with other iterations) is the sweeps' settings: switching to
    another reruns them all, where Snakemake would otherwise keep the old profile's tables."""
    work, _ = workflow_run
    other = work / "tiny_longer.yaml"
    other.write_text(yaml.safe_dump({**TINY, "budget": {**TINY["budget"], "iterations": {"planar": 31, "mnist": 31, "gtsrb": 13}}}))
    # every sweep named: the whole run's plan stops at its first sweep (a checkpoint), which may stop at the time limit
    summaries = [f"results/{grid}/sweep.json" for grid in sorted([*CUTS, "noise_family"])]
    command = [*SNAKEMAKE[:6], str(other), *SNAKEMAKE[7:], *summaries, "-n"]
    planned = subprocess.run(command, cwd=work, env=workflow_env(work, mirror), capture_output=True, text=True, check=True).stdout
    jobs = [job for job in planned.split("\ncheckpoint ") if job.startswith("sweep:")]
    grids = sorted(re.search(r"wildcards: grid=(\w+)", job)[1] for job in jobs)
    assert grids == sorted([*CUTS, "noise_family"])
    assert all("reason: Params have changed since last execution" in job for job in jobs)


def test_a_reference_run_becomes_a_column_of_its_table(workflow_run, mirror):
    """A reference run of this machine (here this run's own table2, packed and unpacked as one would be:
    a CPU's, under <grid>-cpu/) is rendered beside the committed GPU one, the paper's and this run's,
    with its provenance, its row of the scorecard and its dots in the figure."""
    from pipeline import reference

    work, _ = workflow_run
    archive = reference.pack(work / "results", "table2", work / "table2.tar.gz")
    assert archive.stat().st_size < reference.MAX_BYTES
    kind = reference.kind_here()
    assert reference.unpack(archive, work / "reports" / "reference") == reference.folder("table2", work / "reports" / "reference", kind)
    if kind == "CPU":  # the committed GPU reference beside it
        shutil.copytree(REPO / "reports" / "reference" / "table2", work / "reports" / "reference" / "table2")
    env = workflow_env(work, mirror)
    planned = subprocess.run([*SNAKEMAKE, "-n"], cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    assert "rule table:" in planned and "wildcards: grid=table2" in planned and "rule sweep:" not in planned  # no retraining
    subprocess.run(SNAKEMAKE, cwd=work, env=env, capture_output=True, text=True, check=True)
    md = (work / "reports" / "tables" / "table2.md").read_text()
    label, progress = (f"reference ({kind})", "Table 2 reference" + (" (CPU)" if kind == "CPU" else ""))
    assert re.search(rf"\| {re.escape(label)} +\|", md) and f"{label}: tiny profile, 30 of 30 iterations, all" in md
    page = (work / "reports" / "index.html").read_text()
    assert f"table2 {label}" in page and f"{progress}: 30 of 30 iterations, all" in page  # provenance, progress
    card = page[page.index("<h2>Scorecard</h2>") : page.index("<h2>Provenance</h2>")]
    row = rf"#table2'>Table 2 {re.escape(label)}</a></td>.*?not judged \(&lt; 3 seeds\).*?tiny, 30 iterations, 2 seeds"
    assert re.search(row, card, re.S)  # scored like ours (here the packed run is this one, of the tiny profile)
    if kind == "CPU":  # both, side by side: columns, scorecard rows, provenance
        assert re.search(r"\| reference \(GPU\) +\| reference \(CPU\) +\|", md)
        assert "Table 2 reference (GPU)</a>" in card and "table2 reference (GPU)" in page
    assert "reference" not in (work / "reports" / "tables" / "table3.md").read_text()  # only where a grid has one


def test_a_damaged_results_table_is_named_and_rebuilt_as_its_message_says(workflow_run, mirror, capsys, monkeypatch):
    from pipeline.report import tables

    work, _ = workflow_run
    monkeypatch.chdir(work)
    path = Path("results/noise_family.parquet")
    rows = pd.read_parquet(path)
    path.write_bytes(path.read_bytes()[:500])  # a disk that lost the file's end
    assert tables.main(["--results", str(path), "--grid", "config/grids/noise_family.yaml", "--out", "scratch"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {path}: not a readable results table (") and "retraining nothing: snakemake " in error
    path.unlink()
    command = error.split("retraining nothing: ")[1].split()[:2]  # snakemake results/noise_family.parquet
    out = subprocess.run([*SNAKEMAKE[:3], *command[1:], *SNAKEMAKE[3:]], env=workflow_env(work, mirror), capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "8 rows -> results/noise_family.parquet" in out.stdout  # collected from the trials' records: no sweep ran
    assert "checkpoint sweep:" not in out.stderr and re.search(r"\nresults +1\ntotal +1\n", out.stderr), out.stderr[-2000:]
    pd.testing.assert_frame_equal(pd.read_parquet(path), rows)


def test_a_reference_run_trains_more_seeds_on_the_paper_profile(tmp_path):
    from pipeline import reference

    extra = {"budget": {"test_samples": 500}, "executor": "ray"}
    assert reference.prepare("table2", tmp_path, 5, extra, config=REPO / "config") == "mnist"
    grid = yaml.safe_load((tmp_path / "grids" / "table2.yaml").read_text())
    settings = json.loads((tmp_path / "settings.json").read_text())
    assert grid["seeds"] == [0, 1, 2, 3, 4] and grid["models"] == yaml.safe_load((REPO / "config/grids/table2.yaml").read_text())["models"]
    assert settings["profile"] == "paper" and settings["grids"] == str(tmp_path / "grids")
    assert settings["budget"] == {"test_samples": 500} and settings["executor"] == "ray"  # the extra over the profile
