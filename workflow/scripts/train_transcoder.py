from semmech.logs import job_logging
from semmech.transcoder_training import train_transcoder

with job_logging(snakemake.log[0], snakemake.threads):
    p = snakemake.params
    train_transcoder(snakemake.input.samples, snakemake.input.prompts, p.model, p.training, p.seed,
                     snakemake.output[0])
