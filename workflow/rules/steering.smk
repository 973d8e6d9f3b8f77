# Steering (METHOD §7): per prompt, steer every cluster's signature nodes (RD, KM-Sem, Single
# sources and a random-feature control) and measure the held-out members' demeaned logit;
# then one aggregate rule writes the method comparison (the paper's Table 2).
# Needs TRANSCODER_DIR, TRANSCODER_INPUT and transcoder_mem_mb from common.smk (include
# that first).

# A steered (beta, gamma) that the clustering sweep does not produce, or a k_clamp beyond the
# K-means baselines, failed at start-up (semmech.startup, called in common.smk).

# Steered configurations per prompt: the named ones, or with `auto` up to the whole sweep.
N_STEERED = (
    len(config["clustering"]["betas"]) * len(config["clustering"]["gammas"])
    if config["steering"]["configs"] == "auto"
    else len(config["steering"]["configs"])
)


# Runtime limit in minutes: (intervention, continuation) rows times tokens at a slow CPU's
# ~200 tokens/s, for up to 4 clusters per configuration (a GPU is far faster).
STEERING_RUNTIME = (
    lambda wc: 10
    + (
        4
        * len(config["steering"]["budgets"])
        * (len(config["steering"]["epsilons"]) - 1)
        * 4
        * N_STEERED
        * len(config["steering"]["selections"])
        * min(
            config["sampling"]["n_continuations"],
            # rows per intervention: held-out own members and as many pooled from the rest
            2 * (config["steering"]["max_measured"] or config["sampling"]["n_continuations"]),
        )
        * config["sampling"]["max_new_tokens"]
    )
    // 12000
)


rule steer:
    """Steer each cluster's top-B signature nodes at every epsilon; curves, metrics, generations."""
    input:
        MODEL_READY,
        samples=f"{RESULTS}/samples/{{prompt}}.parquet",
        prompt=f"{RESULTS}/samples/{{prompt}}.prompt.json",
        signatures=f"{RESULTS}/attribution/{{prompt}}.safetensors",
        nodes=f"{RESULTS}/attribution/{{prompt}}.nodes.parquet",
        embeddings=f"{RESULTS}/embeddings/{{prompt}}.npz",
        clusters=f"{RESULTS}/clusters/{{prompt}}.npz",
        baseline_labels=f"{RESULTS}/baselines/{{prompt}}.labels.parquet",
        transcoder=TRANSCODER_INPUT,
    output:
        curves=f"{RESULTS}/steering/{{prompt}}.curves.parquet",
        metrics=f"{RESULTS}/steering/{{prompt}}.metrics.parquet",
        generations=f"{RESULTS}/steering/{{prompt}}.generations.parquet",
        stats=f"{BENCH}/steer/{{prompt}}.stats.json",
    log:
        f"{LOGS}/steer/{{prompt}}.log",
    benchmark:
        f"{BENCH}/steer/{{prompt}}.tsv"
    conda:
        "../../envs/model.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc: model_mem_mb(config["steering"]["batch_size"], per_item_mb=64)
        + transcoder_mem_mb(dtype_bytes(config["model"]["dtype"])),
        runtime=STEERING_RUNTIME,
        gpu=gpu_count(),
    params:
        model=config["model"],
        attribution=config["attribution"],
        steering=config["steering"],
        sampling=config["sampling"],
        transcoder_dir=TRANSCODER_DIR,
        seed=lambda wc: prompt_seed(wc.prompt, "steer"),
    script:
        "../scripts/steer.py"


rule aggregate_steering:
    """Table 2: per method and budget, mean Pearson / Spearman with bootstrap 95% CIs."""
    input:
        metrics=expand(f"{RESULTS}/steering/{{prompt}}.metrics.parquet", prompt=PROMPT_IDS),
    output:
        csv=f"{RESULTS}/tables/steering_comparison.csv",
        tex=f"{RESULTS}/tables/steering_comparison.tex",
    log:
        f"{LOGS}/aggregate_steering/all.log",
    benchmark:
        f"{BENCH}/aggregate_steering/all.tsv"
    conda:
        "../../envs/clustering.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        steering=config["steering"],
        seed=derive_seed(config["seed"], "steering_bootstrap"),
    script:
        "../scripts/aggregate_steering.py"
