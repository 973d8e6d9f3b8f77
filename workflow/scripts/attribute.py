from semmech.attribution import attribute_prompt
from semmech.logs import job_logging

with job_logging(snakemake.log[0], snakemake.threads):
    p = snakemake.params
    attribute_prompt(snakemake.wildcards.prompt, snakemake.input.samples, snakemake.input.prompt,
                     p.model, p.attribution, snakemake.output.signatures, snakemake.output.nodes,
                     snakemake.output.completeness, transcoder_dir=p.transcoder_dir)
