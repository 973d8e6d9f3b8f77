from semmech.figures import build
from semmech.logs import job_logging

with job_logging(snakemake.log[0]):
    p = snakemake.params
    build(p.name, dict(snakemake.input.items()), dict(p.items()), snakemake.output.png,
          snakemake.output.pdf)
