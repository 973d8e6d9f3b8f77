from semmech.logs import job_logging
from semmech.stages.clustering import run_baselines

with job_logging(snakemake.log[0], snakemake.threads):
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    run_baselines(
        prompt_id=snakemake.wildcards.prompt,
        samples=i.samples,
        embeddings=i.embeddings,
        signatures=i.signatures,
        sweep=i.sweep,
        labels=i.labels,
        clusters=i.npz,
        baselines_cfg=p.baselines,
        seed=p.seed,
        out_table=o.table,
        out_labels=o.labels,
        out_silhouette=o.silhouette,
    )
