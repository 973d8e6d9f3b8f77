"""Rate–distortion clustering: exactness of the descent, planted structure, degenerate input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from rd_reference import RateDistortionClustering as ReferenceRD
from sklearn.base import clone
from sklearn.metrics import adjusted_rand_score

from semmech import io
from semmech.cluster.estimator import RateDistortionClustering, RDWorkspace, _State
from semmech.cluster.medians import (
    argsort_rows,
    weighted_median,
    weighted_median_rows,
    weighted_median_sorted,
    weighted_median_sorted_groups,
)
from semmech.cluster.objective import (
    RDInputError,
    binary_entropy,
    l1_distances,
    normalise_mechanistic,
    partition_cost,
)
from semmech.cluster.sweep import first_split, rd_sweep, sweep_arrays
from semmech.cluster.synthetic import make_signature_like_data, make_two_view_data

# Planted data whose two views carry comparable split gains, so a single β shows all three
# regimes as γ moves (checked by test_planted_gains_are_balanced).
PLANTED = dict(
    n_per_mode=50,
    d_e=16,
    d_a=32,
    sem_sep=2.0,
    mech_sep=0.6,
    noise_a=0.3,
    mech_support=8,
    weights="lognormal",
)
BETA = 4.0


@pytest.fixture(scope="module")
def planted():
    return make_two_view_data(**PLANTED, seed=1)


def _reference_median(X, w):
    """Lower weighted median by an explicit scan (slow, obviously right)."""
    out = np.empty(X.shape[1])
    for j in range(X.shape[1]):
        o = np.argsort(X[:, j], kind="stable")
        cw = np.cumsum(w[o])
        out[j] = X[o[np.searchsorted(cw, 0.5 * cw[-1], side="left")], j]
    return out


@pytest.mark.parametrize("n", [1, 2, 7, 16, 17, 40, 333])
def test_weighted_median_is_the_l1_minimiser(n):
    rng = np.random.default_rng(n)
    X = rng.standard_normal((n, 9))
    X[:, 0] = np.round(X[:, 0])  # ties
    w = rng.random(n)
    if n > 3:
        w[:2] = 0.0  # zero weights are ignored
    m = weighted_median(X, w)
    np.testing.assert_array_equal(m, _reference_median(X, w))

    # L1 optimality against every candidate value of every column
    def cost(c, j):
        return float(w @ np.abs(X[:, j] - c))

    for j in range(X.shape[1]):
        assert cost(m[j], j) <= min(cost(c, j) for c in X[:, j]) + 1e-12


@pytest.mark.parametrize("n", [1, 2, 17, 200])
def test_sorted_walk_and_selection_give_the_reference_median_of_any_member_set(n):
    """The two kernels behind the centres: a walk along a shared row order (weights zero
    outside the member set) and a selection among the members only."""
    rng = np.random.default_rng(100 + n)
    X = rng.standard_normal((n, 12))
    X[:, :4] = np.round(X[:, :4])  # ties
    XT = np.ascontiguousarray(X.T)
    order = argsort_rows(XT)
    for trial in range(5):
        members = np.sort(rng.choice(n, size=max(1, n // (trial + 1)), replace=False))
        w = rng.random(members.size)
        w[: members.size // 4] = 0.0
        if not w.sum() > 0:
            w[-1] = 1.0
        ref = _reference_median(X[members], w)
        w_full = np.zeros(n)
        w_full[members] = w
        np.testing.assert_array_equal(weighted_median_sorted(XT, order, w_full), ref)
        np.testing.assert_array_equal(weighted_median_rows(XT, w, members), ref)


def test_medians_of_several_sets_in_one_walk_equal_single_walks():
    rng = np.random.default_rng(7)
    n = 90
    X = np.round(rng.standard_normal((n, 40)), 1)  # many ties
    XT = np.ascontiguousarray(X.T)
    order = argsort_rows(XT)
    w = rng.random(n)
    w[::5] = 0.0
    sets = [np.sort(s) for s in np.array_split(rng.permutation(n), 5)] + [np.arange(0, n, 3)]
    out = weighted_median_sorted_groups(XT, order, w, sets)
    for g, idx in enumerate(sets):
        w_g = np.zeros(n)
        w_g[idx] = w[idx]
        np.testing.assert_array_equal(out[g], weighted_median_sorted(XT, order, w_g))
    assert weighted_median_sorted_groups(XT, order, w, []).shape == (0, 40)
    with pytest.raises(ValueError, match="positive weight"):
        weighted_median_sorted_groups(XT, order, w, [np.array([0, 5])])  # both weigh 0


def test_medians_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(5)
    XT = rng.standard_normal((300, 80))
    w = rng.random(80)
    order = argsort_rows(XT)
    before = torch.get_num_threads()
    try:
        out = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            out.append((weighted_median_rows(XT, w), weighted_median_sorted(XT, order, w)))
            # numba and torch share libgomp: a median must not change torch's thread count
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(out[0][0], out[0][1])


@pytest.mark.parametrize("n,k,d", [(1, 1, 3), (7, 3, 50), (33, 2, 1000), (64, 5, 257), (5, 0, 4)])
def test_l1_distances_are_torch_cdist_bit_for_bit(n, k, d):
    """The L1 kernel sums in torch.cdist's order: the same values, so results made with either
    are the same bytes; a distance depends on its own row and centre only."""
    rng = np.random.default_rng(n * 100 + k)
    X = rng.standard_normal((n, d)) * np.exp(1.5 * rng.standard_normal(d))
    C = rng.standard_normal((k, d)) * 3
    ours = l1_distances(X, C)
    assert ours.shape == (n, k)
    ref = torch.cdist(torch.from_numpy(X), torch.from_numpy(C), p=1).numpy()
    np.testing.assert_array_equal(ours, ref)
    if n > 2 and k > 1:
        np.testing.assert_array_equal(l1_distances(X[1:3], C[1:2]), ref[1:3, 1:2])


def test_workspace_normalisation_equals_the_direct_one(planted):
    ws = RDWorkspace(planted["E"], planted["A"], planted["P"])
    direct = normalise_mechanistic(planted["A"], planted["P"])
    np.testing.assert_array_equal(ws.norm.H0, direct.H0)
    assert ws.norm.scale == direct.scale
    np.testing.assert_array_equal(ws.At, direct.A_tilde)


def test_weighted_median_rejects_zero_total_weight():
    with pytest.raises(ValueError, match="positive weight"):
        weighted_median(np.ones((3, 2)), np.zeros(3))


def test_normalisation_matches_spec(planted):
    A, P = planted["A"], planted["P"]
    norm = normalise_mechanistic(A, P)
    np.testing.assert_array_equal(norm.H0, _reference_median(A, P))
    s = math.sqrt(np.mean(((A - norm.H0) ** 2).sum(1)))
    assert norm.scale == pytest.approx(s, rel=1e-12)
    np.testing.assert_allclose(norm.A_tilde, (A - norm.H0) / s, rtol=0, atol=1e-12)


def _recompute(model, E, A, P):
    """H, D_e, D_a from labels_ and the reported centres, directly from the definitions."""
    w = P / P.sum()
    At = (A - model.H0_) / model.scale_
    lab = model.labels_
    mass = np.bincount(lab, weights=w, minlength=model.n_clusters_)
    H = -float(sum(m * math.log(m) for m in mass if m > 0))
    De = float(w @ ((E - model.cluster_centers_e_[lab]) ** 2).sum(1))
    Da = float(w @ np.abs(At - model.cluster_centers_a_[lab]).sum(1))
    return mass, H, De, Da


@pytest.mark.parametrize("min_size", [1, 3])
@pytest.mark.parametrize("beta,gamma", [(BETA, 0.5), (BETA, 0.1), (6.0, 0.9), (12.0, 0.3)])
def test_descent_is_exact(planted, beta, gamma, min_size):
    E, A, P = planted["E"], planted["A"], planted["P"]
    m = RateDistortionClustering(beta=beta, gamma=gamma, min_cluster_size=min_size).fit(E, A, P)
    hist = m.history_
    assert hist[0].kind == "init" and hist[0].K == 1
    Ls = np.array([h.L for h in hist])
    # every step (assignment, split, merge) is non-increasing in L
    assert np.all(np.diff(Ls) <= 1e-12 * np.abs(Ls[1:]).max()), Ls
    # each accepted split / merge realises exactly the ΔL its test predicted
    for prev, step in zip(hist[:-1], hist[1:]):
        if step.kind in ("split", "merge"):
            assert step.predicted_delta < 0
            assert step.L - prev.L == pytest.approx(step.predicted_delta, abs=1e-10)
    # the reported objective is the objective of labels_ and the centres
    mass, H, De, Da = _recompute(m, E, A, P)
    o = m.objective_
    np.testing.assert_allclose(m.cluster_weights_, mass, rtol=1e-12)
    assert o["H"] == pytest.approx(H, abs=1e-12)
    assert o["D_e"] == pytest.approx(De, rel=1e-10)
    assert o["D_a"] == pytest.approx(Da, rel=1e-10)
    assert o["L"] == pytest.approx(H + m.beta_e * De + m.beta_a * Da, rel=1e-12)
    assert o["L"] == pytest.approx(Ls[-1], rel=1e-12)
    # ... and the centres are the optimal ones for labels_ (P-weighted mean / median)
    ws = RDWorkspace(E, A, P)
    pc = partition_cost(m.labels_, ws.E, ws.At, ws.P, m.beta_e, m.beta_a)
    assert pc.K == m.n_clusters_
    assert pc.L == pytest.approx(o["L"], rel=1e-10)
    # canonical labels: heaviest cluster first
    assert np.all(np.diff(m.cluster_weights_) <= 0)


def test_some_split_is_accepted_and_checked(planted):
    m = RateDistortionClustering(beta=BETA, gamma=0.5).fit(planted["E"], planted["A"], planted["P"])
    assert sum(h.kind == "split" for h in m.history_) >= 3


def test_merge_predicts_its_exact_delta(planted):
    """Force an over-split state (a mode cut in two at random) and check the merge test."""
    E, A, P = planted["E"], planted["A"], planted["P"]
    ws = RDWorkspace(E, A, P)
    est = RateDistortionClustering(beta=1.0, gamma=0.5)
    labels = planted["mode"].copy()
    rng = np.random.default_rng(0)
    half = np.nonzero(labels == 0)[0]
    labels[rng.choice(half, half.size // 2, replace=False)] = 4  # a useless fifth cluster
    centres = [ws.centre(np.nonzero(labels == c)[0]) for c in range(5)]
    cols = [ws.distances(c) for c in centres]
    st = _State(
        labels=labels,
        centres=centres,
        mass=np.bincount(labels, weights=ws.w, minlength=5),
        de=np.stack([c[0] for c in cols], 1),
        da=np.stack([c[1] for c in cols], 1),
        dirty=np.zeros(5, dtype=bool),
    )
    before = est._objective(ws, st)[0]
    predicted = est._merge(ws, st)
    assert predicted is not None and predicted < 0
    assert st.K == 4
    assert est._objective(ws, st)[0] - before == pytest.approx(predicted, abs=1e-12)


def test_planted_gains_are_balanced(planted):
    """The data behind the planted-structure tests really is two-sided (guards the test)."""
    ws = RDWorkspace(planted["E"], planted["A"], planted["P"])
    one = partition_cost(np.zeros_like(planted["mode"]), ws.E, ws.At, ws.P)
    sem = partition_cost(planted["sem"], ws.E, ws.At, ws.P)
    mech = partition_cost(planted["mech"], ws.E, ws.At, ws.P)
    gain_e, gain_a = one.D_e - sem.D_e, one.D_a - mech.D_a
    ln2 = math.log(2)
    # at γ = 0.5 both views pay for their split; at γ = 0.1 / 0.9 only one of them does
    assert 0.5 * BETA * gain_e > ln2 and 0.5 * BETA * gain_a > ln2
    assert 0.1 * BETA * gain_e < ln2 and 0.1 * BETA * gain_a < ln2


def test_planted_structure_is_recovered(planted):
    E, A, P = planted["E"], planted["A"], planted["P"]

    def fit(g):
        return RateDistortionClustering(beta=BETA, gamma=g).fit(E, A, P).labels_

    both = fit(0.5)
    assert adjusted_rand_score(planted["mode"], both) >= 0.9
    sem_end = fit(0.9)
    assert adjusted_rand_score(planted["sem"], sem_end) >= 0.9
    assert adjusted_rand_score(planted["mode"], sem_end) < 0.7
    mech_end = fit(0.1)
    assert adjusted_rand_score(planted["mech"], mech_end) >= 0.9
    assert adjusted_rand_score(planted["mode"], mech_end) < 0.7


def test_gamma_path_moves_between_views(planted):
    """Along γ ∈ [0, 1], agreement with the semantic partition rises and with the
    mechanistic one falls, at the ends matching that view's two groups."""
    E, A, P = planted["E"], planted["A"], planted["P"]
    res = rd_sweep(E, A, P, [BETA], [0.0, 0.1, 0.5, 0.9, 1.0])
    lab = {
        g: grp.sort_values("sample_idx")["label"].to_numpy()
        for g, grp in res.labels.groupby("gamma")
    }
    sem = [adjusted_rand_score(planted["sem"], lab[g]) for g in sorted(lab)]
    mech = [adjusted_rand_score(planted["mech"], lab[g]) for g in sorted(lab)]
    assert mech[0] >= 0.9 and sem[-1] >= 0.9
    assert sem[-1] > sem[0] and mech[0] > mech[-1]


