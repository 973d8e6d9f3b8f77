from semmech.logs import job_logging
from semmech.stages.clustering import run_aggregate_clustering

with job_logging(snakemake.log[0], snakemake.threads):
    i, o = snakemake.input, snakemake.output
    run_aggregate_clustering(
        tables=i.tables,
        silhouettes=i.silhouettes,
        diagnoses=i.diagnoses,
        out_csv=o.csv,
        out_tex=o.tex,
        out_silhouette=o.silhouette,
        out_diagnosis=o.diagnosis,
        out_diagnosis_tex=o.diagnosis_tex,
    )
