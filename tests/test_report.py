"""The cluster browser, the per-prompt summaries and the Snakemake report, opened in headless
Chromium through the DevTools protocol: no console errors, a screenshot, every prompt listed.

Chromium tests skip only when the `chromium` binary is absent (CI installs Debian's
`chromium`); everything else runs on a synthetic run directory in the real file formats.
"""

from __future__ import annotations

import base64
import html.parser
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import websocket
from conftest import REPO, run_snakemake
from synthetic_run import PROMPTS, STEER_CONFIG, make_synthetic_run

from semmech import io
from semmech.cluster.grid import ConfigNotInSweepError
from semmech.config import section_defaults
from semmech.report.browser import render_browser
from semmech.report.figures import rate_distortion_points
from semmech.report.summaries import ReportDataError, summarise_prompt
from semmech.stages.figures import BASELINE_COLUMNS, FIGURES, read_tables, run_figure
from semmech.stages.report import run_cluster_browser, run_cluster_summary

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (Debian: apt-get install -y chromium)"
)
IDS = [p for p, _ in PROMPTS]
FIG_CFG = section_defaults("figures")  # the schema's defaults, as the workflow passes them


# --------------------------------------------------------------------------------------
# A minimal DevTools-protocol client (websocket-client, which nnsight already requires)


class Chromium:
    """Headless Chromium with one page, driven over the DevTools protocol."""

    FLAGS = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--mute-audio",
        "--remote-debugging-port=0",
        "--remote-allow-origins=*",
    ]

    def __init__(self, profile: Path, width: int = 1280, height: int = 900):
        profile.mkdir(parents=True, exist_ok=True)
        self.log = open(profile / "chromium.log", "w")
        self.proc = subprocess.Popen(
            [CHROMIUM, *self.FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"chromium did not start; see {profile / 'chromium.log'}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.load(
            urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10)
        )
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True
        )
        self._id = 0
        self.events: list[dict] = []
        for method in ("Runtime.enable", "Log.enable", "Page.enable"):
            self.call(method)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=1,
            mobile=False,
        )

    def call(self, method: str, **params):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, name: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        for ev in self.events:
            if ev.get("method") == name:
                return ev
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.1, deadline - time.monotonic()))
            msg = json.loads(self.ws.recv())
            self.events.append(msg)
            if msg.get("method") == name:
                return msg
        raise TimeoutError(name)

    def settle(self, seconds: float) -> None:
        """Collect events (console messages, exceptions) for a while."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.ws.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                self.events.append(json.loads(self.ws.recv()))
            except websocket.WebSocketTimeoutException:
                break
        self.ws.settimeout(30)

    def open(self, url: str, settle: float = 1.0) -> None:
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired", timeout=60)
        self.settle(settle)

    def evaluate(self, expression: str):
        res = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and failed loads seen since the last open()."""
        out = []
        for ev in self.events:
            m, p = ev.get("method"), ev.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append("exception: " + json.dumps(p["exceptionDetails"])[:500])
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console.error: " + json.dumps(p.get("args"))[:500])
            elif m == "Log.entryAdded" and p["entry"].get("level") == "error":
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            if hasattr(self, "ws"):
                self.ws.close()
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
            self.log.close()


@pytest.fixture
def chromium(tmp_path):
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    browser = Chromium(tmp_path / "chromium-profile")
    yield browser
    browser.close()


# --------------------------------------------------------------------------------------
# A synthetic run, summarised and browsed


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = make_synthetic_run(tmp_path_factory.mktemp("run") / "syn")
    for p in IDS:
        run_cluster_summary(
            prompt_id=p,
            samples=run / f"samples/{p}.parquet",
            prompt=run / f"samples/{p}.prompt.json",
            labels=run / f"clusters/{p}.labels.parquet",
            clusters=run / f"clusters/{p}.npz",
            sweep=run / f"clusters/{p}.sweep.parquet",
            nodes=run / f"attribution/{p}.nodes.parquet",
            signatures=run / f"attribution/{p}.safetensors",
            embeddings=run / f"embeddings/{p}.npz",
            configs=[STEER_CONFIG, [2.0, 0.3]],
            n_representatives=FIG_CFG["n_representatives"],
            n_features=FIG_CFG["n_features"],
            n_browser_features=FIG_CFG["browser_features"],
            out_json=run / f"summaries/{p}.json",
            out_csv=run / f"tables/cluster_summary/{p}.csv",
            out_tex=run / f"tables/cluster_summary/{p}.tex",
        )
    run_cluster_browser(
        summaries=[run / f"summaries/{p}.json" for p in IDS],
        run="syn",
        n_representatives=FIG_CFG["n_representatives"],
        max_members=None,
        out_html=run / "report/cluster_browser.html",
    )
    return run


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections, self.nav, self.external = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section" and "data-prompt-id" in a:
            self.sections.append(a["data-prompt-id"])
        if tag == "li" and "data-prompt-id" in a:
            self.nav.append(a["data-prompt-id"])
        for key in ("src", "href"):
            v = a.get(key) or ""
            if v and not v.startswith(("#", "data:")):
                self.external.append(v)