# ---- degenerate input --------------------------------------------------------------


def test_identical_points_give_one_cluster():
    E = np.tile(np.array([[0.6, 0.8]]), (12, 1))
    A = np.tile(np.arange(5.0), (12, 1))
    m = RateDistortionClustering(beta=100.0, gamma=0.5).fit(E, A)
    assert m.n_clusters_ == 1 and np.all(m.labels_ == 0)
    assert m.objective_ == {"L": 0.0, "H": 0.0, "D_e": 0.0, "D_a": 0.0}
    assert m.scale_ == 1.0


def test_single_sample():
    m = RateDistortionClustering().fit(np.ones((1, 3)) / math.sqrt(3), np.ones((1, 4)), [0.4])
    assert m.n_clusters_ == 1 and m.labels_.tolist() == [0]
    assert m.objective_["L"] == 0.0


def test_all_zero_weights_is_an_error():
    with pytest.raises(RDInputError, match="all sample weights are zero.*'q7'"):
        RateDistortionClustering().fit(np.eye(3), np.eye(3), np.zeros(3), name="q7")


def test_some_zero_weights_are_fine(planted):
    E, A, P = planted["E"], planted["A"], planted["P"].copy()
    P[::7] = 0.0
    m = RateDistortionClustering(beta=BETA, gamma=0.5).fit(E, A, P)
    assert m.labels_.shape == (E.shape[0],)
    assert adjusted_rand_score(planted["mode"][P > 0], m.labels_[P > 0]) >= 0.9
    # zero-weight samples change nothing: same partition of the others as without them
    keep = P > 0
    m2 = RateDistortionClustering(beta=BETA, gamma=0.5).fit(E[keep], A[keep], P[keep])
    assert adjusted_rand_score(m2.labels_, m.labels_[keep]) == pytest.approx(1.0)
    mass, H, De, Da = _recompute(m, E, A, P)
    assert m.objective_["D_a"] == pytest.approx(Da, rel=1e-10)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", ["E", "A", "P"])
