"""Single-view baselines, rate matching, silhouettes and the clustering stages end to end."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from synthetic_run import write_signatures

from semmech import io
from semmech.cluster.baselines import (
    COMPARISON_ROWS,
    adapt_hdbscan_params,
    adapt_umap_params,
    comparison_table,
    kmeans_labels,
    run_baselines,
    umap_hdbscan,
)
from semmech.cluster.estimator import RDWorkspace
from semmech.cluster.metrics import (
    ari,
    cross_view_silhouette,
    d_gamma,
    partition_entropy,
    rate_match,
    silhouette,
    win_rate,
)
from semmech.cluster.sweep import rd_sweep
from semmech.cluster.synthetic import make_two_view_data
from semmech.config import section_defaults
from semmech.report.tables import clustering_comparison_latex
from semmech.stages import clustering as stage

PLANTED = dict(
    n_per_mode=30,
    d_e=16,
    d_a=32,
    sem_sep=2.0,
    mech_sep=0.6,
    noise_a=0.3,
    mech_support=8,
    weights="lognormal",
)
BETA = 4.0
BASELINES = section_defaults("baselines")  # the schema's defaults, as a validated config has them
UMAP, HDBSCAN = BASELINES["umap"], BASELINES["hdbscan"]
ONE_CONFIG = section_defaults("clustering", {"betas": [1.0], "gammas": [0.5]})


@pytest.fixture(scope="module")
def planted():
    d = make_two_view_data(**PLANTED, seed=3)
    ws = RDWorkspace(d["E"], d["A"], d["P"])
    d["At"] = ws.At
    return d


# ---- metrics ---------------------------------------------------------------------------


def test_partition_entropy_and_d_gamma():
    assert partition_entropy([0, 0, 1, 1]) == pytest.approx(math.log(2))
    assert partition_entropy([5, 5, 5]) == 0.0
    assert partition_entropy([0, 1], [3.0, 1.0]) == pytest.approx(
        -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    )
    with pytest.raises(ValueError):
        partition_entropy([0, 1], [0.0, 0.0])
    assert d_gamma(2.0, 4.0, 0.25) == pytest.approx(3.5)


def test_ari_counts_noise_as_a_group():
    assert ari([0, 0, 1, 1], [-1, -1, 3, 3]) == pytest.approx(1.0)
    assert ari([0, 0, 1, 1], [-1, 0, -1, 0]) < 0.5


def test_rate_match_picks_closest_rate_then_smaller_k():
    c = pd.DataFrame({"K": [1, 2, 3, 4], "H": [0.0, 0.6, 0.8, 1.0]})
    assert rate_match(0.75, c) == 2
    assert rate_match(0.7, c) == 1  # 0.6 and 0.8 are equally close: the smaller K wins
    assert rate_match(9.0, c) == 3
    with pytest.raises(ValueError):
        rate_match(0.1, c.iloc[:0])


def test_win_rate_counts_ties_apart():
    wr = win_rate(
        np.array([1.0, 2.0, 3.0, 1.0]),
        [np.array([2.0, 2.0, 1.0, 5.0]), np.array([3.0, 2.0, 4.0, 0.5])],
    )
    assert wr == {"win": 0.25, "tie": 0.25, "loss": 0.5}


def test_silhouette_undefined_cases_are_nan():
    X = np.arange(8.0)[:, None]
    assert math.isnan(silhouette(X, np.zeros(8)))
    assert math.isnan(silhouette(X, np.arange(8)))
    assert silhouette(X, [0, 0, 0, 0, 1, 1, 1, 1]) > 0.5


# ---- density baseline ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3, 5, 8, 64, 1000])
def test_umap_and_hdbscan_params_adapt_to_n(n):
    up = adapt_umap_params(n, {"n_neighbors": 15, "n_components": 5, "min_dist": 0.0})
    assert 2 <= up["n_neighbors"] <= max(2, n - 1)
    assert 1 <= up["n_components"] <= max(1, n - 2)
    hp = adapt_hdbscan_params(n, {"min_cluster_size": 5, "min_samples": None})
    assert 2 <= hp["min_cluster_size"] <= max(2, n // 4)
    if n >= 64:
        assert up == {"n_neighbors": 15, "n_components": 5, "min_dist": 0.0, "init": "spectral"}
        assert hp["min_cluster_size"] == 5


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_density_baseline_survives_tiny_n(n):
    rng = np.random.default_rng(n)
    lab = umap_hdbscan(
        rng.standard_normal((n, 6)), "manhattan", seed=0, umap_cfg=UMAP, hdbscan_cfg=HDBSCAN
    )
    assert lab.shape == (n,) and lab.dtype == np.int64


def test_density_baseline_identical_points():
    assert (
        umap_hdbscan(
            np.ones((20, 3)), "euclidean", seed=0, umap_cfg=UMAP, hdbscan_cfg=HDBSCAN
        ).tolist()
        == [0] * 20
    )


def test_hdbscan_finds_only_its_own_view(planted):
    sem = umap_hdbscan(planted["E"], "euclidean", 0, UMAP, HDBSCAN)
    mech = umap_hdbscan(planted["At"], "manhattan", 0, UMAP, HDBSCAN)
    assert ari(planted["sem"], sem) >= 0.9
    assert ari(planted["mech"], mech) >= 0.9
    # neither single view sees the four joint modes
    assert ari(planted["mode"], sem) < 0.7 and ari(planted["mode"], mech) < 0.7
    np.testing.assert_array_equal(sem, umap_hdbscan(planted["E"], "euclidean", 0, UMAP, HDBSCAN))


# ---- K-means, rate matching, silhouettes ------------------------------------------------


def test_kmeans_is_seeded_and_capped(planted):
    a = kmeans_labels(planted["E"], 3, planted["P"], seed=5)
    np.testing.assert_array_equal(a, kmeans_labels(planted["E"], 3, planted["P"], seed=5))
    assert kmeans_labels(planted["E"][:4], 10, planted["P"][:4], seed=0).max() <= 3
    assert kmeans_labels(planted["E"], 1, planted["P"], seed=0).tolist() == [0] * len(planted["P"])


@pytest.fixture(scope="module")
def compared(planted):
    E, A, P = planted["E"], planted["A"], planted["P"]
    sweep = rd_sweep(E, A, P, [1.0, BETA], [0.1, 0.5, 0.9], prompt_id="q")
    rd_labels = {
        (b, g): grp.sort_values("sample_idx")["label"].to_numpy()
        for (b, g), grp in sweep.labels.groupby(["beta", "gamma"])
    }
    res = run_baselines(
        E,
        planted["At"],
        P,
        sweep.table,
        rd_labels,
        seed=0,
        prompt_id="q",
        cfg=section_defaults(
            "baselines", {"kmeans": {"n_init": 4, "k_max": 6}, "silhouette_k": [2, 3, 4, 5]}
        ),
    )
    return sweep, res


def test_comparison_rows(compared, planted):
    sweep, res = compared
    c = res.comparison
    assert len(c) == len(sweep.table) * 7
    assert set(zip(c["method"], c["match"])) == {
        ("rd", "self"),
        ("km_sem", "k"),
        ("km_sem", "rate"),
        ("km_att", "k"),
        ("km_att", "rate"),
        ("hdbscan_sem", "none"),
        ("hdbscan_att", "none"),
    }
    rd = c[c["method"] == "rd"].reset_index(drop=True)
    pd.testing.assert_frame_equal(
        rd[["beta", "gamma", "K", "H", "D_e", "D_a"]],
        sweep.table[["beta", "gamma", "K", "H", "D_e", "D_a"]],
        check_dtype=False,
    )
    assert (rd["ari_rd"] == 1.0).all()
    np.testing.assert_allclose(c["D_gamma"], c["gamma"] * c["D_e"] + (1 - c["gamma"]) * c["D_a"])
    # K-matched K-means has RD's K; rate-matched has the grid's closest rate
    km_k = c[(c["method"] == "km_sem") & (c["match"] == "k")].reset_index(drop=True)
    assert (km_k["K"] <= rd["K"]).all()
    grid = res.labels[res.labels["method"] == "km_sem"]
    Hs = {
        k: partition_entropy(g.sort_values("sample_idx")["label"], planted["P"])
        for k, g in grid.groupby("k")
    }
    km_r = c[(c["method"] == "km_sem") & (c["match"] == "rate")].reset_index(drop=True)
    for h_rd, h_km in zip(rd["H"], km_r["H"]):
        assert abs(h_km - h_rd) == pytest.approx(min(abs(h - h_rd) for h in Hs.values()), abs=1e-9)


def test_rd_beats_single_view_kmeans_on_planted_modes(compared):
    _, res = compared
    c = res.comparison.set_index(["beta", "gamma", "method", "match"])
    rd = c.loc[(BETA, 0.5, "rd", "self")]
    assert rd["K"] == 4
    for m in ("km_sem", "km_att"):
        assert rd["D_gamma"] < c.loc[(BETA, 0.5, m, "rate"), "D_gamma"]


def test_cross_view_silhouette(compared, planted):
    _, res = compared
    s = res.silhouette
    assert {"silhouette_semantic", "silhouette_mechanistic"} <= set(s.columns)
    km2 = s[(s["K"] == 2)].set_index("method")
    # clustering the semantic view scores well there and poorly in the mechanistic one
    assert km2.loc["km_sem", "silhouette_semantic"] > km2.loc["km_sem", "silhouette_mechanistic"]
    assert km2.loc["km_att", "silhouette_mechanistic"] > km2.loc["km_att", "silhouette_semantic"]
    assert len(s[s["method"] == "rd"]) == 6
    one = cross_view_silhouette({"v": (np.eye(3), "euclidean")}, [{"m": "x", "labels": [0, 0, 0]}])
    assert math.isnan(one.loc[0, "silhouette_v"])


def test_comparison_table_shape(compared):
    _, res = compared
    t = comparison_table(res.comparison)
    assert t["method"].tolist()[:3] == ["RD", "KM-Sem (rate-matched)", "KM-Att (rate-matched)"]
    assert (t["n_settings"] == 6).all()
    assert 0.0 <= t.loc[0, "rd_win"] <= 1.0 and 0.0 <= t.loc[0, "rd_tie"] <= 1.0
    assert t.loc[0, "rd_win"] + t.loc[0, "rd_tie"] > 0


def _table1_latex_before_the_move(table: pd.DataFrame) -> str:
    """Table 1's LaTeX exactly as the clustering stage wrote it before it went through
    latex_tabular (the reference for the bytes of tables/clustering_comparison.tex)."""
    lines = [
        r"\begin{tabular}{lrrrrrr}",
        r"\toprule",
        r"Method & $\bar K$ & $H$ & $D_e$ & $D_a$ & $D_\gamma$ & RD lower \\",
        r"\midrule",
    ]
    for r in table.itertuples(index=False):
        win = f"{100 * r.rd_win:.0f}\\%" if np.isfinite(r.rd_win) else "--"
        lines.append(
            f"{r.method} & {r.K:.2f} & {r.H:.3f} & {r.D_e:.3f} & {r.D_a:.3f} & "
            f"{r.D_gamma:.3f} & {win} \\\\"
        )
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def test_table1_latex_bytes_are_unchanged(compared):
    _, res = compared
    table = comparison_table(res.comparison)
    assert clustering_comparison_latex(table) == _table1_latex_before_the_move(table)
    # every row label, a rate that rounds to zero from below, an undefined win rate, K = 1
    edge = pd.DataFrame(
        {
            "method": [label for _, _, label in COMPARISON_ROWS],
            "n_settings": 3,
            "K": [1.0, 2.5, 1.0, 3.0, 4.0, 1.0, 12.345],
            "H": [-1e-17, 0.6931, 0.0, 1.0986, 1.3863, -2e-16, 2.0],
            "D_e": [0.12345, 0.5, 1e-9, 0.25, 0.0, 0.9999, 1.0005],
            "D_a": [3.14159, 2.0, 0.1, 0.0005, 0.0015, 7.0, 0.001],
            "D_gamma": [1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625],
            "rd_win": [0.25, 1.0, 0.0, np.nan, 0.125, 0.995, 0.005],
            "rd_tie": 0.0,
        }
    )
    assert clustering_comparison_latex(edge) == _table1_latex_before_the_move(edge)
    assert "-0.000" in clustering_comparison_latex(edge)


# ---- stages on files ----------------------------------------------------------------------


def _write_inputs(root, pid, d, n_rows=None):
    n = len(d["P"]) if n_rows is None else n_rows
    io.write_parquet(
        pd.DataFrame({"prompt_id": pid, "sample_idx": np.arange(n), "weight": d["P"][:n]}),
        root / "samples" / f"{pid}.parquet",
    )
    io.write_npz(root / "embeddings" / f"{pid}.npz", embeddings=d["E"].astype(np.float32))
    write_signatures(
        root / "attribution" / f"{pid}.safetensors", d["A"], metadata={"basis": "test"}
    )
    d_a = d["A"].shape[1]
    io.write_parquet(
        pd.DataFrame(
            {
                "node_idx": np.arange(d_a),
                "kind": "feature",
                "layer": np.arange(d_a) % 3,
                "position": 1 + np.arange(d_a) % 5,
                "feature": np.arange(d_a),
                "token_str": "tok",
            }
        ),
        root / "attribution" / f"{pid}.nodes.parquet",
    )


def _stage_paths(root, pid):
    s = root / "samples" / f"{pid}.parquet"
    e = root / "embeddings" / f"{pid}.npz"
    a = root / "attribution" / f"{pid}.safetensors"
    c = {
        k: root / "clusters" / f"{pid}.{k}"
        for k in (
            "sweep.parquet",
            "labels.parquet",
            "history.parquet",
            "npz",
            "runtime.json",
            "diagnosis.json",
        )
    }
    b = {
        k: root / "baselines" / f"{pid}.{k}"
        for k in ("parquet", "labels.parquet", "silhouette.parquet")
    }
    return s, e, a, c, b


def _cluster(pid, s, e, a, cfg, c):
    return stage.run_cluster(
        prompt_id=pid,
        samples=s,
        embeddings=e,
        signatures=a,
        nodes=a.with_name(a.name.replace(".safetensors", ".nodes.parquet")),
        clustering_cfg=cfg,
        out_sweep=c["sweep.parquet"],
        out_labels=c["labels.parquet"],
        out_history=c["history.parquet"],
        out_npz=c["npz"],
        out_runtime=c["runtime.json"],
        out_diagnosis=c["diagnosis.json"],
    )


def _baselines(pid, s, e, a, cfg, seed, c, b):
    stage.run_baselines(
        prompt_id=pid,
        samples=s,
        embeddings=e,
        signatures=a,
        sweep=c["sweep.parquet"],
        labels=c["labels.parquet"],
        clusters=c["npz"],
        baselines_cfg=cfg,
        seed=seed,
        out_table=b["parquet"],
        out_labels=b["labels.parquet"],
        out_silhouette=b["silhouette.parquet"],
    )


def test_stages_end_to_end(tmp_path):
    cfg_c = section_defaults(
        "clustering", {"betas": [1.0, BETA], "gammas": [0.5], "max_rounds": 50, "tol": 1e-3}
    )
    cfg_b = section_defaults(
        "baselines", {"kmeans": {"n_init": 3, "k_max": 5}, "silhouette_k": [2, 3]}
    )
    outs = []
    for pid, seed in (("p1", 1), ("p2", 2)):
        d = make_two_view_data(
            n_per_mode=8,
            d_e=8,
            d_a=12,
            sem_sep=2.0,
            mech_sep=0.6,
            noise_a=0.3,
            mech_support=6,
            weights="lognormal",
            seed=seed,
        )
        _write_inputs(tmp_path, pid, d)
        s, e, a, c, b = _stage_paths(tmp_path, pid)
        _cluster(pid, s, e, a, cfg_c, c)
        _baselines(pid, s, e, a, cfg_b, seed, c, b)
        first = {k: p.read_bytes() for k, p in {**c, **b}.items() if k != "runtime.json"}
        _cluster(pid, s, e, a, cfg_c, c)
        _baselines(pid, s, e, a, cfg_b, seed, c, b)
        for k, p in {**c, **b}.items():  # deterministic bytes (runtimes live apart)
            if k != "runtime.json":
                assert p.read_bytes() == first[k], k
        rt = io.read_json(c["runtime.json"])
        assert [x["beta"] for x in rt["configs"]] == [1.0, BETA]
        assert io.read_parquet(c["sweep.parquet"])["prompt_id"].unique().tolist() == [pid]
        outs.append({**b, "diagnosis.json": c["diagnosis.json"]})
    tables = tmp_path / "tables"
    stage.run_aggregate_clustering(
        tables=[o["parquet"] for o in outs],
        silhouettes=[o["silhouette.parquet"] for o in outs],
        diagnoses=[o["diagnosis.json"] for o in outs],
        out_csv=tables / "clustering_comparison.csv",
        out_tex=tables / "clustering_comparison.tex",
        out_silhouette=tables / "cross_view_silhouette.csv",
        out_diagnosis=tables / "clustering_diagnosis.csv",
        out_diagnosis_tex=tables / "clustering_diagnosis.tex",
    )
    diag = pd.read_csv(tables / "clustering_diagnosis.csv")
    assert len(diag) == len(outs) and (diag["effective_dimension"] >= 1).all()
    assert "beta_crit_0.5" in diag.columns and (diag["beta_crit_0.5"] > 0).all()
    t = pd.read_csv(tables / "clustering_comparison.csv")
    assert t["method"].iloc[0] == "RD" and (t["n_settings"] == 4).all()
    tex = (tables / "clustering_comparison.tex").read_text()
    assert tex.startswith(r"\begin{tabular}") and "KM-Att (rate-matched)" in tex
    sil = pd.read_csv(tables / "cross_view_silhouette.csv")
    assert {"silhouette_semantic_mean", "silhouette_mechanistic_count"} <= set(sil.columns)


def test_stage_rejects_row_mismatch(tmp_path):
    d = make_two_view_data(n_per_mode=4, d_e=4, d_a=6, seed=0)
    _write_inputs(tmp_path, "bad", d, n_rows=15)  # samples table has one row fewer
    s, e, a, c, _ = _stage_paths(tmp_path, "bad")
    with pytest.raises(io.CorruptInputError, match="expected 15 rows.*'bad'"):
        _cluster("bad", s, e, a, ONE_CONFIG, c)
    assert not c["sweep.parquet"].exists()


def test_stage_names_prompt_with_nan(tmp_path):
    d = make_two_view_data(n_per_mode=4, d_e=4, d_a=6, seed=0)
    d["A"][3, 2] = np.nan
    _write_inputs(tmp_path, "nanny", d)
    s, e, a, c, _ = _stage_paths(tmp_path, "nanny")
    with pytest.raises(ValueError, match="NaN/inf.*'nanny'"):
        _cluster("nanny", s, e, a, ONE_CONFIG, c)


def test_umap_with_numba_disk_cache_gives_the_same_map_in_a_fresh_process(tmp_path):
    """The first process compiles UMAP's numba functions and stores them; the second loads
    them from disk. Both maps must be bit-identical, and the cache must have been written."""
    script = (
        "import sys, numpy as np\n"
        "from semmech.numba_cache import load_umap, enable_caching\n"
        "umap = load_umap()\n"
        "assert enable_caching() == 0  # every umap/pynndescent dispatcher is already cached\n"
        "X = np.random.default_rng(0).standard_normal((40, 16))\n"
        "Y = umap.UMAP(metric='cosine', random_state=0, n_jobs=1, n_neighbors=8).fit_transform(X)\n"
        "np.save(sys.argv[1], Y)\n"
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    maps = []
    for i in range(2):
        out = tmp_path / f"map{i}.npy"
        proc = subprocess.run(
            [sys.executable, "-c", script, str(out)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        maps.append(np.load(out))
        if i == 0:
            assert any((tmp_path / "cache").rglob("*.nbi")), "no numba cache index was written"
    np.testing.assert_array_equal(maps[0], maps[1])