def test_summary_orders_members_and_features(run_dir):
    s = json.loads((run_dir / "summaries/mercury.json").read_text())
    samples = io.read_parquet(run_dir / "samples/mercury.parquet")
    nodes = io.read_parquet(run_dir / "attribution/mercury.nodes.parquet")
    assert [tuple(c[k] for k in ("beta", "gamma")) for c in s["configs"]] == [
        (1.0, 0.5),
        (2.0, 0.3),
    ]
    for cfg in s["configs"]:
        clusters = cfg["clusters"]
        assert cfg["K"] == len(clusters)
        assert sum(c["n_members"] for c in clusters) == len(samples)
        assert sum(c["mass"] for c in clusters) == pytest.approx(1.0)
        W = samples["weight"].sum()
        for c in clusters:
            assert c["mass"] == pytest.approx(c["weight_sum"] / W)
            d = [m["distance"] for m in c["members"]]
            assert d == sorted(d)
            feats = c["features"]
            assert all(nodes.loc[f["node_idx"], "kind"] == "feature" for f in feats)
            v = [abs(f["deviation"]) for f in feats]
            assert v == sorted(v, reverse=True) and all(x > 0 for x in v)
            if cfg["K"] > 1:
                assert len(feats) == 10  # browser features (default 10): a split departs from H0
    assert len(s["median_features"]) == 10
    table = pd.read_csv(run_dir / "tables/cluster_summary/mercury.csv")
    first = s["configs"][0]["clusters"][0]
    row = table[(table["beta"] == 1.0) & (table["cluster"] == 0)].iloc[0]
    assert row["representative_1"] == first["members"][0]["text"]
    f0 = first["features"][0]
    assert row["top_features"].startswith(f"L{f0['layer']} p{f0['position']}")
    assert f"({f0['deviation']:+.3g})" in row["top_features"]
    tex = (run_dir / "tables/cluster_summary/mercury.tex").read_text()
    assert tex.startswith(r"\begin{longtable}") and f"{first['mass']:.3f}" in tex


def test_summary_rejects_a_configuration_off_the_grid(run_dir):
    p = "java"
    arr = io.read_npz(run_dir / f"clusters/{p}.npz")
    with pytest.raises(
        ConfigNotInSweepError, match=r"\(beta=3, gamma=0.5\) is not in the clustering sweep"
    ):
        summarise_prompt(
            p,
            "x",
            io.read_parquet(run_dir / f"samples/{p}.parquet"),
            io.read_parquet(run_dir / f"clusters/{p}.labels.parquet"),
            arr,
            io.read_parquet(run_dir / f"attribution/{p}.nodes.parquet"),
            np.zeros((32, 54)),
            np.zeros((32, 16)),
            [[3.0, 0.5]],
            n_features=FIG_CFG["browser_features"],
        )


def test_browser_lists_every_prompt_and_loads_nothing_external(run_dir):
    page = (run_dir / "report/cluster_browser.html").read_text()
    links = _Links()
    links.feed(page)
    assert links.sections == IDS and links.nav == IDS
    assert links.external == []
    assert "<script src" not in page and "@import" not in page
    for _, text in PROMPTS:
        assert html.escape(text, quote=True) in page


