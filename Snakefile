# semmech: prompts -> continuation distributions -> attribution + semantics -> clustering
# -> baselines -> steering -> figures, tables, report and manifest.
# This file only wires the rule modules together; the science lives in src/semmech/.

configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/sampling.smk"
include: "workflow/rules/attribution.smk"
include: "workflow/rules/clustering.smk"
include: "workflow/rules/manifest.smk"


rule all:
    input:
        all_targets(),
    default_target: True
