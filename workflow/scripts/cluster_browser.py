from semmech.logs import job_logging
from semmech.report import write_browser

with job_logging(snakemake.log[0]):
    p = snakemake.params
    write_browser(snakemake.input.summaries, snakemake.output[0], run=p.run,
                  n_representatives=p.n_representatives, max_members=p.max_members)
