"""Which view MLflow's UI opens at the runs address the project prints, checked in a real browser.

    python -m benchmarks.mlflow_view [--chromium chromium] [--port 5055]

Makes a throwaway MLflow store with one experiment as the sweeps make it (``pipeline.tracking``) and
a parent and a child run, starts ``mlflow ui`` on it (127.0.0.1), and loads in headless Chromium
(Debian: ``apt-get install -y chromium``) the address ``pipeline.tracking.runs_url`` gives, and the
same address without its ``?workflowType=machine_learning``. MLflow 3.17's UI takes its mode from
that query, else the browser's storage, else "genai": each load here starts from an empty profile,
as a new user's browser does. Prints one JSON line per address (the view its sidebar shows, and
whether the sweep's run is listed) and exits 1 unless the project's address opens the "Model
training" view with its runs. Measured with MLflow 3.17.2 and Chromium 150: the project's address
opens "Model training"; without the query, the same page opens in the GenAI view. A script, not a
test: CI has no browser.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]  # fmt: skip
SWEEP_RUN, RUN_NAME = "sweep table2", "IC-STN-4(a) seed=0 sigma=3.5"  # a parent run and its child


def make_store(folder: Path) -> tuple[str, str]:
    """(tracking URI, experiment id) of a store holding one grid's experiment, a sweep run and a model run."""
    from pipeline import tracking

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = tracking.open_store(uri)
    experiment_id = tracking.experiment(client, "table2")
    parent = client.create_run(experiment_id, tags={"mlflow.runName": SWEEP_RUN}).info.run_id
    child = client.create_run(experiment_id, tags={"mlflow.runName": RUN_NAME, "mlflow.parentRunId": parent}).info.run_id
    for step, value in enumerate([90.0, 40.0, 12.0]):
        client.log_metric(child, "test_error", value, step=step)
    for run in (child, parent):
        client.set_terminated(run, "FINISHED")
    return uri, experiment_id


def serve(uri: str, port: int, log: Path) -> subprocess.Popen:
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(mlflow), "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log.open("w"), stderr=subprocess.STDOUT)  # fmt: skip
    end = time.monotonic() + 120
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow ui ended: {log.read_text()[-2000:]}") from None
            time.sleep(1)
    proc.terminate()
    raise TimeoutError(f"mlflow ui did not answer on port {port} in 120 s: {log.read_text()[-2000:]}")


def page(chromium: str, url: str, wait_ms: int) -> str:
    """The DOM after ``wait_ms`` of the page's own time, in a fresh browser profile."""
    with tempfile.TemporaryDirectory() as profile:
        flags = [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={wait_ms}", "--dump-dom"]
        out = subprocess.run([chromium, *flags, url], capture_output=True, text=True, timeout=300)
    return out.stdout


def view(dom: str) -> dict:
    """What a loaded page shows: its sidebar's view, and whether the sweep's run is listed. The "Model
    training" sidebar holds Runs, Models, Traces and Model registry; the GenAI one Overview,
    Observability, Evaluation runs, Prompts and AI Gateway (MLflow 3.17)."""
    text = re.sub(r"<[^>]+>", "\n", re.sub(r"<(script|style).*?</\1>", "", dom, flags=re.S))
    words = {w.strip() for w in text.splitlines() if w.strip()}
    kind = "model training" if "Model registry" in words else "genai" if "Evaluation runs" in words else "neither (not rendered?)"
    return {"view": kind, "sweep_run_listed": SWEEP_RUN in words, "bytes": len(dom)}


def main(argv: list[str] | None = None) -> int:
    from pipeline import tracking

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--port", type=int, default=5055)
    parser.add_argument("--wait-ms", type=int, default=20000, help="the page's own time to render (virtual time)")
    parser.add_argument("--keep", help="write each page's DOM into this folder")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        uri, experiment_id = make_store(Path(tmp))
        server = serve(uri, args.port, Path(tmp) / "mlflow-ui.log")
        try:
            ours = tracking.runs_url(experiment_id, f"http://127.0.0.1:{args.port}")
            bare = ours.split("?")[0]
            found = {}
            for name, url in (("project", ours), ("without workflowType", bare)):
                dom = page(args.chromium, url, args.wait_ms)
                if args.keep:
                    os.makedirs(args.keep, exist_ok=True)
                    Path(args.keep, f"{name.replace(' ', '_')}.html").write_text(dom)
                found[name] = view(dom)
                print(json.dumps({"url": url, "which": name, **found[name]}), flush=True)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return 0 if found["project"] == {**found["project"], "view": "model training", "sweep_run_listed": True} else 1


if __name__ == "__main__":
    sys.exit(main())
