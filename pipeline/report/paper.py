"""The paper's side of a comparison: its numbers (``config/paper_results.csv``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def paper_rows(paper_csv: str | Path, table: int) -> pd.DataFrame:
    """The paper's values of one table: model (with its capacity, 'CNN(a)'), sigma_px, paper, paper_capacity."""
    paper = pd.read_csv(paper_csv)
    paper = paper[paper.table == table].copy()
    paper["model"] = paper.model + paper.setting.fillna("").map(lambda s: f"({s})" if s else "")
    return paper.rename(columns={"value": "paper", "capacity": "paper_capacity"})[["model", "sigma_px", "paper", "paper_capacity"]]

