# Shared set-up: config validation, the prompt set, paths and resource scaling.
# Everything that can be checked without loading a model is checked here, at start-up.

import os
from pathlib import Path

from snakemake.io import regex_from_filepattern
from snakemake.logging import logger
from snakemake.utils import min_version

from semmech.config import derive_seed, section_defaults
from semmech.model.source import DEFAULT_MODEL, model_config_json, model_source
from semmech.model.transcoder_format import is_hub_id
from semmech.prompts import AMBIGQA
from semmech.startup import check_startup, use_report_docutils_settings

min_version("9.0")


# One set of start-up checks for the workflow and the tests (semmech.startup): unknown keys,
# wrong types and impossible values, the prompt set, the steered and summarised
# configurations, the main and embedding models (found offline, with config, tokenizer and
# weights) and a configured transcoder set fail here, with the key named, before any job
# starts; schema defaults are filled in.
_startup = check_startup(config)
config.update(_startup.config)
PROMPTS = _startup.prompts

RUN = config["run"]
RESULTS = f"results/{RUN}"
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"

PROMPT_IDS = [p.id for p in PROMPTS]
PROMPT_TEXT = {p.id: p.text for p in PROMPTS}

# With `prompts: ambigqa` the prompt set is the AmbigQA selection, made at start-up from the
# local data with the same function that rule ambigqa_prompts (prompts.smk) writes down.
AMBIGQA_OUTPUTS = {
    "prompts": f"{RESULTS}/prompts/ambigqa.yaml",
    "metadata": f"{RESULTS}/prompts/ambigqa.parquet",
}
USES_AMBIGQA = config["prompts"] == AMBIGQA
AMBIGQA_DATA = [config["ambigqa"]["path"]] if USES_AMBIGQA else []
# The written prompt set is an input of every sample job (nothing for a prompt file).
PROMPT_SET_FILE = [AMBIGQA_OUTPUTS["prompts"]] if USES_AMBIGQA else []

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
    ambigqa_prompts,
    aggregate_clustering,
    aggregate_steering,
    figure_rate_distortion,
    figure_gamma_sweep,
    figure_iteration_trace,
    figure_two_view_scatter,
    figure_cross_view_silhouette,
    figure_feature_lineage,
    figure_steering_response,
    figure_clustering_diagnosis,
    cluster_browser,
    tables_page,
    case_study,
    manifest,
    paper,


wildcard_constraints:
    prompt="|".join(PROMPT_IDS) if PROMPT_IDS else "[A-Za-z0-9_-]+",


# The model's (text) config.json when it is on disk (local directory, prepared default or
# cached hub snapshot); {} before the default is prepared or for a hub model not yet cached.
# Used only to size job resources.
MODEL_CONFIG = model_config_json(config["model"]["name"]) or {}
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


def dtype_bytes(dtype):
    """Bytes per element of a configured dtype; auto is float32 unless the device is CUDA."""
    if dtype == "auto":
        return 4 if config["model"]["device"] in ("auto", "cpu") else 2
    return 4 if dtype == "float32" else 2


def model_mem_mb(batch_size, per_item_mb=16):
    """Memory for a job holding the model plus activations that grow with the batch size."""
    bytes_per_param = dtype_bytes(config["model"]["dtype"])
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
        "clusters/{prompt}.diagnosis.json",
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
        "tables/clustering_diagnosis.csv",
        "tables/clustering_diagnosis.tex",
        "tables/steering_comparison.csv",
        "tables/steering_comparison.tex",
    ]
    targets = [f"{RESULTS}/{t}" for t in aggregates]
    if USES_AMBIGQA:
        targets += list(AMBIGQA_OUTPUTS.values())
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


# ---- The transcoder set and the sizing of attribution jobs (attribution.smk, steering.smk)

# Where the transcoder basis is read from: the configured set (a local directory or a Hugging
# Face repo id, in circuit-tracer's format), or the trained one.
TRANSCODER_DIR = (
    (config["attribution"]["transcoder_dir"] or f"{RESULTS}/transcoder")
    if config["attribution"]["basis"] == "transcoder"
    else None
)
# A configured set was checked at start-up (semmech.startup), from its file headers and the
# model's config.json: not found, a cross-layer set, a missing layer file, a d_model or layer
# count that does not fit the model all fail there. A hub set not yet cached is fetched by the
# first attribute job when model.allow_download is true; its size is then unknown here.
TRANSCODER_SPEC = (
    _startup.transcoder_set if config["attribution"]["basis"] == "transcoder" else None
)
if (
    config["attribution"]["basis"] == "transcoder"
    and config["attribution"]["transcoder_dir"]
    and TRANSCODER_SPEC is None
):
    logger.warning(
        "transcoder set %s is not in the Hugging Face cache yet; the attribute jobs fetch "
        "it, and their memory requests do not include it",
        config["attribution"]["transcoder_dir"],
    )
# A hub set is not a file the DAG can track: only local sets are rule inputs.
TRANSCODER_INPUT = [TRANSCODER_DIR] if TRANSCODER_DIR and not is_hub_id(str(TRANSCODER_DIR)) else []
# Prompt tokens assumed when sizing per-continuation activation memory.
PROMPT_TOKENS_ESTIMATE = 64


def transcoder_mem_mb(bytes_per_element, batch_size=0):
    """Memory of the transcoder set in a job: the encoder side of every layer and one layer's
    decoder rows (decoders are memory-mapped), plus, per continuation of a batch, the dense
    activations and their gradients at every layer and position."""
    if TRANSCODER_DIR is None:
        return 0
    if TRANSCODER_SPEC is not None:
        set_mb = TRANSCODER_SPEC.memory_mb(bytes_per_element)
        n_features = TRANSCODER_SPEC.n_features
    elif not config["attribution"]["transcoder_dir"]:  # trained by train_transcoder
        n_features = config["transcoder_training"]["n_features"]
        d = MODEL_HIDDEN
        set_mb = int((MODEL_LAYERS + 1) * n_features * d * bytes_per_element / 1e6)
    else:
        return 0
    tokens = PROMPT_TOKENS_ESTIMATE + config["sampling"]["max_new_tokens"]
    per_item = 2 * MODEL_LAYERS * n_features * tokens * bytes_per_element / 1e6
    return set_mb + int(batch_size * per_item)


# Attribution runs in float32 unless `attribution.dtype` says otherwise: half-precision models
# are loaded a second time at twice the width.
ATTRIBUTION_UPCAST_MB = (
    int(1.5 * model_params_billion() * 1e3 * 2)
    if config["attribution"]["dtype"] == "float32"
    and gpu_count()
    and config["model"]["dtype"] != "float32"
    else 0
)
# Bytes per element of the attribution pass (float32 unless attribution.dtype says otherwise).
ATTRIBUTION_BYTES = (
    dtype_bytes(config["model"]["dtype"])
    if config["attribution"]["dtype"] == "model"
    else dtype_bytes(config["attribution"]["dtype"])
)
# Layer count for the transcoder-training resource estimate.
TRANSCODER_LAYERS = len(config["transcoder_training"]["layers"]) or MODEL_LAYERS
