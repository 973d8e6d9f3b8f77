from semmech.logs import job_logging
from semmech.stages import sample_prompt

with job_logging(snakemake.log[0], snakemake.threads):
    p = snakemake.params
    sample_prompt(snakemake.wildcards.prompt, p.text, p.model, p.sampling, p.seed,
                  snakemake.output.table, snakemake.output.prompt)
