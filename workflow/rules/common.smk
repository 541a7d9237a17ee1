# Grids are discovered from config['grids']: a new file is a new sweep, table and figure.
# Each is validated here, so a mistake stops the workflow before any job starts.
import json
import os
from pathlib import Path

from pipeline.grids import discover, load_grid

GRIDS = {p.stem: load_grid(p) for p in discover(config["grids"])}
FIGURE_GRID = {fig: name for name, g in GRIDS.items() for fig in g.get("figures", [])}
RAW, PROCESSED = config["data"]["raw"], config["data"]["processed"]
RESULTS, REPORTS = config["results"], config["reports"]
MIRROR = os.environ.get("ICSTN_DATA_MIRROR") or config["data"].get("mirror") or ""
ENV = "../../environment.yml"  # for --use-conda; the Makefile's .venv serves otherwise


def parent(path, levels=1):
    """The folder ``levels`` above a file: derives a rule's folders from its own inputs and outputs."""
    return str(Path(path).parents[levels - 1])


def grid_data(wildcards):
    return f"{PROCESSED}/{GRIDS[wildcards.grid]['experiment']}/manifest.json"


def sweep_settings(wildcards, threads):
    """The resolved config a sweep needs, as JSON; Ray gets the cores Snakemake gave the job."""
    keys = (
        "profile",
        "budget",
        "device",
        "cuda_graph",
        "pack",
        "ray",
        "tracking",
        "executor",
    )
    settings = {k: config[k] for k in keys if k in config}
    ray = config.get("ray", {})
    settings["ray"] = {**ray, "num_cpus": ray.get("num_cpus") or threads}
    return json.dumps(settings)


wildcard_constraints:
    grid="|".join(GRIDS) or "no-grid",
    fig="fig[0-9]+",
