from semmech.logs import job_logging
from semmech.tables import write_tables_page

with job_logging(snakemake.log[0]):
    write_tables_page(dict(snakemake.input.items()), snakemake.output[0],
                      title=snakemake.params.title)
