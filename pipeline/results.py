"""Trial records -> one tidy results table per grid (``results/<grid>.parquet``).

One row per model x seed x sigma x metric (x test-time unroll count), with the provenance
columns beside. Reports and figures read these files only.

A final value's row carries its learning curve beside it: ``curve_step`` and ``curve_value``,
two lists of one length, the metric at each evaluation (``icstn.train.eval_steps``: log-spaced,
the last at the final step, whose value is ``value``); empty where there is none (a calibration
row, another unroll count, a trial recorded before curves). ``curves`` gives them in long form,
one row per point.

    python -m pipeline.results --sweep results/table2/sweep.json --out results/table2.parquet

writes a finished sweep's table again from its trials' records (the workflow's step after a
sweep); a sweep that stopped at its time limit has no table yet.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from icstn import models
from pipeline.files import atomic
from pipeline.store import GridStore
from pipeline.trial import AXES, TrialRecord

COLUMNS = [
    "grid", "experiment", "model", "family", "n_warps_train", "capacity", "member", "seed", "sigma_px", "noise_warp", "split",
    "metric", "n_warps_test", "value", "curve_step", "curve_value", "iterations", "batch_size", "lr_geometric", "lr_classifier",
    "lr_scale", "init", "test_samples", "profile", "device", "models_per_step", "cuda_graph", "tf32", "seconds", "trial_key",
    "git_commit", "python", "torch", "ray", "mlflow", "data_fetched_from",
]  # fmt: skip
SETTINGS = ["sigma_px", *AXES]  # what a grid may sweep besides models and seeds


def rows(record: TrialRecord, profile: str) -> list[dict]:
    trial, prov = record.trial, record.provenance
    cfg = models.get_config(trial.experiment, trial.model)
    fetched = sorted(set(prov.get("fetched_from", {}).values())) if isinstance(prov.get("fetched_from"), dict) else []
    common = {
        "grid": trial.grid,
        "experiment": trial.experiment,
        "model": trial.model,
        "family": cfg.family,
        "n_warps_train": cfg.n_warps,
        "capacity": models.capacity(cfg),
        "noise_warp": trial.train["noise_warp"],
        "split": record.split,
        "iterations": record.iterations,
        "batch_size": trial.train["batch_size"],
        "lr_geometric": trial.train["lr_geometric"],
        "lr_classifier": trial.train["lr_classifier"],
        "lr_scale": trial.lr_scale,
        "init": trial.init,
        "test_samples": record.test_samples_used,  # what was evaluated, whatever was asked for
        "profile": profile,
        "device": record.devices,  # a trial continued on another device names each, with its steps
        **{k: record.fast_path.get(k) for k in ("models_per_step", "cuda_graph", "tf32")},
        "seconds": record.seconds,
        "trial_key": trial.key,
        "git_commit": prov.get("git_commit"),
        "python": prov.get("python"),
        "torch": prov.get("torch"),
        "ray": prov.get("ray"),
        "mlflow": prov.get("mlflow"),
        "data_fetched_from": "; ".join(fetched) or "unknown",
    }
    out = []
    trained = cfg.n_warps if cfg.family != "cnn" else 0
    for k, member in enumerate(record.members):
        base = {**common, "member": k, "seed": member.seed, "sigma_px": member.sigma_px}
        for metric, value in member.metrics.items():
            points = [(int(step), float(values[metric])) for step, values in member.test_curve if metric in values]
            curve = {"curve_step": [s for s, _ in points], "curve_value": [v for _, v in points]}
            out.append({**base, "metric": metric, "n_warps_test": trained, "value": value, **curve})
        for n, value in member.test_warps.items():
            if int(n) != trained:
                out.append({**base, "metric": "test_error", "n_warps_test": int(n), "value": value, "curve_step": [], "curve_value": []})
    return out


def collect(store: GridStore, keys: list[str], profile: str) -> pd.DataFrame:
    """Tidy rows of the trials ``keys`` of a grid's store (each must have its record)."""
    all_rows = []
    for key in keys:
        record = store.record(key)
        if record is None:
            raise FileNotFoundError(f"trial {key} has no record in {store.root}: the sweep did not finish it")
        all_rows += rows(record, profile)
    return pd.DataFrame(all_rows, columns=COLUMNS)


def curves(df: pd.DataFrame, metric: str = "test_error") -> pd.DataFrame:
    """The learning curves of ``metric`` at the trained unroll count, long: one row per model x
    setting x seed x point, with ``step`` and ``value``. A row without a curve (a table written
    before curves, like an older reference run's) gives its final value as its one point."""
    rows = df[(df.metric == metric) & (df.n_warps_test == df.n_warps_train)]
    keys = [k for k in ("grid", "experiment", "model", *SETTINGS, "member", "seed", "trial_key", "iterations") if k in rows]
    out = []
    for row in rows.itertuples(index=False):
        steps = getattr(row, "curve_step", None)
        points = zip(steps, row.curve_value) if steps is not None and len(steps) else [(row.iterations, row.value)]
        described = {k: getattr(row, k) for k in keys}
        out += [{**described, "step": int(step), "value": float(value)} for step, value in points]
    return pd.DataFrame(out, columns=[*keys, "step", "value"])


def write(df: pd.DataFrame, path: str | Path) -> Path:
    """Write atomically, so that a reader never sees half a table."""
    with atomic(path) as tmp:
        df.to_parquet(tmp, index=False)
    return Path(path)


def read(path: str | Path) -> pd.DataFrame:
    """A grid's results table; FileNotFoundError or ValueError, naming the file and what to do."""
    path = Path(path)
    rebuild = f"snakemake {path} --cores N --configfile <the run's profile>"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such results table; its sweep writes it ({rebuild})")
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise ValueError(f"{path}: not a readable results table ({exc}); delete it and rebuild it from the trials' records, "
                         f"retraining nothing: {rebuild}") from None  # fmt: skip


#: exit status of ``main`` for a sweep that stopped at its time limit: not a failure, a rerun continues it
STOPPED = 3


class SweepUnfinished(ValueError):
    """The sweep stopped (at its time limit) before every trial finished: there is no table yet."""


def from_summary(summary: str | Path) -> pd.DataFrame:
    """The table of the sweep whose summary (``<results>/<grid>/sweep.json``) is ``summary``; ValueError
    naming it when that sweep stopped before every trial finished."""
    summary = Path(summary)
    try:
        done = json.loads(summary.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{summary}: not a readable sweep summary ({exc}); run the sweep again") from None
    if done.get("finished") is not True or "keys" not in done:
        if "stopped" in done:
            raise SweepUnfinished(f"{summary.parent.name}: stopped at {done['stopped']}, no results table yet; rerun to continue")
        raise ValueError(f"{summary}: the sweep has not finished every trial (the summary names no trials); rerun it to continue")
    return collect(GridStore(summary.parent.parent, summary.parent.name), done["keys"], done["profile"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a finished sweep's results table from its trials' records.")
    parser.add_argument("--sweep", required=True, help="the sweep's summary, <results>/<grid>/sweep.json")
    parser.add_argument("--out", required=True, help="the table to write, <results>/<grid>.parquet")
    args = parser.parse_args(argv)
    try:
        df = from_summary(args.sweep)
    except SweepUnfinished as exc:
        print(exc, file=sys.stderr)
        return STOPPED
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(df)} rows -> {write(df, args.out)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
