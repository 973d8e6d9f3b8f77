# Attribution signatures (METHOD §3): one linearised nnsight-traced pass per batch of
# continuations. With `attribution.basis: transcoder` and no `attribution.transcoder_dir`, a
# small transcoder is first trained on the model's own sampled text (rule train_transcoder).

from snakemake.logging import logger

from semmech.model.transcoder_format import (
    TranscoderNotFoundError,
    check_configured_transcoders,
    is_hub_id,
)

# Where the transcoder basis is read from: the configured set (a local directory or a Hugging
# Face repo id, in circuit-tracer's format), or the trained one.
TRANSCODER_DIR = (
    (config["attribution"]["transcoder_dir"] or f"{RESULTS}/transcoder")
    if config["attribution"]["basis"] == "transcoder"
    else None
)
# A configured set is checked at start-up, from its file headers and the model's config.json:
# not found, a cross-layer set, a missing layer file, a d_model or layer count that does not
# fit the model all fail here. A hub set not yet cached is fetched by the first attribute job
# when model.allow_download is true; its size is then unknown here.
TRANSCODER_SPEC = None
if config["attribution"]["basis"] == "transcoder" and config["attribution"]["transcoder_dir"]:
    try:
        TRANSCODER_SPEC = check_configured_transcoders(
            config["attribution"]["transcoder_dir"], config["model"]["name"]
        )
    except TranscoderNotFoundError:
        if not config["model"]["allow_download"]:
            raise
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


rule attribute:
    """Attribution signature of every continuation of one prompt (linearised, traced with nnsight)."""
    input:
        MODEL_READY,
        samples=f"{RESULTS}/samples/{{prompt}}.parquet",
        prompt=f"{RESULTS}/samples/{{prompt}}.prompt.json",
        transcoder=TRANSCODER_INPUT,
    output:
        signatures=f"{RESULTS}/attribution/{{prompt}}.safetensors",
        nodes=f"{RESULTS}/attribution/{{prompt}}.nodes.parquet",
        completeness=f"{RESULTS}/attribution/{{prompt}}.completeness.json",
    log:
        f"{LOGS}/attribute/{{prompt}}.log",
    benchmark:
        f"{BENCH}/attribute/{{prompt}}.tsv"
    conda:
        "../../envs/model.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc: model_mem_mb(config["attribution"]["batch_size"], per_item_mb=80)
        + ATTRIBUTION_UPCAST_MB
        + transcoder_mem_mb(ATTRIBUTION_BYTES, config["attribution"]["batch_size"]),
        runtime=lambda wc: 5 + config["sampling"]["n_continuations"] // 16,
        gpu=gpu_count(),
    params:
        model=config["model"],
        attribution=config["attribution"],
        transcoder_dir=TRANSCODER_DIR,
    script:
        "../scripts/attribute.py"


rule train_transcoder:
    """Train small per-layer transcoders on the model's own sampled continuations."""
    input:
        MODEL_READY,
        samples=expand(f"{RESULTS}/samples/{{prompt}}.parquet", prompt=PROMPT_IDS),
        prompts=expand(f"{RESULTS}/samples/{{prompt}}.prompt.json", prompt=PROMPT_IDS),
    output:
        directory(f"{RESULTS}/transcoder"),
    log:
        f"{LOGS}/train_transcoder.log",
    benchmark:
        f"{BENCH}/train_transcoder.tsv"
    conda:
        "../../envs/model.yaml"
    threads: 2
    resources:
        # 8 layers' (input, output) activations at a time, float32, plus the model.
        mem_mb=lambda wc: model_mem_mb(0)
        + int(16 * 8 * config["transcoder_training"]["n_tokens"] * MODEL_HIDDEN / 1e6)
        + int(24 * config["transcoder_training"]["n_features"] * MODEL_HIDDEN / 1e6),
        runtime=lambda wc: 10
        + TRANSCODER_LAYERS * max(1, config["transcoder_training"]["steps"] // 150),
        gpu=gpu_count(),
    params:
        model=config["model"],
        training=config["transcoder_training"],
        seed=derive_seed(config["seed"], "transcoder"),
    script:
        "../scripts/train_transcoder.py"
