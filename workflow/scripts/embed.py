from semmech.logs import job_logging
from semmech.stages.embedding import run_embed

with job_logging(snakemake.log[0], snakemake.threads):
    run_embed(
        prompt_id=snakemake.wildcards.prompt,
        samples=snakemake.input.samples,
        prompt=snakemake.input.prompt,
        embedding_cfg=snakemake.params.embedding,
        out_npz=snakemake.output.npz,
    )
