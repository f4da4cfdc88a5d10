"""The AAR benchmark's statistics: t-intervals, area under Dice vs corrections, corrections to a target."""

import numpy as np
import pytest
from scipy import stats

from benchmarks.bench_aar import aggregate, area_under_curve, corrections_to_reach, t_interval, _winner


def test_t_interval_matches_the_textbook_formula():
    values = [0.91, 0.93, 0.90, 0.95, 0.92]
    mean, half = t_interval(values)
    assert mean == pytest.approx(np.mean(values))
    low, high = stats.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=stats.sem(values))
    assert half == pytest.approx((high - low) / 2)
    assert t_interval([0.5]) == (0.5, None)


def test_area_under_curve_and_corrections_to_target():
    # Corrections 0, 2, 4: trapezoids (0.8 + 0.9) / 2 x 2 + (0.9 + 1.0) / 2 x 2 over 4 corrections.
    assert area_under_curve([0.8, 0.9, 1.0], 2) == pytest.approx((0.85 * 2 + 0.95 * 2) / 4)
    assert area_under_curve([0.7, 0.7], 3) == pytest.approx(0.7)
    assert corrections_to_reach([0.8, 0.89, 0.91], 2, 0.9) == 4
    assert corrections_to_reach([0.8, 0.85], 2, 0.9) is None
    assert corrections_to_reach([0.95, 0.96], 2, 0.9) == 0


def test_aggregate_pairs_seeds_and_names_no_winner_when_intervals_include_zero():
    per_seed = {
        0: {"disagreement": [0.80, 0.90, 0.95], "epistemic": [0.80, 0.82, 0.86], "random": [0.80, 0.85, 0.90]},
        1: {"disagreement": [0.70, 0.84, 0.90], "epistemic": [0.70, 0.73, 0.75], "random": [0.70, 0.76, 0.83]},
        2: {"disagreement": [0.90, 0.96, 0.99], "epistemic": [0.90, 0.91, 0.93], "random": [0.90, 0.92, 0.95]},
    }
    summary = aggregate(per_seed, budget=2, target_gain=0.5)
    assert summary["targets"] == {"0": pytest.approx(0.9), "1": pytest.approx(0.85), "2": pytest.approx(0.95)}
    assert summary["per_round"]["random"][1]["mean"] == pytest.approx(np.mean([0.85, 0.76, 0.92]))
    assert summary["corrections_to_target"]["disagreement"]["per_seed"] == [2, 4, 2]
    assert summary["corrections_to_target"]["epistemic"]["per_seed"] == [None, None, None]
    assert summary["corrections_to_target"]["random"]["reached"] == 2
    # Disagreement beats random on every seed by a similar margin: its paired interval excludes 0.
    assert summary["auc_vs_random"]["disagreement"]["mean"] - summary["auc_vs_random"]["disagreement"]["ci95"] > 0
    assert _winner(summary) == "disagreement"
    per_seed[1]["disagreement"] = [0.70, 0.70, 0.71]  # now worse than random on one seed
    assert _winner(aggregate(per_seed, budget=2, target_gain=0.5)).startswith("none")
