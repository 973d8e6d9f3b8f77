# Shared settings of the figure, report and paper rules (figures.smk, report.smk, paper.smk):
# output folders, the example prompt, the summarised (beta, gamma) pairs, and the list of
# targets the default run builds and the manifest hashes. Include before those files and
# before manifest.smk.

from semmech.startup import summary_configs

FIGURES = f"{RESULTS}/figures"
TABLES = f"{RESULTS}/tables"
FIG_CFG = config["figures"]

# (checked against the prompt ids at start-up, semmech.startup)
EXAMPLE_PROMPT = FIG_CFG["example_prompt"] or PROMPT_IDS[0]

# (beta, gamma) pairs summarised in the cluster tables and browser; the first one is also
# the configuration of the per-prompt figures (checked at start-up, semmech.startup).
SUMMARY_CONFIGS = summary_configs(config)
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