def test_non_finite_values_are_named(bad, where):
    E, A, P = np.eye(4), np.ones((4, 6)), np.ones(4)
    {"E": E, "A": A, "P": P}[where][(2, 1) if where != "P" else 2] = bad
    with pytest.raises(RDInputError, match=r"NaN/inf.*rows: \[2\].*'prompt_x'"):
        RateDistortionClustering().fit(E, A, P, name="prompt_x")


def test_mismatched_rows_and_shapes():
    with pytest.raises(RDInputError, match="mismatched row counts: E has 4 rows, A has 3"):
        RateDistortionClustering().fit(np.eye(4), np.ones((3, 2)))
    with pytest.raises(RDInputError, match="sample_weight has 5"):
        RateDistortionClustering().fit(np.eye(4), np.ones((4, 2)), np.ones(5))
    with pytest.raises(RDInputError, match="must be 2-D"):
        RateDistortionClustering().fit(np.ones(4), np.ones((4, 2)))
    with pytest.raises(RDInputError, match="negative"):
        RateDistortionClustering().fit(np.eye(2), np.eye(2), [1.0, -1.0])


@pytest.mark.parametrize(
    "params",
    [
        dict(beta=0),
        dict(beta=-1),
        dict(gamma=1.5),
        dict(tol=0),
        dict(min_cluster_size=0),
        dict(min_cluster_size=1.5),
    ],
)
def test_bad_parameters(params):
    with pytest.raises(ValueError):
        RateDistortionClustering(**params).fit(np.eye(3), np.eye(3))


