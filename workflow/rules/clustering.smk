# Rate-distortion clustering and single-view baselines (METHOD §5-§6).
# Per prompt: cluster (the beta x gamma sweep) -> baselines; then one aggregate rule writes the
# all-prompt comparison (the paper's Table 1) and the cross-view silhouettes. The semantic view
# they cluster comes from embedding.smk (its own file: its jobs run in another environment).

from semmech.config import derive_seed


include: "embedding.smk"


# Memory of cluster / baselines: the float32 signatures are held in float64 about four times
# over (raw, normalised, transposed, distances), plus the exact caches of the RD sweep.
CLUSTERING_MEM_MB = lambda wc, input: int(
    1500 + 10 * input.size_mb + config["clustering"]["cache_mb"]
)

# Runtimes (minutes) grow with the sample count: the RD sweep costs about 0.1 s per (beta, gamma)
# configuration per 500 continuations on one core (benchmarks/rd.json), UMAP and HDBSCAN about
# N log N; both with a wide margin for slower nodes and larger attribution signatures.
N_CONT = config["sampling"]["n_continuations"]
N_RD_CONFIGS = len(config["clustering"]["betas"]) * len(config["clustering"]["gammas"])
CLUSTER_RUNTIME = 5 + N_RD_CONFIGS * N_CONT // 1000
BASELINES_RUNTIME = 10 + N_CONT // 25


rule cluster:
    """Rate-distortion clustering over the beta x gamma grid, each configuration from K = 1."""
    input:
        samples=f"{RESULTS}/samples/{{prompt}}.parquet",
        embeddings=f"{RESULTS}/embeddings/{{prompt}}.npz",
        signatures=f"{RESULTS}/attribution/{{prompt}}.safetensors",
        nodes=f"{RESULTS}/attribution/{{prompt}}.nodes.parquet",
    output:
        sweep=f"{RESULTS}/clusters/{{prompt}}.sweep.parquet",
        labels=f"{RESULTS}/clusters/{{prompt}}.labels.parquet",
        history=f"{RESULTS}/clusters/{{prompt}}.history.parquet",
        npz=f"{RESULTS}/clusters/{{prompt}}.npz",
        runtime=f"{BENCH}/cluster/{{prompt}}.runtime.json",
        diagnosis=f"{RESULTS}/clusters/{{prompt}}.diagnosis.json",
    log:
        f"{RESULTS}/logs/cluster/{{prompt}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/cluster/{{prompt}}.tsv"
    conda:
        "../../envs/clustering.yaml"
    threads: 1
    resources:
        mem_mb=CLUSTERING_MEM_MB,
        runtime=CLUSTER_RUNTIME,
    params:
        clustering=config["clustering"],
    script:
        "../scripts/cluster.py"


rule baselines:
    """HDBSCAN after UMAP and K-means on each single view, rate matching, silhouettes."""
    input:
        samples=f"{RESULTS}/samples/{{prompt}}.parquet",
        embeddings=f"{RESULTS}/embeddings/{{prompt}}.npz",
        signatures=f"{RESULTS}/attribution/{{prompt}}.safetensors",
        sweep=f"{RESULTS}/clusters/{{prompt}}.sweep.parquet",
        labels=f"{RESULTS}/clusters/{{prompt}}.labels.parquet",
        npz=f"{RESULTS}/clusters/{{prompt}}.npz",
    output:
        table=f"{RESULTS}/baselines/{{prompt}}.parquet",
        labels=f"{RESULTS}/baselines/{{prompt}}.labels.parquet",
        silhouette=f"{RESULTS}/baselines/{{prompt}}.silhouette.parquet",
    log:
        f"{RESULTS}/logs/baselines/{{prompt}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/baselines/{{prompt}}.tsv"
    conda:
        "../../envs/clustering.yaml"
    threads: 1
    resources:
        mem_mb=CLUSTERING_MEM_MB,
        runtime=BASELINES_RUNTIME,
    params:
        baselines=config["baselines"],
        seed=lambda wc: derive_seed(config["seed"], wc.prompt, "baselines"),
    script:
        "../scripts/baselines.py"


rule aggregate_clustering:
    """Table 1 (RD vs KM-Sem vs KM-Att at matched rate, RD's win rate) and silhouettes."""
    input:
        tables=expand(f"{RESULTS}/baselines/{{prompt}}.parquet", prompt=PROMPT_IDS),
        silhouettes=expand(f"{RESULTS}/baselines/{{prompt}}.silhouette.parquet", prompt=PROMPT_IDS),
        diagnoses=expand(f"{RESULTS}/clusters/{{prompt}}.diagnosis.json", prompt=PROMPT_IDS),
    output:
        csv=f"{RESULTS}/tables/clustering_comparison.csv",
        tex=f"{RESULTS}/tables/clustering_comparison.tex",
        silhouette=f"{RESULTS}/tables/cross_view_silhouette.csv",
        diagnosis=f"{RESULTS}/tables/clustering_diagnosis.csv",
        diagnosis_tex=f"{RESULTS}/tables/clustering_diagnosis.tex",
    log:
        f"{RESULTS}/logs/aggregate_clustering/all.log",
    benchmark:
        f"{RESULTS}/benchmarks/aggregate_clustering/all.tsv"
    conda:
        "../../envs/clustering.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/aggregate_clustering.py"
