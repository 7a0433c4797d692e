# Helpers and target lists; paths come from transferscope.workflow, settings from transferscope.config.
import json
import os
import shlex
import sys

from transferscope import config as ts_config
from transferscope import workflow as ts_paths
from transferscope import tuning as ts_tuning
from transferscope.analyses import settings as ts_analyses
from transferscope.causal import settings as ts_causal
from transferscope.knowledge import graded as ts_graded
from transferscope.theory import report as ts_theory

# jobs call the `transferscope` CLI of the environment this Snakemake runs in, activated or not
shell.prefix(
    f"set -euo pipefail; export PATH={shlex.quote(os.path.dirname(sys.executable))}:$PATH; "
)


wildcard_constraints:
    seed=r"\d+",
    experiment=r"[A-Za-z0-9_\-]+",
    dataset=r"[A-Za-z0-9_\-]+",


def dataset_of(wildcards):
    return ts_paths.data_dir(config["experiments"][wildcards.experiment]["dataset"])


def dataset_params(wildcards):
    return json.dumps(config["datasets"][wildcards.dataset], sort_keys=True)


def run_settings(regime):
    def settings(wildcards):
        return json.dumps(
            ts_config.run_settings(
                config, wildcards.experiment, regime, int(wildcards.seed)
            ),
            sort_keys=True,
        )

    return settings


def interaction_settings(wildcards):
    return json.dumps(
        ts_config.interaction_settings(
            config, wildcards.experiment, int(wildcards.seed)
        ),
        sort_keys=True,
    )


def pretrained_summary(wildcards):
    # the shared pre-trained run (config pretrained_seed), not necessarily this seed's
    return ts_paths.pretrained_run_summary(wildcards.experiment, wildcards.seed, config)


def tuning_init(wildcards):
    # the fine-tune search starts from the pre-training run its tuning seed's fine-tunes use
    if wildcards.regime != "finetune":
        return []
    seed = ts_tuning.tuning_options(config)["seed"]
    return ts_paths.pretrained_run_summary(wildcards.experiment, seed, config)


def tuning_settings(wildcards):
    return json.dumps(
        ts_tuning.search_settings(config, wildcards.experiment, wildcards.regime),
        sort_keys=True,
    )


def tuned_choice(regime):
    # nothing when tuning is off: the runs keep training.<regime> as configured
    def choice(wildcards):
        if not ts_tuning.tuning_enabled(config):
            return []
        return ts_paths.tuning_choice(wildcards.experiment, regime)

    return choice


def tuned_option(regime):
    def option(wildcards):
        path = tuned_choice(regime)(wildcards)
        return f"--tuned {shlex.quote(path)}" if path else ""

    return option


def regime_summaries(regimes):
    def summaries(wildcards):
        return [
            ts_paths.run_summary(wildcards.experiment, r, wildcards.seed)
            for r in regimes
        ]

    return summaries


def experiment_data_pairs():
    return " ".join(
        f"{exp}={ts_paths.data_dir(spec['dataset'])}"
        for exp, spec in config["experiments"].items()
    )


def all_targets():
    return [
        *ts_paths.run_summaries(config),
        *ts_paths.interaction_summaries(config),
        "results/figures/training_curves.png",
        "results/knowledge/links.parquet",
        "results/metrics.json",
        "results/summary.md",
        "results/figures/transfer_by_order.png",
        "results/figures/convergence.png",
        "results/figures/salient_examples.png",
        "results/figures/knockout.png",
        "results/theory/theory.json",
        *ts_analyses.analyses_targets(config),
        *ts_causal.targets(config),
        *ts_graded.targets(config),
    ]


def gpus():
    return config["gpus_per_job"]


def sensitivity_settings(wildcards):
    return json.dumps(
        ts_config.sensitivity_interaction_settings(
            config, wildcards.variant, wildcards.experiment, int(wildcards.seed)
        ),
        sort_keys=True,
    )


def sensitivity_values_from(wildcards):
    # a tau / q_thres variant re-decomposes the default extraction's cached v: no forward passes
    if not ts_config.sensitivity_reuses_values(config, wildcards.variant):
        return []
    return ts_paths.interactions_summary(wildcards.experiment, wildcards.seed)


def sensitivity_values_option(wildcards):
    path = sensitivity_values_from(wildcards)
    return f"--values-from {shlex.quote(path)}" if path else ""


def sensitivity_summaries(wildcards):
    return [
        ts_paths.sensitivity_interactions_summary(wildcards.variant, exp, seed)
        for exp in config["experiments"]
        for seed in config["seeds"]
    ]


def theory_settings_changed(wildcards):
    # committed results/theory has no Snakemake record on a fresh clone, so its params trigger
    # cannot see a changed theory: block. The config files that set it are always the input
    # (one input set, so no input-set trigger), marked ancient while the settings recorded in
    # theory.json match; when they differ, the edited file is newer and Snakemake reruns theory.
    files = ts_config.files_setting(workflow.configfiles, "theory")
    if ts_theory.settings_changed(config["theory"], "results/theory/theory.json"):
        return files
    return [ancient(f) for f in files]
