from semmech.logs import job_logging
from semmech.stages.paper import run_paper

with job_logging(snakemake.log[0]):
    p = snakemake.params
    run_paper(
        run_dir=p.run_dir,
        main_tex=snakemake.input.main,
        out_pdf=snakemake.output[0],
        latexmk=p.latexmk,
        k_clamp=p.k_clamp,
        macros=p.macros,
        aliases=p.aliases,
        job_log=snakemake.log[0],
    )
