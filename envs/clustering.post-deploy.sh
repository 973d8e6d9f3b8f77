#!/usr/bin/env bash
# Snakemake runs this once after creating the conda environment (working directory: the
# workflow's working directory, i.e. this repository): install semmech from the checkout.
set -euo pipefail
python -m pip install --no-deps -e .
