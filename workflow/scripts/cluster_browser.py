from semmech.logs import job_logging
from semmech.report import write_browser

with job_logging(snakemake.log[0]):
    write_browser(snakemake.input.summaries, snakemake.output[0], run=snakemake.params.run,
                  n_representatives=snakemake.params.n_representatives)
