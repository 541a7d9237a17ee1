"""Grid files -> a typed ``Grid`` -> trials.

A grid (``config/grids/<name>.yaml``, schema ``pipeline/grid.schema.yaml``) says what to
train. A profile's ``budget`` (config/quick.yaml) then caps iterations, seeds and the test set,
so that the paper and quick profiles run the *same* grids. Every mistake is reported before
anything runs, naming the file, the key, the bad value and what is allowed. This module is the
only reader of a grid file's keys: the rest of the pipeline reads a ``Grid``'s fields.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import yaml

from icstn import experiments, models, noise
from icstn.train import TrainConfig
from pipeline import schema
from pipeline.schema import SchemaError
from pipeline.settings import AUTO_PACK
from pipeline.trial import AXES, TRAIN_KEYS, Member, Trial

SCHEMA_PATH = Path(__file__).with_name("grid.schema.yaml")  # shipped with the package
NAME = re.compile(r"[A-Za-z0-9_-]+")  # a grid's name is its file's stem: a sweep, an experiment, file names
#: characters of a grid's name: the files named after it add up to 40 more (a temporary name while one is
#: written, a date on Tune's folder), within the 255 a filesystem takes for one name
MAX_NAME = 100


class GridError(SchemaError):
    """A grid file is malformed; the message names the file, the key and what is allowed."""


@dataclass(frozen=True)
class Search:
    """A grid's ``search:``: Optuna over ``space`` on a validation holdout (``pipeline.search``)."""

    space: dict = field(hash=False)  # key -> {low, high, log}
    num_samples: int
    validation_size: int
    per_model: bool


@dataclass(frozen=True)
class Grid:
    """One validated grid, its experiment's defaults filled in and its profile's budget applied."""

    name: str  # the file's stem: the sweep, its table and its MLflow experiment
    experiment: str
    models: tuple[str, ...]
    sigma_px: tuple[float, ...]  # noise levels, pixels of the sample
    seeds: tuple[int, ...]
    noise_warp: tuple[str, ...]  # an axis, as every key of AXES: one value or several
    init: tuple[str, ...]
    lr_geometric: tuple[float, ...]
    lr_geometric_by_family: dict = field(hash=False)  # family -> its own geometric rate, over lr_geometric
    lr_classifier: float
    iterations: int
    batch_size: tuple[int, ...]
    eval_every: int
    curve_per_decade: int
    test_samples: int | None  # None: the whole test set
    test_warps: tuple[int, ...]
    figures: tuple[str, ...]  # the paper's figures it draws
    lr_scale: float  # the profile's factor, already applied to the rates (provenance)
    title: str | None = None
    paper_table: int | None = None
    search: Search | None = field(default=None)

    @property
    def heading(self) -> str:
        return self.title or self.name

    def axes(self, cfg: models.ModelConfig) -> dict[str, tuple]:
        """The values of each axis for one model: a CNN has no geometric predictor, so one rate;
        a family's own rate replaces the grid's."""
        out = {key: getattr(self, key) for key in AXES}
        rates = out["lr_geometric"][:1] if cfg.family == "cnn" else out["lr_geometric"]
        out["lr_geometric"] = tuple(dict.fromkeys(self.lr_geometric_by_family.get(cfg.family, r) for r in rates))
        return out

    def to_dict(self) -> dict:
        """Plain values, for the sweep's MLflow parameters."""
        return asdict(self)


def _grid(d: dict) -> Grid:
    """The loader's checked dict as a ``Grid``: list values as tuples, axes always tuples."""
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k != "search"}
    values |= {key: tuple(as_list(d[key])) for key in AXES}
    if "search" in d:
        values["search"] = Search(**d["search"])
    return Grid(**values)


@cache
def _grid_schema() -> dict:
    doc = yaml.safe_load(SCHEMA_PATH.read_text())
    doc["properties"]["experiment"]["enum"] = list(experiments.EXPERIMENTS)  # the experiments are their records
    for key in ("batch_size", "curve_per_decade", "eval_every"):  # one default, the trainer's
        doc["properties"][key]["default"] = getattr(TrainConfig, key)
    return doc


def grid_schema() -> dict:
    """The grid schema (``pipeline/grid.schema.yaml``), its experiments from ``icstn.experiments``."""
    return copy.deepcopy(_grid_schema())


