# transferscope: what does pre-training transfer, and why does it help?
# Thin entry point: config, validation, rule files, and the final targets.
from snakemake.utils import min_version

from transferscope import config as ts_config

min_version("9.0")


# --configfile FILE replaces config.yaml instead of being merged into it
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# schema (defaults filled in) and cross-references, with a one-line message naming the key
config.update(ts_config.validate_config(config, source="config"))


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/resources.smk"
include: "rules/data.smk"
include: "rules/tune.smk"
include: "rules/train.smk"
include: "rules/interactions.smk"
include: "rules/knowledge.smk"
include: "rules/knockout.smk"
include: "rules/figures.smk"
include: "rules/theory.smk"
include: "rules/analyses.smk"
include: "rules/causal.smk"
include: "rules/controls.smk"
include: "rules/graded.smk"
include: "rules/sensitivity.smk"


rule all:
    default_target: True
    input:
        all_targets(),
