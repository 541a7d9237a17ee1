# Grids are discovered from config['grids']: a new file is a new sweep, table and figure.
# Each is validated here, so a mistake stops the workflow before any job starts.
import json
import logging
import os
import sys
from pathlib import Path
from types import SimpleNamespace

from snakemake_interface_logger_plugins.common import LogEvent

from pipeline.fetch import default_mirror
from pipeline.files import try_lock
from pipeline.grids import discover, load_grid
from pipeline.report.figures import FIGURES, figure_owners
from pipeline.report.paper import read_paper_results, read_protocol
from pipeline.settings import export_max_trials
from pipeline.store import GridStore
from pipeline.stop import export_deadline
from pipeline.tracking import tracking_uri

# config/grids always; config/ablations too when switched on (--config ablations=true)
GRID_FILES = discover(
    config["grids"], *([config["ablation_grids"]] if config["ablations"] else [])
)
GRIDS = {name: load_grid(path) for name, path in GRID_FILES.items()}
# every figure a grid asks for can be drawn from it, and no two grids claim one figure
FIGURE_GRID = figure_owners(GRIDS, GRID_FILES)
RAW, PROCESSED = config["data"]["raw"], config["data"]["processed"]
RESULTS, REPORTS = config["results"], config["reports"]
# The mirror reaches the fetch jobs through their environment, not their command line: where a
# verified file came from is provenance, so changing the mirror reruns nothing.
default_mirror(config["data"].get("mirror"))
ENV = "../../environment.yml"  # for --use-conda; the Makefile's .venv serves otherwise


def claim_driver(folder=".snakemake"):
    """Hold an OS lock for as long as this driver lives. Holding it proves that no other driver of
    this directory is alive, so Snakemake's own lock files, which outlive a killed driver, are stale:
    they go, and a rerun works. A live driver keeps its lock, and Snakemake refuses a second run.
    """
    held = try_lock(Path(folder) / "icstn-driver.lock")
    stale = sorted(Path(folder, "locks").glob("*.lock")) if held else []
    for path in stale:
        path.unlink()
    if stale:
        print(
            f"removed {len(stale)} lock file(s) of a driver that is no longer running",
            file=sys.stderr,
        )
    return held


DRIVER = claim_driver() if workflow.is_main_process else None


def step(command):
    """A rule's shell command. Bash execs the step, so a signal for the job (Ctrl-C, a scheduler's
    SIGTERM, one forwarded by this driver) reaches the step, and the job's exit status is the
    step's own. tee, deaf to INT and TERM, copies its output to the log to the last line.
    """
    return f"exec {command} > >(trap '' INT TERM; exec tee {{log:q}}) 2>&1"


def parent(path, levels=1):
    """The folder ``levels`` above a file: derives a rule's folders from its own inputs and outputs."""
    return str(Path(path).parents[levels - 1])


def grid_file(wildcards):
    return GRID_FILES[wildcards.grid]


# the protocol's choices, beside the paper's numbers: the learning curves say where the paper states its budget
PROTOCOL = str(Path(config["paper_results"]).with_name("protocol.csv"))
# Both are edited by hand: a mistake in either stops the workflow here, before any job, naming the
# file, the line and the rule (the report steps check them again as they read them).
read_paper_results(config["paper_results"])
read_protocol(PROTOCOL)
# the MLflow store the runs go to, for the report's last line ('' where tracking is off)
TRACKING_URI = (
    tracking_uri(config["tracking"]["uri"]) if config["tracking"]["enabled"] else ""
)
REFERENCE = f"{REPORTS}/reference"  # reference runs of GPU machines (<grid>/) and CPUs (<grid>-cpu/), committed (pipeline.reference)


def reference_of(wildcards):
    """The grid's reference results, where it has any: its report gets their columns and dots."""
    folders = [wildcards.grid, f"{wildcards.grid}-cpu"]
    paths = [Path(REFERENCE, f, f"{wildcards.grid}.parquet") for f in folders]
    return [str(p) for p in paths if p.is_file()]


def reference_root(wildcards, input):
    """The folder of reference runs: from the rule's reference inputs, where it has any."""
    return parent(input.reference[0], 2) if input.reference else REFERENCE


def grid_data(wildcards):
    return f"{PROCESSED}/{GRIDS[wildcards.grid].experiment}/manifest.json"


