# The semantic view (METHOD §4): a contextual embedding of every continuation, pooled over its
# own tokens. Included by clustering.smk; a file of its own because the embed jobs run in
# envs/embedding.yaml and the clustering jobs in envs/clustering.yaml, each stage module
# (semmech.stages.embedding, semmech.stages.clustering) importing only its own environment.

EMBED_RUNTIME = 5 + config["sampling"]["n_continuations"] // 100


rule embed:
    """Contextual embedding of every continuation, pooled over its own tokens."""
    input:
        samples=f"{RESULTS}/samples/{{prompt}}.parquet",
        prompt=f"{RESULTS}/samples/{{prompt}}.prompt.json",
    output:
        npz=f"{RESULTS}/embeddings/{{prompt}}.npz",
    log:
        f"{RESULTS}/logs/embed/{{prompt}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/embed/{{prompt}}.tsv"
    conda:
        "../../envs/embedding.yaml"
    threads: 1
    resources:
        mem_mb=2000 + 4 * config["sampling"]["n_continuations"],
        runtime=EMBED_RUNTIME,
    params:
        embedding=config["embedding"],
    script:
        "../scripts/embed.py"