# ---- API, options, determinism, sweep ------------------------------------------------


def test_sklearn_api(planted):
    est = RateDistortionClustering(beta=2.0, gamma=0.3, max_rounds=7)
    assert clone(est).get_params() == est.get_params()
    lab = est.fit_predict(planted["E"], planted["A"], planted["P"])
    np.testing.assert_array_equal(lab, est.labels_)
    assert est.cluster_centers_e_.shape == (est.n_clusters_, planted["E"].shape[1])
    assert est.cluster_centers_a_.shape == (est.n_clusters_, planted["A"].shape[1])
    assert est.cluster_weights_.sum() == pytest.approx(1.0)


def test_semantic_centre_renormalisation_option(planted):
    m = RateDistortionClustering(beta=BETA, gamma=0.5, normalize_semantic_centres=True)
    m.fit(planted["E"], planted["A"], planted["P"])
    np.testing.assert_allclose(np.linalg.norm(m.cluster_centers_e_, axis=1), 1.0)
    with pytest.raises(ValueError, match="disagree"):
        m.fit_workspace(RDWorkspace(planted["E"], planted["A"], planted["P"]))


def test_deterministic_and_cache_independent(planted):
    E, A, P = planted["E"], planted["A"], planted["P"]
    res = rd_sweep(E, A, P, [2.0, BETA], [0.1, 0.5, 0.9], prompt_id="p")
    for i, (beta, gamma) in enumerate(res.table[["beta", "gamma"]].itertuples(index=False)):
        alone = RateDistortionClustering(beta=beta, gamma=gamma).fit(E, A, P)
        shared = res.models[i]
        np.testing.assert_array_equal(alone.labels_, shared.labels_)
        assert alone.objective_ == shared.objective_  # bit-identical
        np.testing.assert_array_equal(alone.cluster_centers_a_, shared.cluster_centers_a_)
    # a cache too small to hold anything (constant eviction) changes nothing either
    tiny = rd_sweep(E, A, P, [2.0, BETA], [0.1, 0.5, 0.9], prompt_id="p", cache_mb=1e-3)
    pd.testing.assert_frame_equal(tiny.table, res.table)
    pd.testing.assert_frame_equal(tiny.history, res.history)


