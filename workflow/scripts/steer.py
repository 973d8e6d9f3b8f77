from semmech.logs import job_logging
from semmech.stages.steering import run_steer

with job_logging(snakemake.log[0], snakemake.threads):
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    run_steer(
        prompt_id=snakemake.wildcards.prompt,
        samples=i.samples,
        prompt=i.prompt,
        signatures=i.signatures,
        nodes=i.nodes,
        embeddings=i.embeddings,
        clusters=i.clusters,
        baseline_labels=i.baseline_labels,
        model_cfg=p.model,
        attribution_cfg=p.attribution,
        steering_cfg=p.steering,
        sampling_cfg=p.sampling,
        transcoder_dir=p.transcoder_dir,
        seed=p.seed,
        out_curves=o.curves,
        out_metrics=o.metrics,
        out_generations=o.generations,
        out_stats=o.stats,
    )
