from semmech.baselines import baselines_stage
from semmech.logs import job_logging

with job_logging(snakemake.log[0], snakemake.threads):
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    baselines_stage(snakemake.wildcards.prompt, i.samples, i.embeddings, i.signatures, i.sweep,
                    i.labels, i.npz, p.baselines, p.seed, o.table, o.labels, o.silhouette)
