# The paper's prompt set (METHOD §1), with `prompts: ambigqa`. common.smk already made the
# selection at parse time (semmech.prompts.configured_prompts: the job list needs the prompt
# ids); this rule writes the same selection down as a prompt file plus per-prompt metadata, an
# input of every sample job and an artifact in the manifest. With a prompt file, nothing here
# is requested.


rule ambigqa_prompts:
    """The AmbigQA prompt set: seeded question groups, each main question and its sub-questions."""
    input:
        data=AMBIGQA_DATA,
    output:
        prompts=AMBIGQA_OUTPUTS["prompts"],
        metadata=AMBIGQA_OUTPUTS["metadata"],
    log:
        f"{LOGS}/ambigqa_prompts.log",
    benchmark:
        f"{BENCH}/ambigqa_prompts.tsv"
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=5,
    params:
        ambigqa=config["ambigqa"],
    script:
        "../scripts/ambigqa_prompts.py"
