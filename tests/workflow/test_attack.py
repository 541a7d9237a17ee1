"""A shared cluster's worst day, made to happen: hostile config values, dead drivers, concurrent
sweeps, interrupted runs, unusable stores, leaked credentials and open ports. Each test reproduces
one fault with the command that showed it, and checks what the user now sees."""

import functools
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
import yaml

from pipeline import fetch, prepare, sweep
from tests.conftest import REPO, data_env

pytestmark = pytest.mark.slow  # end to end: the fast loop (-m 'not slow') leaves it out

ALIGN = {  # one small planar grid: about 100 iterations a second on one core
    "experiment": "planar",
    "models": ["c-STN-1"],
    "noise_warp": "affine",
    "sigma_px": [5.0],
    "seeds": [0],
    "iterations": 3000,
    "eval_every": 500,
    "lr_geometric": 0.00003,
    "lr_classifier": 0.0,
    "test_samples": 50,
}


def sweep_cli(args, env=None, **kw):
    cmd = [sys.executable, "-m", "pipeline.sweep", *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})}, **kw)


def write_grid(folder, name="align", **changes):
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({**ALIGN, **changes}))
    return path


def runs_of(uri, name):
    client = mlflow.tracking.MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id]) if exp else []


# --- the workflow ------------------------------------------------------------------------------
def mini_workflow(work: Path, profile: dict, **grid_changes) -> Path:
    """A checkout with one planar grid and a profile ``profile.yaml``; returns its folder."""
    shutil.copytree(REPO / "workflow", work / "workflow")
    (work / "config" / "grids").mkdir(parents=True)
    for name in ("config.yaml", "paper_results.csv", "protocol.csv"):  # what the report reads
        shutil.copy(REPO / "config" / name, work / "config" / name)
    shutil.copy(REPO / "environment.yml", work / "environment.yml")
    write_grid(work / "config" / "grids", **grid_changes)
    (work / "profile.yaml").write_text(yaml.safe_dump({"executor": "inline", **profile}))
    return work


def snakemake(work, mirror, *extra, env_changes=None, popen=False):
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", "profile.yaml", "--snakefile", "workflow/Snakefile",
           "--rerun-incomplete", *extra]  # fmt: skip
    env = {**data_env(mirror), "PYTHONPATH": str(REPO), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the profile's store, as a user's run would have it
    env.update(env_changes or {})
    if popen:
        return subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)


def test_no_config_value_reaches_a_shell(tmp_path, mirror, data_root):
    store = tmp_path / "a'$(touch PWNED)'b.db"
    work = mini_workflow(tmp_path / "w", {"tracking": {"uri": f"sqlite:///{store}"}, "budget": {"iterations": 20}})
    out = snakemake(work, mirror, "results/align.parquet")
    assert out.returncode == 0, out.stderr[-3000:]
    assert not list(tmp_path.rglob("PWNED")), "a config value ran as a shell command"
    assert store.is_file() and not (tmp_path / "ab.db").exists()  # the store the config named, to the letter
    assert len(runs_of(f"sqlite:///{store}", "align")) == 2  # the sweep and its one model


@pytest.mark.parametrize(
    "override, message",
    [
        ("device=gpu", "key 'device': bad value 'gpu'; allowed: auto (cuda where torch sees a GPU, else cpu), cpu, cuda or cuda:N"),
        ("devcie=cuda", "unknown key 'devcie'; allowed keys: ['ablation_grids', 'ablations', 'budget',"),
        ("pack=0", "key 'pack': bad value 0; allowed: an integer >= 1, or 'auto'"),
    ],
)
def test_a_config_mistake_is_one_line_before_any_job(tmp_path, mirror, override, message):
    work = mini_workflow(tmp_path, {})
    out = snakemake(work, mirror, "-n", "--config", override)
    assert out.returncode != 0
    assert f"the workflow config (config/config.yaml, --configfile profile.yaml, --config): {message}" in out.stdout + out.stderr
    assert not (work / "data").exists() and not (work / "results").exists()


def yaml_bomb(levels=9, width=9) -> str:
    """One YAML flow value of ``levels`` levels of ``width`` aliases: 400 bytes, 9**9 strings once expanded."""
    names = "abcdefghijklmnopqrstuvwxyz"[:levels]
    node = f"&a [{', '.join(['lol'] * width)}]"
    for prev, name in zip(names, names[1:]):
        node = f"&{name} [{node}, {', '.join([f'*{prev}'] * (width - 1))}]"
    return node


