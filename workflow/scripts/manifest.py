from semmech.logs import job_logging
from semmech.stages.manifest import run_manifest

with job_logging(snakemake.log[0], snakemake.threads):
    run_manifest(
        run_dir=snakemake.params.run_dir,
        producers=snakemake.params.producers,
        config=snakemake.params.config,
        model_name=snakemake.params.model_source,
        out=snakemake.output[0],
    )
