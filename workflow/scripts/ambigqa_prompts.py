from semmech.logs import job_logging
from semmech.stages.prompts import run_ambigqa_prompts

with job_logging(snakemake.log[0], snakemake.threads):
    run_ambigqa_prompts(
        ambigqa_cfg=snakemake.params.ambigqa,
        out_prompts=snakemake.output.prompts,
        out_metadata=snakemake.output.metadata,
    )