def sweep_settings():
    """The resolved config a sweep needs, as JSON. A value, not a function: Snakemake tracks only
    a value among a rule's params, so a changed profile, budget or device reruns the sweeps (the
    trials already done under those settings are kept, and train nothing)."""
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
    return json.dumps({k: config[k] for k in keys if k in config})


SWEEP_SETTINGS = sweep_settings()
# The cap on a grid's trials reaches the sweeps through their environment, not among their
# settings: lifting it for one grid (--config max_trials=N) reruns no other sweep.
export_max_trials(config["max_trials"])

# The run's time limit: one moment for all its sweeps, counted from this driver's start. It
# reaches them through their environment, not among their settings: a limit never reruns a sweep.
if workflow.is_main_process:
    export_deadline(config["stop_after"])


def sweep_threads(wildcards):
    """A sweep's cores. On a Ray cluster (ray.address, RAY_ADDRESS) its trials run on the cluster:
    one core drives them, and sweeps run side by side, filling the cluster together. Otherwise it
    starts a Ray runtime of this machine's cores (--cores): sweeps take turns, each filling the
    machine. Under a cluster executor, which has no total of cores, the Snakemake profile gives
    the sweep's job its cores (workflow/profiles/slurm: set-threads)."""
    if config["ray"]["address"] or os.environ.get("RAY_ADDRESS"):
        return 1
    return workflow.resource_settings.cores or 1


def sweep_summary(grid):
    return f"{RESULTS}/{grid}/sweep.json"


def finished(summary):
    """Whether a sweep's summary says every trial finished, and names them (as summaries do since
    sweeps have time limits)."""
    done = json.loads(Path(summary).read_text())
    return done.get("finished") is True and "keys" in done


def stopped_sweeps():
    """The grids whose last sweep stopped (at the time limit) before every trial finished."""
    return [
        g
        for g in GRIDS
        if Path(sweep_summary(g)).is_file() and not finished(sweep_summary(g))
    ]


def stop_to_continue(wildcards):
    """The stop a sweep's next run continues (GridStore.last_stop). Among the sweep's params, a new
    stop makes Snakemake run the sweep again (it continues every trial from its checkpoint), and a
    sweep that finished what it continued is done. Read, never written, when the workflow is parsed:
    a dry run, --list, --summary or --lint changes no file."""
    return GridStore(RESULTS, wildcards.grid).last_stop()


class QuietStop(logging.Filter):
    """Snakemake's error messages of a results job whose sweep stopped at the time limit (the job ends
    with pipeline.results' STOPPED: there is no table yet) are dropped, with the closing lines of a
    run that had no other failure. ``only_stops``: whether every failure was such a stop.
    """

    def __init__(self):
        super().__init__()
        self.stops = self.failures = 0

    def _stopped_table(self, text):
        """Whether ``text`` (a job's output or command) names a stopped sweep's table or summary."""
        named = [
            path
            for g in stopped_sweeps()
            for path in (f"{RESULTS}/{g}.parquet", sweep_summary(g))
        ]
        return any(path in text for path in named)

    def filter(self, record):
        event, text = getattr(record, "event", None), record.getMessage()
        if event == LogEvent.JOB_ERROR:
            stop = record.rule_name == "results" and self._stopped_table(
                str(record.output)
            )
            self.stops, self.failures = self.stops + stop, self.failures + (not stop)
            return not stop
        if record.levelno >= logging.ERROR and "pipeline.results --sweep" in text:
            return not self._stopped_table(text)
        if text.startswith(
            ("Shutting down, this might", "Exiting because a job execution failed")
        ):
            return not self.only_stops()
        return True

    def only_stops(self):
        return self.stops > 0 and self.failures == 0


QUIET_STOP = QuietStop()


def sweeps_then_report(wildcards):
    """The report, once every grid's sweep has finished. A sweep stopped at the time limit ends
    the run where it is (the next grid's would stop at once)."""
    for grid in GRIDS:
        summary = checkpoints.sweep.get(grid=grid).output[0]
        if not finished(summary):
            return [summary]
    return [f"{REPORTS}/index.html"]


wildcard_constraints:
    grid="|".join(GRIDS) or "no-grid",
    fig="|".join(FIGURES),
