"""How close our numbers are to the paper's.

Per cell (a model at a noise level): our mean over seeds, a 95% prediction interval for one more
run, t * s * sqrt(1 + 1/n) each side (n - 1 degrees of freedom, cut to what an error can be: at
least 0, at most 100 for a percentage), whether the paper's value lies inside it (judged from 3
seeds on), the signed difference and the difference in standard errors of our mean. The paper
reports one run per cell, so the question is "would a single run of ours land there", which a
confidence interval of our mean (without the 1) does not answer. A diverged run (NaN or infinite
error) and a dead seed (a classifier that stayed at chance while the cell's other seeds learnt)
are counted and kept out of the mean, never dropped silently. Per table: Kendall's tau-b between the paper's values and our
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
#: A seed is dead when its error is within this many points of chance. The chance level is the
#: full test set's; a fixed test subset's commonest class differs by about one binomial standard
#: deviation (0.7 points for MNIST's 2,000-image quick subset), hence the margin.
DEAD_MARGIN = 1.0


def cell(values, upper: float = math.inf, chance: float | None = None) -> dict:
    """One cell's statistics from its per-seed values (NaN or inf: a diverged run).

    The interval is cut to [0, ``upper``], the values an error can take (100 for a percentage).
    With ``chance`` (a classifier's error when always answering the commonest class), seeds at
    chance are dead: counted and left out, unless every seed is dead (then the cell is at chance).
    """
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    dead = finite >= chance - DEAD_MARGIN if chance is not None else np.zeros(len(finite), bool)
    if dead.all():  # nothing learnt: the cell itself is at chance, and its mean says so
        dead[:] = False
    alive = finite[~dead]
    n = len(alive)
    mean = float(alive.mean()) if n else math.nan
    sd = float(alive.std(ddof=1)) if n > 1 else math.nan
    se = sd / math.sqrt(n) if n > 1 else math.nan
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd * math.sqrt(1 + 1 / n) if n > 1 else math.nan
    return {
        "ours_mean": mean,
        "ours_std": 0.0 if n == 1 else sd,
        "n_seeds": n,
        "diverged": len(values) - len(finite),
        "dead": int(dead.sum()),
        "se": se,
        "pi_low": max(mean - half, 0.0),
        "pi_high": min(mean + half, upper),
    }


def compare(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (ours_mean, se, pi_low, pi_high, paper) with diff, diff_se and agrees added.

    ``agrees`` is True or False where there is a paper value and ``MIN_SEEDS`` seeds, else NA; so is
    ``diff_se`` (NaN where there are fewer seeds).
    """
    out = table.copy()
    out["diff"] = out.ours_mean - out.paper
    out["diff_se"] = (out["diff"] / out.se).where(out.n_seeds >= MIN_SEEDS)  # with fewer seeds the SE says nothing either
    known = out.paper.notna() & out.pi_low.notna() & (out.n_seeds >= MIN_SEEDS)
    out["agrees"] = pd.array([bool(lo <= p <= hi) if k else pd.NA for lo, p, hi, k in zip(out.pi_low, out.paper, out.pi_high, known)],
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
    diverged runs and dead seeds, and with ``chance`` (the error of always answering the commonest class) the cells at chance,
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
        "dead": int(table.dead.sum()) if "dead" in table else 0,
        "at_chance": int(at_chance.sum()) if chance is not None else None,
        "rows": len(rows),
    }