def test_sweep_outputs_and_reproducible_bytes(tmp_path, planted):
    E, A, P = planted["E"], planted["A"], planted["P"]
    paths = []
    for rep in range(2):
        res = rd_sweep(E, A, P, [0.5, 1.0], [0.2, 0.8], prompt_id="q1")
        t = res.table
        assert list(t.columns) == [
            "prompt_id",
            "beta",
            "gamma",
            "beta_e",
            "beta_a",
            "gamma_eff",
            "beta_crit",
            "K",
            "L",
            "H",
            "D_e",
            "D_a",
        ]
        assert len(t) == 4 and t["K"].dtype == np.int64
        assert list(res.labels.columns) == ["prompt_id", "beta", "gamma", "sample_idx", "label"]
        assert len(res.labels) == 4 * E.shape[0]
        arrays = sweep_arrays(res)
        for i, k in enumerate(t["K"]):
            assert arrays[f"cfg{i:03d}_centres_a"].shape == (k, A.shape[1])
            assert arrays[f"cfg{i:03d}_weights"].shape == (k,)
        assert arrays["labels"].shape == (4, E.shape[0])
        out = tmp_path / f"r{rep}"
        io.write_parquet(t, out / "sweep.parquet")
        io.write_parquet(res.labels, out / "labels.parquet")
        io.write_parquet(res.history, out / "history.parquet")
        io.write_npz(out / "c.npz", **arrays)
        paths.append(out)
    for name in ("sweep.parquet", "labels.parquet", "history.parquet", "c.npz"):
        assert (paths[0] / name).read_bytes() == (paths[1] / name).read_bytes(), name
    back = pd.read_parquet(paths[0] / "sweep.parquet")
    assert back["K"].tolist() == res.table["K"].tolist()


