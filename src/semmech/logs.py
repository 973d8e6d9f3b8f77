"""Logging for workflow jobs: every job writes to its own log file under results/<run>/logs/."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def set_threads(threads: int) -> None:
    """Give the job's thread count to the thread pools of torch and numba.

    Pools already loaded (the stage module imported them) are set directly; for libraries
    imported later, the standard environment variables say it. torch is not imported here:
    a job that never needs it (reports, figures, clustering) does not pay its import."""
    n = max(1, int(threads))
    for var in THREAD_VARIABLES:
        os.environ[var] = str(n)
    numba = sys.modules.get("numba")
    if numba is not None:
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    torch = sys.modules.get("torch")
    if torch is not None:  # after numba: the two may share one OpenMP runtime
        torch.set_num_threads(n)


@contextlib.contextmanager
def job_logging(
    log_path: str | Path | None, threads: int | None = None
) -> Iterator[logging.Logger]:
    """Send logging, warnings and tqdm (stderr) of one job to its log file; set its threads
    (:func:`set_threads`)."""
    if threads:
        set_threads(threads)
    root = logging.getLogger()
    handlers: list[logging.Handler] = []
    stream = None
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        stream = open(log_path, "w", buffering=1)
        handlers.append(logging.StreamHandler(stream))
    else:
        handlers.append(logging.StreamHandler(sys.stderr))
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for h in handlers:
        h.setFormatter(fmt)
        root.addHandler(h)
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    old_stderr = sys.stderr
    if stream is not None:
        sys.stderr = stream
    try:
        yield logging.getLogger("semmech")
    except BaseException:
        logging.getLogger("semmech").exception("job failed")
        raise
    finally:
        sys.stderr = old_stderr
        for h in handlers:
            root.removeHandler(h)
        if stream is not None:
            stream.close()
