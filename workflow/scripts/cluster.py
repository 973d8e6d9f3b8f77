from semmech.logs import job_logging
from semmech.rd import cluster_prompt_stage

with job_logging(snakemake.log[0], snakemake.threads):
    i, o = snakemake.input, snakemake.output
    cluster_prompt_stage(snakemake.wildcards.prompt, i.samples, i.embeddings, i.signatures,
                         snakemake.params.clustering, o.sweep, o.labels, o.history, o.npz, o.runtime)
