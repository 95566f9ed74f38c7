"""distillstudy workflow: prepare -> teacher -> transfer -> distill (grid) -> evaluate -> report.

    snakemake                          # the default study (profile: profiles/default, a link to
                                       # workflow/profiles/default, where Snakemake looks for it)
    snakemake -c2 --configfile tests/params.tiny.yaml
    snakemake --omit-from evaluate walkthrough   # what the DVC stage `distill` runs (dvc.yaml: why)

This file is the index: params.yaml is validated before the DAG is built, and the rules
live in workflow/rules/ (one .smk per stage; common.smk turns params into the grid). Every
rule calls the same `distillstudy <stage>` CLI that a user can run by hand.
"""

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "params.yaml"


envvars:
    "PATH",


include: "workflow/rules/common.smk"


validate(config, "src/distillstudy/params.schema.yaml")


include: "workflow/rules/prepare.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/transfer.smk"
include: "workflow/rules/distill.smk"
include: "workflow/rules/distill_standard.smk"
include: "workflow/rules/language_models.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/walkthrough.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "reports/index.html",
