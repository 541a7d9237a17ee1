"""How close our numbers are to the paper's.

Per cell (a model at a noise level): our mean over seeds, a 95% t-interval (n - 1 degrees of
freedom), whether the paper's value lies inside it, the signed difference and the difference in
standard errors of our mean. A diverged run (NaN or infinite error) is counted and kept out of
the mean, never dropped silently. Per table: Kendall's tau-b between the paper's values and our
means over the cells both have, with its two-sided p-value, and the fraction of cells that agree.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95


def cell(values) -> dict:
    """One cell's statistics from its per-seed values (NaN or inf: a diverged run)."""
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    n = len(finite)
    mean = float(finite.mean()) if n else math.nan
    sd = float(finite.std(ddof=1)) if n > 1 else math.nan
    se = sd / math.sqrt(n) if n > 1 else math.nan
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * se if n > 1 else math.nan
    return {
        "ours_mean": mean,
        "ours_std": 0.0 if n == 1 else sd,
        "n_seeds": n,
        "diverged": len(values) - n,
        "se": se,
        "ci_low": mean - half,
        "ci_high": mean + half,
    }


def compare(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (ours_mean, se, ci_low, ci_high, paper) with diff, diff_se and agrees added.

    ``agrees`` is True or False where there is a paper value and an interval (n >= 2), else NA.
    """
    out = table.copy()
    out["diff"] = out.ours_mean - out.paper
    out["diff_se"] = out["diff"] / out.se
    known = out.paper.notna() & out.ci_low.notna()
    out["agrees"] = pd.array([bool(lo <= p <= hi) if k else pd.NA for lo, p, hi, k in zip(out.ci_low, out.paper, out.ci_high, known)],
                             dtype="boolean")  # fmt: skip
    return out


def kendall(paper, ours) -> tuple[float, float, int]:
    """Kendall's tau-b between two orderings, its two-sided p-value, and the pairs' count (NaNs left out)."""
    paper, ours = np.asarray(paper, dtype=float), np.asarray(ours, dtype=float)
    keep = np.isfinite(paper) & np.isfinite(ours)
    if keep.sum() < 2:
        return math.nan, math.nan, int(keep.sum())
    result = stats.kendalltau(paper[keep], ours[keep])
    return float(result.statistic), float(result.pvalue), int(keep.sum())


def scorecard(table: pd.DataFrame) -> dict:
    """One table's agreement (``table`` from ``compare``): tau, p, cells compared, cells that agree."""
    rows = table[table.paper.notna()]
    tau, p, n = kendall(rows.paper, rows.ours_mean)
    judged = rows.agrees.dropna()
    return {
        "tau": tau,
        "p": p,
        "cells": n,
        "agree": int(judged.sum()),
        "judged": len(judged),
        "fraction": float(judged.mean()) if len(judged) else math.nan,
        "median_abs_diff": float(rows["diff"].abs().median()) if len(rows) else math.nan,  # the scale: wide intervals agree easily
        "diverged": int(table.diverged.sum()),
    }

