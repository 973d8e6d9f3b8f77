from semmech.logs import job_logging
from semmech.stages.attribution import run_attribute

with job_logging(snakemake.log[0], snakemake.threads):
    run_attribute(
        prompt_id=snakemake.wildcards.prompt,
        samples=snakemake.input.samples,
        prompt=snakemake.input.prompt,
        model_cfg=snakemake.params.model,
        attribution_cfg=snakemake.params.attribution,
        transcoder_dir=snakemake.params.transcoder_dir,
        out_signatures=snakemake.output.signatures,
        out_nodes=snakemake.output.nodes,
        out_completeness=snakemake.output.completeness,
    )
