"""semmech: distribution-level unsupervised feature discovery in language models.

The package holds the science; the Snakemake workflow in ``workflow/`` only calls it.
"""

__version__ = "0.1.0"
