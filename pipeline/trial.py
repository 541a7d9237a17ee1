"""A trial and its record: the two values every part of a sweep passes around.

A ``Trial`` is what one executor slot runs: K models of one variant trained together (its
members: seeds x noise levels), with its training settings. ``grids.expand`` makes them; its
``key`` names it everywhere (its folder, its MLflow runs, Tune's config); ``with_overrides``
gives the trial a search setting stands for. A ``TrialRecord`` is what a finished trial wrote
(``record.json``): the one thing results, tracking and executors read of it. Both are stored as
plain JSON, flat, as ``to_dict`` gives them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace

#: The sweep's axes: a model's trials are one per combination of these grid keys' values (a grid
#: gives each one value or a list); its members, seeds x noise levels, are trained together in
#: packs. A new axis is a grid key whose schema takes a list, its name here, and its type in
#: ``pipeline.grids.Grid``.
AXES = ("noise_warp", "init", "lr_geometric", "batch_size")
TRAIN_KEYS = ("iterations", "batch_size", "lr_geometric", "lr_classifier", "noise_warp", "curve_per_decade", "eval_every")


def setting_text(key: str, value) -> str:
    """A swept setting as labels show it: 'noise_warp=affine', 'lr_geometric=0.001'."""
    return f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}"


#: What a trial's key leaves out, as not deciding its result: the labels of its swept settings, the
#: profile's learning-rate factor (provenance: already applied to ``train``'s rates), and what is
#: recorded along the way (the test evaluations of the learning curve; training draws from (seed,
#: step) alone, so evaluating more often changes no weight and no final metric).
NOT_IDENTITY = ("shown", "lr_scale")
RECORDING = ("eval_every", "curve_per_decade")
#: A setting added to ``Trial`` or to ``TRAIN_KEYS`` after keys were first stored: the value that
#: reproduces the behaviour before it existed. A trial at that value keeps the key it had, so an
#: upgrade retrains nothing (``tests/pipeline/test_trial.py`` fails on a new setting missing here).
ADDED: dict[str, object] = {}


def digest(obj) -> str:
    """A short, stable digest of a JSON-able value."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


@dataclass(frozen=True)
class Member:
    """One model of a trial: its seed (weights, batches, noise) and its noise level."""

    seed: int
    sigma_px: float


@dataclass(frozen=True)
class Trial:
    grid: str
    experiment: str
    model: str
    members: tuple[Member, ...]
    train: dict = field(hash=False)  # TRAIN_KEYS -> value: what icstn.train.TrainConfig takes
    test_samples: int | None  # a fixed subset of the test set (None: all); for alignment, test perturbations
    test_warps: tuple[int, ...]  # unroll counts tested besides the trained one (IC-STN)
    lr_scale: float | None = None  # the profile's factor, already applied to train's rates (provenance; None: not recorded)
    init: str | None = None  # the experiment's init of that name (None: its default)
    validation_size: int | None = None  # a search trial: tested on a holdout of the training set
    # the settings its grid sweeps for this model (noise_warp, init, lr_geometric): what tells its
    # trials apart in progress lines and MLflow run names; not part of the key
    shown: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        out = {
            **{f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("validation_size", "shown")},
            "members": [asdict(m) for m in self.members],
            "train": dict(self.train),
            "test_warps": list(self.test_warps),
        }
        optional = {"validation_size": self.validation_size, "shown": list(self.shown)}  # written only when set
        return out | {k: v for k, v in optional.items() if v}

    @classmethod
    def from_dict(cls, d: dict) -> Trial:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in names}
        members = tuple(Member(m["seed"], m["sigma_px"]) for m in d["members"])  # a record's members carry results too
        return cls(**values | {"members": members, "test_warps": tuple(d["test_warps"]), "shown": tuple(d.get("shown", ()))})

    def identity(self) -> dict:
        """The settings that decide the trial's result, as its key digests them: every field but
        ``NOT_IDENTITY`` and ``RECORDING``, less any setting at its ``ADDED`` value (and an unset
        ``validation_size``)."""
        unchanged = lambda name, value: name in ADDED and value == ADDED[name]  # noqa: E731
        out = {k: v for k, v in self.to_dict().items() if k not in NOT_IDENTITY and not unchanged(k, v)}
        out["train"] = {k: v for k, v in self.train.items() if k not in RECORDING and not unchanged(k, v)}
        return out

    @property
    def key(self) -> str:
        """The model's name and a digest of its ``identity``: a rerun recognises what is done, and a
        version of the code that adds a setting still finds it."""
        slug = "".join(c if c.isalnum() else "-" for c in self.model).strip("-")
        return f"{slug}-{digest(self.identity())}"

    @property
    def settings(self) -> str:
        """The swept settings that tell this trial from its model's others: 'noise_warp=affine init=he' ('' if none)."""
        value = {**self.train, "init": self.init}
        return " ".join(setting_text(k, value[k]) for k in self.shown)

    @property
    def label(self) -> str:
        """What a person reads in progress lines: 'IC-STN-4(a) σ=3.5 seeds 0-2', with the swept
        settings where a grid sweeps any: 'STN(b) noise_warp=affine σ=2,3.5 seeds 0,1'."""
        sigmas = ",".join(f"{s:g}" for s in dict.fromkeys(m.sigma_px for m in self.members))
        seeds = sorted(set(self.seeds))
        run = len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1))
        name = " ".join(filter(None, (self.model, self.settings)))
        return f"{name} σ={sigmas} seeds {f'{seeds[0]}-{seeds[-1]}' if run else ','.join(map(str, seeds))}"

    @property
    def seeds(self) -> list[int]:
        return [m.seed for m in self.members]

    @property
    def sigma_px(self) -> list[float]:
        return [m.sigma_px for m in self.members]

    def extends(self, other: Trial) -> bool:
        """Whether this trial is ``other`` with a larger budget (``iterations``), and nothing else changed."""
        iterations = self.train["iterations"]
        longer = replace(other, train={**other.train, "iterations": iterations}, shown=self.shown)
        return iterations > other.train["iterations"] and longer.identity() == self.identity()

    def with_overrides(self, **train) -> Trial:
        """The same trial with some training settings changed (a search's sample, its best setting)."""
        return replace(self, train={**self.train, **train})

    def for_search(self, validation_size: int, sigma_px: float) -> Trial:
        """The trial a search tunes: its members at one noise level, tested on a validation holdout."""
        return replace(self, members=tuple(m for m in self.members if m.sigma_px == sigma_px), validation_size=validation_size)

    def member_key(self, k: int, key: str | None = None) -> str:
        """Member k's name across runs (the MLflow child run's key); ``key``: under another key of the trial (an earlier version's)."""
        m = self.members[k]
        return f"{key or self.key}/seed={m.seed}/sigma={m.sigma_px:g}"