def test_browser_escapes_text():
    s = {
        "prompt_id": "x",
        "text": "<script>alert(1)</script>",
        "n_continuations": 1,
        "configs": [
            {
                "beta": 1.0,
                "gamma": 0.5,
                "K": 1,
                "clusters": [
                    {
                        "cluster": 0,
                        "mass": 1.0,
                        "n_members": 1,
                        "members": [
                            {"sample_idx": 0, "text": "a <b> & c", "weight": 1.0, "distance": 0.0}
                        ],
                        "features": [
                            {
                                "node_idx": 0,
                                "layer": 1,
                                "position": 2,
                                "feature": 3,
                                "token": "<",
                                "value": 0.5,
                                "deviation": 0.1,
                            }
                        ],
                    }
                ],
            }
        ],
    }
    page = render_browser([s], n_representatives=FIG_CFG["n_representatives"])
    assert "<script>alert" not in page
    two = dict(
        s,
        configs=[
            dict(
                s["configs"][0],
                clusters=[
                    dict(
                        s["configs"][0]["clusters"][0],
                        n_members=3,
                        members=[
                            dict(s["configs"][0]["clusters"][0]["members"][0], text=t)
                            for t in "xyz"
                        ],
                    )
                ],
            )
        ],
    )
    capped = render_browser([two], n_representatives=FIG_CFG["n_representatives"], max_members=2)
    assert (
        capped.count("<tr class=") == 2
        and "and 1 more (farther from the centres)" in capped
        and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    )
    assert "a &lt;b&gt; &amp; c" in page
    with pytest.raises(ReportDataError, match="duplicate prompt ids"):
        render_browser([s, s], n_representatives=FIG_CFG["n_representatives"])


def test_two_view_figure_from_run_files_is_reproducible(run_dir, tmp_path):
    inputs = dict(
        samples=run_dir / "samples/mercury.parquet",
        embeddings=run_dir / "embeddings/mercury.npz",
        signatures=run_dir / "attribution/mercury.safetensors",
        clusters=run_dir / "clusters/mercury.npz",
        labels=run_dir / "clusters/mercury.labels.parquet",
        hdbscan=run_dir / "baselines/mercury.labels.parquet",
    )
    params = {
        "prompt": "mercury",
        "config": STEER_CONFIG,
        "seed": 3,
        "umap": FIG_CFG["umap"],
        "dpi": 60,
    }
    for rep in range(2):
        run_figure(
            name="two_view_scatter",
            inputs=inputs,
            params=params,
            png=tmp_path / f"{rep}.png",
            pdf=tmp_path / f"{rep}.pdf",
        )
    assert (tmp_path / "0.png").read_bytes() == (tmp_path / "1.png").read_bytes()
    assert (tmp_path / "0.pdf").read_bytes() == (tmp_path / "1.pdf").read_bytes()
    with pytest.raises(Exception, match="not in the clustering sweep"):
        run_figure(
            name="two_view_scatter",
            inputs=inputs,
            params={**params, "config": [9.0, 0.5]},
            png=tmp_path / "x.png",
            pdf=tmp_path / "x.pdf",
        )


def test_every_figure_builds_from_run_files(run_dir, tmp_path):
    P = lambda pat: [run_dir / pat.format(p=p) for p in IDS]  # noqa: E731
    cases = {
        "rate_distortion": {"baselines": P("baselines/{p}.parquet")},
        "gamma_sweep": {"sweeps": P("clusters/{p}.sweep.parquet")},
        "iteration_trace": {"history": run_dir / "clusters/java.history.parquet"},
        "cross_view_silhouette": {"silhouettes": P("baselines/{p}.silhouette.parquet")},
        "feature_lineage": {
            "clusters": run_dir / "clusters/java.npz",
            "nodes": run_dir / "attribution/java.nodes.parquet",
        },
        "steering_response": {"curves": P("steering/{p}.curves.parquet")},
    }
    for name, inputs in cases.items():
        png = tmp_path / f"{name}.png"
        run_figure(
            name=name,
            inputs=inputs,
            params={"prompt": "java", "config": STEER_CONFIG, "top_k": 10, "dpi": 60},
            png=png,
            pdf=tmp_path / f"{name}.pdf",
        )
        assert png.stat().st_size > 2000, name
    data = rate_distortion_points(
        read_tables(cases["rate_distortion"]["baselines"], BASELINE_COLUMNS)
    )
    assert sorted(data["method"].unique()) == ["KM-Att", "KM-Sem", "RD"]
    assert len(data) == 3 * len(IDS) * 9  # three methods x prompts x (beta, gamma) grid


