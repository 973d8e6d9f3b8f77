# Reviewer artifacts besides the figures: the paper's tables, per-prompt cluster summaries
# and the cluster browser (one self-contained HTML page listing every prompt), all marked
# for the Snakemake report (`snakemake --report ...`), grouped by stage.


rule cluster_summary:
    """One prompt's clusters at the summarised (beta, gamma) pairs: mass, representative
    continuations and top features (JSON for the browser, CSV + LaTeX tables)."""
    input:
        samples=f"{RESULTS}/samples/{{prompt}}.parquet",
        prompt=f"{RESULTS}/samples/{{prompt}}.prompt.json",
        labels=f"{RESULTS}/clusters/{{prompt}}.labels.parquet",
        clusters=f"{RESULTS}/clusters/{{prompt}}.npz",
        sweep=f"{RESULTS}/clusters/{{prompt}}.sweep.parquet",
        nodes=f"{RESULTS}/attribution/{{prompt}}.nodes.parquet",
        signatures=f"{RESULTS}/attribution/{{prompt}}.safetensors",
        embeddings=f"{RESULTS}/embeddings/{{prompt}}.npz",
    output:
        json=f"{RESULTS}/summaries/{{prompt}}.json",
        csv=report(
            f"{TABLES}/cluster_summary/{{prompt}}.csv",
            caption="../report/cluster_summary.rst",
            category="1. Cluster browser",
            subcategory="Per-prompt summaries",
            labels={"prompt": "{prompt}"},
        ),
        tex=f"{TABLES}/cluster_summary/{{prompt}}.tex",
    log:
        f"{LOGS}/cluster_summary/{{prompt}}.log",
    benchmark:
        f"{BENCH}/cluster_summary/{{prompt}}.tsv"
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        configs=SUMMARY_CONFIGS,
        n_representatives=FIG_CFG["n_representatives"],
        n_features=FIG_CFG["n_features"],
        n_browser_features=FIG_CFG["browser_features"],
    script:
        "../scripts/cluster_summary.py"


rule cluster_browser:
    """The per-prompt cluster browser: every prompt, each cluster's continuations and top
    features, in one self-contained HTML page (no external scripts or styles)."""
    input:
        summaries=per_prompt(f"{RESULTS}/summaries/{{prompt}}.json"),
    output:
        report(
            f"{RESULTS}/report/cluster_browser.html",
            caption="../report/cluster_browser.rst",
            category="1. Cluster browser",
            subcategory="Browser",
        ),
    log:
        f"{LOGS}/cluster_browser.log",
    benchmark:
        f"{BENCH}/cluster_browser.tsv"
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        run=RUN,
        n_representatives=FIG_CFG["n_representatives"],
        max_members=FIG_CFG["browser_continuations"],
    script:
        "../scripts/cluster_browser.py"


rule tables_page:
    """Every aggregate table of the run on one HTML page; the CSVs themselves are attached to
    the report under their stage."""
    input:
        clustering=report(
            f"{TABLES}/clustering_comparison.csv",
            caption="../report/clustering_comparison.rst",
            category="2. Clustering",
            subcategory="Tables",
        ),
        silhouette=report(
            f"{TABLES}/cross_view_silhouette.csv",
            caption="../report/cross_view_silhouette_table.rst",
            category="2. Clustering",
            subcategory="Tables",
        ),
        diagnosis=report(
            f"{TABLES}/clustering_diagnosis.csv",
            caption="../report/clustering_diagnosis_table.rst",
            category="2. Clustering",
            subcategory="Tables",
        ),
        steering=report(
            f"{TABLES}/steering_comparison.csv",
            caption="../report/steering_comparison.rst",
            category="3. Steering",
            subcategory="Tables",
        ),
    output:
        report(
            f"{RESULTS}/report/tables.html",
            caption="../report/tables.rst",
            category="4. Tables",
            subcategory="All tables",
        ),
    log:
        f"{LOGS}/tables_page.log",
    benchmark:
        f"{BENCH}/tables_page.tsv"
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        title=f"semmech tables, run {RUN}",
    script:
        "../scripts/tables_page.py"


rule case_study:
    """The held-out transfer case study: amplify and suppress effects of the example prompt's
    steered clusters, RD against Single."""
    input:
        curves=f"{RESULTS}/steering/{EXAMPLE_PROMPT}.curves.parquet",
    output:
        csv=report(
            f"{TABLES}/case_study.csv",
            caption="../report/case_study.rst",
            category="3. Steering",
            subcategory="Tables",
        ),
        tex=f"{TABLES}/case_study.tex",
    log:
        f"{LOGS}/case_study.log",
    benchmark:
        f"{BENCH}/case_study.tsv"
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    script:
        "../scripts/case_study.py"