def read_yaml(path: str | Path) -> dict:
    return schema.read_yaml(path, GridError, "grid file")


def load_grid(path: str | Path, budget: dict | None = None) -> Grid:
    """Read, validate and budget one grid (its ``name`` is the file's stem).

    Everything a sweep would otherwise find out after compute is checked here: the schema (with
    finite numbers), every model name, and that every model can undo the grid's noise family.
    """
    path = Path(path)
    if not NAME.fullmatch(path.stem):
        raise GridError(f"{path}: a grid's file name may hold letters, digits, '-' and '_' only (it names the sweep); rename it")
    if len(path.stem) > MAX_NAME:
        raise GridError(f"{path}: a grid's name (its file's stem) may have at most {MAX_NAME} characters, this one has "
                        f"{len(path.stem)}: it names the sweep's files and folders, whose names a filesystem keeps within 255; "
                        "rename it")  # fmt: skip
    grid = _with_experiment_defaults(schema.validate(read_yaml(path), grid_schema(), str(path), GridError), path)
    noise_warps = as_list(grid["noise_warp"])
    for i, name in enumerate(grid["models"]):
        try:
            cfg = models.get_config(grid["experiment"], name)
        except ValueError as exc:
            raise GridError(f"{path}: key 'models.{i}': {exc}") from None
        for warp in noise_warps:
            try:
                models.check_noise(cfg, warp)
            except ValueError as exc:
                raise GridError(f"{path}: key 'noise_warp': bad value {warp!r} for models.{i}: {exc}") from None
    table = experiments.get(grid["experiment"]).paper_table
    if "paper_table" in grid and grid["paper_table"] != table:
        raise GridError(f"{path}: key 'paper_table': bad value {grid['paper_table']}; the paper's table of {grid['experiment']} is {table}")
    grid["name"] = path.stem
    return _grid(apply_budget(grid, budget or {}))


def as_list(value) -> list:
    """A list-valued key's values (a single value is a list of one)."""
    return value if isinstance(value, list) else [value]


def _with_experiment_defaults(grid: dict, path: Path) -> dict:
    """Null keys take the experiment's defaults; ``sigma_canonical`` becomes ``sigma_px``."""
    exp = experiments.get(grid["experiment"])
    if "sigma_canonical" in grid:
        if grid["sigma_px"] is not None:
            raise GridError(f"{path}: key 'sigma_canonical': give the noise levels in one unit, sigma_px or sigma_canonical")
        unit = noise.px_to_canonical(1.0, exp.sample_size)  # canonical units of one pixel
        grid["sigma_px"] = [round(c / unit, 9) for c in grid.pop("sigma_canonical")]
    grid["sigma_px"] = grid["sigma_px"] or [exp.defaults["sigma_px"]]
    for key in ("init", "noise_warp", "lr_geometric", "lr_classifier"):
        if grid[key] is None:
            grid[key] = exp.defaults[key]
    for i, init in enumerate(as_list(grid["init"])):
        if init not in exp.inits:
            where = "init" if isinstance(grid["init"], str) else f"init.{i}"
            raise GridError(f"{path}: key {where!r}: bad value {init!r}; allowed: {sorted(exp.inits)} (the {exp.name} inits)")
    return grid


def apply_budget(grid: dict, budget: dict) -> dict:
    """Cap a grid by a profile's budget: a budget only ever lowers what the grid asks for.

    ``iterations``, ``test_samples`` and ``eval_every`` become the smaller of the grid's value and
    the budget's; ``seeds: n`` keeps the grid's first n seeds; ``lr_scale`` multiplies both
    learning rates (and is recorded in ``grid['lr_scale']``). Any of them but ``seeds`` may be a
    number or a map per experiment (config/quick.yaml states each experiment's numbers).
    """
    grid = copy.deepcopy(grid)
    exp = grid["experiment"]

    def pick(key):
        value = budget.get(key)
        return value.get(exp) if isinstance(value, dict) else value

    if pick("iterations"):
        grid["iterations"] = min(grid["iterations"], int(pick("iterations")))
    if budget.get("seeds"):
        grid["seeds"] = grid["seeds"][: int(budget["seeds"])]
    if pick("test_samples"):
        grid["test_samples"] = min(grid["test_samples"] or math.inf, int(pick("test_samples")))
    if pick("eval_every") is not None:
        grid["eval_every"] = min(grid["eval_every"], int(pick("eval_every")))
    scale = grid["lr_scale"] = float(pick("lr_scale") or schema.default("budget", "lr_scale"))
    rates = [r * scale for r in as_list(grid["lr_geometric"])]
    grid["lr_geometric"] = rates if isinstance(grid["lr_geometric"], list) else rates[0]
    grid["lr_geometric_by_family"] = {family: r * scale for family, r in grid["lr_geometric_by_family"].items()}
    grid["lr_classifier"] *= scale
    if budget.get("search_samples") and "search" in grid:
        grid["search"]["num_samples"] = min(grid["search"]["num_samples"], int(budget["search_samples"]))
    return grid