@needs_chromium
def test_browser_opens_in_chromium_without_errors(run_dir, chromium, tmp_path):
    chromium.open((run_dir / "report/cluster_browser.html").as_uri())
    assert chromium.errors() == []
    assert (
        chromium.evaluate(
            "[...document.querySelectorAll('section.prompt')].map(s => s.dataset.promptId)"
        )
        == IDS
    )
    assert chromium.evaluate("document.querySelectorAll('#prompt-index li').length") == len(IDS)
    n_clusters = sum(
        len(c["clusters"])
        for p in IDS
        for c in json.loads((run_dir / f"summaries/{p}.json").read_text())["configs"]
    )
    assert chromium.evaluate("document.querySelectorAll('details.cluster').length") == n_clusters
    shot = chromium.screenshot(tmp_path / "browser.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    # the filter box hides prompts that do not match
    visible = chromium.evaluate(
        "(() => { const b = document.getElementById('filter'); b.value = 'Java <b>known';"
        " b.dispatchEvent(new Event('input'));"
        " return [...document.querySelectorAll('section.prompt')].filter(s => s.style.display !== 'none')"
        ".map(s => s.dataset.promptId); })()"
    )
    assert visible == ["java"]
    assert chromium.errors() == []


# --------------------------------------------------------------------------------------
# The Snakemake report of a real smoke run


@pytest.fixture(scope="module")
def smoke_report(smoke_run):
    """The shared full smoke reproduction followed by `snakemake --report`."""
    wd, cfg = smoke_run
    report = wd / "results" / "report.html"
    proc = run_snakemake(wd, "--configfile", str(cfg), "--report", str(report))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return wd, report


def _report_results(page: str) -> dict:
    """The `results` object that the Snakemake report embeds (path -> record)."""
    anchor = page.index('<script id="results">')
    start = page.index("var results = ", anchor) + len("var results = ")
    obj, _ = json.JSONDecoder().raw_decode(page[start:])
    return obj


@pytest.mark.slow
def test_snakemake_report_holds_every_figure_and_the_browser(smoke_report):
    wd, report = smoke_report
    results = _report_results(report.read_text())
    names = {Path(p).name for p in results}
    for fig in FIGURES:
        assert f"{fig}.png" in names, fig
        rec = next(r for p, r in results.items() if Path(p).name == f"{fig}.png")
        assert rec["caption"].strip(), f"{fig} has no caption"
    assert {
        "cluster_browser.html",
        "tables.html",
        "clustering_comparison.csv",
        "steering_comparison.csv",
    } <= names
    browser = next(r for p, r in results.items() if Path(p).name == "cluster_browser.html")
    page = base64.b64decode(browser["data_uri"].split(",", 1)[1]).decode()
    links = _Links()
    links.feed(page)
    smoke_ids = [
        r["id"]
        for r in __import__("yaml").safe_load((REPO / ".test/config/prompts.yaml").read_text())
    ]
    assert links.sections == smoke_ids and links.nav == smoke_ids


@pytest.mark.slow
@needs_chromium
def test_snakemake_report_opens_in_chromium_without_errors(smoke_report, chromium, tmp_path):
    _, report = smoke_report
    chromium.open(report.as_uri(), settle=3.0)
    assert chromium.errors() == []
    cats = chromium.evaluate("Object.keys(categories).sort()")
    assert {"1. Cluster browser", "2. Clustering", "3. Steering", "4. Tables"} <= set(cats)
    shot = chromium.screenshot(tmp_path / "report.png")
    assert shot.stat().st_size > 10_000
    # open the cluster browser inside the report (an iframe with a data: URI) and look again
    path = chromium.evaluate("Object.keys(results).find(p => p.endsWith('cluster_browser.html'))")
    chromium.evaluate(
        f"app.setView({{content: 'html', contentPath: results[{json.dumps(path)}].data_uri,"
        f" resultPath: {json.dumps(path)}}})"
    )
    chromium.settle(3.0)
    assert (
        chromium.evaluate("document.querySelector('iframe').src.slice(0, 15)") == "data:text/html;"
    )
    assert chromium.errors() == []
    assert chromium.screenshot(tmp_path / "report_browser.png").stat().st_size > 10_000
