"""Entry point of ``workflow/rules/paper.smk``: assemble the manuscript's LaTeX project from
``paper/`` and a run's tables and figures, and compile it with latexmk.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from .. import io
from ..cluster.diagnosis_table import DIAGNOSIS_COLUMNS
from ..report.paper import (
    COMPARISON_COLUMNS,
    LATEXMK_MISSING,
    PAPER_SOURCES,
    PaperBuildError,
    result_macros,
    run_tex,
)
from ..report.tables import STEERING_COLUMNS

log = logging.getLogger(__name__)

__all__ = ["run_paper"]


def _read_csv(path: Path, required: Sequence[str]) -> pd.DataFrame:
    try:
        return io.read_csv(path, required)
    except io.CorruptInputError as exc:
        raise PaperBuildError(f"{exc}; run the workflow first") from exc


def _copy_run_file(src: Path, dest: Path) -> None:
    """Copy a run's table or figure into the build, after checking it against its integrity
    record, so a file changed after the workflow wrote it never reaches the paper."""
    try:
        io.verify_integrity(src)
    except io.CorruptInputError as exc:
        raise PaperBuildError(str(exc)) from exc
    shutil.copyfile(src, dest)


def run_paper(
    *,
    run_dir: str | Path,
    main_tex: str | Path,
    out_pdf: str | Path,
    latexmk: str,
    k_clamp: int,
    macros: Mapping[str, Any] | None = None,
    aliases: Mapping[str, str] | None = None,
    job_log: str | Path | None = None,
    timeout: int = 600,
) -> Path:
    """Assemble a self-contained LaTeX project in ``out_pdf``'s directory and compile it.

    The project is the manuscript's sources (``main_tex`` and, beside it, ``sections/`` and
    ``references.bib``) plus ``generated/``: the run's tables (.tex) and figures (.pdf) and
    ``run.tex``, whose ``\\newcommand``s hold run facts (``macros``) and the headline numbers
    of :func:`semmech.report.paper.result_macros`. ``aliases`` add names under
    ``generated/tables/`` for run files (e.g. the example prompt's cluster summary), so the
    manuscript never spells a prompt id. Pointing ``run_dir`` at another run rebuilds the paper
    for that run; the build directory can be recompiled by hand with ``latexmk -pdf main.tex``.
    latexmk's output goes beside ``job_log`` as ``.latexmk.log``. ``k_clamp``: the largest K
    steered (``steering.k_clamp``), for the count of steerable prompts.
    """
    exe = shutil.which(latexmk)
    if exe is None:
        raise PaperBuildError(LATEXMK_MISSING.format(latexmk=latexmk, out_pdf=out_pdf))
    run_dir, paper_dir, out_pdf = Path(run_dir), Path(main_tex).parent, Path(out_pdf)
    missing = [n for n in PAPER_SOURCES if not (paper_dir / n).exists()]
    if missing:
        raise PaperBuildError(f"{paper_dir}: manuscript sources {missing} not found")
    build = out_pdf.parent
    build.mkdir(parents=True, exist_ok=True)
    if build.resolve() == paper_dir.resolve():
        raise PaperBuildError("the paper must be built in its own directory (e.g. paper/build/)")
    shutil.copyfile(paper_dir / "main.tex", build / "main.tex")
    shutil.copyfile(paper_dir / "references.bib", build / "references.bib")
    if (build / "sections").exists():
        shutil.rmtree(build / "sections")
    shutil.copytree(paper_dir / "sections", build / "sections")
    gen = build / "generated"
    if gen.exists():
        shutil.rmtree(gen)
    (gen / "tables").mkdir(parents=True)
    (gen / "figures").mkdir(parents=True)
    n_tab = n_fig = 0
    for f in sorted((run_dir / "tables").rglob("*.tex")):
        dest = gen / "tables" / f.relative_to(run_dir / "tables")
        dest.parent.mkdir(parents=True, exist_ok=True)
        _copy_run_file(f, dest)
        n_tab += 1
    for f in sorted((run_dir / "figures").glob("*.pdf")):
        _copy_run_file(f, gen / "figures" / f.name)
        n_fig += 1
    for name, rel in sorted((aliases or {}).items()):
        src = run_dir / rel
        if not src.is_file():
            raise PaperBuildError(f"{src} not found (wanted as generated/tables/{name})")
        _copy_run_file(src, gen / "tables" / name)
    if n_tab == 0 or n_fig == 0:
        raise PaperBuildError(
            f"{run_dir}: found {n_tab} tables and {n_fig} figures; run the "
            "workflow first (the paper only typesets its outputs)"
        )
    headline = result_macros(
        _read_csv(run_dir / "tables/clustering_comparison.csv", COMPARISON_COLUMNS),
        _read_csv(run_dir / "tables/steering_comparison.csv", STEERING_COLUMNS),
        _read_csv(run_dir / "tables/clustering_diagnosis.csv", DIAGNOSIS_COLUMNS),
        k_clamp,
    )
    (gen / "run.tex").write_text(run_tex({**headline, **(macros or {})}, run_dir.as_posix()))
    env = dict(os.environ, SOURCE_DATE_EPOCH="0", FORCE_SOURCE_DATE="1")
    cmd = [
        exe,
        "-pdf",
        "-interaction=nonstopmode",
        "-halt-on-error",
        "-file-line-error",
        "main.tex",
    ]
    proc = subprocess.run(cmd, cwd=build, env=env, capture_output=True, text=True, timeout=timeout)
    if job_log:
        latexmk_log = Path(job_log).with_suffix(".latexmk.log")
        latexmk_log.parent.mkdir(parents=True, exist_ok=True)
        latexmk_log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise PaperBuildError(
            f"latexmk failed (exit {proc.returncode}); see {build}/main.log:\n{tail}"
        )
    built = build / "main.pdf"
    if built.resolve() != out_pdf.resolve():
        with io.atomic_path(out_pdf, suffix=".pdf") as tmp:
            shutil.copyfile(built, tmp)
    log.info("paper built: %s (%d tables, %d figures from %s)", out_pdf, n_tab, n_fig, run_dir)
    return out_pdf
