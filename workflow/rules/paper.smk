# The manuscript: paper/build/main.pdf from paper/main.tex and this run's tables and figures.
# A separate target (`snakemake paper`); the default reproduction stops at figures and tables.
# Needs latexmk and a TeX distribution on PATH; the rule fails with instructions when absent.


rule paper:
    """Typeset the reproduction's manuscript with latexmk from the run's figures and tables."""
    input:
        main="paper/main.tex",
        sections=sorted(str(p) for p in Path("paper/sections").glob("*.tex")),
        bib="paper/references.bib",
        figures=expand(f"{FIGURES}/{{name}}.pdf", name=FIGURE_NAMES),
        tables=[f"{TABLES}/clustering_comparison.tex", f"{TABLES}/steering_comparison.tex",
                f"{TABLES}/cluster_summary/{EXAMPLE_PROMPT}.tex"],
    output:
        "paper/build/main.pdf",
    params:
        run_dir=RESULTS,
        latexmk=config["paper"]["latexmk"],
        aliases={"example_cluster_summary.tex": f"tables/cluster_summary/{EXAMPLE_PROMPT}.tex"},
        macros=lambda wc: {
            "RunName": RUN, "ModelName": config["model"]["name"],
            "EmbeddingModel": config["embedding"]["model"], "NPrompts": len(PROMPT_IDS),
            "NContinuations": config["sampling"]["n_continuations"],
            "MaxNewTokens": config["sampling"]["max_new_tokens"], "Seed": config["seed"],
            "ExamplePrompt": EXAMPLE_PROMPT, "Basis": config["attribution"]["basis"],
            "MaxFeatureNodes": config["attribution"]["max_feature_nodes"],
            "Betas": ", ".join(f"{b:g}" for b in config["clustering"]["betas"]),
            "Gammas": ", ".join(f"{g:g}" for g in config["clustering"]["gammas"]),
            "FigureBeta": f"{FIGURE_CONFIG[0]:g}", "FigureGamma": f"{FIGURE_CONFIG[1]:g}",
            "Budgets": ", ".join(str(b) for b in config["steering"]["budgets"]),
        },
    conda:
        "../../envs/figures.yaml"
    log:
        f"{LOGS}/paper.log",
    benchmark:
        f"{BENCH}/paper.tsv"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    script:
        "../scripts/paper.py"
