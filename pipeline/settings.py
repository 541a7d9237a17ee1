"""A sweep's settings: the resolved workflow config (profile, budget, device, Ray, MLflow).

Every setting, its default and what it means are in one file, ``pipeline/config.schema.yaml``:
the workflow validates its config with it, and ``pipeline.sweep`` fills in what its JSON leaves
out from the same defaults. Settings the trials could not use fail before any compute, naming
the config key.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from pipeline.schema import SchemaError, config_schema, defaults_of, read_yaml, validate


class SettingsError(SchemaError):
    """A setting the trials cannot use; the message names the config key and what is allowed."""


#: Models per trial when ``pack: auto``. CPU: on one thread (a Ray trial's share), IC-STN-4(a)
#: at K = 1, 2, 4, 8, 16 runs 5.7, 10.9, 11.6, 11.0, 10.2 model-iterations/s (``python -m
#: benchmarks.throughput --threads 1 --modes batched --k 1 2 4 8 16``). CUDA: on an H200 the fast
#: path still gains up to K = 128: 902, 1,595 and 2,058 at K = 3, 12 and 128 (benchmarks/GPU.md).
AUTO_PACK = {"cpu": 4, "cuda": 128}


def json_object(text: str) -> dict:
    """A command-line option's JSON object (argparse ``type``): an unreadable one is a usage error naming the option."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not JSON ({exc}): {text[:80]!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"a JSON object is wanted, like '{{\"ray\": {{\"num_cpus\": 2}}}}'; got {text[:80]!r}")
    return value


CONFIG_DIR = Path("config")  # as the workflow reads it: relative to the folder the command runs in
PAPER = "config.yaml"  # the paper profile's file, the base every other profile overlays


def profile_file(profile: str, folder: Path = CONFIG_DIR) -> Path:
    """The file of a budget profile: a name (``quick``, ``medium``: ``config/<name>.yaml``; ``paper``:
    ``config/config.yaml``) or a YAML file's path. SettingsError naming the profiles there otherwise."""
    path = Path(profile)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise SettingsError(f"--profile {profile}: no such file")
        return path
    names = {"paper": folder / PAPER} | {p.stem: p for p in sorted(folder.glob("*.yaml")) if p.name != PAPER}
    if profile not in names:
        raise SettingsError(f"--profile: unknown profile {profile!r}; allowed: {', '.join(sorted(names))} (config/<name>.yaml), or a file")
    return names[profile]


def load_profile(profile: str, folder: Path = CONFIG_DIR) -> dict:
    """A budget profile's settings as the workflow has them: ``config/config.yaml`` overlaid by the
    profile's file (Snakemake's ``--configfile``), validated, defaults filled in."""
    path, base = profile_file(profile, folder), folder / PAPER
    files = [base, path] if base.is_file() and path.resolve() != base.resolve() else [path]
    doc: dict = {}
    for f in files:
        doc = merge(doc, read_yaml(f, SettingsError, "profile"))
    try:
        return validate(doc, config_schema(), f"--profile {profile} ({', '.join(map(str, files))})", SettingsError)
    except SchemaError as exc:
        raise SettingsError(str(exc)) from None


def merge(base: dict, over: dict) -> dict:
    """``base`` updated by ``over``, nested mappings merged key by key."""
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


#: The smallest share of a GPU a trial gets when ``ray.gpus_per_trial: auto``: at most eight trials
#: per GPU. On an H200 under MPS (``nvidia-cuda-mps-control -d``), processes of IC-STN-4(a) at K = 3
#: trained 1.77x as fast as one with four, 2.01x with eight; without MPS four ran 1.01x, so sharing
#: costs nothing and MPS pays (benchmarks/GPU.md).
AUTO_GPU_SHARE = 0.125


def gpu_share(setting: float | str, trials: int, gpus: float) -> float:
    """A trial's share of a GPU on a Ray runtime of ``gpus`` GPUs running ``trials`` trials.

    A number is itself. ``auto`` spreads the trials over every GPU: Ray fills one GPU with
    fractional shares before it starts the next, so eight trials at 1/8 would all sit on GPU 0 of
    an 8-GPU node. A share of 1/m, m = trials // gpus (1 to 8), keeps every GPU busy: 12 trials
    on 4 GPUs run 3 to a GPU, all at once; 5 on 4 run one to a GPU. A runtime without GPUs gets
    AUTO_GPU_SHARE, which it cannot hold (the executor then says so).
    """
    if setting != "auto":
        return setting
    if gpus < 1:
        return AUTO_GPU_SHARE
    return 1 / min(round(1 / AUTO_GPU_SHARE), max(1, trials // int(gpus)))


def with_defaults(settings: dict | None) -> dict:
    """``settings`` over the defaults of ``pipeline/config.schema.yaml``, nothing resolved."""
    return merge(defaults_of(config_schema()), settings or {})


def resolve(settings: dict | None) -> dict:
    """``settings`` over the defaults, ``auto`` resolved: ``device`` is CUDA where torch sees a GPU
    on this machine (the CPU otherwise), and a CPU trial's ``ray.gpus_per_trial`` is 0 (a CUDA trial's
    ``auto`` stays: ``gpu_share`` resolves it against the Ray runtime's GPUs)."""
    out = with_defaults(settings)
    if out["device"] == "auto":
        import torch

        out["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    if out["ray"]["gpus_per_trial"] == "auto" and not str(out["device"]).startswith("cuda"):
        out["ray"] = {**out["ray"], "gpus_per_trial": 0}
    return out


def models_per_trial(pack: int | str, device: str) -> int:
    """K, the most models one trial trains together: ``pack``, or for 'auto' the device's best."""
    if pack == "auto":
        return AUTO_PACK["cuda" if str(device).startswith("cuda") else "cpu"]
    if isinstance(pack, bool) or not isinstance(pack, int) or pack < 1:
        raise SettingsError(f"config key 'pack': expected 'auto' or an integer >= 1, got {pack!r}")
    return pack


MAX_TRIALS_ENV = "ICSTN_MAX_TRIALS"  # the cap a sweep takes when --max-trials is not given


def export_max_trials(value: int) -> None:
    """Give this process's jobs (the workflow's sweeps) a cap on a grid's trials, through their
    environment: among their tracked settings, changing it would rerun every sweep."""
    os.environ[MAX_TRIALS_ENV] = str(value)


def max_trials(settings: dict) -> int:
    """The most trials a grid may have (``max_trials``); SettingsError for a value that is not a count."""
    value = settings["max_trials"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SettingsError(f"config key 'max_trials': expected an integer >= 1, got {value!r}")
    return value


def check_device(settings: dict, executor: str) -> None:
    """SettingsError, before any compute, for a device the trials could not use."""
    import torch

    device = settings["device"]
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise SettingsError(f"config key 'device': {device!r} is not a torch device; allowed: auto, cpu, cuda, cuda:N") from None
    if kind not in ("cpu", "cuda"):
        raise SettingsError(f"config key 'device': {device!r} is not supported; allowed: auto, cpu, cuda, cuda:N")
    gpus = settings["ray"]["gpus_per_trial"]
    if kind == "cuda" and executor == "ray" and gpus != "auto" and not gpus > 0:
        # Ray hides every GPU from a trial that asks for none (CUDA_VISIBLE_DEVICES='')
        raise SettingsError(
            "config key 'ray.gpus_per_trial' is 0 but 'device' is cuda: give each trial a GPU or a share of one (e.g. 1 or 0.25)"
        )
    if kind == "cuda" and executor == "inline" and not torch.cuda.is_available():
        raise SettingsError(
            f"config key 'device' is {device!r}, but this machine has no CUDA device torch can use (torch {torch.__version__})"
        )
