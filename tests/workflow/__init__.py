"""End to end: Ray, MLflow, Snakemake, subprocess sweeps, a fresh clone, a cluster. All marked slow."""
