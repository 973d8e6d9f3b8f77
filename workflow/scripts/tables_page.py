from semmech.logs import job_logging
from semmech.stages.report import run_tables_page

with job_logging(snakemake.log[0]):
    run_tables_page(
        tables=dict(snakemake.input.items()),
        title=snakemake.params.title,
        out_html=snakemake.output[0],
    )
