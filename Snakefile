# semmech: prompts -> continuation distributions -> attribution + semantics -> clustering
# -> baselines -> steering -> figures, tables, report and manifest.
# This file only wires the rule modules together; the science lives in src/semmech/.


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/prompts.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/sampling.smk"
include: "workflow/rules/attribution.smk"
include: "workflow/rules/clustering.smk"
include: "workflow/rules/steering.smk"
include: "workflow/rules/report_common.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/paper.smk"
include: "workflow/rules/manifest.smk"


rule all:
    default_target: True
    input:
        all_targets(),
