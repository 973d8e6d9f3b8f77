# Attribution signatures (METHOD §3): one linearised nnsight-traced pass per batch of
# continuations. With `attribution.basis: transcoder` and no `attribution.transcoder_dir`, a
# small transcoder is first trained on the model's own sampled text (rule train_transcoder).


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
