from semmech.logs import job_logging
from semmech.stages.report import run_case_study

with job_logging(snakemake.log[0], snakemake.threads):
    run_case_study(
        curves=snakemake.input.curves,
        out_csv=snakemake.output.csv,
        out_tex=snakemake.output.tex,
    )
