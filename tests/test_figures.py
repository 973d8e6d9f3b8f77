"""Each figure function on small synthetic frames shaped like the workflow's outputs: the
figure is not empty and has the expected panels, axes and series; saving is byte-stable."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.container import BarContainer
from matplotlib.image import AxesImage

from semmech.config import section_defaults
from semmech.report import figures as F
from semmech.report.summaries import top_feature_sets
from semmech.stages.figures import run_figure, save_figure

PROMPTS = ["a", "b", "c"]
BETAS = [0.5, 1.0, 1.5]
GAMMAS = [0.3, 0.5, 0.7]


@pytest.fixture
def sweep():
    rng = np.random.default_rng(0)
    rows = []
    for p in PROMPTS:
        for b in BETAS:
            for g in GAMMAS:
                K = int(1 + round(2 * b))
                rows.append(
                    {
                        "prompt_id": p,
                        "beta": b,
                        "gamma": g,
                        "K": K,
                        "L": 1.0,
                        "H": float(np.log(K)),
                        "D_e": 0.5 / K + rng.normal(0, 0.01),
                        "D_a": 1.0 / K + rng.normal(0, 0.01),
                    }
                )
    return pd.DataFrame(rows)


def test_rate_distortion_has_one_panel_per_gamma_and_one_curve_per_method(sweep):
    rows = []
    for r in sweep.itertuples(index=False):
        for m, f in (("RD", 1.0), ("KM-Sem", 1.2), ("KM-Att", 1.1)):
            rows.append(
                {
                    "prompt_id": r.prompt_id,
                    "method": m,
                    "beta": r.beta,
                    "gamma": r.gamma,
                    "H": r.H,
                    "D_gamma": f * (r.gamma * r.D_e + (1 - r.gamma) * r.D_a),
                }
            )
    fig = F.rate_distortion(pd.DataFrame(rows))
    axes = fig.axes
    assert len(axes) == len(GAMMAS)
    assert [ax.get_title() for ax in axes] == [f"γ = {g:g}" for g in GAMMAS]
    for ax in axes:
        assert ax.get_xlabel() == "rate H(C) [nats]"
        series = {c.get_label(): c.lines[0] for c in ax.containers}  # errorbar containers
        assert sorted(series) == ["KM-Att", "KM-Sem", "RD"]
        for line in series.values():  # one point per beta, mean over prompts
            assert len(line.get_xdata()) == len(BETAS)
        rd, km = series["RD"], series["KM-Sem"]
        assert np.all(np.asarray(rd.get_ydata()) < np.asarray(km.get_ydata()))
        assert sum(t.get_text().startswith("β=") for t in ax.texts) == len(BETAS)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["RD", "KM-Sem", "KM-Att"]


def test_gamma_sweep_plots_k_and_both_distortions_per_beta(sweep):
    fig = F.gamma_sweep(sweep)
    assert len(fig.axes) == 3
    assert [ax.get_ylabel() for ax in fig.axes] == [
        "clusters K",
        "semantic distortion $D_e$",
        "mechanistic distortion $D_a$",
    ]
    for ax in fig.axes:
        labels = [l.get_label() for l in ax.get_lines()]
        assert labels == [f"β = {b:g}" for b in BETAS]
        for l in ax.get_lines():
            np.testing.assert_allclose(l.get_xdata(), GAMMAS)
        assert sum(isinstance(c, PolyCollection) for c in ax.collections) == len(BETAS)  # SE bands
    k_line = fig.axes[0].get_lines()[0]
    np.testing.assert_allclose(k_line.get_ydata(), [2, 2, 2])  # K = 1 + round(2 * 0.5)


def test_iteration_trace_marks_each_step_kind():
    rows = []
    for b in BETAS:
        seq = [
            ("init", 3.0, 1),
            ("assign", 2.5, 1),
            ("split", 2.0, 2),
            ("assign", 1.8, 2),
            ("split", 1.6, 3),
            ("merge", 1.5, 2),
            ("assign", 1.5, 2),
        ]
        for g in GAMMAS:
            for step, (kind, L, K) in enumerate(seq):
                rows.append(
                    {
                        "prompt_id": "a",
                        "beta": b,
                        "gamma": g,
                        "step": step,
                        "round": step,
                        "kind": kind,
                        "L": L * b,
                        "K": K,
                        "predicted_delta": 0.0,
                    }
                )
    fig = F.iteration_trace(pd.DataFrame(rows), gamma=0.5, prompt_id="a")
    main = [ax for ax in fig.axes if ax.get_xlabel() == "step"]
    assert len(main) == len(BETAS)
    assert [ax.get_title() for ax in main] == [f"β = {b:g}, γ = 0.5" for b in BETAS]
    for ax in main:
        kinds = sorted(c.get_label() for c in ax.collections if isinstance(c, PathCollection))
        assert kinds == ["assign", "init", "merge", "split"]
        assert len(ax.get_lines()[0].get_xdata()) == 7
    assert "'a'" in fig.get_suptitle()
    assert sorted(t.get_text() for t in fig.legends[0].get_texts()) == [
        "assign",
        "init",
        "merge",
        "split",
    ]
    with pytest.raises(F.FigureDataError, match="no history rows"):
        F.iteration_trace(pd.DataFrame(rows), gamma=0.9)


def test_two_view_scatter_has_a_panel_per_view_and_labelling():
    rng = np.random.default_rng(1)
    n = 30
    coords = {"semantic view": rng.normal(size=(n, 2)), "mechanistic view": rng.normal(size=(n, 2))}
    lab = {
        "RD": np.repeat([0, 1, 2], 10),
        "HDBSCAN on semantics": np.r_[np.zeros(25), -np.ones(5)],
        "HDBSCAN on mechanisms": np.repeat([0, 1], 15),
    }
    fig = F.two_view_scatter(coords, lab, weights=rng.random(n), title="t")
    assert len(fig.axes) == 6
    assert [fig.axes[j].get_title() for j in range(2)] == [
        "semantic view (UMAP)",
        "mechanistic view (UMAP)",
    ]
    assert [fig.axes[2 * i].get_ylabel() for i in range(3)] == [f"coloured by {k}" for k in lab]
    first = fig.axes[0]
    groups = [c for c in first.collections if isinstance(c, PathCollection)]
    assert sorted(c.get_label() for c in groups) == ["0", "1", "2"]
    assert sum(len(c.get_offsets()) for c in groups) == n
    noise_panel = fig.axes[2]
    assert "noise" in [c.get_label() for c in noise_panel.collections]
    with pytest.raises(F.FigureDataError, match="must have shape"):
        F.two_view_scatter(coords, {"RD": np.zeros(n - 1)})


def test_umap_2d_is_deterministic_and_handles_tiny_sets():
    X = np.random.default_rng(2).normal(size=(3, 5))
    umap = section_defaults("figures")["umap"]
    Y = F.umap_2d(X, "euclidean", 0, **umap)
    assert Y.shape == (3, 2) and np.isfinite(Y).all()
    with pytest.raises(F.FigureDataError, match="NaN"):
        F.umap_2d(np.full((4, 2), np.nan), "euclidean", 0, **umap)


def test_cross_view_silhouette_bars_per_scored_view():
    rows = []
    for p in PROMPTS:
        for cv in ("semantic", "mechanistic", "both (RD)"):
            for sv in ("semantic", "mechanistic"):
                for k in (2, 3, 4, 5):
                    rows.append(
                        {
                            "prompt_id": p,
                            "clustered_view": cv,
                            "score_view": sv,
                            "K": k,
                            "silhouette": 0.5 if cv == sv else 0.0,
                        }
                    )
    fig = F.cross_view_silhouette(pd.DataFrame(rows))
    assert [ax.get_title() for ax in fig.axes] == [
        "clustered in the semantic view",
        "clustered in the mechanistic view",
        "clustered in both (RD)",
    ]
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * 4  # two scored views x four K
    heights = {
        c.get_label(): [p.get_height() for p in c.patches]
        for c in ax.containers
        if isinstance(c, BarContainer)
    }
    assert heights["scored in semantic"] == [0.5] * 4
    assert heights["scored in mechanistic"] == [0.0] * 4
    assert [t.get_text() for t in ax.get_xticklabels()] == ["2", "3", "4", "5"]


def test_feature_lineage_heatmaps_between_consecutive_betas():
    mask = np.ones(10, dtype=bool)
    mask[-2:] = False  # token nodes never count
    centres = {
        0.5: np.array([[5, 4, 3, 0, 0, 0, 0, 0, 9, 9.0]]),
        1.0: np.array([[5, 4, 3, 0, 0, 0, 0, 0, 9, 9.0], [0, 0, 0, 0, 0, 3, 4, 5, 9, 9.0]]),
        1.5: np.array([[5, 4, 0, 3, 0, 0, 0, 0, 9, 9.0], [0, 0, 0, 0, 0, 3, 4, 5, 9, 9.0]]),
    }
    levels = [
        (b, top_feature_sets(c, mask, 3), np.ones(len(c)) / len(c)) for b, c in centres.items()
    ]
    assert levels[0][1] == [frozenset({0, 1, 2})]
    table = F.lineage_table(levels)
    j = table.set_index(["beta_from", "cluster_from", "cluster_to"])["jaccard"]
    assert j[(0.5, 0, 0)] == 1.0 and j[(0.5, 0, 1)] == 0.0
    assert j[(1.0, 0, 0)] == pytest.approx(2 / 4) and j[(1.0, 1, 1)] == 1.0
    # zero entries are no features; two featureless clusters have no defined similarity
    flat = F.lineage_table(
        [
            (0.5, top_feature_sets(np.zeros((1, 10)), mask, 3), np.ones(1)),
            (1.0, top_feature_sets(np.zeros((1, 10)), mask, 3), np.ones(1)),
        ]
    )
    assert flat["jaccard"].isna().all()
    assert top_feature_sets(np.array([[0, 2.0, 0, 0, 0, 0, 0, 0, 9, 9]]), mask, 3) == [
        frozenset({1})
    ]
    fig = F.feature_lineage(table, gamma=0.5, prompt_id="a", top_k=3)
    images = [(ax, im) for ax in fig.axes for im in ax.images if isinstance(im, AxesImage)]
    assert len(images) == 2
    assert images[0][1].get_array().shape == (1, 2) and images[1][1].get_array().shape == (2, 2)
    assert [ax.get_title() for ax, _ in images] == ["β 0.5 → 1", "β 1 → 1.5"]
    assert images[0][0].get_ylabel() == "cluster at β = 0.5"
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)


def test_steering_response_one_panel_per_budget_with_bands():
    rows = []
    for m, slope in (("RD", 1.0), ("KM-Sem", 0.0), ("Single", 0.5), ("Random", 0.0)):
        for B in (5, 10):
            for u in range(4):
                for eps in (-1.0, -0.5, 0.0, 0.5, 1.0):
                    rows.append(
                        {
                            "method": m,
                            "budget": B,
                            "epsilon": eps,
                            "unit": f"p|{u}",
                            "delta": slope * eps + 0.01 * u,
                            "delta_sem": 0.1,
                        }
                    )
    fig = F.steering_response(pd.DataFrame(rows))
    assert [ax.get_title() for ax in fig.axes] == [
        "budget B = 5 features",
        "budget B = 10 features",
    ]
    for ax in fig.axes:
        lines = [l for l in ax.get_lines() if l.get_label().endswith("(n=4)")]
        assert [l.get_label().split(" ")[0] for l in lines] == ["RD", "KM-Sem", "Single", "Random"]
        rd = lines[0]
        np.testing.assert_allclose(rd.get_xdata(), [-1, -0.5, 0, 0.5, 1])
        np.testing.assert_allclose(rd.get_ydata(), np.array([-1, -0.5, 0, 0.5, 1]) + 0.015)
        assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 4
    assert fig.axes[0].get_xlabel() == "steering strength ε"


def test_missing_columns_and_empty_frames_are_named():
    with pytest.raises(F.FigureDataError, match=r"missing columns \['D_a'\]"):
        F.gamma_sweep(
            pd.DataFrame(
                {"prompt_id": ["a"], "beta": [1.0], "gamma": [0.5], "K": [1], "D_e": [0.1]}
            )
        )
    with pytest.raises(F.FigureDataError, match="no rows"):
        F.steering_response(pd.DataFrame(columns=["method", "budget", "epsilon", "delta", "unit"]))
    with pytest.raises(F.FigureDataError, match="unknown figure"):
        run_figure(name="nope", inputs={}, params={}, png="x.png", pdf="x.pdf")


def test_saved_png_and_pdf_are_nonempty_and_byte_identical(tmp_path, sweep):
    digests = []
    for rep in range(2):
        png, pdf = tmp_path / f"f{rep}.png", tmp_path / f"f{rep}.pdf"
        save_figure(F.gamma_sweep(sweep), png, pdf, dpi=80)
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"
        assert b"CreationDate" not in pdf.read_bytes()
        digests.append(
            (
                hashlib.sha256(png.read_bytes()).hexdigest(),
                hashlib.sha256(pdf.read_bytes()).hexdigest(),
            )
        )
    assert digests[0] == digests[1]
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind
