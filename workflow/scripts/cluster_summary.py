from semmech.logs import job_logging
from semmech.report import summarise_prompt_files

with job_logging(snakemake.log[0]):
    i, o, p = snakemake.input, snakemake.output, snakemake.params
    summarise_prompt_files(snakemake.wildcards.prompt, i.samples, i.prompt, i.labels, i.clusters,
                           i.nodes, i.signatures, i.embeddings, p.configs, o.json, o.csv, o.tex,
                           sweep=i.sweep, n_representatives=p.n_representatives,
                           n_features=p.n_features, n_browser_features=p.n_browser_features)
