"""How close our numbers are to the paper's.

Per cell (a model at a noise level): our mean over seeds, a 95% t-interval (n - 1 degrees of
freedom, cut to what an error can be: at least 0, at most 100 for a percentage), whether the
paper's value lies inside it (judged from 3 seeds on), the signed difference and the difference
in standard errors of our mean. A diverged run (NaN or infinite error) is counted and kept out of
the mean, never dropped silently. Per table: Kendall's tau-b between the paper's values and our
means over the cells both have, with its two-sided p-value, and the fraction of cells that agree.
Cells at chance (a classifier no better than always answering the commonest class) are counted
and left out of tau: their order is noise.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
#: Seeds a cell needs before it is judged: with two, t(0.975, 1) = 12.7 standard errors each side,
#: an interval that holds nearly any value, so "agrees" would say nothing.
MIN_SEEDS = 3


def cell(values, upper: float = math.inf) -> dict:
    """One cell's statistics from its per-seed values (NaN or inf: a diverged run).

    The interval is cut to [0, ``upper``], the values an error can take (100 for a percentage).
    """
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
        "ci_low": max(mean - half, 0.0),
        "ci_high": min(mean + half, upper),
    }


def compare(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (ours_mean, se, ci_low, ci_high, paper) with diff, diff_se and agrees added.

    ``agrees`` is True or False where there is a paper value and ``MIN_SEEDS`` seeds, else NA.
    """
    out = table.copy()
    out["diff"] = out.ours_mean - out.paper
    out["diff_se"] = out["diff"] / out.se
    known = out.paper.notna() & out.ci_low.notna() & (out.n_seeds >= MIN_SEEDS)
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


def scorecard(table: pd.DataFrame, chance: float | None = None) -> dict:
    """One table's agreement (``table`` from ``compare``): tau, p, cells compared, cells that agree,
    and with ``chance`` (the error of always answering the commonest class) the cells at chance,
    whose mean error is no lower, left out of tau."""
    rows = table[table.paper.notna()]
    at_chance = rows.ours_mean >= chance if chance is not None else pd.Series(False, index=rows.index)
    tau, p, n = kendall(rows.paper[~at_chance], rows.ours_mean[~at_chance])
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
        "at_chance": int(at_chance.sum()) if chance is not None else None,
        "rows": len(rows),
    }