@dataclass(frozen=True)
class MemberResult:
    seed: int
    sigma_px: float
    metrics: dict = field(hash=False)  # final evaluation: test_error, test_loss (and baseline_error for alignment)
    test_warps: dict = field(hash=False)  # str(unroll count) -> test_error
    curve: list = field(hash=False)  # [[step, training loss], ...]
    # [[step, {metric: value}], ...]: the test metrics at each evaluation (icstn.train.eval_steps),
    # the last at the final step (a record written before test curves has none)
    test_curve: list = field(default_factory=list, hash=False)


@dataclass(frozen=True)
class TrialRecord:
    """What a finished trial wrote; its presence means the trial is done."""

    trial: Trial
    split: str  # 'test', or 'validation' for a search trial
    iterations: int  # steps trained
    test_samples_used: int
    device: str
    fast_path: dict = field(hash=False)  # models_per_step, cuda_graph, tf32
    seconds: float
    resumed_from_step: int | None
    members: tuple[MemberResult, ...]
    where: dict = field(hash=False)  # e.g. the Ray node
    provenance: dict = field(hash=False)  # git commit, versions, data source
    continued_from: dict | None = field(default=None, hash=False)  # {'trial': key, 'step': n}: a shorter trial it continued
    # where it trained, run by run (GridStore.segments); None in a record written before segments
    segments: list | None = field(default=None, hash=False)

    def where_trained(self) -> list[dict]:
        """Its segments; for a record written before them, one segment of its whole budget on its device."""
        kind = "cpu" if self.device.startswith("cpu") else "cuda"
        return self.segments or [{"device": self.device, "type": kind, "from": 0, "to": self.iterations, "seconds": self.seconds}]

    @property
    def devices(self) -> str:
        """Its device, or where it trained on several: 'NVIDIA H200 (0-6,400) + cpu (...) (6,400-20,000)'."""
        segments = self.where_trained()
        if len({s["device"] for s in segments}) == 1:
            return segments[0]["device"]
        return " + ".join(f"{s['device']} ({s['from']:,}-{s['to']:,})" for s in segments if s["to"] > s["from"])

    @property
    def objective(self) -> float:
        """What a search minimises: the mean test (or validation) error of the members."""
        return sum(m.metrics["test_error"] for m in self.members) / len(self.members)

    def to_dict(self) -> dict:
        rest = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("trial", "members")}
        return {**self.trial.to_dict(), "key": self.trial.key, **rest, "members": [asdict(m) for m in self.members]}

    @classmethod
    def from_dict(cls, d: dict) -> TrialRecord:
        names = {f.name for f in fields(cls)} - {"trial", "members"}
        return cls(
            trial=Trial.from_dict(d),
            members=tuple(MemberResult(**m) for m in d["members"]),
            **{k: d.get(k) for k in names},
        )
