rule sample:
    """Sample one prompt's continuation distribution with nnsight-traced generation."""
    input:
        MODEL_READY,
        prompt_set=PROMPT_SET_FILE,
    output:
        table=f"{RESULTS}/samples/{{prompt}}.parquet",
        prompt=f"{RESULTS}/samples/{{prompt}}.prompt.json",
    log:
        f"{LOGS}/sample/{{prompt}}.log",
    benchmark:
        f"{BENCH}/sample/{{prompt}}.tsv"
    conda:
        "../../envs/model.yaml"
    threads: 1
    resources:
        mem_mb=lambda wc: model_mem_mb(config["sampling"]["batch_size"], per_item_mb=64),
        runtime=lambda wc: 5 + config["sampling"]["n_continuations"] // 8,
        gpu=gpu_count(),
    params:
        text=lambda wc: PROMPT_TEXT[wc.prompt],
        model=config["model"],
        sampling=config["sampling"],
        seed=lambda wc: prompt_seed(wc.prompt, "sample"),
    script:
        "../scripts/sample.py"
