"""Logging for workflow jobs: every job writes to its own log file under results/<run>/logs/."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import torch


@contextlib.contextmanager
def job_logging(
    log_path: str | Path | None, threads: int | None = None
) -> Iterator[logging.Logger]:
    """Send logging, warnings and tqdm (stderr) of one job to its log file; set torch threads."""
    if threads:
        torch.set_num_threads(int(threads))
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
