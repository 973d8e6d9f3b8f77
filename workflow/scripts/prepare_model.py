from semmech.logs import job_logging
from semmech.stages import prepare_model

with job_logging(snakemake.log[0], snakemake.threads):
    prepare_model(snakemake.config["model"], snakemake.output.config)
