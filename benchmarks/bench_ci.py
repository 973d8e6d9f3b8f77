"""What the SLURM check adds to CI: the test suite alone, then with the check alongside.

Runs, one after the other on this machine, the README's test command
(`python -m pytest -q -p no:cacheprovider`) and `.ci/test_with_slurm.sh` (the same command with
the SLURM scale-out check running beside it, as `.ci/run` does), and writes their wall times
and the difference to benchmarks/ci.json. Needs what `.ci/run` installs (root, the SLURM and
munge daemons, the venv and the prepared default model). Takes about 15 minutes on 2 cores.

    .venv/bin/python benchmarks/bench_ci.py

Budget (issue #7): the SLURM check adds at most 3 minutes.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = Path(__file__).with_name("ci.json")
LIMIT_ADDED_S = 180


def timed(cmd: list[str]) -> dict:
    load = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise SystemExit(f"{' '.join(cmd)} failed with exit {proc.returncode}:\n{tail}")
    summary = [ln for ln in proc.stdout.splitlines() if " passed" in ln]
    return {
        "command": " ".join(cmd),
        "wall_s": wall,
        "load_average_before": list(load),
        "pytest_summary": summary[-1] if summary else None,
    }


def main() -> dict:
    alone = timed([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"])
    both = timed(["bash", str(REPO / ".ci" / "test_with_slurm.sh")])
    added = both["wall_s"] - alone["wall_s"]
    result = {
        "benchmark": "ci_slurm_overhead",
        "tests_alone": alone,
        "tests_with_slurm_check": both,
        "slurm_check_added_s": added,
        "limit_added_s": LIMIT_ADDED_S,
        "within_limit": added <= LIMIT_ADDED_S,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
    }
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    res = main()
    print(json.dumps({k: res[k] for k in ("slurm_check_added_s", "within_limit")}, indent=2))
