from semmech.logs import job_logging
from semmech.stages.report import run_cluster_browser

with job_logging(snakemake.log[0]):
    p = snakemake.params
    run_cluster_browser(
        summaries=snakemake.input.summaries,
        run=p.run,
        n_representatives=p.n_representatives,
        max_members=p.max_members,
        out_html=snakemake.output[0],
    )