REFERENCE_CASES = [
    ("planted", 6.0, 0.9, False),
    ("planted", BETA, 0.1, False),
    ("planted", 12.0, 0.3, False),
    ("planted", BETA, 0.5, True),
    ("uniform", 8.0, 0.5, False),
    ("signature", 4.0, 0.1, False),
    ("signature", 8.0, 0.9, False),
]


@pytest.fixture(scope="module")
def reference_data(planted):
    uniform = make_two_view_data(
        30, d_e=16, d_a=40, sem_sep=1.0, mech_sep=0.6, noise_a=0.3, mech_support=8, seed=2
    )
    signature = make_signature_like_data(160, d_e=48, d_a=600, seed=4)
    return {"planted": planted, "uniform": uniform, "signature": signature}


@pytest.mark.parametrize("data,beta,gamma,renorm", REFERENCE_CASES)
def test_same_bytes_as_the_reference_implementation(reference_data, data, beta, gamma, renorm):
    """The optimised descent against the pre-issue-15 one (tests/rd_reference.py): same
    labels, objective, step history and centres, bit for bit (uniform weights make exact ties
    in the medians' running sums; the signature-like data walks the shared order)."""
    d = reference_data[data]
    kw = dict(beta=beta, gamma=gamma, normalize_semantic_centres=renorm)
    ours = RateDistortionClustering(**kw).fit(d["E"], d["A"], d["P"])
    ref = ReferenceRD(**kw).fit(d["E"], d["A"], d["P"])
    assert ours.n_clusters_ > 1 or data == "uniform"
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    assert ours.objective_ == ref.objective_
    assert [tuple(h) for h in ours.history_] == [tuple(h) for h in ref.history_]
    for name in ("cluster_centers_e_", "cluster_centers_a_", "cluster_weights_", "H0_"):
        np.testing.assert_array_equal(getattr(ours, name), getattr(ref, name))


def test_binary_entropy():
    assert binary_entropy(0.5) == pytest.approx(math.log(2))
    assert binary_entropy(0.0) == 0.0 and binary_entropy(1.0) == 0.0


# ---------------------------------------------------------------------------------------------
# Units of (beta, gamma): critical beta and balanced views (issue "informative default")


def test_critical_beta_is_exactly_where_the_first_split_pays(planted):
    """Just below the critical β the estimator keeps one cluster, just above it splits."""
    E, A, P = planted["E"], planted["A"], planted["P"]
    for gamma in (0.1, 0.5, 0.9):
        ws = RDWorkspace(E, A, P)
        crit = first_split(ws, gamma, 3, 2).critical_beta(gamma)
        assert math.isfinite(crit) and crit > 0
        below = RateDistortionClustering(beta=crit * (1 - 1e-6), gamma=gamma).fit_workspace(ws)
        above = RateDistortionClustering(beta=crit * (1 + 1e-6), gamma=gamma).fit_workspace(ws)
        assert below.n_clusters_ == 1 and above.n_clusters_ >= 2


def test_beta_in_critical_units_means_the_same_on_every_prompt(planted):
    E, A, P = planted["E"], planted["A"], planted["P"]
    for scale in (0.2, 5.0):  # a prompt whose mechanistic spread is smaller or larger
        res = rd_sweep(E, A * scale + 1.0, P, [0.9, 1.1], [0.1, 0.5, 0.9], beta_units="critical")
        t = res.table
        assert (t.loc[t.beta == 0.9, "K"] == 1).all() and (t.loc[t.beta == 1.1, "K"] >= 2).all()
        assert np.allclose(t["beta_crit"], 1.0)
    absolute = rd_sweep(E, A, P, [1.0], [0.5]).table
    assert absolute["beta_e"].iloc[0] == 0.5 and absolute["beta_a"].iloc[0] == 0.5
    assert absolute["gamma_eff"].iloc[0] == 0.5


