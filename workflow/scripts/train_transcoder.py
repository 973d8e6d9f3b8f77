from semmech.logs import job_logging
from semmech.stages.attribution import run_train_transcoder

with job_logging(snakemake.log[0], snakemake.threads):
    run_train_transcoder(
        samples=snakemake.input.samples,
        prompts=snakemake.input.prompts,
        model_cfg=snakemake.params.model,
        training_cfg=snakemake.params.training,
        seed=snakemake.params.seed,
        out_dir=snakemake.output[0],
    )
