# Shared set-up: config validation, the prompt set, paths and resource scaling.
# Everything that can be checked without loading a model is checked here, at start-up.

import json
import os
from pathlib import Path

from snakemake.io import regex_from_filepattern
from snakemake.utils import min_version

from semmech.config import derive_seed
from semmech.model.source import DEFAULT_MODEL, model_source
from semmech.startup import check_startup, use_report_docutils_settings

min_version("9.0")


# One set of start-up checks for the workflow and the tests (semmech.startup): unknown keys,
# wrong types and impossible values, the prompt file, the main and embedding models (found
# offline, with config, tokenizer and weights) and a transcoder directory fail here, with the
# key named, before any job starts; schema defaults are filled in.
_checked_config, PROMPTS = check_startup(config)
config.update(_checked_config)

RUN = config["run"]
RESULTS = f"results/{RUN}"
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"

PROMPT_IDS = [p.id for p in PROMPTS]
PROMPT_TEXT = {p.id: p.text for p in PROMPTS}

# The Snakemake report renders reStructuredText (workflow/report/*.rst); docutils' raw and
# include directives are switched off for it, so nothing a config value carries can put HTML
# or a local file into a report that is meant to be shared.
use_report_docutils_settings(Path(workflow.basedir) / "workflow" / "report" / "docutils.conf")

# The prepared default model is an input of every model-using rule; a user model is not
# produced by the DAG, so its rules depend on nothing.
# Only the default's (fixed) directory is ever an output of the DAG; a user's model path, whatever
# characters it holds ({, <), never becomes a file pattern.
MODEL_SOURCE = model_source(config["model"]["name"])
DEFAULT_MODEL_SOURCE = model_source(DEFAULT_MODEL)
MODEL_READY = (
    [f"{DEFAULT_MODEL_SOURCE}/config.json"] if config["model"]["name"] == DEFAULT_MODEL else []
)


# Cheap aggregation over prompts runs on the submitting host under a cluster executor; every
# per-prompt job (and the model preparation) is a cluster job.
localrules:
    all,
    aggregate_clustering,
    aggregate_steering,
    figure_rate_distortion,
    figure_gamma_sweep,
    figure_iteration_trace,
    figure_two_view_scatter,
    figure_cross_view_silhouette,
    figure_feature_lineage,
    figure_steering_response,
    cluster_browser,
    tables_page,
    manifest,
    paper,


wildcard_constraints:
    prompt="|".join(PROMPT_IDS) if PROMPT_IDS else "[A-Za-z0-9_-]+",


def model_text_config():
    """The model's (text) config.json when it is on disk; {} before the default is prepared or
    for a hub model not yet cached. Used only to size job resources."""
    cfg_file = Path(MODEL_SOURCE) / "config.json"
    if not cfg_file.is_file():
        return {}
    c = json.loads(cfg_file.read_text())
    return c.get("text_config", c)


MODEL_CONFIG = model_text_config()
MODEL_HIDDEN = int(MODEL_CONFIG.get("hidden_size", MODEL_CONFIG.get("n_embd", 1024)))
MODEL_LAYERS = int(MODEL_CONFIG.get("num_hidden_layers", MODEL_CONFIG.get("n_layer", 24)))


def model_params_billion():
    """Parameter count of the configured model (config hint, else estimated from config.json)."""
    hint = config["resources"]["model_params_billion"]
    if hint != "auto":
        return float(hint)
    h = MODEL_HIDDEN
    inter = MODEL_CONFIG.get("intermediate_size", MODEL_CONFIG.get("n_inner") or 4 * h)
    vocab = MODEL_CONFIG.get("vocab_size", 50000)
    return (vocab * h * 2 + MODEL_LAYERS * (4 * h * h + 3 * h * inter)) / 1e9


def model_mem_mb(batch_size, per_item_mb=16):
    """Memory for a job holding the model plus activations that grow with the batch size."""
    bytes_per_param = (
        4
        if config["model"]["dtype"] in ("float32",)
        or (config["model"]["dtype"] == "auto" and config["model"]["device"] in ("auto", "cpu"))
        else 2
    )
    weights_mb = model_params_billion() * 1e3 * bytes_per_param
    return int(1500 + 1.5 * weights_mb + batch_size * per_item_mb)


def gpu_count():
    """GPUs a model job requests; `auto` cannot probe the login node, so it follows model.device."""
    n = config["resources"]["gpus_per_job"]
    if n != "auto":
        return int(n)
    return 1 if config["model"]["device"].startswith("cuda") else 0


def prompt_seed(prompt, *keys):
    return derive_seed(config["seed"], prompt, *keys)


def stage_targets():
    """Every stage's per-prompt outputs and the aggregates (what the manifest hashes)."""
    per_prompt = [
        "samples/{prompt}.parquet",
        "samples/{prompt}.prompt.json",
        "attribution/{prompt}.safetensors",
        "attribution/{prompt}.nodes.parquet",
        "attribution/{prompt}.completeness.json",
        "embeddings/{prompt}.npz",
        "clusters/{prompt}.sweep.parquet",
        "clusters/{prompt}.labels.parquet",
        "clusters/{prompt}.history.parquet",
        "clusters/{prompt}.npz",
        "baselines/{prompt}.parquet",
        "baselines/{prompt}.labels.parquet",
        "baselines/{prompt}.silhouette.parquet",
        "steering/{prompt}.curves.parquet",
        "steering/{prompt}.metrics.parquet",
        "steering/{prompt}.generations.parquet",
    ]
    aggregates = [
        "tables/clustering_comparison.csv",
        "tables/clustering_comparison.tex",
        "tables/cross_view_silhouette.csv",
        "tables/steering_comparison.csv",
        "tables/steering_comparison.tex",
    ]
    targets = [f"{RESULTS}/{t}" for t in aggregates]
    for t in per_prompt:
        targets += expand(f"{RESULTS}/{t}", prompt=PROMPT_IDS)
    return targets + report_targets()


def all_targets():
    """What `snakemake --cores all` builds: all stage outputs plus the reviewer's manifest."""
    return stage_targets() + [f"{RESULTS}/manifest.json"]


def output_producers():
    """Regex of every rule's output pattern -> rule name, for the manifest's `rule` field."""
    producers = {}
    for r in workflow.rules:
        for pattern in r.output:
            producers[regex_from_filepattern(str(pattern))] = r.name
    return producers
