"""The paper's side of a comparison: its numbers (``config/paper_results.csv``) and what it states
of its protocol (``config/protocol.csv``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from pipeline.grids import Grid


def paper_rows(paper_csv: str | Path, table: int) -> pd.DataFrame:
    """The paper's values of one table: model (with its capacity, 'CNN(a)'), sigma_px, paper, paper_capacity."""
    paper = pd.read_csv(paper_csv)
    paper = paper[paper.table == table].copy()
    paper["model"] = paper.model + paper.setting.fillna("").map(lambda s: f"({s})" if s else "")
    return paper.rename(columns={"value": "paper", "capacity": "paper_capacity"})[["model", "sigma_px", "paper", "paper_capacity"]]


def budget(grid: Grid, protocol_csv: str | Path | None) -> tuple[int, bool]:
    """The iterations the paper's values stand at: the grid's own (the paper profile's; a profile's
    budget only lowers them), and whether the paper states them (the protocol's 'iterations' row of
    the grid's experiment is labelled paper; where it is not, or there is no protocol, they are ours)."""
    stated = False
    if protocol_csv is not None and Path(protocol_csv).is_file():
        protocol = pd.read_csv(protocol_csv)
        row = protocol[(protocol.experiment == grid.experiment) & (protocol.key == "iterations")]
        stated = not row.empty and row.label.iloc[0] == "paper"
    return int(grid.iterations), stated
