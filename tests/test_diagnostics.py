"""The clustering diagnosis (issue 12): the critical β it reports is where RD's first split
starts to pay, and its concentration numbers are the ones their definitions give."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from semmech.cluster.diagnosis_table import critical_beta_columns, diagnosis_row
from semmech.cluster.diagnostics import diagnose
from semmech.cluster.estimator import RateDistortionClustering, RDWorkspace
from semmech.cluster.objective import partition_cost
from semmech.cluster.synthetic import make_two_view_data


def _nodes(d: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "node_idx": np.arange(d),
            "kind": ["feature"] * d,
            "layer": np.arange(d) % 3,
            "position": np.arange(d) % 5,
            "feature": np.arange(d) + 100,
            "token_str": [f"t{i}" for i in range(d)],
        }
    )


@pytest.mark.parametrize("gamma", [0.2, 0.5, 0.8])
def test_critical_beta_is_where_the_first_split_pays(gamma):
    data = make_two_view_data(20, d_e=8, d_a=24, sem_sep=0.6, mech_sep=0.6, seed=3)
    E, A = data["E"], data["A"]
    ws = RDWorkspace(E, A)
    diag = diagnose(ws, [gamma], _nodes(A.shape[1]), refine_iter=3, power_iter=2)
    crit = diag["first_split"][0]["beta_crit"]
    assert math.isfinite(crit) and crit > 0
    below = RateDistortionClustering(beta=0.98 * crit, gamma=gamma).fit(E, A)
    above = RateDistortionClustering(beta=1.02 * crit, gamma=gamma).fit(E, A)
    assert below.n_clusters_ == 1
    assert above.n_clusters_ >= 2


def test_concentration_numbers_follow_their_definitions():
    # Signatures with one dominant coordinate (node 7) on top of a flat background: the
    # normalised rows concentrate there, so node 7 leads the top nodes with most of the mass.
    rng = np.random.default_rng(0)
    n, d = 40, 30
    A = rng.normal(0.0, 0.05, (n, d))
    A[:, 7] += rng.choice([-5.0, 5.0], n)
    E = rng.normal(size=(n, 6))
    ws = RDWorkspace(E, A)
    diag = diagnose(ws, [0.5], _nodes(d), refine_iter=3, power_iter=2)
    At = ws.At
    live = (At * At).sum(1) > 0
    d_eff = np.abs(At[live]).sum(1) ** 2 / (At[live] ** 2).sum(1)
    assert diag["effective_dimension"] == pytest.approx(float(np.median(d_eff)))
    assert 1.0 <= diag["effective_dimension"] <= d
    top = diag["top_nodes"][0]
    assert (top["node_idx"], top["feature"], top["layer"], top["position"]) == (7, 107, 1, 2)
    assert top["share"] > 0.5
    assert diag["top10_share"] > 0.5
    row = diagnosis_row("p", {**diag, "sweep": [{"beta": 1.0, "gamma": 0.5, "K": 1}]})
    assert row["top_nodes"].startswith("f L1#107@2 't7'")
    assert row["beta_crit_0.5"] == diag["first_split"][0]["beta_crit"]


def test_singleton_bound_pays_for_isolating_one_continuation():
    # One low-probability continuation far from the rest: isolating it pays well below the
    # estimator's first (balanced) split, and at the reported bound it pays exactly.
    data = make_two_view_data(20, d_e=8, d_a=24, sem_sep=0.6, mech_sep=0.6, seed=5)
    E, A = data["E"].copy(), data["A"].copy()
    P = np.ones(len(E))
    A[0] += 40.0 * np.sign(np.arange(A.shape[1]) % 2 - 0.5)
    P[0] = 0.05
    gamma = 0.3
    ws = RDWorkspace(E, A, P)
    diag = diagnose(ws, [gamma], _nodes(A.shape[1]), refine_iter=3, power_iter=2)
    split = diag["first_split"][0]
    assert split["beta_crit_singleton"] < split["beta_crit"]
    labels = np.zeros(len(E), dtype=int)
    labels[0] = 1
    for factor, pays in ((1.001, True), (0.5, False)):
        b = factor * split["beta_crit_singleton"]
        kw = {"beta_e": gamma * b, "beta_a": (1 - gamma) * b}
        one = partition_cost(np.zeros(len(E), dtype=int), E, ws.At, P, **kw).L
        two = partition_cost(labels, E, ws.At, P, **kw).L
        assert (two < one) == pays


def test_row_reports_the_sweeps_smallest_split():
    diag = {
        "n": 4,
        "D_e0": 1.0,
        "D_a0": 2.0,
        "effective_dimension": 3.0,
        "top10_share": 0.5,
        "top_nodes": [],
        "first_split": [{"gamma": 0.5, "beta_crit": 2.0, "beta_crit_singleton": 0.4}],
        "sweep": [{"beta": 1.0, "gamma": 0.5, "K": k} for k in (1, 17, 12)],
    }
    row = diagnosis_row("p", diag)
    assert (row["K_swept"], row["K_min_split"]) == ("1 17 12", 12)
    diag["sweep"] = [{"beta": 1.0, "gamma": 0.5, "K": 1}]
    assert diagnosis_row("p", diag)["K_min_split"] == 1
    cols = list(row)
    assert critical_beta_columns(cols, "split") == [(0.5, "beta_crit_0.5")]
    assert critical_beta_columns(cols, "singleton") == [(0.5, "beta_crit_singleton_0.5")]