# Peak memory of one command, read by a fresh parent: this runner's own children would count too
PEAK = (
    "import json, resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=120); "
    "mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024; "
    "print(json.dumps({'rc': p.returncode, 'out': p.stdout + p.stderr, 'mb': mb}))"
)


def dry_run_peak(work, mirror, *extra) -> dict:
    env = {**data_env(mirror), "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", PEAK, sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--snakefile", "workflow/Snakefile", *extra]
    out = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]  # the wrapper itself; a hang is its TimeoutExpired
    return json.loads(out.stdout)


@pytest.mark.parametrize("where", ["grid title", "config profile"])
def test_a_yaml_bomb_is_refused_in_bounded_memory_naming_the_key(tmp_path, mirror, where):
    """Anchors and aliases read in microseconds into 9**9 values; any walk over them (a schema error's message)
    ran until killed. A dry run refuses them, naming the file and the key, in a short line."""
    work = mini_workflow(tmp_path, {})
    plain = dry_run_peak(work, mirror, "--configfile", "profile.yaml")  # what a dry run takes here (it imports torch)
    assert plain["rc"] == 0, plain["out"][-3000:]
    if where == "grid title":
        grid = work / "config" / "grids" / "align.yaml"
        grid.write_text(grid.read_text() + f"title: {yaml_bomb()}\n")
        out = dry_run_peak(work, mirror, "--configfile", "profile.yaml")
        source, key = "config/grids/align.yaml", "title"
    else:
        (work / "bomb.yaml").write_text(f"profile: {yaml_bomb()}\n")
        out = dry_run_peak(work, mirror, "--configfile", "profile.yaml", "bomb.yaml")
        source, key = "the workflow config (config/config.yaml, --configfile profile.yaml, --configfile bomb.yaml, --config)", "profile"
    print(f"peak memory: {out['mb']:.0f} MB with the bomb, {plain['mb']:.0f} MB without")
    assert out["rc"] != 0
    line = next((line for line in out["out"].splitlines() if line.startswith(f"{source}: key '{key}': ")), None)
    assert line is not None, out["out"][-3000:]
    assert f"{sum(9**k for k in range(10)):,} values once its YAML aliases (*name) are expanded" in line and len(line) < 500
    assert out["mb"] < max(300, plain["mb"] + 50)  # nothing beyond what loading takes anyway
    assert not (work / "data").exists() and not (work / "results").exists()


def test_a_grid_over_the_cap_is_refused_and_lifting_the_cap_reruns_no_sweep(tmp_path, mirror, data_root):
    profile = {"pack": 4, "budget": {"iterations": 20}, "tracking": {"enabled": False}}
    work = mini_workflow(tmp_path, profile, seeds=[0, 1, 2, 3, 4])  # 5 models, 4 to a trial: 2 trials
    out = snakemake(work, mirror, "results/align.parquet", "--config", "max_trials=1")
    assert out.returncode != 0
    assert ("config/grids/align.yaml: 2 trials (5 models x 20 iterations = 100 model-iterations) exceed the cap of 1 trials "
            "(config key 'max_trials'); shrink the grid") in out.stdout + out.stderr  # fmt: skip
    assert not list(work.glob("results/align/*"))  # before the sweep planned anything (Snakemake makes its summary's folder)
    lifted = snakemake(work, mirror, "results/align.parquet", "--config", "max_trials=2")
    assert lifted.returncode == 0, lifted.stderr[-3000:]
    dry = snakemake(work, mirror, "results/align.parquet", "-n", "--config", "max_trials=5000")
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-2000:]


def test_a_yml_grid_is_a_sweep(tmp_path, mirror):
    work = mini_workflow(tmp_path, {})
    (work / "config" / "grids" / "align.yaml").rename(work / "config" / "grids" / "align2.yml")
    out = snakemake(work, mirror, "-n", "reports/index.html")
    assert out.returncode == 0, out.stderr
    assert "results/align2.parquet" in out.stdout


