from semmech.logs import job_logging
from semmech.stages.clustering import run_cluster

with job_logging(snakemake.log[0], snakemake.threads):
    i, o = snakemake.input, snakemake.output
    run_cluster(
        prompt_id=snakemake.wildcards.prompt,
        samples=i.samples,
        embeddings=i.embeddings,
        signatures=i.signatures,
        nodes=i.nodes,
        clustering_cfg=snakemake.params.clustering,
        out_sweep=o.sweep,
        out_labels=o.labels,
        out_history=o.history,
        out_npz=o.npz,
        out_runtime=o.runtime,
        out_diagnosis=o.diagnosis,
    )
