from semmech.logs import job_logging
from semmech.stages.model import run_prepare_model

with job_logging(snakemake.log[0], snakemake.threads):
    run_prepare_model(model_cfg=snakemake.config["model"], out_config=snakemake.output.config)