def test_changing_the_mirror_reruns_nothing(tmp_path, mirror, data_root):
    work = mini_workflow(tmp_path / "w", {"budget": {"iterations": 20}, "tracking": {"enabled": False}})
    assert snakemake(work, mirror, "results/align.parquet").returncode == 0
    verified = (work / "data" / "raw" / "planar" / "VERIFIED.json").stat().st_mtime_ns
    other = tmp_path / "other-mirror"
    other.mkdir()
    for changes in ({"ICSTN_DATA_MIRROR": ""}, {"ICSTN_DATA_MIRROR": str(other)}):  # unset, then a different (empty) one
        dry = snakemake(work, mirror, "results/align.parquet", "-n", env_changes=changes)
        assert dry.returncode == 0 and "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-2000:]
    # offline with no mirror, fetching again keeps what was verified
    assert fetch.fetch(["planar"], work / "data" / "raw", None)["planar"]
    assert (work / "data" / "raw" / "planar" / "VERIFIED.json").stat().st_mtime_ns == verified


def test_a_killed_drivers_rerun_works_and_a_concurrent_run_is_refused(tmp_path, mirror, data_root):
    work = mini_workflow(tmp_path / "w", {"tracking": {"enabled": False}})
    first = snakemake(work, mirror, "results/align.parquet", popen=True)
    deadline = time.monotonic() + 300
    while not list(work.glob("results/align/trials/*/checkpoint.pt")) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.2)
    assert first.poll() is None, "the first run ended before it could be killed"
    second = snakemake(work, mirror, "results/align.parquet")
    assert second.returncode != 0 and "LockException" in second.stdout + second.stderr  # a live driver still owns the directory
    os.killpg(first.pid, signal.SIGKILL)  # the driver and its jobs, as a lost login would
    first.wait()
    assert list((work / ".snakemake" / "locks").glob("*.lock")), "the killed driver should have left its locks"
    rerun = snakemake(work, mirror, "results/align.parquet")  # the README's "run the same command again"
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "lock file(s) of a driver that is no longer running" in rerun.stderr
    record = json.loads(next(work.glob("results/align/trials/*/record.json")).read_text())
    assert record["resumed_from_step"] >= 500 and record["iterations"] == 3000


# --- the sweep ---------------------------------------------------------------------------------
def test_a_gpu_the_runtime_lacks_fails_before_tune_and_fails_its_runs(tmp_path, data_root):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    want = torch.cuda.device_count() + 1
    settings = json.dumps({"device": "cuda", "ray": {"gpus_per_trial": want, "num_cpus": 1}})
    start = time.monotonic()
    out = sweep_cli(["--grid", write_grid(tmp_path), "--out", tmp_path / "r", "--data", data_root / "processed", "--settings", settings],
                    env={"MLFLOW_TRACKING_URI": uri}, timeout=300)  # fmt: skip
    print(f"failed after {time.monotonic() - start:.1f} s")  # reported, not asserted
    assert out.returncode == 2, out.stderr[-2000:]
    assert f"config key 'ray.gpus_per_trial' asks {want} GPU(s) per trial, but the Ray runtime offers {want - 1}" in out.stderr
    assert not list((tmp_path / "r").glob("*/trials/*"))
    assert [r.info.status for r in runs_of(uri, "align")] == ["FAILED"]  # the sweep's parent run, not RUNNING forever


def test_cpus_per_trial_beyond_every_node(tmp_path, data_root):
    settings = json.dumps({"ray": {"cpus_per_trial": 64, "num_cpus": 1}})
    out = sweep_cli(["--grid", write_grid(tmp_path), "--out", tmp_path / "r", "--data", data_root / "processed", "--settings", settings,
                     "--no-tracking"], timeout=300)  # fmt: skip
    assert out.returncode == 2 and "config key 'ray.cpus_per_trial' asks 64 CPU(s) per trial, but the Ray runtime offers 1" in out.stderr


def start_sweep(args, uri):
    """``pipeline.sweep`` in its own process group, output merged, SIGINT at its default."""
    cmd = [sys.executable, "-m", "pipeline.sweep", *map(str, args)]
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    # SIGINT as a terminal's Ctrl-C delivers it, even where this runner was started in the
    # background (a shell's background jobs inherit SIGINT ignored, and Python then keeps it so)
    restore = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=restore,
                            start_new_session=True)  # fmt: skip


