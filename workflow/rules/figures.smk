# The paper's figures (METHOD §8). Every figure is a PNG for the Snakemake report and a PDF for
# the paper, drawn by semmech.stages.figures.run_figure (workflow/scripts/figure.py). One rule
# carries the common settings (environment, script, threads, resources); every other figure
# rule is that rule with its own inputs, outputs, params, log and benchmark.
# Settings shared with report.smk and paper.smk live in report_common.smk.


rule figure_rate_distortion:
    """Rate-distortion curves over beta: RD against the rate-matched K-means baselines."""
    input:
        baselines=per_prompt(f"{RESULTS}/baselines/{{prompt}}.parquet"),
    output:
        png=report(
            f"{FIGURES}/rate_distortion.png",
            caption="../report/rate_distortion.rst",
            category="2. Clustering",
            subcategory="Rate-distortion",
        ),
        pdf=f"{FIGURES}/rate_distortion.pdf",
    log:
        f"{LOGS}/figure_rate_distortion.log",
    benchmark:
        f"{BENCH}/figure_rate_distortion.tsv"
    conda:
        "../../envs/figures.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        **figure_params("rate_distortion"),
    script:
        "../scripts/figure.py"


use rule figure_rate_distortion as figure_gamma_sweep with:
    """K, D_e and D_a against gamma, one line per beta."""
    input:
        sweeps=per_prompt(f"{RESULTS}/clusters/{{prompt}}.sweep.parquet"),
    output:
        png=report(
            f"{FIGURES}/gamma_sweep.png",
            caption="../report/gamma_sweep.rst",
            category="2. Clustering",
            subcategory="Gamma sweep",
        ),
        pdf=f"{FIGURES}/gamma_sweep.pdf",
    log:
        f"{LOGS}/figure_gamma_sweep.log",
    benchmark:
        f"{BENCH}/figure_gamma_sweep.tsv"
    params:
        **figure_params("gamma_sweep"),


use rule figure_rate_distortion as figure_iteration_trace with:
    """The descent of L (assign, split, merge steps) for the example prompt."""
    input:
        history=f"{RESULTS}/clusters/{EXAMPLE_PROMPT}.history.parquet",
    output:
        png=report(
            f"{FIGURES}/iteration_trace.png",
            caption="../report/iteration_trace.rst",
            category="2. Clustering",
            subcategory="Iteration trace",
        ),
        pdf=f"{FIGURES}/iteration_trace.pdf",
    log:
        f"{LOGS}/figure_iteration_trace.log",
    benchmark:
        f"{BENCH}/figure_iteration_trace.tsv"
    params:
        **figure_params("iteration_trace", prompt=EXAMPLE_PROMPT, config=FIGURE_CONFIG),


use rule figure_rate_distortion as figure_two_view_scatter with:
    """UMAP of the semantic and the mechanistic view of the example prompt, coloured by RD and
    by each single-view HDBSCAN clustering."""
    input:
        samples=f"{RESULTS}/samples/{EXAMPLE_PROMPT}.parquet",
        embeddings=f"{RESULTS}/embeddings/{EXAMPLE_PROMPT}.npz",
        signatures=f"{RESULTS}/attribution/{EXAMPLE_PROMPT}.safetensors",
        clusters=f"{RESULTS}/clusters/{EXAMPLE_PROMPT}.npz",
        labels=f"{RESULTS}/clusters/{EXAMPLE_PROMPT}.labels.parquet",
        hdbscan=f"{RESULTS}/baselines/{EXAMPLE_PROMPT}.labels.parquet",
    output:
        png=report(
            f"{FIGURES}/two_view_scatter.png",
            caption="../report/two_view_scatter.rst",
            category="2. Clustering",
            subcategory="Two views",
        ),
        pdf=f"{FIGURES}/two_view_scatter.pdf",
    log:
        f"{LOGS}/figure_two_view_scatter.log",
    benchmark:
        f"{BENCH}/figure_two_view_scatter.tsv"
    resources:
        mem_mb=1500,
        runtime=10,
    params:
        **figure_params(
            "two_view_scatter",
            prompt=EXAMPLE_PROMPT,
            config=FIGURE_CONFIG,
            seed=prompt_seed(EXAMPLE_PROMPT, "figure_two_view_scatter"),
            umap=FIG_CFG["umap"],
        ),


use rule figure_rate_distortion as figure_cross_view_silhouette with:
    """Silhouette in both views of K-means clusterings made in one view."""
    input:
        silhouettes=per_prompt(f"{RESULTS}/baselines/{{prompt}}.silhouette.parquet"),
    output:
        png=report(
            f"{FIGURES}/cross_view_silhouette.png",
            caption="../report/cross_view_silhouette.rst",
            category="2. Clustering",
            subcategory="Cross-view silhouette",
        ),
        pdf=f"{FIGURES}/cross_view_silhouette.pdf",
    log:
        f"{LOGS}/figure_cross_view_silhouette.log",
    benchmark:
        f"{BENCH}/figure_cross_view_silhouette.tsv"
    params:
        **figure_params("cross_view_silhouette"),


use rule figure_rate_distortion as figure_feature_lineage with:
    """Jaccard of the clusters' top features between consecutive beta levels."""
    input:
        clusters=f"{RESULTS}/clusters/{EXAMPLE_PROMPT}.npz",
        nodes=f"{RESULTS}/attribution/{EXAMPLE_PROMPT}.nodes.parquet",
    output:
        png=report(
            f"{FIGURES}/feature_lineage.png",
            caption="../report/feature_lineage.rst",
            category="2. Clustering",
            subcategory="Feature lineage",
        ),
        pdf=f"{FIGURES}/feature_lineage.pdf",
    log:
        f"{LOGS}/figure_feature_lineage.log",
    benchmark:
        f"{BENCH}/figure_feature_lineage.tsv"
    params:
        **figure_params(
            "feature_lineage",
            prompt=EXAMPLE_PROMPT,
            config=FIGURE_CONFIG,
            top_k=FIG_CFG["lineage_top_k"],
        ),


use rule figure_rate_distortion as figure_steering_response with:
    """Steering response curves (delta against epsilon) per method, with 95% bands."""
    input:
        curves=per_prompt(f"{RESULTS}/steering/{{prompt}}.curves.parquet"),
    output:
        png=report(
            f"{FIGURES}/steering_response.png",
            caption="../report/steering_response.rst",
            category="3. Steering",
            subcategory="Response curves",
        ),
        pdf=f"{FIGURES}/steering_response.pdf",
    log:
        f"{LOGS}/figure_steering_response.log",
    benchmark:
        f"{BENCH}/figure_steering_response.tsv"
    params:
        **figure_params("steering_response"),


use rule figure_rate_distortion as figure_clustering_diagnosis with:
    """Why prompts stay at K = 1: critical beta of the first split and signature concentration."""
    input:
        diagnoses=per_prompt(f"{RESULTS}/clusters/{{prompt}}.diagnosis.json"),
    output:
        png=report(
            f"{FIGURES}/clustering_diagnosis.png",
            caption="../report/clustering_diagnosis.rst",
            category="2. Clustering",
            subcategory="Diagnosis",
        ),
        pdf=f"{FIGURES}/clustering_diagnosis.pdf",
    log:
        f"{LOGS}/figure_clustering_diagnosis.log",
    benchmark:
        f"{BENCH}/figure_clustering_diagnosis.tsv"
    params:
        **figure_params("clustering_diagnosis", paper_betas=PAPER_BETAS),
