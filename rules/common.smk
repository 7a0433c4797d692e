# Helpers and target lists; paths come from transferscope.workflow, settings from transferscope.config.
import json
import os
import shlex
import sys

from transferscope import config as ts_config
from transferscope import workflow as ts_paths
from transferscope.analyses import settings as ts_analyses

ts_config.check_references(config, source="config")

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
        "results/theory/theory.json",
        *ts_analyses.analyses_targets(config),
    ]


def gpus():
    return config["gpus_per_job"]
