"""paper/ compiles with latexmk from a run's figures and tables, and the typeset tables carry
the numbers of the run's CSV files (read back from the PDF with pdftotext).

Skips only when latexmk or pdftotext is absent (CI installs them: latexmk,
texlive-latex-base, texlive-latex-recommended, texlive-latex-extra, poppler-utils).
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pandas as pd
import pytest
from conftest import REPO
from synthetic_run import BUDGETS, PROMPTS, STEER_CONFIG, make_synthetic_run

from semmech import io
from semmech.config import section_defaults
from semmech.report.paper import PaperBuildError, steering_verdict
from semmech.report.tables import (
    STEERING_COLUMNS,
    Column,
    format_value,
    latex_escape,
    latex_tabular,
    steering_comparison,
)
from semmech.stages.figures import FIGURES, run_figure
from semmech.stages.paper import run_paper
from semmech.stages.report import run_cluster_summary

LATEXMK = shutil.which("latexmk")
PDFTOTEXT = shutil.which("pdftotext")
needs_tex = pytest.mark.skipif(
    LATEXMK is None or PDFTOTEXT is None,
    reason="latexmk or pdftotext is not installed (Debian: apt-get install -y latexmk "
    "texlive-latex-base texlive-latex-recommended texlive-latex-extra poppler-utils)",
)
IDS = [p for p, _ in PROMPTS]
EXAMPLE = "java"
FIG = section_defaults("figures")  # the schema's defaults, as the workflow passes them
LATEXMK_NAME = section_defaults("paper")["latexmk"]
NUM = re.compile(r"-?\d+(?:\.\d+)?")
K_CLAMP = 3  # small, so the synthetic prompts fall on both sides of it


def _macros():
    return {
        "RunName": "syn",
        "ModelName": "synthetic",
        "EmbeddingModel": "synthetic",
        "NPrompts": len(IDS),
        "NContinuations": 32,
        "MaxNewTokens": 20,
        "Seed": 0,
        "ExamplePrompt": EXAMPLE,
        "Basis": "mlp_neurons",
        "MaxFeatureNodes": 48,
        "Betas": "0.5, 1, 2",
        "Gammas": "0.3, 0.5, 0.7",
        "BetaUnits": "absolute",
        "MinClusterSize": 1,
        "FigureBeta": "1",
        "FigureGamma": "0.5",
        "Budgets": ", ".join(map(str, BUDGETS)),
    }


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    if LATEXMK is None or PDFTOTEXT is None:
        pytest.skip("latexmk or pdftotext is not installed")
    root = tmp_path_factory.mktemp("paper")
    run = make_synthetic_run(root / "results" / "syn")
    P = lambda pat: [run / pat.format(p=p) for p in IDS]  # noqa: E731
    ex = lambda pat: run / pat.format(p=EXAMPLE)  # noqa: E731
    inputs = {
        "rate_distortion": {"baselines": P("baselines/{p}.parquet")},
        "gamma_sweep": {"sweeps": P("clusters/{p}.sweep.parquet")},
        "iteration_trace": {"history": ex("clusters/{p}.history.parquet")},
        "two_view_scatter": {
            "samples": ex("samples/{p}.parquet"),
            "embeddings": ex("embeddings/{p}.npz"),
            "signatures": ex("attribution/{p}.safetensors"),
            "clusters": ex("clusters/{p}.npz"),
            "labels": ex("clusters/{p}.labels.parquet"),
            "hdbscan": ex("baselines/{p}.labels.parquet"),
        },
        "cross_view_silhouette": {"silhouettes": P("baselines/{p}.silhouette.parquet")},
        "feature_lineage": {
            "clusters": ex("clusters/{p}.npz"),
            "nodes": ex("attribution/{p}.nodes.parquet"),
        },
        "steering_response": {"curves": P("steering/{p}.curves.parquet")},
        "clustering_diagnosis": {"diagnoses": P("clusters/{p}.diagnosis.json")},
    }
    for name, inp in inputs.items():
        run_figure(
            name=name,
            inputs=inp,
            params={
                "prompt": EXAMPLE,
                "config": STEER_CONFIG,
                "top_k": 10,
                "dpi": 60,
                "seed": 0,
                "umap": FIG["umap"],
                "paper_betas": section_defaults("clustering")["betas"],
            },
            png=run / f"figures/{name}.png",
            pdf=run / f"figures/{name}.pdf",
        )
    run_cluster_summary(
        prompt_id=EXAMPLE,
        samples=ex("samples/{p}.parquet"),
        prompt=ex("samples/{p}.prompt.json"),
        labels=ex("clusters/{p}.labels.parquet"),
        clusters=ex("clusters/{p}.npz"),
        sweep=ex("clusters/{p}.sweep.parquet"),
        nodes=ex("attribution/{p}.nodes.parquet"),
        signatures=ex("attribution/{p}.safetensors"),
        embeddings=ex("embeddings/{p}.npz"),
        configs=[STEER_CONFIG],
        n_representatives=FIG["n_representatives"],
        n_features=FIG["n_features"],
        n_browser_features=FIG["browser_features"],
        out_json=root / "summary.json",
        out_csv=ex("tables/cluster_summary/{p}.csv"),
        out_tex=ex("tables/cluster_summary/{p}.tex"),
    )
    pdf = run_paper(
        run_dir=run,
        main_tex=REPO / "paper" / "main.tex",
        out_pdf=root / "build" / "main.pdf",
        latexmk=LATEXMK_NAME,
        k_clamp=K_CLAMP,
        macros=_macros(),
        aliases={"example_cluster_summary.tex": f"tables/cluster_summary/{EXAMPLE}.tex"},
    )
    text = subprocess.run(
        [PDFTOTEXT, "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    return run, pdf, text.replace("\u2212", "-")


def _row(text: str, label: str, n_numbers: int, start: str | None = None) -> list[list[float]]:
    """Numbers on every line of the PDF text that starts with ``label``."""
    rows = []
    for line in text.splitlines():
        s = " ".join(line.split())  # pdftotext -layout pads columns with runs of spaces
        if s.startswith(label + " ") and (
            start is None or re.match(rf"{re.escape(label)}\s+{start}\b", s)
        ):
            nums = [float(x) for x in NUM.findall(s[len(label) :])]
            if len(nums) >= n_numbers:
                rows.append(nums[:n_numbers])
    return rows


@needs_tex
def test_paper_compiles_with_every_figure_and_table(paper):
    run, pdf, text = paper
    assert pdf.read_bytes()[:5] == b"%PDF-"
    pages = int(
        re.search(
            r"Pages:\s+(\d+)",
            subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True).stdout,
        ).group(1)
    )
    assert pages >= 5
    for n in range(1, len(FIGURES) + 1):
        assert f"Figure {n}:" in text
    for title in (
        "Rate–distortion over β",
        "γ sweep",
        "Cross-view silhouette",
        "Feature lineage across β",
        "Steering response on held-out members",
        "Clustering diagnosis",
    ):
        assert title in text, title  # figure text is embedded, so the PDFs were included
    assert "Table 1:" in text and "Table 2:" in text and f"Clusters of prompt {EXAMPLE}" in text
    assert "Figure ??" not in text and "Table ??" not in text and "[?]" not in text
    # the plain verdict on the steering comparison is typeset from the table's numbers
    assert "Does RD beat the other sources?" in text and "against KM-Sem" in " ".join(text.split())
    flat = " ".join(text.split()).replace("\u02dc", "~").replace("\u02c6", "^")
    assert "What is Java <b>known</b> for? 50% & $5 ?caf" in flat  # the escaped prompt
    fonts = subprocess.run(["pdffonts", str(pdf)], capture_output=True, text=True).stdout
    assert "Type 3" not in fonts  # only vector fonts: Type 1 text, TrueType in the figures
    log = (pdf.parent / "main.log").read_text()
    assert "Citation" not in log or "undefined" not in log


@needs_tex
def test_typeset_tables_carry_the_numbers_of_the_results(paper):
    run, _, text = paper
    comp = pd.read_csv(run / "tables/clustering_comparison.csv")
    for r in comp.itertuples(index=False):
        rows = _row(text, r.method, 6)
        assert rows, f"no PDF line for {r.method}"
        got = rows[0]
        want = [r.K, r.H, r.D_e, r.D_a, r.D_gamma, 100 * r.rd_win]
        tol = [0.005, 0.0005, 0.0005, 0.0005, 0.0005, 0.5]
        for g, w, t in zip(got, want, tol):
            assert abs(g - w) <= t + 1e-9, (r.method, got, want)
    steer = pd.read_csv(run / "tables/steering_comparison.csv")
    for r in steer.itertuples(index=False):
        rows = _row(text, f"{r.selection} {r.method}", 15, start=str(int(r.budget)))
        assert rows, f"no PDF line for {r.selection} {r.method} B={r.budget}"
        got = rows[0]
        want = [
            r.budget,
            r.n_clusters,
            r.pearson_mean,
            r.pearson_ci_low,
            r.pearson_ci_high,
            r.spearman_mean,
            r.spearman_ci_low,
            r.spearman_ci_high,
            r.frac_moved_mean,
            r.two_sided_mean,
            r.two_sided_ci_low,
            r.two_sided_ci_high,
            r.two_sided_specificity_mean,
            r.two_sided_specificity_ci_low,
            r.two_sided_specificity_ci_high,
        ]
        tol = [0, 0, 0.005, 0.005, 0.005, 0.005, 0.005, 0.005, 0.005] + [0.0005] * 6
        for g, w, t in zip(got, want, tol):
            assert abs(g - w) <= t + 1e-9, (r.method, r.budget, got, want)
    rd = comp[comp["method"] == "RD"].iloc[0]
    flat = " ".join(text.split())
    assert f"strictly the lowest in {100 * rd.rd_win:.0f}% of the {int(rd.n_settings)}" in flat
    summary = pd.read_csv(run / f"tables/cluster_summary/{EXAMPLE}.csv")
    for r in summary.itertuples(index=False):
        assert f"{r.mass:.3f}" in text
    # how many prompts the sweep leaves steerable, from the diagnosis table's smallest split
    k = pd.read_csv(run / "tables/clustering_diagnosis.csv")["K_min_split"]
    steerable, one, past = ((k >= 2) & (k <= K_CLAMP)).sum(), (k == 1).sum(), (k > K_CLAMP).sum()
    assert steerable + one + past == len(IDS)
    assert (
        f"Of the {len(IDS)} prompts, {steerable} have at least one swept configuration with "
        f"2 ≤ K ≤ {K_CLAMP}, {one} stay at K = 1 everywhere and {past} split only into more "
        f"than {K_CLAMP} clusters" in flat
    )


def test_missing_latexmk_is_named_with_the_fix(tmp_path):
    with pytest.raises(PaperBuildError, match="not found on PATH.*apt-get install"):
        run_paper(
            run_dir=tmp_path,
            main_tex=REPO / "paper" / "main.tex",
            out_pdf=tmp_path / "build" / "main.pdf",
            latexmk="semmech-no-such-latexmk",
            k_clamp=K_CLAMP,
        )


def test_a_run_file_changed_after_writing_never_reaches_the_paper(tmp_path):
    """Tables and figures are checked against their integrity records before they are copied
    into the build (latexmk is never reached: `true` stands in for it)."""
    run = tmp_path / "run"
    io.write_text("\\begin{tabular}{l}x\\end{tabular}\n", run / "tables" / "t.tex")
    (run / "tables" / "t.tex").write_text("\\begin{tabular}{l}y\\end{tabular}\n")
    with pytest.raises(PaperBuildError, match=r"t\.tex: content does not match the sha256"):
        run_paper(
            run_dir=run,
            main_tex=REPO / "paper" / "main.tex",
            out_pdf=tmp_path / "build" / "main.pdf",
            latexmk="true",
            k_clamp=K_CLAMP,
        )


def test_paper_needs_the_run_outputs(tmp_path):
    if LATEXMK is None:
        pytest.skip("latexmk is not installed")
    (tmp_path / "run").mkdir()
    with pytest.raises(PaperBuildError, match="run the workflow first"):
        run_paper(
            run_dir=tmp_path / "run",
            main_tex=REPO / "paper" / "main.tex",
            out_pdf=tmp_path / "build" / "main.pdf",
            latexmk=LATEXMK_NAME,
            k_clamp=K_CLAMP,
        )


def test_latex_cells_escape_text_and_round_numbers():
    assert latex_escape("50% of a_b & {c} #1 ~ ^ \\") == (
        r"50\% of a\_b \& \{c\} \#1 \textasciitilde{} \textasciicircum{} \textbackslash{}"
    )
    assert latex_escape("naïve “quote” 日本 $5 «x»") == r'naïve "quote" ?? $\$$5 ?x?'
    assert format_value(-0.0001, "{:.3f}") == "0.000" and format_value(float("nan")) == "--"
    assert format_value(3) == "3" and format_value(True) == "yes"
    df = pd.DataFrame({"g": ["a", "a", "b"], "x": [1.23456, -2.0, 0.5]})
    tex = latex_tabular(
        df, [Column("g", "group", None, "l"), Column("x", "$x$", "{:.2f}")], group_by="g"
    )
    assert tex.splitlines()[:4] == [
        r"\begin{tabular}{lr}",
        r"\toprule",
        r"group & $x$ \\",
        r"\midrule",
    ]
    assert r"a & 1.23 \\" in tex and r"a & -2.00 \\" in tex
    assert tex.count(r"\midrule") == 2  # after the header and where g changes


def test_steering_comparison_is_seeded_and_brackets_the_mean():
    rng = __import__("numpy").random.default_rng(0)
    rows = [
        {
            "method": m,
            "budget": b,
            "pearson": float(rng.normal(mu, 0.2)),
            "spearman": float(rng.normal(mu, 0.2)),
            "frac_moved": 0.6,
            "specificity": 0.1,
            "selection": "full",
            "two_sided": float(rng.normal(mu / 10, 0.02)),
            "two_sided_specificity": float(rng.normal(0.0, 0.02)),
        }
        for m, mu in (("RD", 0.3), ("KM-Sem", 0.0), ("Random", 0.0))
        for b in (5, 10)
        for _ in range(40)
    ]
    metrics = pd.DataFrame(rows)
    a = steering_comparison(metrics, n_boot=300, seed=1)
    b = steering_comparison(metrics, n_boot=300, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == STEERING_COLUMNS
    assert [(r.budget, r.method) for r in a.itertuples()] == [
        (5, "RD"),
        (5, "KM-Sem"),
        (5, "Random"),
        (10, "RD"),
        (10, "KM-Sem"),
        (10, "Random"),
    ]
    assert (a["pearson_ci_low"] <= a["pearson_mean"]).all()
    assert (a["pearson_mean"] <= a["pearson_ci_high"]).all()
    assert (a["n_clusters"] == 40).all()
    rd = a[a["method"] == "RD"]
    assert (rd["pearson_ci_low"] > 0).all()  # a true mean of 0.3 with 40 clusters is detected
    # dropping a method leaves the others' intervals unchanged
    c = steering_comparison(metrics[metrics["method"] != "KM-Sem"], n_boot=300, seed=1)
    pd.testing.assert_frame_equal(
        c.reset_index(drop=True), a[a["method"] != "KM-Sem"].reset_index(drop=True)
    )


def test_steering_verdict_words_follow_the_intervals():
    def row(method, p, t, n=5):
        return {
            "selection": "full",
            "method": method,
            "budget": 10,
            "n_clusters": n,
            "pearson_mean": sum(p) / 2,
            "pearson_ci_low": p[0],
            "pearson_ci_high": p[1],
            "two_sided_mean": sum(t) / 2,
            "two_sided_ci_low": t[0],
            "two_sided_ci_high": t[1],
        }

    steering = pd.DataFrame(
        [
            row("RD", (0.4, 0.6), (-0.1, -0.05)),
            row("KM-Sem", (0.1, 0.3), (-0.12, -0.02)),  # Pearson below RD's, two-sided overlaps
            row("Single", (0.5, 0.7), (0.01, 0.05)),  # both overlap / above RD's
            row("Random", (0.0, 0.2), (0.0, 0.0), n=0),  # nothing steered
        ]
    )
    text = steering_verdict(steering)
    pearson, two_sided = text.split(". For the ")
    assert pearson.startswith("at B = 10, for the mean Pearson, RD 0.50 [0.40, 0.60]")
    assert "KM-Sem 0.20 [0.10, 0.30]: RD higher" in pearson
    assert "Single 0.60 [0.50, 0.70]: intervals overlap" in pearson
    assert "Random: not measured" in pearson
    assert two_sided.startswith("two-sided response, RD -0.08 [-0.10, -0.05]")
    assert "KM-Sem -0.07 [-0.12, -0.02]: intervals overlap" in two_sided
    assert "Single 0.03 [0.01, 0.05]: RD lower" in two_sided
    none = steering.assign(n_clusters=[0, 5, 5, 5])
    assert steering_verdict(none) == "no RD cluster could be steered at B = 10"