def wait_for_checkpoint(proc, results: Path, timeout=300):
    """Until a trial has written its first checkpoint, and the tracker has seen the trial start."""
    deadline = time.monotonic() + timeout
    while not list(results.glob("align/trials/*/checkpoint.pt")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    assert proc.poll() is None, "the run ended before it could be interrupted"


def assert_interrupted(output: str, uri: str):
    """What the README promises of an interrupted sweep: its last line, and its runs KILLED."""
    assert "interrupted: align: " in output and "run the same command again to resume" in output, output[-3000:]
    # Ray's signal handlers and Tune's resume hint (Tuner.restore) are not how this project stops or resumes
    assert "SIGTERM received" not in output and "Tuner.restore" not in output and "record.json" not in output, output[-3000:]
    statuses = {r.info.run_name: r.info.status for r in runs_of(uri, "align")}
    assert statuses and "RUNNING" not in statuses.values() and set(statuses.values()) == {"KILLED"}, statuses


def assert_resumed(record: Path, uri: str, iterations=2000):
    record = json.loads(record.read_text())
    assert record["resumed_from_step"] >= 500 and record["iterations"] == iterations, record
    runs = runs_of(uri, "align")
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.parametrize(
    "executor, sig, target",
    [
        ("inline", signal.SIGINT, "sweep"),
        ("ray", signal.SIGINT, "sweep"),  # Ctrl-C
        ("ray", signal.SIGTERM, "sweep"),  # kill, Kubernetes
        ("ray", signal.SIGTERM, "group"),  # SLURM, systemd: every process of the job, Ray's own too
    ],
    ids=["inline-SIGINT", "ray-SIGINT", "ray-SIGTERM", "ray-SIGTERM-to-all"],
)
def test_an_interrupted_sweep_marks_its_runs_killed_and_a_rerun_finishes_them(tmp_path, data_root, executor, sig, target):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--grid", write_grid(tmp_path, iterations=2000), "--out", tmp_path / "r", "--data", data_root / "processed",
            "--executor", executor, "--settings", json.dumps({"ray": {"num_cpus": 1}})]  # fmt: skip
    proc = start_sweep(args, uri)
    wait_for_checkpoint(proc, tmp_path / "r")
    os.killpg(proc.pid, sig) if target == "group" else proc.send_signal(sig)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode == 130, output[-3000:]
    assert_interrupted(output, uri)
    rerun = sweep_cli(args, env={"MLFLOW_TRACKING_URI": uri}, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_resumed(next((tmp_path / "r").glob("align/trials/*/record.json")), uri)


@pytest.mark.parametrize("line", ["to run (", "Started a local Ray instance"], ids=["ray-init", "tune-start"])
def test_sigterm_while_ray_starts_ends_like_ctrl_c(tmp_path, data_root, line):
    """Ray installs SIGTERM handlers of its own while it starts: a SIGTERM then still interrupts."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--grid", write_grid(tmp_path), "--out", tmp_path / "r", "--data", data_root / "processed", "--executor", "ray",
            "--settings", json.dumps({"ray": {"num_cpus": 1}})]  # fmt: skip
    proc = start_sweep(args, uri)
    seen = []
    for text in proc.stdout:  # the line printed just before ray.init, or just after it
        seen.append(text)
        if line in text:
            break
    proc.send_signal(signal.SIGTERM)
    output = "".join(seen) + proc.communicate(timeout=300)[0]
    assert proc.returncode == 130, output[-3000:]
    assert_interrupted(output, uri)
    assert not list((tmp_path / "r").glob("align/trials/*/record.json"))


@pytest.mark.slow
@pytest.mark.parametrize("target", ["driver", "group"], ids=["to-snakemake", "to-all"])
def test_sigterm_to_snakemake_stops_its_ray_sweep_like_ctrl_c(tmp_path, mirror, data_root, target):
    """Kubernetes and `timeout` signal the driver alone (Snakemake alone would let the sweep run to its
    end); SLURM and systemd signal every process of the job."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    work = mini_workflow(tmp_path / "w", {"executor": "ray", "ray": {"num_cpus": 1}, "tracking": {"uri": uri}}, iterations=2000)
    driver = snakemake(work, mirror, "results/align.parquet", popen=True)
    wait_for_checkpoint(driver, work / "results")
    os.killpg(driver.pid, signal.SIGTERM) if target == "group" else driver.send_signal(signal.SIGTERM)
    output = driver.communicate(timeout=300)[0]
    assert driver.returncode != 0 and "non-zero exit status 130" in output, output[-3000:]  # the sweep's own status
    assert_interrupted(output, uri)
    assert (work / "logs" / "sweep" / "align.log").read_text().rstrip().splitlines()[-1].startswith("interrupted: align: ")
    rerun = snakemake(work, mirror, "results/align.parquet")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_resumed(next(work.glob("results/align/trials/*/record.json")), uri)


def test_a_clone_whose_path_holds_a_space_runs_on_ray(tmp_path, data_root):
    """Ray starts a Tune trial's worker through `bash -c "exec <interpreter> ..."`: with the interpreter under
    '.../my dir/ünï cödé/', no worker started, and Tune waited some 6 minutes before it failed."""
    where = tmp_path / "my dir" / "ünï cödé"
    where.mkdir(parents=True)
    try:
        interpreter = Path(sys.executable).relative_to(sys.prefix)
    except ValueError:
        pytest.skip(f"the interpreter {sys.executable} lies outside its environment {sys.prefix}")
    (where / "clone").symlink_to(REPO, target_is_directory=True)  # the code, and its environment, at that path
    (where / "venv").symlink_to(sys.prefix, target_is_directory=True)
    uri = f"sqlite:///{where / 'mlflow.db'}"
    args = ["--grid", write_grid(where, iterations=20), "--out", where / "results", "--data", data_root / "processed",
            "--executor", "ray", "--settings", json.dumps({"ray": {"num_cpus": 1}})]  # fmt: skip
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": str(where / "clone")}
    # a hang guard well under Tune's wait, not a measure of speed
    out = subprocess.run([where / "venv" / interpreter, "-m", "pipeline.sweep", *map(str, args)], cwd=where / "clone", env=env,
                         capture_output=True, text=True, timeout=240)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert (where / "results" / "align.parquet").is_file()
    assert [r.info.status for r in runs_of(uri, "align")] == ["FINISHED", "FINISHED"]


def test_two_sweeps_of_one_grid_train_each_trial_once(tmp_path, data_root):
    grid = write_grid(tmp_path, iterations=800, models=["c-STN-1", "IC-STN-2"])
    args = ["--grid", grid, "--out", tmp_path / "r", "--data", data_root / "processed", "--executor", "inline", "--no-tracking"]
    cmd = [sys.executable, "-m", "pipeline.sweep", *map(str, args)]
    procs = [subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    trained = [line for out in outputs for line in out.splitlines() if ": training " in line]
    assert len(trained) == 2, trained  # one per trial, across both processes
    assert any("another process is training it; waiting" in out for out in outputs)
    df = pd.read_parquet(tmp_path / "r" / "align.parquet")
    assert df.model.nunique() == 2 and (df.groupby(["model", "metric"]).size() == 1).all()  # every number once


@pytest.mark.parametrize(
    "make_store, problem",
    [
        (lambda tmp: tmp / "mlflow.db", "database disk image is malformed"),
        (lambda tmp: Path("/proc/x.db"), "unable to open database file"),
    ],
)
def test_an_unusable_store_is_named_in_one_line(tmp_path, data_root, make_store, problem):
    store = make_store(tmp_path)
    if store.parent == tmp_path:  # a store cut short, as a full disk would leave it
        sqlite3 = pytest.importorskip("sqlite3")
        with sqlite3.connect(store) as db:
            db.executescript("CREATE TABLE t(x); " + "INSERT INTO t VALUES (randomblob(4000)); " * 50)
        store.write_bytes(store.read_bytes()[:9000])
    start = time.monotonic()
    out = sweep_cli(["--grid", write_grid(tmp_path), "--out", tmp_path / "r", "--data", data_root / "processed", "--executor", "inline"],
                    env={"MLFLOW_TRACKING_URI": f"sqlite:///{store}"}, timeout=300)  # fmt: skip
    print(f"failed after {time.monotonic() - start:.1f} s")  # reported, not asserted
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: cannot use the MLflow store sqlite:///{store}: {problem}; "
        "fix it, point MLFLOW_TRACKING_URI elsewhere, or run with --no-tracking"
    )
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) <= 3
    assert not (tmp_path / "r").exists()


