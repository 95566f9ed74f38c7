"""distillstudy: reproducible knowledge-distillation studies.

Run the default study with `make study`; each stage is a CLI subcommand
(`distillstudy prepare|teacher|distill|evaluate|walkthrough|report`) that
Snakemake and DVC both call. This package never imports snakemake or dvc.
"""

__version__ = "0.1.0"
