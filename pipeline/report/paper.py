"""The paper's side of a comparison: its numbers (``config/paper_results.csv``) and what it states
of its protocol (``config/protocol.csv``).

Both files are edited by hand and come in pull requests, so both are checked before anything reads
them (the workflow checks them at its start, beside the grids; the report steps read them through
``read_paper_results`` and ``read_protocol``): their columns, each value's type, one row per
table x model x setting x sigma (per experiment x choice), known experiments and models. A
mistake is a ``PaperFileError`` naming the file, the line and the rule it breaks: a duplicated row
would list a model twice, and a non-number would silently drop every paper value.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from icstn import experiments, models

if TYPE_CHECKING:
    from pipeline.grids import Grid

PAPER_COLUMNS = ("table", "dataset", "model", "setting", "sigma_px", "metric", "value", "capacity", "architecture")
PROTOCOL_COLUMNS = ("experiment", "choice", "grid", "key", "value", "label", "paper", "code")
LABELS = ("paper", "code", "ours")  # who made a protocol choice


class PaperFileError(ValueError):
    """``config/paper_results.csv`` or ``config/protocol.csv`` breaks a rule; the message names the
    file, the line and the rule."""


def _read(path: str | Path, columns: tuple[str, ...]) -> pd.DataFrame:
    """Every cell as text ('' where empty), the columns exactly ``columns``; a ``line`` column: the
    row's line in the file (the header is line 1)."""
    path = Path(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise PaperFileError(f"{path}: cannot be read as CSV ({exc})") from None
    missing, extra = [c for c in columns if c not in df], [c for c in df if c not in columns]
    if missing or extra:
        wrong = ", ".join([*(f"no column {c!r}" for c in missing), *(f"unknown column {c!r}" for c in extra)])
        raise PaperFileError(f"{path}: line 1: {wrong}; the columns are: {', '.join(columns)}")
    return df.assign(line=range(2, len(df) + 2))


def _number(path: Path, row, key: str, kind: type = float, optional: bool = False, minimum: float = 0.0):
    text = getattr(row, key).strip()
    if optional and not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < minimum or (kind is int and not value.is_integer()):  # '39079.0' is an integer
        what = "an integer" if kind is int else "a finite number"
        allowed = f"{what} >= {minimum:g}" + (", or empty" if optional else "")
        raise PaperFileError(f"{path}: line {row.line}: column {key!r}: bad value {text!r}; allowed: {allowed}")
    return kind(value)


def _unique(path: Path, df: pd.DataFrame, keys: list[str], rule: str) -> None:
    repeated = df[df.duplicated(keys, keep=False)]
    if not repeated.empty:
        first = repeated.iloc[0]
        lines = repeated[(repeated[keys] == first[keys]).all(axis=1)].line.tolist()
        same = ", ".join(f"{k} {first[k]!r}" if isinstance(first[k], str) else f"{k} {first[k]:g}" for k in keys)
        raise PaperFileError(f"{path}: lines {', '.join(map(str, lines))}: {same} is given {len(lines)} times; {rule}")


def read_paper_results(path: str | Path) -> pd.DataFrame:
    """``config/paper_results.csv``, checked (``PaperFileError``), its columns typed."""
    path = Path(path)
    df = _read(path, PAPER_COLUMNS)
    rows = []
    for row in df.itertuples():
        table = _number(path, row, "table", int, minimum=1)
        exp = experiments.EXPERIMENTS.get(row.dataset)
        if exp is None:
            raise PaperFileError(f"{path}: line {row.line}: column 'dataset': bad value {row.dataset!r}; allowed: "
                                 f"{', '.join(experiments.EXPERIMENTS)} (icstn.experiments)")  # fmt: skip
        if exp.paper_table != table:
            raise PaperFileError(f"{path}: line {row.line}: column 'table': bad value {table}; the paper's table of {exp.name} "
                                 f"is {exp.paper_table}")  # fmt: skip
        model = row.model + (f"({row.setting})" if row.setting else "")
        try:
            models.get_config(exp.name, model)
        except ValueError as exc:
            raise PaperFileError(f"{path}: line {row.line}: columns 'model' and 'setting': {exc}") from None
        if not row.metric.strip():
            raise PaperFileError(f"{path}: line {row.line}: column 'metric' is empty; name the paper's metric")
        rows.append({"table": table, "dataset": exp.name, "model": row.model, "setting": row.setting,
                     "sigma_px": _number(path, row, "sigma_px"), "metric": row.metric, "value": _number(path, row, "value"),
                     "capacity": _number(path, row, "capacity", int, optional=True), "architecture": row.architecture,
                     "line": row.line})  # fmt: skip
    out = pd.DataFrame(rows, columns=[*PAPER_COLUMNS, "line"])
    _unique(path, out, ["table", "model", "setting", "sigma_px"], "one row per table x model x setting x sigma_px")
    return out.astype({"capacity": float})  # NaN where the paper gives none


def read_protocol(path: str | Path) -> pd.DataFrame:
    """``config/protocol.csv``, checked (``PaperFileError``); every cell text."""
    path = Path(path)
    df = _read(path, PROTOCOL_COLUMNS)
    known = [*experiments.EXPERIMENTS, "all"]
    for row in df.itertuples():
        if row.experiment not in known:
            raise PaperFileError(f"{path}: line {row.line}: column 'experiment': bad value {row.experiment!r}; allowed: {', '.join(known)}")
        if row.label not in LABELS:
            raise PaperFileError(f"{path}: line {row.line}: column 'label': bad value {row.label!r}; allowed: {', '.join(LABELS)} "
                                 "(who made the choice)")  # fmt: skip
        if not row.choice.strip():
            raise PaperFileError(f"{path}: line {row.line}: column 'choice' is empty; name the protocol's choice")
        if bool(row.grid) != bool(row.key):
            raise PaperFileError(f"{path}: line {row.line}: columns 'grid' and 'key': give both (the grid key that makes the choice) "
                                 "or neither")  # fmt: skip
    _unique(path, df, ["experiment", "choice"], "one row per experiment x choice")
    return df


def paper_rows(paper_csv: str | Path, table: int) -> pd.DataFrame:
    """The paper's values of one table: model (with its capacity, 'CNN(a)'), sigma_px, paper, paper_capacity."""
    paper = read_paper_results(paper_csv)
    paper = paper[paper.table == table].copy()
    paper["model"] = paper.model + paper.setting.map(lambda s: f"({s})" if s else "")
    return paper.rename(columns={"value": "paper", "capacity": "paper_capacity"})[["model", "sigma_px", "paper", "paper_capacity"]]


def budget(grid: Grid, protocol_csv: str | Path | None) -> tuple[int, bool]:
    """The iterations the paper's values stand at: the grid's own (the paper profile's; a profile's
    budget only lowers them), and whether the paper states them (the protocol's 'iterations' row of
    the grid's experiment is labelled paper; where it is not, or there is no protocol, they are ours)."""
    stated = False
    if protocol_csv is not None and Path(protocol_csv).is_file():
        protocol = read_protocol(protocol_csv)
        row = protocol[(protocol.experiment == grid.experiment) & (protocol.key == "iterations")]
        stated = not row.empty and row.label.iloc[0] == "paper"
    return int(grid.iterations), stated
