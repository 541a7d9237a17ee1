"""A one-node Slurm on this machine, for the SLURM tests: munged, slurmctld and slurmd in the
foreground, as children of the test, their state, sockets and logs in a scratch folder. Its
config is ``/etc/slurm/slurm.conf``, where every Slurm command looks (the SLURM executor's job
step drops ``SLURM_CONF`` from a job's environment): written for the test where there is none,
and removed after. It needs root and Debian's ``slurm-wlm`` and ``munge`` (``.ci/run`` installs
them). Without accounting (no slurmdbd), job states come from ``squeue``: the SLURM
executor is told so (``--slurm-status-command squeue``), and a finished job stays visible for
``MinJobAge`` seconds.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "sinfo")
MUNGE_KEY = Path("/etc/munge/munge.key")  # Debian's munge package creates it
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
PARTITION = "main"


def missing() -> str | None:
    """Why a one-node Slurm cannot start here, or None."""
    if os.geteuid() != 0:
        return "a one-node Slurm needs root (its daemons run as root here)"
    absent = [b for b in DAEMONS + CLIENTS if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if absent:
        return f"Slurm is not installed ({', '.join(absent)} missing): apt-get install -y slurm-wlm munge"
    if SYSTEM_CONF.exists():
        return f"{SYSTEM_CONF} exists: this machine has a Slurm of its own, which the test would replace"
    if not MUNGE_KEY.is_file():
        return f"{MUNGE_KEY} is missing: the munge package creates it (or mungekey -c)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def write_conf(folder: Path, cpus: int, memory_mb: int) -> Path:
    host = socket.gethostname().split(".")[0]
    munge = folder / "munge" / "munge.socket"
    conf = f"""\
ClusterName=icstn-test
SlurmctldHost={host}
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
AuthInfo=socket={munge}
CryptoType=crypto/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={folder}/state
SlurmdSpoolDir={folder}/spool
SlurmctldPidFile={folder}/slurmctld.pid
SlurmdPidFile={folder}/slurmd.pid
SlurmctldLogFile={folder}/slurmctld.log
SlurmdLogFile={folder}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MinJobAge=600
ReturnToService=2
KillWait=20
OverTimeLimit=0
InactiveLimit=0
NodeName={host} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
    for sub in ("state", "spool", "munge"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    (folder / "munge").chmod(0o700)
    (folder / "slurm.conf").write_text(conf)  # a copy beside the logs
    SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SYSTEM_CONF.write_text(conf)
    return SYSTEM_CONF


@contextmanager
def one_node(folder: Path, cpus: int | None = None, memory_mb: int | None = None, timeout: float = 60):
    """Start munged, slurmctld and slurmd; yield the environment to run Slurm's commands in; stop the
    three daemons (by their process ids) and remove the config on leaving."""
    folder = Path(folder)
    conf = write_conf(folder, cpus or os.cpu_count() or 1, memory_mb or _memory_mb())
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    munge = folder / "munge"
    commands = [
        [_binary("munged"), "--foreground", "--force", f"--socket={munge / 'munge.socket'}", f"--key-file={MUNGE_KEY}",
         f"--pid-file={munge / 'munged.pid'}", f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'munged.seed'}"],
        [_binary("slurmctld"), "-D", "-i", "-f", str(conf)],
        [_binary("slurmd"), "-D", "-f", str(conf)],
    ]  # fmt: skip
    procs: list[subprocess.Popen] = []
    try:
        for command in commands:
            log = (folder / f"{Path(command[0]).name}.out").open("w")
            procs.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT))
            if command[0].endswith("munged"):
                _wait(lambda: (munge / "munge.socket").exists(), timeout, "munged's socket", folder)
        _wait(lambda: _node_state(env) in ("idle", "mixed"), timeout, "the node to be idle", folder)
        yield env
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        conf.unlink(missing_ok=True)


def _memory_mb() -> int:
    """Most of this machine's memory: a node configured with more than it has is drained."""
    total_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:"))
    return total_kb // 1024 * 3 // 4


def _node_state(env: dict) -> str:
    out = subprocess.run([_binary("sinfo"), "-h", "-N", "-o", "%T"], env=env, capture_output=True, text=True)
    return out.stdout.strip().rstrip("*")


def _wait(ready, timeout: float, what: str, folder: Path) -> None:
    end = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > end:
            logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(folder.glob("*.out")) + sorted(folder.glob("*.log")))
            raise TimeoutError(f"a one-node Slurm: waited {timeout:.0f} s for {what}\n{logs}")
        time.sleep(0.5)


def job(env: dict, job_id: str) -> dict:
    """``scontrol show job``'s fields of a job (kept for MinJobAge after it ends)."""
    out = subprocess.run([_binary("scontrol"), "show", "job", "-o", job_id], env=env, capture_output=True, text=True, check=True)
    return dict(field.split("=", 1) for field in out.stdout.split() if "=" in field)
