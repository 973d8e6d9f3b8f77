from semmech.logs import job_logging
from semmech.manifest import write_manifest
from semmech.models import model_weights_sha256

with job_logging(snakemake.log[0], snakemake.threads):
    p = snakemake.params
    write_manifest(p.run_dir, p.producers, p.config, model_weights_sha256(p.model_source),
                   out=snakemake.output[0])
