from semmech.baselines import aggregate_clustering_stage
from semmech.logs import job_logging

with job_logging(snakemake.log[0], snakemake.threads):
    i, o = snakemake.input, snakemake.output
    aggregate_clustering_stage(i.tables, i.silhouettes, o.csv, o.tex, o.silhouette)