def test_balanced_views_weigh_both_distortions_equally_at_gamma_one_half(planted):
    E, A, P = planted["E"], planted["A"], planted["P"]
    one = first_split(RDWorkspace(E, A, P), 0.5, 3, 2)
    t = rd_sweep(E, A, P, [2.0], [0.5], view_balance="k1").table.iloc[0]
    # each view's one-cluster distortion costs the same at gamma = 0.5
    assert math.isclose(t.beta_e * one.D_e0, t.beta_a * one.D_a0, rel_tol=1e-12)
    assert math.isclose(t.beta_e * one.D_e0 + t.beta_a * one.D_a0, 2.0, rel_tol=1e-12)
    assert math.isclose(t.gamma_eff, t.beta_e / (t.beta_e + t.beta_a), rel_tol=1e-12)


# ---- minimum cluster size ------------------------------------------------------------------


@pytest.mark.parametrize("beta", [12.0, 30.0])
def test_min_cluster_size_bounds_every_cluster(planted, beta):
    """At high β METHOD's estimator isolates single continuations; with a minimum size no
    cluster ever has fewer members, through splits and assignments alike, at any round."""
    E, A, P = planted["E"], planted["A"], planted["P"]
    free = RateDistortionClustering(beta=beta, gamma=0.3).fit(E, A, P)
    assert np.bincount(free.labels_).min() == 1  # the cascade the option exists to stop
    for min_size in (2, 3):
        m = RateDistortionClustering(beta=beta, gamma=0.3, min_cluster_size=min_size).fit(E, A, P)
        assert 2 <= m.n_clusters_ < free.n_clusters_
        assert np.bincount(m.labels_).min() >= min_size
        # the constraint costs objective, never the other way round
        assert m.objective_["L"] > free.objective_["L"]


def test_min_cluster_size_one_is_method_exactly(planted):
    E, A, P = planted["E"], planted["A"], planted["P"]
    default = RateDistortionClustering(beta=30.0, gamma=0.3).fit(E, A, P)
    one = RateDistortionClustering(beta=30.0, gamma=0.3, min_cluster_size=1).fit(E, A, P)
    assert default.get_params()["min_cluster_size"] == 1
    np.testing.assert_array_equal(default.labels_, one.labels_)
    assert default.history_ == one.history_


def test_a_first_split_below_the_minimum_never_pays():
    """Five near-identical points and one far outlier: the estimator's first proposal
    isolates the outlier. With min_cluster_size=2 that split is never accepted, so the
    critical β is infinite and K stays 1 at any β; without it the split pays."""
    rng = np.random.default_rng(0)
    E = rng.normal(size=(6, 4)) * 0.01
    E[:, 0] += 1.0
    E[5] = -E[5]
    E /= np.linalg.norm(E, axis=1, keepdims=True)
    A = rng.normal(size=(6, 8)) * 0.01
    A[5] += 10.0
    ws = RDWorkspace(E, A)
    assert math.isfinite(first_split(ws, 0.5, 3, 2).critical_beta(0.5))
    assert first_split(ws, 0.5, 3, 2, min_cluster_size=2).critical_beta(0.5) == math.inf
    for beta in (1.0, 1000.0):
        free = RateDistortionClustering(beta=beta, gamma=0.5).fit(E, A)
        held = RateDistortionClustering(beta=beta, gamma=0.5, min_cluster_size=2).fit(E, A)
        assert np.bincount(free.labels_).min() == 1
        assert held.n_clusters_ == 1


def test_sweep_passes_the_minimum_to_every_configuration(planted):
    E, A, P = planted["E"], planted["A"], planted["P"]
    res = rd_sweep(E, A, P, [12.0, 30.0], [0.3], min_cluster_size=3)
    for model in res.models:
        assert model.min_cluster_size == 3
        assert np.bincount(model.labels_).min() >= 3
    counts = res.labels.groupby(["beta", "gamma", "label"]).size()
    assert counts.min() >= 3
