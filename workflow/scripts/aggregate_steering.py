from semmech.logs import job_logging
from semmech.steering import aggregate_steering_stage

with job_logging(snakemake.log[0], snakemake.threads):
    p = snakemake.params
    aggregate_steering_stage(snakemake.input.metrics, p.steering, p.seed, snakemake.output.csv,
                             snakemake.output.tex)
