from semmech.io import remove_orphan_sidecars


onerror:
    # Snakemake deletes a failed job's outputs but not their integrity records (<file>.sha256);
    # the manifest rule removes such orphans too, before it lists the run.
    remove_orphan_sidecars(RESULTS)


rule manifest:
    """Hash every artifact of the run for reviewers (`semmech verify results/<run>`)."""
    input:
        stage_targets(),
    output:
        f"{RESULTS}/manifest.json",
    log:
        f"{LOGS}/manifest.log",
    benchmark:
        f"{BENCH}/manifest.tsv"
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        run_dir=lambda wc, output: os.path.dirname(output[0]),
        producers=lambda wc: output_producers(),
        config=config,
        model_source=config["model"]["name"],
    script:
        "../scripts/manifest.py"