def _chunks(items: list, most: int) -> list[list]:
    """``items`` in the fewest runs of at most ``most``, sizes differing by at most one."""
    n = -(-len(items) // most)
    size, extra = divmod(len(items), n)
    bounds = [i * size + min(i, extra) for i in range(n + 1)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:])]


def size(grid: Grid, pack: int = AUTO_PACK["cpu"]) -> tuple[int, int]:
    """(trials, models) that ``expand`` makes, counted from the axes' lengths without making them:
    a grid of 250,000 trials takes half a minute to expand and key."""
    members = len(grid.sigma_px) * len(grid.seeds)
    trials = trained = 0
    for name in grid.models:
        combinations = math.prod(len(values) for values in grid.axes(models.get_config(grid.experiment, name)).values())
        trials += combinations * -(-members // pack)  # _chunks: the fewest packs of at most ``pack``
        trained += combinations * members
    return trials, trained


def check_size(grid: Grid, path: str | Path, pack: int, cap: int) -> tuple[int, int]:
    """(trials, models) of a grid (``size``); GridError naming the file, its size and how to lift
    the cap when it has more than ``cap`` trials (config key ``max_trials``)."""
    trials, trained = size(grid, pack)
    if trials > cap:
        cost = f"{trained:,} models x {grid.iterations:,} iterations = {trained * grid.iterations:,} model-iterations"
        raise GridError(
            f"{path}: {trials:,} trials ({cost}) exceed the cap of {cap:,} trials (config key 'max_trials'); shrink the grid "
            f"(models, sigma_px, seeds, {', '.join(AXES)}), or lift the cap: snakemake --config max_trials={trials} "
            f"(python -m pipeline.sweep --max-trials {trials})"
        )
    return trials, trained


def expand(grid: Grid, pack: int = AUTO_PACK["cpu"]) -> list[Trial]:
    """The grid's trials: one per model, combination of its axes' values and pack of at most
    ``pack`` seed x sigma members.

    Members of a trial are trained together, as K stacked models. Each trial has a stable
    ``key`` from its content, so a rerun recognises what is already done.
    """
    members = [Member(s, float(sig)) for sig in grid.sigma_px for s in grid.seeds]
    trials = []
    for name in grid.models:
        cfg = models.get_config(grid.experiment, name)
        test_warps = tuple(sorted({cfg.n_warps, *grid.test_warps})) if cfg.family == "icstn" else ()
        axes = grid.axes(cfg)
        shown = tuple(k for k, values in axes.items() if len(values) > 1)  # what tells this model's trials apart
        for values in itertools.product(*axes.values()):
            setting = dict(zip(axes, values))
            init = setting.pop("init")
            train = {k: getattr(grid, k) for k in TRAIN_KEYS} | setting
            for chunk in _chunks(members, pack):
                trials.append(Trial(grid=grid.name, experiment=grid.experiment, model=name, members=tuple(chunk), train=train,
                                    test_samples=grid.test_samples, test_warps=test_warps, lr_scale=grid.lr_scale, init=init,
                                    shown=shown))  # fmt: skip
    return trials


def discover(*folders: str | Path) -> dict[str, Path]:
    """name -> file of every grid of the folders (``config/grids``, and ``config/ablations`` when
    switched on), ``.yaml`` or ``.yml``; GridError for two grids of one name, which would share a
    sweep and a table."""
    found: dict[str, Path] = {}
    for folder in folders:
        for path in sorted(p for p in Path(folder).iterdir() if p.suffix in (".yaml", ".yml")):
            if path.stem in found:
                raise GridError(f"{path}: a grid named {path.stem!r} is also {found[path.stem]}; grid names must differ")
            found[path.stem] = path
    return found