def test_the_runs_table_url_of_each_experiment(tmp_path, data_root, monkeypatch, capsys):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # it would win over the configured store
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep.sweep(write_grid(tmp_path, iterations=10), tmp_path / "r", data_root / "processed", {"tracking": {"uri": uri}}, "inline")
    said = capsys.readouterr().err  # the sweep's last lines say where its runs are
    out = subprocess.run([sys.executable, "-m", "pipeline.tracking", "--uri", uri, "--experiments", "align"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    exp_id = mlflow.tracking.MlflowClient(uri).get_experiment_by_name("align").experiment_id
    assert f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs?workflowType=machine_learning" in out  # the Model training view
    assert f"mlflow ui --backend-store-uri {uri}" in out
    assert f"align: MLflow runs at http://127.0.0.1:5000/#/experiments/{exp_id}/runs?workflowType=machine_learning" in said
    assert f"mlflow ui --backend-store-uri {uri}" in said


# --- credentials and ports ---------------------------------------------------------------------
@pytest.fixture
def mirror_server(mirror):
    """The dataset mirror over HTTP on loopback (it ignores the credentials a URL carries)."""
    if mirror is None:
        pytest.skip("needs a local dataset mirror (ICSTN_DATA_MIRROR) to serve")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://user:s3cret-pw@127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_credentials_in_a_mirror_url_are_never_recorded(tmp_path, monkeypatch, capsys, mirror_server):
    official = fetch.SOURCES["planar"]["cat.jpg"][1]
    monkeypatch.setitem(fetch.SOURCES["planar"], "cat.jpg", ("http://127.0.0.1:9/", official))  # the official source is down
    fetch.fetch(["planar"], tmp_path / "raw", mirror_server)
    prepare.prepare("planar", tmp_path / "raw", tmp_path / "processed")
    sweep.sweep(write_grid(tmp_path, iterations=5), tmp_path / "r", tmp_path / "processed", {}, "inline", track=False)
    from pipeline.report import html

    paper = REPO / "config" / "paper_results.csv"
    table, grid_file = tmp_path / "r" / "align.parquet", tmp_path / "align.yaml"
    html.render([table], [grid_file], tmp_path / "processed", tmp_path, tmp_path, paper, tmp_path / "index.html")
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in {".json", ".parquet", ".html"}]
    assert {"ORIGINS.json", "manifest.json", "record.json", "align.parquet", "index.html"} <= {p.name for p in written}
    for path in written:
        assert b"s3cret-pw" not in path.read_bytes(), path
    assert "http://***@127.0.0.1" in (tmp_path / "raw" / "planar" / "ORIGINS.json").read_text()
    assert "s3cret-pw" not in capsys.readouterr().err
    with pytest.raises(fetch.FetchError) as err:  # and in an error, whatever it quotes
        fetch.fetch(["mnist"], tmp_path / "raw2", mirror_server + "/nowhere")
    assert "s3cret-pw" not in str(err.value) and "***@" in str(err.value)


def test_the_local_ray_runtime_listens_on_loopback_only():
    script = (
        "import json, psutil\n"
        "from pipeline.executors.tune import connect\n"
        "connect({'num_cpus': 1})\n"
        "me = psutil.Process()\n"
        "pids = {me.pid} | {c.pid for c in me.children(recursive=True)}\n"
        "found = [(c.laddr.ip, c.laddr.port) for c in psutil.net_connections('inet') if c.status == 'LISTEN' and c.pid in pids]\n"
        "print(json.dumps(found))\n"
        "import ray; ray.shutdown()\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    listening = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(listening) >= 2  # the GCS and the raylet at least
    assert all(ip in ("127.0.0.1", "::1", "::ffff:127.0.0.1") for ip, _ in listening), listening


def test_a_stale_ray_start_record_does_not_capture_the_local_runtime():
    """`ray start` records its cluster in <ray temp dir>/ray_current_cluster; a stopped or foreign
    one's record made every local sweep fail: "When connecting to an existing cluster, num_cpus ..."."""
    import tempfile

    short = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # Ray's socket paths must stay under 108 characters
    try:
        (short / "ray").mkdir()
        (short / "ray" / "ray_current_cluster").write_text("192.0.2.2:48037\n")  # TEST-NET: nothing answers there
        script = ("from pipeline.executors.tune import connect\nimport ray\n"
                  "print(connect({'num_cpus': 1}), ray.get_runtime_context().gcs_address)\n")  # fmt: skip
        out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "RAY_TMPDIR": str(short), "RAY_ADDRESS": ""})  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        owned, address = out.stdout.split()[-2:]
        assert owned == "True" and not address.startswith("192.0.2.2")
    finally:
        shutil.rmtree(short, ignore_errors=True)
