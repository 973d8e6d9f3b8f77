# The manuscript: paper/build/main.pdf from paper/ and this run's tables and figures.
# A separate target (`snakemake paper`); the default reproduction stops at figures and tables.
# Needs latexmk and a TeX distribution on PATH; the rule fails with instructions when absent.

PAPER_SRC = Path(workflow.basedir) / "paper"


rule paper:
    """Typeset the reproduction's manuscript with latexmk from the run's figures and tables."""
    input:
        main=PAPER_SRC / "main.tex",
        sections=sorted(PAPER_SRC.glob("sections/*.tex")),
        bib=PAPER_SRC / "references.bib",
        figures=expand(f"{FIGURES}/{{name}}.pdf", name=FIGURE_NAMES),
        tables=[
            f"{TABLES}/clustering_comparison.tex",
            f"{TABLES}/clustering_comparison.csv",
            f"{TABLES}/clustering_diagnosis.tex",
            f"{TABLES}/clustering_diagnosis.csv",
            f"{TABLES}/steering_comparison.tex",
            f"{TABLES}/steering_comparison.csv",
            f"{TABLES}/cluster_summary/{EXAMPLE_PROMPT}.tex",
        ],
    output:
        "paper/build/main.pdf",
    log:
        f"{LOGS}/paper.log",
    benchmark:
        f"{BENCH}/paper.tsv"
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=1500,
        runtime=10,
    params:
        run_dir=lambda wc, input: str(Path(input.figures[0]).parents[1]),
        latexmk=config["paper"]["latexmk"],
        k_clamp=config["steering"]["k_clamp"],
        aliases={"example_cluster_summary.tex": f"tables/cluster_summary/{EXAMPLE_PROMPT}.tex"},
        macros={
            "RunName": RUN,
            "ModelName": config["model"]["name"],
            "EmbeddingModel": config["embedding"]["model"],
            "NPrompts": len(PROMPT_IDS),
            "NContinuations": config["sampling"]["n_continuations"],
            "MaxNewTokens": config["sampling"]["max_new_tokens"],
            "Seed": config["seed"],
            "ExamplePrompt": EXAMPLE_PROMPT,
            "Basis": config["attribution"]["basis"],
            "MaxFeatureNodes": config["attribution"]["max_feature_nodes"],
            "Betas": ", ".join(f"{b:g}" for b in config["clustering"]["betas"]),
            "Gammas": ", ".join(f"{g:g}" for g in config["clustering"]["gammas"]),
            "BetaUnits": config["clustering"]["beta_units"],
            "MinClusterSize": config["clustering"]["min_cluster_size"],
            "FigureBeta": f"{FIGURE_CONFIG[0]:g}",
            "FigureGamma": f"{FIGURE_CONFIG[1]:g}",
            "Budgets": ", ".join(str(b) for b in config["steering"]["budgets"]),
        },
    script:
        "../scripts/paper.py"
