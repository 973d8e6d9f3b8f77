# Shared settings of the figure, report and paper rules (figures.smk, report.smk, paper.smk):
# output folders, the example prompt, the summarised (beta, gamma) pairs, and the list of
# targets the default run builds and the manifest hashes. Include before those files and
# before manifest.smk.

from semmech.cluster.grid import on_grid

FIGURES = f"{RESULTS}/figures"
TABLES = f"{RESULTS}/tables"
FIG_CFG = config["figures"]

EXAMPLE_PROMPT = FIG_CFG["example_prompt"] or PROMPT_IDS[0]
if EXAMPLE_PROMPT not in PROMPT_IDS:
    raise ValueError(
        f"figures.example_prompt: {EXAMPLE_PROMPT!r} is not a prompt id of "
        f"{config['prompts']} (ids: {PROMPT_IDS})"
    )

# (beta, gamma) pairs summarised in the cluster tables and browser; the first one is also
# the configuration of the per-prompt figures.
if FIG_CFG["configs"] is None and config["steering"]["configs"] == "auto":
    raise ValueError(
        "figures.configs is null and steering.configs is auto: name the (beta, gamma) pairs "
        "of the cluster tables, browser and per-prompt figures in figures.configs"
    )
SUMMARY_CONFIGS = [
    [float(b), float(g)] for b, g in (FIG_CFG["configs"] or config["steering"]["configs"])
]
for _b, _g in SUMMARY_CONFIGS:
    if not on_grid(config["clustering"]["betas"], config["clustering"]["gammas"], _b, _g):
        raise ValueError(
            f"figures.configs / steering.configs: (beta={_b:g}, gamma={_g:g}) is not on "
            f"the clustering grid betas={config['clustering']['betas']} x "
            f"gammas={config['clustering']['gammas']}"
        )
FIGURE_CONFIG = SUMMARY_CONFIGS[0]

# METHOD §5's beta grid (the schema's default), drawn in the clustering diagnosis figure.
PAPER_BETAS = section_defaults("clustering", {})["betas"]

FIGURE_NAMES = [
    "rate_distortion",
    "gamma_sweep",
    "iteration_trace",
    "two_view_scatter",
    "cross_view_silhouette",
    "feature_lineage",
    "steering_response",
    "clustering_diagnosis",
]


def per_prompt(pattern):
    return expand(pattern, prompt=PROMPT_IDS)


def figure_params(name, **extra):
    return {"name": name, "dpi": FIG_CFG["dpi"], **extra}


def report_targets():
    """Figures, tables, summaries and the browser: what the default run builds and the
    manifest hashes (the paper PDF is a separate target)."""
    return (
        expand(f"{FIGURES}/{{name}}.{{ext}}", name=FIGURE_NAMES, ext=["png", "pdf"])
        + [f"{RESULTS}/report/tables.html", f"{RESULTS}/report/cluster_browser.html"]
        + [f"{TABLES}/case_study.csv", f"{TABLES}/case_study.tex"]
        + expand(
            f"{TABLES}/cluster_summary/{{prompt}}.{{ext}}", prompt=PROMPT_IDS, ext=["csv", "tex"]
        )
        + per_prompt(f"{RESULTS}/summaries/{{prompt}}.json")
    )
