rule prepare_model:
    """Dequantise the offline default GGUF once into a safetensors model directory."""
    output:
        config=f"{DEFAULT_MODEL_SOURCE}/config.json",
    log:
        f"{LOGS}/prepare_model.log",
    benchmark:
        f"{BENCH}/prepare_model.tsv"
    conda:
        "../../envs/model.yaml"
    threads: 2
    resources:
        mem_mb=lambda wc: model_mem_mb(0) + 2000,
        runtime=20,
    script:
        "../scripts/prepare_model.py"
