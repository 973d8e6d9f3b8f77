from semmech.logs import job_logging
from semmech.stages.sampling import run_sample

with job_logging(snakemake.log[0], snakemake.threads):
    run_sample(
        prompt_id=snakemake.wildcards.prompt,
        text=snakemake.params.text,
        model_cfg=snakemake.params.model,
        sampling_cfg=snakemake.params.sampling,
        seed=snakemake.params.seed,
        out_table=snakemake.output.table,
        out_prompt=snakemake.output.prompt,
    )
