from semmech.logs import job_logging
from semmech.steering import steer_prompt_stage

with job_logging(snakemake.log[0], snakemake.threads):
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    steer_prompt_stage(snakemake.wildcards.prompt, i.samples, i.prompt, i.signatures, i.nodes,
                       i.embeddings, i.clusters, i.baseline_labels, p.model, p.attribution,
                       p.steering, p.sampling, p.seed, o.curves, o.metrics, o.generations, o.stats,
                       transcoder_dir=p.transcoder_dir)
