from semmech.logs import job_logging
from semmech.stages.figures import run_figure

with job_logging(snakemake.log[0]):
    run_figure(
        name=snakemake.params.name,
        inputs=dict(snakemake.input.items()),
        params=dict(snakemake.params.items()),
        png=snakemake.output.png,
        pdf=snakemake.output.pdf,
    )
