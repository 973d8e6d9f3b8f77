from semmech.embedding import embed_prompt_stage
from semmech.logs import job_logging

with job_logging(snakemake.log[0], snakemake.threads):
    embed_prompt_stage(snakemake.wildcards.prompt, snakemake.input.samples, snakemake.input.prompt,
                       snakemake.params.embedding, snakemake.output.npz)
