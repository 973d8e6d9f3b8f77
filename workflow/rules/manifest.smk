import re as _re

from snakemake.io import regex_from_filepattern


def output_producers():
    """Regex of every rule's output pattern -> rule name, for the manifest's `rule` field."""
    producers = {}
    for r in workflow.rules:
        for pattern in r.output:
            producers[regex_from_filepattern(str(pattern))] = r.name
    return producers


rule manifest:
    """Hash every artifact of the run for reviewers (`semmech verify results/<run>`)."""
    input:
        stage_targets(),
    output:
        f"{RESULTS}/manifest.json",
    params:
        run_dir=RESULTS,
        producers=lambda wc: output_producers(),
        config=config,
        model_source=config["model"]["name"],
    conda:
        "../../envs/figures.yaml"
    log:
        f"{LOGS}/manifest.log",
    benchmark:
        f"{BENCH}/manifest.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/manifest.py"
