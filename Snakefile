"""distillstudy workflow: prepare -> teacher -> transfer -> distill (grid) -> evaluate -> report.

    snakemake                          # the default study (profile: workflow/profiles/default)
    snakemake -c2 --configfile tests/params.tiny.yaml
    snakemake --until distill          # what the DVC stage `distill` runs

params.yaml is validated before the DAG is built; every rule calls the same
`distillstudy <stage>` CLI that a user can run by hand.
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
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/walkthrough.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        "reports/index.html",
