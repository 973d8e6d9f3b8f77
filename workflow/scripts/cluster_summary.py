from semmech.logs import job_logging
from semmech.stages.report import run_cluster_summary

with job_logging(snakemake.log[0]):
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    run_cluster_summary(
        prompt_id=snakemake.wildcards.prompt,
        samples=i.samples,
        prompt=i.prompt,
        labels=i.labels,
        clusters=i.clusters,
        sweep=i.sweep,
        nodes=i.nodes,
        signatures=i.signatures,
        embeddings=i.embeddings,
        configs=p.configs,
        n_representatives=p.n_representatives,
        n_features=p.n_features,
        n_browser_features=p.n_browser_features,
        out_json=o.json,
        out_csv=o.csv,
        out_tex=o.tex,
    )
