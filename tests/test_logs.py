"""Job logging sets the job's threads without importing torch for jobs that do not need it."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from semmech.logs import job_logging


def test_threads_reach_a_loaded_torch(tmp_path):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with job_logging(tmp_path / "job.log", 1):
            assert torch.get_num_threads() == 1
            assert os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)
    assert "job.log" in os.listdir(tmp_path)


def test_a_job_without_torch_does_not_import_it(tmp_path):
    """Report, figure and clustering jobs never load torch (its import costs ~2 s a job)."""
    code = (
        "import sys\n"
        "from semmech.logs import job_logging\n"
        "import semmech.stages.report, semmech.stages.clustering, semmech.stages.figures\n"
        "with job_logging(sys.argv[1], 1):\n"
        "    pass\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "import numba\n"
        "assert numba.get_num_threads() == 1\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "j.log")], check=True, env=env)
