from pathlib import Path

from semmech.logs import job_logging
from semmech.report import build_paper

with job_logging(snakemake.log[0]):
    p = snakemake.params
    build_paper(p.run_dir, Path(snakemake.input.main).parent, snakemake.output[0], macros=p.macros,
                aliases=p.aliases, latexmk=p.latexmk,
                log_path=Path(snakemake.log[0]).with_suffix(".latexmk.log"))
