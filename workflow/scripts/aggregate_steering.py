from semmech.logs import job_logging
from semmech.stages.steering import run_aggregate_steering

with job_logging(snakemake.log[0], snakemake.threads):
    run_aggregate_steering(
        metrics=snakemake.input.metrics,
        steering_cfg=snakemake.params.steering,
        seed=snakemake.params.seed,
        out_csv=snakemake.output.csv,
        out_tex=snakemake.output.tex,
    )
